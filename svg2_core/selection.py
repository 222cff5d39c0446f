"""Top-p selection of (query cluster, key cluster) blocks from centroid scores, in fp32.

Shapes: q_centroids [G, Cq, D], k_centroids [G, Ck, D], k_cluster_sizes [G, Ck] -> block_mask [G, Cq, Ck].
Pure tensor ops with no data-dependent host control flow, so it runs on the GPU without a sync.
"""
from __future__ import annotations

import torch


def key_cluster_probabilities(q_centroids: torch.Tensor, k_centroids: torch.Tensor,
                              k_cluster_sizes: torch.Tensor, scale: float) -> torch.Tensor:
    """Size-weighted softmax over key clusters per query-cluster row (SVG2 Eq. 1-2), fp32.

    P[i, j] = |K_j| exp(s * c_i.c_j) / sum_k |K_k| exp(s * c_i.c_k); empty key clusters get 0.
    Returns [G, Cq, Ck].
    """
    scores = torch.bmm(q_centroids.float(), k_centroids.float().transpose(1, 2)) * scale
    log_sizes = torch.log(k_cluster_sizes.float()).unsqueeze(1)  # log 0 = -inf: empty clusters vanish
    return torch.softmax(scores + log_sizes, dim=-1)


def top_p_mask(probabilities: torch.Tensor, top_p: float, min_kept: int) -> torch.Tensor:
    """Keep, per row, entries in descending order up to and including the one whose cumulative sum
    reaches `top_p`, and never fewer than `min_kept` (the top ones). Ties keep the lower index first.

    probabilities: [..., C] (rows sum to 1); returns a bool mask of the same shape. top_p >= 1 keeps all.
    """
    if top_p >= 1.0:
        return torch.ones_like(probabilities, dtype=torch.bool)
    sorted_probs, order = probabilities.sort(dim=-1, descending=True, stable=True)
    inclusive = sorted_probs.cumsum(dim=-1)
    exclusive = torch.cat([torch.zeros_like(inclusive[..., :1]), inclusive[..., :-1]], dim=-1)
    keep_sorted = exclusive < top_p
    keep_sorted[..., :min_kept] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def select_blocks(q_centroids: torch.Tensor, k_centroids: torch.Tensor, k_cluster_sizes: torch.Tensor,
                  top_p: float, min_kept: int, scale: float) -> torch.Tensor:
    """block_mask [G, Cq, Ck] bool: True where query cluster i attends key cluster j."""
    probabilities = key_cluster_probabilities(q_centroids, k_centroids, k_cluster_sizes, scale)
    return top_p_mask(probabilities, top_p, min_kept)
