"""Variable-block sparse flash attention (forward) over cluster-sorted keys.

Each program owns a BLOCK_M-row tile of one query block and streams the keys of that block's kept key
blocks, packed back to back so that small key clusters share BLOCK_N-wide tiles (BLOCK_N <= 64: a tile's
block starts are one 64-bit mask). q and out stay in the
original token order (rows gathered / scattered through `q_rows`); k, v are cluster-sorted `[G, N, D]`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import interpreting
from .plan import AttentionLaunch

_LOG2_E = 1.4426950408889634


@dataclass(frozen=True)
class AttentionConfig:
    """Tile sizes and launch shape of the sparse attention kernel."""

    block_m: int = 128
    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 3


def default_config(head_dim: int) -> AttentionConfig:
    if interpreting():
        return AttentionConfig(block_m=32, block_n=32, num_warps=4, num_stages=1)
    if head_dim <= 64:
        return AttentionConfig(block_m=128, block_n=64, num_warps=4, num_stages=3)
    return AttentionConfig()


@triton.jit
def _popcount64(x):
    """Set bits of each uint64 lane (SWAR; no intrinsic, so it also runs in the interpreter)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return ((x * 0x0101010101010101) >> 56).to(tl.int32)


@triton.jit
def _key_tile_rows(row_shift_ptr, tile_first_ptr, tile_starts_ptr, tile_start, kv_length,
                   BLOCK_N: tl.constexpr):
    """Rows of the cluster-sorted k / v (within the problem) under the BLOCK_N slots of one key tile;
    slots past kv_length get row 0 (their scores are masked)."""
    slots = tile_start + tl.arange(0, BLOCK_N)
    slot_ok = slots < kv_length
    tile = tile_start // BLOCK_N
    tile_ok = tile_start < kv_length
    first = tl.load(tile_first_ptr + tile, mask=tile_ok, other=0)
    # -- bit r of `starts` is set where a kept key block starts at slot r of the tile; the block of
    #    slot r is `first` plus the starts in (0, r] --
    starts = tl.load(tile_starts_ptr + tile, mask=tile_ok, other=0).to(tl.uint64, bitcast=True)
    within = tl.arange(0, BLOCK_N).to(tl.uint64)
    block = first + _popcount64(starts & ((2 << within) - 2))
    shift = tl.load(row_shift_ptr + block, mask=slot_ok, other=0)
    return tl.where(slot_ok, slots + shift, 0)


@triton.jit
def _sparse_attention_kernel(q_ptr, k_ptr, v_ptr, out_ptr, q_rows_ptr, q_tile_block_ptr,
                             q_block_first_tile_ptr, q_block_start_ptr, q_block_size_ptr,
                             kv_length_ptr, kv_row_shift_ptr, kv_tile_first_ptr, kv_tile_starts_ptr,
                             num_tokens, num_q_blocks, num_k_blocks, num_q_tiles, num_kv_tiles, qk_scale,
                             HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             UPCAST: tl.constexpr):
    tile = tl.program_id(0)
    problem = tl.program_id(1)
    q_block = tl.load(q_tile_block_ptr + problem * num_q_tiles + tile)
    if q_block >= num_q_blocks:
        return
    block_slot = problem * num_q_blocks + q_block
    first_tile = tl.load(q_block_first_tile_ptr + block_slot)
    block_start = tl.load(q_block_start_ptr + block_slot)
    block_size = tl.load(q_block_size_ptr + block_slot)
    dims = tl.arange(0, HEAD_DIM)
    offs_m = (tile - first_tile) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < block_size
    problem_row = problem.to(tl.int64) * num_tokens
    q_rows = tl.load(q_rows_ptr + problem_row + block_start + offs_m, mask=row_ok, other=0).to(tl.int64)
    q_offsets = q_rows[:, None] * HEAD_DIM + dims[None, :]
    q = tl.load(q_ptr + q_offsets, mask=row_ok[:, None], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    kv_length = tl.load(kv_length_ptr + block_slot)
    row_shift_ptr = kv_row_shift_ptr + block_slot.to(tl.int64) * num_k_blocks
    tile_first_ptr = kv_tile_first_ptr + block_slot.to(tl.int64) * num_kv_tiles
    tile_starts_ptr = kv_tile_starts_ptr + block_slot.to(tl.int64) * num_kv_tiles
    k_base = k_ptr + problem_row * HEAD_DIM
    v_base = v_ptr + problem_row * HEAD_DIM
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    # The rows of the next key tile are computed one iteration ahead and carried, so the k / v loads
    # depend on no load of their own iteration and the pipeliner can prefetch them stages ahead.
    rows = _key_tile_rows(row_shift_ptr, tile_first_ptr, tile_starts_ptr, 0, kv_length, BLOCK_N)
    for tile_start in range(0, kv_length, BLOCK_N):
        key_offsets = rows[:, None] * HEAD_DIM + dims[None, :]
        k = tl.load(k_base + key_offsets)
        v = tl.load(v_base + key_offsets)
        rows = _key_tile_rows(row_shift_ptr, tile_first_ptr, tile_starts_ptr, tile_start + BLOCK_N, kv_length,
                              BLOCK_N)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        slot_ok = tile_start + tl.arange(0, BLOCK_N) < kv_length
        scores = tl.where(slot_ok[None, :], tl.dot(q, tl.trans(k)) * qk_scale, float("-inf"))
        # -- online softmax: new running max, rescale the running sum and the accumulator --
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        p = tl.math.exp2(scores - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    # A query block that keeps no key at all (never the case for SVG2 masks) gets zeros, like the reference.
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + q_offsets, out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


def sparse_attention(q: torch.Tensor, k_sorted: torch.Tensor, v_sorted: torch.Tensor,
                     launch: AttentionLaunch, scale: float, config: AttentionConfig) -> torch.Tensor:
    """q: [G, N, D] original order; k_sorted, v_sorted: [G, N, D] cluster-sorted (rows = launch.k_rows).

    All contiguous, one dtype (fp16/bf16); tiles come from `launch`, warps and stages from `config`.
    Returns out [G, N, D] in q's dtype and original order.
    """
    num_problems, num_tokens, head_dim = q.shape
    out = torch.empty_like(q)
    num_q_tiles = launch.q_tile_block.shape[1]
    num_q_blocks = launch.q_block_size.shape[1]
    num_k_blocks = launch.kv_row_shift.shape[2]
    num_kv_tiles = launch.kv_tile_first.shape[2]
    _sparse_attention_kernel[(num_q_tiles, num_problems)](
        q, k_sorted, v_sorted, out, launch.q_rows, launch.q_tile_block, launch.q_block_first_tile,
        launch.q_block_start, launch.q_block_size, launch.kv_length, launch.kv_row_shift,
        launch.kv_tile_first, launch.kv_tile_starts, num_tokens, num_q_blocks, num_k_blocks, num_q_tiles,
        num_kv_tiles, scale * _LOG2_E, HEAD_DIM=head_dim, BLOCK_M=launch.block_m, BLOCK_N=launch.block_n,
        UPCAST=interpreting(), num_warps=config.num_warps, num_stages=config.num_stages)
    return out
