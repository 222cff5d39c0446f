"""What the flash loop's softmax and QK precision cost on the H200: one minimal Triton loop, several variants.

    python3 benchmarks/precision_lab.py --shape wan21-14b-720p --density 0.30 --json $OUT/precision.json
    python3 benchmarks/precision_lab.py --set pv --shape wan21-14b-720p --density 0.30    # P V precision
    python3 benchmarks/precision_lab.py --compile-only      # CPU: compile the variants for sm_90, show the MMAs

Every query attends a contiguous slice of L = density x N keys (what the sparse kernel does per query block,
without its padding), bf16 inputs, medians of do_bench. Keys are read either through affine pointers or
through a row-index array loaded one tile ahead (how the production kernel reads gathered rows). Variants:
- exp: `ex2.approx` for every score (production), a degree-3 polynomial on the FMA pipe for every score,
  the polynomial for half of the key columns and `ex2` for the other half, or no exponential at all (wrong
  output; the time is an upper bound on what cheaper exponentials could buy);
- QK precision: bf16 (production), int8 q and k with per-token scales (k smoothed by its per-head channel
  mean, which no softmax row can see), int8 with one scale per head for k, fp8 e4m3 with per-token scales.
  P V stays bf16 with fp32 accumulation (`--set qk-exp`, the default);
- P V precision (`--set pv`): bf16, or P (scaled by 256) and V (one scale per head and channel) in fp8 e4m3,
  with V row-major or stored transposed (the K-major layout 8-bit wgmma wants).
Errors are against an fp64 oracle on the first problem's first 4,096 query rows, next to cuDNN's.
Nothing here is used by the node; it decides whether the production kernel should change.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOG2_E = 1.4426950408889634
# minimax (relative error 7.5e-5 on [0, 1)) cubic for 2^f
EXP2_C0 = tl.constexpr(0.99992509)
EXP2_C1 = tl.constexpr(0.69583424)
EXP2_C2 = tl.constexpr(0.22606678)
EXP2_C3 = tl.constexpr(0.07802406)

QK_BF16, QK_INT8_TOKEN, QK_INT8_HEAD, QK_FP8_TOKEN = 0, 1, 2, 3
PV_BF16, PV_FP8, PV_FP8_TRANSPOSED = 0, 1, 2
# P in [0, 1] is scaled into e4m3's normal range (max 448) before the cast; the output divides it out
P_FP8_SCALE = tl.constexpr(256.0)
EXP_MUFU, EXP_POLY, EXP_HALF, EXP_NONE = 0, 1, 2, 3


@triton.jit
def _exp2_poly(x):
    """2^x for x <= 0 on the FMA pipe: 2^floor(x) put into the exponent bits of a cubic in the fraction."""
    x = tl.maximum(x, -126.0)
    whole = tl.floor(x)
    fraction = x - whole
    poly = EXP2_C0 + fraction * (EXP2_C1 + fraction * (EXP2_C2 + fraction * EXP2_C3))
    bits = poly.to(tl.int32, bitcast=True) + (whole.to(tl.int32) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _exp2(x, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EXP: tl.constexpr):
    if EXP == 0:
        return tl.math.exp2(x)
    elif EXP == 1:
        return _exp2_poly(x)
    elif EXP == 2:
        halves = tl.reshape(x, [BLOCK_M, 2, BLOCK_N // 2])
        left, right = tl.split(tl.permute(halves, [0, 2, 1]))
        joined = tl.join(tl.math.exp2(left), _exp2_poly(right))
        return tl.reshape(tl.permute(joined, [0, 2, 1]), [BLOCK_M, BLOCK_N])
    else:
        return x + 1.0


@triton.jit
def _lab_kernel(q_ptr, k_ptr, v_ptr, q_scale_ptr, k_scale_ptr, v_scale_ptr, out_ptr, rows_ptr, num_tokens,
                kv_length, qk_scale,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GATHER: tl.constexpr,
                QK: tl.constexpr, EXP: tl.constexpr, PV: tl.constexpr):
    """q_ptr, k_ptr: [G, N, D] bf16 (QK 0), int8 (1, 2) or fp8 (3); v_ptr, out_ptr: [G, N, D] bf16;
    q_scale_ptr, k_scale_ptr: [G, N] fp32 (QK 1, 3; QK 2: k_scale [G], one per problem); rows_ptr: [G * N]
    int32 flat key rows (GATHER). out = softmax(q k[:kv_length]^T * scale) v[:kv_length].
    PV 1: v_ptr holds fp8 e4m3 codes [G, N, D] with v_scale_ptr [G, D] per-channel scales, P is cast to fp8
    (times P_FP8_SCALE); PV 2: the same codes stored transposed, [G, D, N] (the layout fp8 wgmma wants)."""
    tile = tl.program_id(0)
    problem = tl.program_id(1)
    dims = tl.arange(0, HEAD_DIM)
    token_base = problem * num_tokens
    q_tokens = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    problem_offset = token_base.to(tl.int64) * HEAD_DIM
    q = tl.load(q_ptr + problem_offset + q_tokens[:, None] * HEAD_DIM + dims[None, :])
    if QK == 0:
        row_scale = tl.full([BLOCK_M], qk_scale, tl.float32)
    else:
        row_scale = tl.load(q_scale_ptr + token_base + q_tokens) * qk_scale
    if QK == 2:
        row_scale = row_scale * tl.load(k_scale_ptr + problem)
    k_problem = k_ptr + problem_offset
    v_problem = v_ptr + problem_offset
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    within = tl.arange(0, BLOCK_N)
    next_rows = tl.load(rows_ptr + token_base + within) - token_base
    for start in range(0, kv_length, BLOCK_N):
        if GATHER:
            rows = next_rows
            next_slots = start + BLOCK_N + within
            next_rows = tl.load(rows_ptr + token_base + next_slots, mask=next_slots < kv_length, other=0)
            next_rows = tl.where(next_slots < kv_length, next_rows - token_base, 0)
        else:
            rows = start + within
        offsets = rows[:, None] * HEAD_DIM + dims[None, :]
        k = tl.load(k_problem + offsets)
        if PV == 2:
            v = tl.trans(tl.load(v_problem + dims[:, None] * num_tokens + rows[None, :]))
        else:
            v = tl.load(v_problem + offsets)
        if QK == 0:
            scores = tl.dot(q, tl.trans(k))
        elif QK == 2:
            scores = tl.dot(q, tl.trans(k)).to(tl.float32)
        else:
            key_scale = tl.load(k_scale_ptr + token_base + rows)
            scores = tl.dot(q, tl.trans(k)).to(tl.float32) * key_scale[None, :]
        m_new = tl.maximum(m_i, tl.max(scores, axis=1) * row_scale)
        p = _exp2(scores * row_scale[:, None] - m_new[:, None], BLOCK_M, BLOCK_N, EXP)
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if PV == 0:
            acc = tl.dot(p.to(tl.bfloat16), v, acc * alpha[:, None])
        else:
            acc = tl.dot((p * P_FP8_SCALE).to(tl.float8e4nv), v, acc * alpha[:, None])
        m_i = m_new
    if PV == 0:
        out = acc / l_i[:, None]
    else:
        out = acc * (tl.load(v_scale_ptr + problem * HEAD_DIM + dims)[None, :] / P_FP8_SCALE) / l_i[:, None]
    tl.store(out_ptr + problem_offset + q_tokens[:, None] * HEAD_DIM + dims[None, :], out.to(tl.bfloat16))


QK_NAMES = {QK_BF16: "bf16", QK_INT8_TOKEN: "int8/token", QK_INT8_HEAD: "int8/head-k", QK_FP8_TOKEN: "fp8/token"}
EXP_NAMES = {EXP_MUFU: "ex2", EXP_POLY: "poly", EXP_HALF: "half poly", EXP_NONE: "no exp"}
PV_NAMES = {PV_BF16: "bf16", PV_FP8: "fp8", PV_FP8_TRANSPOSED: "fp8 v^T"}
# (QK, EXP, PV) per variant set: "qk-exp" is BENCHMARKS.md run 29, "pv" run 40
VARIANT_SETS = {
    "qk-exp": [(QK_BF16, EXP_MUFU, PV_BF16), (QK_BF16, EXP_POLY, PV_BF16), (QK_BF16, EXP_HALF, PV_BF16),
               (QK_BF16, EXP_NONE, PV_BF16), (QK_INT8_TOKEN, EXP_MUFU, PV_BF16), (QK_INT8_TOKEN, EXP_HALF, PV_BF16),
               (QK_INT8_HEAD, EXP_MUFU, PV_BF16), (QK_FP8_TOKEN, EXP_MUFU, PV_BF16)],
    "pv": [(QK_BF16, EXP_MUFU, PV_BF16), (QK_BF16, EXP_NONE, PV_BF16), (QK_INT8_HEAD, EXP_MUFU, PV_BF16),
           (QK_INT8_HEAD, EXP_MUFU, PV_FP8), (QK_INT8_HEAD, EXP_MUFU, PV_FP8_TRANSPOSED), (QK_BF16, EXP_MUFU, PV_FP8)],
}


def quantize_values(v, pv):
    """v: [G, N, D] bf16 -> (codes in the variant's dtype and layout, per-channel scales [G, D] fp32)."""
    if pv == PV_BF16:
        return v, torch.ones(v.shape[0], v.shape[2], device=v.device)
    top = torch.finfo(torch.float8_e4m3fn).max
    v_scale = v.float().abs().amax(1).clamp_min(1e-12) / top
    codes = (v.float() / v_scale[:, None, :]).to(torch.float8_e4m3fn)
    if pv == PV_FP8_TRANSPOSED:
        codes = codes.transpose(1, 2).contiguous()
    return codes, v_scale.contiguous()


def quantize(q, k, qk):
    """q, k: [G, N, D] bf16 -> (q, k in the variant's dtype, q scale [G, N], k scale [G, N] or [G])."""
    if qk == QK_BF16:
        ones = torch.ones(q.shape[:2], device=q.device)
        return q, k, ones, ones
    k = k.float() - k.float().mean(dim=1, keepdim=True)  # a per-query constant in every score: softmax-invariant
    q = q.float()
    if qk == QK_FP8_TOKEN:
        top = torch.finfo(torch.float8_e4m3fn).max
        q_scale = q.abs().amax(-1).clamp_min(1e-12) / top
        k_scale = k.abs().amax(-1).clamp_min(1e-12) / top
        return ((q / q_scale[..., None]).to(torch.float8_e4m3fn), (k / k_scale[..., None]).to(torch.float8_e4m3fn),
                q_scale, k_scale)
    q_scale = q.abs().amax(-1).clamp_min(1e-12) / 127
    k_scale = (k.abs().amax(-1) if qk == QK_INT8_TOKEN else k.abs().amax((1, 2))).clamp_min(1e-12) / 127
    k_divisor = k_scale[..., None] if qk == QK_INT8_TOKEN else k_scale[:, None, None]
    return ((q / q_scale[..., None]).round().to(torch.int8), (k / k_divisor).round().to(torch.int8),
            q_scale.contiguous(), k_scale.contiguous())


def run_variant(q, k, v, rows, kv_length, qk, exp, pv, gather, block_m=128, block_n=128, warps=8, stages=3):
    num_problems, num_tokens, head_dim = q.shape
    q_in, k_in, q_scale, k_scale = quantize(q, k, qk)
    v_in, v_scale = quantize_values(v, pv)
    out = torch.empty_like(v)

    def launch():
        _lab_kernel[(num_tokens // block_m, num_problems)](
            q_in, k_in, v_in, q_scale, k_scale, v_scale, out, rows, num_tokens, kv_length,
            LOG2_E / math.sqrt(head_dim),
            HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, GATHER=gather, QK=qk, EXP=exp, PV=pv,
            num_warps=warps, num_stages=stages)
        return out
    return launch


def compile_only(variants) -> int:
    """Compile each variant for sm_90 as the JIT would (tests/compile_kernels.py: divisibility hints), print
    its shared memory and MMA instructions."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from compile_kernels import compile_kernel

    dtypes = {QK_BF16: "*bf16", QK_INT8_TOKEN: "*i8", QK_INT8_HEAD: "*i8", QK_FP8_TOKEN: "*fp8e4nv"}
    failures = 0
    for qk, exp, pv in variants:
        for gather in (False, True):
            pointer_types = dict(q_ptr=dtypes[qk], k_ptr=dtypes[qk], v_ptr="*bf16" if pv == PV_BF16 else "*fp8e4nv",
                                 out_ptr="*bf16", q_scale_ptr="*fp32", k_scale_ptr="*fp32", v_scale_ptr="*fp32",
                                 rows_ptr="*i32")
            constexprs = dict(HEAD_DIM=128, BLOCK_M=128, BLOCK_N=128, GATHER=gather, QK=qk, EXP=exp, PV=pv)
            label = f"{QK_NAMES[qk]:12s} {EXP_NAMES[exp]:9s} PV {PV_NAMES[pv]:8s} gather={int(gather)}"
            try:
                compiled = compile_kernel(_lab_kernel, constexprs, 8, 3, 90, pointer_types)
                ptx = compiled.asm["ptx"]
                mmas = sorted({line.split()[0] for line in ptx.splitlines() if "wgmma.mma_async" in line or "mma.sync" in line})
                print(f"ok   {label}: shared {compiled.metadata.shared}  {' '.join(mmas)}", flush=True)
            except Exception as error:
                failures += 1
                print(f"FAIL {label}: {type(error).__name__}: {str(error)[:300]}", flush=True)
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="wan21-14b-720p")
    parser.add_argument("--density", type=float, default=0.30)
    parser.add_argument("--set", choices=sorted(VARIANT_SETS), default="qk-exp", help="which variants to run")
    parser.add_argument("--compile-only", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.compile_only:
        return compile_only(VARIANT_SETS[args.set])
    import torch.nn.functional as F
    import triton.testing
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from svg2_core.synthetic import MODEL_SHAPES, structured_qkv

    def bench(fn) -> float:
        return float(triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median"))

    device = torch.device("cuda")
    batch, heads, grid, head_dim, dense_suffix = MODEL_SHAPES[args.shape]
    q4, k4, v4 = structured_qkv(batch, heads, grid, head_dim, peakedness=4.0, dense_suffix=dense_suffix,
                                device=device, dtype=torch.bfloat16)
    num_problems = batch * heads
    num_tokens = q4.shape[2] // 128 * 128
    q, k, v = (x.reshape(num_problems, -1, head_dim)[:, :num_tokens].contiguous() for x in (q4, k4, v4))
    kv_length = int(round(args.density * num_tokens / 128)) * 128
    results = {"shape": args.shape, "density": kv_length / num_tokens, "rows": []}

    def report(name, ms, **extra):
        results["rows"].append({"name": name, "ms": ms, **extra})
        tail = " ".join(f"{key}={value:.4g}" for key, value in extra.items())
        print(f"{name:44s} {ms:9.2f} ms  {tail}", flush=True)

    # oracle: fp32 attention of the first problem's first 4,096 query rows over the slice
    oracle_rows = 4096
    scores = q[0, :oracle_rows].double() @ k[0, :kv_length].double().T / math.sqrt(head_dim)
    oracle = (torch.softmax(scores, -1) @ v[0, :kv_length].double()).float()
    del scores

    def error(out):
        return float((out[0, :oracle_rows].float() - oracle).norm() / oracle.norm())

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        q4s, k4s, v4s = (x.view(1, num_problems, num_tokens, head_dim) for x in (q, k, v))
        full_ms = bench(lambda: F.scaled_dot_product_attention(q4s, k4s, v4s))
        ks, vs = k4s[:, :, :kv_length], v4s[:, :, :kv_length]
        cudnn_out = F.scaled_dot_product_attention(q4s, ks, vs)[0]
        slice_ms = bench(lambda: F.scaled_dot_product_attention(q4s, ks, vs))
    yardstick = full_ms * kv_length / num_tokens
    report("cuDNN all keys", full_ms)
    report(f"cuDNN slice of {kv_length} keys", slice_ms, vs_yardstick=slice_ms / yardstick, error=error(cudnn_out))
    # a row permutation of the slice for the gathered reads: same keys, scattered addresses
    generator = torch.Generator(device=device).manual_seed(0)
    permutation = torch.stack([torch.randperm(kv_length, generator=generator, device=device)
                               for _ in range(num_problems)])
    offsets = torch.arange(num_problems, device=device)[:, None] * num_tokens
    rows = torch.cat([permutation, torch.zeros(num_problems, num_tokens - kv_length, device=device, dtype=torch.long)], 1)
    rows = (rows + offsets).to(torch.int32).reshape(-1).contiguous()
    for gather in (False, True):
        for qk, exp, pv in VARIANT_SETS[args.set]:
            name = f"{'gathered' if gather else 'affine'} QK {QK_NAMES[qk]}, {EXP_NAMES[exp]}, PV {PV_NAMES[pv]}"
            try:
                launch = run_variant(q, k, v, rows, kv_length, qk, exp, pv, gather)
                out = launch().clone()
                ms = bench(launch)
                report(name, ms, vs_yardstick=ms / yardstick, error=error(out))
            except Exception as failure:
                print(f"{name:44s} failed: {type(failure).__name__}: {str(failure).splitlines()[0][:160]}", flush=True)
                results["rows"].append({"name": name, "error_text": str(failure)[:400]})
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
