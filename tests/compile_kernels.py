"""Compile every production Triton kernel for real GPUs without one (ptxas ships with the triton wheel).

The CPU interpreter runs kernels as Python, so it accepts things the compiler refuses (a plain global read
inside a kernel, a type mismatch across a loop). This compiles each kernel at the launch shapes the fast path
uses, for Hopper (sm_90) and Ampere (sm_80), and prints one line per kernel. Run without TRITON_INTERPRET:

    python tests/compile_kernels.py          # exit status 1 and the compiler's message on a failure
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("unset TRITON_INTERPRET: the interpreter does not compile kernels")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from svg2_core.triton_kernels import attention, kmeans, permute, plan, quantize, selection  # noqa: E402

# Pointer element types by argument name (anything else ending in _ptr is int32); scalar arguments are
# int32 except the float ones listed.
POINTER_TYPES = {
    "points_ptr": "*bf16", "centroids_ptr": "*bf16", "centroid_sq_norms_ptr": "*fp32", "old_centroids_ptr": "*fp32",
    "means_ptr": "*fp32",
    "probabilities_ptr": "*fp32", "mask_ptr": "*i1", "block_mask_ptr": "*u8", "kv_tile_starts_ptr": "*i64",
    "q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "out_ptr": "*bf16", "k_out_ptr": "*bf16",
    "v_out_ptr": "*bf16", "k_scale_ptr": "*fp32", "sums_ptr": "*fp32", "maxs_ptr": "*fp32", "mins_ptr": "*fp32",
    "mean_ptr": "*fp32", "multiplier_ptr": "*fp32", "codes_ptr": "*i8", "scales_ptr": "*fp32", "q_scale_ptr": "*fp32",
}
INT8_CODES = {"q_ptr": "*i8", "k_ptr": "*i8"}
FP8_OPERANDS = {"points_ptr": "*fp8e4nv", "centroids_ptr": "*fp8e4nv"}  # fp8 launches: sm_90 only (fp8 dots: sm_89)
FLOAT_SCALARS = {"top_p", "qk_scale"}

# (kernel, constexprs, num_warps, num_stages[, pointer types that differ]): the fast path's launches at
# head_dim 128 and 64.
KERNELS = [
    (kmeans._assign_kernel.fn, dict(HEAD_DIM=128, UPCAST=False, BLOCK_N=256, BLOCK_C=64, USE_ASM=True), 8, 3,
     FP8_OPERANDS),
    (kmeans._assign_kernel.fn, dict(HEAD_DIM=64, UPCAST=False, BLOCK_N=128, BLOCK_C=128, USE_ASM=True), 8, 3,
     FP8_OPERANDS),
    (kmeans._fp8_frame_kernel, dict(HEAD_DIM=128, BLOCK_R=128, CENTROID_RANGE=56.0), 8, 3, {"centroids_ptr": "*fp32"}),
    (kmeans._fp8_points_kernel, dict(HEAD_DIM=128, BLOCK_R=32, ROUND_BY_HAND=False), 4, 3, {"out_ptr": "*fp8e4nv"}),
    (kmeans._assign_kernel.fn, dict(HEAD_DIM=128, UPCAST=False, BLOCK_N=256, BLOCK_C=64, USE_ASM=True), 8, 3),
    (kmeans._assign_kernel.fn, dict(HEAD_DIM=128, UPCAST=False, BLOCK_N=128, BLOCK_C=128, USE_ASM=True), 8, 3),
    (kmeans._assign_kernel.fn, dict(HEAD_DIM=128, UPCAST=False, BLOCK_N=256, BLOCK_C=64, MASKED=True,
                                    ARGMIN=kmeans.ARGMINS["exact"]), 8, 3),
    (kmeans._assign_kernel.fn, dict(HEAD_DIM=128, UPCAST=False, BLOCK_N=256, BLOCK_C=64, USE_ASM=True,
                                    ARGMIN=kmeans.ARGMINS["tile"]), 8, 3),
    (kmeans._assign_operands_kernel, dict(HEAD_DIM=128, BLOCK_R=16, ROUND_TO_BF16=True, FP8=False), 4, 3,
     {"centroids_ptr": "*fp32", "centroids_low_ptr": "*bf16", "sq_norms_ptr": "*fp32"}),
    (kmeans._assign_operands_kernel, dict(HEAD_DIM=128, BLOCK_R=16, ROUND_TO_BF16=False, FP8=True), 4, 3,
     {"centroids_ptr": "*fp32", "centroids_low_ptr": "*fp8e4nv", "sq_norms_ptr": "*fp32"}),
    (kmeans._update_kernel, dict(HEAD_DIM=128, BLOCK_R=16), 1, 3),
    (kmeans._update_kernel, dict(HEAD_DIM=128, BLOCK_R=16), 4, 3),
    (selection._top_p_kernel, dict(BLOCK_K=1024), 1, 3),
    (plan._kv_plan_kernel, dict(BLOCK_N=128, WORDS=2, CHUNK=1024), 4, 3),
    (attention._kv_rows_kernel, dict(BLOCK_N=128, WORDS=2, TILES=4, USE_ASM=True, ORIGINAL_ROWS=True), 2, 3),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=128, BLOCK_M=128, BLOCK_N=128, QK_INT8=False, UPCAST=False), 8, 3),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=64, BLOCK_M=64, BLOCK_N=64, QK_INT8=False, UPCAST=False), 4, 3),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=128, BLOCK_M=128, BLOCK_N=128, QK_INT8=True, UPCAST=False), 8, 3,
     INT8_CODES),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=128, BLOCK_M=64, BLOCK_N=128, QK_INT8=False, UPCAST=False), 4, 3),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=128, BLOCK_M=64, BLOCK_N=128, QK_INT8=True, UPCAST=False), 4, 2,
     INT8_CODES),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=64, BLOCK_M=128, BLOCK_N=64, QK_INT8=True, UPCAST=False), 4, 3,
     INT8_CODES),
    # weights against the first key tile's row max, scores a tile ahead (fixed_max, scores_ahead): the int8
    # default's main and remainder tiles, and fixed_max alone in bf16
    (attention._sparse_attention_kernel, dict(HEAD_DIM=128, BLOCK_M=128, BLOCK_N=128, QK_INT8=True, UPCAST=False,
                                              FIXED_MAX=True, SCORES_AHEAD=1), 8, 3, INT8_CODES),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=128, BLOCK_M=64, BLOCK_N=64, QK_INT8=True, UPCAST=False,
                                              FIXED_MAX=True, SCORES_AHEAD=1), 4, 3, INT8_CODES),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=128, BLOCK_M=128, BLOCK_N=128, QK_INT8=False, UPCAST=False,
                                              FIXED_MAX=True), 8, 3),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=128, BLOCK_M=128, BLOCK_N=128, QK_INT8=True, UPCAST=False,
                                              FIXED_MAX=True, SCORES_AHEAD=2), 8, 3, INT8_CODES),
    (attention._sparse_attention_kernel, dict(HEAD_DIM=64, BLOCK_M=128, BLOCK_N=64, QK_INT8=False, UPCAST=False,
                                              FIXED_MAX=True, SCORES_AHEAD=1), 4, 3),
    (quantize._key_stats_kernel, dict(HEAD_DIM=128, CHUNK=256, BLOCK_T=32), 4, 3),
    (quantize._key_codes_kernel, dict(HEAD_DIM=128, BLOCK_T=64), 4, 3),
    (quantize._query_codes_kernel, dict(HEAD_DIM=128, BLOCK_T=64), 4, 3),
    (permute._gather_rows_kernel, dict(HEAD_DIM=128, BLOCK_R=64), 4, 3),
]


# Integer arguments the JIT sees as multiples of 16 at the fast path's shapes (strides of [B, N, H * D] views,
# 75,600 tokens); like every pointer, they get the JIT's divisibility hint, so the compiled code is the GPU's
# (vector loads, cp.async) rather than the scalar loads of an unhinted compile.
ALIGNED_INTS = ("stride", "num_tokens", "num_points")
# Shared memory a block may use: sm_90 227 KiB, sm_80 163 KiB (a launch above it fails with OutOfResources).
SHARED_LIMIT = {90: 232448, 80: 166912}


def aligned_attrs(kernel, constexprs: dict) -> dict:
    """ASTSource attrs: the divisibility hint on every pointer and aligned integer argument."""
    return {(index,): [["tt.divisibility", 16]] for index, name in enumerate(kernel.arg_names)
            if name not in constexprs and (name.endswith("_ptr") or any(part in name for part in ALIGNED_INTS))}


def signature_of(kernel, constexprs: dict, pointer_types: dict | None = None) -> dict:
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = {**POINTER_TYPES, **(pointer_types or {})}.get(name, "*i32")
        else:
            signature[name] = "fp32" if name in FLOAT_SCALARS else "i32"
    return signature


def compile_kernel(kernel, constexprs: dict, warps: int, stages: int, capability: int,
                   pointer_types: dict | None = None):
    """Compile one launch for sm_<capability> as the JIT would (divisibility hints; constexpr parameters left
    out take their defaults, else they would compile as int32 arguments with both sides of every branch on
    them). Returns triton's compiled kernel (`.asm["ptx"]`, `.asm["cubin"]`, `.metadata.shared`)."""
    constexprs = {**{param.name: param.default for param in getattr(kernel, "params", [])
                     if param.is_constexpr and param.has_default}, **constexprs}
    signature = signature_of(kernel, constexprs, pointer_types)
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=aligned_attrs(kernel, constexprs))
    return triton.compile(source, target=GPUTarget("cuda", capability, 32),
                          options={"num_warps": warps, "num_stages": stages})


def compile_launch(kernel, constexprs: dict, warps: int, stages: int, capability: int,
                   pointer_types: dict | None = None) -> int:
    """Compile one launch for sm_<capability>; returns its shared memory in bytes. Raises the compiler's error,
    or RuntimeError when the block needs more shared memory than the GPU gives one."""
    compiled = compile_kernel(kernel, constexprs, warps, stages, capability, pointer_types)
    shared = compiled.metadata.shared
    if shared > SHARED_LIMIT[capability]:
        raise RuntimeError(f"{shared} B of shared memory, over the {SHARED_LIMIT[capability]} B a block may use")
    return shared


def main() -> int:
    failures = 0
    for capability in (90, 80):
        for kernel, constexprs, warps, stages, *pointer_types in KERNELS:
            if capability < 89 and any("fp8" in kind for types in pointer_types for kind in types.values()):
                continue
            label = f"sm_{capability} {kernel.__name__} {constexprs}"
            try:
                shared = compile_launch(kernel, constexprs, warps, stages, capability, *pointer_types)
                print(f"ok   {label}: {shared} B shared", flush=True)
            except Exception as error:  # report every kernel, then fail
                failures += 1
                print(f"FAIL {label}: {type(error).__name__}: {error}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
