"""A failing fast path never fails a call under backend="auto": Triton errors raised while compiling or launching
a kernel come out as FastPathError (backend="triton") or are served by the reference (backend="auto", logged
once, not retried where they would repeat). Also the library's input edges (head_dim 0, meta tensors,
unhashable cache keys) and what SVG2Config.keeps_every_block says. Runs on the CPU under TRITON_INTERPRET=1."""
import logging
import sys
import types

import pytest
import torch

import triton_helpers  # noqa: F401  (TRITON_INTERPRET=1 before any kernel module)
from failing_kernel import FailingKernel, out_of_resources
from svg2_core import SVG2Config, SVG2State, svg2_attention
from svg2_core import backends
from svg2_core.backends import FastPathError, FastPathOutOfResources

# tiny on purpose: every interpreted kernel launch costs milliseconds per tile
TINY = SVG2Config(top_p=0.5, num_q_clusters=2, num_k_clusters=4, kmeans_init_iters=1, kmeans_iters=1)
C_COMPILER = "Failed to find C compiler. Please specify via CC environment variable or set triton.knobs.build.impl."


def _inputs(dtype=torch.bfloat16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 2, 32, 64, generator=generator).to(dtype) for _ in range(3)]


@pytest.fixture(autouse=True)
def _fresh_failures():
    backends.forget_failures()
    yield
    backends.forget_failures()


@pytest.fixture
def failing_attention(monkeypatch):
    """failing_attention(error_factory) -> the fake kernel now launched by the sparse attention."""
    from svg2_core.triton_kernels import attention

    def install(error):
        kernel = FailingKernel(error)
        monkeypatch.setattr(attention, "_sparse_attention_kernel", kernel)
        return kernel
    return install


@pytest.mark.parametrize("error, kind, error_type", [
    (out_of_resources, "out of resources", FastPathOutOfResources),
    (lambda: RuntimeError(C_COMPILER), "compiler", FastPathError),
])
def test_triton_backend_raises_a_fast_path_error_naming_the_cause(failing_attention, error, kind, error_type):
    failing_attention(error)
    q, k, v = _inputs()
    with pytest.raises(error_type) as raised:
        svg2_attention(q, k, v, TINY, backend="triton")
    failure = raised.value
    assert failure.kind == kind and failure.persistent
    assert failure.stage == "sparse attention" and failure.device == "CPU (Triton interpreter)"
    assert type(failure.__cause__).__name__ == type(error()).__name__
    message = str(failure)
    assert type(error()).__name__ in message and "CPU (Triton interpreter)" in message and "What to do" in message
    if kind == "out of resources":
        assert "Required: 163840, Hardware limit: 101376" in message


def test_auto_serves_a_failing_call_by_the_reference_logs_once_and_does_not_retry(failing_attention, caplog):
    kernel = failing_attention(out_of_resources)
    q, k, v = _inputs()
    reference = svg2_attention(q, k, v, TINY, backend="torch")
    with caplog.at_level(logging.WARNING, logger="svg2"):
        first, info = svg2_attention(q, k, v, TINY, backend="auto", return_info=True)
        second = svg2_attention(q, k, v, TINY, backend="auto")
    assert info.backend == "torch"
    torch.testing.assert_close(first, reference, rtol=0, atol=0)
    torch.testing.assert_close(second, reference, rtol=0, atol=0)
    assert kernel.launches == 2  # one retry with the smallest tiles, then the reference
    warnings = [record for record in caplog.records if "OutOfResources" in record.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    # another head dim uses other tiles: the fast path is tried there
    q64 = [torch.randn(1, 2, 32, 128).to(torch.bfloat16) for _ in range(3)]
    svg2_attention(*q64, TINY, backend="auto")
    assert kernel.launches == 3  # the tiles stay the smallest here: no second retry


def test_running_out_of_memory_falls_back_for_that_call_only(failing_attention):
    kernel = failing_attention(lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 5 GiB"))
    q, k, v = _inputs()
    with pytest.raises(FastPathError) as raised:
        svg2_attention(q, k, v, TINY, backend="triton")
    assert raised.value.kind == "out of memory" and not raised.value.persistent
    svg2_attention(q, k, v, TINY, backend="auto")
    svg2_attention(q, k, v, TINY, backend="auto")
    assert kernel.launches == 3  # tried again every call


def test_a_failed_call_leaves_the_centroid_cache_as_it_was(failing_attention):
    q, k, v = _inputs()
    state = SVG2State()
    failing_attention(out_of_resources)
    with pytest.raises(FastPathError):
        svg2_attention(q, k, v, TINY, state=state, cache_key="layer 0", backend="triton")
    assert len(state) == 0
    fallback = svg2_attention(q, k, v, TINY, state=state, cache_key="layer 0", backend="auto")
    assert "layer 0" in state
    torch.testing.assert_close(fallback, svg2_attention(q, k, v, TINY, backend="torch"), rtol=0, atol=0)


class _BrokenModule(types.ModuleType):
    """An import of the Triton backend that raises something other than ImportError (a driver lookup)."""

    attempts = 0

    def __getattr__(self, name):
        type(self).attempts += 1
        raise RuntimeError("0 active drivers ([]). There should only be one.")


def test_a_broken_triton_import_of_any_kind_is_remembered_not_retried(monkeypatch, caplog):
    monkeypatch.setattr(backends, "_BACKENDS", {"torch": backends._BACKENDS["torch"]})
    monkeypatch.setattr(backends, "_import_failure", None)
    monkeypatch.setitem(sys.modules, "svg2_core.triton_backend", _BrokenModule("svg2_core.triton_backend"))
    _BrokenModule.attempts = 0
    q, k, v = _inputs()
    with caplog.at_level(logging.WARNING, logger="svg2"):
        for _ in range(3):
            reason = backends.triton_unsupported_reason(q)
        out = svg2_attention(q, k, v, TINY, backend="auto")
    assert _BrokenModule.attempts == 1
    assert "RuntimeError: 0 active drivers" in reason
    assert sum("cannot be imported" in record.getMessage() for record in caplog.records) == 1
    torch.testing.assert_close(out, svg2_attention(q, k, v, TINY, backend="torch"), rtol=0, atol=0)
    with pytest.raises(ValueError, match="0 active drivers"):
        svg2_attention(q, k, v, TINY, backend="triton")


def test_errors_are_classified_for_the_hint():
    from triton.compiler.errors import CompilationError  # noqa: F401  (exists in every supported Triton)

    assert backends.failure_kind(out_of_resources()) == "out of resources"
    assert backends.failure_kind(RuntimeError(C_COMPILER)) == "compiler"
    assert backends.failure_kind(torch.cuda.OutOfMemoryError("x")) == "out of memory"
    assert backends.failure_kind(KeyError("x")) == "error"


@pytest.mark.parametrize("shape, message", [((1, 2, 16, 0), "head_dim"), ((1, 0, 16, 64), "empty")])
def test_degenerate_shapes_are_value_errors_naming_the_shape(shape, message):
    q = torch.zeros(shape)
    with pytest.raises(ValueError, match=message) as raised:
        svg2_attention(q, q, q, TINY, backend="torch")
    assert str(tuple(shape)) in str(raised.value)


def test_meta_tensors_are_a_value_error():
    q = torch.empty(1, 2, 16, 64, device="meta")
    with pytest.raises(ValueError, match="meta device"):
        svg2_attention(q, q, q, TINY, backend="auto")


def test_an_unhashable_cache_key_is_a_value_error_naming_it():
    q, k, v = _inputs(torch.float32)
    with pytest.raises(ValueError, match=r"cache_key must be hashable.*\[0, 'cond'\].*list"):
        svg2_attention(q, k, v, TINY, state=SVG2State(), cache_key=[0, "cond"], backend="torch")


@pytest.mark.parametrize("settings, keeps", [
    (dict(top_p=1.0), True), (dict(top_p=0.99), False),
    (dict(top_p=0.5, min_k_cluster_ratio=1.0), True), (dict(top_p=0.5, min_k_cluster_ratio=0.75), False),
])
def test_keeps_every_block(settings, keeps):
    config = SVG2Config(num_q_clusters=2, num_k_clusters=4, **settings)
    assert config.keeps_every_block is keeps
    if keeps:  # what the name promises, checked on the reference's selection
        q, k, v = _inputs(torch.float32)
        _, info = svg2_attention(q, k, v, config, backend="torch", return_info=True)
        assert bool(info.block_mask.all())
