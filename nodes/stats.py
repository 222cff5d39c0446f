"""What one sampling run did with SVG2, and where it is reported (the `svg2.stats` event, node text).

Per-call numbers stay on the device while sampling (density tensors, CUDA timing events) and are read
back once, in `RunStats.summary()`, so the hot path never waits on the GPU.
"""
from __future__ import annotations

import logging
import sys
import time
from collections import Counter

import torch

log = logging.getLogger("svg2")

EVENT = "svg2.stats"
# Dense by design or by call type (the settings or the model ask for it): counted, not logged, and never a
# fallback. Every other dense reason is a fallback: a call SVG2 was meant to serve and could not.
# web/svg2.js holds the same list (tests/test_constants.py keeps the two equal).
BY_DESIGN_DENSE_REASONS = frozenset({"cross-attention", "warm-up step", "last step", "dense layer",
                                     "not video self-attention", "not video self-attention (text refiner)",
                                     "top_p 1.0 keeps every block"})


class _CallTimer:
    """Times one SVG2 call: CUDA events on a GPU (resolved later), perf_counter elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device.type == "cuda"
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start_s = time.perf_counter()
            self._ms = 0.0

    def stop(self) -> None:
        if self._cuda:
            self._end.record()
        else:
            self._ms = (time.perf_counter() - self._start_s) * 1000.0

    def elapsed_ms(self) -> float:
        if self._cuda:
            self._end.synchronize()
            return self._start.elapsed_time(self._end)
        return self._ms


class RunStats:
    """Counters for one sampling run: sparse calls with their density, dense calls by reason."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sparse_calls = 0
        self.dense_reasons: Counter = Counter()
        self.backends: Counter = Counter()
        self._densities: list[torch.Tensor] = []
        self._cells: list[tuple[int, int]] = []
        self._timers: list[_CallTimer] = []

    def start_timer(self, device: torch.device) -> _CallTimer:
        timer = _CallTimer(device)
        self._timers.append(timer)
        return timer

    def record_sparse(self, step: int, layer: int, density: torch.Tensor, backend: str) -> None:
        """density: [B, H] fraction of the attention map computed (stays on its device)."""
        self.sparse_calls += 1
        self.backends[backend] += 1
        self._cells.append((step, layer))
        self._densities.append(density.detach().float().mean())

    def record_dense(self, reason: str) -> None:
        self.dense_reasons[reason] += 1

    def summary(self) -> dict:
        """The `svg2.stats` payload (without the node id); reads every device value back once."""
        densities = torch.stack(self._densities).tolist() if self._densities else []  # one device read
        per_cell: dict[tuple[int, int], list[float]] = {}
        for cell, density in zip(self._cells, densities):
            per_cell.setdefault(cell, []).append(density)
        steps = sorted({step for step, _ in per_cell})
        layers = sorted({layer for _, layer in per_cell})
        density_map = [[_mean(per_cell.get((step, layer))) for layer in layers] for step in steps]
        dense_calls = sum(self.dense_reasons.values())
        fallbacks = [(reason, count) for reason, count in self.dense_reasons.most_common()
                     if reason not in BY_DESIGN_DENSE_REASONS]
        return {
            "sparse_calls": self.sparse_calls,
            "dense_calls": dense_calls,
            "dense_reasons": dict(self.dense_reasons.most_common()),
            "fallback_calls": sum(count for _, count in fallbacks),
            "fallback_reason": fallbacks[0][0] if fallbacks else None,
            "backends": dict(self.backends),
            "mean_density": _mean(densities),
            "density": {"steps": steps, "layers": layers, "values": density_map},
            "svg2_time_ms": round(sum(timer.elapsed_ms() for timer in self._timers), 3),
        }


def _mean(values) -> float | None:
    return round(sum(values) / len(values), 5) if values else None


def summary_text(payload: dict) -> str:
    """One or two short lines for the node body; a fallback, if any, is named on its own line (a by-design
    reason such as cross-attention never stands in for one)."""
    sparse, dense = payload["sparse_calls"], payload["dense_calls"]
    fallbacks = payload["fallback_calls"]
    fallback_line = f"\nfallback {fallbacks}: {payload['fallback_reason']}" if fallbacks else ""
    if sparse == 0:
        if fallbacks or dense == 0:
            return f"SVG2: all {dense} attention calls dense" + fallback_line
        reasons = ", ".join(payload["dense_reasons"])
        return f"SVG2: all {dense} attention calls dense by design ({reasons})"
    density = payload["mean_density"] * 100.0
    return (f"SVG2: {sparse} sparse / {dense} dense calls, mean density {density:.1f}%, "
            f"{payload['svg2_time_ms'] / 1000.0:.2f} s in SVG2 attention" + fallback_line)


def publish(payload: dict, node_id) -> None:
    """Send the payload as a `svg2.stats` event and a text on the node when a ComfyUI server runs."""
    server_module = sys.modules.get("server")  # imported by ComfyUI's main.py, absent in-process
    server = getattr(getattr(server_module, "PromptServer", None), "instance", None)
    if server is None:
        return
    try:
        server.send_sync(EVENT, {**payload, "node": node_id}, getattr(server, "client_id", None))
        if node_id is not None and hasattr(server, "send_progress_text"):
            server.send_progress_text(summary_text(payload), node_id)
    except Exception:  # a stats message must never fail the prompt
        log.exception("SVG2: could not send the %s event", EVENT)
