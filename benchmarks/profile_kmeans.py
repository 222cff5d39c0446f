"""One warm k-means iteration's kernels at a model shape, for Nsight Compute (ncu) on the GPU machine.

    ncu --profile-from-start off --set full -o $OUT/kmeans python3 benchmarks/profile_kmeans.py
    ncu -i $OUT/kmeans.ncu-rep --page details > $OUT/kmeans_details.txt

Builds the bench's structured q and k (wan21-14b-720p unless --shape says otherwise), runs the cold 50-iteration
k-means (300 query / 1,000 key clusters) and the autotuner outside the profiled range, then profiles one
assignment of q and of k, the label sort and the centroid update of k (`torch.cuda.profiler` start / stop).
The assignments read fp8 copies of the points where the GPU has fp8 dots, as `TritonBackend.kmeans` does
(`--bf16`: the points themselves); the fp8 frames and copies are made outside the profiled range.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmeans_lab import warm_start_inputs  # noqa: E402  (benchmarks/, this script's folder)
from svg2_core.synthetic import MODEL_SHAPES  # noqa: E402
from svg2_core.triton_kernels import kmeans as kmeans_kernels  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="wan21-14b-720p", choices=sorted(MODEL_SHAPES))
    parser.add_argument("--bf16", action="store_true", help="assign from the bf16 points, not fp8 copies")
    args = parser.parse_args(argv)
    q_points, k_points, q_centroids, k_centroids = warm_start_inputs(args.shape, 300, 1000)
    q_assign, k_assign, q_frame, k_frame = q_points, k_points, None, None
    if not args.bf16 and kmeans_kernels.fp8_dot_supported(q_points.device):
        q_frame, k_frame = kmeans_kernels.fp8_frame(q_centroids), kmeans_kernels.fp8_frame(k_centroids)
        q_assign = kmeans_kernels.points_to_fp8(q_points, q_frame)
        k_assign = kmeans_kernels.points_to_fp8(k_points, k_frame)
    for _ in range(3):  # autotune and warm every kernel outside the profiled range
        q_labels = kmeans_kernels.assign_to_nearest(q_assign, q_centroids, frame=q_frame)
        k_labels = kmeans_kernels.assign_to_nearest(k_assign, k_centroids, frame=k_frame)
        ordered, offsets = kmeans_kernels.sort_by_label(k_labels, 1000)
        kmeans_kernels.update_centroids(k_points, ordered, offsets, k_centroids)
    torch.cuda.synchronize()
    print("assign configs:", kmeans_kernels._assign_kernel.best_config)
    torch.cuda.profiler.start()
    q_labels = kmeans_kernels.assign_to_nearest(q_assign, q_centroids, frame=q_frame)
    k_labels = kmeans_kernels.assign_to_nearest(k_assign, k_centroids, frame=k_frame)
    ordered, offsets = kmeans_kernels.sort_by_label(k_labels, 1000)
    kmeans_kernels.update_centroids(k_points, ordered, offsets, k_centroids)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print("profiled: assign q, assign k, sort k, update k; labels", tuple(q_labels.shape), tuple(k_labels.shape))


if __name__ == "__main__":
    main()
