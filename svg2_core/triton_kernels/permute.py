"""Gather of k and v into cluster-sorted order (one pass over both, each row D contiguous elements).

k, v: [G, N, D] contiguous; rows: [G, N] int32 flat source rows (g * N + n) for each sorted position.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gather_rows_kernel(k_ptr, v_ptr, rows_ptr, k_out_ptr, v_out_ptr, num_rows,
                        HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr):
    positions = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    position_ok = positions < num_rows
    dims = tl.arange(0, HEAD_DIM)
    source = tl.load(rows_ptr + positions, mask=position_ok, other=0).to(tl.int64)
    source_offsets = source[:, None] * HEAD_DIM + dims[None, :]
    target_offsets = positions.to(tl.int64)[:, None] * HEAD_DIM + dims[None, :]
    tl.store(k_out_ptr + target_offsets, tl.load(k_ptr + source_offsets, mask=position_ok[:, None]),
             mask=position_ok[:, None])
    tl.store(v_out_ptr + target_offsets, tl.load(v_ptr + source_offsets, mask=position_ok[:, None]),
             mask=position_ok[:, None])


def gather_key_values(k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v: [G, N, D] contiguous; rows: [G, N] int32. Returns (k_sorted, v_sorted) [G, N, D]."""
    k_sorted = torch.empty_like(k)
    v_sorted = torch.empty_like(v)
    num_rows = rows.numel()
    block_rows = 64
    _gather_rows_kernel[(triton.cdiv(num_rows, block_rows),)](
        k, v, rows, k_sorted, v_sorted, num_rows, HEAD_DIM=k.shape[-1], BLOCK_R=block_rows, num_warps=4)
    return k_sorted, v_sorted
