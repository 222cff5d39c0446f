"""k-means kernels: fused nearest-centroid assignment (distances never materialised) and a centroid
update that sums each cluster's members through the label sort, with no atomics.

points: [G, N, D] or [B, H, N, D] fp16/bf16, read in place (svg2_core.problems: any strides, last dim
contiguous); centroids: [G, C, D] fp32, labels: [G, N] int32.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..problems import ProblemStrides, problem_rows
from . import interpreting


def _assign_configs():
    if interpreting():
        return [triton.Config({"BLOCK_N": 64, "BLOCK_C": 64}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_N": block_n, "BLOCK_C": block_c}, num_warps=warps, num_stages=stages)
            for block_n, block_c, warps, stages in ((128, 128, 8, 3), (128, 64, 4, 3), (128, 128, 4, 2),
                                                    (256, 64, 8, 3), (64, 128, 4, 3), (128, 128, 8, 4),
                                                    (256, 128, 8, 3), (128, 64, 8, 3))]


@triton.jit
def _tile_distances(x, centroid_base, norm_base, start, num_clusters, dims, HEAD_DIM: tl.constexpr,
                    BLOCK_C: tl.constexpr, UPCAST: tl.constexpr):
    """||c||^2 - 2 x.c [BLOCK_N, BLOCK_C] for centroids start .. start + BLOCK_C (inf past num_clusters)."""
    cols = start + tl.arange(0, BLOCK_C)
    col_ok = cols < num_clusters
    c = tl.load(centroid_base + cols[:, None] * HEAD_DIM + dims[None, :], mask=col_ok[:, None], other=0.0)
    if UPCAST:
        c = c.to(tl.float32)
    c_sq = tl.load(norm_base + cols, mask=col_ok, other=float("inf"))
    return c_sq[None, :] + tl.dot(x, tl.trans(c))


@triton.jit
def _keep_nearer(distances, best, best_label, first_cluster):
    """Fold one centroid tile's distances [BLOCK_N, BLOCK_C] (its first centroid `first_cluster`) into the
    running nearest distance and label per point (the lower index wins a tie)."""
    tile_best, tile_label = tl.min(distances, axis=1, return_indices=True, return_indices_tie_break_left=True)
    better = tile_best < best
    return tl.where(better, tile_best, best), tl.where(better, tile_label + first_cluster, best_label)


@triton.autotune(configs=_assign_configs(), key=["num_clusters", "HEAD_DIM", "AHEAD"])
@triton.jit
def _assign_kernel(points_ptr, centroids_ptr, centroid_sq_norms_ptr, labels_ptr,
                   num_points, num_clusters, heads, stride_pb, stride_ph, stride_pn,
                   HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, AHEAD: tl.constexpr = False):
    """AHEAD: the next centroid tile's dot is issued before this tile's arg-min, so that the arg-min can run
    beside the MMA (sm_90 SASS at 256 x 64: 22 instead of 150 arg-min instructions after the MMA's wait, 138
    instead of 108 registers; not yet timed)."""
    tile = tl.program_id(0)
    problem = tl.program_id(1).to(tl.int64)
    rows = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    dims = tl.arange(0, HEAD_DIM)
    row_ok = rows < num_points
    problem_base = (problem // heads) * stride_pb + (problem % heads) * stride_ph
    x = tl.load(points_ptr + problem_base + rows[:, None].to(tl.int64) * stride_pn + dims[None, :],
                mask=row_ok[:, None], other=0.0)
    if UPCAST:
        x = x.to(tl.float32)
    centroid_base = centroids_ptr + problem * num_clusters * HEAD_DIM
    norm_base = centroid_sq_norms_ptr + problem * num_clusters
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_label = tl.zeros([BLOCK_N], tl.int32)
    # ||x||^2 is common to a row, so ||c||^2 - 2 x.c orders the centroids like the distance does
    # (the centroids come in already scaled by -2, exact in any float format)
    if AHEAD:
        distances = _tile_distances(x, centroid_base, norm_base, 0, num_clusters, dims, HEAD_DIM, BLOCK_C, UPCAST)
        for start in range(BLOCK_C, num_clusters, BLOCK_C):
            next_distances = _tile_distances(x, centroid_base, norm_base, start, num_clusters, dims, HEAD_DIM,
                                             BLOCK_C, UPCAST)
            best, best_label = _keep_nearer(distances, best, best_label, start - BLOCK_C)
            distances = next_distances
        best, best_label = _keep_nearer(distances, best, best_label,
                                        (tl.cdiv(num_clusters, BLOCK_C) - 1) * BLOCK_C)
    else:
        for start in range(0, num_clusters, BLOCK_C):
            distances = _tile_distances(x, centroid_base, norm_base, start, num_clusters, dims, HEAD_DIM, BLOCK_C,
                                        UPCAST)
            best, best_label = _keep_nearer(distances, best, best_label, start)
    tl.store(labels_ptr + problem * num_points + rows, best_label, mask=row_ok)


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
    # -- the members of a cluster are contiguous in the label sort: sum them in row blocks --
    for base in range(begin, end, BLOCK_R):
        member = base + tl.arange(0, BLOCK_R)
        member_ok = member < end
        flat = tl.load(sorted_points_ptr + member, mask=member_ok, other=0).to(tl.int64)
        point_problem = flat // num_points
        offset = ((point_problem // heads) * stride_pb + (point_problem % heads) * stride_ph
                  + (flat % num_points) * stride_pn)
        x = tl.load(points_ptr + offset[:, None] + dims[None, :], mask=member_ok[:, None], other=0.0)
        total += x.to(tl.float32)
    count = end - begin
    old = tl.load(old_centroids_ptr + slot.to(tl.int64) * HEAD_DIM + dims)
    mean = tl.sum(total, axis=0) / tl.maximum(count, 1).to(tl.float32)
    tl.store(centroids_ptr + slot.to(tl.int64) * HEAD_DIM + dims, tl.where(count > 0, mean, old))
    tl.store(cluster_sizes_ptr + slot, count)


def assign_operands(centroids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """What an assign kernel streams: centroids [G, C, D] fp32 scaled by -2 (exact) in the points' dtype,
    and their squared norms [G, C] fp32, so that ||c||^2 - 2 x.c orders centroids like the distance."""
    return (centroids * -2.0).to(dtype).contiguous(), centroids.square().sum(-1).contiguous()


def assign_to_nearest(points: torch.Tensor, centroids: torch.Tensor, ahead: bool = False) -> torch.Tensor:
    """Nearest centroid per point. points: [G, N, D] or [B, H, N, D] (last dim contiguous, read in place);
    centroids: [G, C, D] fp32. ahead: the kernel's AHEAD loop (same labels; for the lab until timed).

    Distances use a tensor-core dot in the points' dtype (centroids rounded to it), fp32 accumulation.
    Returns labels [G, N] int32.
    """
    num_problems, num_points, head_dim = problem_rows(points)
    num_clusters = centroids.shape[1]
    centroids_low, centroid_sq_norms = assign_operands(centroids, points.dtype)
    labels = torch.empty(num_problems, num_points, dtype=torch.int32, device=points.device)

    def grid(meta):
        return (triton.cdiv(num_points, meta["BLOCK_N"]), num_problems)

    _assign_kernel[grid](points, centroids_low, centroid_sq_norms, labels, num_points, num_clusters,
                         *ProblemStrides.of(points).args(), HEAD_DIM=head_dim, UPCAST=interpreting(), AHEAD=ahead)
    return labels


def sort_by_label(labels: torch.Tensor, num_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels [G, N] int32 grouped by (problem, cluster): (sorted_points [G*N] int32, flat indices g*N + n,
    token order within a cluster; cluster_offsets [G*C + 1] int32, where cluster (g, c) occupies
    sorted_points[offsets[g*C + c]:offsets[g*C + c + 1]]). No host synchronisation.

    One stable radix sort of the flat keys g*C + label: on the H200 at Wan 14B (40 x 75,600 labels) 0.23 ms
    with the offsets, where a Triton counting sort (a histogram per 1,024 labels, a prefix sum, a scatter)
    took 0.41 ms at 300 clusters and 0.77 ms at 1,000 (BENCHMARKS.md run 42)."""
    num_problems, num_points = labels.shape
    problem_base = torch.arange(num_problems, device=labels.device, dtype=torch.int32).unsqueeze(1) * num_clusters
    keys = (labels + problem_base).reshape(-1)
    sorted_keys, sorted_points = torch.sort(keys, stable=True)
    boundaries = torch.arange(num_problems * num_clusters + 1, device=labels.device, dtype=torch.int32)
    cluster_offsets = torch.searchsorted(sorted_keys, boundaries, out_int32=True)
    return sorted_points.to(torch.int32), cluster_offsets


def update_centroids(points: torch.Tensor, sorted_points: torch.Tensor, cluster_offsets: torch.Tensor,
                     old_centroids: torch.Tensor, block_rows: int | None = None,
                     num_warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each cluster's members (old centroid where empty), from `sort_by_label`'s output.

    points: [G, N, D] or [B, H, N, D] (last dim contiguous); old_centroids: [G, C, D] fp32.
    Returns (centroids [G, C, D] fp32, sizes [G, C] int32).
    """
    num_problems, num_points, head_dim = problem_rows(points)
    num_clusters = old_centroids.shape[1]
    if block_rows is None:
        # H200, Wan 14B (BENCHMARKS.md run 20): 1000 clusters of ~75 rows 0.41 -> 0.35 ms with 16 x 2,
        # 300 clusters of ~250 rows best with 32 x 4
        small_clusters = num_points < 128 * num_clusters
        block_rows, num_warps = (16, 2) if small_clusters else (32, 4)
    old_centroids = old_centroids.contiguous()
    centroids = torch.empty_like(old_centroids)
    cluster_sizes = torch.empty(num_problems, num_clusters, dtype=torch.int32, device=points.device)
    _update_kernel[(num_clusters, num_problems)](
        points, sorted_points, cluster_offsets, old_centroids, centroids, cluster_sizes,
        num_points, num_clusters, *ProblemStrides.of(points).args(),
        HEAD_DIM=head_dim, BLOCK_R=block_rows, num_warps=num_warps or 4)
    return centroids, cluster_sizes
