"""SVG2 attention against dense attention and a positional block-sparse baseline, stage by stage.

    python -m svg2_core.bench                                   # small shape on a GPU, tiny shape on the CPU
    python -m svg2_core.bench --shape wan21-14b-720p --top-p 0.6246 0.8745 --json out.json
    python -m svg2_core.bench --shape wan21-1.3b-480p --density 0.15 0.30 --profile

Inputs come from svg2_core.synthetic (structured video tokens). On a GPU the Triton fast path is timed stage
by stage with triton.testing.do_bench (median ms); without one the torch reference runs, timed by the wall
clock, which says nothing about GPU speed. Errors and recall are measured on sampled query rows against fp32
attention of the same inputs. Optional peers get rows only where they are installed: comfy-kitchen's
`sol_attn` and SageAttention 1 (`sageattention`, dense int8 attention in Triton).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .backends import ClusterPlan, TorchBackend
from .config import SVG2Config
from .kmeans import grid_initial_centroids
from .layout import block_of_tokens
from .synthetic import MODEL_SHAPES, structured_qkv

log = logging.getLogger("svg2.bench")

PROGRAM = "python -m svg2_core.bench"
CPU_NOTE = ("no CUDA GPU: timings are CPU wall clock and not representative of the GPU fast path; densities, "
            "recall and errors are")
LEGEND = """columns:
  ms         median milliseconds: SVG2 rows the whole call (k-means + block map + plan + kernel), dense rows the
             attention call, positional rows the sparse kernel alone, peer rows their attention call
  density    share of (query, key) pairs computed
  err/dense  relative L2 error of the output against fp32 dense attention (sampled query rows)
  recall     share of the dense attention mass inside the sparse mask
  err/mask   relative L2 error against fp32 attention under the same sparse mask (the kernel's own error)
  torch-lp   err/mask of PyTorch doing that masked attention in the input dtype (a yardstick for err/mask)
  stages     SVG2 whole-call parts in ms: kmeans (2 warm Lloyd steps of q and k), block_map (top-p
             selection), plan (row tables), kernel (attention; with int8 scores it includes coding q and k,
             of which coding is the part)
  (fastest)  the fastest dense SDPA backend, the speedups' reference"""


def _timer(device: torch.device):
    """Median milliseconds of fn(): do_bench on CUDA, a few wall-clock runs on the CPU."""
    if device.type == "cuda":
        import triton.testing

        return lambda fn: float(triton.testing.do_bench(fn, warmup=5, rep=40, return_mode="median"))

    def cpu_time(fn):
        fn()
        samples = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
        return statistics.median(samples)

    return cpu_time


def _sdpa(q, k, v, backend):
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel([backend]):
        return F.scaled_dot_product_attention(q, k, v)


def dense_backends(q, k, v, timer) -> list[dict]:
    """Each SDPA backend of the device: name and ms, or the reason it is unavailable. q, k, v: [B, H, N, D]."""
    from torch.nn.attention import SDPBackend

    choices = [("cuDNN SDPA", SDPBackend.CUDNN_ATTENTION), ("flash SDPA", SDPBackend.FLASH_ATTENTION),
               ("efficient SDPA", SDPBackend.EFFICIENT_ATTENTION)]
    if q.device.type == "cpu":
        choices = [("math SDPA", SDPBackend.MATH)]
    rows = []
    for name, backend in choices:
        try:
            _sdpa(q, k, v, backend)
            rows.append({"method": name, "ms": timer(lambda b=backend: _sdpa(q, k, v, b))})
        except RuntimeError as error:
            rows.append({"method": name, "ms": None, "note": f"unavailable: {str(error).splitlines()[0][:80]}"})
    timed = [row for row in rows if row["ms"] is not None]
    if timed:
        min(timed, key=lambda row: row["ms"])["best"] = True
    return rows


def sampled_quality(q, k, v, outputs: dict, masks: dict, scale: float, rows_per_head: int, seed: int = 0) -> dict:
    """Relative errors and recall on sampled query rows, head by head.

    q, k, v: [G, N, D]; outputs: name -> [G, N, D]; masks: name -> fn(g, rows) -> allowed [R, N] bool.
    For each mask: `recall` (dense attention mass inside the mask), `error_vs_dense` of the output,
    `error_vs_oracle` (vs fp32 attention under the same mask) and `torch_lowp_error_vs_oracle` (PyTorch
    doing the same masked attention in q's dtype: scores, softmax in fp32, probabilities and output in q's dtype).
    """
    num_problems, num_tokens, _ = q.shape
    generator = torch.Generator().manual_seed(seed)
    sums = {name: {"recall": 0.0, "dense_err": 0.0, "oracle_err": 0.0, "lowp_err": 0.0, "oracle": 0.0}
            for name in masks}
    dense_norm = 0.0
    for g in range(num_problems):
        rows = torch.randperm(num_tokens, generator=generator)[:rows_per_head].to(q.device)
        qf, kf, vf = q[g, rows].float(), k[g].float(), v[g].float()
        scores = (qf @ kf.T) * scale
        probabilities = scores.softmax(-1)
        dense = probabilities @ vf
        dense_norm += float(dense.square().sum())
        for name, mask_fn in masks.items():
            allowed = mask_fn(g, rows)
            masked = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
            oracle = masked @ vf
            lowp_scores = (q[g, rows] @ k[g].T).float() * scale
            lowp = lowp_scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0).to(q.dtype) @ v[g]
            out = outputs[name][g, rows].float()
            entry = sums[name]
            entry["recall"] += float((probabilities * allowed).sum())
            entry["dense_err"] += float((out - dense).square().sum())
            entry["oracle_err"] += float((out - oracle).square().sum())
            entry["lowp_err"] += float((lowp.float() - oracle).square().sum())
            entry["oracle"] += float(oracle.square().sum())
    count = num_problems * min(rows_per_head, num_tokens)
    return {name: {"recall": entry["recall"] / count,
                   "error_vs_dense": math.sqrt(entry["dense_err"] / dense_norm),
                   "error_vs_oracle": math.sqrt(entry["oracle_err"] / entry["oracle"]),
                   "torch_lowp_error_vs_oracle": math.sqrt(entry["lowp_err"] / entry["oracle"])}
            for name, entry in sums.items()}


def positional_plan(q, k, density: torch.Tensor, scale: float, block_q: int = 128, block_k: int = 64) -> ClusterPlan:
    """SpargeAttn/SVG1-style map: fixed position blocks, mean-pooled scores, per query block the top
    round(density * blocks) key blocks (density: [G], SVG2's). q, k: [G, N, D]."""
    num_problems, num_tokens, head_dim = q.shape
    positions = torch.arange(num_tokens, device=q.device)
    q_labels = (positions // block_q).to(torch.int32).expand(num_problems, -1).contiguous()
    k_labels = (positions // block_k).to(torch.int32).expand(num_problems, -1).contiguous()
    num_q_blocks, num_k_blocks = -(-num_tokens // block_q), -(-num_tokens // block_k)
    q_sizes = torch.bincount(q_labels[0].long(), minlength=num_q_blocks).int().expand(num_problems, -1).contiguous()
    k_sizes = torch.bincount(k_labels[0].long(), minlength=num_k_blocks).int().expand(num_problems, -1).contiguous()
    q_means = torch.zeros(num_problems, num_q_blocks, head_dim, device=q.device).index_add_(
        1, q_labels[0].long(), q.float()) / q_sizes.unsqueeze(-1)
    k_means = torch.zeros(num_problems, num_k_blocks, head_dim, device=q.device).index_add_(
        1, k_labels[0].long(), k.float()) / k_sizes.unsqueeze(-1)
    block_scores = torch.bmm(q_means, k_means.transpose(1, 2)) * scale
    kept = (density * num_k_blocks).round().clamp(1, num_k_blocks).long()  # [G]
    rank = block_scores.argsort(-1, descending=True).argsort(-1)
    block_mask = rank < kept.view(-1, 1, 1)
    return ClusterPlan(q_labels, k_labels, q_sizes, k_sizes, block_mask, 0, 0)


def calibrate_top_p(density_of, target: float, steps: int = 14) -> float:
    """top_p whose mean density is closest to `target` (bisection; density grows with top_p)."""
    low, high = 0.0, 1.0
    for _ in range(steps):
        middle = (low + high) / 2
        if density_of(middle) < target:
            low = middle
        else:
            high = middle
    return round(min((low, high), key=lambda p: abs(density_of(p) - target)), 4)


def sol_attn_rows(q4, k4, v4, dense_suffix: int, taus, timer, quality_of) -> tuple[list[dict], str | None]:
    """comfy-kitchen's `sol_attn` (the sparse attention ComfyUI ships) at each routing threshold `tau`:
    (rows of time and error against dense, None) or ([], why there are none). q4, k4, v4: [B, H, N, D];
    text tokens (dense_suffix) are its sinks."""
    if not taus:
        return [], None
    try:
        import comfy_kitchen
    except ImportError:
        return [], "comfy-kitchen sol_attn: not installed"
    if not comfy_kitchen.sol_attn_is_available(q4.device):
        return [], f"comfy-kitchen sol_attn: its kernels are unavailable on {q4.device.type}"
    q, k, v = (x.transpose(1, 2).contiguous() for x in (q4, k4, v4))  # sol_attn takes [B, N, H, D]
    num_tokens = q.shape[1]
    num_blocks = -(-num_tokens // 64)
    sinks = [(num_tokens - dense_suffix) // 64, num_blocks] if dense_suffix else None
    rows = []
    for tau in taus:
        def call(t=tau):
            return comfy_kitchen.sol_attn(q, k, v, tau=t, sink_blocks=sinks, sink_q=sinks)
        out = call().transpose(1, 2).reshape(-1, num_tokens, q.shape[-1])
        rows.append({"method": f"comfy-kitchen sol_attn tau={tau}", "ms": timer(call),
                     "error_vs_dense": quality_of(out)})
    return rows, None


def sageattention_rows(q4, k4, v4, timer, quality_of) -> tuple[list[dict], str | None]:
    """SageAttention 1 (`sageattention`, int8 q k^T in Triton; what consumer-GPU users run for dense
    attention): ([row of time and error against dense], None) or ([], why there is none). q4, k4, v4:
    [B, H, N, D]."""
    try:
        from sageattention import sageattn
    except ImportError:
        return [], "SageAttention: not installed"
    if q4.device.type != "cuda":
        return [], "SageAttention: needs a CUDA GPU"

    def call():
        return sageattn(q4, k4, v4, tensor_layout="HND", is_causal=False)
    try:
        out = call()
    except Exception as error:  # a peer failing here must not end the bench
        return [], f"SageAttention: failed ({type(error).__name__}: {str(error).splitlines()[0][:80]})"
    out = out.reshape(-1, q4.shape[2], q4.shape[3])
    return [{"method": "SageAttention 1 (dense, int8 QK)", "ms": timer(call), "error_vs_dense": quality_of(out)}], None


def compare_with_sol_attn(rows: list[dict]) -> list[dict]:
    """For each sol_attn row: the most accurate SVG2 whole call that is at least as fast, and whether its
    error is at most half of sol_attn's (the acceptance rule)."""
    svg2 = [row for row in rows if row["method"].startswith("SVG2") and "total_ms" in row]
    verdicts = []
    for sol in (row for row in rows if row["method"].startswith("comfy-kitchen") and row.get("ms")):
        faster = [row for row in svg2 if row["total_ms"] <= sol["ms"]]
        best = min(faster, key=lambda row: row["error_vs_dense"]) if faster else None
        verdicts.append({"sol_attn": sol["method"], "sol_ms": sol["ms"], "sol_error": sol["error_vs_dense"],
                         "svg2": best and best["method"], "svg2_ms": best and best["total_ms"],
                         "svg2_error": best and best["error_vs_dense"],
                         "svg2_error_at_most_half": bool(best) and best["error_vs_dense"] <= 0.5 * sol["error_vs_dense"]})
    return verdicts


def kmeans_stage_times(backend, q_points, q_init, k_points, k_init, num_k_clusters: int, timer) -> dict:
    """One Lloyd step of the fast path split into its launches, in ms: the assignment of q and of k (with
    the fp8 copy of the points where the GPU has fp8 dots, as production makes it once per k-means), the
    label sort of k and the centroid update of k. q_points / k_points: [G, N, D]."""
    from .triton_kernels.kmeans import (assign_to_nearest, fp8_dot_supported, fp8_frame, points_to_fp8,
                                        sort_by_label, update_centroids)

    stages = {}
    operands = {}
    for side, points, init in (("q", q_points, q_init), ("k", k_points, k_init)):
        if fp8_dot_supported(points.device):
            frame = fp8_frame(init)
            stages[f"fp8_copy_{side}"] = timer(lambda p=points, f=frame: points_to_fp8(p, f))
            operands[side] = (points_to_fp8(points, frame), frame)
        else:
            operands[side] = (points, None)
        assign_points, frame = operands[side]
        stages[f"assign_{side}"] = timer(lambda p=assign_points, c=init, f=frame: assign_to_nearest(p, c, frame=f))
    labels = assign_to_nearest(operands["k"][0], k_init, frame=operands["k"][1])
    sorted_points, offsets = sort_by_label(labels, num_k_clusters)
    stages["sort_k"] = timer(lambda: sort_by_label(labels, num_k_clusters))
    stages["update_k"] = timer(lambda: update_centroids(k_points, sorted_points, offsets, k_init))
    return stages


def profile_public_call(q4, k4, v4, config: SVG2Config, dense_suffix: int, backend_name: str, timer,
                        row_limit: int) -> dict:
    """The public `svg2_attention` call as the ComfyUI node makes it (q, k, v transposed views of
    [B, N, H * D]) and on contiguous [B, H, N, D], warm (centroids cached), plus the profiler's table of the
    kernels of one call. q4, k4, v4: [B, H, N, D]."""
    from .api import svg2_attention
    from .state import SVG2State

    node_layout = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q4, k4, v4)]
    contiguous = [x.contiguous() for x in (q4, k4, v4)]
    state = SVG2State()
    kwargs = dict(state=state, cache_key=0, dense_suffix=dense_suffix, backend=backend_name)
    svg2_attention(*node_layout, config, **kwargs)  # cold start: compiles, fills the centroid cache
    result = {"public_call_node_layout_ms": timer(lambda: svg2_attention(*node_layout, config, **kwargs)),
              "public_call_contiguous_ms": timer(lambda: svg2_attention(*contiguous, config, **kwargs))}
    cuda = q4.device.type == "cuda"
    activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
    with torch.profiler.profile(activities=[activity]) as profiler:
        svg2_attention(*node_layout, config, **kwargs)
        if cuda:
            torch.cuda.synchronize()

    def total_us(event):
        return getattr(event, "device_time_total", 0.0) if cuda else event.cpu_time_total
    events = sorted(profiler.key_averages(), key=total_us, reverse=True)[:row_limit]
    kernels = [{"name": event.key[:90], "calls": event.count, "total_ms": total_us(event) / 1e3} for event in events]
    result["kernels"] = kernels
    return result


def run_shape(name: str, args, timer, device) -> dict:
    from .layout import block_mask_with_dense

    batch, heads, grid, head_dim, dense_suffix = MODEL_SHAPES[name]
    dtype = torch.bfloat16 if device.type == "cuda" or args.backend == "triton" else torch.float32
    q4, k4, v4 = structured_qkv(batch, heads, grid, head_dim, locality=args.locality, semantic=args.semantic,
                                peakedness=args.peakedness, dense_suffix=dense_suffix, device=device, dtype=dtype)
    num_tokens = q4.shape[2]
    num_problems = batch * heads
    q, k, v = (x.reshape(num_problems, num_tokens, head_dim) for x in (q4, k4, v4))
    scale = 1.0 / math.sqrt(head_dim)
    result = {"shape": name, "bhnd": [batch, heads, num_tokens, head_dim], "dense_suffix": dense_suffix,
              "grid": list(grid), "num_q_clusters": args.q_clusters, "num_k_clusters": args.k_clusters,
              "qk": args.qk, "backend": args.backend, "rows": [], "not_run": []}
    qk_int8 = args.qk == "int8"
    result["rows"] += dense_backends(q4, k4, v4, timer)
    dense_times = [row["ms"] for row in result["rows"] if row["ms"] is not None]
    best_dense = min(dense_times) if dense_times else None

    if args.backend == "triton":
        from .triton_backend import TritonBackend
        from .triton_kernels.quantize import quantize_keys, quantize_queries
        backend = TritonBackend(pv_fp16_accumulate={"auto": None, "fp16": True, "fp32": False}[args.pv_accumulate])
    else:
        backend = TorchBackend()
    clustered = slice(0, num_tokens - dense_suffix)
    q_points, k_points = q[:, clustered], k[:, clustered]
    q_init = grid_initial_centroids(q_points, args.q_clusters, seed=0)  # the library's cold start
    k_init = grid_initial_centroids(k_points, args.k_clusters, seed=0)

    def cold():
        return backend.kmeans(q_points, q_init, args.cold_iters), backend.kmeans(k_points, k_init, args.cold_iters)

    q_cold, k_cold = cold()  # compiles, and gives the warm-start centroids
    result["kmeans_cold_iters"] = args.cold_iters
    # a cold start runs once per run; on the CPU it is not timed (the reference would take minutes)
    result["kmeans_cold_ms"] = timer(cold) if device.type == "cuda" else None
    q_warm_init, k_warm_init = q_cold.centroids, k_cold.centroids

    def warm(overlap=True):
        return backend.cluster(q_points, q_warm_init, k_points, k_warm_init, 2, overlap)

    q_clusters, k_clusters = warm()
    kmeans_ms = timer(warm)  # as a warm call runs them: overlapped where the backend can
    result["kmeans_warm2_ms"] = kmeans_ms
    result["kmeans_warm2_one_after_other_ms"] = timer(lambda: warm(overlap=False))
    # the node's rule (and its range check) for the floor on kept key clusters
    min_kept = SVG2Config(num_k_clusters=args.k_clusters,
                          min_k_cluster_ratio=args.min_k_cluster_ratio).min_kept_k_clusters

    def block_mask_for(qc, kc, p):
        return backend.select_blocks(qc.centroids, kc.centroids, kc.cluster_sizes, p, min_kept, scale)

    def plan_for(qc, kc, p):
        return ClusterPlan(qc.labels, kc.labels, qc.cluster_sizes, kc.cluster_sizes, block_mask_for(qc, kc, p),
                           0, dense_suffix, q_label_sort=qc.label_sort, k_label_sort=kc.label_sort)

    def mean_density(p):
        return float(plan_for(q_clusters, k_clusters, p).density().mean())

    top_ps = list(args.top_p)
    for target in args.density or []:
        top_ps.append(calibrate_top_p(mean_density, target))
        log.info("%s: top_p %.4f gives density %.4f (target %.3f)", name, top_ps[-1], mean_density(top_ps[-1]), target)
    for top_p in top_ps:
        plan = plan_for(q_clusters, k_clusters, top_p)
        block_mask = plan.block_mask
        density = plan.density()
        row = {"method": f"SVG2 top_p={top_p}", "top_p": top_p, "density": float(density.mean()),
               "kmeans_warm2_ms": kmeans_ms,
               "block_map_ms": timer(lambda p=top_p: block_mask_for(q_clusters, k_clusters, p))}
        out = backend.sparse_attention(q, k, v, plan, scale, qk_int8)
        if backend.name == "triton":
            launch = backend.plan_launch(plan, num_tokens, head_dim)
            row["plan_ms"] = timer(lambda: backend.plan_launch(plan, num_tokens, head_dim))
            # int8 coding of q and k (with qk_int8), row tables, attention
            row["kernel_ms"] = timer(lambda: backend.run_launch(q, k, v, launch, scale, qk_int8))
            if qk_int8:  # the part of the kernel stage that codes q and k
                row["kernel_coding_ms"] = timer(lambda: (quantize_queries(q), quantize_keys(k)))

            def whole_call(p=top_p):
                qc, kc = backend.cluster(q_points, q_warm_init, k_points, k_warm_init, 2, overlap=True)
                return backend.sparse_attention(q, k, v, plan_for(qc, kc, p), scale, qk_int8)
            row["total_ms"] = timer(whole_call)
            row["kernel_vs_density_x_dense"] = (row["kernel_ms"] / (row["density"] * best_dense)
                                                if best_dense else None)
        else:
            row["kernel_ms"] = timer(lambda: backend.sparse_attention(q, k, v, plan, scale, qk_int8))
            row["total_ms"] = kmeans_ms + row["block_map_ms"] + row["kernel_ms"]
        if best_dense:
            row["speedup_vs_best_dense"] = best_dense / row["total_ms"]
        base = positional_plan(q, k, density, scale)
        base_density = base.density()
        base_row = {"method": f"positional 128x64 blocks @ SVG2 top_p={top_p}", "density": float(base_density.mean())}
        base_out = backend.sparse_attention(q, k, v, base, scale, qk_int8)
        base_row["kernel_ms"] = timer(lambda: backend.sparse_attention(q, k, v, base, scale, qk_int8))
        q_block = block_of_tokens(plan.q_labels, 0, dense_suffix, plan.q_cluster_sizes.shape[1])
        k_block = block_of_tokens(plan.k_labels, 0, dense_suffix, plan.k_cluster_sizes.shape[1])
        mask_ext = block_mask_with_dense(block_mask)
        base_mask = base.block_mask
        quality = sampled_quality(q, k, v, {"svg2": out, "positional": base_out}, {
            "svg2": lambda g, rows: mask_ext[g][q_block[g, rows]][:, k_block[g]],
            "positional": lambda g, rows: base_mask[g][base.q_labels[g, rows].long()][:, base.k_labels[g].long()],
        }, scale, args.rows_per_head)
        row.update(quality["svg2"])
        base_row.update(quality["positional"])
        row["within_2x_torch_lowp"] = row["error_vs_oracle"] <= 2 * row["torch_lowp_error_vs_oracle"] + 1e-6
        result["rows"] += [row, base_row]
        log.debug("%s: %s | %s", name, row, base_row)

    def error_vs_dense(out):
        everything = torch.ones(num_tokens, dtype=torch.bool, device=device)
        quality = sampled_quality(q, k, v, {"any": out}, {"any": lambda g, rows: everything.expand(len(rows), -1)},
                                  scale, args.rows_per_head)
        return quality["any"]["error_vs_dense"]

    for rows, reason in (sageattention_rows(q4, k4, v4, timer, error_vs_dense),
                         sol_attn_rows(q4, k4, v4, dense_suffix, args.sol_tau, timer, error_vs_dense)):
        result["rows"] += rows
        if reason:
            result["not_run"].append(reason)
    result["svg2_vs_sol_attn"] = compare_with_sol_attn(result["rows"])

    if args.profile:
        profile = {}
        if backend.name == "triton":
            profile["kmeans_stage_ms"] = kmeans_stage_times(backend, q_points, q_warm_init, k_points, k_warm_init,
                                                            args.k_clusters, timer)
        config = SVG2Config(top_p=top_ps[0] if top_ps else 0.9, num_q_clusters=args.q_clusters,
                            num_k_clusters=args.k_clusters, min_k_cluster_ratio=args.min_k_cluster_ratio,
                            kmeans_init_iters=args.cold_iters, qk_int8=qk_int8)
        profile["top_p"] = config.top_p
        profile.update(profile_public_call(q4, k4, v4, config, dense_suffix, backend.name, timer, args.profile_rows))
        result["profile"] = profile
    return result


def _cell(value, width: int, fmt: str) -> str:
    return f"{value:{width}{fmt}}" if isinstance(value, (int, float)) else f"{'':{width}}"


def format_table(result: dict) -> str:
    cold = result.get("kmeans_cold_ms")
    cold_text = (f"{cold:.1f} ms" if cold is not None else "n/a (timed on a GPU only)")
    lines = [f"== {result['shape']} {tuple(result['bhnd'])} dense_suffix={result['dense_suffix']} "
             f"clusters {result['num_q_clusters']}/{result['num_k_clusters']}; QK {result['qk']}; {result['backend']} "
             f"backend; k-means warm x2 {result['kmeans_warm2_ms']:.2f} ms (q and k one after the other "
             f"{result['kmeans_warm2_one_after_other_ms']:.2f}), cold x{result['kmeans_cold_iters']} {cold_text}"]
    lines.append(f"{'method':46} {'ms':>8} {'density':>8} {'err/dense':>9} {'recall':>7} {'err/mask':>8} "
                 f"{'torch-lp':>8}  stages")
    for row in result["rows"]:
        ms = row.get("total_ms", row.get("kernel_ms", row.get("ms")))
        name = row["method"] + (" (fastest)" if row.get("best") else "")
        cells = [f"{name:46}", f"{ms:8.2f}" if ms is not None else f"{'n/a':>8}"]
        for key, width, fmt in (("density", 8, ".3f"), ("error_vs_dense", 9, ".4f"), ("recall", 7, ".3f"),
                                ("error_vs_oracle", 8, ".4f"), ("torch_lowp_error_vs_oracle", 8, ".4f")):
            cells.append(_cell(row.get(key), width, fmt))
        stages = ", ".join(f"{key[:-3].replace('kmeans_warm2', 'kmeans').replace('kernel_coding', 'coding')} "
                           f"{row[key]:.2f}"
                           for key in ("kmeans_warm2_ms", "block_map_ms", "plan_ms", "kernel_ms", "kernel_coding_ms")
                           if key in row and "total_ms" in row)
        lines.append(" ".join(cells) + "  " + (stages or row.get("note", "")))
    for reason in result.get("not_run", []):
        lines.append(f"no row for {reason}")
    for verdict in result.get("svg2_vs_sol_attn", []):
        if verdict["svg2"] is None:
            lines.append(f"vs {verdict['sol_attn']} ({verdict['sol_ms']:.1f} ms): no SVG2 setting here is as fast")
        else:
            lines.append(f"vs {verdict['sol_attn']} ({verdict['sol_ms']:.1f} ms, error {verdict['sol_error']:.3f}): "
                         f"{verdict['svg2']} {verdict['svg2_ms']:.1f} ms, error {verdict['svg2_error']:.3f}, "
                         f"at most half: {verdict['svg2_error_at_most_half']}")
    profile = result.get("profile")
    if profile:
        lines.append(f"-- profile (top_p {profile['top_p']}): svg2_attention warm, node layout "
                     f"{profile['public_call_node_layout_ms']:.2f} ms, contiguous "
                     f"{profile['public_call_contiguous_ms']:.2f} ms")
        if "kmeans_stage_ms" in profile:
            lines.append("   one Lloyd step: " + ", ".join(f"{key} {ms:.3f}" for key, ms in profile["kmeans_stage_ms"].items())
                         + " ms")
        lines.append(f"   {'kernel / op of one call':90} {'calls':>6} {'total ms':>9}")
        for kernel in profile["kernels"]:
            lines.append(f"   {kernel['name']:90} {kernel['calls']:6d} {kernel['total_ms']:9.3f}")
    return "\n".join(lines)


def _environment(device: torch.device) -> dict:
    info = {"device": "cpu", "torch": torch.__version__}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        info["device"] = torch.cuda.get_device_name(device)
        info["capability"] = list(torch.cuda.get_device_capability(device))
        from .gpu_classes import gpu_class
        info["gpu_class"] = gpu_class(device).describe()
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description=__doc__.split("\n\n")[0],
        epilog="Shapes (batch, heads, (frames, rows, cols), head_dim, text tokens): " + "; ".join(
            f"{name} {shape}" for name, shape in MODEL_SHAPES.items()),
)
    parser.add_argument("--shape", nargs="+", choices=list(MODEL_SHAPES), metavar="SHAPE",
                        help=f"model shapes to run ({', '.join(MODEL_SHAPES)}); default: small on a GPU, tiny on the CPU")
    parser.add_argument("--top-p", type=float, nargs="*", default=[0.9],
                        help="SVG2 top_p values, one row each (default 0.9; give none to run only --density targets)")
    parser.add_argument("--density", type=float, nargs="*", default=[],
                        help="also run at the top_p (found by bisection) whose mean density is closest to each")
    parser.add_argument("--locality", type=float, default=1.0,
                        help="synthetic inputs: weight of the nearby-token term of the logits (default 1.0)")
    parser.add_argument("--semantic", type=float, default=1.0,
                        help="synthetic inputs: weight of the same-object term of the logits (default 1.0)")
    parser.add_argument("--peakedness", type=float, default=4.0,
                        help="synthetic inputs: scale of all logits; higher is more peaked attention, so lower density "
                             "at a given top_p (default 4.0)")
    parser.add_argument("--q-clusters", type=int, default=None, help="query clusters; default 300 (tiny: 16)")
    parser.add_argument("--k-clusters", type=int, default=None, help="key clusters; default 1000 (tiny: 48)")
    parser.add_argument("--cold-iters", type=int, default=SVG2Config().kmeans_init_iters,
                        help="Lloyd steps of the cold k-means from grid seeds, as a call without cached centroids runs "
                             "(default: SVG2Config's kmeans_init_iters, %(default)s; at most 10 on the CPU)")
    parser.add_argument("--min-k-cluster-ratio", type=float, default=0.10,
                        help="each query cluster keeps at least this share of the key clusters (the node's "
                             "min_k_cluster_ratio; default 0.10)")
    parser.add_argument("--rows-per-head", type=int, default=256, help="sampled query rows per head for error and recall (default 256)")
    parser.add_argument("--qk", choices=["int8", "input"], default="int8",
                        help="attention scores from int8 codes of q and k (the node's default) or in the input dtype")
    parser.add_argument("--backend", choices=["triton", "torch"], default=None,
                        help="SVG2 implementation: the Triton fast path or the torch reference; default triton on a GPU, "
                             "torch on the CPU (triton there needs TRITON_INTERPRET=1)")
    parser.add_argument("--sol-tau", type=float, nargs="*", default=[0.5, 1.0, 2.0],
                        help="routing thresholds for comfy-kitchen's sol_attn, rows only where it is installed "
                             "(default 0.5 1.0 2.0; give none to skip it)")
    parser.add_argument("--profile", action="store_true",
                        help="per stage: one Lloyd step split into its launches (fast path), the public "
                             "svg2_attention call in the node's layout and contiguous, and the profiler's "
                             "kernels of one call")
    parser.add_argument("--profile-rows", type=int, default=14, help="kernels listed per --profile table (default 14)")
    parser.add_argument("--gpu-class", metavar="CAPABILITY",
                        help="tile selection acts as this GPU class (e.g. 8.6, 8.9, 12.0; sets SVG2_GPU_CLASS): "
                             "that class's tiles, fp8 and P V accumulation on this GPU (default: the GPU's own)")
    parser.add_argument("--pv-accumulate", choices=["auto", "fp16", "fp32"], default="auto",
                        help="P V accumulation of the Triton kernel per key tile: the GPU class's choice (auto, "
                             "fp16 on 8.6 / 8.9 / 12.0), or forced")
    parser.add_argument("--json", metavar="PATH", help="also write the results (and the environment) here as JSON")
    parser.add_argument("--quiet", action="store_true", help="print no legend")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.gpu_class:
        from .gpu_classes import ENV_VAR, parse_arch
        try:
            os.environ[ENV_VAR] = str(parse_arch(args.gpu_class) / 10)
        except ValueError as error:
            parser.error(str(error))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = args.shape or (["small"] if device.type == "cuda" else ["tiny"])
    timer = _timer(device)
    args.backend = args.backend or ("triton" if device.type == "cuda" else "torch")
    environment = _environment(device)
    log.info("%s; torch %s, triton %s, commit %s", environment["device"], environment["torch"],
             environment["triton"], environment["commit"])
    if device.type == "cpu":
        log.info("%s", CPU_NOTE)
    results = []
    for name in shapes:
        tiny = name == "tiny"
        shape_args = argparse.Namespace(**vars(args))
        shape_args.q_clusters = args.q_clusters or (16 if tiny else 300)
        shape_args.k_clusters = args.k_clusters or (48 if tiny else 1000)
        if device.type == "cpu":
            shape_args.cold_iters = min(args.cold_iters, 10)
        result = run_shape(name, shape_args, timer, device)
        log.info("%s", format_table(result))
        results.append(result)
    if not args.quiet:
        log.info("%s", LEGEND)
    if args.json:
        payload = dict(environment, args=vars(args), results=results)
        if device.type == "cpu":
            payload["note"] = CPU_NOTE
        with open(args.json, "w") as handle:
            json.dump(payload, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
