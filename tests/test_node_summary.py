"""The node's summary line names a fallback whenever one happened; by-design dense reasons (cross-attention,
text tokens, warm-up, last steps, dense layers) never stand in for it. Runs without ComfyUI."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "comfyui"))
from comfy_env import load_pack  # noqa: E402

stats_module = load_pack().nodes.stats


def _payload(sparse_densities=(), dense_reasons=None):
    """The summary of a run with one sparse call per density and `dense_reasons` (reason -> count)."""
    stats = stats_module.RunStats()
    for step, density in enumerate(sparse_densities):
        stats.start_timer(torch.device("cpu")).stop()
        stats.record_sparse(step, 0, torch.full((1, 2), density), "torch")
    for reason, count in (dense_reasons or {}).items():
        for _ in range(count):
            stats.record_dense(reason)
    return stats.summary()


def test_a_fallback_is_named_even_when_cross_attention_is_more_common():
    payload = _payload((), {"cross-attention": 20, "Triton fast path unavailable": 16})
    assert payload["fallback_calls"] == 16 and payload["fallback_reason"] == "Triton fast path unavailable"
    text = stats_module.summary_text(payload)
    assert text == "SVG2: all 36 attention calls dense\nfallback 16: Triton fast path unavailable"
    assert "cross-attention" not in text


def test_the_most_common_fallback_is_named_with_all_fallbacks_counted():
    payload = _payload((0.3,), {"masked attention": 2, "cross-attention": 9, "fewer tokens than min_tokens": 3})
    assert payload["fallback_calls"] == 5 and payload["fallback_reason"] == "fewer tokens than min_tokens"
    assert stats_module.summary_text(payload).endswith("\nfallback 5: fewer tokens than min_tokens")


def test_by_design_dense_calls_are_not_a_fallback():
    payload = _payload((0.3, 0.5), {"cross-attention": 4, "warm-up step": 2})
    assert payload["fallback_calls"] == 0 and payload["fallback_reason"] is None
    text = stats_module.summary_text(payload)
    assert text.startswith("SVG2: 2 sparse / 6 dense calls, mean density 40.0%") and "fallback" not in text
    only_by_design = _payload((), {"cross-attention": 4, "dense layer": 2})
    assert stats_module.summary_text(only_by_design) == \
        "SVG2: all 6 attention calls dense by design (cross-attention, dense layer)"
    assert stats_module.summary_text(_payload()) == "SVG2: all 0 attention calls dense"
