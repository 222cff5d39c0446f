"""`python -m svg2_core.bench` on the CPU (reference backend, tiny shape) and its positional baseline."""
import json
import math

import pytest
import torch

from svg2_core import bench


def _installed(module):
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def test_default_cpu_run_writes_the_table(tmp_path, caplog):
    path = tmp_path / "bench.json"
    with caplog.at_level("INFO", logger="svg2.bench"):
        assert bench.main(["--json", str(path), "--rows-per-head", "64"]) == 0
    payload = json.loads(path.read_text())
    result = payload["results"][0]
    methods = [row["method"] for row in result["rows"]]
    assert result["shape"] == "tiny" and "math SDPA" in methods
    # optional peers get a row only where installed, else a stated reason and no row
    for module, prefix in (("comfy_kitchen", "comfy-kitchen sol_attn"), ("sageattention", "SageAttention")):
        if not _installed(module):
            assert not any(method.startswith(prefix) for method in methods)
            assert any(reason.startswith(prefix) and "not installed" in reason for reason in result["not_run"])
    # the printed table: the CPU caveat, a legend, no NaN cell, the cold k-means said to be untimed
    text = caplog.text
    assert payload["note"] == bench.CPU_NOTE and bench.CPU_NOTE in text and "err/dense  relative" in text
    assert "nan" not in text.lower() and "cold x8 n/a" in text
    svg2 = next(row for row in result["rows"] if row["method"].startswith("SVG2"))
    positional = next(row for row in result["rows"] if row["method"].startswith("positional"))
    assert 0 < svg2["density"] <= 1 and 0 < svg2["recall"] <= 1 + 1e-6
    assert abs(positional["density"] - svg2["density"]) < 0.1
    # int8 scores by default (the node's setting): the fp32 reference then differs from the oracle by their
    # rounding only (error vs the sparse mask's own oracle, not vs dense)
    assert result["qk"] == "int8" and 1e-5 < svg2["error_vs_oracle"] < 0.05


def test_cpu_run_with_input_precision_scores_is_the_oracle(tmp_path):
    path = tmp_path / "bench.json"
    assert bench.main(["--json", str(path), "--rows-per-head", "64", "--qk", "input", "--sol-tau"]) == 0
    result = json.loads(path.read_text())["results"][0]
    svg2 = next(row for row in result["rows"] if row["method"].startswith("SVG2"))
    assert result["qk"] == "input" and svg2["error_vs_oracle"] < 1e-5  # the fp32 reference is the oracle


def test_positional_plan_keeps_the_requested_fraction_of_key_blocks():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 512, 32, generator=generator), torch.randn(2, 512, 32, generator=generator)
    plan = bench.positional_plan(q, k, torch.tensor([0.25, 0.5]), 1 / math.sqrt(32))
    assert plan.block_mask.shape == (2, 4, 8)
    assert plan.block_mask.sum(-1).tolist() == [[2] * 4, [4] * 4]
    assert plan.q_cluster_sizes.sum(-1).tolist() == [512, 512]


def test_calibrate_top_p_finds_the_target_density():
    assert abs(bench.calibrate_top_p(lambda p: p ** 2, 0.3) - 0.3 ** 0.5) < 1e-3


def test_density_targets_add_calibrated_rows(tmp_path):
    path = tmp_path / "bench.json"
    assert bench.main(["--json", str(path), "--rows-per-head", "16", "--top-p", "--density", "0.5"]) == 0
    rows = [row for row in json.loads(path.read_text())["results"][0]["rows"] if row["method"].startswith("SVG2")]
    assert len(rows) == 1 and abs(rows[0]["density"] - 0.5) < 0.15


def test_comparison_with_sol_attn_picks_the_most_accurate_svg2_call_that_is_as_fast():
    rows = [{"method": "SVG2 top_p=0.6", "total_ms": 50.0, "error_vs_dense": 0.20},
            {"method": "SVG2 top_p=0.9", "total_ms": 90.0, "error_vs_dense": 0.08},
            {"method": "comfy-kitchen sol_attn tau=1.0", "ms": 100.0, "error_vs_dense": 0.30},
            {"method": "comfy-kitchen sol_attn tau=2.0", "ms": 60.0, "error_vs_dense": 0.45},
            {"method": "comfy-kitchen sol_attn tau=3.0", "ms": 40.0, "error_vs_dense": 0.60}]
    verdicts = {v["sol_attn"]: v for v in bench.compare_with_sol_attn(rows)}
    assert verdicts["comfy-kitchen sol_attn tau=1.0"]["svg2"] == "SVG2 top_p=0.9"
    assert verdicts["comfy-kitchen sol_attn tau=1.0"]["svg2_error_at_most_half"] is True
    assert verdicts["comfy-kitchen sol_attn tau=2.0"]["svg2"] == "SVG2 top_p=0.6"
    assert verdicts["comfy-kitchen sol_attn tau=2.0"]["svg2_error_at_most_half"] is True
    assert verdicts["comfy-kitchen sol_attn tau=3.0"]["svg2"] is None
    assert verdicts["comfy-kitchen sol_attn tau=3.0"]["svg2_error_at_most_half"] is False


def test_min_k_cluster_ratio_sets_the_density_floor(tmp_path):
    densities = {}
    for ratio in ("0.0", "0.5"):
        path = tmp_path / f"bench_{ratio}.json"
        assert bench.main(["--json", str(path), "--rows-per-head", "16", "--top-p", "0.01",
                           "--min-k-cluster-ratio", ratio, "--sol-tau"]) == 0
        result = json.loads(path.read_text())["results"][0]
        densities[ratio] = next(row for row in result["rows"] if row["method"].startswith("SVG2"))["density"]
    # every query cluster keeps at least half of the 48 key clusters (about half of the keys) with 0.5
    assert densities["0.5"] > 0.4 and densities["0.0"] < 0.5 * densities["0.5"]


def test_help_names_the_program_and_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m svg2_core.bench")
    parser = bench.build_parser()
    assert all(action.help for action in parser._actions)


def test_profile_times_the_public_call_and_lists_its_ops(tmp_path):
    path = tmp_path / "bench.json"
    assert bench.main(["--json", str(path), "--rows-per-head", "16", "--sol-tau", "--profile",
                       "--profile-rows", "3", "--quiet"]) == 0
    profile = json.loads(path.read_text())["results"][0]["profile"]
    assert profile["public_call_node_layout_ms"] > 0 and profile["public_call_contiguous_ms"] > 0
    assert len(profile["kernels"]) == 3 and all(kernel["calls"] >= 1 for kernel in profile["kernels"])
