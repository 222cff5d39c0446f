"""Triton unavailable (its import fails) inside real ComfyUI: the node's text and the `svg2.stats` event name
the fallback, and a by-design reason such as cross-attention never stands in for it."""
import sys
import types

import pytest

from comfy_env import SELF_ATTENTION_LAYERS, sample

NAME = "wan21_t2v"  # self- and cross-attention in every block
STEPS = 2
BRANCHES = 2  # cond and uncond prompts of different lengths run as separate forwards
SETTINGS = dict(top_p=0.5, num_q_clusters=4, num_k_clusters=8, dense_warmup_steps=0, dense_layers=0,
                backend="auto", min_tokens=16)


@pytest.fixture
def triton_import_fails(pack, monkeypatch):
    """`import triton` raises ImportError, and the pack has not loaded its Triton backend yet."""
    backends = pack.svg2_core.backends
    monkeypatch.setitem(sys.modules, "triton", None)
    prefix = f"{pack.__name__}.svg2_core.triton"
    for name in [name for name in sys.modules if name.startswith(prefix)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(backends, "_import_failure", None)
    monkeypatch.setattr(backends, "_BACKENDS", {k: v for k, v in backends._BACKENDS.items() if k != "triton"})


@pytest.fixture
def server(monkeypatch):
    """A stand-in PromptServer that records the events and node texts the pack sends."""
    sent = {"events": [], "texts": []}
    instance = types.SimpleNamespace(
        client_id="c1", send_sync=lambda event, data, client: sent["events"].append((event, data)),
        send_progress_text=lambda text, node: sent["texts"].append((text, node)))
    monkeypatch.setitem(sys.modules, "server",
                        types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=instance)))
    return sent


def test_triton_import_failure_is_reported_as_the_fallback(comfyui, pack, load_model, triton_import_fails, server):
    node = pack.NODE_CLASS_MAPPINGS["SVG2SparseAttention"]()
    (patched,) = node.patch(load_model(NAME), **SETTINGS, unique_id="7")
    sample(comfyui, patched, NAME, STEPS)

    fallbacks = SELF_ATTENTION_LAYERS[NAME] * STEPS * BRANCHES
    events = [data for event, data in server["events"] if event == "svg2.stats"]
    assert len(events) == 1 and events[0]["node"] == "7"
    stats = events[0]
    assert stats["sparse_calls"] == 0 and stats["fallback_calls"] == fallbacks
    assert stats["dense_reasons"]["cross-attention"] == fallbacks  # always dense by design, as common here
    reason = stats["fallback_reason"]
    assert reason.startswith("Triton fast path unavailable") and "cannot be imported" in reason
    assert stats["dense_reasons"][reason] == fallbacks

    assert [node_id for _, node_id in server["texts"]] == ["7"]
    text = server["texts"][0][0]
    assert f"fallback {fallbacks}: {reason}" in text
    assert "cross-attention" not in text
