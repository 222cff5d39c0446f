"""Real ComfyUI for the integration tests: import it in-process (CPU), load the pack, build tiny
random-weight checkpoints of ComfyUI's own video model classes and sample them with the real nodes.

Latents are `[B, C, T, H, W]`; the tiny models see 3 x 4 x 6 = 72 video tokens.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PACK_MODULE = "comfyui_svg2"

# name -> (class path, constructor kwargs, latent channels); shapes that ComfyUI's detection recognises.
TINY_MODELS = {
    "wan21_t2v": ("comfy.ldm.wan.model.WanModel",
                  dict(model_type="t2v", in_dim=16, dim=256, ffn_dim=512, out_dim=16, num_heads=2, num_layers=3), 16),
    "wan21_i2v": ("comfy.ldm.wan.model.WanModel",
                  dict(model_type="i2v", in_dim=36, dim=256, ffn_dim=512, out_dim=16, num_heads=2, num_layers=3), 16),
    "wan22_ti2v_5b": ("comfy.ldm.wan.model.WanModel",
                      dict(model_type="t2v", in_dim=48, dim=256, ffn_dim=512, out_dim=48, num_heads=2, num_layers=3), 48),
    "hunyuan_video": ("comfy.ldm.hunyuan_video.model.HunyuanVideo",
                      dict(in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=4096, hidden_size=256,
                           mlp_ratio=4.0, num_heads=2, depth=2, depth_single_blocks=2, axes_dim=[16, 56, 56],
                           theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False,
                           meanflow=False), 16),
}
# Self-attention calls per forward: Wan blocks; HunyuanVideo double + single blocks.
SELF_ATTENTION_LAYERS = {"wan21_t2v": 3, "wan21_i2v": 3, "wan22_ti2v_5b": 3, "hunyuan_video": 4}
LATENT_FRAMES, LATENT_HEIGHT, LATENT_WIDTH = 3, 8, 12
VIDEO_TOKENS = LATENT_FRAMES * (LATENT_HEIGHT // 2) * (LATENT_WIDTH // 2)


def comfyui_path() -> Path | None:
    path = os.environ.get("COMFYUI_PATH")
    return Path(path) if path else None


def import_comfyui(path: Path):
    """Import ComfyUI from `path` in CPU mode; returns its `nodes` module."""
    if "comfy.model_management" not in sys.modules:
        # ComfyUI's top-level `nodes` must win over this repo's `nodes/` package.
        if str(path) in sys.path:
            sys.path.remove(str(path))
        sys.path.insert(0, str(path))
        argv = sys.argv
        sys.argv = [argv[0], "--cpu"]
        try:
            import comfy.options
            comfy.options.enable_args_parsing()
            import comfy.model_management  # noqa: F401  (reads the arguments once)
        finally:
            sys.argv = argv
    import nodes
    return nodes


def load_pack():
    """The repo root imported as a package, the way ComfyUI loads a custom node folder."""
    if PACK_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_MODULE, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE] = module
        spec.loader.exec_module(module)
    return sys.modules[PACK_MODULE]


def build_checkpoint(name: str, directory: Path, seed: int = 0) -> Path:
    """A tiny random-weight state dict of the real class, saved as safetensors in `directory`."""
    import comfy.ops
    from safetensors.torch import save_file

    class_path, kwargs, _ = TINY_MODELS[name]
    module_name, class_name = class_path.rsplit(".", 1)
    model_class = getattr(importlib.import_module(module_name), class_name)
    kwargs = {**kwargs, **_version_kwargs(module_name)}
    model = model_class(**kwargs, operations=comfy.ops.manual_cast, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    # comfy ops allocate with torch.empty: overwrite every tensor.
    state = {key: (torch.randn(value.shape, generator=generator) * 0.02).contiguous()
             for key, value in model.state_dict().items()}
    path = directory / f"svg2_tiny_{name}.safetensors"
    save_file(state, str(path))
    return path


def _version_kwargs(module_name: str) -> dict:
    """Constructor arguments that only later ComfyUI versions have."""
    if not module_name.endswith("hunyuan_video.model"):
        return {}
    fields = getattr(importlib.import_module(module_name).HunyuanVideoParams, "__dataclass_fields__", {})
    later = {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}
    return {key: value for key, value in later.items() if key in fields}


def conditioning(name: str, tokens: int, seed: int):
    """Conditioning without a text encoder: random 4096-wide embeddings (+ what the model needs)."""
    generator = torch.Generator().manual_seed(seed)
    extras = {}
    if name == "hunyuan_video":
        extras["pooled_output"] = torch.randn(1, 768, generator=generator)
        extras["guidance"] = 6.0
    if name == "wan21_i2v":
        extras["clip_vision_output"] = _ClipVisionOutput(torch.randn(1, 257, 1280, generator=generator))
    return [[torch.randn(1, tokens, 4096, generator=generator), extras]]


class _ClipVisionOutput:
    """The one field Wan I2V reads from a CLIP vision output."""

    def __init__(self, penultimate_hidden_states: torch.Tensor) -> None:
        self.penultimate_hidden_states = penultimate_hidden_states


def sample(nodes, model, name: str, steps: int = 3, seed: int = 0, batch: int = 1,
           positive_tokens: int = 7, negative_tokens: int = 5, prompt_seed: int = 1) -> torch.Tensor:
    """The latent the real `common_ksampler` (KSampler's body) returns: euler, simple, cfg 3.

    Prompts of different lengths keep cond and uncond in separate forwards (two CFG branches)."""
    positive = conditioning(name, positive_tokens, prompt_seed)
    negative = conditioning(name, negative_tokens, prompt_seed + 1000)
    (latent,) = nodes.common_ksampler(model, seed, steps, 3.0, "euler", "simple", positive, negative,
                                      empty_latent(name, batch))
    return latent["samples"]


def empty_latent(name: str, batch: int = 1) -> dict:
    channels = TINY_MODELS[name][2]
    return {"samples": torch.zeros(batch, channels, LATENT_FRAMES, LATENT_HEIGHT, LATENT_WIDTH)}
