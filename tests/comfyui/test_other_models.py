"""Issue 4: native video models other than Wan T2V/I2V and HunyuanVideo either work with SVG2 or pass
through unchanged with a logged reason; never a crash.

Tiny random-weight models from ComfyUI's own configs (comfy_env.OTHER_MODELS): LTX-Video, Wan VACE and
Cosmos Predict2 saved as safetensors and detected by the real UNETLoader; Cosmos-1 and Mochi built
directly from ComfyUI's model config and wrapped in a ModelPatcher (their detection is hard-coded to the
released sizes). Sampled with common_ksampler on CPU, backend="torch".
"""
import pytest
import torch

from comfy_env import OTHER_MODELS, VIDEO_TOKENS, build_other_checkpoint, other_model_patcher, sample
from test_sampling import BRANCHES, STEPS, last_stats, patch

# Models the node does not serve: the diffusion model class the loader must build, and the attention
# calls one forward makes (all of them must stay dense, under the one "not supported" reason).
UNSUPPORTED = {
    "ltxv": ("LTXVModel", 2 * 2),  # 2 blocks x (self + cross)
    "cosmos_predict2": ("MiniTrainDIT", 10 * 2),  # MiniTrainDIT's default 10 blocks x (self + cross)
    "cosmos1": ("GeneralDIT", 2 * 2),  # 2 blocks x (self + cross)
    "mochi": ("AsymmDiTJoint", 2),  # 2 blocks x one joint video+text attention
}
VACE = "wan21_vace"
VACE_MAIN_BLOCKS, VACE_BLOCKS = 4, 2  # VACE blocks run after main blocks 0 and 2


def comfyui_sets_block_index():
    """Later ComfyUI passes `block_index` to Wan's blocks (a VACE block gets the index of the main block it
    follows); 0.3.64 does not, and the node numbers self-attention calls in call order."""
    import inspect

    import comfy.ldm.wan.model

    return "block_index" in inspect.getsource(comfy.ldm.wan.model.VaceWanModel.forward_orig)


@pytest.fixture(scope="module")
def load_other(comfyui, tmp_path_factory):
    """name -> a freshly loaded ModelPatcher: through UNETLoader where detection allows, else direct."""
    import folder_paths

    directory = tmp_path_factory.mktemp("other_diffusion_models")
    folder_paths.add_model_folder_path("diffusion_models", str(directory), is_default=True)
    files = {name: build_other_checkpoint(name, directory).name
             for name, spec in OTHER_MODELS.items() if spec[3]}

    def load(name):
        if name in files:
            return comfyui.UNETLoader().load_unet(files[name], "default")[0]
        return other_model_patcher(name)
    return load


@pytest.fixture(scope="module")
def dense_latents(comfyui, load_other):
    """name -> the unpatched model's latent (3 steps, seed 0)."""
    return {name: sample(comfyui, load_other(name), name, STEPS) for name in OTHER_MODELS}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_model_passes_through_unchanged_with_a_logged_reason(
        comfyui, pack, load_other, dense_latents, name):
    class_name, calls_per_forward = UNSUPPORTED[name]
    model = load_other(name)
    assert type(model.model.diffusion_model).__name__ == class_name
    patched = patch(pack, model)
    latent = sample(comfyui, patched, name, STEPS)
    stats = last_stats(patched)
    reason = f"{class_name} is not a Wan or HunyuanVideo model"
    assert stats["sparse_calls"] == 0 and stats["model"] is None
    assert stats["dense_reasons"] == {reason: calls_per_forward * STEPS * BRANCHES}
    assert f"dense attention: {reason}" in pack.nodes.run_state._logged
    assert torch.isfinite(latent).all()
    torch.testing.assert_close(latent, dense_latents[name], rtol=0, atol=0)


def test_vace_loads_as_vace(load_other):
    model = load_other(VACE)
    assert type(model.model).__name__ == "WAN21_Vace"
    assert len(model.model.diffusion_model.vace_blocks) == VACE_BLOCKS


def test_vace_top_p_one_reproduces_the_unpatched_latent(comfyui, pack, load_other, dense_latents, monkeypatch):
    # through the sparse path (the node serves top_p 1.0 dense by design): exact, so the latents compare
    monkeypatch.setattr(pack.svg2_core.config.SVG2Config, "keeps_every_block", property(lambda self: False))
    patched = patch(pack, load_other(VACE), top_p=1.0)
    latent = sample(comfyui, patched, VACE, STEPS)
    stats = last_stats(patched)
    assert stats["sparse_calls"] == (VACE_MAIN_BLOCKS + VACE_BLOCKS) * STEPS * BRANCHES
    assert stats["mean_density"] == pytest.approx(1.0)
    torch.testing.assert_close(latent, dense_latents[VACE], rtol=1e-4, atol=1e-4)


def test_vace_self_attention_of_main_and_vace_blocks_goes_sparse(comfyui, pack, load_other, dense_latents):
    patched = patch(pack, load_other(VACE))
    latent = sample(comfyui, patched, VACE, STEPS)
    stats = last_stats(patched)
    assert stats["model"] == "wan"
    assert stats["sparse_calls"] == (VACE_MAIN_BLOCKS + VACE_BLOCKS) * STEPS * BRANCHES
    assert stats["dense_reasons"] == {"cross-attention": (VACE_MAIN_BLOCKS + VACE_BLOCKS) * STEPS * BRANCHES}
    layers = VACE_MAIN_BLOCKS if comfyui_sets_block_index() else VACE_MAIN_BLOCKS + VACE_BLOCKS
    assert stats["density"]["layers"] == list(range(layers))
    assert 0.0 < stats["mean_density"] < 1.0
    assert torch.isfinite(latent).all()
    assert (latent - dense_latents[VACE]).abs().max() > 1e-3


def test_vace_dense_layers_count_vace_blocks_by_layer(comfyui, pack, load_other):
    # dense_layers=1: with block_index, main block 0 and the VACE block after it (also index 0) stay dense;
    # counted in call order (0.3.64), only main block 0 is layer 0.
    patched = patch(pack, load_other(VACE), dense_layers=1)
    sample(comfyui, patched, VACE, STEPS)
    stats = last_stats(patched)
    dense = 2 if comfyui_sets_block_index() else 1
    assert stats["dense_reasons"]["dense layer"] == dense * STEPS * BRANCHES
    assert stats["sparse_calls"] == (VACE_MAIN_BLOCKS + VACE_BLOCKS - dense) * STEPS * BRANCHES


def test_vace_min_tokens_keeps_it_dense_and_unchanged(comfyui, pack, load_other, dense_latents):
    patched = patch(pack, load_other(VACE), min_tokens=VIDEO_TOKENS + 1)
    latent = sample(comfyui, patched, VACE, STEPS)
    stats = last_stats(patched)
    assert stats["sparse_calls"] == 0
    assert stats["dense_reasons"]["fewer tokens than min_tokens"] == (VACE_MAIN_BLOCKS + VACE_BLOCKS) * STEPS * BRANCHES
    torch.testing.assert_close(latent, dense_latents[VACE], rtol=0, atol=0)
