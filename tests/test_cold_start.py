"""The cold start (a call without cached centroids): grid seeds, then `kmeans_init_iters` Lloyd iterations.

On held-out structured inputs (parameters unlike the ones the defaults were chosen on), with the library's
defaults and the reference backend: the cold clusterings of q and k are within 3% of a 50-iteration Lloyd
from k-means++ seeds (k-means objective). A cold call differs from a warm one only in its Lloyd iterations and
their seeds; what that costs is measured on the GPU (BENCHMARKS.md, "The first sparse step").
"""
from __future__ import annotations

import pytest
import torch

from svg2_core import SVG2Config, SVG2State, svg2_attention
from svg2_core.backends import TorchBackend
from svg2_core.kmeans import (grid_initial_centroids, grid_seed_index, kmeans_objective, kmeans_torch,
                              update_centroids)
from svg2_core.synthetic import structured_qkv

HELD_OUT = {
    "peaked_few_objects_text_suffix": dict(grid=(5, 24, 32), peakedness=6.0, num_objects=7, length_scale=4.0,
                                           dense_suffix=64, seed=41),
    "flat_many_objects": dict(grid=(4, 26, 38), peakedness=3.0, semantic=2.0, locality=1.5, num_objects=15,
                              length_scale=2.5, dense_suffix=0, seed=42),
    "smooth_wide_rows": dict(grid=(3, 30, 40), peakedness=5.0, locality=2.0, num_objects=3, length_scale=6.0,
                             dense_suffix=32, seed=43),
}


def kmeans_plus_plus(points: torch.Tensor, num_clusters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeds per problem (D^2 sampling). points: [G, N, D]; returns [G, C, D] fp32."""
    seeds = []
    for x in points.float():
        chosen = [int(torch.randint(x.shape[0], (1,), generator=generator))]
        nearest = (x - x[chosen[0]]).square().sum(-1)
        for _ in range(1, num_clusters):
            chosen.append(int(torch.multinomial(nearest / nearest.sum(), 1, generator=generator)))
            nearest = torch.minimum(nearest, (x - x[chosen[-1]]).square().sum(-1))
        seeds.append(x[chosen])
    return torch.stack(seeds)


def _objective_of_labels(points: torch.Tensor, labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """Objective of a clustering given by its labels (each centroid the mean of its members): [G] fp64."""
    start = torch.zeros(points.shape[0], num_clusters, points.shape[-1])
    centroids, _ = update_centroids(points, labels.long(), start)
    return kmeans_objective(points, centroids, labels)


def test_grid_seeds_take_one_token_per_stratum():
    index = grid_seed_index(1000, 300, seed=0)
    bounds = torch.arange(301) * 1000 // 300
    assert index.dtype == torch.int64 and index.shape == (300,)
    assert bool(((index >= bounds[:-1]) & (index < bounds[1:])).all())
    assert torch.equal(index, grid_seed_index(1000, 300, seed=0))
    assert not torch.equal(index, grid_seed_index(1000, 300, seed=1))
    assert torch.equal(grid_seed_index(7, 7, seed=3), torch.arange(7))
    # offsets vary per stratum: a stride that divides a row would otherwise put every seed in a few columns
    assert len(set((index % 40).tolist())) > 20
    with pytest.raises(ValueError, match="num_clusters <= num_points"):
        grid_seed_index(5, 6, seed=0)


def test_grid_seeds_are_the_same_tokens_in_every_head():
    points = torch.randn(2, 3, 50, 8)
    seeds = grid_initial_centroids(points, 10, seed=5).reshape(2, 3, 10, 8)
    index = grid_seed_index(50, 10, seed=5)
    assert torch.equal(seeds, points[:, :, index])
    one_head = grid_initial_centroids(points[1:2, 2:3], 10, seed=5)
    assert torch.equal(one_head[0], seeds[1, 2])


def test_a_call_on_a_slice_of_the_heads_clusters_each_head_as_the_call_on_all():
    q, k, v = structured_qkv(1, 4, (2, 8, 10), 16, dtype=torch.float32, seed=7)
    config = SVG2Config(num_q_clusters=8, num_k_clusters=20)
    _, whole = svg2_attention(q, k, v, config, state=SVG2State(), backend="torch", return_info=True)
    _, part = svg2_attention(q[:, 1:3], k[:, 1:3], v[:, 1:3], config, state=SVG2State(), backend="torch",
                             return_info=True)
    assert torch.equal(part.q_labels, whole.q_labels[:, 1:3])
    assert torch.equal(part.k_labels, whole.k_labels[:, 1:3])


def test_default_cold_start_is_a_few_iterations():
    assert SVG2Config().kmeans_init_iters == 8
    assert SVG2Config(kmeans_init_iters=50).kmeans_init_iters == 50


@pytest.mark.parametrize("name", list(HELD_OUT))
def test_cold_clusterings_are_within_3_percent_of_a_long_lloyd(name):
    params = dict(HELD_OUT[name])
    grid = params.pop("grid")
    suffix = params["dense_suffix"]
    q, k, v = structured_qkv(1, 1, grid, 128, dtype=torch.float32, **params)
    config = SVG2Config()  # the library's defaults: 300 / 1000 clusters, kmeans_init_iters cold iterations
    _, info = svg2_attention(q, k, v, config, state=SVG2State(), dense_suffix=suffix, backend="torch",
                             return_info=True)
    clustered = slice(0, q.shape[2] - suffix)
    for x, labels, clusters in ((q, info.q_labels, config.num_q_clusters), (k, info.k_labels, config.num_k_clusters)):
        points = x[0, :, clustered].float()
        cold = _objective_of_labels(points, labels[0, :, clustered], clusters)
        long_lloyd = kmeans_torch(points, kmeans_plus_plus(points, clusters, torch.Generator().manual_seed(0)), 50)
        best = kmeans_objective(points, long_lloyd.centroids, long_lloyd.labels)
        ratio = (cold / best).max().item()
        assert ratio <= 1.03, f"{name}: cold objective {ratio:.4f} x a 50-iteration Lloyd from k-means++ seeds"


def test_a_cold_call_runs_the_cold_iterations_from_grid_seeds_and_a_warm_call_the_warm_ones(monkeypatch):
    """What a cold call costs beyond a warm one is its Lloyd iterations: kmeans_init_iters from the grid seeds
    against kmeans_iters from the cached centroids (the cost ratio is measured on the GPU, BENCHMARKS.md)."""
    calls = []
    cluster = TorchBackend.cluster

    def recording(self, q_points, q_init, k_points, k_init, iterations, overlap=False):
        result = cluster(self, q_points, q_init, k_points, k_init, iterations, overlap)
        calls.append(dict(q_points=q_points, k_points=k_points, q_init=q_init.clone(), k_init=k_init.clone(),
                          iterations=iterations, overlap=overlap, result=result))
        return result

    monkeypatch.setattr(TorchBackend, "cluster", recording)
    q, k, v = structured_qkv(1, 2, (2, 8, 10), 16, dtype=torch.float32, dense_suffix=8, seed=9)
    config = SVG2Config(num_q_clusters=8, num_k_clusters=20, kmeans_init_iters=5, kmeans_iters=2)
    state = SVG2State()
    for _ in range(2):
        svg2_attention(q, k, v, config, state=state, cache_key=0, dense_suffix=8, backend="torch")
    cold, warm = calls
    assert (cold["iterations"], cold["overlap"]) == (5, False)
    assert (warm["iterations"], warm["overlap"]) == (2, True)
    assert torch.equal(cold["q_init"], grid_initial_centroids(cold["q_points"], 8, config.seed))
    assert torch.equal(cold["k_init"], grid_initial_centroids(cold["k_points"], 20, config.seed))
    q_result, k_result = cold["result"]
    assert torch.equal(warm["q_init"].float(), q_result.centroids.reshape(warm["q_init"].shape).float())
    assert torch.equal(warm["k_init"].float(), k_result.centroids.reshape(warm["k_init"].shape).float())
