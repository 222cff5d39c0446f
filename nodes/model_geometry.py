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
    follow the double blocks); inner_dim: heads x head_dim of its self-attention (0 when unknown);
    heads: attention heads (0 when unknown); layers: self-attention calls per forward (0 when unknown)."""

    family: str
    patch_size: tuple[int, int, int]
    text_position: str | None
    layer_offsets: dict
    inner_dim: int = 0
    heads: int = 0
    layers: int = 0

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
    heads = int(getattr(diffusion_model, "num_heads", 0) or 0)
    if family == WAN:
        layers = len(getattr(diffusion_model, "blocks", None) or []) + len(getattr(diffusion_model, "vace_blocks", None) or [])
        return ModelGeometry(WAN, patch_size, None, {}, inner_dim, heads, layers)
    double_blocks = getattr(diffusion_model, "double_blocks", None) or []
    single_blocks = getattr(diffusion_model, "single_blocks", None) or []
    # ComfyUI 0.3.x concatenates [video, text] ("flipped"); later versions [text, video].
    text_last = bool(double_blocks) and getattr(double_blocks[0], "flipped_img_txt", False)
    return ModelGeometry(HUNYUAN_VIDEO, patch_size, "suffix" if text_last else "prefix",
                         {"double": 0, "single": len(double_blocks)}, inner_dim, heads,
                         len(double_blocks) + len(single_blocks))


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


# The share of the GPU's memory SVG2 may hold for a run (centroid cache + one call's buffers); a run whose
# settings need more stays dense, with the numbers in the reason and a warning.
MEMORY_SHARE = 0.5
CENTROID_BYTES = 4  # fp32
GIB = 1024 ** 3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes SVG2 holds for a sampling run. centroid_cache: fp32 q and k centroids of every self-attention
    layer, CFG branch, batch element and head, kept from step to step (layers x branches x batch x heads x
    (Cq + Ck) x D x 4 B); per_call: one sparse call's buffers beyond dense attention (freed after the call)."""

    centroid_cache: int
    per_call: int

    @property
    def total(self) -> int:
        return self.centroid_cache + self.per_call

    def describe(self) -> str:
        return (f"{self.total / GIB:.1f} GiB ({self.centroid_cache / GIB:.1f} GiB centroid cache for the run + "
                f"{self.per_call / GIB:.1f} GiB per call)")


def memory_estimate(geometry: ModelGeometry, latent_shape, branches: int, num_q_clusters: int, num_k_clusters: int,
                    dtype_size: int = 2) -> MemoryEstimate | None:
    """What SVG2 holds for a run on a `[B, C, T, H, W]` latent with `branches` CFG branches (cond, uncond), or
    None when the model's heads / layers are unknown.

    Per call: the extra activations (SVG2_EXTRA_ACTIVATIONS q-sized buffers), the kernel's row table beyond
    that bound where one problem's table ([Cq + 2, N] int32) is larger, and the k-means buffers (initial and
    updated centroids, fp32; labels and sort keys of q and k, int32)."""
    if not (geometry.inner_dim and geometry.heads and geometry.layers):
        return None
    batch = int(latent_shape[0])
    heads, head_dim = geometry.heads, geometry.inner_dim // geometry.heads
    tokens = geometry.video_tokens(latent_shape)
    clusters = num_q_clusters + num_k_clusters
    cache = geometry.layers * branches * batch * heads * clusters * head_dim * CENTROID_BYTES
    problems = batch * heads
    q_bytes = problems * tokens * head_dim * dtype_size
    activations = SVG2_EXTRA_ACTIVATIONS * q_bytes
    table_beyond = max(0, (num_q_clusters + 2) * tokens * 4 - 3 * q_bytes)
    kmeans = problems * (2 * clusters * head_dim * CENTROID_BYTES + 4 * tokens * 4)
    return MemoryEstimate(cache, activations + table_beyond + kmeans)


def memory_refusal(estimate: MemoryEstimate | None, total_memory: int | None, share: float = MEMORY_SHARE) -> str | None:
    """Why a run must stay dense: its estimate is over `share` of the GPU's `total_memory` bytes; else None."""
    if estimate is None or not total_memory or estimate.total <= share * total_memory:
        return None
    return (f"SVG2 would hold {estimate.describe()}, over {share:.0%} of the GPU's {total_memory / GIB:.1f} GiB: "
            "lower num_q_clusters / num_k_clusters, the resolution or the frame count")


def centroid_cache_factor_increase(geometry: ModelGeometry, latent_shape, branches: int, num_q_clusters: int,
                                   num_k_clusters: int, dtype_size: int) -> float:
    """The centroid cache as an addition to `memory_usage_factor` for a run on `latent_shape`: ComfyUI's
    `memory_required` counts dtype_size x 0.01 x factor MiB per element of B x T x H x W, so the run's whole
    cache (every branch) is spread over one batch element's T x H x W."""
    estimate = memory_estimate(geometry, latent_shape, branches, num_q_clusters, num_k_clusters, dtype_size)
    if estimate is None:
        return 0.0
    area = int(latent_shape[0]) * math.prod(int(size) for size in latent_shape[2:])
    return estimate.centroid_cache / (area * dtype_size * 0.01 * 1024 * 1024)
