"""SVG2 as the attention of Ulysses sequence parallelism (xDiT / yunchang `attn_processor` convention).

Ulysses splits the tokens over P ranks and swaps them for heads with an all-to-all: each rank then holds the
whole sequence for H / P heads, `[B, N, H / P, D]`, which SVG2 serves unchanged with `head_offset` = rank x H / P.
Ring attention splits the keys over ranks instead; SVG2 clusters each head's whole key set, so it is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Hashable

import torch

from .api import SVG2Info, svg2_attention
from .backends import FastPathError
from .config import SVG2Config
from .state import SVG2State

RING_REFUSAL = ("SVG2 serves Ulysses sequence parallelism only: ring attention splits each head's keys across "
                "ranks, and SVG2 clusters a head's whole key set; set the ring degree to 1 (Ulysses degree = "
                "the sequence-parallel GPUs)")


@dataclass
class SparseCall:
    """How one call runs sparse: the rank's centroid cache and key, the tokens kept dense, and what to do with the
    result. on_done(info) gets the call's SVG2Info; on_fast_path_error(error) is told of a fast-path failure
    before the call is served dense (None: the error propagates)."""

    state: SVG2State | None
    cache_key: Hashable = None
    dense_prefix: int = 0
    dense_suffix: int = 0
    config: SVG2Config | None = None
    on_done: Callable[[SVG2Info], None] | None = None
    on_fast_path_error: Callable[[FastPathError], None] | None = None


# route(q, k, v) with q, k, v [B, H_local, N, D] -> a SparseCall, or a str: why the call stays dense
Route = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], "SparseCall | str"]
# yunchang's forward-only attention: q, k, v [B, N, H, D] -> (out [B, N, H, D], lse [B, H, N] fp32)
DenseAttention = Callable[..., tuple]


def reference_attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                                 softmax_scale: float | None = None, causal: bool = False, **kwargs) -> tuple:
    """Exact attention in yunchang's forward-only convention, in fp32 (slow: tests and CPU).

    q: [B, Nq, H, D], k, v: [B, Nk, H, D] -> (out [B, Nq, H, D] in q's dtype, lse [B, H, Nq] fp32)."""
    if dropout_p:
        raise ValueError(f"dropout_p must be 0 at inference, got {dropout_p}")
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float()) * scale
    if causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril(scores.shape[-1] - scores.shape[-2])
        scores = scores.masked_fill(~keep, float("-inf"))
    lse = scores.logsumexp(-1)
    out = torch.einsum("bhqk,bkhd->bqhd", (scores - lse.unsqueeze(-1)).exp(), v.float())
    return out.to(q.dtype), lse


@dataclass
class UlyssesSVG2Processor:
    """The attention a Ulysses rank runs after the all-to-all: SVG2 on its heads, the rest dense.

    Called like yunchang's forward-only kernels (`select_flash_attn_impl(..., attn_processor=...)` hands it the
    call when the attention type is none of yunchang's own): q, k, v [B, N, H_local, D] -> (out [B, N, H_local, D],
    lse [B, H_local, N] fp32). rank / world_size: this rank and the Ulysses degree; its heads are
    [rank * H_local, (rank + 1) * H_local) of the model's, so `head_offset` = rank * H_local.
    route decides per call (layer, step, CFG branch, warm-up: the caller's bookkeeping) and names the rank's
    centroid cache; dense serves every call SVG2 does not (the attention type it replaces).
    lse of a sparse call is not computed (NaN): it is only read to merge ring steps, and ring_degree must be 1.
    """

    config: SVG2Config
    route: Route
    rank: int = 0
    world_size: int = 1
    ring_degree: int = 1
    backend: str = "auto"
    dense: DenseAttention = reference_attention_with_lse
    dense_reasons: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, value, low in (("world_size", self.world_size, 1), ("rank", self.rank, 0),
                                 ("ring_degree", self.ring_degree, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be in [0, world_size={self.world_size}), got {self.rank}")
        if self.ring_degree != 1:
            raise ValueError(f"{RING_REFUSAL} (ring degree {self.ring_degree})")

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
                 softmax_scale: float | None = None, causal: bool = False, window_size=(-1, -1),
                 softcap=None, alibi_slopes=None, return_softmax: bool = False, **kwargs) -> tuple:
        dense_args = dict(dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
                          softcap=softcap, alibi_slopes=alibi_slopes, return_softmax=return_softmax, **kwargs)
        reason = self._unsupported(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes)
        call = None
        if reason is None:
            # [B, N, H_local, D] -> [B, H_local, N, D] views: svg2_attention reads the strides in place
            q_heads, k_heads, v_heads = (x.transpose(1, 2) for x in (q, k, v))
            call = self.route(q_heads, k_heads, v_heads)
            if isinstance(call, str):
                reason, call = call, None
        if call is None:
            self.dense_reasons[reason] = self.dense_reasons.get(reason, 0) + 1
            return self.dense(q, k, v, **dense_args)
        try:
            out, info = svg2_attention(
                q_heads, k_heads, v_heads, call.config or self.config, state=call.state, cache_key=call.cache_key,
                dense_prefix=call.dense_prefix, dense_suffix=call.dense_suffix, backend=self.backend,
                return_info=True, head_offset=self.rank * q.shape[2])
        except FastPathError as error:
            if call.on_fast_path_error is None:
                raise
            call.on_fast_path_error(error)
            return self.dense(q, k, v, **dense_args)
        if call.on_done is not None:
            call.on_done(info)
        batch, tokens, heads, _ = q.shape
        lse = torch.full((batch, heads, tokens), math.nan, dtype=torch.float32, device=q.device)
        return out.transpose(1, 2), lse

    @staticmethod
    def _unsupported(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes) -> str | None:
        """Why yunchang's call is not one SVG2 computes (a short phrase), or None."""
        if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
            return "cross-attention"
        if causal:
            return "causal attention"
        if dropout_p:
            return "dropout"
        if alibi_slopes is not None or (softcap not in (None, 0, 0.0)):
            return "ALiBi or soft-capped scores"
        if tuple(window_size) != (-1, -1):
            return "sliding-window attention"
        if softmax_scale is not None and not math.isclose(softmax_scale, q.shape[-1] ** -0.5, rel_tol=1e-6):
            return "softmax scale other than 1/sqrt(head_dim)"
        return None


def ulysses_all_to_all(x: torch.Tensor, group=None, to_heads: bool = True) -> torch.Tensor:
    """Ulysses' swap of tokens for heads over the ranks of `group` (torch.distributed), in yunchang's layout.

    to_heads: [B, N / P, H, D] (this rank's tokens, all heads) -> [B, N, H / P, D] (all tokens, heads
    [rank * H / P, (rank + 1) * H / P)); otherwise the inverse. Tokens are split in rank order, heads likewise.
    """
    import torch.distributed as dist

    world = dist.get_world_size(group)
    batch, tokens, heads, head_dim = x.shape
    if to_heads:
        if heads % world:
            raise ValueError(f"heads ({heads}) must be a multiple of the Ulysses degree ({world})")
        # [P (head group), B, N / P, H / P, D]: chunk j goes to rank j
        send = x.reshape(batch, tokens, world, heads // world, head_dim).permute(2, 0, 1, 3, 4).contiguous()
        received = torch.empty_like(send)  # chunk j: rank j's tokens of this rank's heads
        dist.all_to_all_single(received, send, group=group)
        return received.permute(1, 0, 2, 3, 4).reshape(batch, world * tokens, heads // world, head_dim)
    if tokens % world:
        raise ValueError(f"tokens ({tokens}) must be a multiple of the Ulysses degree ({world})")
    # [P (token group), B, N / P, H / P, D]: chunk j (rank j's tokens) goes to rank j
    send = x.reshape(batch, world, tokens // world, heads, head_dim).permute(1, 0, 2, 3, 4).contiguous()
    received = torch.empty_like(send)  # chunk j: this rank's tokens of rank j's heads
    dist.all_to_all_single(received, send, group=group)
    return received.permute(1, 2, 0, 3, 4).reshape(batch, tokens // world, world * heads, head_dim)
