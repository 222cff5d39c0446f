"""k-means reference (objective, warm start, contracts) and top-p block selection on hand-made scores."""
import math

import pytest
import torch

from svg2_core.kmeans import kmeans_objective, kmeans_torch, sample_initial_centroids
from svg2_core.selection import key_cluster_probabilities, select_blocks, top_p_mask


def _blobs(num_problems=3, num_points=400, head_dim=16, num_blobs=12, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_problems, num_blobs, head_dim, generator=generator) * 4
    which = torch.randint(0, num_blobs, (num_problems, num_points), generator=generator)
    points = centers.gather(1, which[..., None].expand(-1, -1, head_dim))
    return points + 0.7 * torch.randn(num_problems, num_points, head_dim, generator=generator)


def test_objective_never_increases():
    points = _blobs()
    centroids = sample_initial_centroids(points, 10, torch.Generator().manual_seed(1))
    previous = None
    for _ in range(15):
        result = kmeans_torch(points, centroids, 1)
        objective = kmeans_objective(points, result.centroids, result.labels)
        if previous is not None:
            assert (objective <= previous * (1 + 1e-9)).all()
        previous, centroids = objective, result.centroids


def test_warm_start_from_converged_centroids_matches_cold_start_in_two_iterations():
    points = _blobs(seed=2)
    cold = kmeans_torch(points, sample_initial_centroids(points, 10, torch.Generator().manual_seed(3)), 50)
    warm = kmeans_torch(points, cold.centroids, 2)
    assert torch.equal(warm.labels, cold.labels)
    assert torch.allclose(warm.centroids, cold.centroids, atol=1e-5)
    assert torch.allclose(kmeans_objective(points, warm.centroids, warm.labels),
                          kmeans_objective(points, cold.centroids, cold.labels), rtol=1e-9)


def test_labels_in_range_sizes_sum_and_centroids_are_member_means():
    points = _blobs(num_points=300)
    result = kmeans_torch(points, sample_initial_centroids(points, 20, torch.Generator().manual_seed(0)), 3)
    assert result.labels.dtype == torch.int32 and result.cluster_sizes.dtype == torch.int32
    assert result.labels.min() >= 0 and result.labels.max() < 20
    assert (result.cluster_sizes.sum(-1) == 300).all()
    assert torch.equal(result.cluster_sizes,
                       torch.nn.functional.one_hot(result.labels.long(), 20).sum(1).to(torch.int32))
    for g in range(points.shape[0]):
        for c in range(20):
            members = points[g][result.labels[g] == c]
            if len(members):
                assert torch.allclose(result.centroids[g, c], members.mean(0), atol=1e-5)


def test_empty_cluster_keeps_its_centroid_and_seeds_are_distinct():
    points = torch.zeros(1, 10, 4)
    points[0, 5:] = 1.0
    far_away = torch.full((1, 1, 4), 100.0)
    init = torch.cat([points[:, :1], points[:, 5:6], far_away], dim=1)
    result = kmeans_torch(points, init, 2)
    assert result.cluster_sizes.tolist() == [[5, 5, 0]]
    assert torch.equal(result.centroids[0, 2], far_away[0, 0])
    seeds = torch.arange(50.0).view(1, 50, 1).expand(4, 50, 3)
    chosen = sample_initial_centroids(seeds, 50, torch.Generator().manual_seed(0))
    assert all(len(set(chosen[g, :, 0].tolist())) == 50 for g in range(4))


def test_top_p_keeps_up_to_and_including_the_crossing_cluster():
    probabilities = torch.tensor([[0.1, 0.4, 0.3, 0.2]])
    # sorted: 0.4, 0.3, 0.2, 0.1 -> cumulative 0.4, 0.7, 0.9, 1.0
    assert top_p_mask(probabilities, 0.4, 1).tolist() == [[False, True, False, False]]
    assert top_p_mask(probabilities, 0.5, 1).tolist() == [[False, True, True, False]]
    assert top_p_mask(probabilities, 0.85, 1).tolist() == [[False, True, True, True]]
    assert top_p_mask(probabilities, 0.95, 1).tolist() == [[True, True, True, True]]
    assert top_p_mask(probabilities, 1.0, 1).all()


def test_top_p_floor_and_ties():
    probabilities = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    assert top_p_mask(probabilities, 0.5, 1).tolist() == [[True, False, False, False]]
    # the floor keeps the top 3; among equal scores the lower index wins
    assert top_p_mask(probabilities, 0.5, 3).tolist() == [[True, True, True, False]]
    ties = torch.full((1, 4), 0.25)
    assert top_p_mask(ties, 0.5, 1).tolist() == [[True, True, False, False]]
    assert top_p_mask(ties, 0.6, 1).tolist() == [[True, True, True, False]]


def test_probabilities_are_size_weighted_row_softmax_and_ignore_empty_clusters():
    q_centroids = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    k_centroids = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    sizes = torch.tensor([[3, 1, 0]], dtype=torch.int32)
    probabilities = key_cluster_probabilities(q_centroids, k_centroids, sizes, scale=0.5)
    row0 = torch.tensor([3 * math.exp(0.5), 1 * math.exp(0.0), 0.0])
    row1 = torch.tensor([3 * math.exp(0.0), 1 * math.exp(1.0), 0.0])
    expected = torch.stack([row0 / row0.sum(), row1 / row1.sum()])
    assert torch.allclose(probabilities[0], expected, atol=1e-6)
    mask = select_blocks(q_centroids, k_centroids, sizes, top_p=0.6, min_kept=1, scale=0.5)
    # row 1: 3 / (3 + e) = 0.52 < 0.6, so the second cluster is needed to reach top_p
    assert mask[0].tolist() == [[True, False, False], [True, True, False]]


@pytest.mark.parametrize("top_p", [0.3, 0.9])
def test_selection_is_fp32_even_for_half_centroids(top_p):
    generator = torch.Generator().manual_seed(0)
    q_centroids = torch.randn(2, 5, 8, generator=generator)
    k_centroids = torch.randn(2, 7, 8, generator=generator)
    sizes = torch.randint(1, 9, (2, 7), generator=generator, dtype=torch.int32)
    rounded_q, rounded_k = q_centroids.bfloat16(), k_centroids.bfloat16()
    half = key_cluster_probabilities(rounded_q, rounded_k, sizes, 0.35)
    upcast = key_cluster_probabilities(rounded_q.float(), rounded_k.float(), sizes, 0.35)
    assert half.dtype == torch.float32 and torch.equal(half, upcast)
    assert torch.equal(select_blocks(rounded_q, rounded_k, sizes, top_p, 1, 0.35),
                       select_blocks(rounded_q.float(), rounded_k.float(), sizes, top_p, 1, 0.35))
