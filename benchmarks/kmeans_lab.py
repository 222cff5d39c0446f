"""The warm k-means of one SVG2 call on the H200, stage by stage, with the assignment / sort variants.

    python3 benchmarks/kmeans_lab.py --shape wan21-14b-720p --json $OUT/kmeans_lab.json

Structured q and k as the bench makes them (peakedness 4), 300 query and 1,000 key clusters, warm-started
from a cold 50-iteration k-means. Medians of do_bench:
- the assignment: production against each `assign_to_nearest` option (labels compared with production's),
  and the slots arg-min at each tile configuration of TILE_SWEEP (BLOCK_N, BLOCK_C, warps, stages);
- the label sort with int16 keys (the default where G x C < 65,536) against int32 keys, the centroid update
  at its production row block and warps and at others;
- 2 warm iterations of q and of k (`TritonBackend.kmeans`) and both at once as a call runs them
  (`TritonBackend.cluster(overlap=True)`), for production and for each assignment option, and with the
  second stream (q) or the caller's stream (k) at high priority.
Nothing here is used by the node; it decides what the production kernels do.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import torch
import triton
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svg2_core import triton_backend  # noqa: E402
from svg2_core.kmeans import sample_initial_centroids  # noqa: E402
from svg2_core.synthetic import MODEL_SHAPES, structured_qkv  # noqa: E402
from svg2_core.triton_backend import TritonBackend  # noqa: E402
from svg2_core.triton_kernels import kmeans as kmeans_kernels  # noqa: E402

VARIANTS = {
    "production (slots)": {},
    "per-tile packed arg-min (run 72's production)": dict(argmin="tile"),
    "index-carrying arg-min": dict(argmin="exact"),
}

TILE_SWEEP = ((256, 64, 8, 3), (256, 64, 8, 2), (128, 64, 4, 3), (128, 64, 4, 2), (128, 64, 4, 4), (128, 64, 8, 3),
              (128, 128, 8, 2), (128, 128, 8, 3), (256, 128, 8, 2), (256, 128, 8, 3), (128, 128, 4, 2),
              (128, 128, 4, 3), (64, 128, 4, 3), (128, 256, 8, 2))


def warm_start_inputs(shape: str, q_clusters: int, k_clusters: int, cold_iterations: int = 50):
    """The bench's structured q and k at a model shape (peakedness 4) as their clustered points [B, H, Nc, D]
    and the centroids [G, C, D] of a cold k-means of each, the warm start of the timed calls:
    (q_points, k_points, q_init, k_init)."""
    batch, heads, grid, head_dim, dense_suffix = MODEL_SHAPES[shape]
    q, k, _ = structured_qkv(batch, heads, grid, head_dim, peakedness=4.0, dense_suffix=dense_suffix,
                             device="cuda")
    clustered = slice(0, q.shape[2] - dense_suffix)
    q_points, k_points = q[:, :, clustered], k[:, :, clustered]
    generator = torch.Generator(device="cuda").manual_seed(0)
    backend = TritonBackend()
    q_init = backend.kmeans(q_points, sample_initial_centroids(q_points, q_clusters, generator),
                            cold_iterations).centroids
    k_init = backend.kmeans(k_points, sample_initial_centroids(k_points, k_clusters, generator),
                            cold_iterations).centroids
    return q_points, k_points, q_init, k_init


def bench(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="wan21-14b-720p", choices=sorted(MODEL_SHAPES))
    parser.add_argument("--clusters", type=int, nargs=2, default=(300, 1000), metavar=("QUERY", "KEY"))
    parser.add_argument("--cold-iterations", type=int, default=50)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    q_clusters, k_clusters = args.clusters
    q_points, k_points, q_init, k_init = warm_start_inputs(args.shape, q_clusters, k_clusters, args.cold_iterations)
    head_dim = q_points.shape[-1]
    backend = TritonBackend()
    rows = []

    def report(name, ms, **extra):
        rows.append({"name": name, "ms": ms, **extra})
        print(f"{name:60s} {ms:8.3f} ms  " + " ".join(f"{key}={value}" for key, value in extra.items()), flush=True)

    production_assign = triton_backend.assign_to_nearest
    for side, points, centroids in ((f"q {q_clusters}", q_points, q_init), (f"k {k_clusters}", k_points, k_init)):
        flops = 2.0 * points.shape[0] * points.shape[1] * points.shape[2] * centroids.shape[1] * head_dim
        labels = kmeans_kernels.assign_to_nearest(points, centroids)
        for variant, options in VARIANTS.items():
            found = kmeans_kernels.assign_to_nearest(points, centroids, **options)
            ms = bench(lambda: kmeans_kernels.assign_to_nearest(points, centroids, **options))
            report(f"assign {side}, {variant}", ms, tflops=round(flops / ms / 1e9, 1),
                   same_labels=round(float((found == labels).float().mean()), 6),
                   config=str(kmeans_kernels._assign_kernel.best_config))
        padded = triton.cdiv(centroids.shape[1], kmeans_kernels.ASSIGN_TILE_MULTIPLE) * kmeans_kernels.ASSIGN_TILE_MULTIPLE
        for tiles in TILE_SWEEP:
            if padded % tiles[1]:
                continue
            try:
                found = kmeans_kernels.assign_to_nearest(points, centroids, tiles=tiles)
                ms = bench(lambda: kmeans_kernels.assign_to_nearest(points, centroids, tiles=tiles))
            except Exception as error:  # out of shared memory / registers: say so, go on
                print(f"assign {side}, slots, tiles {tiles}: {type(error).__name__}: {error}", flush=True)
                continue
            report(f"assign {side}, slots, tiles {tiles}", ms, tflops=round(flops / ms / 1e9, 1),
                   same_labels=round(float((found == labels).float().mean()), 6))
        num_clusters = centroids.shape[1]
        for narrow in (True, False):
            report(f"sort {side}, {'int16' if narrow else 'int32'} keys",
                   bench(lambda: kmeans_kernels.sort_by_label(labels, num_clusters, narrow)))
        ordered, offsets = kmeans_kernels.sort_by_label(labels, num_clusters)
        report(f"update {side} (production)",
               bench(lambda: kmeans_kernels.update_centroids(points, ordered, offsets, centroids)))
        # the production sizes were chosen (run 20) while a 64-bit division per member bounded the kernel
        for block_rows, warps in ((16, 1), (16, 4), (32, 2), (32, 4), (64, 4), (64, 8)):
            report(f"update {side}, {block_rows} rows x {warps} warps", bench(
                lambda: kmeans_kernels.update_centroids(points, ordered, offsets, centroids, block_rows, warps)))
        report(f"assign operands {side}", bench(lambda: kmeans_kernels.assign_operands(centroids, points.dtype)))

    for variant, options in VARIANTS.items():
        triton_backend.assign_to_nearest = functools.partial(production_assign, **options)
        try:
            report(f"k-means q, 2 warm iterations, {variant}", bench(lambda: backend.kmeans(q_points, q_init, 2)))
            report(f"k-means k, 2 warm iterations, {variant}", bench(lambda: backend.kmeans(k_points, k_init, 2)))
            report(f"k-means q + k as a call runs them (two streams), {variant}",
                   bench(lambda: backend.cluster(q_points, q_init, k_points, k_init, 2, overlap=True)))
        finally:
            triton_backend.assign_to_nearest = production_assign
    device = q_points.device.index or 0
    normal_side = triton_backend._side_stream(q_points.device)
    try:
        triton_backend._SIDE_STREAMS[device] = torch.cuda.Stream(device=device, priority=-1)
        report("k-means q + k, two streams, q's stream at high priority",
               bench(lambda: backend.cluster(q_points, q_init, k_points, k_init, 2, overlap=True)))
        triton_backend._SIDE_STREAMS[device] = normal_side
        with torch.cuda.stream(torch.cuda.Stream(device=device, priority=-1)):
            report("k-means q + k, two streams, k's stream at high priority",
                   bench(lambda: backend.cluster(q_points, q_init, k_points, k_init, 2, overlap=True)))
    finally:
        triton_backend._SIDE_STREAMS[device] = normal_side
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.shape, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
