"""Batched Euclidean k-means, the PyTorch reference.

Points are `[G, N, D]` (G = batch x heads independent problems), centroids `[G, C, D]` fp32.
Every Lloyd iteration assigns, then moves each centroid to the mean of its members; an empty cluster
keeps its centroid. No early stop, so the call never waits on the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .problems import problem_rows

# Rows of points per distance block in the reference: bounds the [rows, C] distance matrix.
_ASSIGN_CHUNK_ELEMENTS = 1 << 24


@dataclass
class KMeansResult:
    """labels: [G, N] int32 from the last assignment; centroids: [G, C, D] fp32, the means of those
    labels (old centroid where a cluster is empty); cluster_sizes: [G, C] int32. label_sort: the labels
    grouped by (problem, cluster), [G * N] int32 flat indices (the Triton k-means' last
    `triton_kernels.kmeans.sort_by_label`, reused by the plan), or None where the k-means did not sort."""

    labels: torch.Tensor
    centroids: torch.Tensor
    cluster_sizes: torch.Tensor
    label_sort: torch.Tensor | None = None


def sample_initial_centroids(points: torch.Tensor, num_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """`num_clusters` distinct points per problem, chosen uniformly at random (the library's cold start is
    `grid_initial_centroids`; this one is a baseline for tests and benchmarks).

    points: [G, N, D] or [B, H, N, D] (G = B x H) with N >= num_clusters; returns [G, C, D] fp32.
    """
    num_problems, num_points, _ = problem_rows(points)
    random_scores = torch.rand(num_problems, num_points, generator=generator, device=points.device)
    seed_index = random_scores.topk(num_clusters, dim=1).indices
    # index in place ([G, N, D] as [1, G, N, D]): reshaping a transposed view would copy all of it
    by_head = points if points.ndim == 4 else points.unsqueeze(0)
    problem = torch.arange(num_problems, device=points.device).unsqueeze(1)
    heads = by_head.shape[1]
    return by_head[problem // heads, problem % heads, seed_index].float()


def grid_seed_index(num_points: int, num_clusters: int, seed: int, device=None) -> torch.Tensor:
    """Token indices of the grid seeds: stratum i is tokens [floor(i N / C), floor((i + 1) N / C)) and seed i
    the token at fraction u_i of it, u_i in [0, 1) drawn from `seed` (the same for every problem).

    One offset per stratum rather than one for all: a fixed stride that divides a frame's row would put
    every seed in the same few columns. Distinct and increasing when N >= C. Returns [C] int64 made on
    `device` (no host-device copy).
    """
    if not 1 <= num_clusters <= num_points:
        raise ValueError(f"grid seeding needs 1 <= num_clusters <= num_points, got {num_clusters} clusters "
                         f"for {num_points} points")
    device = torch.device(device if device is not None else "cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    offsets = torch.rand(num_clusters, generator=generator, device=device, dtype=torch.float64)
    bounds = torch.arange(num_clusters + 1, device=device, dtype=torch.int64).mul_(num_points).div_(
        num_clusters, rounding_mode="floor")
    widths = bounds[1:] - bounds[:-1]
    return bounds[:-1] + (offsets * widths).floor_().to(torch.int64).clamp_(max=widths - 1)


def grid_initial_centroids(points: torch.Tensor, num_clusters: int, seed: int) -> torch.Tensor:
    """Cold start: seeds spread evenly over the token order, the same token positions for every problem.

    Video tokens are in frame-major raster order, so evenly spaced tokens cover every frame and region;
    a few Lloyd iterations from them reach the objective of a long Lloyd from k-means++ seeds (tests/
    test_cold_start.py). The positions depend on N, C and `seed` only, so a call on some of the heads seeds
    each head exactly as a call on all of them.
    points: [G, N, D] or [B, H, N, D] (G = B x H) with N >= num_clusters; returns [G, C, D] fp32.
    """
    num_problems, num_points, head_dim = problem_rows(points)
    seed_index = grid_seed_index(num_points, num_clusters, seed, points.device)
    return points[..., seed_index, :].reshape(num_problems, num_clusters, head_dim).float()


def assign_to_nearest(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid by squared Euclidean distance (lowest index on ties).

    points: [G, N, D]; centroids: [G, C, D] fp32; returns labels [G, N] int64.
    """
    num_problems, num_points, _ = points.shape
    num_clusters = centroids.shape[1]
    centroid_sq_norms = centroids.square().sum(-1)  # [G, C]
    rows_per_chunk = max(1, _ASSIGN_CHUNK_ELEMENTS // max(1, num_problems * num_clusters))
    labels = torch.empty(num_problems, num_points, dtype=torch.int64, device=points.device)
    for start in range(0, num_points, rows_per_chunk):
        chunk = points[:, start:start + rows_per_chunk].float()
        # ||x||^2 is the same for every centroid, so it does not change the arg-min.
        distances = centroid_sq_norms.unsqueeze(1) - 2.0 * torch.bmm(chunk, centroids.transpose(1, 2))
        labels[:, start:start + rows_per_chunk] = distances.argmin(-1)
    return labels


def update_centroids(points: torch.Tensor, labels: torch.Tensor, old_centroids: torch.Tensor):
    """Mean of each cluster's members; empty clusters keep `old_centroids`.

    points: [G, N, D]; labels: [G, N] int64; old_centroids: [G, C, D] fp32.
    Returns (centroids [G, C, D] fp32, cluster_sizes [G, C] int32).
    """
    num_problems, _, head_dim = points.shape
    num_clusters = old_centroids.shape[1]
    sums = torch.zeros(num_problems, num_clusters, head_dim, dtype=torch.float32, device=points.device)
    sums.scatter_add_(1, labels.unsqueeze(-1).expand(-1, -1, head_dim), points.float())
    counts = torch.zeros(num_problems, num_clusters, dtype=torch.float32, device=points.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float32))
    means = sums / counts.clamp(min=1.0).unsqueeze(-1)
    centroids = torch.where(counts.unsqueeze(-1) > 0, means, old_centroids)
    return centroids, counts.to(torch.int32)


def kmeans_torch(points: torch.Tensor, init_centroids: torch.Tensor, iterations: int) -> KMeansResult:
    """`iterations` Lloyd iterations from `init_centroids`.

    points: [G, N, D] any float dtype; init_centroids: [G, C, D]; iterations >= 1.
    """
    centroids = init_centroids.float()
    for _ in range(iterations):
        labels = assign_to_nearest(points, centroids)
        centroids, cluster_sizes = update_centroids(points, labels, centroids)
    return KMeansResult(labels=labels.to(torch.int32), centroids=centroids, cluster_sizes=cluster_sizes)


def kmeans_objective(points: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of squared distances of each point to its assigned centroid, per problem: [G] fp64."""
    assigned = centroids.double().gather(1, labels.long().unsqueeze(-1).expand(-1, -1, centroids.shape[-1]))
    return (points.double() - assigned).square().sum(dim=(1, 2))
