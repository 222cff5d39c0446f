"""The node's Triton backend inside real ComfyUI on the CPU (TRITON_INTERPRET=1): sparse calls are served by
Triton, and a Triton error at the attention kernel launch (OutOfResources, a missing C compiler) never fails
the sampling: the calls fall back to the model's own attention, the output equals the dense run, the reason
names the error and the device in svg2.stats, and the fast path is not tried again in that run.

The tiny Wan runs in bfloat16 (the fast path's dtypes; ComfyUI would pick fp32 on a CPU) with one sparse
layer in one sparse step, so the interpreter runs two SVG2 calls per sampling."""
import dataclasses
import importlib
import logging
import os

import pytest
import torch

from comfy_env import sample
from failing_kernel import FailingKernel, out_of_resources

NAME = "wan21_t2v"
STEPS = 2
# step 0 and layers 0-1 dense: one sparse layer x one sparse step x two CFG branches
SETTINGS = dict(top_p=0.5, num_q_clusters=4, num_k_clusters=8, dense_warmup_steps=1, dense_layers=2,
                backend="triton", min_tokens=16, kmeans_iters=1)
SPARSE_CALLS = 2
C_COMPILER = "Failed to find C compiler. Please specify via CC environment variable or set triton.knobs.build.impl."


@pytest.fixture(scope="module")
def bf16_model(comfyui, checkpoints):
    """name -> the tiny model loaded by UNETLoader in bfloat16 without manual casting (CPU)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs TRITON_INTERPRET=1 (tests/conftest.py sets it where there is no GPU)")
    import comfy.model_management as management

    saved = management.unet_dtype, management.unet_manual_cast
    management.unet_dtype = lambda *args, **kwargs: torch.bfloat16
    management.unet_manual_cast = lambda *args, **kwargs: None
    try:
        model = comfyui.UNETLoader().load_unet(checkpoints[NAME], "default")[0]
    finally:
        management.unet_dtype, management.unet_manual_cast = saved
    assert model.model.get_dtype() == torch.bfloat16
    return model


@pytest.fixture(scope="module")
def dense_latent(comfyui, bf16_model):
    return sample(comfyui, bf16_model, NAME, STEPS)


def _patch(pack, model):
    node = pack.NODE_CLASS_MAPPINGS["SVG2SparseAttention"]()
    (patched,) = node.patch(model, **SETTINGS)
    override = patched.model_options["transformer_options"]["optimized_attention_override"]
    # one cold k-means iteration instead of 50: the interpreter runs every launch on the CPU
    override.config = dataclasses.replace(override.config, kmeans_init_iters=1)
    override._config_without_int8 = dataclasses.replace(override._config_without_int8, kmeans_init_iters=1)
    return patched, override


def test_control_sparse_calls_are_served_by_the_triton_backend(comfyui, pack, bf16_model, dense_latent):
    patched, override = _patch(pack, bf16_model)
    latent = sample(comfyui, patched, NAME, STEPS)
    stats = override.owner.last_stats
    assert stats["sparse_calls"] == SPARSE_CALLS
    assert stats["backends"] == {"triton": SPARSE_CALLS}
    assert not any(reason.startswith(("fast path", "Triton fast path")) for reason in stats["dense_reasons"])
    assert 0.0 < stats["mean_density"] < 1.0
    assert torch.isfinite(latent).all() and (latent.float() - dense_latent.float()).abs().max() > 0


@pytest.mark.parametrize("error, cause", [(out_of_resources, "OutOfResources: out of resource: shared memory, "
                                                              "Required: 163840, Hardware limit: 101376"),
                                          (lambda: RuntimeError(C_COMPILER), "RuntimeError: Failed to find C compiler")])
def test_a_failing_attention_launch_falls_back_to_dense_for_the_run(comfyui, pack, bf16_model, dense_latent,
                                                                     monkeypatch, caplog, error, cause):
    # a launch that ran out of resources leaves the device on the smallest tiles: start from the class's own
    importlib.import_module(f"{pack.__name__}.svg2_core.backends").forget_failures()
    patched, override = _patch(pack, bf16_model)
    attention = importlib.import_module(f"{pack.__name__}.svg2_core.triton_kernels.attention")
    kernel = FailingKernel(error)
    monkeypatch.setattr(attention, "_sparse_attention_kernel", kernel)
    with caplog.at_level(logging.WARNING, logger="svg2"):
        latent = sample(comfyui, patched, NAME, STEPS)
    torch.testing.assert_close(latent, dense_latent, rtol=0, atol=0)
    stats = override.owner.last_stats
    assert stats["sparse_calls"] == 0
    reason = f"fast path failed on CPU (Triton interpreter): {cause}"
    failures = {text: count for text, count in stats["dense_reasons"].items() if text.startswith("fast path failed")}
    assert len(failures) == 1 and next(iter(failures)).startswith(reason), stats["dense_reasons"]
    assert next(iter(failures.values())) == SPARSE_CALLS
    first_run = 2 if error is out_of_resources else 1  # OutOfResources: one retry with the smallest tiles
    assert kernel.launches == first_run  # the second call skipped the fast path
    warnings = [record for record in caplog.records
                if record.levelno == logging.WARNING and cause.split(":")[0] in record.getMessage()]
    assert len(warnings) == 1 and all("What to do" in record.getMessage() for record in warnings)
    # the next run tries the fast path once more
    sample(comfyui, patched, NAME, STEPS)
    assert kernel.launches == first_run + 1
