"""An fp16 copy of v, scaled per problem by a power of two, for P V with fp16 accumulation
(AttentionConfig.pv_fp16_accumulate).

The sparse kernel then sums each key tile's products p x v (p <= 1 under the online softmax) in fp16. v
arrives in bf16 (or fp16) and may pass fp16's range (65,504), so each problem (batch x head) is multiplied by
2^e with max |v| x 2^e in [8, 16) (VALUE_TARGET_EXPONENT): every value of a bf16 head then fits fp16 (the
copy is exact where v's dynamic range within the head spans less than fp16's), a tile of up to 128 keys with
p <= 1 sums to at most 128 x 16 = 2^11 (32x below fp16's limit, room for the first-tile max's weights above
1), and the results keep fp16's normal range down to 2^-18 of the head's largest value. The kernel multiplies
its output by v_scale = 2^-e (copy x v_scale = v, as codes x scale for the int8 codes). Two passes over v, as
for the key codes: per-chunk max |v|, reduced in torch to the exponent (no host read), then the copy.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..problems import ProblemStrides, problem_rows
from .quantize import problem_base, token_rows

STATS_CHUNK = 256
# max |v| x scale lands in [2^(T - 1), 2^T), T this exponent
VALUE_TARGET_EXPONENT = 4
# fp32 powers of two the scale and its inverse may take (both normal)
_SCALE_EXPONENT_LIMIT = 126


@triton.jit
def _value_absmax_kernel(v_ptr, maxs_ptr, num_tokens, num_chunks, heads, v_stride_b, v_stride_h, v_stride_n,
                         HEAD_DIM: tl.constexpr, CHUNK: tl.constexpr, BLOCK_T: tl.constexpr):
    """maxs[g, chunk] fp32 = max |v| over the chunk's CHUNK tokens of problem g (all channels). Element-wise
    [BLOCK_T, D] running max, reduced once at the end."""
    chunk = tl.program_id(0)
    problem = tl.program_id(1)
    dims = tl.arange(0, HEAD_DIM)
    base = problem_base(v_ptr, problem, heads, v_stride_b, v_stride_h)
    high = tl.zeros([BLOCK_T, HEAD_DIM], tl.float32)
    for start in range(chunk * CHUNK, tl.minimum(chunk * CHUNK + CHUNK, num_tokens), BLOCK_T):
        tokens = start + tl.arange(0, BLOCK_T)
        ok = (tokens < num_tokens)[:, None]
        rows = token_rows(base, tokens, dims, v_stride_n, ok)
        high = tl.maximum(high, tl.abs(rows.to(tl.float32)))
    tl.store(maxs_ptr + problem * num_chunks + chunk, tl.max(tl.max(high, axis=1), axis=0))


@triton.jit
def _value_fp16_kernel(v_ptr, multiplier_ptr, out_ptr, num_tokens, heads, v_stride_b, v_stride_h, v_stride_n,
                       HEAD_DIM: tl.constexpr, BLOCK_T: tl.constexpr):
    """out[g, n] = fp16(v[g, n] x multiplier[g]), out [G, N, D] contiguous."""
    tokens = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    problem = tl.program_id(1)
    dims = tl.arange(0, HEAD_DIM)
    ok = (tokens < num_tokens)[:, None]
    base = problem_base(v_ptr, problem, heads, v_stride_b, v_stride_h)
    rows = token_rows(base, tokens, dims, v_stride_n, ok)
    scaled = rows.to(tl.float32) * tl.load(multiplier_ptr + problem)
    flat = problem.to(tl.int64) * num_tokens + tokens
    tl.store(out_ptr + flat[:, None] * HEAD_DIM + dims[None, :], scaled.to(tl.float16), mask=ok)


def value_scale_exponents(absmax: torch.Tensor) -> torch.Tensor:
    """absmax [G] fp32 (max |v| per problem) -> e [G] int32 with absmax x 2^e in [2^(T-1), 2^T), T =
    VALUE_TARGET_EXPONENT (2^T for an all-zero problem), clamped so that 2^e and 2^-e are normal fp32."""
    _, exponent = torch.frexp(absmax)  # absmax = m x 2^exponent, m in [0.5, 1)
    return (VALUE_TARGET_EXPONENT - exponent).clamp_(-_SCALE_EXPONENT_LIMIT, _SCALE_EXPONENT_LIMIT)


def scale_values_fp16(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v: [B, H, N, D] or [G, N, D] fp16 / bf16 (last dim contiguous) -> (copy: v / v_scale as fp16, v's shape,
    contiguous; v_scale [G] fp32 = 2^-e, a power of two per problem), e from `value_scale_exponents`. Extra
    memory: the copy (v's size) and [G, N / 256] maxima."""
    num_problems, num_tokens, head_dim = problem_rows(v)
    strides = ProblemStrides.of(v)
    num_chunks = triton.cdiv(num_tokens, STATS_CHUNK)
    maxs = torch.empty(num_problems, num_chunks, dtype=torch.float32, device=v.device)
    _value_absmax_kernel[(num_chunks, num_problems)](
        v, maxs, num_tokens, num_chunks, strides.heads, *strides.strides, HEAD_DIM=head_dim, CHUNK=STATS_CHUNK,
        BLOCK_T=32, num_warps=4)
    exponents = value_scale_exponents(maxs.amax(dim=1))
    ones = torch.ones(num_problems, dtype=torch.float32, device=v.device)
    multiplier, v_scale = torch.ldexp(ones, exponents), torch.ldexp(ones, -exponents)
    out = torch.empty(num_problems, num_tokens, head_dim, dtype=torch.float16, device=v.device)
    block_tokens = 64
    _value_fp16_kernel[(triton.cdiv(num_tokens, block_tokens), num_problems)](
        v, multiplier, out, num_tokens, strides.heads, *strides.strides, HEAD_DIM=head_dim, BLOCK_T=block_tokens,
        num_warps=4)
    return out.view(v.shape), v_scale
