"""Where the time of one `svg2_attention` call goes, as the ComfyUI node makes it.

Times the public call on the node's layout (q, k, v transposed views of [B, L, H*D]) and on contiguous
[B, H, N, D], and prints the CUDA kernels of one call from torch.profiler. Inputs: `flat` (i.i.d. normal q, k,
like a random-weight model) or `structured` (svg2_core.synthetic).

    python benchmarks/call_profile.py --shape wan21-14b-720p --batch 2 --top-p 0.3 --inputs flat structured
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from svg2_core import SVG2Config, SVG2State, svg2_attention  # noqa: E402
from svg2_core.synthetic import MODEL_SHAPES, structured_qkv  # noqa: E402


def make_inputs(kind: str, batch: int, heads: int, grid, head_dim: int):
    """q, k, v as the node receives them: [B, H, N, D] views of [B, N, H*D] tensors."""
    if kind == "structured":
        q, k, v = structured_qkv(batch, heads, grid, head_dim, device="cuda")
        return [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v)]
    num_tokens = grid[0] * grid[1] * grid[2]
    generator = torch.Generator(device="cuda").manual_seed(0)
    flat = [torch.randn(batch, num_tokens, heads, head_dim, generator=generator, device="cuda",
                        dtype=torch.bfloat16) for _ in range(3)]
    return [x.transpose(1, 2) for x in flat]


def main() -> int:
    import triton.testing

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="wan21-14b-720p", choices=sorted(MODEL_SHAPES))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--top-p", type=float, default=0.3)
    parser.add_argument("--inputs", nargs="+", default=["flat", "structured"])
    parser.add_argument("--row-limit", type=int, default=14, help="CUDA kernels listed per profile")
    parser.add_argument("--qk", choices=["int8", "input"], default="int8", help="int8 scores (the node's default) or not")
    args = parser.parse_args()
    _, heads, grid, head_dim, _ = MODEL_SHAPES[args.shape]
    config = SVG2Config(top_p=args.top_p, qk_int8=args.qk == "int8")
    for kind in args.inputs:
        q, k, v = make_inputs(kind, args.batch, heads, grid, head_dim)
        state = SVG2State()
        _, info = svg2_attention(q, k, v, config, state=state, cache_key=0, return_info=True)  # cold start

        def call(q=q, k=k, v=v, state=state):
            return svg2_attention(q, k, v, config, state=state, cache_key=0, return_info=True)

        contiguous = [x.contiguous() for x in (q, k, v)]
        dense = torch.nn.functional.scaled_dot_product_attention
        print(f"== {kind} {args.shape} batch {args.batch} top_p {args.top_p}: density "
              f"{float(info.density.mean()):.3f}, q cluster sizes min/median/max "
              f"{int(info.q_cluster_sizes.min())}/{int(info.q_cluster_sizes.float().median())}/"
              f"{int(info.q_cluster_sizes.max())}, kept key clusters per row mean "
              f"{float(info.block_mask.float().sum(-1).mean()):.1f}")
        print(f"svg2_attention (node layout) {triton.testing.do_bench(call, return_mode='median'):.2f} ms; "
              f"contiguous {triton.testing.do_bench(lambda: svg2_attention(*contiguous, config, state=state, cache_key=0), return_mode='median'):.2f} ms; "
              f"default SDPA {triton.testing.do_bench(lambda: dense(*contiguous), return_mode='median'):.2f} ms")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
            call()
            torch.cuda.synchronize()
        print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=args.row_limit, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
