"""k-means kernels: fused nearest-centroid assignment (distances never materialised) and a centroid
update that sums each cluster's members through the label sort, with no atomics.

points: [G, N, D] or [B, H, N, D] fp16/bf16, read in place (svg2_core.problems: any strides, last dim
contiguous); centroids: [G, C, D] fp32, labels: [G, N] int32. Where the GPU has fp8 dots the assignment reads
a centered, scaled fp8 copy of the points instead ([G, N, D] float8_e4m3fn, `points_to_fp8`, `Fp8Frame`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..gpu_classes import GpuClass
from ..gpu_classes import gpu_class as current_gpu_class
from ..problems import ProblemStrides, problem_rows
from . import interpreting


# The assign kernel's autotuned (BLOCK_N, BLOCK_C, warps, stages) per tile family (gpu_classes): the large
# family's list as measured on the H200; the consumer family keeps those whose bf16 block fits 101,376 B of
# shared memory (every fp8 one does); the small family one configuration (also the out-of-resources retry).
ASSIGN_TILES = {
    "large": ((128, 128, 8, 3), (128, 64, 4, 3), (128, 128, 4, 2), (256, 64, 8, 3), (64, 128, 4, 3),
              (128, 128, 8, 4), (256, 128, 8, 3), (128, 64, 8, 3)),
    "consumer": ((128, 128, 8, 3), (128, 64, 4, 3), (128, 128, 4, 2), (256, 64, 8, 3), (64, 128, 4, 3),
                 (128, 64, 8, 3)),
    "small": ((128, 64, 4, 2),),
}
INTERPRETER_ASSIGN_TILES = ((64, 64, 4, 1),)


def assign_tiles(gpu_class: GpuClass | None = None, smallest: bool = False) -> tuple[tuple[int, int, int, int], ...]:
    """The assign kernel's autotuned (BLOCK_N, BLOCK_C, num_warps, num_stages) for `gpu_class` (None: the
    current device's); smallest: the small family's."""
    if interpreting():  # several configurations fail under the interpreter
        return INTERPRETER_ASSIGN_TILES
    return ASSIGN_TILES["small" if smallest else (gpu_class or current_gpu_class()).tile_family]


def _configs_that_tile_the_centroids(configs, named_args, **kwargs):
    """Only centroid tiles that divide the padded centroid count (a multiple of ASSIGN_TILE_MULTIPLE): the
    kernel reads whole tiles without bounds checks."""
    return [config for config in configs if named_args["padded_clusters"] % config.kwargs["BLOCK_C"] == 0]


@triton.jit
def _round_to_e4m3(values):
    """fp32 -> the nearest float8 e4m3 value (round to nearest even, saturating at +-448), still fp32. The GPU's
    cast does this; the interpreter's loses the carry when rounding up reaches the next power of two (7.98 ->
    4), so its kernels round by hand and cast exact values."""
    values = tl.minimum(tl.maximum(values, -448.0), 448.0)
    bits = values.to(tl.uint32, bitcast=True)
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & 0xFFF00000).to(tl.float32, bitcast=True)
    subnormal = (values + 24576.0) - 24576.0  # fp32 addition rounds to multiples of 2^-9, e4m3's subnormal step
    return tl.where(tl.abs(values) < 0.015625, subnormal, normal)


@triton.jit
def _tile_distances(x, x_sq, centroid_base, norm_base, start, dims, HEAD_DIM: tl.constexpr,
                    BLOCK_C: tl.constexpr, UPCAST: tl.constexpr):
    """[BLOCK_N, BLOCK_C] for centroids start .. start + BLOCK_C: ||x||^2 + ||c||^2 - 2 x.c (>= 0 up to
    rounding), the accumulator starting from the two norms (as many instructions as from ||c||^2 alone). fp8
    tensor cores add each 32-deep k-step to the accumulator with ~14 significant bits of its largest term
    (DeepSeek-V3 report): ~2^-12 of the norms over the dot, well under what rounding the operands to fp8
    moves a distance; adding the norms after the dot instead costs two FADD per distance in a loop bound by
    issuing instructions. No bounds check: the operands are padded to whole tiles with centroids that are
    never nearest (`assign_operands`)."""
    cols = start + tl.arange(0, BLOCK_C)
    c_sq = tl.load(norm_base + cols)
    c = tl.load(centroid_base + cols[:, None] * HEAD_DIM + dims[None, :])
    if UPCAST:
        c = c.to(tl.float32)
    return tl.dot(x, tl.trans(c), x_sq[:, None] + c_sq[None, :])


@triton.jit
def _fold_into_slots(distances, best, keep, tile_index, USE_ASM: tl.constexpr):
    """Fold one centroid tile's distances [BLOCK_N, BLOCK_C] (>= 0, as bits) into the running minimum per row
    and column pair, best [BLOCK_N, BLOCK_C // 2] int32: each distance's low mantissa bits (those outside
    `keep`) replaced by a code, 2 x tile + 0 for the even column of a pair, + 1 for the odd one; the minimum
    of the three keys keeps the nearer distance and, on a tie, the lower code, which is the lower centroid.
    On the GPU each pair takes two LOP3 and one three-input VIMNMX3 (written as one asm block: ptxas does not
    fuse the two minimums of a loop-carried value on its own), and no reduction across threads."""
    even, odd = tl.split(tl.reshape(distances.to(tl.int32, bitcast=True), [best.shape[0], best.shape[1], 2]))
    even_code = tl.full(best.shape, 2 * tile_index, tl.int32)
    if USE_ASM:
        return tl.inline_asm_elementwise(
            "{ .reg .b32 e, o, m; lop3.b32 e, $1, $4, $5, 0xEA; lop3.b32 o, $2, $4, $6, 0xEA; "
            "min.s32 m, e, o; min.s32 $0, m, $3; }", "=r,r,r,r,r,r,r",
            [even, odd, best, tl.full(best.shape, keep, tl.int32), even_code, even_code + 1],
            dtype=tl.int32, is_pure=True, pack=1)
    return tl.minimum(best, tl.minimum((even & keep) | even_code, (odd & keep) | (even_code + 1)))


@triton.jit
def _slot_labels(best, keep, BLOCK_C: tl.constexpr):
    """best [BLOCK_N, BLOCK_C // 2] from `_fold_into_slots` -> the nearest centroid per row [BLOCK_N] int32,
    the lower index among slots whose kept bits tie."""
    code = best & ~keep
    pairs = tl.arange(0, BLOCK_C // 2)
    labels = (code >> 1) * BLOCK_C + 2 * pairs[None, :] + (code & 1)
    keys = ((best & keep).to(tl.int64) << 32) | labels.to(tl.int64)
    return (tl.min(keys, axis=1) & 0xFFFFFFFF).to(tl.int32)


@triton.jit
def _assign_kernel(points_ptr, centroids_ptr, centroid_sq_norms_ptr, labels_ptr,
                   num_points, num_clusters, padded_clusters, code_bits, heads, stride_pb, stride_ph, stride_pn,
                   HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
                   USE_ASM: tl.constexpr = False):
    """labels[g, n] = nearest centroid of point n of problem g: a BLOCK_N-point tile against every
    BLOCK_C-centroid tile of the padded operands in turn, folded into a running packed minimum per row and
    column pair (`_fold_into_slots`), reduced across columns once at the end (`_slot_labels`). code_bits: the
    low mantissa bits that carry the codes, enough for 2 x the number of tiles. Points and centroids in
    bf16 / fp16, or both in fp8 e4m3 (`points_to_fp8`, `assign_operands`: twice the tensor-core rate, half
    the shared-memory and L2 bytes), divided by one scale per problem: the distances come out divided by its
    square.

    The arg-min's integer / logic instructions, not the MMA, bound this loop (the ALU pipe is busier than
    the tensor cores), so the slots take one LOP3 per distance and one VIMNMX3 per pair, with no reduction
    across threads inside the loop."""
    tile = tl.program_id(0)
    problem = tl.program_id(1).to(tl.int64)
    rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < num_points
    problem_base = (problem // heads) * stride_pb + (problem % heads) * stride_ph
    x = tl.load(points_ptr + problem_base + rows[:, None].to(tl.int64) * stride_pn + dims[None, :],
                mask=row_ok[:, None], other=0.0)
    centroid_base = centroids_ptr + problem * padded_clusters * HEAD_DIM
    norm_base = centroid_sq_norms_ptr + problem * padded_clusters
    x_float = x.to(tl.float32)
    x_sq = tl.sum(x_float * x_float, axis=1)
    if UPCAST:
        x = x.to(tl.float32)
    keep = -(1 << code_bits)
    best_slots = tl.full([BLOCK_N, BLOCK_C // 2], 0x7FFFFFFF, tl.int32)
    # (the centroids come in already scaled by -2, exact in any float format)
    for start in range(0, num_clusters, BLOCK_C):
        distances = _tile_distances(x, x_sq, centroid_base, norm_base, start, dims, HEAD_DIM, BLOCK_C, UPCAST)
        best_slots = _fold_into_slots(distances, best_slots, keep, start // BLOCK_C, USE_ASM)
    best_label = _slot_labels(best_slots, keep, BLOCK_C)
    # a point whose every distance is NaN (NaN activations) would take a padding centroid (+inf < NaN as bits):
    # keep its label in range
    tl.store(labels_ptr + problem * num_points + rows, tl.minimum(best_label, num_clusters - 1), mask=row_ok)


_ASSIGN_AUTOTUNERS: dict[tuple, object] = {}


def assign_autotuner(tiles: tuple[tuple[int, int, int, int], ...]):
    """The assign kernel autotuned over `tiles` (`assign_tiles`), made on first use (an autotuner made at
    import asks older Tritons for a GPU driver) and kept per list."""
    if tiles not in _ASSIGN_AUTOTUNERS:
        configs = [triton.Config({"BLOCK_N": block_n, "BLOCK_C": block_c}, num_warps=warps, num_stages=stages)
                   for block_n, block_c, warps, stages in tiles]
        _ASSIGN_AUTOTUNERS[tiles] = triton.autotune(
            configs=configs, key=["num_clusters", "HEAD_DIM"],
            prune_configs_by={"early_config_prune": _configs_that_tile_the_centroids})(_assign_kernel)
    return _ASSIGN_AUTOTUNERS[tiles]


@triton.jit
def _update_kernel(points_ptr, sorted_points_ptr, cluster_offsets_ptr, old_centroids_ptr,
                   centroids_ptr, cluster_sizes_ptr, num_points, num_clusters, heads, stride_pb, stride_ph,
                   stride_pn,
                   HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr):
    cluster = tl.program_id(0)
    problem = tl.program_id(1)
    slot = problem * num_clusters + cluster
    begin = tl.load(cluster_offsets_ptr + slot)
    end = tl.load(cluster_offsets_ptr + slot + 1)
    dims = tl.arange(0, HEAD_DIM)
    total = tl.zeros([BLOCK_R, HEAD_DIM], tl.float32)
    # every member is a point of this program's problem: its flat index minus the problem's first is its
    # token (a 64-bit division per member would bound this kernel)
    problem_points = (points_ptr + (problem // heads).to(tl.int64) * stride_pb
                      + (problem % heads).to(tl.int64) * stride_ph)
    first_flat = problem * num_points
    # -- the members of a cluster are contiguous in the label sort: sum them in row blocks --
    for base in range(begin, end, BLOCK_R):
        member = base + tl.arange(0, BLOCK_R)
        member_ok = member < end
        token = tl.load(sorted_points_ptr + member, mask=member_ok, other=first_flat) - first_flat
        x = tl.load(problem_points + token.to(tl.int64)[:, None] * stride_pn + dims[None, :],
                    mask=member_ok[:, None], other=0.0)
        total += x.to(tl.float32)
    count = end - begin
    old = tl.load(old_centroids_ptr + slot.to(tl.int64) * HEAD_DIM + dims)
    mean = tl.sum(total, axis=0) / tl.maximum(count, 1).to(tl.float32)
    tl.store(centroids_ptr + slot.to(tl.int64) * HEAD_DIM + dims, tl.where(count > 0, mean, old))
    tl.store(cluster_sizes_ptr + slot, count)


ASSIGN_TILE_MULTIPLE = 64  # the smallest BLOCK_C of the assign configurations (larger ones must divide C')


@triton.jit
def _assign_operands_kernel(centroids_ptr, means_ptr, scales_ptr, centroids_low_ptr, sq_norms_ptr, num_clusters,
                            padded_clusters, HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr,
                            ROUND_TO_BF16: tl.constexpr, FP8: tl.constexpr):
    """centroids [G, C, D] fp32 -> centroids_low [G, C', D] (-2 c rounded to the low dtype, zero rows past C)
    and sq_norms [G, C'] fp32, the squared norms of the rounded centroids (so that the assign kernel's
    distance is exactly that between its rounded operands, >= 0 up to fp32 rounding; +inf past C). FP8:
    (c - means[g]) / scales[g] first, rounded to e4m3."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    problem = tl.program_id(1).to(tl.int64)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < num_clusters
    c = tl.load(centroids_ptr + (problem * num_clusters + rows)[:, None] * HEAD_DIM + dims[None, :],
                mask=row_ok[:, None], other=0.0)
    if FP8:
        c = tl.math.div_rn(c - tl.load(means_ptr + problem * HEAD_DIM + dims)[None, :], tl.load(scales_ptr + problem))
    low = c * -2.0
    # round by hand: the interpreter's fp32 -> bf16 cast truncates and its fp8 cast drops carries; the GPU's
    # casts round to nearest even like these
    if FP8:
        low = _round_to_e4m3(low)
    elif ROUND_TO_BF16:
        bits = low.to(tl.uint32, bitcast=True)
        low = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).to(tl.float32, bitcast=True)
    else:
        low = low.to(centroids_low_ptr.dtype.element_ty).to(tl.float32)
    slot = problem * padded_clusters + rows
    slot_ok = rows < padded_clusters
    tl.store(centroids_low_ptr + slot[:, None] * HEAD_DIM + dims[None, :],
             low.to(centroids_low_ptr.dtype.element_ty), mask=slot_ok[:, None])
    tl.store(sq_norms_ptr + slot, tl.where(row_ok, tl.sum(low * low, axis=1) * 0.25, float("inf")), mask=slot_ok)


class Fp8Frame(NamedTuple):
    """Where the fp8 assignment's operands live: (x - means[g]) / scales[g]. means [G, D] fp32 (distances do
    not change under a shift, and a coordinate shared by all points would otherwise take most of e4m3's 3
    mantissa bits); scales [G] fp32, powers of two."""
    means: torch.Tensor
    scales: torch.Tensor


# the largest centered centroid coordinate over its problem's scale lies in (28, 56]: -2c stays within e4m3's 448,
# and points up to 8x that far from the mean are in range (farther coordinates saturate: such a coordinate
# moves every distance of its point alike)
FP8_CENTROID_RANGE = 56.0


@triton.jit
def _fp8_frame_kernel(centroids_ptr, means_ptr, scales_ptr, num_clusters, HEAD_DIM: tl.constexpr,
                      BLOCK_R: tl.constexpr, CENTROID_RANGE: tl.constexpr):
    problem = tl.program_id(0).to(tl.int64)
    dims = tl.arange(0, HEAD_DIM)
    total = tl.zeros([HEAD_DIM], tl.float32)
    highest = tl.full([HEAD_DIM], float("-inf"), tl.float32)
    lowest = tl.full([HEAD_DIM], float("inf"), tl.float32)
    for start in range(0, num_clusters, BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)
        row_ok = rows < num_clusters
        c = tl.load(centroids_ptr + (problem * num_clusters + rows)[:, None] * HEAD_DIM + dims[None, :],
                    mask=row_ok[:, None], other=0.0)
        total += tl.sum(c, axis=0)
        highest = tl.maximum(highest, tl.max(tl.where(row_ok[:, None], c, float("-inf")), axis=0))
        lowest = tl.minimum(lowest, tl.min(tl.where(row_ok[:, None], c, float("inf")), axis=0))
    mean = tl.math.div_rn(total, num_clusters.to(tl.float32))  # exact where the sum is (a plain / is not)
    # max |c - mean| over centroids and coordinates, from each coordinate's extremes
    largest = tl.max(tl.maximum(highest - mean, mean - lowest), axis=0) / CENTROID_RANGE
    # 2^ceil(log2(largest)): round the bits up to the next power of two (a power of two stays)
    power = ((largest.to(tl.int32, bitcast=True) + 0x7FFFFF) & 0x7F800000).to(tl.float32, bitcast=True)
    tl.store(means_ptr + problem * HEAD_DIM + dims, mean)
    tl.store(scales_ptr + problem, tl.where(largest > 0, power, 1.0))


def fp8_frame(centroids: torch.Tensor) -> Fp8Frame:
    """centroids [G, C, D] fp32 -> (their mean per problem, the power-of-two scale 2^ceil(log2(max |c - mean| /
    FP8_CENTROID_RANGE)), 1 where all centroids are equal), in one launch."""
    num_problems, num_clusters, head_dim = centroids.shape
    means = torch.empty(num_problems, head_dim, dtype=torch.float32, device=centroids.device)
    scales = torch.empty(num_problems, dtype=torch.float32, device=centroids.device)
    _fp8_frame_kernel[(num_problems,)](centroids.float().contiguous(), means, scales, num_clusters,
                                       HEAD_DIM=head_dim, BLOCK_R=128, CENTROID_RANGE=FP8_CENTROID_RANGE,
                                       num_warps=8)
    return Fp8Frame(means, scales)


@triton.jit
def _fp8_points_kernel(points_ptr, means_ptr, scales_ptr, out_ptr, num_points, heads, stride_pb, stride_ph,
                       stride_pn, HEAD_DIM: tl.constexpr, BLOCK_R: tl.constexpr, ROUND_BY_HAND: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    problem = tl.program_id(1).to(tl.int64)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < num_points
    x = tl.load(points_ptr + (problem // heads) * stride_pb + (problem % heads) * stride_ph
                + rows[:, None].to(tl.int64) * stride_pn + dims[None, :], mask=row_ok[:, None], other=0.0)
    centered = tl.math.div_rn(x.to(tl.float32) - tl.load(means_ptr + problem * HEAD_DIM + dims)[None, :],
                              tl.load(scales_ptr + problem))
    if ROUND_BY_HAND:
        centered = _round_to_e4m3(centered)
    tl.store(out_ptr + (problem * num_points + rows)[:, None] * HEAD_DIM + dims[None, :],
             centered.to(tl.float8e4nv), mask=row_ok[:, None])


def points_to_fp8(points: torch.Tensor, frame: Fp8Frame) -> torch.Tensor:
    """points [G, N, D] or [B, H, N, D] (last dim contiguous, read in place) -> (points - means) / scales as
    [G, N, D] float8_e4m3fn (round to nearest even, saturating): the fp8 assignment's operand, made once per
    k-means."""
    num_problems, num_points, head_dim = problem_rows(points)
    out = torch.empty(num_problems, num_points, head_dim, dtype=torch.float8_e4m3fn, device=points.device)
    block_rows = 32
    _fp8_points_kernel[(triton.cdiv(num_points, block_rows), num_problems)](
        points, frame.means, frame.scales, out, num_points, *ProblemStrides.of(points).args(), HEAD_DIM=head_dim,
        BLOCK_R=block_rows, ROUND_BY_HAND=interpreting(), num_warps=4)
    return out


def assign_operands(centroids: torch.Tensor, dtype: torch.dtype, frame: Fp8Frame | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """What an assign kernel streams, from centroids [G, C, D] fp32 in one launch: the centroids scaled by -2
    (exact) and rounded to `dtype`, [G, C', D], and the squared norms of the rounded centroids [G, C'] fp32, so
    that ||c||^2 - 2 x.c orders centroids like the distance. C' is C rounded up to ASSIGN_TILE_MULTIPLE: zero
    centroids with norm +inf, never nearest, so the kernel's centroid tiles need no bounds check.
    dtype float8_e4m3fn takes the points' `frame`: the centroids shifted and scaled like them."""
    num_problems, num_clusters, head_dim = centroids.shape
    fp8 = dtype == torch.float8_e4m3fn
    if fp8 and frame is None:
        raise ValueError("fp8 centroid operands need the points' Fp8Frame")
    padded = triton.cdiv(num_clusters, ASSIGN_TILE_MULTIPLE) * ASSIGN_TILE_MULTIPLE
    centroids_low = torch.empty(num_problems, padded, head_dim, dtype=dtype, device=centroids.device)
    sq_norms = torch.empty(num_problems, padded, dtype=torch.float32, device=centroids.device)
    block_rows = 16
    _assign_operands_kernel[(triton.cdiv(padded, block_rows), num_problems)](
        centroids.contiguous(), frame.means if fp8 else sq_norms, frame.scales if fp8 else sq_norms,
        centroids_low, sq_norms, num_clusters, padded, HEAD_DIM=head_dim, BLOCK_R=block_rows,
        ROUND_TO_BF16=dtype == torch.bfloat16, FP8=fp8, num_warps=4)
    return centroids_low, sq_norms


def fp8_dot_supported(device: torch.device) -> bool:
    """float8 e4m3 tensor-core dots: where the GPU class acted as has them (8.9, 9.0, 10.0, 12.0; a class forced
    by SVG2_GPU_CLASS decides, not the device), and the interpreter."""
    if device.type != "cuda":
        return interpreting()
    return current_gpu_class(device).fp8_dots


def assign_to_nearest(points: torch.Tensor, centroids: torch.Tensor, frame: Fp8Frame | None = None,
                      gpu_class: GpuClass | None = None, smallest: bool = False) -> torch.Tensor:
    """Nearest centroid per point. points: [G, N, D] or [B, H, N, D] (last dim contiguous, read in place);
    centroids: [G, C, D] fp32. Distances that agree in all but their low code bits (within 2^-18 of the value
    at up to 1,024 clusters) count as a tie, which the lower index wins.

    Distances use a tensor-core dot with fp32 accumulation in the points' dtype, the centroids rounded to it.
    float8_e4m3fn points (`points_to_fp8(points, frame)`) take their `frame`: 3 mantissa bits per centered
    coordinate, so labels change only where two centroids are nearly as near.
    Tiles autotuned among `assign_tiles(gpu_class, smallest)` (gpu_class None: the points' device's).
    Returns labels [G, N] int32.
    """
    fp8 = points.dtype == torch.float8_e4m3fn
    if fp8 and frame is None:
        raise ValueError("float8 points need the Fp8Frame they were made with (frame=None)")
    num_problems, num_points, head_dim = problem_rows(points)
    num_clusters = centroids.shape[1]
    centroids_low, centroid_sq_norms = assign_operands(centroids, points.dtype, frame if fp8 else None)
    padded_clusters = centroids_low.shape[1]
    # codes 0 .. 2 x tiles - 1 at the smallest tile
    code_bits = (2 * (padded_clusters // ASSIGN_TILE_MULTIPLE) - 1).bit_length()
    labels = torch.empty(num_problems, num_points, dtype=torch.int32, device=points.device)

    def grid(meta):
        return (triton.cdiv(num_points, meta["BLOCK_N"]), num_problems)

    tiles = assign_tiles(gpu_class or current_gpu_class(points.device), smallest)
    assign_autotuner(tiles)[grid](points, centroids_low, centroid_sq_norms, labels, num_points, num_clusters,
                                  padded_clusters, code_bits, *ProblemStrides.of(points).args(), HEAD_DIM=head_dim,
                                  UPCAST=interpreting(), USE_ASM=not interpreting())
    return labels


NARROW_KEY_OFFSET = 32768  # int16 keys: (problem, cluster) slot minus this, for G x C below 65,536


def sort_by_label(labels: torch.Tensor, num_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels [G, N] int32 grouped by (problem, cluster): (sorted_points [G*N] int32, flat indices g*N + n,
    token order within a cluster; cluster_offsets [G*C + 1] int32, where cluster (g, c) occupies
    sorted_points[offsets[g*C + c]:offsets[g*C + c + 1]]). No host synchronisation.

    One stable radix sort of the flat keys g*C + label (faster than a Triton counting sort). Where
    G x C < 65,536 the keys are int16, shifted by NARROW_KEY_OFFSET, so the radix sort makes two passes
    instead of four; the same order."""
    num_problems, num_points = labels.shape
    num_slots = num_problems * num_clusters
    narrow_keys = num_slots < 2 * NARROW_KEY_OFFSET
    shift = NARROW_KEY_OFFSET if narrow_keys else 0
    key_dtype = torch.int16 if narrow_keys else torch.int32
    problem_base = torch.arange(num_problems, device=labels.device, dtype=torch.int32).unsqueeze(1) * num_clusters
    keys = (labels + (problem_base - shift)).to(key_dtype).reshape(-1)
    sorted_keys, sorted_points = torch.sort(keys, stable=True)
    boundaries = torch.arange(-shift, num_slots + 1 - shift, device=labels.device, dtype=key_dtype)
    cluster_offsets = torch.searchsorted(sorted_keys, boundaries, out_int32=True)
    return sorted_points.to(torch.int32), cluster_offsets


# The update's rows per step, and its warps for clusters of fewer (small) or more (large) than
# UPDATE_LARGE_CLUSTER points on average: one warp keeps more programs per SM busy on small clusters.
UPDATE_BLOCK_ROWS = 16
UPDATE_WARPS_SMALL, UPDATE_WARPS_LARGE = 1, 4
UPDATE_LARGE_CLUSTER = 128


def update_centroids(points: torch.Tensor, sorted_points: torch.Tensor, cluster_offsets: torch.Tensor,
                     old_centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each cluster's members (old centroid where empty), from `sort_by_label`'s output.

    points: [G, N, D] or [B, H, N, D] (last dim contiguous); old_centroids: [G, C, D] fp32.
    Returns (centroids [G, C, D] fp32, sizes [G, C] int32).
    """
    num_problems, num_points, head_dim = problem_rows(points)
    num_clusters = old_centroids.shape[1]
    small_clusters = num_points < UPDATE_LARGE_CLUSTER * num_clusters
    old_centroids = old_centroids.contiguous()
    centroids = torch.empty_like(old_centroids)
    cluster_sizes = torch.empty(num_problems, num_clusters, dtype=torch.int32, device=points.device)
    _update_kernel[(num_clusters, num_problems)](
        points, sorted_points, cluster_offsets, old_centroids, centroids, cluster_sizes,
        num_points, num_clusters, *ProblemStrides.of(points).args(),
        HEAD_DIM=head_dim, BLOCK_R=UPDATE_BLOCK_ROWS,
        num_warps=UPDATE_WARPS_SMALL if small_clusters else UPDATE_WARPS_LARGE)
    return centroids, cluster_sizes
