"""What coding q and k to int8 costs per call (the two passes before the int8 sparse kernel), per shape.

    python3 benchmarks/int8_overhead.py --shape wan21-1.3b-480p wan21-14b-720p
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from svg2_core.synthetic import MODEL_SHAPES, structured_qkv  # noqa: E402
from svg2_core.triton_kernels.quantize import quantize_keys, quantize_queries  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", default=["wan21-1.3b-480p", "wan21-14b-720p"])
    args = parser.parse_args(argv)
    for name in args.shape:
        batch, heads, grid, head_dim, dense_suffix = MODEL_SHAPES[name]
        q, k, _ = structured_qkv(batch, heads, grid, head_dim, dense_suffix=dense_suffix, device="cuda",
                                 dtype=torch.bfloat16)
        times = {label: triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median")
                 for label, fn in (("queries", lambda: quantize_queries(q)), ("keys", lambda: quantize_keys(k)),
                                   ("copy of q (memory-bound yardstick)", lambda: q.clone()))}
        print(f"{name} {tuple(q.shape)}: " + ", ".join(f"{label} {ms:.3f} ms" for label, ms in times.items()),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
