"""`python -m svg2_core.bench`: SVG2 against dense SDPA and a positional block-sparse baseline.

Inputs come from svg2_core.synthetic (structured video tokens). On a GPU the Triton fast path is timed
per stage with triton.testing.do_bench (median ms); without one the torch reference runs a tiny shape.
Errors and recall are measured on sampled query rows against fp32 attention of the same bf16 inputs.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import time

import torch
import torch.nn.functional as F

from .backends import ClusterPlan, TorchBackend
from .config import SVG2Config
from .kmeans import sample_initial_centroids
from .layout import block_of_tokens
from .synthetic import MODEL_SHAPES, structured_qkv

log = logging.getLogger("svg2.bench")


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
    """Each available SDPA backend: name, ms or the reason it is unavailable. q, k, v: [B, H, N, D]."""
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
    best = min(timed, key=lambda row: row["ms"])
    best["best"] = True
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


def sol_attn_rows(q4, k4, v4, dense_suffix: int, taus, timer, quality_of) -> list[dict]:
    """comfy-kitchen's `sol_attn` (the sparse attention ComfyUI ships) at each routing threshold `tau`:
    time and error against dense. q4, k4, v4: [B, H, N, D]; text tokens (dense_suffix) are its sinks."""
    try:
        import comfy_kitchen
    except ImportError:
        return [{"method": "comfy-kitchen sol_attn", "ms": None, "note": "comfy-kitchen is not importable here"}]
    if not comfy_kitchen.sol_attn_is_available(q4.device):
        return [{"method": "comfy-kitchen sol_attn", "ms": None, "note": "sol_attn kernels unavailable here"}]
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
    return rows


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
              "qk": args.qk, "rows": []}
    qk_int8 = args.qk == "int8"
    result["rows"] += dense_backends(q4, k4, v4, timer)
    best_dense = min(row["ms"] for row in result["rows"] if row["ms"] is not None)

    if args.backend == "triton":
        from .triton_backend import TritonBackend
        from .triton_kernels.permute import gather_key_values
        from .triton_kernels.attention import AttentionConfig
        from .triton_kernels.quantize import quantize_keys, quantize_queries
        configs = [AttentionConfig.parse(text) for text in args.configs] or [None]
        backends = [TritonBackend(config) for config in configs]
    else:
        backends = [TorchBackend()]
    backend = backends[0]
    clustered = slice(0, num_tokens - dense_suffix)
    q_points, k_points = q[:, clustered], k[:, clustered]
    generator = torch.Generator(device=device).manual_seed(0)
    q_init = sample_initial_centroids(q_points, args.q_clusters, generator)
    k_init = sample_initial_centroids(k_points, args.k_clusters, generator)

    def cold():
        return backend.kmeans(q_points, q_init, args.cold_iters), backend.kmeans(k_points, k_init, args.cold_iters)

    q_cold, k_cold = cold()  # compiles, and gives the warm-start centroids
    result["kmeans_cold_ms"] = timer(cold) if device.type == "cuda" else None
    q_warm_init, k_warm_init = q_cold.centroids, k_cold.centroids

    def warm(overlap=True):
        return backend.cluster(q_points, q_warm_init, k_points, k_warm_init, 2, overlap)

    q_clusters, k_clusters = warm()
    kmeans_ms = timer(warm)  # as a warm call runs them: overlapped where the backend can
    result["kmeans_warm2_ms"] = kmeans_ms
    result["kmeans_warm2_one_after_other_ms"] = timer(lambda: warm(overlap=False))
    if args.backend == "triton":
        from .triton_kernels.kmeans import assign_to_nearest, sort_by_label, update_centroids

        sorted_points, offsets = sort_by_label(k_clusters.labels, args.k_clusters)
        result["kmeans_stage_ms"] = {
            "assign_q": timer(lambda: assign_to_nearest(q_points, q_warm_init)),
            "assign_k": timer(lambda: assign_to_nearest(k_points, k_warm_init)),
            "sort_k": timer(lambda: sort_by_label(k_clusters.labels, args.k_clusters)),
            "update_k": timer(lambda: update_centroids(k_points, sorted_points, offsets, k_warm_init))}
        from .triton_kernels.kmeans import _assign_kernel

        result["kmeans_assign_configs"] = {str(key): str(config) for key, config in getattr(_assign_kernel, "cache", {}).items()}
    log.debug("%s: dense %s; k-means cold %s ms, warm x2 %.2f ms, stages %s", name, result["rows"],
             result["kmeans_cold_ms"], kmeans_ms, result.get("kmeans_stage_ms"))
    # the node's rule (and its range check) for the floor on kept key clusters
    min_kept = SVG2Config(num_k_clusters=args.k_clusters,
                          min_k_cluster_ratio=args.min_k_cluster_ratio).min_kept_k_clusters

    def block_mask_for(qc, kc, p):
        return backend.select_blocks(qc.centroids, kc.centroids, kc.cluster_sizes, p, min_kept, scale)

    def plan_for(qc, kc, p):
        return ClusterPlan(qc.labels, kc.labels, qc.cluster_sizes, kc.cluster_sizes, block_mask_for(qc, kc, p),
                           0, dense_suffix)

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
        row = {"method": f"SVG2 top_p={top_p}", "density": float(density.mean()), "kmeans_warm2_ms": kmeans_ms,
               "block_map_ms": timer(lambda p=top_p: block_mask_for(q_clusters, k_clusters, p))}
        out = backend.sparse_attention(q, k, v, plan, scale, qk_int8)
        if backend.name == "triton":
            launch = backend.plan_launch(plan, num_tokens, head_dim)
            row["plan_ms"] = timer(lambda: backend.plan_launch(plan, num_tokens, head_dim))
            row["permute_ms"] = (timer(lambda: gather_key_values(k, v, launch.k_rows))
                                 if backend.config_for(head_dim).sorted_keys else 0.0)
            kernels = {}
            for candidate in backends:
                candidate_launch = candidate.plan_launch(plan, num_tokens, head_dim)
                k_source, v_source = candidate.key_source(k, v, candidate_launch)
                label = candidate.config_for(head_dim, qk_int8).label()
                kernels[label] = timer(lambda c=candidate, cl=candidate_launch, ks=k_source, vs=v_source: c.run_launch(
                    q, ks, vs, cl, scale, qk_int8))
            row["kernel_ms_by_config"] = kernels
            row["kernel_ms"] = min(kernels.values())  # int8 coding of q and k, row tables, attention
            row["unpermute_ms"] = 0.0  # fused: the kernel stores each row at its original position
            if qk_int8:  # the part of the kernel stage that codes q and k
                row["kernel_coding_ms"] = timer(lambda: (quantize_queries(q), quantize_keys(k)))

            def whole_call(p=top_p):
                qc, kc = backend.cluster(q_points, q_warm_init, k_points, k_warm_init, 2, overlap=True)
                return backend.sparse_attention(q, k, v, plan_for(qc, kc, p), scale, qk_int8)
            row["total_ms"] = timer(whole_call)
            row["speedup_vs_best_dense"] = best_dense / row["total_ms"]
            row["kernel_vs_density_x_dense"] = row["kernel_ms"] / (row["density"] * best_dense)
        else:
            row["total_ms"] = timer(lambda: backend.sparse_attention(q, k, v, plan, scale, qk_int8)) + kmeans_ms
        base = positional_plan(q, k, density, scale)
        base_density = base.density()
        base_row = {"method": f"positional 128x64 blocks @ SVG2 top_p={top_p}", "density": float(base_density.mean())}
        base_out = backend.sparse_attention(q, k, v, base, scale, qk_int8)
        if backend.name == "triton":
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

    result["rows"] += sol_attn_rows(q4, k4, v4, dense_suffix, args.sol_tau, timer, error_vs_dense)
    result["svg2_vs_sol_attn"] = compare_with_sol_attn(result["rows"])
    return result


def format_table(result: dict) -> str:
    lines = [f"== {result['shape']} {tuple(result['bhnd'])} dense_suffix={result['dense_suffix']} "
             f"clusters {result['num_q_clusters']}/{result['num_k_clusters']}; QK {result['qk']}; k-means warm x2 "
             f"{result['kmeans_warm2_ms']:.2f} ms (one after the other {result['kmeans_warm2_one_after_other_ms']:.2f}), "
             f"cold x50 {result.get('kmeans_cold_ms') or float('nan'):.1f} ms"]
    header = f"{'method':46} {'ms':>8} {'density':>8} {'err/dense':>9} {'recall':>7} {'err/orc':>8} {'torch':>8}  stages"
    lines.append(header)
    for row in result["rows"]:
        ms = row.get("total_ms", row.get("kernel_ms", row.get("ms")))
        name = row["method"] + (" (best)" if row.get("best") else "")
        cells = [f"{name:46}", f"{ms:8.2f}" if ms is not None else f"{'-':>8}"]
        for key, width, fmt in (("density", 8, ".3f"), ("error_vs_dense", 9, ".4f"), ("recall", 7, ".3f"),
                                ("error_vs_oracle", 8, ".4f"), ("torch_lowp_error_vs_oracle", 8, ".4f")):
            cells.append(f"{row[key]:{width}{fmt}}" if key in row else f"{'':{width}}")
        stages = ", ".join(f"{key[:-3]} {row[key]:.2f}" for key in ("kmeans_warm2_ms", "block_map_ms", "plan_ms",
                                                                      "permute_ms", "kernel_ms", "kernel_coding_ms",
                                                                      "unpermute_ms")
                           if key in row and "total_ms" in row)
        lines.append(" ".join(cells) + "  " + (stages or row.get("note", "")))
    for verdict in result.get("svg2_vs_sol_attn", []):
        if verdict["svg2"] is None:
            lines.append(f"vs {verdict['sol_attn']} ({verdict['sol_ms']:.1f} ms): no SVG2 setting here is as fast")
        else:
            lines.append(f"vs {verdict['sol_attn']} ({verdict['sol_ms']:.1f} ms, error {verdict['sol_error']:.3f}): "
                         f"{verdict['svg2']} {verdict['svg2_ms']:.1f} ms, error {verdict['svg2_error']:.3f}, "
                         f"at most half: {verdict['svg2_error_at_most_half']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", choices=sorted(MODEL_SHAPES), help="default: small on a GPU, tiny on CPU")
    parser.add_argument("--top-p", type=float, nargs="*", default=[0.9])
    parser.add_argument("--density", type=float, nargs="*", default=[],
                        help="also run at the top_p (found by bisection) whose mean density is closest to each")
    parser.add_argument("--locality", type=float, default=1.0)
    parser.add_argument("--semantic", type=float, default=1.0)
    parser.add_argument("--peakedness", type=float, default=4.0)
    parser.add_argument("--q-clusters", type=int, default=None, help="default 300 (tiny: 16)")
    parser.add_argument("--k-clusters", type=int, default=None, help="default 1000 (tiny: 48)")
    parser.add_argument("--cold-iters", type=int, default=50)
    parser.add_argument("--min-k-cluster-ratio", type=float, default=0.10,
                        help="each query cluster keeps at least this share of the key clusters (the node's "
                             "min_k_cluster_ratio; 0.10 is the official default)")
    parser.add_argument("--rows-per-head", type=int, default=256, help="sampled query rows for error / recall")
    parser.add_argument("--configs", nargs="*", default=[],
                        help="kernel configs BMxBNxWARPSxSTAGES[-rRMxRW][-s][-u] (AttentionConfig.parse); the first "
                             "runs the whole call, each one's kernel time is reported")
    parser.add_argument("--sol-tau", type=float, nargs="*", default=[0.5, 1.0, 2.0],
                        help="routing thresholds for comfy-kitchen's sol_attn, when it is importable")
    parser.add_argument("--backend", choices=["triton", "torch"], default=None,
                        help="default: triton on a GPU, torch on the CPU (triton there needs TRITON_INTERPRET=1)")
    parser.add_argument("--qk", choices=["int8", "input"], default="int8",
                        help="attention scores from int8 codes of q and k (the node's default) or in the input dtype")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = args.shape or (["small"] if device.type == "cuda" else ["tiny"])
    timer = _timer(device)
    args.backend = args.backend or ("triton" if device.type == "cuda" else "torch")
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
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                       "torch": torch.__version__, "args": vars(args), "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
