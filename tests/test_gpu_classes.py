"""GPU classes (svg2_core.gpu_classes): the tiles each class takes fit its shared memory (by the shared bytes the
compiler reported for each launch, tests/data/launch_shared_memory.json, written by
`python -m svg2_core.doctor --arch ... --record`), sm_90 keeps the tiles measured on the H200, SVG2_GPU_CLASS
makes tile selection act as a class, and a launch that runs out of resources is retried once with the smallest
tiles, then falls back. Compile-free; kernels run on the CPU interpreter."""
import json
from pathlib import Path

import pytest
import torch

import triton_helpers  # noqa: F401  (TRITON_INTERPRET=1 before any kernel module)
from oracle import relative_error
from triton_helpers import random_labels, run_compiled

from svg2_core import backends, gpu_classes
from svg2_core.backends import ClusterPlan, FastPathOutOfResources, GuardedBackend, TorchBackend
from svg2_core.gpu_classes import CLASSES, GpuClass, class_for, gpu_class, parse_arch
from svg2_core.triton_backend import TritonBackend
from svg2_core.triton_kernels import attention, kmeans
from svg2_core.triton_kernels.attention import AttentionConfig, class_config
from svg2_core.triton_kernels.launches import production_launches

RECORDED = json.loads((Path(__file__).parent / "data" / "launch_shared_memory.json").read_text())


@pytest.fixture
def triton_3_6(monkeypatch):
    """Tile selection as under Triton 3.6 (the first-tile max compiles), what the tables and the recorded
    launches describe, whichever Triton runs the tests."""
    monkeypatch.setattr(attention.triton, "__version__", "3.6.0")


def _doctor_launches(cls: GpuClass):
    from svg2_core.doctor import RETRY_LAUNCHES
    retried = [launch for launch in production_launches(cls, smallest=True) if launch.name.startswith(RETRY_LAUNCHES)]
    return [("", launch) for launch in production_launches(cls)] + [("retry ", launch) for launch in retried]


@pytest.mark.parametrize("capability", sorted(CLASSES))
def test_every_launch_of_a_class_fits_its_shared_memory(capability, triton_3_6):
    cls = CLASSES[capability]
    recorded = RECORDED[f"sm_{capability}"]
    for prefix, launch in _doctor_launches(cls):
        name = prefix + launch.name
        assert name in recorded, f"sm_{capability} {name}: not recorded; run the doctor with --record"
        assert recorded[name] <= cls.shared_memory, f"sm_{capability} {name}: {recorded[name]} B"


def test_consumer_classes_take_128x64_tiles_and_fp16_pv(triton_3_6):
    for capability in (86, 89, 120):
        cls = CLASSES[capability]
        assert cls.tile_family == "consumer" and cls.shared_memory == 101_376 and cls.fp16_accumulate_double_rate
        int8, bf16 = class_config(128, True, cls), class_config(128, False, cls)
        assert int8 == AttentionConfig(128, 64, 8, 3, 64, 4, first_tile_max=True, pv_fp16_accumulate=True)
        assert (bf16.block_m, bf16.block_n, bf16.remainder_m) == (int8.block_m, int8.block_n, int8.remainder_m)
        assert class_config(64, True, cls).pv_fp16_accumulate
    assert CLASSES[89].fp8_dots and CLASSES[120].fp8_dots and not CLASSES[86].fp8_dots
    for capability in (80, 90, 100):
        assert not class_config(128, True, CLASSES[capability]).pv_fp16_accumulate


def test_sm_90_keeps_the_tiles_measured_on_the_h200(triton_3_6):
    hopper = CLASSES[90]
    assert class_config(128, True, hopper) == AttentionConfig(128, 128, 8, 3, 64, 4, remainder_block_n=64,
                                                              first_tile_max=True)
    assert class_config(128, False, hopper) == AttentionConfig(128, 128, 8, 3, 64, 4)
    assert class_config(64, False, hopper) == class_config(64, True, hopper) == AttentionConfig(128, 64, 4, 3, 64, 4)
    assert kmeans.ASSIGN_TILES["large"] == ((128, 128, 8, 3), (128, 64, 4, 3), (128, 128, 4, 2), (256, 64, 8, 3),
                                            (64, 128, 4, 3), (128, 128, 8, 4), (256, 128, 8, 3), (128, 64, 8, 3))
    assert CLASSES[80].tile_family == CLASSES[100].tile_family == "large"


@pytest.mark.parametrize("version, compiles", [
    ("3.6.0", True), ("3.6.0+git1a2b3c4d", True), ("3.8.0", True), ("3.10.1", True), ("4.0.0", True),
    ("3.5.1", False), ("3.5.0+gitabc", False), ("3.4.0", False), ("3.3.1.post19", False), ("3.2.0", False),
    ("2.3.1", False), ("", False), ("unknown", False)])
def test_first_tile_max_only_where_the_installed_triton_compiles_it(monkeypatch, version, compiles):
    """Triton < 3.6 fails to pipeline the first-tile-max loop: int8 scores then take the bf16 scores' tiles and
    online softmax on every class; other launches keep their tiles. Reads triton.__version__ at call time."""
    monkeypatch.setattr(attention.triton, "__version__", version)
    assert attention.first_tile_max_compiles() == compiles
    for cls in [*CLASSES.values(), class_for(121, 101_376), class_for(86, 65_536)]:
        for head_dim in (128, 64):
            for smallest in (False, True):
                int8, bf16 = (class_config(head_dim, qk_int8, cls, smallest) for qk_int8 in (True, False))
                assert not bf16.first_tile_max
                if not compiles:
                    assert int8 == bf16
                elif head_dim == 128 or smallest or cls.tile_family == "small":
                    assert int8.first_tile_max
        launches = production_launches(cls) + production_launches(cls, smallest=True)
        assert any(launch.constexprs.get("FIRST_TILE_MAX") for launch in launches) == compiles
        assert any("first-tile max" in launch.name for launch in launches) == compiles


def test_first_tile_max_below_triton_3_6_keeps_the_large_bf16_tiles(monkeypatch):
    monkeypatch.setattr(attention.triton, "__version__", "3.5.1")
    assert class_config(128, True, CLASSES[90]) == AttentionConfig(128, 128, 8, 3, 64, 4)
    assert class_config(128, True, CLASSES[89]) == AttentionConfig(128, 64, 8, 3, 64, 4, pv_fp16_accumulate=True)
    monkeypatch.setattr(attention, "interpreting", lambda: False)
    assert attention.default_config(128, qk_int8=True, gpu_class=CLASSES[80]) == AttentionConfig()


@pytest.mark.parametrize("capability, shared, family", [
    (87, 166_912, "large"), (103, 232_448, "large"), (121, 101_376, "consumer"), (90, 150_000, "consumer"),
    (86, 65_536, "small"), (110, None, "large")])
def test_other_gpus_get_tiles_derived_from_their_shared_memory(capability, shared, family, triton_3_6):
    cls = class_for(capability, shared)
    assert cls.tile_family == family and not cls.tuned and not cls.fp16_accumulate_double_rate
    assert cls.fp8_dots == (capability >= 89)
    # the family's launches, as recorded on its tuned classes of the same MMA generation, fit this class
    same_generation = [c for c in CLASSES.values() if (c.capability >= 90) == (capability >= 90)]
    for tuned in same_generation:
        if tuned.tile_family == family or family == "small":
            for prefix, launch in _doctor_launches(tuned):
                if family != "small" or prefix:
                    assert RECORDED[f"sm_{tuned.capability}"][prefix + launch.name] <= cls.shared_memory


def test_arch_forms_and_errors():
    assert parse_arch("8.9") == parse_arch("89") == parse_arch("sm_89") == parse_arch("SM89") == 89
    assert parse_arch("12.0") == 120 and parse_arch("10.0") == 100
    for bad in ("7.5", "ada", "8.x", ""):
        with pytest.raises(ValueError, match="GPU class"):
            parse_arch(bad)


def test_the_environment_variable_forces_a_class(monkeypatch):
    monkeypatch.setenv(gpu_classes.ENV_VAR, "8.6")
    assert gpu_class("cpu") == CLASSES[86] and gpu_class() == CLASSES[86]
    assert attention.default_config(128).pv_fp16_accumulate  # the interpreter's tiles, the class's P V
    monkeypatch.setattr(attention, "interpreting", lambda: False)
    assert attention.default_config(128, True) == class_config(128, True, CLASSES[86])
    monkeypatch.setattr(kmeans, "interpreting", lambda: False)
    assert kmeans.assign_tiles() == kmeans.ASSIGN_TILES["consumer"]
    assert len(production_launches(CLASSES[86])) < len(production_launches(CLASSES[89]))  # no fp8 k-means
    monkeypatch.setenv(gpu_classes.ENV_VAR, "12.0")
    assert gpu_class("cpu").fp8_dots and attention.default_config(128).block_n == 64
    monkeypatch.setenv(gpu_classes.ENV_VAR, "7.0")
    with pytest.raises(ValueError, match="8.0 or newer"):
        gpu_class("cpu")
    monkeypatch.delenv(gpu_classes.ENV_VAR)
    assert gpu_class("cpu") == CLASSES[90]  # no GPU: the H100 / H200 tables


def _plan_problem(seed=0, num_tokens=96, head_dim=64):
    generator = torch.Generator().manual_seed(seed)
    q_labels, q_sizes = random_labels(2, num_tokens, 4, generator)
    k_labels, k_sizes = random_labels(2, num_tokens, 8, generator)
    block_mask = torch.rand(2, 4, 8, generator=generator) < 0.5
    plan = ClusterPlan(q_labels, k_labels, q_sizes, k_sizes, block_mask, 0, 0)
    q, k, v = (torch.randn(2, num_tokens, head_dim, generator=generator).to(torch.bfloat16) for _ in range(3))
    return q, k, v, plan


class _OutOfResourcesAbove:
    """Stands in for `sparse_attention` in the Triton backend: a config with key tiles wider than `fits` raises
    Triton's OutOfResources, others run the real kernel; records the key tile of every call."""

    def __init__(self, fits: int):
        self.fits, self.block_n = fits, []

    def __call__(self, q, k, v, launch, scale, config, qk_int8=False):
        from triton.runtime.errors import OutOfResources
        self.block_n.append(config.block_n)
        if config.block_n > self.fits:
            raise OutOfResources(163840, 101376, "shared memory")
        return attention.sparse_attention(q, k, v, launch, scale, config, qk_int8)


def test_out_of_resources_is_retried_once_with_the_smallest_tiles(monkeypatch):
    import svg2_core.triton_backend as triton_backend
    injected = _OutOfResourcesAbove(fits=16)  # interpreter tiles: 32 keys, smallest 16
    monkeypatch.setattr(triton_backend, "sparse_attention", injected)
    backend = GuardedBackend(TritonBackend())
    q, k, v, plan = _plan_problem()
    out = backend.sparse_attention(q, k, v, plan, 0.125)
    assert injected.block_n == [32, 16] and backend.backend.smallest_tiles == {"cpu"}
    reference = TorchBackend().sparse_attention(q.float(), k.float(), v.float(), plan, 0.125)
    assert relative_error(out.float(), reference) < 0.01
    backend.sparse_attention(q, k, v, plan, 0.125)  # later calls on this device start with the smallest tiles
    assert injected.block_n == [32, 16, 16]


def test_out_of_resources_at_the_smallest_tiles_falls_back_without_a_retry_storm(monkeypatch):
    import svg2_core.triton_backend as triton_backend
    injected = _OutOfResourcesAbove(fits=0)
    monkeypatch.setattr(triton_backend, "sparse_attention", injected)
    backend = GuardedBackend(TritonBackend())
    q, k, v, plan = _plan_problem()
    for expected in ([32, 16], [32, 16, 16]):
        with pytest.raises(FastPathOutOfResources, match="Hardware limit: 101376"):
            backend.sparse_attention(q, k, v, plan, 0.125)
        assert injected.block_n == expected  # one retry for the device, then each call tries once


def test_forget_failures_clears_the_smallest_tiles():
    triton = backends._triton_backend()
    triton.backend.smallest_tiles.add("cuda:0")
    backends.forget_failures()
    assert not triton.backend.smallest_tiles


def test_a_forced_consumer_class_serves_calls_with_fp16_pv(monkeypatch):
    monkeypatch.setenv(gpu_classes.ENV_VAR, "8.9")
    backend = TritonBackend()
    q, k, v, plan = _plan_problem(seed=3)
    assert backend.config_for(64, device=q.device).pv_fp16_accumulate
    out = backend.sparse_attention(q, k, v, plan, 0.125)
    reference = TorchBackend().sparse_attention(q.float(), k.float(), v.float(), plan, 0.125)
    assert relative_error(out.float(), reference) < 0.01


def test_the_kernels_import_without_making_an_autotuner():
    """An autotuner made at import asks older Tritons for a GPU driver: the assign kernel's are made on first
    use, so importing the fast path makes none (checked in a fresh interpreter, GPU compile mode)."""
    code = ("import sys, triton\n"
            "from triton.runtime.autotuner import Autotuner\n"
            "import svg2_core.triton_backend\n"
            "found = [f'{m}.{n}' for m, module in list(sys.modules.items()) if m.startswith('svg2_core')\n"
            "         for n, value in vars(module).items() if isinstance(value, Autotuner)]\n"
            "from svg2_core.triton_kernels import kmeans\n"
            "print(found, len(kmeans._ASSIGN_AUTOTUNERS))\n")
    result = run_compiled("-c", code, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == ["[]", "0"], result.stdout + result.stderr


@pytest.mark.parametrize("name, halves", [("NVIDIA GeForce RTX 4090", True), ("NVIDIA GeForce RTX 3090 Ti", True),
                                          ("NVIDIA GeForce RTX 5090 Laptop GPU", True), ("NVIDIA RTX A6000", False),
                                          ("NVIDIA L40S", False), ("NVIDIA RTX 6000 Ada Generation", False),
                                          ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", False)])
def test_only_geforce_cards_take_fp16_pv_where_their_class_allows_it(name, halves):
    from svg2_core.gpu_classes import halves_fp32_accumulate

    assert halves_fp32_accumulate(name) is halves
