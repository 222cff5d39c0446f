"""GPU-only checks of the Triton fast path: CUDA-graph capture and replay of a whole sparse call, its
extra memory, and kernel error against an fp32 oracle at a mid-size shape. Skipped without CUDA."""
import math

import pytest
import torch

from oracle import masked_attention, plan_mask, relative_error
from svg2_core.backends import ClusterPlan
from svg2_core.selection import select_blocks
from svg2_core.synthetic import structured_qkv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GRID = (8, 24, 32)  # 6144 tokens


def _problem(dtype, head_dim, dense_suffix):
    q, k, v = structured_qkv(1, 4, GRID, head_dim, dense_suffix=dense_suffix, dtype=dtype, device="cuda")
    return tuple(x.reshape(4, -1, head_dim) for x in (q, k, v))


def _svg2_call(backend, q, k, v, q_init, k_init, dense_suffix, scale, qk_int8=False):
    clustered = slice(0, q.shape[1] - dense_suffix)
    qc = backend.kmeans(q[:, clustered], q_init, 2)
    kc = backend.kmeans(k[:, clustered], k_init, 2)
    mask = select_blocks(qc.centroids, kc.centroids, kc.cluster_sizes, 0.9, 20, scale)
    plan = ClusterPlan(qc.labels, kc.labels, qc.cluster_sizes, kc.cluster_sizes, mask, 0, dense_suffix)
    return backend.sparse_attention(q, k, v, plan, scale, qk_int8), plan


def _plan_errors(q, k, v, plan, outputs, scale, rows_per_head=512):
    """On sampled query rows: the relative error against the fp32 oracle under the `plan`'s mask of each
    output in `outputs` (name -> [G, N, D]), and under "torch_low_precision" that of PyTorch doing the same
    masked attention in q's dtype."""
    rows = torch.randperm(q.shape[1], generator=torch.Generator().manual_seed(0))[:rows_per_head].to(q.device)
    mask = plan_mask(plan, q.shape[1], rows=rows)
    oracle = masked_attention(q[:, rows], k, v, mask, scale)
    errors = {name: relative_error(out[:, rows], oracle) for name, out in outputs.items()}
    errors["torch_low_precision"] = relative_error(
        masked_attention(q[:, rows], k, v, mask, scale, low_precision=True), oracle)
    return errors


@pytest.mark.parametrize("qk_int8", [False, True])
def test_whole_call_captures_in_a_cuda_graph_and_replays_identically(qk_int8):
    from svg2_core.triton_backend import TritonBackend

    backend = TritonBackend()
    q, k, v = _problem(torch.bfloat16, 128, 64)
    scale = 1 / math.sqrt(128)
    q_init = q[:, :100].float().contiguous()
    k_init = k[:, 200:400].float().contiguous()
    eager, _ = _svg2_call(backend, q, k, v, q_init, k_init, 64, scale, qk_int8)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        _svg2_call(backend, q, k, v, q_init, k_init, 64, scale, qk_int8)
        with torch.cuda.graph(graph, stream=stream):
            captured, _ = _svg2_call(backend, q, k, v, q_init, k_init, 64, scale, qk_int8)
    torch.cuda.current_stream().wait_stream(stream)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)


def test_overlapped_kmeans_match_one_after_the_other(monkeypatch):
    """Warm calls run the k-means of q on a second stream beside the k-means of k."""
    from svg2_core import triton_backend
    from svg2_core.triton_backend import TritonBackend

    monkeypatch.setattr(triton_backend, "OVERLAP_MIN_ROWS", 0)  # this shape is below the size where it pays

    backend = TritonBackend()
    q, k, _ = _problem(torch.bfloat16, 128, 64)
    clustered = slice(0, q.shape[1] - 64)
    q_init, k_init = q[:, :100].float().contiguous(), k[:, 200:400].float().contiguous()
    runs = [backend.cluster(q[:, clustered], q_init, k[:, clustered], k_init, 2, overlap) for overlap in (False, True)]
    torch.cuda.synchronize()
    for a, b in zip(*runs):
        assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
        assert torch.equal(a.cluster_sizes, b.cluster_sizes)


@pytest.mark.parametrize("qk_int8", [False, True])
def test_extra_memory_of_a_sparse_call_is_within_twice_qkv(qk_int8):
    from svg2_core.triton_backend import TritonBackend

    backend = TritonBackend()
    q, k, v = _problem(torch.bfloat16, 128, 0)
    scale = 1 / math.sqrt(128)
    _, plan = _svg2_call(backend, q, k, v, q[:, :100].float(), k[:, :300].float(), 0, scale)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    backend.sparse_attention(q, k, v, plan, scale, qk_int8)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    assert extra <= 2 * 3 * q.numel() * q.element_size()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_kernel_error_within_twice_torch_low_precision(dtype, head_dim):
    from svg2_core.triton_backend import TritonBackend

    dense_suffix = 64
    q, k, v = _problem(dtype, head_dim, dense_suffix)
    scale = 1 / math.sqrt(head_dim)
    out, plan = _svg2_call(TritonBackend(), q, k, v, q[:, :100].float(), k[:, :300].float(), dense_suffix, scale)
    errors = _plan_errors(q, k, v, plan, {"svg2": out}, scale)
    assert errors["svg2"] <= 2 * errors["torch_low_precision"]


@pytest.mark.parametrize("head_dim", [64, 128])
def test_int8_scores_within_twice_torch_bf16(head_dim):
    """The issue's bar for the kernel, met with int8 scores: error against the fp32 oracle at most twice
    PyTorch's doing the same masked attention in bf16."""
    from svg2_core.triton_backend import TritonBackend

    dense_suffix = 64
    q, k, v = _problem(torch.bfloat16, head_dim, dense_suffix)
    scale = 1 / math.sqrt(head_dim)
    out, plan = _svg2_call(TritonBackend(), q, k, v, q[:, :100].float(), k[:, :300].float(), dense_suffix, scale,
                           qk_int8=True)
    exact, _ = _svg2_call(TritonBackend(), q, k, v, q[:, :100].float(), k[:, :300].float(), dense_suffix, scale)
    errors = _plan_errors(q, k, v, plan, {"int8": out, "bf16": exact}, scale)
    assert errors["int8"] <= 2 * errors["torch_low_precision"]
    # the int8 path ran: its error is above the bf16 kernel's
    assert errors["int8"] > errors["bf16"]
