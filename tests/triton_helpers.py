"""Shared pieces of the Triton tests: interpreter set-up, random partitions and the masked-attention oracle.

Imported before any Triton kernel module so that, without a GPU, kernels run under TRITON_INTERPRET=1.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def random_labels(num_problems: int, num_points: int, num_clusters: int, generator: torch.Generator,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels [G, Np] int32 of a random partition with some clusters of size 0 and some of size 1
    (a quarter of the clusters each, at most 2 and 3); returns (labels, sizes [G, C] int32)."""
    empty, singletons = min(2, num_clusters // 4), min(3, num_clusters // 4)
    crowded = num_clusters - empty - singletons
    labels = torch.randint(0, crowded, (num_problems, num_points), generator=generator)
    for g in range(num_problems):
        slots = torch.randperm(num_points, generator=generator)[:singletons]
        labels[g, slots] = torch.arange(crowded + empty, num_clusters)
    perm = torch.randperm(num_clusters, generator=generator)
    labels = perm[labels].to(torch.int32)
    sizes = torch.stack([torch.bincount(row.long(), minlength=num_clusters) for row in labels]).to(torch.int32)
    return labels, sizes


def element_mask(plan, num_tokens: int) -> torch.Tensor:
    """[G, N, N] bool in original token order: query i may attend key j (dense prefix/suffix included)."""
    from svg2_core.layout import block_mask_with_dense, block_of_tokens

    q_block = block_of_tokens(plan.q_labels, plan.dense_prefix, plan.dense_suffix, plan.q_cluster_sizes.shape[1])
    k_block = block_of_tokens(plan.k_labels, plan.dense_prefix, plan.dense_suffix, plan.k_cluster_sizes.shape[1])
    mask = block_mask_with_dense(plan.block_mask)
    rows = mask.gather(1, q_block.unsqueeze(-1).expand(-1, -1, mask.shape[-1]))
    return rows.gather(2, k_block.unsqueeze(1).expand(-1, num_tokens, -1))


def masked_attention(q, k, v, allowed, scale, low_precision: bool) -> torch.Tensor:
    """Dense attention under an element mask. fp32 throughout (the oracle), or as PyTorch would do it in
    q's dtype: scores from a low-precision matmul, softmax in fp32, probabilities and p @ v in q's dtype."""
    if low_precision:
        scores = torch.bmm(q, k.transpose(1, 2)).float() * scale
        probabilities = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
        return torch.bmm(probabilities.to(q.dtype), v).float()
    scores = torch.bmm(q.float(), k.float().transpose(1, 2)) * scale
    probabilities = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    return torch.bmm(probabilities, v.float())


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x.float() - reference).norm() / reference.norm())
