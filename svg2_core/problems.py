"""G = B x H independent attention problems, read in place from `[B, H, N, D]` tensors.

ComfyUI hands attention `[B, N, H * D]` activations, so q, k, v arrive as transposed views whose heads
are D elements apart and whose tokens are H * D apart. Copying them into `[G, N, D]` costs three
q-sized buffers per call; instead the fast path's kernels take each tensor's strides and find problem
g = b * H + h at `b * stride_b + h * stride_h` (tokens `stride_n` apart, the last dim contiguous).
A `[G, N, D]` tensor is the case B = 1, H = G.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ProblemStrides:
    """heads: H; batch, head, token: element strides of B, H and N in a `[B, H, N, D]` tensor."""

    heads: int
    batch: int
    head: int
    token: int

    @classmethod
    def of(cls, x: torch.Tensor) -> "ProblemStrides":
        """x: [B, H, N, D] or [G, N, D] (as [1, G, N, D]) with x.stride(-1) == 1."""
        if x.stride(-1) != 1:
            raise ValueError(f"the last dimension must be contiguous, got strides {tuple(x.stride())}")
        if x.ndim == 3:
            return cls(heads=x.shape[0], batch=0, head=x.stride(0), token=x.stride(1))
        if x.ndim == 4:
            return cls(heads=x.shape[1], batch=x.stride(0), head=x.stride(1), token=x.stride(2))
        raise ValueError(f"expected [B, H, N, D] or [G, N, D], got shape {tuple(x.shape)}")

    @property
    def strides(self) -> tuple[int, int, int]:
        """(batch, head, token) element strides."""
        return self.batch, self.head, self.token

    def args(self) -> tuple[int, int, int, int]:
        """(heads, batch, head, token): the order the kernels take them in."""
        return (self.heads, *self.strides)


def as_problems(x: torch.Tensor) -> torch.Tensor:
    """x: [B, H, N, D] or [G, N, D] -> a tensor the kernels can read in place: the same tensor when its
    last dim is contiguous, else a contiguous copy."""
    return x if x.stride(-1) == 1 else x.contiguous()


def problem_rows(x: torch.Tensor) -> tuple[int, int, int]:
    """(G, N, D) of a [B, H, N, D] or [G, N, D] tensor."""
    if x.ndim == 4:
        return x.shape[0] * x.shape[1], x.shape[2], x.shape[3]
    return x.shape[0], x.shape[1], x.shape[2]


def flat_problems(x: torch.Tensor) -> torch.Tensor:
    """[B, H, N, D] -> [G, N, D] (a view when possible, else a copy); [G, N, D] unchanged."""
    return x.reshape(problem_rows(x)) if x.ndim == 4 else x
