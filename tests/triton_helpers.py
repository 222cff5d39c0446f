"""Shared pieces of the Triton tests: interpreter set-up and random partitions (the oracle is tests/oracle.py).

Imported before any Triton kernel module so that, without a GPU, kernels run under TRITON_INTERPRET=1.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
# the compile checks build kernels for GPUs this machine lacks with the wheel's ptxas
needs_ptxas = pytest.mark.skipif(not PTXAS.exists(), reason=f"this triton wheel has no ptxas at {PTXAS}")


def run_compiled(*python_args: str, timeout: float) -> subprocess.CompletedProcess:
    """`python *python_args` in a process of its own at the checkout's root, without TRITON_INTERPRET (this
    suite interprets kernels; a compile check must build them): its stdout and stderr as text."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, *python_args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=Path(__file__).resolve().parents[1])


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


def one_key_rises(rise: float, value_boost: float = 0.0, num_tokens: int = 96, head_dim: int = 64):
    """One problem, one query and one key cluster (every block kept), small random scores except one key of
    the last key tile that scores `rise` (natural-log units) above every other for every query.
    value_boost > 0: that key's v is value_boost x the largest |v|. Returns (q, k, v [1, N, D] bf16, plan,
    scale) on DEVICE."""
    from svg2_core.backends import ClusterPlan

    generator = torch.Generator().manual_seed(7)
    whole = torch.tensor([[num_tokens]], dtype=torch.int32)
    plan = ClusterPlan(torch.zeros(1, num_tokens, dtype=torch.int32), torch.zeros(1, num_tokens, dtype=torch.int32),
                       whole, whole.clone(), torch.ones(1, 1, 1, dtype=torch.bool), 0, 0)
    plan = ClusterPlan(*(x.to(DEVICE) if isinstance(x, torch.Tensor) else x for x in vars(plan).values()))
    q = torch.randn(1, num_tokens, head_dim, generator=generator) * 0.1
    k = torch.randn(1, num_tokens, head_dim, generator=generator) * 0.1
    v = torch.randn(1, num_tokens, head_dim, generator=generator)
    scale = head_dim ** -0.5
    q[..., 0] = 1.0
    k[0, -1, 0] = rise / scale
    if value_boost:
        v[0, -1] = value_boost * v.abs().max()
    q, k, v = (x.to(DEVICE, torch.bfloat16) for x in (q, k, v))
    return q, k, v, plan, scale
