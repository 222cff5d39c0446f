"""The warm k-means of one SVG2 call on the H200, stage by stage, with the assignment / sort variants.

    python3 benchmarks/kmeans_lab.py --shape wan21-14b-720p --json $OUT/kmeans_lab.json

Structured q and k as the bench makes them (peakedness 4), 300 query and 1,000 key clusters, warm-started
from a cold 50-iteration k-means. Medians of do_bench:
- the assignment: production (fp8 operands, slots arg-min) against the bf16 options (slots, run 72's per-tile
  packed arg-min, the exact index-carrying one), each with its labels' agreement with the exact bf16 labels
  and its mean squared distance against theirs; the fp8 copy of the points; the fp8 slots at each tile
  configuration of TILE_SWEEP (BLOCK_N, BLOCK_C, warps, stages);
- the label sort, the centroid update, the assign operands;
- 2 warm iterations of q and of k (`TritonBackend.kmeans`) and both at once as a call runs them
  (`TritonBackend.cluster(overlap=True)`), with fp8 and with bf16 assignments, and the k-means objective each
  reaches.
Nothing here is used by the node; it decides what the production kernels do.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import triton
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svg2_core.kmeans import kmeans_objective, sample_initial_centroids  # noqa: E402
from svg2_core.synthetic import MODEL_SHAPES, structured_qkv  # noqa: E402
from svg2_core.triton_backend import TritonBackend  # noqa: E402
from svg2_core.triton_kernels import kmeans as kmeans_kernels  # noqa: E402

VARIANTS = {
    "bf16, slots arg-min": {},
    "bf16, per-tile packed arg-min (run 72's production)": dict(argmin="tile"),
    "bf16, index-carrying arg-min": dict(argmin="exact"),
}

TILE_SWEEP = ((256, 64, 8, 3), (256, 64, 8, 4), (256, 64, 8, 2), (128, 64, 4, 3), (128, 64, 4, 2), (128, 64, 8, 3),
              (128, 128, 8, 2), (128, 128, 8, 3), (256, 128, 8, 2), (256, 128, 8, 3), (128, 128, 4, 3),
              (64, 128, 4, 3), (128, 256, 8, 2))


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


def objective(points, centroids, labels) -> float:
    """The k-means objective (sum of squared distances to the assigned centroids) over all problems."""
    flat = points.reshape(-1, points.shape[-2], points.shape[-1])
    return float(kmeans_objective(flat, centroids, labels.long()).sum())


def bench(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=10, rep=100, return_mode="median"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="wan21-14b-720p", choices=sorted(MODEL_SHAPES))
    parser.add_argument("--clusters", type=int, nargs=2, default=(300, 1000), metavar=("QUERY", "KEY"))
    parser.add_argument("--cold-iterations", type=int, default=50)
    parser.add_argument("--no-sweep", action="store_true", help="skip TILE_SWEEP")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    q_clusters, k_clusters = args.clusters
    q_points, k_points, q_init, k_init = warm_start_inputs(args.shape, q_clusters, k_clusters, args.cold_iterations)
    head_dim = q_points.shape[-1]
    rows = []

    def report(name, ms, **extra):
        rows.append({"name": name, "ms": ms, **extra})
        print(f"{name:60s} {ms:8.3f} ms  " + " ".join(f"{key}={value}" for key, value in extra.items()), flush=True)

    for side, points, centroids in ((f"q {q_clusters}", q_points, q_init), (f"k {k_clusters}", k_points, k_init)):
        flops = 2.0 * points.shape[0] * points.shape[1] * points.shape[2] * centroids.shape[1] * head_dim
        exact = kmeans_kernels.assign_to_nearest(points, centroids, "exact")
        exact_objective = objective(points, centroids, exact)
        frame = kmeans_kernels.fp8_frame(centroids)
        report(f"fp8 copy of the points {side}", bench(lambda: kmeans_kernels.points_to_fp8(points, frame)))
        points8 = kmeans_kernels.points_to_fp8(points, frame)

        def quality(found):
            return dict(same_labels=round(float((found == exact).float().mean()), 6),
                        objective_ratio=round(objective(points, centroids, found) / exact_objective, 6))

        found = kmeans_kernels.assign_to_nearest(points8, centroids, frame=frame)
        ms = bench(lambda: kmeans_kernels.assign_to_nearest(points8, centroids, frame=frame))
        report(f"assign {side}, fp8, slots arg-min (production)", ms, tflops=round(flops / ms / 1e9, 1),
               config=str(kmeans_kernels._assign_kernel.best_config), **quality(found))
        for variant, options in VARIANTS.items():
            found = kmeans_kernels.assign_to_nearest(points, centroids, **options)
            ms = bench(lambda: kmeans_kernels.assign_to_nearest(points, centroids, **options))
            report(f"assign {side}, {variant}", ms, tflops=round(flops / ms / 1e9, 1),
                   config=str(kmeans_kernels._assign_kernel.best_config), **quality(found))
        padded = triton.cdiv(centroids.shape[1], kmeans_kernels.ASSIGN_TILE_MULTIPLE) * kmeans_kernels.ASSIGN_TILE_MULTIPLE
        for tiles in () if args.no_sweep else TILE_SWEEP:
            if padded % tiles[1]:
                continue
            try:
                found = kmeans_kernels.assign_to_nearest(points8, centroids, tiles=tiles, frame=frame)
                ms = bench(lambda: kmeans_kernels.assign_to_nearest(points8, centroids, tiles=tiles, frame=frame))
            except Exception as error:  # out of shared memory / registers: say so, go on
                print(f"assign {side}, fp8 slots, tiles {tiles}: {type(error).__name__}: {error}", flush=True)
                continue
            report(f"assign {side}, fp8 slots, tiles {tiles}", ms, tflops=round(flops / ms / 1e9, 1), **quality(found))
        num_clusters = centroids.shape[1]
        report(f"sort {side}, int16 keys", bench(lambda: kmeans_kernels.sort_by_label(exact, num_clusters)))
        ordered, offsets = kmeans_kernels.sort_by_label(exact, num_clusters)
        report(f"update {side}",
               bench(lambda: kmeans_kernels.update_centroids(points, ordered, offsets, centroids)))
        for block_rows, warps in ((16, 2), (32, 4)):  # the production sizes before session 10
            report(f"update {side}, {block_rows} rows x {warps} warps", bench(
                lambda: kmeans_kernels.update_centroids(points, ordered, offsets, centroids, block_rows, warps)))
        report(f"assign operands {side}, fp8",
               bench(lambda: kmeans_kernels.assign_operands(centroids, torch.float8_e4m3fn, frame)))
        report(f"fp8 frame {side}", bench(lambda: kmeans_kernels.fp8_frame(centroids)))

    for fp8 in (True, False):
        backend = TritonBackend(kmeans_fp8=fp8)
        name = "fp8" if fp8 else "bf16"
        for side, points, init in (("q", q_points, q_init), ("k", k_points, k_init)):
            result = backend.kmeans(points, init, 2)
            report(f"k-means {side}, 2 warm iterations, {name}", bench(lambda: backend.kmeans(points, init, 2)),
                   objective=round(objective(points, result.centroids, result.labels), 1))
        report(f"k-means q + k as a call runs them (two streams), {name}",
               bench(lambda: backend.cluster(q_points, q_init, k_points, k_init, 2, overlap=True)))
    if args.json:
        Path(args.json).write_text(json.dumps({"shape": args.shape, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
