"""Constants with one home: the library's dtypes and backend names as the node and the fast path use them,
the by-design dense reasons in Python and in the web extension, the node's widget ranges within SVG2Config's."""
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from svg2_core import SVG2Config, api, backends

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "comfyui"))
from comfy_env import load_pack  # noqa: E402  (the pack as ComfyUI imports it; no ComfyUI needed)

pack = load_pack()
stats_module = pack.nodes.stats
svg2_patch = pack.nodes.svg2_patch


def _web_by_design_reasons() -> set[str]:
    """The BY_DESIGN_DENSE set literal of web/svg2.js (a JSON array of strings)."""
    source = (ROOT / "web" / "svg2.js").read_text()
    found = re.search(r"const BY_DESIGN_DENSE = new Set\((\[.*?\])\);", source, re.S)
    assert found, "web/svg2.js must define `const BY_DESIGN_DENSE = new Set([...]);`"
    return set(json.loads(found.group(1)))


def test_web_extension_lists_the_same_by_design_dense_reasons_as_python():
    assert _web_by_design_reasons() == set(stats_module.BY_DESIGN_DENSE_REASONS)


def test_the_override_reports_the_by_design_reasons_of_stats():
    override = pack.nodes.attention_override
    assert override.BY_DESIGN_DENSE_REASONS is stats_module.BY_DESIGN_DENSE_REASONS
    assert override.KEEPS_EVERY_BLOCK in stats_module.BY_DESIGN_DENSE_REASONS
    assert override.SUPPORTED_DTYPES is pack.svg2_core.api.SUPPORTED_DTYPES


def test_fast_path_dtypes_are_among_the_library_dtypes():
    from svg2_core import triton_backend

    assert set(triton_backend.FAST_PATH_DTYPES) < set(api.SUPPORTED_DTYPES)
    assert torch.float32 in api.SUPPORTED_DTYPES


def test_node_offers_exactly_the_library_backends():
    inputs = svg2_patch.SVG2SparseAttention.INPUT_TYPES()
    assert tuple(inputs["required"]["backend"][0]) == backends.BACKEND_NAMES


CONFIG_WIDGETS = ["top_p", "num_q_clusters", "num_k_clusters", "min_k_cluster_ratio", "kmeans_iters"]


@pytest.mark.parametrize("name", CONFIG_WIDGETS)
def test_widget_range_lies_within_svg2_config_range(name):
    """Every value the node lets through is one SVG2Config accepts (the node may offer a narrower range)."""
    kind, default, low, high, _, _ = {**svg2_patch.REQUIRED_WIDGETS, **svg2_patch.ADVANCED_WIDGETS}[name]
    for value in (low, default, high):
        SVG2Config(**{name: value})
    if kind == "FLOAT":
        assert isinstance(low, float) and isinstance(high, float)
