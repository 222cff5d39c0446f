"""SVG2 Sparse Attention inside real ComfyUI: tiny random Wan / HunyuanVideo checkpoints loaded with
UNETLoader and sampled with common_ksampler (KSampler's body) on CPU, backend="torch"."""
import copy

import pytest
import torch

from comfy_env import SELF_ATTENTION_LAYERS, TINY_MODELS, VIDEO_TOKENS, empty_latent, sample

STEPS = 3
BRANCHES = 2  # cond and uncond prompts of different lengths run as separate forwards
MODELS = list(TINY_MODELS)
TINY = dict(top_p=0.5, num_q_clusters=4, num_k_clusters=8, dense_warmup_steps=0, dense_layers=0,
            backend="torch", min_tokens=16)


def patch(pack, model, **settings):
    node = pack.NODE_CLASS_MAPPINGS["SVG2SparseAttention"]()
    (patched,) = node.patch(model, **{**TINY, **settings})
    return patched


def last_stats(model):
    return model.model_options["transformer_options"]["optimized_attention_override"].owner.last_stats


@pytest.fixture(scope="module")
def dense_latents(comfyui, load_model):
    """name -> the unpatched model's latent (3 steps, seed 0)."""
    return {name: sample(comfyui, load_model(name), name, STEPS) for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_top_p_one_is_served_by_the_models_attention(comfyui, pack, load_model, dense_latents, name):
    patched = patch(pack, load_model(name), top_p=1.0)
    latent = sample(comfyui, patched, name, STEPS)
    stats = last_stats(patched)
    assert stats["sparse_calls"] == 0
    assert stats["dense_reasons"]["top_p 1.0 keeps every block"] == SELF_ATTENTION_LAYERS[name] * STEPS * BRANCHES
    torch.testing.assert_close(latent, dense_latents[name], rtol=0, atol=0)


@pytest.mark.parametrize("name", MODELS)
def test_the_sparse_path_keeping_every_block_reproduces_the_unpatched_latent(
        comfyui, pack, load_model, dense_latents, name, monkeypatch):
    """The node's layout round trip (head split, text prefix / suffix, output reshape) is exact."""
    monkeypatch.setattr(pack.svg2_core.config.SVG2Config, "keeps_every_block", property(lambda self: False))
    patched = patch(pack, load_model(name), top_p=1.0)
    latent = sample(comfyui, patched, name, STEPS)
    stats = last_stats(patched)
    assert stats["sparse_calls"] == SELF_ATTENTION_LAYERS[name] * STEPS * BRANCHES
    assert stats["mean_density"] == pytest.approx(1.0)
    torch.testing.assert_close(latent, dense_latents[name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_top_p_half_changes_the_latent_and_every_self_attention_call_is_sparse(
        comfyui, pack, load_model, dense_latents, name):
    patched = patch(pack, load_model(name))
    latent = sample(comfyui, patched, name, STEPS)
    stats = last_stats(patched)
    layers = SELF_ATTENTION_LAYERS[name]
    assert stats["sparse_calls"] == layers * STEPS * BRANCHES
    assert stats["density"]["steps"] == list(range(STEPS))
    assert stats["density"]["layers"] == list(range(layers))
    assert 0.0 < stats["mean_density"] < 1.0
    assert stats["backends"] == {"torch": stats["sparse_calls"]}
    assert "cross-attention" in stats["dense_reasons"] or name == "hunyuan_video"
    assert torch.isfinite(latent).all()
    assert (latent - dense_latents[name]).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["wan21_t2v", "hunyuan_video"])
def test_warmup_steps_and_dense_layers_are_counted_dense(comfyui, pack, load_model, name):
    patched = patch(pack, load_model(name), dense_warmup_steps=1, dense_layers=1, dense_last_steps=1)
    sample(comfyui, patched, name, STEPS)
    stats = last_stats(patched)
    layers = SELF_ATTENTION_LAYERS[name]
    assert stats["sparse_calls"] == (STEPS - 2) * (layers - 1) * BRANCHES
    assert stats["dense_reasons"]["warm-up step"] == layers * BRANCHES
    assert stats["dense_reasons"]["last step"] == layers * BRANCHES
    assert stats["dense_reasons"]["dense layer"] == (STEPS - 2) * BRANCHES
    assert stats["density"]["steps"] == [1] and stats["density"]["layers"] == list(range(1, layers))


@pytest.mark.parametrize("name", ["wan21_t2v", "hunyuan_video"])
def test_warmup_steps_and_dense_layers_really_are_dense(comfyui, pack, load_model, name):
    model = load_model(name)
    one_step = sample(comfyui, model, name, steps=1)
    warm = patch(pack, model, dense_warmup_steps=1)
    torch.testing.assert_close(sample(comfyui, warm, name, steps=1), one_step, rtol=0, atol=0)
    all_layers = patch(pack, model, dense_layers=SELF_ATTENTION_LAYERS[name])
    torch.testing.assert_close(sample(comfyui, all_layers, name, steps=1), one_step, rtol=0, atol=0)
    assert last_stats(all_layers)["sparse_calls"] == 0


def test_two_prompts_in_a_row_match_each_alone(comfyui, pack, load_model):
    name = "wan21_t2v"
    patched = patch(pack, load_model(name))
    first = sample(comfyui, patched, name, STEPS, prompt_seed=1)
    other = sample(comfyui, patched, name, STEPS, prompt_seed=2)
    again = sample(comfyui, patched, name, STEPS, prompt_seed=1)
    alone = sample(comfyui, patch(pack, load_model(name)), name, STEPS, prompt_seed=2)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    torch.testing.assert_close(other, alone, rtol=0, atol=0)


def test_two_patched_models_interleaved_match_each_alone(comfyui, pack, load_model):
    wan, hunyuan = patch(pack, load_model("wan21_t2v")), patch(pack, load_model("hunyuan_video"))
    wan_alone = sample(comfyui, wan, "wan21_t2v", STEPS)
    hunyuan_alone = sample(comfyui, hunyuan, "hunyuan_video", STEPS)
    second_wan = patch(pack, load_model("wan21_t2v"), top_p=0.3)
    second_alone = sample(comfyui, second_wan, "wan21_t2v", STEPS)
    for _ in range(2):
        torch.testing.assert_close(sample(comfyui, wan, "wan21_t2v", STEPS), wan_alone, rtol=0, atol=0)
        torch.testing.assert_close(sample(comfyui, second_wan, "wan21_t2v", STEPS), second_alone, rtol=0, atol=0)
        torch.testing.assert_close(sample(comfyui, hunyuan, "hunyuan_video", STEPS), hunyuan_alone, rtol=0, atol=0)


def test_batch_of_two_keeps_each_sample_apart(comfyui, pack, load_model):
    name = "wan21_t2v"
    patched = patch(pack, load_model(name))
    batch = sample(comfyui, patched, name, STEPS, batch=2)
    assert last_stats(patched)["sparse_calls"] == SELF_ATTENTION_LAYERS[name] * STEPS * BRANCHES
    assert batch.shape[0] == 2 and torch.isfinite(batch).all()
    assert (batch[0] - batch[1]).abs().max() > 0  # different noise per sample


def test_clone_leaves_the_input_model_alone_and_chains_the_previous_override(comfyui, pack, load_model):
    name = "wan21_t2v"
    model = load_model(name)
    calls = []

    def previous(func, *args, **kwargs):
        calls.append(kwargs.get("heads"))
        return func(*args, **kwargs)

    model.model_options["transformer_options"]["optimized_attention_override"] = previous
    before = copy.copy(model.model_options["transformer_options"])
    patched = patch(pack, model, dense_warmup_steps=1)
    assert model.model_options["transformer_options"] == before
    assert model.wrappers == load_model(name).wrappers
    sample(comfyui, patched, name, STEPS)
    stats = last_stats(patched)
    assert len(calls) == stats["dense_calls"] > 0
    assert stats["sparse_calls"] == SELF_ATTENTION_LAYERS[name] * (STEPS - 1) * BRANCHES


def test_a_second_svg2_node_replaces_the_first(comfyui, pack, load_model):
    name = "wan21_t2v"
    first = patch(pack, load_model(name))
    second = patch(pack, first, top_p=0.3)
    sample(comfyui, second, name, STEPS)
    assert last_stats(second)["settings"]["top_p"] == 0.3 and last_stats(second)["sparse_calls"] > 0
    assert last_stats(first) is None


def test_auto_backend_on_cpu_stays_dense_and_says_why(comfyui, pack, load_model, dense_latents):
    name = "hunyuan_video"
    patched = patch(pack, load_model(name), backend="auto")
    latent = sample(comfyui, patched, name, STEPS)
    stats = last_stats(patched)
    assert stats["sparse_calls"] == 0
    # fp32 on the CPU: Triton interpreted (TRITON_INTERPRET=1) serves only fp16 / bf16, and nothing else the CPU
    (reason,) = stats["dense_reasons"].keys() - {"not video self-attention (text refiner)"}
    assert reason.startswith("Triton fast path unavailable: ") and ("float32" in reason or "cpu" in reason)
    assert stats["dense_reasons"][reason] == SELF_ATTENTION_LAYERS[name] * STEPS * BRANCHES
    torch.testing.assert_close(latent, dense_latents[name], rtol=0, atol=0)


def test_min_tokens_keeps_short_videos_dense(comfyui, pack, load_model):
    name = "wan21_t2v"
    patched = patch(pack, load_model(name), min_tokens=VIDEO_TOKENS + 1)
    sample(comfyui, patched, name, STEPS)
    stats = last_stats(patched)
    assert stats["sparse_calls"] == 0
    assert stats["dense_reasons"]["fewer tokens than min_tokens"] == SELF_ATTENTION_LAYERS[name] * STEPS * BRANCHES


def test_hunyuan_text_tokens_sit_where_this_comfyui_puts_them(comfyui, pack, load_model):
    import comfyui_version

    geometry = pack.nodes.model_geometry.geometry_of(load_model("hunyuan_video").model.diffusion_model)
    major_minor = tuple(int(part) for part in comfyui_version.__version__.split(".")[:2])
    assert geometry.text_position == ("suffix" if major_minor < (0, 4) else "prefix")


@pytest.mark.parametrize("name", ["wan21_t2v", "hunyuan_video"])
def test_memory_estimate_is_raised_for_the_run_and_restored(comfyui, pack, load_model, name, monkeypatch):
    patched = patch(pack, load_model(name))
    base_model = patched.model
    before = base_model.memory_usage_factor
    seen = []
    original = type(base_model).memory_required

    def recording(self, *args, **kwargs):
        seen.append(self.memory_usage_factor)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(base_model), "memory_required", recording)
    sample(comfyui, patched, name, steps=1)
    geometry_module = pack.nodes.model_geometry
    geometry = geometry_module.geometry_of(base_model.diffusion_model)
    latent_shape = tuple(empty_latent(name)["samples"].shape)
    cache = geometry_module.centroid_cache_factor_increase(geometry, latent_shape, BRANCHES, TINY["num_q_clusters"],
                                                           TINY["num_k_clusters"], 4)  # fp32 on the CPU
    increase = geometry_module.memory_usage_factor_increase(geometry) + cache
    assert cache > 0 and increase > cache
    assert seen and all(factor == pytest.approx(before + increase) for factor in seen)
    assert base_model.memory_usage_factor == before
    sample(comfyui, load_model(name), name, steps=1)  # the unpatched model: its own estimate
    assert seen[-1] == before
