"""The "triton" backend: Triton k-means, GPU-built launch metadata and the variable-block sparse kernel.

Same contract as the reference (svg2_core.backends): points / q, k, v are `[B, H, N, D]` or `[G, N, D]`,
G = batch x heads, read in place whatever their strides (last dim contiguous; svg2_core.problems).
Nothing in a call reads back from the device, so a call can be captured in a CUDA graph.

A warm call (`cluster(..., overlap=True)`) runs the k-means of k on the caller's stream and the k-means of
q on a second stream of the same device: the label sorts and centroid updates of one side fill gaps in the
other side's assignment kernels. The second stream
waits for the caller's stream first and the caller's stream waits for it at the end (events, no host
synchronisation; a CUDA graph captures both).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .gpu_classes import gpu_class
from .kmeans import KMeansResult
from .problems import as_problems, problem_rows
from .triton_kernels import interpreting
from .triton_kernels.attention import AttentionConfig, default_config, sparse_attention
from .triton_kernels.kmeans import (assign_to_nearest, fp8_dot_supported, fp8_frame, points_to_fp8, sort_by_label,
                                    update_centroids)
from .triton_kernels.plan import AttentionLaunch, build_launch
from .triton_kernels.selection import MAX_KEY_CLUSTERS, top_p_mask
from .selection import key_cluster_probabilities
from .selection import top_p_mask as reference_top_p_mask

SUPPORTED_HEAD_DIMS = (64, 128)
FAST_PATH_DTYPES = (torch.float16, torch.bfloat16)  # the half types of api.SUPPORTED_DTYPES


# The k-means overlap only from this many clustered rows (problems x tokens) on: it pays at Wan 14B and
# HunyuanVideo sizes (~3M rows), while below (Wan 1.3B, 0.4M rows) the call is bound by the host's launches.
OVERLAP_MIN_ROWS = 1_000_000

# one second stream per CUDA device, made on first use
_SIDE_STREAMS: dict[int, torch.cuda.Stream] = {}


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _SIDE_STREAMS[index]


def _tensors_of(clusters: KMeansResult) -> list[torch.Tensor]:
    found = [clusters.labels, clusters.centroids, clusters.cluster_sizes]
    return found + ([clusters.label_sort] if clusters.label_sort is not None else [])


class TritonBackend:
    """Fast path on CUDA (or the CPU under TRITON_INTERPRET=1). `attention_config` overrides the tiles
    (None: `default_config` per head dim, score precision and the device's GPU class, `gpu_classes`);
    pv_fp16_accumulate: True / False overrides the class's choice of P V accumulation.

    A device where a launch ran out of resources (`use_smaller_tiles`) takes its class's smallest tiles
    (the small tile family) for every later call."""

    name = "triton"

    def __init__(self, attention_config: AttentionConfig | None = None, pv_fp16_accumulate: bool | None = None):
        self.attention_config = attention_config
        self.pv_fp16_accumulate = pv_fp16_accumulate  # None: the GPU class's choice (`default_config`)
        self.smallest_tiles: set[str] = set()  # devices, as str(device)

    def use_smaller_tiles(self, device: torch.device) -> bool:
        """After an OutOfResources on `device`: its calls take the smallest tiles from now on. True when that
        changes the tiles (worth one retry), False when they were already the smallest."""
        if str(device) in self.smallest_tiles:
            return False
        self.smallest_tiles.add(str(device))
        return True

    def unsupported_reason(self, q: torch.Tensor) -> str | None:
        if q.device.type != "cuda" and not (q.device.type == "cpu" and interpreting()):
            return f"tensors are on {q.device.type}; the Triton path needs CUDA"
        if q.device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(q.device)
            if major < 8:
                return (f"GPU compute capability {major}.{minor} is below 8.0; the Triton path needs an "
                        "Ampere (RTX 30xx / A100) or newer GPU")
        if q.dtype not in FAST_PATH_DTYPES:
            return f"dtype {q.dtype} is not supported (float16, bfloat16)"
        if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
            return f"head_dim {q.shape[-1]} is not supported ({', '.join(map(str, SUPPORTED_HEAD_DIMS))})"
        return None

    def kmeans(self, points: torch.Tensor, init_centroids: torch.Tensor, iterations: int) -> KMeansResult:
        """points: [G, N, D] or [B, H, N, D]; init_centroids: [G, C, D]; `iterations` Lloyd steps.

        Where the device has fp8 dots (`fp8_dot_supported`), the assignments read an fp8 copy of the points
        made once here, centered and scaled by the initial centroids' `fp8_frame` (twice the tensor-core rate
        of bf16); the centroid means are always taken over the points themselves, in fp32. The result carries
        the last label sort (`label_sort`) for the plan."""
        points = as_problems(points)
        centroids = init_centroids.float().contiguous()
        num_clusters = centroids.shape[1]
        fp8 = fp8_dot_supported(points.device)
        smallest = str(points.device) in self.smallest_tiles
        assign_points, frame = points, None
        if fp8 and iterations > 0:
            frame = fp8_frame(centroids)
            assign_points = points_to_fp8(points, frame)
        for _ in range(iterations):
            labels = assign_to_nearest(assign_points, centroids, frame=frame, smallest=smallest)
            sorted_points, cluster_offsets = sort_by_label(labels, num_clusters)
            centroids, cluster_sizes = update_centroids(points, sorted_points, cluster_offsets, centroids)
        return KMeansResult(labels=labels, centroids=centroids, cluster_sizes=cluster_sizes, label_sort=sorted_points)

    def cluster(self, q_points: torch.Tensor, q_init: torch.Tensor, k_points: torch.Tensor, k_init: torch.Tensor,
                iterations: int, overlap: bool = False) -> tuple[KMeansResult, KMeansResult]:
        """k-means of q_points ([G, Nc, D] or [B, H, Nc, D]) from q_init [G, Cq, D] and of k_points from k_init
        [G, Ck, D]. overlap: the k-means of k on the current stream, that of q on a second stream (CUDA, from
        OVERLAP_MIN_ROWS clustered rows).
        Keep it off for a cold call: a first call autotunes the assignment kernel, and two kernels timing
        themselves at once would tune each other's noise."""
        num_problems, num_points, _ = problem_rows(q_points)
        if not (overlap and q_points.device.type == "cuda" and num_problems * num_points >= OVERLAP_MIN_ROWS):
            return self.kmeans(q_points, q_init, iterations), self.kmeans(k_points, k_init, iterations)
        main = torch.cuda.current_stream(q_points.device)
        side = _side_stream(q_points.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            q_clusters = self.kmeans(q_points, q_init, iterations)
        k_clusters = self.kmeans(k_points, k_init, iterations)
        main.wait_stream(side)
        # made on the second stream, used on this one: the allocator must not hand their memory to the second
        # stream again before this stream is done with them
        for tensor in _tensors_of(q_clusters):
            tensor.record_stream(main)
        return q_clusters, k_clusters

    def select_blocks(self, q_centroids: torch.Tensor, k_centroids: torch.Tensor, k_cluster_sizes: torch.Tensor,
                      top_p: float, min_kept: int, scale: float) -> torch.Tensor:
        """block_mask [G, Cq, Ck] bool: the reference's probabilities (one batched matmul and softmax), the
        top-p rule in one Triton kernel (the reference's sort up to MAX_KEY_CLUSTERS key clusters)."""
        probabilities = key_cluster_probabilities(q_centroids, k_centroids, k_cluster_sizes, scale)
        if probabilities.shape[-1] > MAX_KEY_CLUSTERS:
            return reference_top_p_mask(probabilities, top_p, min_kept)
        return top_p_mask(probabilities, top_p, min_kept)

    def config_for(self, head_dim: int, qk_int8: bool = False, device: torch.device | None = None
                   ) -> AttentionConfig:
        """The configuration given to the backend, else the default for this head dim, score precision and
        `device`'s GPU class (None: the current device's); the smallest tiles after `use_smaller_tiles(device)`.
        The plan's tiles do not depend on the precision, only the kernel's pipeline stages."""
        if self.attention_config is not None:
            return self.attention_config
        smallest = device is not None and str(device) in self.smallest_tiles
        config = default_config(head_dim, qk_int8, gpu_class(device) if device is not None else None, smallest)
        if self.pv_fp16_accumulate is not None:
            config = replace(config, pv_fp16_accumulate=self.pv_fp16_accumulate)
        return config

    def plan_launch(self, plan, num_tokens: int, head_dim: int) -> AttentionLaunch:
        """Kernel metadata for a ClusterPlan (the "plan" half of a call); the plan's label sorts
        (q_label_sort / k_label_sort, from the k-means results) spare sorting the labels again."""
        config = self.config_for(head_dim, device=plan.q_labels.device)
        return build_launch(plan.q_labels, plan.k_labels, plan.q_cluster_sizes, plan.k_cluster_sizes,
                            plan.block_mask, plan.dense_prefix, plan.dense_suffix, num_tokens,
                            config.block_m, config.block_n, config.remainder_m,
                            plan.q_label_sort, plan.k_label_sort)

    def run_launch(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, launch: AttentionLaunch, scale: float,
                   qk_int8: bool = False) -> torch.Tensor:
        """The "run" half: q, k, v in original order, read in place (with qk_int8, q and k are coded first)."""
        return sparse_attention(q, k, v, launch, scale, self.config_for(q.shape[-1], qk_int8, q.device), qk_int8)

    def sparse_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan,
                         scale: float, qk_int8: bool = False) -> torch.Tensor:
        """q, k, v: [G, N, D] or [B, H, N, D] in original order, read in place; returns q's shape and dtype,
        original order, q's strides when q is dense. qk_int8: int8 scores (svg2_core.quantize)."""
        q, k, v = as_problems(q), as_problems(k), as_problems(v)
        launch = self.plan_launch(plan, q.shape[-2], q.shape[-1])
        return self.run_launch(q, k, v, launch, scale, qk_int8)
