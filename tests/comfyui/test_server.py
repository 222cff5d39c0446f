"""A headless ComfyUI server (`main.py --cpu`) with this pack as a custom node: the node's schema in
/object_info, and a queued prompt with two patched models that sends one `svg2.stats` event per node."""
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest

import comfy_env
from comfy_server import get_json, running_server

HELPER_NODES = Path(__file__).resolve().parent / "helper_nodes" / "svg2_test_nodes"
STEPS = 3


def _post(url, payload):
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """host:port of a running server whose diffusion_models folder holds a tiny Wan and HunyuanVideo."""
    path = comfy_env.comfyui_path()
    if path is None:
        pytest.skip("COMFYUI_PATH is not set: the headless server test needs a ComfyUI checkout")
    pytest.importorskip("websocket", reason="the server test needs websocket-client")
    root = tmp_path_factory.mktemp("svg2_server")
    models = root / "diffusion_models"
    models.mkdir()
    builder = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import comfy_env, pathlib; "
               f"comfy_env.import_comfyui(pathlib.Path({str(path)!r})); "
               f"[comfy_env.build_checkpoint(n, pathlib.Path({str(models)!r})) "
               f"for n in ('wan21_t2v', 'hunyuan_video')]")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    subprocess.run([python, "-c", builder], check=True, capture_output=True, cwd=path)
    custom_nodes = {"ComfyUI-SVG2": comfy_env.ROOT, "svg2_test_nodes": HELPER_NODES}
    with running_server(path, root, custom_nodes, ("diffusion_models",)) as (url, _):
        yield url.removeprefix("http://")


def test_object_info_shows_the_node_with_ranges_and_tooltips(server):
    info = get_json(f"http://{server}/object_info/SVG2SparseAttention")["SVG2SparseAttention"]
    assert info["display_name"] == "SVG2 Sparse Attention"
    assert info["output"] == ["MODEL"]
    required, optional = info["input"]["required"], info["input"]["optional"]
    top_p = required["top_p"][1]
    assert (top_p["default"], top_p["min"], top_p["max"], top_p["display"]) == (0.9, 0.01, 1.0, "slider")
    assert required["num_q_clusters"][1]["default"] == 300 and required["num_k_clusters"][1]["default"] == 1000
    assert required["backend"][0] == ["auto", "triton", "torch"]
    assert set(optional) == {"dense_last_steps", "min_k_cluster_ratio", "kmeans_iters", "min_tokens", "allow_compile",
                             "qk_int8", "dense_warmup_percent", "dense_last_percent"}
    for name, spec in {**required, **optional}.items():
        assert spec[1].get("tooltip"), name
    assert info["input"]["hidden"] == {"unique_id": "UNIQUE_ID"}


def _sampler_chain(prompt, prefix, checkpoint, family, top_p):
    """loader -> SVG2 node -> KSampler -> sink, ids prefixed with `prefix`."""
    latent_node = f"{prefix}latent"
    prompt.update({
        f"{prefix}loader": {"class_type": "UNETLoader", "inputs": {"unet_name": checkpoint, "weight_dtype": "default"}},
        f"{prefix}svg2": {"class_type": "SVG2SparseAttention", "inputs": {
            "model": [f"{prefix}loader", 0], "top_p": top_p, "num_q_clusters": 4, "num_k_clusters": 8,
            "dense_warmup_steps": 1, "dense_layers": 0, "backend": "torch", "min_tokens": 16}},
        f"{prefix}pos": {"class_type": "SVG2TestConditioning", "inputs": {"tokens": 7, "seed": 1, "family": family}},
        f"{prefix}neg": {"class_type": "SVG2TestConditioning", "inputs": {"tokens": 5, "seed": 2, "family": family}},
        latent_node: {"class_type": "EmptyHunyuanLatentVideo",
                      "inputs": {"width": 96, "height": 64, "length": 9, "batch_size": 1}},
        f"{prefix}sampler": {"class_type": "KSampler", "inputs": {
            "model": [f"{prefix}svg2", 0], "seed": 0, "steps": STEPS, "cfg": 3.0, "sampler_name": "euler",
            "scheduler": "simple", "positive": [f"{prefix}pos", 0], "negative": [f"{prefix}neg", 0],
            "latent_image": [latent_node, 0], "denoise": 1.0}},
        f"{prefix}sink": {"class_type": "SVG2TestLatentSink", "inputs": {"samples": [f"{prefix}sampler", 0]}},
    })


def test_a_queued_prompt_with_two_patched_models_reports_stats_on_the_websocket(server):
    import websocket

    client_id = uuid.uuid4().hex
    socket_ = websocket.create_connection(f"ws://{server}/ws?clientId={client_id}", timeout=120)
    prompt = {}
    _sampler_chain(prompt, "1", "svg2_tiny_wan21_t2v.safetensors", "wan", 0.5)
    _sampler_chain(prompt, "2", "svg2_tiny_hunyuan_video.safetensors", "hunyuan_video", 0.7)
    queued = _post(f"http://{server}/prompt", {"prompt": prompt, "client_id": client_id})
    assert queued.get("node_errors") == {}, queued
    events = {}
    try:
        while True:
            message = socket_.recv()
            if not isinstance(message, str):
                continue  # binary previews / progress text
            event = json.loads(message)
            if event["type"] == "svg2.stats":
                events[event["data"]["node"]] = event["data"]
            if event["type"] == "execution_error":
                pytest.fail(f"prompt failed: {event['data']}")
            if event["type"] == "executing" and event["data"].get("node") is None \
                    and event["data"].get("prompt_id") == queued["prompt_id"]:
                break
    finally:
        socket_.close()
    history = get_json(f"http://{server}/history/{queued['prompt_id']}")[queued["prompt_id"]]
    assert history["status"]["status_str"] == "success"
    assert set(events) == {"1svg2", "2svg2"}
    layers = {"1svg2": comfy_env.SELF_ATTENTION_LAYERS["wan21_t2v"], "2svg2": comfy_env.SELF_ATTENTION_LAYERS["hunyuan_video"]}
    for node, stats in events.items():
        assert stats["sparse_calls"] == layers[node] * (STEPS - 1) * 2
        assert stats["dense_reasons"]["warm-up step"] == layers[node] * 2
        assert stats["settings"]["top_p"] == (0.5 if node == "1svg2" else 0.7)
        assert 0.0 < stats["mean_density"] < 1.0 and stats["svg2_time_ms"] > 0.0
    assert events["1svg2"]["model"] == "wan" and events["2svg2"]["model"] == "hunyuan_video"
