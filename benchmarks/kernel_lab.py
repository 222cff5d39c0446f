"""Where the sparse kernel's time goes, on the H200: floors and variants at one model shape, one run.

    python3 benchmarks/kernel_lab.py --shape wan21-14b-720p --density 0.30 --json $OUT/lab.json

Every row attends each query to L = density x N keys (L rounded to 128), bf16, medians of do_bench:
- cuDNN SDPA on all keys (x density: the issue's yardstick) and on a contiguous slice of L keys (the floor);
- a minimal Triton flash loop over the contiguous slice, loading keys three ways: affine pointers, rows read
  from an index array (what any gathered layout pays), and TMA tensor descriptors; optional warp
  specialisation; with its registers and spills;
- the SVG2 kernel on an identity layout (one kept key block of L keys per 128-row query block) and on the
  real SVG2 plan at the same density, per attention configuration;
- k-means stages: the assign kernel against a variant that keeps an element-wise running minimum (one
  reduction at the end instead of one per centroid tile), and the label sort against per-row sorts.
Nothing here is used by the node; it decides what the production kernels do.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svg2_core.backends import ClusterPlan  # noqa: E402
from svg2_core.bench import calibrate_top_p  # noqa: E402
from svg2_core.kmeans import sample_initial_centroids  # noqa: E402
from svg2_core.selection import key_cluster_probabilities, select_blocks  # noqa: E402
from svg2_core.selection import top_p_mask as reference_top_p_mask  # noqa: E402
from svg2_core.triton_kernels.selection import top_p_mask  # noqa: E402
from svg2_core.synthetic import MODEL_SHAPES, structured_qkv  # noqa: E402
from svg2_core.triton_backend import TritonBackend  # noqa: E402
from svg2_core.triton_kernels import kmeans as kmeans_kernels  # noqa: E402
from svg2_core.triton_kernels.attention import AttentionConfig, _attend, fill_row_table, problems_per_chunk  # noqa: E402

LOG2_E = 1.4426950408889634


def bench(fn) -> float:
    return float(triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median"))


@triton.jit
def _slice_kernel(q_ptr, k_ptr, v_ptr, out_ptr, rows_ptr, chunk_ptr, q_desc, k_desc, v_desc, num_tokens, kv_length, qk_scale,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, MODE: tl.constexpr,
                  WARP_SPECIALIZE: tl.constexpr, FUSED_ACC: tl.constexpr):
    """out[g, rows of tile] = softmax(q k[:kv_length]^T) v[:kv_length]; kv_length a multiple of BLOCK_N.
    MODE 0: affine pointers; 1: key rows read from rows_ptr ([G * N] int32 flat rows); 2: TMA descriptors;
    3: like 1 with int32 offsets from a per-problem base; 4: like 3, rows loaded one iteration ahead;
    5: rows from a 16-row chunk table (chunk_ptr [G * N / 16] int32: first row x 16 + valid rows - 1) with
    the invalid rows masked; 6: like 5 without the mask."""
    tile = tl.program_id(0)
    problem = tl.program_id(1)
    dims = tl.arange(0, HEAD_DIM)
    first_row = problem * num_tokens + tile * BLOCK_M
    q_offsets = (first_row + tl.arange(0, BLOCK_M)).to(tl.int64)[:, None] * HEAD_DIM + dims[None, :]
    if MODE == 2:
        q = q_desc.load([first_row, 0])
    else:
        q = tl.load(q_ptr + q_offsets)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    key_base = problem * num_tokens
    k_problem = k_ptr + key_base.to(tl.int64) * HEAD_DIM
    v_problem = v_ptr + key_base.to(tl.int64) * HEAD_DIM
    within = tl.arange(0, BLOCK_N)
    valid = within < BLOCK_N  # every slot, unless MODE 5 masks a chunk's invalid rows
    next_rows = tl.load(rows_ptr + key_base + within)
    for start in tl.range(0, kv_length, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        if MODE == 2:
            k = k_desc.load([key_base + start, 0])
            v = v_desc.load([key_base + start, 0])
        elif MODE >= 3:
            if MODE == 3:
                rows = tl.load(rows_ptr + key_base + start + within) - key_base
            elif MODE == 4:
                rows = next_rows - key_base
                next_rows = tl.load(rows_ptr + key_base + start + BLOCK_N + within,
                                    mask=start + BLOCK_N + within < kv_length, other=0)
            else:
                chunk_word = tl.load(chunk_ptr + (key_base + start) // 16 + within // 16)
                rows = (chunk_word >> 4) - key_base + within % 16
                valid = within % 16 <= (chunk_word & 15)
            offsets = rows[:, None] * HEAD_DIM + dims[None, :]
            k = tl.load(k_problem + offsets)
            v = tl.load(v_problem + offsets)
        else:
            if MODE == 1:
                rows = tl.load(rows_ptr + key_base + start + tl.arange(0, BLOCK_N))
            else:
                rows = key_base + start + tl.arange(0, BLOCK_N)
            offsets = rows.to(tl.int64)[:, None] * HEAD_DIM + dims[None, :]
            k = tl.load(k_ptr + offsets)
            v = tl.load(v_ptr + offsets)
        if FUSED_ACC:  # the production kernel's step (MODE 5 masks the chunks' invalid rows)
            m_i, l_i, acc = _attend(q, k, v, m_i, l_i, acc, qk_scale, valid, MODE == 5, False)
        else:
            scores = tl.dot(q, tl.trans(k))
            m_new = tl.maximum(m_i, tl.max(scores, axis=1) * qk_scale)
            p = tl.math.exp2(scores * qk_scale - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
    out = acc / l_i[:, None]
    tl.store(out_ptr + q_offsets, out.to(out_ptr.dtype.element_ty))


def slice_attention(q, k, v, kv_length, rows, chunks, mode, block_m, block_n, warps, stages, warp_specialize, fused_acc):
    """q, k, v: [G, N, D] contiguous, N a multiple of block_m. Returns (out, compiled kernel)."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    num_problems, num_tokens, head_dim = q.shape
    out = torch.empty_like(q)
    flat = [x.view(-1, head_dim) for x in (q, k, v)]
    q_desc = TensorDescriptor.from_tensor(flat[0], [block_m, head_dim])
    k_desc = TensorDescriptor.from_tensor(flat[1], [block_n, head_dim])
    v_desc = TensorDescriptor.from_tensor(flat[2], [block_n, head_dim])
    compiled = _slice_kernel[(num_tokens // block_m, num_problems)](
        q, k, v, out, rows, chunks, q_desc, k_desc, v_desc, num_tokens, kv_length, LOG2_E / math.sqrt(head_dim),
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, MODE=mode, WARP_SPECIALIZE=warp_specialize,
        FUSED_ACC=fused_acc, num_warps=warps, num_stages=stages)
    return out, compiled


def identity_plan(num_problems, num_tokens, kv_length, device, block_rows=128):
    """block_rows-token query blocks; key block 0 = the first kv_length tokens (kept), block 1 = the rest
    (dropped)."""
    positions = torch.arange(num_tokens, device=device)
    q_labels = (positions // block_rows).int().expand(num_problems, -1).contiguous()
    k_labels = (positions >= kv_length).int().expand(num_problems, -1).contiguous()
    num_q = -(-num_tokens // block_rows)
    q_sizes = torch.bincount(q_labels[0].long(), minlength=num_q).int().expand(num_problems, -1).contiguous()
    k_sizes = torch.tensor([kv_length, num_tokens - kv_length], device=device, dtype=torch.int32)
    k_sizes = k_sizes.expand(num_problems, -1).contiguous()
    mask = torch.zeros(num_problems, num_q, 2, dtype=torch.bool, device=device)
    mask[..., 0] = True
    return ClusterPlan(q_labels, k_labels, q_sizes, k_sizes, mask, 0, 0)


def rel_error(out, ref):
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="wan21-14b-720p", choices=sorted(MODEL_SHAPES))
    parser.add_argument("--density", type=float, default=0.30)
    parser.add_argument("--configs", nargs="*", default=["128x128x8x3-r64x4", "128x128x8x3-r0",
                                                          "128x64x8x4-r64x4"])
    parser.add_argument("--skip-kmeans", action="store_true")
    parser.add_argument("--qk", choices=["input", "int8"], default="input", help="scores of the SVG2 kernel rows")
    parser.add_argument("--skip-floors", action="store_true", help="skip the Triton flash loops over the slice")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    results = {"shape": args.shape, "density": args.density, "rows": []}

    def report(name, ms, **extra):
        row = {"name": name, "ms": ms, **extra}
        results["rows"].append(row)
        tail = " ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                        for key, value in extra.items())
        print(f"{name:58s} {ms:9.2f} ms  {tail}", flush=True)

    batch, heads, grid, head_dim, dense_suffix = MODEL_SHAPES[args.shape]
    q4, k4, v4 = structured_qkv(batch, heads, grid, head_dim, peakedness=4.0, dense_suffix=dense_suffix,
                                device=device, dtype=torch.bfloat16)
    num_problems, num_tokens = batch * heads, q4.shape[2]
    q, k, v = (x.reshape(num_problems, num_tokens, head_dim).contiguous() for x in (q4, k4, v4))
    scale = 1.0 / math.sqrt(head_dim)
    kv_length = int(round(args.density * num_tokens / 128)) * 128
    exact_density = kv_length / num_tokens
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
        full_ms = bench(lambda: F.scaled_dot_product_attention(q4, k4, v4))
        k_slice, v_slice = k4[:, :, :kv_length], v4[:, :, :kv_length]
        reference = F.scaled_dot_product_attention(q4, k_slice, v_slice)
        slice_ms = bench(lambda: F.scaled_dot_product_attention(q4, k_slice, v_slice))
    yardstick = exact_density * full_ms
    report("cuDNN all keys", full_ms)
    report(f"cuDNN contiguous slice of {kv_length} keys", slice_ms, vs_yardstick=slice_ms / yardstick)
    reference = reference.reshape(num_problems, num_tokens, head_dim)

    # -- the Triton flash loop over the contiguous slice --
    padded_tokens = num_tokens // 128 * 128  # whole 128-row query tiles only (the floor ignores the tail)
    qs, ks, vs = (x[:, :padded_tokens].contiguous() for x in (q, k, v))
    identity_rows = torch.arange(num_problems * padded_tokens, device=device, dtype=torch.int32)
    identity_chunks = (identity_rows[::16] * 16 + 15).contiguous()
    ref_rows = reference[:, :padded_tokens]
    variants = [("affine", 0, 128, 128, 8, 3, False, True), ("TMA", 2, 128, 128, 8, 3, False, True),
                ("index-array", 1, 128, 128, 8, 3, False, True), ("index-array int32", 3, 128, 128, 8, 3, False, True),
                ("index-array int32 ahead", 4, 128, 128, 8, 3, False, True),
                ("chunk16 masked", 5, 128, 128, 8, 3, False, True), ("chunk16 unmasked", 6, 128, 128, 8, 3, False, True),
                ("index-array int32", 3, 128, 64, 8, 3, False, True), ("chunk16 masked", 5, 128, 64, 8, 3, False, True),
                ("chunk16 masked", 5, 128, 64, 8, 4, False, True), ("index-array int32", 3, 128, 64, 8, 4, False, True)]
    for mode_name, mode, bm, bn, warps, stages, ws, fused in ([] if args.skip_floors else variants):
        name = f"triton slice {mode_name} {bm}x{bn}x{warps}x{stages}{' ws' if ws else ''}{'' if fused else ' unfused-acc'}"
        try:
            def run(mode=mode, bm=bm, bn=bn, warps=warps, stages=stages, ws=ws, fused=fused):
                return slice_attention(qs, ks, vs, kv_length, identity_rows, identity_chunks, mode, bm, bn, warps, stages, ws, fused)
            out, compiled = run()
            ms = bench(lambda: run()[0])
            report(name, ms, vs_yardstick=ms / yardstick, vs_cudnn_slice=ms / slice_ms,
                   error=rel_error(out, ref_rows), regs=compiled.n_regs, spills=compiled.n_spills)
        except Exception as error:  # a variant this Triton cannot compile is a result too
            print(f"{name:58s} failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}", flush=True)
            results["rows"].append({"name": name, "error_text": str(error)[:400]})

    # -- the SVG2 kernel: identity layout, then the real plan --
    configs = [AttentionConfig.parse(text) for text in args.configs]
    qk_int8 = args.qk == "int8"
    for config in configs:
        identity = identity_plan(num_problems, num_tokens, kv_length, device, config.block_m)
        backend = TritonBackend(config)
        launch = backend.plan_launch(identity, num_tokens, head_dim)
        k_source, v_source = backend.key_source(k, v, launch)
        out = backend.run_launch(q, k_source, v_source, launch, scale, qk_int8)
        ms = bench(lambda: backend.run_launch(q, k_source, v_source, launch, scale, qk_int8))
        report(f"SVG2 kernel, identity layout, {config.label()}", ms, vs_yardstick=ms / yardstick,
               error=rel_error(out, reference))

    clustered = slice(0, num_tokens - dense_suffix)
    q_points, k_points = q[:, clustered], k[:, clustered]
    generator = torch.Generator(device=device).manual_seed(0)
    backend = TritonBackend(configs[0] if configs else None)
    q_cold = backend.kmeans(q_points, sample_initial_centroids(q_points, 300, generator), 50)
    k_cold = backend.kmeans(k_points, sample_initial_centroids(k_points, 1000, generator), 50)
    q_clusters = backend.kmeans(q_points, q_cold.centroids, 2)
    k_clusters = backend.kmeans(k_points, k_cold.centroids, 2)

    def plan_at(p):
        mask = select_blocks(q_clusters.centroids, k_clusters.centroids, k_clusters.cluster_sizes, p, 100, scale)
        return ClusterPlan(q_clusters.labels, k_clusters.labels, q_clusters.cluster_sizes,
                           k_clusters.cluster_sizes, mask, 0, dense_suffix)

    top_p = calibrate_top_p(lambda p: float(plan_at(p).density().mean()), args.density)
    plan = plan_at(top_p)
    density = float(plan.density().mean())
    plan_yardstick = density * full_ms
    for config in configs:
        backend = TritonBackend(config)
        launch = backend.plan_launch(plan, num_tokens, head_dim)
        k_source, v_source = backend.key_source(k, v, launch)
        ms = bench(lambda: backend.run_launch(q, k_source, v_source, launch, scale, qk_int8))
        report(f"SVG2 kernel, SVG2 plan top_p {top_p}, {config.label()}", ms, density=density,
               vs_yardstick=ms / plan_yardstick)
        padded = _padded_rows(launch, config)
        report(f"  query rows computed / real rows, {config.label()}", 0.0, padding=padded)

    # -- the call's small stages on the real plan: block map, metadata, row table --
    probabilities = key_cluster_probabilities(q_clusters.centroids, k_clusters.centroids, k_clusters.cluster_sizes, scale)
    report("block map: probabilities (bmm + softmax)",
           bench(lambda: key_cluster_probabilities(q_clusters.centroids, k_clusters.centroids, k_clusters.cluster_sizes, scale)))
    same_mask = bool(torch.equal(top_p_mask(probabilities, top_p, 100), reference_top_p_mask(probabilities, top_p, 100)))
    report("block map: top-p, Triton search", bench(lambda: top_p_mask(probabilities, top_p, 100)), same_as_torch=same_mask)
    report("block map: top-p, torch sort", bench(lambda: reference_top_p_mask(probabilities, top_p, 100)))
    backend = TritonBackend(configs[0] if configs else None)
    report("plan (launch metadata)", bench(lambda: backend.plan_launch(plan, num_tokens, head_dim)))
    launch = backend.plan_launch(plan, num_tokens, head_dim)
    num_q_blocks = launch.q_block_end.shape[1]
    chunk = problems_per_chunk(num_problems, num_q_blocks, num_tokens, head_dim, q.element_size())
    kv_rows = torch.empty(chunk, num_q_blocks, num_tokens, dtype=torch.int32, device=device)
    for warps, tiles in ((1, 1), (4, 1), (1, 4), (2, 4), (4, 4), (4, 8), (8, 8)):
        def fill(warps=warps, tiles=tiles):
            for first in range(0, num_problems, chunk):
                fill_row_table(kv_rows, launch, first, min(chunk, num_problems - first), True, warps, tiles)
        report(f"row table, {tiles} key tiles per step, {warps} warps", bench(fill))

    if args.skip_kmeans:
        return _finish(results, args)
    # -- k-means stages --
    for name, points, centroids in (("q 300", q_points, q_cold.centroids), ("k 1000", k_points, k_cold.centroids)):
        labels = kmeans_kernels.assign_to_nearest(points, centroids)
        flops = 2.0 * points.shape[0] * points.shape[1] * centroids.shape[1] * points.shape[2]
        ms = bench(lambda: kmeans_kernels.assign_to_nearest(points, centroids))
        report(f"assign {name} (production, autotuned)", ms, tflops=flops / ms / 1e9,
               config=str(getattr(kmeans_kernels._assign_kernel, "best_config", "?")))

        def two_iterations(points=points, centroids=centroids):
            current = centroids
            for _ in range(2):
                found = kmeans_kernels.assign_to_nearest(points, current)
                ordered, bounds = kmeans_kernels.sort_by_label(found, centroids.shape[1])
                current, _ = kmeans_kernels.update_centroids(points, ordered, bounds, current)
            return current
        report(f"k-means {name}, 2 iterations (assign, sort, update)", bench(two_iterations))
        sorted_points, offsets = kmeans_kernels.sort_by_label(labels, centroids.shape[1])
        report(f"sort {name} (production: flat int32 keys)", bench(lambda: kmeans_kernels.sort_by_label(labels, centroids.shape[1])))
        report(f"sort {name}: torch.sort(labels, dim=1, stable)", bench(lambda: torch.sort(labels, dim=1, stable=True)))
        labels16 = labels.to(torch.int16)
        report(f"sort {name}: torch.sort(int16 labels, dim=1, stable)", bench(lambda: torch.sort(labels16, dim=1, stable=True)))
        flat_keys = (labels + torch.arange(num_problems, device=device, dtype=torch.int32)[:, None] * centroids.shape[1]).view(-1)
        report(f"sort {name}: flat int32 keys, values only", bench(lambda: torch.sort(flat_keys)))
        report(f"update {name} (production)", bench(lambda: kmeans_kernels.update_centroids(points, sorted_points, offsets, centroids)))
        for block_rows, warps in ((8, 1), (16, 1), (16, 2), (32, 2), (32, 4), (64, 8)):
            report(f"update {name}: {block_rows} rows x {warps} warps",
                   bench(lambda: kmeans_kernels.update_centroids(points, sorted_points, offsets, centroids,
                                                                 block_rows, warps)))
    return _finish(results, args)


def _padded_rows(launch, config) -> float:
    """Query rows the kernel computes (tiles x their rows) over the real rows."""
    full = int((launch.q_tile_block < launch.q_block_end.shape[1]).sum()) * config.block_m
    rem = int((launch.rem_tile_block < launch.q_block_end.shape[1]).sum()) * config.remainder_m if launch.remainder_m else 0
    return (full + rem) / launch.q_rows.numel()


def _finish(results, args):
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
