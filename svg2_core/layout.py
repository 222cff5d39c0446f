"""Cluster-contiguous layout: the permutation and the variable-block map the sparse kernel consumes.

A sequence of N tokens is `[dense prefix | clustered tokens | dense suffix]`. After permutation the
clustered tokens are sorted by cluster id, so query block layout is `[prefix, q cluster 0..Cq-1, suffix]`
and key block layout `[prefix, k cluster 0..Ck-1, suffix]`. Dense blocks attend, and are attended by,
everything. Shapes use G = batch x heads.
"""
from __future__ import annotations

import torch


def cluster_order(labels: torch.Tensor, dense_prefix: int, dense_suffix: int) -> torch.Tensor:
    """Permutation that makes clusters contiguous, dense tokens left in place.

    labels: [G, Nc] cluster ids of the clustered tokens; returns order [G, N] int64 where
    order[g, p] is the original index of the token placed at position p (N = prefix + Nc + suffix).
    """
    num_problems, num_clustered = labels.shape
    device = labels.device
    middle = labels.long().argsort(dim=-1, stable=True) + dense_prefix
    prefix = torch.arange(dense_prefix, device=device).expand(num_problems, -1)
    suffix_start = dense_prefix + num_clustered
    suffix = torch.arange(suffix_start, suffix_start + dense_suffix, device=device).expand(num_problems, -1)
    return torch.cat([prefix, middle, suffix], dim=1)


def block_sizes_with_dense(cluster_sizes: torch.Tensor, dense_prefix: int, dense_suffix: int) -> torch.Tensor:
    """cluster_sizes: [G, C] -> [G, C + 2] int32: the prefix block, the clusters, the suffix block."""
    num_problems = cluster_sizes.shape[0]
    prefix = cluster_sizes.new_full((num_problems, 1), dense_prefix)
    suffix = cluster_sizes.new_full((num_problems, 1), dense_suffix)
    return torch.cat([prefix, cluster_sizes, suffix], dim=1).to(torch.int32)


def block_mask_with_dense(block_mask: torch.Tensor) -> torch.Tensor:
    """block_mask: [G, Cq, Ck] -> [G, Cq + 2, Ck + 2] with the dense rows and columns all True."""
    return torch.nn.functional.pad(block_mask, (1, 1, 1, 1), value=True)


def block_of_tokens(labels: torch.Tensor, dense_prefix: int, dense_suffix: int, num_clusters: int) -> torch.Tensor:
    """Extended block id of every token in original order: [G, N] (prefix 0, clusters 1..C, suffix C+1)."""
    inner = labels.long() + 1
    return torch.cat([
        inner.new_zeros(labels.shape[0], dense_prefix), inner,
        inner.new_full((labels.shape[0], dense_suffix), num_clusters + 1)], dim=1)


def block_ids(block_sizes: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Block index of every permuted position. block_sizes: [G, B] summing to N; returns [G, N] int64."""
    block_ends = block_sizes.long().cumsum(dim=-1)
    positions = torch.arange(num_tokens, device=block_sizes.device).expand(block_sizes.shape[0], -1)
    return torch.searchsorted(block_ends, positions.contiguous(), right=True)


def attention_density(q_block_sizes: torch.Tensor, k_block_sizes: torch.Tensor,
                      block_mask: torch.Tensor) -> torch.Tensor:
    """Fraction of the N x N attention map that is computed: [G] fp32.

    q_block_sizes: [G, Bq]; k_block_sizes: [G, Bk]; block_mask: [G, Bq, Bk] (dense blocks included).
    """
    q_sizes = q_block_sizes.double()
    k_sizes = k_block_sizes.double()
    computed = torch.einsum("gi,gij,gj->g", q_sizes, block_mask.double(), k_sizes)
    total = q_sizes.sum(-1) * k_sizes.sum(-1)
    return (computed / total).float()
