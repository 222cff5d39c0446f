"""Shared pieces of the Triton tests: interpreter set-up and random partitions (the oracle is tests/oracle.py).

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
