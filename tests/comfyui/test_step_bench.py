"""benchmarks/wan_step.py (the H200 step benchmark) smoke-run on the CPU against this ComfyUI: both model
families (and Wan 2.2 5B's 48-channel latent) build from ComfyUI's own classes, run through the node's patch
and report a step each."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import comfy_env
from conftest import SKIP_REASON

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_wan_and_hunyuan_steps_run_through_the_patch(tmp_path):
    path = comfy_env.comfyui_path()
    if path is None:
        pytest.skip(SKIP_REASON)
    out = tmp_path / "steps.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "wan_step.py"), "--comfyui", str(path), "--tiny",
                    "--json", str(out)], check=True, capture_output=True, text=True, timeout=600)
    cases = {case["case"]: case for case in json.loads(out.read_text())["cases"]}
    wan, hunyuan = cases["tiny Wan (CPU smoke)"], cases["tiny HunyuanVideo (CPU smoke)"]
    wan22 = cases["tiny Wan 2.2 5B-like, 48 latent channels (CPU smoke)"]  # Wan 2.2 TI2V 5B's latent
    assert (wan["batch"], wan22["batch"], hunyuan["batch"]) == (2, 2, 1)  # Wan: both CFG branches; Hunyuan: one
    assert hunyuan["text_tokens_in_the_sequence"] == 7 and hunyuan["layers"] == 4 and wan22["layers"] == 2
    for case in (wan, wan22, hunyuan):
        # every self-attention layer but the first (dense_layers 1) went through SVG2's reference backend
        assert case["sparse_calls_per_step"] == case["layers"] - 1
        assert set(case["svg2_backends"]) == {"torch"}
        assert 0.0 < case["measured_density"] < 1.0
        assert case["dense_step_ms"] > 0 and case["sparse_step_ms"] > 0
