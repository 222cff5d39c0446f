"""The web extension in a real browser: headless Debian chromium (playwright-core) against a real ComfyUI
server with its real frontend (`comfyui-frontend-package`), the pack, and a tiny random Wan 2.1 model.

Run it with `tests/browser/run.sh` (it installs playwright-core into tests/browser/node_modules once).
Skipped unless COMFYUI_PATH is set, /usr/bin/chromium exists and playwright-core is installed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "comfyui"))

from comfy_server import running_server  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
STEPS, LAYERS, LATENT_FRAMES = 8, 3, 5  # tiny_wan_compare.json: 8 steps, 3 Wan blocks, 17 frames


def _skip_reason() -> str | None:
    if not COMFYUI_PATH:
        return "COMFYUI_PATH is not set: the browser test needs a ComfyUI checkout with comfyui-frontend-package"
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium (apt-get install -y chromium)"
    if shutil.which("node") is None:
        return "no node executable"
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed: run tests/browser/run.sh (npm install in tests/browser)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _tiny_checkpoint(directory: Path) -> None:
    """The tiny random Wan 2.1 T2V of the integration tests, built from ComfyUI's own class."""
    import comfy_env

    comfy_env.import_comfyui(Path(COMFYUI_PATH))
    comfy_env.build_checkpoint("wan21_t2v", directory)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("comfyui_browser")
    (root / "diffusion_models").mkdir()
    _tiny_checkpoint(root / "diffusion_models")
    custom_nodes = {"ComfyUI-SVG2": REPO, "svg2_browser_test_nodes": HERE / "custom_nodes" / "svg2_browser_test_nodes"}
    with running_server(Path(COMFYUI_PATH), root, custom_nodes, ("diffusion_models",), real_frontend=True) as (url, log):
        yield {"url": url, "log": log}


@pytest.fixture(scope="module")
def ui(server, tmp_path_factory):
    screenshot = Path(os.environ.get("SVG2_SCREENSHOT") or tmp_path_factory.mktemp("shot") / "svg2-node.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        ["node", str(HERE / "svg2_ui.mjs"), server["url"], str(REPO / "workflows"),
         str(HERE / "tiny_wan_compare.json"), str(screenshot)],
        cwd=HERE, capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, (f"browser script failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}\n"
                                 f"server log:\n{server['log'].read_text()[-3000:]}")
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "screenshot": screenshot}


def test_no_page_errors(ui):
    assert ui["console_errors"] == []


def test_example_workflows_load_in_the_real_frontend(ui):
    assert len(ui["workflows"]) >= 7
    for name, loaded in ui["workflows"].items():
        assert loaded["missing"] == [], f"{name}: unknown node types {loaded['missing']}"
        assert loaded["svg2"], f"{name}: no SVG2 node"
        saved = json.loads((REPO / "workflows" / name).read_text())
        for node in loaded["svg2"]:
            assert node["canvas"], f"{name}: the SVG2 node has no stats canvas"
            original = next(n for n in saved["nodes"] if n["id"] == node["id"])
            # The extension's widgets (preset, canvas) never enter the saved workflow.
            assert node["serialized"] == original["widgets_values"], name
            expected = {"0.9/300/1000": "balanced", "0.95/400/1000": "quality", "0.75/100/500": "turbo"}.get(
                f"{node['values']['top_p']}/{node['values']['num_q_clusters']}/{node['values']['num_k_clusters']}",
                "custom")
            assert node["preset"] == expected, name


def test_preset_widget_sets_the_sliders(ui):
    assert ui["preset"]["turbo"] == {"top_p": 0.75, "num_q_clusters": 100, "num_k_clusters": 500}
    assert ui["preset"]["after_edit"] == "custom"


def test_stats_event_draws_the_heatmap(ui):
    run = ui["run"]
    stats = run["stats"]
    assert stats["steps"] == STEPS and stats["layers"] == LAYERS
    # step 0 (warm-up) and layer 0 (dense layer) stay dense: (8 - 1) x (3 - 1) sparse cells
    sparse_cells = [(s, l) for s, row in enumerate(stats["density"]) for l, d in enumerate(row) if d is not None]
    assert sparse_cells == [(s, l) for s in range(1, STEPS) for l in range(1, LAYERS)]
    assert all(0.0 < stats["density"][s][l] <= 1.0 for s, l in sparse_cells)
    assert stats["sparse"] == len(sparse_cells) * 2  # two CFG branches (different prompt lengths)
    assert stats["dense"] > 0 and stats["seconds"] > 0 and 0 < stats["meanDensity"] <= 1
    assert run["drawn"]["cells"] == STEPS * LAYERS
    pixels = run["heatmap_pixels"]
    assert pixels["lit"] > 0.3 * pixels["width"] * pixels["height"] and pixels["colours"] > 20
    assert not run["innerHTML_has_payload"], "received data must be drawn, not inserted into the page"


def test_payload_parser(ui):
    parsed = ui["parsed"]
    stats = parsed["stats"]
    assert stats["steps"] == 6 and stats["layers"] == 3  # all steps of the sampler call, layers 0..max
    assert stats["density"][2] == [None, 0.2, None] and stats["density"][3] == [None, 0.4, None]
    assert stats["density"][5] == [None, None, None]  # a trailing dense step still gets a column
    assert stats["fallback"] == 3 and stats["sparse"] == 4 and stats["dense"] == 9 and stats["seconds"] == 1.5
    assert parsed["drawn"]["cells"] == 18
    assert parsed["hostile_cells"] == 0 and parsed["injected"] == 0


def test_compare_node_shows_psnr_and_ssim(ui):
    compare = ui["run"]["compare"]
    assert len(compare["psnr"]) == len(compare["ssim"]) == LATENT_FRAMES
    assert all(0.0 < s <= 1.0 for s in compare["ssim"])
    assert ui["run"]["compare_pixels"]["lit"] > 0


def test_view_scales_with_the_node(ui):
    resized = ui["resized"]
    assert resized["after"][0] > resized["before"][0] and resized["after"][1] > resized["before"][1]
    assert resized["cells"] == STEPS * LAYERS


def test_vue_node_renderer_shows_the_heatmap_too(ui):
    version = tuple(int(part) for part in (ui["frontend_version"] or "0").split(".")[:2])
    if version < (1, 42):
        pytest.skip(f"frontend {ui['frontend_version']}: checked that 1.27.10's experimental Vue renderer "
                    "does not mount DOM widgets and 1.42.11's does; versions between are unchecked")
    vue = ui["vue"]
    assert vue["connected"] and vue["width"] > 100 and vue["height"] > 100, vue
    assert vue["cells"] == STEPS * LAYERS and vue["lit"] > 0.3 * vue["width"] * vue["height"]


def test_screenshot_saved(ui):
    assert ui["screenshot"].stat().st_size > 10_000
