"""The example workflows against a real ComfyUI server with this pack loaded.

Every `workflows/*.json` (UI format) is converted to API format the way the frontend does it, then checked
against `/object_info` (node types, widget order and values, link types, required inputs), the SVG2 node's
place in the graph, and ComfyUI's own prompt validation (`POST /prompt`). Model files are empty
placeholders with the workflows' file names, so validation passes and execution stops at the first loader.
Needs `COMFYUI_PATH` (a ComfyUI checkout); `COMFYUI_PYTHON` defaults to the interpreter running pytest.
The link checks run without ComfyUI.
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from comfy_server import get_json, running_server

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
# workflows as saved before the schedule-share widgets (dense_warmup_percent, dense_last_percent) existed
SAVED_WORKFLOWS = sorted((Path(__file__).resolve().parent / "saved_workflows").glob("*.json"))
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")


FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
LOADER_FOLDERS = {
    "UNETLoader": ("diffusion_models", ["unet_name"]),
    "CLIPLoader": ("text_encoders", ["clip_name"]),
    "DualCLIPLoader": ("text_encoders", ["clip_name1", "clip_name2"]),
    "VAELoader": ("vae", ["vae_name"]),
    "CLIPVisionLoader": ("clip_vision", ["clip_name"]),
    "LoraLoaderModelOnly": ("loras", ["lora_name"]),
}
MODEL_LOADERS = {"UNETLoader"}
SAMPLERS = {"KSampler", "KSamplerAdvanced", "BasicGuider", "CFGGuider"}
SVG2_NODE = "SVG2SparseAttention"


def _post(url: str, payload: dict):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _widget_inputs(info: dict):
    """(name, spec) of every input in the order ComfyUI's frontend creates widgets and sockets."""
    order = info.get("input_order") or {}
    for section in ("required", "optional"):
        inputs = info["input"].get(section, {})
        for name in order.get(section) or list(inputs):
            yield name, inputs[name]


def _kind(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) or spec[0] == "COMBO" else spec[0]


def _options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _combo_values(spec) -> list:
    return spec[0] if isinstance(spec[0], list) else _options(spec).get("options", [])


def _check_widget(where: str, spec, value) -> None:
    kind, opts = _kind(spec), _options(spec)
    if kind == "COMBO":
        assert value in _combo_values(spec), f"{where}: {value!r} is not one of the allowed values"
        return
    if kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: expected a boolean, got {value!r}"
        return
    if kind == "STRING":
        assert isinstance(value, str), f"{where}: expected a string, got {value!r}"
        return
    numeric = (int,) if kind == "INT" else (int, float)
    assert isinstance(value, numeric) and not isinstance(value, bool), f"{where}: expected {kind}, got {value!r}"
    if "min" in opts:
        assert value >= opts["min"], f"{where}: {value} is below the minimum {opts['min']}"
    if "max" in opts:
        assert value <= opts["max"], f"{where}: {value} is above the maximum {opts['max']}"


def to_api(workflow: dict, object_info: dict) -> dict:
    """UI-format workflow -> API-format prompt, checking everything the frontend would need on the way."""
    links = {link[0]: link for link in workflow["links"]}
    nodes = {node["id"]: node for node in workflow["nodes"]}
    prompt = {}
    for node in workflow["nodes"]:
        node_type = node["type"]
        if node_type in FRONTEND_ONLY:
            continue
        where = f"node {node['id']} ({node_type})"
        assert node.get("mode", 0) == 0, f"{where}: muted or bypassed nodes do not belong in an example"
        assert node_type in object_info, f"{where}: node type is not registered in this ComfyUI"
        info = object_info[node_type]
        socket_links = {slot["name"]: slot.get("link") for slot in node.get("inputs", [])}
        values = list(node.get("widgets_values") or [])
        inputs = {}
        for name, spec in _widget_inputs(info):
            kind, opts = _kind(spec), _options(spec)
            is_widget = kind in WIDGET_TYPES and not opts.get("forceInput")
            if is_widget and not values:
                # the frontend gives a widget that a saved node predates (added at the end) its default
                assert "default" in opts, f"{where}: no widget value left for {name!r}"
                value = opts["default"]
            elif is_widget:
                value = values.pop(0)
                if opts.get("control_after_generate"):
                    assert values and values.pop(0) in ("fixed", "increment", "decrement", "randomize"), (
                        f"{where}: {name!r} needs a control_after_generate value after it")
                if opts.get("image_upload"):
                    assert values and values.pop(0) == "image", f"{where}: missing the upload widget value"
            link_id = socket_links.get(name)
            if link_id is not None:
                _, src, src_slot, _, _, link_type = links[link_id]
                src_node = nodes[src]
                src_type = src_node["outputs"][src_slot]["type"]
                assert src_type == kind or "*" in (src_type, kind), (
                    f"{where}: input {name!r} ({kind}) is linked to a {src_type} output")
                assert link_type == src_type, f"{where}: link {link_id} says {link_type}, the output is {src_type}"
                inputs[name] = [str(src), src_slot]
            elif is_widget:
                _check_widget(f"{where}.{name}", spec, value)
                inputs[name] = value
            else:
                required = name in info["input"].get("required", {})
                assert not required, f"{where}: required input {name!r} is not connected"
        assert not values, f"{where}: {len(values)} widget values left over: {values!r}"
        prompt[str(node["id"])] = {"class_type": node_type, "inputs": inputs}
    return prompt


def _model_sources(prompt: dict, node_id: str) -> list[list[str]]:
    """Every chain of node ids from a model loader down the MODEL links into `node_id` (inclusive)."""
    node = prompt[node_id]
    if node["class_type"] in MODEL_LOADERS:
        return [[node_id]]
    model = node["inputs"].get("model")
    if not isinstance(model, list):
        return []
    return [chain + [node_id] for chain in _model_sources(prompt, model[0])]


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _placeholder_files(workflows: list[dict], root: Path) -> None:
    for workflow in workflows:
        for node in workflow["nodes"]:
            if node["type"] in LOADER_FOLDERS:
                folder, _ = LOADER_FOLDERS[node["type"]]
                count = len(LOADER_FOLDERS[node["type"]][1])
                for name in node["widgets_values"][:count]:
                    (root / folder).mkdir(parents=True, exist_ok=True)
                    (root / folder / name).touch()
            if node["type"] == "LoadImage":
                from PIL import Image  # ComfyUI's environment has Pillow

                (root / "input").mkdir(exist_ok=True)
                Image.new("RGB", (64, 64), (90, 120, 160)).save(root / "input" / node["widgets_values"][0])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not COMFYUI_PATH:
        pytest.skip("COMFYUI_PATH is not set: these tests need a real ComfyUI checkout (see DEVELOPERS.md)")
    root = tmp_path_factory.mktemp("comfyui")
    _placeholder_files([_load(p) for p in WORKFLOWS + SAVED_WORKFLOWS], root)
    folders = tuple(sorted({folder for folder, _ in LOADER_FOLDERS.values()}))
    with running_server(Path(COMFYUI_PATH), root, {"ComfyUI-SVG2": REPO}, folders) as (url, log):
        yield {"url": url, "object_info": get_json(url + "/object_info", timeout=60), "log": log}


def test_every_workflow_is_here():
    names = {p.stem for p in WORKFLOWS}
    assert len(names) >= 7, names
    for model in ("wan2.1_t2v_1.3B", "wan2.1_t2v_14B", "wan2.1_i2v_14B", "wan2.2_a14b", "wan2.2_ti2v_5B", "hunyuan", "compare",
                  "wan2.2_a14b_t2v_720p_lightx2v_4step", "wan2.1_t2v_14B_720p_lightx2v_8step"):
        assert any(model in name for name in names), f"no workflow for {model}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_links_are_consistent(path):
    """Without ComfyUI: every link joins existing slots of matching type, as the frontend expects."""
    workflow = _load(path)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(nodes)
    assert workflow["last_link_id"] >= max(link[0] for link in workflow["links"])
    for link_id, src, src_slot, dst, dst_slot, link_type in workflow["links"]:
        output = nodes[src]["outputs"][src_slot]
        target = nodes[dst]["inputs"][dst_slot]
        assert link_id in output["links"] and target["link"] == link_id, f"link {link_id}"
        assert output["type"] == target["type"] == link_type, f"link {link_id}: {output['type']} -> {target['type']}"
    linked = {link[0] for link in workflow["links"]}
    for node in workflow["nodes"]:
        for slot in node.get("inputs", []):
            assert slot["link"] is None or slot["link"] in linked, f"node {node['id']}.{slot['name']}"


def test_pack_nodes_are_registered(server):
    info = server["object_info"]
    assert SVG2_NODE in info, "SVG2SparseAttention is missing: did the pack fail to import? see " + str(server["log"])
    assert info[SVG2_NODE]["display_name"] == "SVG2 Sparse Attention"
    assert "SVG2Compare" in info and info["SVG2Compare"]["display_name"] == "SVG2 Compare"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_matches_object_info(server, path):
    workflow = _load(path)
    assert workflow.get("version") == 0.4 and workflow["nodes"] and workflow["links"]
    prompt = to_api(workflow, server["object_info"])
    assert any(n["class_type"] in ("SaveVideo", "SaveAnimatedWEBP") for n in prompt.values())
    types = {n["type"] for n in workflow["nodes"]}
    assert "MarkdownNote" in types or "Note" in types, "every example explains the knobs in a note"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_svg2_sits_between_loader_and_sampler(server, path):
    prompt = to_api(_load(path), server["object_info"])
    samplers = [i for i, n in prompt.items() if n["class_type"] in SAMPLERS]
    assert samplers, "no sampler"
    patched, unpatched = [], []
    for sampler in samplers:
        chains = _model_sources(prompt, sampler)
        assert chains, f"sampler {sampler}: its model does not come from a model loader"
        for chain in chains:
            svg2_nodes = [i for i in chain if prompt[i]["class_type"] == SVG2_NODE]
            assert len(svg2_nodes) <= 1, f"sampler {sampler}: two SVG2 nodes on one model path"
            (patched if svg2_nodes else unpatched).append(sampler)
    if "compare" in path.stem:
        assert patched and unpatched, "the comparison needs one dense and one SVG2 sampler"
    else:
        assert not unpatched, f"samplers {unpatched} run the model without SVG2"
    assert len({i for i, n in prompt.items() if n["class_type"] == SVG2_NODE}) == sum(
        1 for n in prompt.values() if n["class_type"] in MODEL_LOADERS), "one SVG2 node per diffusion model"


def _wan22_experts(prompt: dict):
    """(high-noise KSamplerAdvanced, its SVG2 inputs), (low-noise one, its SVG2 inputs)."""
    experts = {}
    for node in prompt.values():
        if node["class_type"] == "KSamplerAdvanced":
            model_chain = _model_sources(prompt, node["inputs"]["model"][0])[0]
            svg2 = next(prompt[i] for i in model_chain if prompt[i]["class_type"] == SVG2_NODE)
            experts[node["inputs"]["start_at_step"]] = (node, svg2["inputs"])
    return experts[0], experts[max(experts)]


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if "wan2.2_a14b" in p.stem], ids=lambda p: p.stem)
def test_wan22_experts_share_one_warmup(server, path):
    """Step counts (older workflows) belong on the high-noise expert; a percent is the same on both experts."""
    (high, high_svg2), (low, low_svg2) = _wan22_experts(to_api(_load(path), server["object_info"]))
    assert high["inputs"]["end_at_step"] == low["inputs"]["start_at_step"]
    if high_svg2["dense_warmup_steps"] >= 0:
        assert 0 < high_svg2["dense_warmup_steps"] <= high["inputs"]["end_at_step"]
        assert low_svg2["dense_warmup_steps"] == 0
    else:
        assert low_svg2["dense_warmup_steps"] == -1
        assert high_svg2["dense_warmup_percent"] == low_svg2["dense_warmup_percent"] > 0


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if "lightx2v" in p.stem], ids=lambda p: p.stem)
def test_distilled_workflows_run_few_steps_at_cfg_1_with_the_lora_on_every_model(server, path):
    prompt = to_api(_load(path), server["object_info"])
    samplers = [n for n in prompt.values() if n["class_type"] in ("KSampler", "KSamplerAdvanced")]
    assert samplers and all(n["inputs"]["cfg"] == 1.0 and 4 <= n["inputs"]["steps"] <= 8 for n in samplers)
    for node_id, node in prompt.items():
        if node["class_type"] == SVG2_NODE:
            chain = _model_sources(prompt, node_id)[0]
            assert any(prompt[i]["class_type"] == "LoraLoaderModelOnly" for i in chain), "no LoRA before SVG2"
            assert node["inputs"]["dense_warmup_steps"] == -1 and node["inputs"]["dense_warmup_percent"] == 0.2


@pytest.mark.parametrize("path", SAVED_WORKFLOWS, ids=lambda p: p.stem)
def test_a_workflow_saved_before_the_percent_widgets_loads_with_its_meaning(server, path):
    """Its SVG2 nodes keep their step counts (0 or more, which take precedence over the percent) and ComfyUI
    accepts the prompt the frontend makes of it."""
    workflow = _load(path)
    saved = {str(n["id"]): n["widgets_values"] for n in workflow["nodes"] if n["type"] == SVG2_NODE}
    prompt = to_api(workflow, server["object_info"])
    for node_id, values in saved.items():
        inputs = prompt[node_id]["inputs"]
        assert len(values) == 12 and (inputs["dense_warmup_steps"], inputs["dense_last_steps"]) == (values[3], values[6])
        assert inputs["dense_warmup_steps"] >= 0 and inputs["dense_last_steps"] >= 0
    status, answer = _post(server["url"] + "/prompt", {"prompt": prompt, "client_id": "svg2-workflow-test"})
    assert status == 200 and not answer.get("node_errors"), json.dumps(answer, indent=1)[:3000]
    _wait(server, answer["prompt_id"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_comfyui_accepts_the_prompt(server, path):
    prompt = to_api(_load(path), server["object_info"])
    status, answer = _post(server["url"] + "/prompt", {"prompt": prompt, "client_id": "svg2-workflow-test"})
    assert status == 200 and not answer.get("node_errors"), json.dumps(answer, indent=1)[:3000]
    _wait(server, answer["prompt_id"])


def _wait(server, prompt_id: str) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:  # it fails at the first (empty) model file; wait so prompts don't pile up
        if get_json(f"{server['url']}/history/{prompt_id}").get(prompt_id):
            return
        time.sleep(0.2)
    pytest.fail(f"prompt {prompt_id} did not finish")
