"""Every production launch of the fast path's Triton kernels for a GPU class, in one list, so that a compile
check can build each for a GPU it does not have (`python -m svg2_core.doctor --arch 8.9`).

A launch names its kernel, its constexpr arguments, warps, pipeline stages and the element types of its pointer
arguments (POINTER_TYPES by argument name, any other `*_ptr` int32; scalars int32 but FLOAT_SCALARS). The shapes
follow the wrappers for that class: attention tiles from `attention.class_config` (with both P V accumulations
where the class's choice is fp16: its GeForce cards take fp16, its other cards fp32), the row table and key plan
at the attention's key tile, k-means at every assign configuration the class autotunes over
(`kmeans.ASSIGN_TILES`), fp8 k-means only where the class has fp8 dots.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..gpu_classes import CLASSES, DEFAULT_CAPABILITY, GpuClass
from . import attention, kmeans, plan, quantize, selection, value_scale

POINTER_TYPES = {
    "points_ptr": "*bf16", "centroids_ptr": "*bf16", "centroid_sq_norms_ptr": "*fp32", "old_centroids_ptr": "*fp32",
    "means_ptr": "*fp32", "probabilities_ptr": "*fp32", "mask_ptr": "*i1", "block_mask_ptr": "*u8",
    "kv_tile_starts_ptr": "*i64", "q_ptr": "*bf16", "k_ptr": "*bf16", "v_ptr": "*bf16", "out_ptr": "*bf16",
    "k_scale_ptr": "*fp32", "sums_ptr": "*fp32", "maxs_ptr": "*fp32", "mins_ptr": "*fp32", "mean_ptr": "*fp32",
    "multiplier_ptr": "*fp32", "codes_ptr": "*i8", "scales_ptr": "*fp32", "q_scale_ptr": "*fp32",
    "v_scale_ptr": "*fp32",
}
FLOAT_SCALARS = ("top_p", "qk_scale")
INT8_CODES = {"q_ptr": "*i8", "k_ptr": "*i8"}
FP8_OPERANDS = {"points_ptr": "*fp8e4nv", "centroids_ptr": "*fp8e4nv"}


@dataclass(frozen=True)
class KernelLaunch:
    """One launch: `kernel` (the @triton.jit function), its constexprs, warps and stages; pointer_types: the
    pointer arguments whose element type differs from POINTER_TYPES. tensor_cores: the kernel's code depends
    on the GPU's MMA (and its shared memory on the tiles)."""

    name: str
    kernel: object
    constexprs: dict
    num_warps: int
    num_stages: int = 3
    pointer_types: dict = field(default_factory=dict)
    tensor_cores: bool = False

    def signature(self) -> dict:
        """Triton signature: "constexpr", the pointer's "*type", "fp32" or "i32" per argument name."""
        types = {**POINTER_TYPES, **self.pointer_types}
        signature = {}
        for name in self.kernel.arg_names:
            if name in self.constexprs:
                signature[name] = "constexpr"
            elif name.endswith("_ptr"):
                signature[name] = types.get(name, "*i32")
            else:
                signature[name] = "fp32" if name in FLOAT_SCALARS else "i32"
        return signature


def _attention_launches(head_dim: int, qk_int8: bool, gpu_class: GpuClass, smallest: bool) -> list[KernelLaunch]:
    """The attention launches at these scores: with both P V accumulations where the class's choice is fp16
    (a card of the class takes fp16 only when its fp32-accumulate MMA runs at half rate, `gpu_classes.detect`)."""
    class_choice = attention.class_config(head_dim, qk_int8, gpu_class, smallest)
    kernel = attention._sparse_attention_kernel
    precision = "int8" if qk_int8 else "bf16"
    found = []
    for pv_fp16 in ((True, False) if class_choice.pv_fp16_accumulate else (False,)):
        config = replace(class_choice, pv_fp16_accumulate=pv_fp16)
        pointer_types = dict(INT8_CODES) if qk_int8 else {}
        constexprs = dict(HEAD_DIM=head_dim, QK_INT8=qk_int8, UPCAST=False, FIRST_TILE_MAX=config.first_tile_max,
                          PV_FP16=pv_fp16)
        if pv_fp16:  # v comes in as its fp16 copy, v_scale_ptr its scale per problem
            pointer_types["v_ptr"] = "*fp16"
        else:
            constexprs["v_scale_ptr"] = None  # no kernel argument
        for role, (block_m, block_n, warps, stages) in zip(("main", "remainder"),
                                                           attention.attention_launches(config)):
            found.append(KernelLaunch(
                f"attention hd{head_dim} {precision} {role} {block_m}x{block_n}x{warps}x{stages}"
                + (" first-tile max" if config.first_tile_max else "")
                + (", P V fp16 accumulate" if pv_fp16 else ", P V fp32 accumulate"),
                kernel, dict(constexprs, BLOCK_M=block_m, BLOCK_N=block_n), warps, stages, pointer_types,
                tensor_cores=True))
    return found


def production_launches(gpu_class: GpuClass | None = None, head_dims: tuple[int, ...] = (128, 64),
                        smallest: bool = False) -> list[KernelLaunch]:
    """The launches a call makes on `gpu_class` (None: sm_90) at these head dims (bf16 inputs; fp8 k-means
    where the class has fp8 dots); smallest: those of the out-of-resources retry (the small tile family)."""
    gpu_class = gpu_class or CLASSES[DEFAULT_CAPABILITY]
    found = []
    for head_dim in head_dims:
        for qk_int8 in (False, True):
            found += _attention_launches(head_dim, qk_int8, gpu_class, smallest)
        block_n = attention.class_config(head_dim, False, gpu_class, smallest).block_n
        words = 2 if block_n > 64 else 1
        found += [
            KernelLaunch(f"row table block_n {block_n}", attention._kv_rows_kernel,
                         dict(BLOCK_N=block_n, WORDS=words, TILES=attention.ROW_TABLE_TILES, USE_ASM=True),
                         attention.ROW_TABLE_WARPS),
            KernelLaunch(f"key plan block_n {block_n}", plan._kv_plan_kernel,
                         dict(BLOCK_N=block_n, WORDS=words, CHUNK=plan.KV_PLAN_CHUNK), 4),
            KernelLaunch(f"key stats hd{head_dim}", quantize._key_stats_kernel,
                         dict(HEAD_DIM=head_dim, CHUNK=quantize.STATS_CHUNK, BLOCK_T=32), 4),
            KernelLaunch(f"key codes hd{head_dim}", quantize._key_codes_kernel, dict(HEAD_DIM=head_dim, BLOCK_T=64), 4),
            KernelLaunch(f"query codes hd{head_dim}", quantize._query_codes_kernel,
                         dict(HEAD_DIM=head_dim, BLOCK_T=64), 4),
        ]
        if attention.class_config(head_dim, False, gpu_class, smallest).pv_fp16_accumulate:
            found += [
                KernelLaunch(f"value max hd{head_dim}", value_scale._value_absmax_kernel,
                             dict(HEAD_DIM=head_dim, CHUNK=value_scale.STATS_CHUNK, BLOCK_T=32), 4),
                KernelLaunch(f"value fp16 copy hd{head_dim}", value_scale._value_fp16_kernel,
                             dict(HEAD_DIM=head_dim, BLOCK_T=64), 4, 3, {"out_ptr": "*fp16"}),
            ]
        for dtype in (("fp8", "bf16") if gpu_class.fp8_dots else ("bf16",)):
            for block_n, block_c, warps, stages in kmeans.ASSIGN_TILES["small" if smallest else gpu_class.tile_family]:
                found.append(KernelLaunch(
                    f"assign hd{head_dim} {dtype} {block_n}x{block_c}x{warps}x{stages}", kmeans._assign_kernel,
                    dict(HEAD_DIM=head_dim, UPCAST=False, BLOCK_N=block_n, BLOCK_C=block_c, USE_ASM=True), warps,
                    stages, FP8_OPERANDS if dtype == "fp8" else {}, tensor_cores=True))
    operands = {"centroids_ptr": "*fp32", "centroids_low_ptr": "*bf16", "sq_norms_ptr": "*fp32"}
    update = dict(HEAD_DIM=128, BLOCK_R=kmeans.UPDATE_BLOCK_ROWS)
    found += [
        KernelLaunch("assign operands bf16", kmeans._assign_operands_kernel,
                     dict(HEAD_DIM=128, BLOCK_R=16, ROUND_TO_BF16=True, FP8=False), 4, 3, operands),
        KernelLaunch("update 1 warp", kmeans._update_kernel, update, kmeans.UPDATE_WARPS_SMALL),
        KernelLaunch("update 4 warps", kmeans._update_kernel, update, kmeans.UPDATE_WARPS_LARGE),
        KernelLaunch("top-p", selection._top_p_kernel, dict(BLOCK_K=1024), 1),
    ]
    if gpu_class.fp8_dots:
        found += [
            KernelLaunch("assign operands fp8", kmeans._assign_operands_kernel,
                         dict(HEAD_DIM=128, BLOCK_R=16, ROUND_TO_BF16=False, FP8=True), 4, 3,
                         dict(operands, centroids_low_ptr="*fp8e4nv")),
            KernelLaunch("fp8 frame", kmeans._fp8_frame_kernel,
                         dict(HEAD_DIM=128, BLOCK_R=128, CENTROID_RANGE=kmeans.FP8_CENTROID_RANGE), 8, 3,
                         {"centroids_ptr": "*fp32"}),
            KernelLaunch("fp8 points", kmeans._fp8_points_kernel,
                         dict(HEAD_DIM=128, BLOCK_R=32, ROUND_BY_HAND=False), 4, 3, {"out_ptr": "*fp8e4nv"}),
        ]
    return list({launch.name: launch for launch in found}.values())  # the row table / key plan once per block_n
