"""Token geometry of ComfyUI's native video DiTs, read once per forward from the latent shape.

A latent is `[B, C, T, H, W]`; a model patchifies it into `ceil(T/pt) * ceil(H/ph) * ceil(W/pw)` video
tokens, ordered frame-major. Wan's self-attention sees only video tokens; HunyuanVideo's joint attention
sees video and text tokens, text last (ComfyUI 0.3.x) or first (later ComfyUI).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

WAN = "wan"
HUNYUAN_VIDEO = "hunyuan_video"


@dataclass(frozen=True)
class ModelGeometry:
    """family: WAN or HUNYUAN_VIDEO; patch_size: (pt, ph, pw);
    text_position: None (no text in self-attention), "prefix" or "suffix" (joint text tokens);
    layer_offsets: block_type -> global index of that type's first block (HunyuanVideo: single blocks
    follow the double blocks); inner_dim: heads x head_dim of its self-attention (0 when unknown)."""

    family: str
    patch_size: tuple[int, int, int]
    text_position: str | None
    layer_offsets: dict
    inner_dim: int = 0

    def video_tokens(self, latent_shape) -> int:
        """Tokens one `[B, C, T, H, W]` latent becomes (patch padding rounds up)."""
        frames, height, width = latent_shape[-3:]
        pt, ph, pw = self.patch_size
        return math.ceil(frames / pt) * math.ceil(height / ph) * math.ceil(width / pw)

    def global_layer(self, block_type, block_index: int) -> int:
        return self.layer_offsets.get(block_type, 0) + block_index


def _model_family(diffusion_model) -> str | None:
    module = type(diffusion_model).__module__
    if module.startswith("comfy.ldm.wan."):
        return WAN
    if module.startswith("comfy.ldm.hunyuan_video."):
        return HUNYUAN_VIDEO
    return None


def geometry_of(diffusion_model) -> ModelGeometry | str:
    """The geometry of a ComfyUI diffusion model, or why SVG2 does not serve it."""
    family = _model_family(diffusion_model)
    if family is None:
        return f"{type(diffusion_model).__name__} is not a Wan or HunyuanVideo model"
    patch_size = tuple(int(p) for p in getattr(diffusion_model, "patch_size", ()) or ())
    if len(patch_size) != 3:
        return f"{type(diffusion_model).__name__} has no 3-D patch size (image model?)"
    inner_dim = int(getattr(diffusion_model, "dim", 0) or getattr(diffusion_model, "hidden_size", 0) or 0)
    if family == WAN:
        return ModelGeometry(WAN, patch_size, None, {}, inner_dim)
    double_blocks = getattr(diffusion_model, "double_blocks", None) or []
    # ComfyUI 0.3.x concatenates [video, text] ("flipped"); later versions [text, video].
    text_last = bool(double_blocks) and getattr(double_blocks[0], "flipped_img_txt", False)
    return ModelGeometry(HUNYUAN_VIDEO, patch_size, "suffix" if text_last else "prefix",
                         {"double": 0, "single": len(double_blocks)}, inner_dim)


# What one sparse call holds beyond dense attention, in units of q's size: the kernel's key-row table
# (at most q + k + v, 3) and, with qk_int8 (the default), the int8 codes of q and k (half of each, 1).
# q, k, v are read in place and the output takes the place of dense attention's.
SVG2_EXTRA_ACTIVATIONS = 4


def memory_usage_factor_increase(geometry: ModelGeometry) -> float:
    """How much to add to a model's `memory_usage_factor` so that ComfyUI's `memory_required` (MiB per
    latent element: dtype_size x 0.01 x factor) also counts SVG2's extra activations.

    Per latent element a model has 1 / (pt x ph x pw) video tokens, each with inner_dim values per tensor
    in the same dtype, so dtype_size cancels."""
    if not geometry.inner_dim:
        return 0.0
    pt, ph, pw = geometry.patch_size
    return SVG2_EXTRA_ACTIVATIONS * geometry.inner_dim / (pt * ph * pw * 0.01 * 1024 * 1024)
