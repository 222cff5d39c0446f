"""int8 codes of q and k for the sparse kernel's int8 scores (the rule: svg2_core.quantize).

Keys: two passes over k, per-channel sum / max / min of each (problem, 256-token chunk), reduced in torch to
the per-problem mean and max |k - mean| (no host read), then the codes. Queries: one pass, a scale per row.
Inputs are read in place (any strides, last dim contiguous); codes come back in the input's shape, int8 and
contiguous (half the size of the input). The attention kernel loads q's codes rather than coding q itself:
Triton then feeds the int8 MMA from shared memory instead of reloading a register operand every key tile
(coding q inside the kernel made it slower than bf16).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..problems import ProblemStrides, problem_rows
from ..quantize import INT8_LEVELS

STATS_CHUNK = 256
_LEVELS = tl.constexpr(INT8_LEVELS)  # the largest code, as the kernels see it


@triton.jit
def problem_base(ptr, problem, heads, stride_b, stride_h):
    """Where problem g = b x heads + h starts in a [B, H, N, D] tensor read in place (64-bit offset)."""
    return ptr + (problem // heads).to(tl.int64) * stride_b + (problem % heads).to(tl.int64) * stride_h


@triton.jit
def token_rows(base, tokens, dims, stride_n, ok):
    """Rows [BLOCK_T, D] of the problem at `base` for `tokens` [BLOCK_T]; rows where `ok` [BLOCK_T, 1] is False
    read as 0."""
    return tl.load(base + tokens.to(tl.int64)[:, None] * stride_n + dims[None, :], mask=ok, other=0.0)


@triton.jit
def _key_stats_kernel(k_ptr, sums_ptr, maxs_ptr, mins_ptr, num_tokens, num_chunks, heads,
                      k_stride_b, k_stride_h, k_stride_n,
                      HEAD_DIM: tl.constexpr, CHUNK: tl.constexpr, BLOCK_T: tl.constexpr):
    """sums / maxs / mins [G, num_chunks, D] fp32: per channel over the chunk's tokens of problem g. The loop
    keeps element-wise [BLOCK_T, D] accumulators and reduces over tokens once, at the end (a reduction per
    step made the pass 3x slower than a copy of k)."""
    chunk = tl.program_id(0)
    problem = tl.program_id(1)
    dims = tl.arange(0, HEAD_DIM)
    base = problem_base(k_ptr, problem, heads, k_stride_b, k_stride_h)
    total = tl.zeros([BLOCK_T, HEAD_DIM], tl.float32)
    high = tl.full([BLOCK_T, HEAD_DIM], float("-inf"), tl.float32)
    low = tl.full([BLOCK_T, HEAD_DIM], float("inf"), tl.float32)
    for start in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, num_tokens), BLOCK_T):
        tokens = start + tl.arange(0, BLOCK_T)
        ok = (tokens < num_tokens)[:, None]
        rows = token_rows(base, tokens, dims, k_stride_n, ok)
        rows = rows.to(tl.float32)
        total += rows
        high = tl.maximum(high, tl.where(ok, rows, float("-inf")))
        low = tl.minimum(low, tl.where(ok, rows, float("inf")))
    out = (problem * num_chunks + chunk) * HEAD_DIM + dims
    tl.store(sums_ptr + out, tl.sum(total, axis=0))
    tl.store(maxs_ptr + out, tl.max(high, axis=0))
    tl.store(mins_ptr + out, tl.min(low, axis=0))


@triton.jit
def _key_codes_kernel(k_ptr, mean_ptr, multiplier_ptr, codes_ptr, num_tokens, heads,
                      k_stride_b, k_stride_h, k_stride_n,
                      HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr):
    """codes[g, n] = clamp(floor((k[g, n] - mean[g]) * multiplier[g] + 0.5), -127, 127) as int8."""
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    problem = tl.program_id(1)
    dims = tl.arange(0, HEAD_DIM)
    ok = (tokens < num_tokens)[:, None]
    base = problem_base(k_ptr, problem, heads, k_stride_b, k_stride_h)
    rows = token_rows(base, tokens, dims, k_stride_n, ok)
    mean = tl.load(mean_ptr + problem * HEAD_DIM + dims)
    multiplier = tl.load(multiplier_ptr + problem)
    codes = tl.floor((rows.to(tl.float32) - mean[None, :]) * multiplier + 0.5)
    codes = tl.minimum(tl.maximum(codes, -_LEVELS), _LEVELS)
    out = codes_ptr + (problem.to(tl.int64) * num_tokens + tokens)[:, None] * HEAD_DIM + dims[None, :]
    tl.store(out, codes.to(tl.int8), mask=ok)


@triton.jit
def _query_codes_kernel(q_ptr, codes_ptr, scales_ptr, num_tokens, heads, q_stride_b, q_stride_h, q_stride_n,
                        HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr):
    """codes[g, n] = clamp(floor(q[g, n] x 127 / max_d |q[g, n]| + 0.5), -127, 127) as int8; scales[g, n] =
    max_d |q[g, n]| / 127 (1 / 127 for an all-zero row)."""
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    problem = tl.program_id(1)
    dims = tl.arange(0, HEAD_DIM)
    ok = tokens < num_tokens
    base = problem_base(q_ptr, problem, heads, q_stride_b, q_stride_h)
    rows = token_rows(base, tokens, dims, q_stride_n, ok[:, None])
    rows = rows.to(tl.float32)
    absmax = tl.max(tl.abs(rows), axis=1)
    absmax = tl.where(absmax > 0, absmax, 1.0)
    codes = tl.floor(rows * (_LEVELS.value / absmax)[:, None] + 0.5)  # .value: the interpreter cannot
    # divide a constexpr by a tensor
    codes = tl.minimum(tl.maximum(codes, -_LEVELS), _LEVELS)
    flat = problem.to(tl.int64) * num_tokens + tokens
    tl.store(codes_ptr + flat[:, None] * HEAD_DIM + dims[None, :], codes.to(tl.int8), mask=ok[:, None])
    tl.store(scales_ptr + flat, absmax / _LEVELS, mask=ok)


def quantize_queries(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q: [B, H, N, D] or [G, N, D] fp16 / bf16 (last dim contiguous) -> (codes: q's shape, int8, contiguous;
    row scales s_q [G, N] fp32), with codes x s_q = q up to rounding (svg2_core.quantize)."""
    num_problems, num_tokens, head_dim = problem_rows(q)
    strides = ProblemStrides.of(q)
    codes = torch.empty(num_problems, num_tokens, head_dim, dtype=torch.int8, device=q.device)
    scales = torch.empty(num_problems, num_tokens, dtype=torch.float32, device=q.device)
    block_tokens = 64
    _query_codes_kernel[(triton.cdiv(num_tokens, block_tokens), num_problems)](
        q, codes, scales, num_tokens, strides.heads, *strides.strides, HEAD_DIM=head_dim, BLOCK_T=block_tokens,
        num_warps=4)
    return codes.view(q.shape), scales


def quantize_keys(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k: [B, H, N, D] or [G, N, D] fp16 / bf16 (last dim contiguous) -> (codes: k's shape, int8, contiguous;
    key scale s_k [G] fp32), with codes x s_k = k - mean up to rounding (svg2_core.quantize)."""
    num_problems, num_tokens, head_dim = problem_rows(k)
    strides = ProblemStrides.of(k)
    num_chunks = triton.cdiv(num_tokens, STATS_CHUNK)
    stats = torch.empty(3, num_problems, num_chunks, head_dim, dtype=torch.float32, device=k.device)
    _key_stats_kernel[(num_chunks, num_problems)](
        k, stats[0], stats[1], stats[2], num_tokens, num_chunks, strides.heads, *strides.strides,
        HEAD_DIM=head_dim, CHUNK=STATS_CHUNK, BLOCK_T=32, num_warps=4)
    mean = stats[0].sum(dim=1) / num_tokens
    absmax = torch.maximum(stats[1].amax(dim=1) - mean, mean - stats[2].amin(dim=1)).amax(dim=-1)
    absmax = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    codes = torch.empty(num_problems, num_tokens, head_dim, dtype=torch.int8, device=k.device)
    block_tokens = 64
    _key_codes_kernel[(triton.cdiv(num_tokens, block_tokens), num_problems)](
        k, mean, INT8_LEVELS / absmax, codes, num_tokens, strides.heads, *strides.strides,
        HEAD_DIM=head_dim, BLOCK_T=block_tokens, num_warps=4)
    return codes.view(k.shape), absmax / INT8_LEVELS
