"""Triton kernels of the SVG2 fast path: k-means (assign, update), launch metadata, sparse attention.

Every kernel works on G = batch x heads independent problems; wrappers take `[G, N, D]` tensors.
"""
import os


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


_SIDE_STREAMS: dict = {}


def side_stream(device):
    """A second CUDA stream of `device` (one per device, made on first use) for work that overlaps the
    caller's stream; callers order it with wait_stream / events, never with a host synchronisation."""
    import torch

    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _SIDE_STREAMS[index]
