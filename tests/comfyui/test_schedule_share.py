"""The warm-up and the dense tail as shares of the denoising schedule, placed by noise level with ComfyUI's own
`model_sampling.percent_to_sigma` and schedulers, and the step counts that workflows saved before the percent
widgets keep. The sigma tests need ComfyUI (COMFYUI_PATH); the widget migration runs without it."""
from __future__ import annotations

import types

import pytest
import torch

from comfy_env import load_pack, patch_node

pack = load_pack()
svg2_patch = pack.nodes.svg2_patch
Schedule = pack.nodes.attention_override.Schedule
NODE = svg2_patch.SVG2SparseAttention

# the SVG2 node of workflows/wan2.2_a14b_t2v_720p.json as saved before the percent widgets: high-noise expert
# (4 dense warm-up steps of its sampler) and low-noise expert (none)
SAVED_HIGH_NOISE = [0.9, 300, 1000, 4, 1, "auto", 0, 0.1, 2, 8192, False, True]
SAVED_LOW_NOISE = [0.9, 300, 1000, 0, 1, "auto", 0, 0.1, 2, 8192, False, True]


def _flow_sampling(shift: float):
    import comfy.model_sampling

    return comfy.model_sampling.ModelSamplingDiscreteFlow(
        types.SimpleNamespace(sampling_settings={"shift": shift, "multiplier": 1000}))


def _sigmas(sampling, steps: int, scheduler: str = "simple") -> torch.Tensor:
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(sampling, scheduler, steps)


def _dense_steps(schedule, sigmas: torch.Tensor, percent_to_sigma, phase: str) -> list[int]:
    """Steps of one sampler call over `sigmas` ([steps + 1]) that `schedule` keeps dense for `phase`."""
    total = len(sigmas) - 1
    return [step for step in range(total)
            if schedule.phase(step, total, float(sigmas[step]), percent_to_sigma) == phase]


def _widgets_as_the_frontend_loads_them(saved: list) -> dict:
    """A saved node's positional widgets_values -> named values; widgets the save predates get their defaults,
    as ComfyUI's frontend does."""
    inputs = NODE.INPUT_TYPES()
    names = [name for section in ("required", "optional") for name in inputs[section] if name != "model"]
    defaults = {name: spec[1]["default"] for section in ("required", "optional")
                for name, spec in inputs[section].items() if name != "model"}
    assert len(saved) < len(names), "the saved node predates the percent widgets"
    return {**defaults, **dict(zip(names, saved))}


def _schedule_of(values: dict, monkeypatch):
    (_, schedule), = patch_node(NODE, monkeypatch, values)
    return schedule


@pytest.mark.parametrize("shift", [8.0, 5.0])
@pytest.mark.parametrize("scheduler", ["simple", "normal"])
def test_default_warmup_is_a_fifth_of_the_schedule_at_any_step_count(comfyui, shift, scheduler):
    sampling = _flow_sampling(shift)
    schedule = Schedule(-1, -1, 1, 0)
    assert (schedule.dense_warmup_percent, schedule.dense_last_percent) == (0.2, 0.0)
    for steps, dense in ((4, 1), (8, 2), (20, 4), (50, 10)):
        sigmas = _sigmas(sampling, steps, scheduler)
        assert _dense_steps(schedule, sigmas, sampling.percent_to_sigma, "warm-up step") == list(range(dense))
        assert _dense_steps(schedule, sigmas, sampling.percent_to_sigma, "last step") == []


def test_dense_tail_share(comfyui):
    sampling = _flow_sampling(8.0)
    schedule = Schedule(-1, -1, 1, 0, dense_warmup_percent=0.0, dense_last_percent=0.1)
    for steps, tail in ((4, []), (8, []), (20, [18, 19]), (50, [45, 46, 47, 48, 49])):
        sigmas = _sigmas(sampling, steps)
        assert _dense_steps(schedule, sigmas, sampling.percent_to_sigma, "last step") == tail
        assert _dense_steps(schedule, sigmas, sampling.percent_to_sigma, "warm-up step") == []


@pytest.mark.parametrize("steps, split", [(4, 2), (20, 10), (8, 4)])
def test_two_samplers_splitting_one_schedule_share_the_warmup(comfyui, steps, split):
    """Wan 2.2: the high-noise KSamplerAdvanced runs sigmas[:split + 1], the low-noise one sigmas[split:], each
    counting its own steps from 0; the same default on both nodes gives the single sampler's warm-up."""
    sampling = _flow_sampling(8.0)
    sigmas = _sigmas(sampling, steps)
    schedule = Schedule(-1, -1, 1, 0)
    whole = _dense_steps(schedule, sigmas, sampling.percent_to_sigma, "warm-up step")
    high = _dense_steps(schedule, sigmas[:split + 1], sampling.percent_to_sigma, "warm-up step")
    low = _dense_steps(schedule, sigmas[split:], sampling.percent_to_sigma, "warm-up step")
    assert whole and high == whole and low == []


def test_without_the_models_sigmas_the_percent_counts_this_samplers_steps():
    schedule = Schedule(-1, -1, 1, 0, dense_warmup_percent=0.2, dense_last_percent=0.1)
    phases = [schedule.phase(step, 50, None, None) for step in range(50)]
    assert phases[:10] == ["warm-up step"] * 10 and phases[10] is None
    assert phases[44] is None and phases[45:] == ["last step"] * 5


def test_step_counts_take_precedence_over_the_percent(comfyui):
    sampling = _flow_sampling(8.0)
    sigmas = _sigmas(sampling, 50)
    schedule = Schedule(3, 2, 1, 0, dense_warmup_percent=0.5, dense_last_percent=0.5)
    assert _dense_steps(schedule, sigmas, sampling.percent_to_sigma, "warm-up step") == [0, 1, 2]
    assert _dense_steps(schedule, sigmas, sampling.percent_to_sigma, "last step") == [48, 49]


def test_a_saved_workflow_keeps_its_step_counts(comfyui, monkeypatch):
    """The Wan 2.2 nodes saved before the percent widgets: 4 warm-up steps on the high-noise sampler (10 of
    20), none on the low-noise one, no dense tail, whatever the new widgets' defaults say."""
    sampling = _flow_sampling(8.0)
    sigmas = _sigmas(sampling, 20)
    high = _schedule_of(_widgets_as_the_frontend_loads_them(SAVED_HIGH_NOISE), monkeypatch)
    low = _schedule_of(_widgets_as_the_frontend_loads_them(SAVED_LOW_NOISE), monkeypatch)
    assert (high.dense_warmup_steps, high.dense_last_steps, low.dense_warmup_steps) == (4, 0, 0)
    assert _dense_steps(high, sigmas[:11], sampling.percent_to_sigma, "warm-up step") == [0, 1, 2, 3]
    assert _dense_steps(low, sigmas[10:], sampling.percent_to_sigma, "warm-up step") == []
    for schedule, part in ((high, sigmas[:11]), (low, sigmas[10:])):
        assert _dense_steps(schedule, part, sampling.percent_to_sigma, "last step") == []


def test_a_prompt_without_the_new_inputs_keeps_its_meaning(monkeypatch):
    """API-format prompts written before the percent widgets lack them and dense_last_steps may be absent."""
    values = dict(top_p=0.9, num_q_clusters=300, num_k_clusters=1000, dense_warmup_steps=10, dense_layers=1,
                  backend="auto")
    schedule = _schedule_of(values, monkeypatch)
    assert [schedule.phase(step, 50, None, None) for step in range(50)] == ["warm-up step"] * 10 + [None] * 40


def test_a_new_node_uses_the_percent(monkeypatch):
    values = _widgets_as_the_frontend_loads_them([])
    assert (values["dense_warmup_steps"], values["dense_last_steps"]) == (-1, -1)
    assert (values["dense_warmup_percent"], values["dense_last_percent"]) == (0.2, 0.0)
    schedule = _schedule_of(values, monkeypatch)
    assert [schedule.phase(step, 4, None, None) for step in range(4)] == ["warm-up step", None, None, None]


@pytest.mark.parametrize("name, value", [("dense_warmup_percent", 1.5), ("dense_last_percent", -0.1),
                                         ("dense_warmup_steps", -2)])
def test_bad_schedule_values_raise_naming_the_range(name, value):
    values = dict(top_p=0.9, num_q_clusters=300, num_k_clusters=1000, dense_warmup_steps=-1, dense_layers=1,
                  backend="auto")
    with pytest.raises(ValueError, match=rf"{name} must be"):
        NODE().patch(None, **{**values, name: value})
