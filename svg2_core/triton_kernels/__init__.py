"""Triton kernels of the SVG2 fast path: k-means (assign, update), launch metadata, sparse attention.

Every kernel works on G = batch x heads independent problems; wrappers take `[G, N, D]` tensors.
"""
import os


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"
