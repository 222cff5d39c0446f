"""Per-run and per-forward bookkeeping for the SVG2 patch.

`RunState` lives for one sampling run (centroid cache + stats); `ForwardContext` for one model call
(step, geometry, CFG branch, self-attention call counter). Neither is stored in `model_options`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from ..svg2_core import SVG2State
from .model_geometry import ModelGeometry
from .stats import RunStats

log = logging.getLogger("svg2")
_logged: set[str] = set()


def log_once(message: str, level: int = logging.INFO) -> None:
    """Log `message` the first time this process sees it."""
    if message not in _logged:
        _logged.add(message)
        log.log(level, "SVG2: %s", message)


class RunState:
    """Everything one sampling run accumulates; `reset()` forgets it (centroids, stats, fast-path failures).

    fast_path_failures: svg2_core.backends.fast_path_key -> the stats reason of a fast-path failure that would
    repeat; those calls skip the fast path until the run ends (the next run tries once more)."""

    def __init__(self) -> None:
        self.centroids = SVG2State()
        self.stats = RunStats()
        self.total_steps: int | None = None
        self.fast_path_failures: dict[tuple, str] = {}
        self.refused: str | None = None  # why the whole run stays dense (memory estimate over its share)

    def reset(self) -> None:
        self.centroids.reset()
        self.stats.reset()
        self.total_steps = None
        self.fast_path_failures.clear()
        self.refused = None


@dataclass
class ForwardContext:
    """One model forward: which step, what the token layout is, which CFG branch.

    owner: the patch that made it (an override only serves its own patch's contexts);
    step / total_steps: None when the call carries no sampling schedule; geometry: None when the model
    is not served (then `unsupported` says why); video_tokens: tokens of the latent (+ reference frames);
    text_tokens: the conditioning length, which joint-attention text is at least as long as;
    sigma: this forward's noise level; percent_to_sigma: the model's `model_sampling.percent_to_sigma` (the
    schedule's warm-up and tail are placed by noise level; attention_override.Schedule).
    """

    owner: object
    run: RunState
    step: int | None
    total_steps: int | None
    geometry: ModelGeometry | None
    unsupported: str | None
    video_tokens: int
    text_tokens: int
    branch: tuple
    self_attention_calls: int = 0
    seen_layers: dict = field(default_factory=dict)
    sigma: float | None = None
    percent_to_sigma: object = None

    def next_layer(self, block_type, block_index) -> tuple[int, tuple]:
        """(global layer index, cache key part) of the next video self-attention call in this forward.

        ComfyUI's `block_index` (+ `block_type`) wins where present; otherwise the call counter. The
        occurrence count keeps blocks that share an index (VACE) apart.
        """
        counter = self.self_attention_calls
        self.self_attention_calls += 1
        if block_index is None or self.geometry is None:
            layer = counter
        else:
            layer = self.geometry.global_layer(block_type, int(block_index))
        occurrence = self.seen_layers.get(layer, 0)
        self.seen_layers[layer] = occurrence + 1
        return layer, (layer, occurrence)


def step_index(sigma: torch.Tensor | None, schedule: torch.Tensor | None) -> int | None:
    """Index of the current sigma in this sampler call's schedule (`sample_sigmas`), or None.

    Exact match first; a sigma between two schedule entries (multi-stage samplers) belongs to the step
    that starts above it. One small device read per forward.
    """
    if sigma is None or schedule is None or len(schedule) < 2:
        return None
    schedule = schedule.detach().float().cpu()
    value = float(sigma.detach().flatten()[0].float().cpu())
    matches = torch.isclose(schedule, torch.tensor(value), rtol=1e-4, atol=1e-7).nonzero()
    if len(matches) > 0:
        return int(matches[0, 0])
    for index in range(len(schedule) - 1):
        high, low = float(schedule[index]), float(schedule[index + 1])
        if high >= value > low or high <= value < low:
            return index
    return None
