"""SVG2 hyper-parameters, validated when constructed.

Defaults follow the official 720p scripts (300 query / 1000 key clusters, top-p 0.9, a floor of 10% of
the key clusters, 2 warm-started k-means iterations). A cold start takes 8 iterations from seeds spread over
the token order (svg2_core.kmeans.grid_initial_centroids), where the official code takes 50 from random seeds:
on structured inputs 8 reach the objective of a 50-iteration Lloyd from k-means++ seeds within 3%
(tests/test_cold_start.py), so the first sparse step costs little more than a warm one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def _check_int(name: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _check_float(name: str, value, description: str, predicate) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number in {description}, got {value!r}")
    if not predicate(value):
        raise ValueError(f"{name} must be in {description}, got {value}")


@dataclass(frozen=True)
class SVG2Config:
    """What SVG2 keeps and how hard it clusters.

    top_p: per query cluster, key clusters are kept in descending order of estimated attention mass
        up to and including the one whose cumulative mass reaches top_p; 1.0 keeps everything (dense).
    num_q_clusters / num_k_clusters: k-means clusters for queries / keys, per (batch, head).
    min_k_cluster_ratio: every query cluster keeps at least floor(ratio * num_k_clusters) key clusters.
    kmeans_init_iters: Lloyd iterations on a cold start (no cached centroids), from grid seeds.
    kmeans_iters: Lloyd iterations when warm-started from the cached centroids of the previous call.
    seed: picks the grid seeds' offsets within their strata, the same for every (batch, head); same seed,
        same input -> same clusters.
    qk_int8: attention scores from int8 codes of q and k, as SageAttention does (svg2_core.quantize); P V
        stays in the input dtype. Off: exact up to the input dtype (top_p 1.0 = dense attention).
    """

    top_p: float = 0.9
    num_q_clusters: int = 300
    num_k_clusters: int = 1000
    min_k_cluster_ratio: float = 0.10
    kmeans_init_iters: int = 8
    kmeans_iters: int = 2
    seed: int = 0
    qk_int8: bool = False

    def __post_init__(self) -> None:
        _check_float("top_p", self.top_p, "(0, 1]", lambda p: 0.0 < p <= 1.0)
        _check_int("num_q_clusters", self.num_q_clusters, 1, 65536)
        _check_int("num_k_clusters", self.num_k_clusters, 1, 65536)
        _check_float("min_k_cluster_ratio", self.min_k_cluster_ratio, "[0, 1]", lambda r: 0.0 <= r <= 1.0)
        _check_int("kmeans_init_iters", self.kmeans_init_iters, 1, 1000)
        _check_int("kmeans_iters", self.kmeans_iters, 1, 1000)
        _check_int("seed", self.seed, 0, 2**63 - 1)
        if not isinstance(self.qk_int8, bool):
            raise ValueError(f"qk_int8 must be True or False, got {self.qk_int8!r}")

    @property
    def min_kept_k_clusters(self) -> int:
        """The floor on kept key clusters per query cluster (at least 1)."""
        return max(1, math.floor(self.min_k_cluster_ratio * self.num_k_clusters))

    @property
    def keeps_every_block(self) -> bool:
        """True when the selection keeps every (query cluster, key cluster) block whatever the input: top_p 1.0,
        or a floor of every key cluster. Such a call is exact dense attention computed the slow way."""
        return self.top_p >= 1.0 or self.min_kept_k_clusters >= self.num_k_clusters
