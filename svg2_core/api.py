"""`svg2_attention`: Sparse VideoGen2 attention on `[B, H, N, D]` tensors.

Per (batch, head): k-means on queries and on keys (warm-started from an `SVG2State`), top-p selection of
(query cluster, key cluster) blocks, and attention restricted to those blocks in a cluster-contiguous
layout. The first `dense_prefix` and last `dense_suffix` tokens are not clustered and stay dense.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable

import torch

from .backends import (ClusterPlan, FastPathError, fast_path_key, remember_failure, remembered_failure,
                       resolve_backend)
from .config import SVG2Config
from .kmeans import grid_initial_centroids
from .problems import as_problems
from .state import CentroidEntry, CentroidSignature, SVG2State

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass
class SVG2Info:
    """What one call computed.

    q_labels, k_labels: [B, H, N] int32 cluster ids (-1 for dense prefix/suffix tokens);
    q_cluster_sizes: [B, H, Cq] int32; k_cluster_sizes: [B, H, Ck] int32;
    block_mask: [B, H, Cq, Ck] bool; density: [B, H] fp32, the fraction of the N x N map computed
    (dense tokens included); backend: the backend that ran.
    """

    q_labels: torch.Tensor
    k_labels: torch.Tensor
    q_cluster_sizes: torch.Tensor
    k_cluster_sizes: torch.Tensor
    block_mask: torch.Tensor
    density: torch.Tensor
    backend: str


def _check_inputs(q, k, v, config, dense_prefix, dense_suffix, cache_key) -> None:
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor [B, H, N, D], got {type(tensor).__name__}")
        if tensor.dim() != 4:
            raise ValueError(f"{name} must be 4-D [B, H, N, D], got shape {tuple(tensor.shape)}")
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{name} must be float32, float16 or bfloat16, got {tensor.dtype}")
    if q.device.type == "meta":
        raise ValueError("q, k and v are on the meta device, which holds no data; SVG2 needs cpu or cuda tensors")
    if q.shape[-1] == 0:
        raise ValueError(f"head_dim (the last dim of q) must be >= 1, got 0 in shape {tuple(q.shape)}")
    if 0 in q.shape:
        raise ValueError(f"q, k and v must not be empty, got shape {tuple(q.shape)}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError("q, k and v must have the same shape [B, H, N, D], got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not isinstance(config, SVG2Config):
        raise ValueError(f"config must be an SVG2Config, got {type(config).__name__}")
    try:
        hash(cache_key)
    except TypeError:
        raise ValueError(f"cache_key must be hashable (e.g. a tuple of ints and strings), got {cache_key!r} "
                         f"of type {type(cache_key).__name__}") from None
    num_tokens = q.shape[2]
    for name, count in (("dense_prefix", dense_prefix), ("dense_suffix", dense_suffix)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{name} must be an int >= 0, got {count!r}")
    clustered = num_tokens - dense_prefix - dense_suffix
    most_clusters = max(config.num_q_clusters, config.num_k_clusters)
    if clustered < most_clusters:
        raise ValueError(
            f"SVG2 needs at least as many clustered tokens as clusters: N={num_tokens} minus dense_prefix="
            f"{dense_prefix} and dense_suffix={dense_suffix} leaves {clustered}, fewer than "
            f"num_q_clusters={config.num_q_clusters} / num_k_clusters={config.num_k_clusters}")


def _check_finite(q, k, v) -> None:
    """Reference path only: this reads a flag back from the device, so the fast path skips it."""
    for name, tensor in (("q", q), ("k", k), ("v", v)):
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contains NaN or Inf; SVG2 needs finite inputs")


def _clustered(x: torch.Tensor, dense_prefix: int, dense_suffix: int) -> torch.Tensor:
    """x: [B, H, N, D] -> the clustered span [B, H, Nc, D], a view."""
    return x[:, :, dense_prefix:x.shape[2] - dense_suffix]


def svg2_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, config: SVG2Config, *,
                   state: SVG2State | None = None, cache_key: Hashable = None,
                   dense_prefix: int = 0, dense_suffix: int = 0, backend: str = "auto",
                   return_info: bool = False, head_offset: int = 0):
    """SVG2 sparse attention.

    q, k, v: [B, H, N, D] (post-RoPE), float32 / float16 / bfloat16, one device.
    Returns out [B, H, N, D] in q's dtype and device (with q's strides when q is a dense tensor, so a
    transposed view of [B, N, H * D] gets one back), or (out, SVG2Info) with return_info=True.
    state / cache_key: centroid cache; without a cached entry k-means runs `kmeans_init_iters` from
    seeds spread evenly over the token order (svg2_core.kmeans.grid_initial_centroids), with one it runs
    `kmeans_iters` from the cached centroids.
    backend: "torch" (reference), "triton" (fast path: ValueError if it cannot serve the call, FastPathError
    naming the cause if a kernel fails to compile or launch), "auto" (the fast path where it can serve the call;
    a call whose kernels fail is served by the reference, the reason logged once, and later calls of that
    device / dtype / head dim go to the reference without trying again; see svg2_core.backends).
    NaN / Inf in q, k or v: the reference raises ValueError (it reads a flag back from the device); the fast
    path does not check, like torch's scaled_dot_product_attention, so no call waits on the GPU, and NaN / Inf
    reach the output.
    head_offset: the global index of this call's first head (a Ulysses rank holding heads [r * H, (r + 1) * H)
    of the model passes r * H). Every head is clustered exactly as in the call on all heads: the cold-start
    seeds depend on the seed and on the head's own tokens only, never on the order of problems in the call, so
    the call on a slice of the heads equals that slice of the call on all heads. With a state, keep one
    `SVG2State` per head slice (a cached entry holds the centroids of the call's own heads).
    top_p 1.0 (or a min_k_cluster_ratio that keeps every key cluster; `config.keeps_every_block`) computes
    exact dense attention through the sparse path, which costs more than dense attention: a caller that only
    wants the output should call its dense attention instead (the ComfyUI node does).
    """
    _check_inputs(q, k, v, config, dense_prefix, dense_suffix, cache_key)
    if isinstance(head_offset, bool) or not isinstance(head_offset, int) or head_offset < 0:
        raise ValueError(f"head_offset must be an int >= 0 (the global index of the call's first head), "
                         f"got {head_offset!r}")
    runner = resolve_backend(backend, q)
    failure_key = fast_path_key(q, config.qk_int8)
    if runner.name == "triton" and backend == "auto" and remembered_failure(failure_key) is not None:
        runner = resolve_backend("torch", q)
    if runner.name == "triton":
        try:
            return _svg2(runner, q, k, v, config, state, cache_key, dense_prefix, dense_suffix, return_info)
        except FastPathError as error:
            if backend == "triton":
                raise
            remember_failure(failure_key, error)
            runner = resolve_backend("torch", q)
    _check_finite(q, k, v)
    return _svg2(runner, q, k, v, config, state, cache_key, dense_prefix, dense_suffix, return_info)


def _svg2(runner, q, k, v, config: SVG2Config, state: SVG2State | None, cache_key: Hashable,
          dense_prefix: int, dense_suffix: int, return_info: bool):
    """One call on one backend; the centroid cache is updated only when the call completes."""
    batch, heads, num_tokens, head_dim = q.shape
    num_problems = batch * heads
    # read in place: the kernels take any strides (ComfyUI hands over transposed views), so no copy of
    # q, k or v unless a last dim is not contiguous (svg2_core.problems)
    q, k, v = as_problems(q), as_problems(k), as_problems(v)
    q_points = _clustered(q, dense_prefix, dense_suffix)
    k_points = _clustered(k, dense_prefix, dense_suffix)

    signature = CentroidSignature(batch, heads, q_points.shape[2], head_dim, config.num_q_clusters,
                                  config.num_k_clusters, str(q.device))
    cached = state.lookup(cache_key, signature) if state is not None else None
    if cached is None:
        # seeds spread over the token order: the same positions for every (batch, head), so a call on a
        # slice of the heads clusters each head as the call on all of them does
        q_init = grid_initial_centroids(q_points, config.num_q_clusters, config.seed)
        k_init = grid_initial_centroids(k_points, config.num_k_clusters, config.seed)
        iterations = config.kmeans_init_iters
    else:
        q_init = cached.q_centroids.reshape(num_problems, config.num_q_clusters, head_dim)
        k_init = cached.k_centroids.reshape(num_problems, config.num_k_clusters, head_dim)
        iterations = config.kmeans_iters
    # a warm call may run the two k-means on two streams; a cold one may autotune, so one after the other
    q_clusters, k_clusters = runner.cluster(q_points, q_init, k_points, k_init, iterations,
                                            overlap=cached is not None)

    scale = 1.0 / math.sqrt(head_dim)
    block_mask = runner.select_blocks(q_clusters.centroids, k_clusters.centroids, k_clusters.cluster_sizes,
                                      config.top_p, config.min_kept_k_clusters, scale)
    plan = ClusterPlan(q_clusters.labels, k_clusters.labels, q_clusters.cluster_sizes,
                       k_clusters.cluster_sizes, block_mask, dense_prefix, dense_suffix,
                       q_label_sort=q_clusters.label_sort, k_label_sort=k_clusters.label_sort)
    out = runner.sparse_attention(q, k, v, plan, scale, config.qk_int8)
    if state is not None:
        state.store(cache_key, CentroidEntry(
            signature,
            q_clusters.centroids.reshape(batch, heads, config.num_q_clusters, head_dim),
            k_clusters.centroids.reshape(batch, heads, config.num_k_clusters, head_dim)))
    if not return_info:
        return out
    return out, _info(plan, batch, heads, runner.name)


def _with_dense_labels(labels: torch.Tensor, dense_prefix: int, dense_suffix: int) -> torch.Tensor:
    return torch.nn.functional.pad(labels, (dense_prefix, dense_suffix), value=-1)


def _info(plan: ClusterPlan, batch: int, heads: int, backend_name: str) -> SVG2Info:
    prefix, suffix = plan.dense_prefix, plan.dense_suffix
    return SVG2Info(
        q_labels=_with_dense_labels(plan.q_labels, prefix, suffix).reshape(batch, heads, -1),
        k_labels=_with_dense_labels(plan.k_labels, prefix, suffix).reshape(batch, heads, -1),
        q_cluster_sizes=plan.q_cluster_sizes.reshape(batch, heads, -1),
        k_cluster_sizes=plan.k_cluster_sizes.reshape(batch, heads, -1),
        block_mask=plan.block_mask.reshape(batch, heads, *plan.block_mask.shape[1:]),
        density=plan.density().reshape(batch, heads),
        backend=backend_name)
