"""Backends that run the two heavy stages of SVG2: k-means and the variable-block sparse attention.

`torch` is the reference and runs anywhere; `triton` is the fast path (svg2_core.triton_backend).
Both take points / q, k, v as `[G, N, D]` with G = batch x heads and a `ClusterPlan` (below).
A backend's `unsupported_reason(q)` returns why it cannot serve a call, or None.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch

from .attention_torch import block_sparse_attention_torch
from .kmeans import KMeansResult, kmeans_torch
from .problems import flat_problems
from .quantize import quantize_dequantize_qk
from .layout import attention_density, block_mask_with_dense, block_sizes_with_dense, cluster_order
from .selection import select_blocks

log = logging.getLogger("svg2")

BACKEND_NAMES = ("auto", "triton", "torch")


@dataclass
class ClusterPlan:
    """What the sparse attention needs, before any permutation (G = batch x heads, Nc clustered tokens).

    q_labels, k_labels: [G, Nc] int32; q_cluster_sizes: [G, Cq] int32; k_cluster_sizes: [G, Ck] int32;
    block_mask: [G, Cq, Ck] bool; the first dense_prefix and last dense_suffix tokens are not clustered.
    """

    q_labels: torch.Tensor
    k_labels: torch.Tensor
    q_cluster_sizes: torch.Tensor
    k_cluster_sizes: torch.Tensor
    block_mask: torch.Tensor
    dense_prefix: int
    dense_suffix: int

    def density(self) -> torch.Tensor:
        """Fraction of the N x N attention map this plan computes, dense tokens included: [G] fp32."""
        return attention_density(block_sizes_with_dense(self.q_cluster_sizes, self.dense_prefix, self.dense_suffix),
                                 block_sizes_with_dense(self.k_cluster_sizes, self.dense_prefix, self.dense_suffix),
                                 block_mask_with_dense(self.block_mask))


class Backend(Protocol):
    name: str

    def unsupported_reason(self, q: torch.Tensor) -> str | None: ...

    def kmeans(self, points: torch.Tensor, init_centroids: torch.Tensor, iterations: int) -> KMeansResult:
        """points: [G, N, D] or [B, H, N, D] -> labels [G, N], centroids [G, C, D], sizes [G, C]."""

    def cluster(self, q_points: torch.Tensor, q_init: torch.Tensor, k_points: torch.Tensor, k_init: torch.Tensor,
                iterations: int, overlap: bool = False) -> tuple[KMeansResult, KMeansResult]:
        """k-means of q_points and of k_points ([G, Nc, D] or [B, H, Nc, D]) from q_init [G, Cq, D] and k_init
        [G, Ck, D]; overlap: the backend may run the two concurrently (warm calls)."""

    def select_blocks(self, q_centroids: torch.Tensor, k_centroids: torch.Tensor, k_cluster_sizes: torch.Tensor,
                      top_p: float, min_kept: int, scale: float) -> torch.Tensor:
        """[G, Cq, D], [G, Ck, D], [G, Ck] -> block_mask [G, Cq, Ck] bool (svg2_core.selection's rule)."""

    def sparse_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: ClusterPlan,
                         scale: float, qk_int8: bool = False) -> torch.Tensor:
        """q, k, v: [G, N, D] or [B, H, N, D] in original order -> out in q's shape and dtype.
        qk_int8: scores from int8 codes of q and k (svg2_core.quantize)."""


class TorchBackend:
    """The reference: exact, any device, O(N^2 / chunk) memory."""

    name = "torch"

    def unsupported_reason(self, q: torch.Tensor) -> str | None:
        return None

    def kmeans(self, points: torch.Tensor, init_centroids: torch.Tensor, iterations: int) -> KMeansResult:
        """points: [G, N, D] or [B, H, N, D]; init_centroids: [G, C, D]."""
        return kmeans_torch(flat_problems(points), init_centroids, iterations)

    def cluster(self, q_points: torch.Tensor, q_init: torch.Tensor, k_points: torch.Tensor, k_init: torch.Tensor,
                iterations: int, overlap: bool = False) -> tuple[KMeansResult, KMeansResult]:
        """One k-means after the other."""
        return self.kmeans(q_points, q_init, iterations), self.kmeans(k_points, k_init, iterations)

    def select_blocks(self, q_centroids: torch.Tensor, k_centroids: torch.Tensor, k_cluster_sizes: torch.Tensor,
                      top_p: float, min_kept: int, scale: float) -> torch.Tensor:
        """block_mask [G, Cq, Ck] bool from centroids [G, Cq, D], [G, Ck, D] and key cluster sizes [G, Ck]."""
        return select_blocks(q_centroids, k_centroids, k_cluster_sizes, top_p, min_kept, scale)

    def sparse_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: ClusterPlan,
                         scale: float, qk_int8: bool = False) -> torch.Tensor:
        """q, k, v: [G, N, D] or [B, H, N, D] in original order; returns q's shape in q's dtype, original order.
        qk_int8: q and k replaced by their int8 codes x scales first, in fp32 (what the Triton kernel computes)."""
        shape, dtype = q.shape, q.dtype
        q, k, v = flat_problems(q), flat_problems(k), flat_problems(v)
        if qk_int8:
            q, k = quantize_dequantize_qk(q, k)
        head_dim = q.shape[-1]
        q_order = cluster_order(plan.q_labels, plan.dense_prefix, plan.dense_suffix)
        k_order = cluster_order(plan.k_labels, plan.dense_prefix, plan.dense_suffix)
        gather_q = q_order.unsqueeze(-1).expand(-1, -1, head_dim)
        gather_k = k_order.unsqueeze(-1).expand(-1, -1, head_dim)
        out_permuted = block_sparse_attention_torch(
            q.gather(1, gather_q), k.gather(1, gather_k), v.gather(1, gather_k),
            block_sizes_with_dense(plan.q_cluster_sizes, plan.dense_prefix, plan.dense_suffix),
            block_sizes_with_dense(plan.k_cluster_sizes, plan.dense_prefix, plan.dense_suffix),
            block_mask_with_dense(plan.block_mask), scale)
        out = torch.empty_like(out_permuted).scatter_(1, gather_q, out_permuted)
        return out.to(dtype).view(shape)


_BACKENDS: dict[str, Backend] = {"torch": TorchBackend()}


def _triton_backend() -> Backend | str:
    """The Triton backend, or the reason it cannot be loaded."""
    if "triton" not in _BACKENDS:
        try:
            from .triton_backend import TritonBackend
        except ImportError as error:  # triton missing, or the fast path not built for this platform
            return f"the Triton backend cannot be imported ({error})"
        _BACKENDS["triton"] = TritonBackend()
    return _BACKENDS["triton"]


def triton_unsupported_reason(q: torch.Tensor) -> str | None:
    """Why the Triton fast path cannot serve a call on `q` ([B, H, N, D] or [G, N, D]), or None."""
    backend = _triton_backend()
    if isinstance(backend, str):
        return backend
    return backend.unsupported_reason(q)


def resolve_backend(name: str, q: torch.Tensor) -> Backend:
    """`torch`, `triton` (raises ValueError with the reason when it cannot serve q), or `auto`
    (Triton where it can serve q, else the reference)."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    if name == "torch":
        return _BACKENDS["torch"]
    reason = triton_unsupported_reason(q)
    if reason is None:
        return _BACKENDS["triton"]
    if name == "triton":
        raise ValueError(f"backend='triton' cannot serve this call: {reason}")
    return _BACKENDS["torch"]
