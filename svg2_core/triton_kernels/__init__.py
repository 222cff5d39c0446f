"""Triton kernels of the SVG2 fast path: k-means (assign, update), launch metadata, sparse attention.

Every kernel works on G = batch x heads independent problems; wrappers take `[G, N, D]` tensors.
"""
import os

import torch


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


_SIDE_STREAMS: dict[int, torch.cuda.Stream] = {}

# Second-stream overlap only from this many rows (problems x tokens) on: on the H200 it took 0.3-0.5 ms off the
# two k-means at Wan 14B and HunyuanVideo (~3M rows), while at Wan 1.3B (0.4M rows) the call is bound by the
# host's launches and the overlapped k-means was slower in two of three runs (BENCHMARKS.md session 6).
OVERLAP_MIN_ROWS = 1_000_000


def overlap_pays(device: torch.device, rows: int) -> bool:
    """Whether work of `rows` rows on `device` should use the second stream (CUDA, large enough calls)."""
    return device.type == "cuda" and rows >= OVERLAP_MIN_ROWS


def side_stream(device: torch.device) -> torch.cuda.Stream:
    """A second CUDA stream of `device` (one per device, made on first use) for work that overlaps the
    caller's stream; callers order it with wait_stream / events, never with a host synchronisation."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _SIDE_STREAMS[index]
