"""Sparse VideoGen2 attention for video diffusion transformers: plain torch + Triton, no ComfyUI.

Public API: `SVG2Config`, `SVG2State`, `svg2_attention` (q, k, v: [B, H, N, D]) and `SVG2Info`; a failing fast
path raises `FastPathError` (`FastPathOutOfResources` when a launch needs more shared memory than the GPU has).
"""
from .api import SVG2Info, svg2_attention
from .backends import FastPathError, FastPathOutOfResources
from .config import SVG2Config
from .state import SVG2State

__all__ = ["SVG2Config", "SVG2State", "SVG2Info", "svg2_attention", "FastPathError", "FastPathOutOfResources"]
