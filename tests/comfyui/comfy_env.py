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
# Other native video models (issue 4: served, or passed through unchanged with a reason), built from
# ComfyUI's own model configs: name -> (unet_config, latent channels, text width, loaded by UNETLoader).
# UNETLoader detects LTX-Video (head_dim = width/32, 32 heads), Wan VACE and Cosmos Predict2 (a width other
# than 2048/5120 gets MiniTrainDIT's defaults: 10 blocks, 16 heads). Detection hard-codes Cosmos-1 to its
# 7B/14B sizes and Mochi to 48 blocks of 3072, so those two are built directly and wrapped in a
# ModelPatcher (Mochi's block asserts an MLP of exactly 1536 * 8 = 256 * 48).
OTHER_MODELS = {
    "ltxv": (dict(image_model="ltxv", num_layers=2, attention_head_dim=8, cross_attention_dim=256), 128, 4096, True),
    "wan21_vace": (dict(image_model="wan2.1", model_type="vace", in_dim=16, dim=256, ffn_dim=512, out_dim=16,
                        num_heads=2, num_layers=4, vace_layers=2, vace_in_dim=96), 16, 4096, True),
    "cosmos_predict2": (dict(image_model="cosmos_predict2", max_img_h=240, max_img_w=240, max_frames=128,
                             in_channels=16, out_channels=16, patch_spatial=2, patch_temporal=1,
                             model_channels=256, concat_padding_mask=True, crossattn_emb_channels=1024,
                             pos_emb_cls="rope3d", pos_emb_learnable=True, pos_emb_interpolation="crop",
                             min_fps=1, max_fps=30, use_adaln_lora=True, adaln_lora_dim=256,
                             extra_per_block_abs_pos_emb=False, rope_h_extrapolation_ratio=4.0,
                             rope_w_extrapolation_ratio=4.0, rope_t_extrapolation_ratio=1.0), 16, 1024, True),
    "cosmos1": (dict(image_model="cosmos", max_img_h=240, max_img_w=240, max_frames=128, in_channels=16,
                     out_channels=16, patch_spatial=2, patch_temporal=1, concat_padding_mask=True,
                     block_config="FA-CA-MLP", model_channels=256, num_blocks=2, num_heads=2,
                     block_x_format="THWBD", crossattn_emb_channels=1024, pos_emb_cls="rope3d",
                     pos_emb_learnable=False, pos_emb_interpolation="crop", affline_emb_norm=True,
                     use_adaln_lora=True, adaln_lora_dim=256, extra_per_block_abs_pos_emb=True,
                     extra_per_block_abs_pos_emb_type="learnable"), 16, 1024, False),
    "mochi": (dict(image_model="mochi_preview", depth=2, patch_size=2, num_heads=2, hidden_size_x=256,
                   hidden_size_y=128, mlp_ratio_x=48.0, mlp_ratio_y=4.0, learn_sigma=False, in_channels=12,
                   qk_norm=True, qkv_bias=False, out_bias=True, attn_drop=0.0, patch_embed_bias=True,
                   posenc_preserve_area=True, timestep_mlp_bias=True, attend_to_padding=False,
                   timestep_scale=1000.0, use_t5=True, t5_feat_dim=4096, t5_token_length=256,
                   rope_theta=10000.0), 12, 4096, False),
}
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


def patch_node(node, monkeypatch, *settings: dict) -> list[tuple]:
    """node().patch(...) once per settings dict on a model stub, with the pack's SVG2Patch replaced by a
    recorder: the (config, schedule) each call built, in order (no ComfyUI needed)."""
    import types

    svg2_patch = sys.modules[node.__module__]
    built = []

    class RecordingPatch:
        def __init__(self, config, schedule, *args):
            built.append((config, schedule))

        def install(self, model_patcher):
            pass

    monkeypatch.setattr(svg2_patch, "SVG2Patch", RecordingPatch)
    model = types.SimpleNamespace(clone=lambda: types.SimpleNamespace(model_options={}))
    for values in settings:
        node().patch(model, **values)
    return built


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


def build_other_model(name: str, seed: int = 0):
    """A tiny random-weight `BaseModel` of an OTHER_MODELS entry, made by ComfyUI's own model config."""
    import comfy.model_detection

    unet_config = dict(OTHER_MODELS[name][0])
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    assert model_config is not None, f"ComfyUI has no model config for {unet_config}"
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    generator = torch.Generator().manual_seed(seed)
    # comfy ops allocate parameters with torch.empty: overwrite each one (buffers are computed, keep them).
    with torch.no_grad():
        for parameter in model.diffusion_model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
    return model


def build_other_checkpoint(name: str, directory: Path, seed: int = 0) -> Path:
    """build_other_model's diffusion model saved as safetensors in `directory` (for UNETLoader)."""
    from safetensors.torch import save_file

    state = {key: value.contiguous() for key, value in
             build_other_model(name, seed).diffusion_model.state_dict().items()}
    path = directory / f"svg2_tiny_{name}.safetensors"
    save_file(state, str(path))
    return path


def other_model_patcher(name: str, seed: int = 0):
    """build_other_model wrapped in a ModelPatcher on ComfyUI's devices, the way its loader does."""
    import comfy.model_management
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(build_other_model(name, seed),
                                           load_device=comfy.model_management.get_torch_device(),
                                           offload_device=comfy.model_management.unet_offload_device())


def _version_kwargs(module_name: str) -> dict:
    """Constructor arguments that only later ComfyUI versions have."""
    if not module_name.endswith("hunyuan_video.model"):
        return {}
    fields = getattr(importlib.import_module(module_name).HunyuanVideoParams, "__dataclass_fields__", {})
    later = {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}
    return {key: value for key, value in later.items() if key in fields}


def conditioning(name: str, tokens: int, seed: int):
    """Conditioning without a text encoder: random embeddings as wide as the model's text input
    (4096 unless OTHER_MODELS says otherwise) plus what the model needs."""
    generator = torch.Generator().manual_seed(seed)
    extras = {}
    width = OTHER_MODELS[name][2] if name in OTHER_MODELS else 4096
    if name == "hunyuan_video":
        extras["pooled_output"] = torch.randn(1, 768, generator=generator)
        extras["guidance"] = 6.0
    if name in ("ltxv", "mochi"):  # their T5 conditioning carries the token mask
        extras["attention_mask"] = torch.ones(1, tokens, dtype=torch.long)
    if name == "wan21_i2v":
        extras["clip_vision_output"] = _ClipVisionOutput(torch.randn(1, 257, 1280, generator=generator))
    return [[torch.randn(1, tokens, width, generator=generator), extras]]


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
    channels = OTHER_MODELS[name][1] if name in OTHER_MODELS else TINY_MODELS[name][2]
    return {"samples": torch.zeros(batch, channels, LATENT_FRAMES, LATENT_HEIGHT, LATENT_WIDTH)}
