"""The node's own logic without ComfyUI (runs in CI): widgets, validation, step lookup, geometry, the
override's routing and layouts, and the stats payload."""
import copy
import sys
import types

import pytest
import torch

from comfy_env import load_pack, patch_node

pack = load_pack()
svg2_patch = pack.nodes.svg2_patch
override_module = pack.nodes.attention_override
run_state = pack.nodes.run_state
geometry_module = pack.nodes.model_geometry
stats_module = pack.nodes.stats

NODE = svg2_patch.SVG2SparseAttention
SETTINGS = dict(top_p=0.5, num_q_clusters=4, num_k_clusters=8, dense_warmup_steps=0, dense_layers=0,
                backend="torch")


def test_node_is_registered_with_its_display_name():
    assert pack.NODE_CLASS_MAPPINGS["SVG2SparseAttention"] is NODE
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["SVG2SparseAttention"] == "SVG2 Sparse Attention"
    assert pack.WEB_DIRECTORY == "./web"


def test_widgets_have_the_documented_names_defaults_and_numeric_tooltips():
    inputs = NODE.INPUT_TYPES()
    assert list(inputs["required"]) == ["model", "top_p", "num_q_clusters", "num_k_clusters",
                                        "dense_warmup_steps", "dense_layers", "backend"]
    assert list(inputs["optional"]) == ["dense_last_steps", "min_k_cluster_ratio", "kmeans_iters", "min_tokens",
                                        "allow_compile", "qk_int8", "dense_warmup_percent", "dense_last_percent"]
    assert inputs["hidden"] == {"unique_id": "UNIQUE_ID"}
    required = inputs["required"]
    assert required["top_p"][0] == "FLOAT" and required["top_p"][1]["display"] == "slider"
    defaults = {name: spec[1]["default"] for name, spec in {**required, **inputs["optional"]}.items()
                if name != "model"}
    assert defaults == {"top_p": 0.9, "num_q_clusters": 300, "num_k_clusters": 1000, "dense_warmup_steps": -1,
                        "dense_layers": 1, "backend": "auto", "dense_last_steps": -1, "min_k_cluster_ratio": 0.1,
                        "kmeans_iters": 2, "min_tokens": 8192, "allow_compile": False, "qk_int8": True,
                        "dense_warmup_percent": 0.2, "dense_last_percent": 0.0}
    assert required["backend"][0] == ["auto", "triton", "torch"]
    for name, spec in {**required, **inputs["optional"]}.items():
        assert any(char.isdigit() for char in spec[1]["tooltip"]) or name in ("model", "backend"), name
    # the warm-up share stays visible on purpose; every other optional widget is advanced
    assert all(spec[1]["advanced"] for name, spec in inputs["optional"].items() if name != "dense_warmup_percent")


@pytest.mark.parametrize("name, value, message", [
    ("top_p", 1.5, r"top_p must be a number in \[0.01, 1.0\], got 1.5"),
    ("top_p", 0.0, r"top_p must be a number in \[0.01, 1.0\], got 0.0"),
    ("num_q_clusters", 0, r"num_q_clusters must be an int in \[1, 4096\], got 0"),
    ("dense_layers", 2.5, r"dense_layers must be an int in \[0, 1000\], got 2.5"),
    ("backend", "cuda", r"backend must be one of \['auto', 'triton', 'torch'\], got 'cuda'"),
    ("min_tokens", -1, r"min_tokens must be an int"),
    ("qk_int8", "on", r"qk_int8 must be True or False, got 'on'"),
])
def test_bad_widget_values_raise_naming_the_allowed_range(name, value, message):
    with pytest.raises(ValueError, match=message):
        NODE().patch(None, **{**SETTINGS, name: value})


def test_qk_int8_reaches_the_config_on_by_default(monkeypatch):
    built = patch_node(NODE, monkeypatch, SETTINGS, dict(SETTINGS, qk_int8=False))
    assert [config.qk_int8 for config, _ in built] == [True, False]


def test_step_index_matches_then_brackets():
    schedule = torch.tensor([14.6, 3.0, 1.0, 0.2, 0.0])
    assert run_state.step_index(torch.tensor([3.0, 3.0]), schedule) == 1
    assert run_state.step_index(torch.tensor([2.0]), schedule) == 1
    assert run_state.step_index(torch.tensor([0.1]), schedule) == 3
    assert run_state.step_index(torch.tensor([20.0]), schedule) is None
    assert run_state.step_index(torch.tensor([1.0]), None) is None


def _fake_model(module, name="Fake", **attributes):
    model_class = type(name, (), {"__module__": module})
    model = model_class()
    for key, value in attributes.items():
        setattr(model, key, value)
    return model


def test_geometry_of_wan_hunyuan_and_others():
    wan = geometry_module.geometry_of(_fake_model("comfy.ldm.wan.model", patch_size=(1, 2, 2)))
    assert wan.family == "wan" and wan.text_position is None
    assert wan.video_tokens((1, 16, 21, 60, 104)) == 21 * 30 * 52
    flipped = types.SimpleNamespace(flipped_img_txt=True)
    old = geometry_module.geometry_of(_fake_model("comfy.ldm.hunyuan_video.model", patch_size=[1, 2, 2],
                                                  double_blocks=[flipped] * 20))
    new = geometry_module.geometry_of(_fake_model("comfy.ldm.hunyuan_video.model", patch_size=[1, 2, 2],
                                                  double_blocks=[object()] * 20))
    assert (old.text_position, new.text_position) == ("suffix", "prefix")
    assert new.global_layer("single", 3) == 23 and new.global_layer("double", 3) == 3
    reason = geometry_module.geometry_of(_fake_model("comfy.ldm.lightricks.model", "LTXVModel"))
    assert reason == "LTXVModel is not a Wan or HunyuanVideo model"


def test_memory_estimate_increase_counts_svg2s_extra_activations_per_video_token():
    wan14b = geometry_module.geometry_of(_fake_model("comfy.ldm.wan.model", patch_size=(1, 2, 2), dim=5120))
    hunyuan = geometry_module.geometry_of(_fake_model("comfy.ldm.hunyuan_video.model", patch_size=[1, 2, 2],
                                                      hidden_size=3072, double_blocks=[object()] * 2))
    assert (wan14b.inner_dim, hunyuan.inner_dim) == (5120, 3072)
    # MiB per latent element: 4 q-sized activations (the row table's 3, the int8 codes of q and k 1) x 5120
    # values per token / 4 latent elements per token, over ComfyUI's dtype_size x 0.01 MiB per unit of
    # memory_usage_factor
    expected = 4 * 5120 / 4 / (0.01 * 1024 * 1024)
    assert geometry_module.memory_usage_factor_increase(wan14b) == pytest.approx(expected)
    assert geometry_module.memory_usage_factor_increase(hunyuan) == pytest.approx(expected * 3072 / 5120)
    unknown = geometry_module.geometry_of(_fake_model("comfy.ldm.wan.model", patch_size=(1, 2, 2)))
    assert geometry_module.memory_usage_factor_increase(unknown) == 0.0


WAN14B_720P = (1, 16, 21, 90, 160)  # 75,600 tokens


def _wan14b():
    return geometry_module.geometry_of(_fake_model("comfy.ldm.wan.model", patch_size=(1, 2, 2), dim=5120,
                                                   num_heads=40, blocks=[object()] * 40))


def test_memory_estimate_counts_the_centroid_cache_of_every_layer_branch_and_head():
    wan14b = _wan14b()
    assert (wan14b.heads, wan14b.layers) == (40, 40)
    estimate = geometry_module.memory_estimate(wan14b, WAN14B_720P, 2, 300, 1000)
    # layers x branches x batch x heads x (Cq + Ck) x D x 4 B
    assert estimate.centroid_cache == 40 * 2 * 1 * 40 * (300 + 1000) * 128 * 4
    assert estimate.per_call >= 4 * 40 * 75_600 * 128 * 2  # at least the extra activations
    batch_two = geometry_module.memory_estimate(wan14b, (2, *WAN14B_720P[1:]), 1, 300, 1000)
    assert batch_two.centroid_cache == estimate.centroid_cache
    vace = geometry_module.geometry_of(_fake_model("comfy.ldm.wan.model", patch_size=(1, 2, 2), dim=5120,
                                                   num_heads=40, blocks=[object()] * 40, vace_blocks=[object()] * 8))
    assert vace.layers == 48
    unknown = geometry_module.geometry_of(_fake_model("comfy.ldm.wan.model", patch_size=(1, 2, 2), dim=5120))
    assert geometry_module.memory_estimate(unknown, WAN14B_720P, 2, 300, 1000) is None


def test_slider_maxima_are_refused_on_a_24_gb_card_with_the_numbers():
    wan14b = _wan14b()
    gib = 1024 ** 3
    maxima = geometry_module.memory_estimate(wan14b, WAN14B_720P, 2, 4096, 8192)
    assert maxima.centroid_cache / gib == pytest.approx(18.75)
    refusal = geometry_module.memory_refusal(maxima, 24 * gib)
    assert refusal is not None
    assert "18.8 GiB centroid cache" in refusal and "24.0 GiB" in refusal and "50%" in refusal
    assert "num_q_clusters" in refusal
    assert geometry_module.memory_refusal(maxima, 80 * gib) is None  # an H100 holds it
    defaults = geometry_module.memory_estimate(wan14b, WAN14B_720P, 2, 300, 1000)
    assert geometry_module.memory_refusal(defaults, 24 * gib) is None
    assert geometry_module.memory_refusal(defaults, None) is None  # no GPU: nothing to compare with


def test_centroid_cache_factor_increase_gives_back_the_cache_through_comfyuis_formula():
    wan14b = _wan14b()
    factor = geometry_module.centroid_cache_factor_increase(wan14b, WAN14B_720P, 2, 300, 1000, 2)
    area = 1 * 21 * 90 * 160  # memory_required: B x T x H x W elements, dtype_size x 0.01 x factor MiB each
    cache = geometry_module.memory_estimate(wan14b, WAN14B_720P, 2, 300, 1000).centroid_cache
    assert area * 2 * 0.01 * factor * 1024 * 1024 == pytest.approx(cache)


HEADS, HEAD_DIM, VIDEO = 2, 16, 24


@pytest.fixture
def sparse_at_top_p_one(monkeypatch):
    """top_p 1.0 through the sparse path (the node serves it dense by design): exact, so outputs compare."""
    monkeypatch.setattr(pack.svg2_core.config.SVG2Config, "keeps_every_block", property(lambda self: False))


def test_top_p_one_is_served_dense_by_design():
    override = _override()
    context = _context(override)
    q, k, v = _qkv(VIDEO, False)
    out = override(_dense_reference, q, k, v, heads=HEADS, transformer_options={override_module.FORWARD_KEY: context},
                   _inside_attn_wrapper=True)
    torch.testing.assert_close(out, _dense_reference(q, k, v, HEADS, _inside_attn_wrapper=True), rtol=0, atol=0)
    assert context.run.stats.sparse_calls == 0
    assert context.run.stats.dense_reasons == {override_module.KEEPS_EVERY_BLOCK: 1}


def _override(previous=None, qk_int8=False, **schedule):
    owner = object()
    config = pack.svg2_core.SVG2Config(top_p=1.0, num_q_clusters=2, num_k_clusters=3, qk_int8=qk_int8)
    plan = dict(dense_warmup_steps=0, dense_last_steps=0, dense_layers=0, min_tokens=0)
    plan.update(schedule)
    override = override_module.SVG2AttentionOverride(owner, config, override_module.Schedule(**plan), "torch",
                                                     previous, allow_compile=True)
    return override


def _context(override, family="wan", text_position=None, text_tokens=7, step=1):
    geometry = geometry_module.ModelGeometry(family, (1, 2, 2), text_position, {"double": 0, "single": 2})
    return run_state.ForwardContext(override.owner, run_state.RunState(), step, 4, geometry, None, VIDEO,
                                    text_tokens, (("u",), (0,)))


def _dense_reference(q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                     skip_output_reshape=False, **kwargs):
    """A stand-in for ComfyUI's attention backend (same signature)."""
    assert kwargs.get("_inside_attn_wrapper") is True
    if not skip_reshape:
        q, k, v = (x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2) for x in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def _qkv(tokens, skip_reshape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (1, HEADS, tokens, HEAD_DIM) if skip_reshape else (1, tokens, HEADS * HEAD_DIM)
    return [torch.randn(shape, generator=generator) for _ in range(3)]


@pytest.mark.parametrize("min_tokens, expected", [(override_module.QK_INT8_MIN_TOKENS, False), (VIDEO, True)])
def test_int8_scores_only_from_the_token_threshold(monkeypatch, sparse_at_top_p_one, min_tokens, expected):
    monkeypatch.setattr(override_module, "QK_INT8_MIN_TOKENS", min_tokens)
    seen = []
    real_call = override_module.svg2_attention

    def recording_call(q, k, v, config, **kwargs):
        seen.append(config)
        return real_call(q, k, v, config, **kwargs)

    monkeypatch.setattr(override_module, "svg2_attention", recording_call)
    override = _override(qk_int8=True)
    context = _context(override)
    q, k, v = _qkv(VIDEO, False)
    override(_dense_reference, q, k, v, HEADS, _inside_attn_wrapper=True,
             transformer_options={override_module.FORWARD_KEY: context})
    assert [config.qk_int8 for config in seen] == [expected]
    assert override.config.qk_int8 is True  # the user's setting itself is kept


@pytest.mark.parametrize("skip_reshape, skip_output_reshape", [(False, False), (True, False), (True, True)])
def test_sparse_path_honours_both_layout_flags(sparse_at_top_p_one, skip_reshape, skip_output_reshape):
    override = _override()
    context = _context(override)
    q, k, v = _qkv(VIDEO, skip_reshape)
    kwargs = dict(skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape, _inside_attn_wrapper=True,
                  transformer_options={override_module.FORWARD_KEY: context}, low_precision_attention=True)
    out = override(_dense_reference, q, k, v, HEADS, **kwargs)
    expected = _dense_reference(q, k, v, HEADS, **kwargs)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert context.run.stats.sparse_calls == 1


def test_hunyuan_text_tokens_are_dense_prefix_or_suffix(sparse_at_top_p_one):
    for position in ("prefix", "suffix"):
        override = _override()
        context = _context(override, "hunyuan_video", position, text_tokens=5)
        q, k, v = _qkv(VIDEO + 5, True)
        options = {override_module.FORWARD_KEY: context}
        out = override(_dense_reference, q, k, v, HEADS, skip_reshape=True, transformer_options=options,
                       _inside_attn_wrapper=True)
        torch.testing.assert_close(out, _dense_reference(q, k, v, HEADS, skip_reshape=True, _inside_attn_wrapper=True),
                                   rtol=1e-4, atol=1e-5)
        refiner = _qkv(5, True)
        override(_dense_reference, *refiner, HEADS, skip_reshape=True, transformer_options=options,
                 _inside_attn_wrapper=True)
        assert context.run.stats.dense_reasons == {"not video self-attention (text refiner)": 1}


def test_declined_calls_reach_the_previous_override_with_every_keyword():
    seen = []

    def previous(func, *args, **kwargs):
        seen.append(sorted(kwargs))
        return func(*args, **kwargs)

    override = _override(previous, dense_warmup_steps=2)
    context = _context(override)
    options = {override_module.FORWARD_KEY: context}
    q, k, v = _qkv(VIDEO, False)
    override(_dense_reference, q, k[:, :7], v[:, :7], heads=HEADS, transformer_options=options,
             _inside_attn_wrapper=True, low_precision_attention=True, some_future_flag=3)
    override(_dense_reference, q, k, v, heads=HEADS, transformer_options=options, _inside_attn_wrapper=True)
    assert context.run.stats.dense_reasons == {"cross-attention": 1, "warm-up step": 1}
    assert seen[0] == ["_inside_attn_wrapper", "heads", "low_precision_attention", "some_future_flag",
                       "transformer_options"]
    assert len(seen) == 2


@pytest.mark.parametrize("extra, reason", [
    (dict(mask=torch.zeros(1, 1, VIDEO)), "masked attention"),
    (dict(low_precision_attention=False), "model asked for exact attention"),
])
def test_masked_and_exact_calls_stay_dense(extra, reason):
    override = _override()
    context = _context(override)
    q, k, v = _qkv(VIDEO, False)
    override(_dense_reference, q, k, v, heads=HEADS, transformer_options={override_module.FORWARD_KEY: context},
             _inside_attn_wrapper=True, **extra)
    assert context.run.stats.dense_reasons == {reason: 1}


def test_calls_outside_a_patched_run_stay_dense_and_clones_share_the_override():
    override = _override()
    q, k, v = _qkv(VIDEO, False)
    out = override(_dense_reference, q, k, v, heads=HEADS, transformer_options={}, _inside_attn_wrapper=True)
    torch.testing.assert_close(out, _dense_reference(q, k, v, HEADS, _inside_attn_wrapper=True))
    assert copy.deepcopy({"transformer_options": {"o": override}})["transformer_options"]["o"] is override


def test_stats_summary_and_publish(monkeypatch):
    stats = stats_module.RunStats()
    for step, layer, density in ((1, 0, 0.25), (1, 0, 0.35), (1, 1, 0.5), (2, 1, 0.1)):
        stats.start_timer(torch.device("cpu")).stop()
        stats.record_sparse(step, layer, torch.full((1, 2), density), "torch")
    stats.record_dense("warm-up step")
    payload = stats.summary()
    assert payload["sparse_calls"] == 4 and payload["dense_calls"] == 1
    assert payload["density"] == {"steps": [1, 2], "layers": [0, 1], "values": [[0.3, 0.5], [None, 0.1]]}
    assert payload["dense_reasons"] == {"warm-up step": 1} and payload["svg2_time_ms"] >= 0.0

    sent = []
    server = types.SimpleNamespace(client_id="c1", send_sync=lambda *a: sent.append(a),
                                   send_progress_text=lambda text, node: sent.append((text, node)))
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=server)))
    stats_module.publish(payload, "7")
    assert sent[0][0] == "svg2.stats" and sent[0][1]["node"] == "7" and sent[0][2] == "c1"
    assert sent[1][1] == "7" and "4 sparse / 1 dense" in sent[1][0]
    monkeypatch.delitem(sys.modules, "server")
    stats_module.publish(payload, "7")  # no server: a no-op
