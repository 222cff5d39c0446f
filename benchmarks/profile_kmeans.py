"""One warm k-means iteration's kernels at a model shape, for Nsight Compute (ncu) on the GPU machine.

    ncu --profile-from-start off --set full -o $OUT/kmeans python3 benchmarks/profile_kmeans.py
    ncu -i $OUT/kmeans.ncu-rep --page details > $OUT/kmeans_details.txt

Builds the bench's structured q and k (wan21-14b-720p unless --shape says otherwise), runs the cold 50-iteration
k-means (300 query / 1,000 key clusters) and the autotuner outside the profiled range, then profiles one
assignment of q and of k, the label sort and the centroid update of k (`torch.cuda.profiler` start / stop).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svg2_core.kmeans import sample_initial_centroids  # noqa: E402
from svg2_core.synthetic import MODEL_SHAPES, structured_qkv  # noqa: E402
from svg2_core.triton_backend import TritonBackend  # noqa: E402
from svg2_core.triton_kernels import kmeans as kmeans_kernels  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="wan21-14b-720p", choices=sorted(MODEL_SHAPES))
    args = parser.parse_args(argv)
    batch, heads, grid, head_dim, dense_suffix = MODEL_SHAPES[args.shape]
    q, k, _ = structured_qkv(batch, heads, grid, head_dim, peakedness=4.0, dense_suffix=dense_suffix,
                             device="cuda")
    clustered = slice(0, q.shape[2] - dense_suffix)
    q_points, k_points = q[:, :, clustered].flatten(0, 1), k[:, :, clustered].flatten(0, 1)
    generator = torch.Generator(device="cuda").manual_seed(0)
    backend = TritonBackend()
    q_centroids = backend.kmeans(q_points, sample_initial_centroids(q_points, 300, generator), 50).centroids
    k_centroids = backend.kmeans(k_points, sample_initial_centroids(k_points, 1000, generator), 50).centroids
    for _ in range(3):  # autotune and warm every kernel outside the profiled range
        q_labels = kmeans_kernels.assign_to_nearest(q_points, q_centroids)
        k_labels = kmeans_kernels.assign_to_nearest(k_points, k_centroids)
        ordered, offsets = kmeans_kernels.sort_by_label(k_labels, 1000)
        kmeans_kernels.update_centroids(k_points, ordered, offsets, k_centroids)
    torch.cuda.synchronize()
    print("assign configs:", kmeans_kernels._assign_kernel.best_config)
    torch.cuda.profiler.start()
    q_labels = kmeans_kernels.assign_to_nearest(q_points, q_centroids)
    k_labels = kmeans_kernels.assign_to_nearest(k_points, k_centroids)
    ordered, offsets = kmeans_kernels.sort_by_label(k_labels, 1000)
    kmeans_kernels.update_centroids(k_points, ordered, offsets, k_centroids)
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print("profiled: assign q, assign k, sort k, update k; labels", tuple(q_labels.shape), tuple(k_labels.shape))


if __name__ == "__main__":
    main()
