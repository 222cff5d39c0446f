"""The `optimized_attention_override` that routes ComfyUI's video self-attention through SVG2.

ComfyUI calls `override(func, q, k, v, heads, mask=..., skip_reshape=..., skip_output_reshape=...,
transformer_options=..., **kwargs)`; q/k/v are `[B, L, H*D]` (skip_reshape False) or `[B, H, L, D]`.
Everything SVG2 does not serve goes to the previous override, else to `func`, with the reason logged once.
So does a call whose fast path fails to compile or launch (svg2_core.backends.FastPathError): the failure is
counted in the run's stats with its cause and GPU, logged once at WARNING, and the calls of that device /
dtype / head dim skip the fast path for the rest of the sampling run.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from ..svg2_core import SVG2Config, svg2_attention
from ..svg2_core.backends import FastPathError, fast_path_key, triton_unsupported_reason
from ..svg2_core.api import SUPPORTED_DTYPES
from .run_state import ForwardContext, log_once
from .stats import BY_DESIGN_DENSE_REASONS

FORWARD_KEY = "svg2_forward"
KEEPS_EVERY_BLOCK = "top_p 1.0 keeps every block"  # one of BY_DESIGN_DENSE_REASONS


# A step's sigma within this relative distance of a boundary counts as on it: schedules are stored in float32
# and percent_to_sigma computes in float64.
SIGMA_RTOL = 1e-4
WARMUP_STEP = "warm-up step"  # one of BY_DESIGN_DENSE_REASONS
LAST_STEP = "last step"  # one of BY_DESIGN_DENSE_REASONS


@dataclass(frozen=True)
class Schedule:
    """Which calls stay dense by design: the warm-up at the start of the schedule, a tail at its end, the first
    layers, sequences shorter than min_tokens.

    dense_warmup_percent / dense_last_percent: shares of the whole denoising schedule, placed by noise level as
    ComfyUI's start_percent / end_percent are (`model_sampling.percent_to_sigma`): a step whose sigma is above
    percent_to_sigma(dense_warmup_percent) is warm-up, one whose sigma is at or below
    percent_to_sigma(1 - dense_last_percent) is in the tail. With the simple / normal schedulers a step i of n
    is warm-up when i < dense_warmup_percent * n (0.2: 1 of 4 steps, 2 of 8, 4 of 20, 10 of 50). Sigma, not
    the step index, decides, so two samplers that split one schedule (Wan 2.2's experts) share the setting.
    dense_warmup_steps / dense_last_steps: -1 leaves the decision to the percent; 0 or more counts steps of
    this sampler call instead (the meaning of workflows saved before the percent widgets existed).
    """

    dense_warmup_steps: int
    dense_last_steps: int
    dense_layers: int
    min_tokens: int
    dense_warmup_percent: float = 0.2
    dense_last_percent: float = 0.0

    def phase(self, step: int, total_steps: int | None, sigma: float | None, percent_to_sigma=None) -> str | None:
        """WARMUP_STEP, LAST_STEP or None for step `step` of `total_steps` in this sampler call, at noise level
        `sigma`. percent_to_sigma: the model's `model_sampling.percent_to_sigma`; without it (or without sigma)
        the percent counts this sampler call's steps."""
        by_sigma = sigma is not None and percent_to_sigma is not None
        if self.dense_warmup_steps >= 0:
            if step < self.dense_warmup_steps:
                return WARMUP_STEP
        elif by_sigma:
            if sigma > float(percent_to_sigma(self.dense_warmup_percent)) * (1 + SIGMA_RTOL):
                return WARMUP_STEP
        elif total_steps is not None and step < self.dense_warmup_percent * total_steps * (1 - SIGMA_RTOL):
            return WARMUP_STEP
        if self.dense_last_steps >= 0:
            if total_steps is not None and step >= total_steps - self.dense_last_steps:
                return LAST_STEP
        elif self.dense_last_percent > 0:
            if by_sigma:
                if sigma <= float(percent_to_sigma(1.0 - self.dense_last_percent)) * (1 + SIGMA_RTOL):
                    return LAST_STEP
            elif total_steps is not None and step >= (1.0 - self.dense_last_percent) * total_steps * (1 - SIGMA_RTOL):
                return LAST_STEP
        return None


@dataclass
class AttentionCall:
    """One attention call in SVG2's layout: q, k, v [B, H, L, D] plus how to hand the result back.

    exact: the model passed `low_precision_attention=False` (newer ComfyUI: keep this call exact);
    layer / layer_key: set once the call is known to be video self-attention."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: object
    skip_output_reshape: bool
    exact: bool = False
    layer: int = -1
    layer_key: tuple = ()

    def text_tokens(self, context: ForwardContext) -> int:
        """Joint-attention text tokens in this call (0 for models without text in self-attention)."""
        return self.q.shape[2] - context.video_tokens if context.geometry.text_position else 0

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """out [B, H, L, D] -> the layout ComfyUI asked for ([B, L, H*D] unless skip_output_reshape)."""
        if self.skip_output_reshape:
            return out
        batch, heads, tokens, head_dim = out.shape
        return out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


# int8 scores (SVG2Config.qk_int8) only from this many tokens per call: on an H200 they made the Wan 720p call
# (75,600 tokens) faster and the Wan 480p call (32,760 tokens) slower, coding q and k included (BENCHMARKS.md).
QK_INT8_MIN_TOKENS = 50_000


class SVG2AttentionOverride:
    """Callable installed as `transformer_options["optimized_attention_override"]`.

    The per-forward `ForwardContext` arrives in `transformer_options[FORWARD_KEY]` (set by the patch's
    APPLY_MODEL wrapper); without it (model called outside a sampler) every call stays dense.
    """

    def __init__(self, owner, config: SVG2Config, schedule: Schedule, backend: str, previous,
                 allow_compile: bool) -> None:
        self.owner = owner
        self.config = config
        self._config_without_int8 = dataclasses.replace(config, qk_int8=False)
        self.schedule = schedule
        self.backend = backend
        self.previous = previous
        self._route = self._route_eager if allow_compile else torch.compiler.disable(self._route_eager)

    def __deepcopy__(self, memo):
        """`ModelPatcher.clone()` deep-copies model_options; every clone shares this one override."""
        return self

    def __call__(self, func, *args, **kwargs):
        return self._route(func, args, kwargs)

    def dense(self, func, args, kwargs):
        """The attention this patch replaced: the previous override, else ComfyUI's backend.
        `kwargs` still holds `_inside_attn_wrapper`, so `func` does not re-enter an override."""
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def _route_eager(self, func, args, kwargs):
        options = kwargs.get("transformer_options") or {}
        context = options.get(FORWARD_KEY)
        if context is None or context.owner is not self.owner:
            log_once("attention called outside an SVG2-patched sampling run: dense")
            return self.dense(func, args, kwargs)
        call = _parse(args, kwargs)
        reason = self.dense_reason(call, context, options)
        if reason is not None:
            context.run.stats.record_dense(reason)
            if reason not in BY_DESIGN_DENSE_REASONS:
                log_once(f"dense attention: {reason}")
            return self.dense(func, args, kwargs)
        return self._sparse(call, context, func, args, kwargs)

    def dense_reason(self, call: AttentionCall | None, context: ForwardContext, options: dict) -> str | None:
        """Why this call must not go sparse (a short, stable phrase), or None to run SVG2.

        A call that is video self-attention is given its layer here (`call.layer`, `call.layer_key`),
        so the per-forward counter also counts the layers that stay dense.
        """
        if call is None:
            return "unrecognised attention call"
        if context.unsupported is not None:
            return context.unsupported
        reason = _not_video_self_attention(call, context)
        if reason is not None:
            return reason
        call.layer, call.layer_key = context.next_layer(options.get("block_type"), options.get("block_index"))
        if call.mask is not None:
            return "masked attention"
        if call.exact:
            return "model asked for exact attention"
        tokens = call.q.shape[2]
        if tokens < self.schedule.min_tokens:
            return "fewer tokens than min_tokens"
        if context.step is None:
            return "no sampling schedule (sample_sigmas)"
        phase = self.schedule.phase(context.step, context.total_steps, context.sigma, context.percent_to_sigma)
        if phase is not None:
            return phase
        if call.layer < self.schedule.dense_layers:
            return "dense layer"
        if self.config.keeps_every_block:  # the sparse path would only cost more than dense attention
            return KEEPS_EVERY_BLOCK
        if call.q.dtype not in SUPPORTED_DTYPES:
            return f"dtype {call.q.dtype} not supported"
        if tokens - call.text_tokens(context) < max(self.config.num_q_clusters, self.config.num_k_clusters):
            return "fewer video tokens than clusters"
        return self._backend_reason(call.q, context)

    def _config_for(self, tokens: int) -> SVG2Config:
        return self.config if tokens >= QK_INT8_MIN_TOKENS else self._config_without_int8

    def _backend_reason(self, q: torch.Tensor, context: ForwardContext) -> str | None:
        """Why the fast path cannot serve q (CUDA, or the CPU under TRITON_INTERPRET=1), or None."""
        if self.backend == "torch":
            return None
        failed = context.run.fast_path_failures.get(fast_path_key(q, self._config_for(q.shape[2]).qk_int8))
        if failed is not None:
            return failed
        reason = triton_unsupported_reason(q)
        if reason is not None:
            level = logging.WARNING if self.backend == "triton" else logging.INFO
            log_once(f"Triton fast path cannot serve {tuple(q.shape)} {q.dtype}: {reason}; dense", level)
            return f"Triton fast path unavailable: {reason}"
        return None

    def _sparse(self, call: AttentionCall, context: ForwardContext, func, args, kwargs):
        text = call.text_tokens(context)
        position = context.geometry.text_position
        stats = context.run.stats
        timer = stats.start_timer(call.q.device)
        config = self._config_for(call.q.shape[2])
        try:
            out, info = svg2_attention(
                call.q, call.k, call.v, config, state=context.run.centroids,
                cache_key=(call.layer_key, context.branch, call.q.shape[2]),
                dense_prefix=text if position == "prefix" else 0, dense_suffix=text if position == "suffix" else 0,
                backend="torch" if self.backend == "torch" else "triton", return_info=True)
        except FastPathError as error:
            return self._fall_back(error, call, context, config, func, args, kwargs)
        finally:
            timer.stop()  # a failed call's timer is resolved with the others, so the run's stats stay readable
        stats.record_sparse(context.step, call.layer, info.density, info.backend)
        return call.output(out)

    def _fall_back(self, error: FastPathError, call: AttentionCall, context: ForwardContext, config: SVG2Config,
                   func, args, kwargs):
        """Serve a call whose fast path failed with the attention SVG2 replaced; a failure that would repeat
        keeps the calls of this device / dtype / head dim off the fast path for the rest of the run."""
        reason = f"fast path failed on {error.device}: {error.reason}"
        scope = "this call"
        if error.persistent:
            context.run.fast_path_failures[fast_path_key(call.q, config.qk_int8)] = reason
            scope = "the rest of this sampling run"
        log_once(f"{error} -- {scope} uses the model's own attention for {call.q.dtype} calls of head dim "
                 f"{call.q.shape[-1]}", logging.WARNING)
        context.run.stats.record_dense(reason)
        return self.dense(func, args, kwargs)


def _as_bhld(x: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    if skip_reshape:
        return x
    batch, tokens, width = x.shape
    return x.view(batch, tokens, heads, width // heads).transpose(1, 2)


def _parse(args, kwargs) -> AttentionCall | None:
    """ComfyUI's positional/keyword attention arguments -> an AttentionCall in [B, H, L, D]."""
    names = ("q", "k", "v", "heads")
    values = dict(zip(names, args))
    for name in names[len(args):]:
        values[name] = kwargs.get(name)
    if any(values[name] is None for name in names):
        return None
    skip_reshape = bool(kwargs.get("skip_reshape", False))
    q, k, v = (_as_bhld(values[name], values["heads"], skip_reshape) for name in ("q", "k", "v"))
    return AttentionCall(q, k, v, kwargs.get("mask"), bool(kwargs.get("skip_output_reshape", False)),
                         exact=kwargs.get("low_precision_attention", True) is False)


def _not_video_self_attention(call: AttentionCall, context: ForwardContext) -> str | None:
    """Cross-attention, text-only self-attention (HunyuanVideo's token refiner) and anything shorter
    than the video."""
    q, k, v = call.q, call.k, call.v
    if q.shape != k.shape or q.shape != v.shape:
        return "cross-attention"
    tokens = q.shape[2]
    if context.geometry.text_position is None:
        if tokens < context.video_tokens:
            return "not video self-attention"
        if tokens == context.text_tokens:
            return "video as long as the text: self- and cross-attention look alike"
    elif tokens < context.video_tokens + context.text_tokens:
        return "not video self-attention (text refiner)"
    return None
