"""TritonBackend capability checks and a whole svg2_attention call through it."""
import pytest
import torch

from oracle import masked_attention, plan_mask, relative_error
from triton_helpers import DEVICE

from svg2_core import SVG2Config, svg2_attention
from svg2_core.backends import ClusterPlan
from svg2_core.triton_backend import TritonBackend


def test_unsupported_reasons_name_the_value(monkeypatch):
    backend = TritonBackend()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert backend.unsupported_reason(torch.zeros(1, 4, 64)) == "tensors are on cpu; the Triton path needs CUDA"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend.unsupported_reason(torch.zeros(1, 4, 64, dtype=torch.bfloat16)) is None
    assert "torch.float32" in backend.unsupported_reason(torch.zeros(1, 4, 64))
    assert "head_dim 80" in backend.unsupported_reason(torch.zeros(1, 4, 80, dtype=torch.float16))


class _CudaTensorStandIn:
    """What unsupported_reason reads of a CUDA tensor, on a machine without one."""
    device = torch.device("cuda", 0)
    dtype = torch.bfloat16
    shape = (1, 4, 128)


@pytest.mark.parametrize("capability, supported", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_gpus_before_ampere_are_declined_with_their_capability(monkeypatch, capability, supported):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    reason = TritonBackend().unsupported_reason(_CudaTensorStandIn())
    if supported:
        assert reason is None
    else:
        assert reason.startswith("GPU compute capability 7.5 is below 8.0")


def test_svg2_attention_with_the_triton_backend_is_within_twice_torch_error():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 136, 64, generator=generator).to(DEVICE, torch.bfloat16) for _ in range(3))
    config = SVG2Config(top_p=0.8, num_q_clusters=6, num_k_clusters=16, kmeans_init_iters=4)
    out, info = svg2_attention(q, k, v, config, dense_suffix=8, backend="triton", return_info=True)
    assert info.backend == "triton" and out.dtype == torch.bfloat16
    plan = ClusterPlan(info.q_labels.reshape(4, -1)[:, :-8], info.k_labels.reshape(4, -1)[:, :-8],
                       info.q_cluster_sizes.reshape(4, -1), info.k_cluster_sizes.reshape(4, -1),
                       info.block_mask.reshape(4, 6, 16), 0, 8)
    assert torch.equal(info.q_cluster_sizes.sum(-1), torch.full((2, 2), 128, device=DEVICE, dtype=torch.int32))
    q3, k3, v3 = (x.reshape(4, 136, 64) for x in (q, k, v))
    allowed = plan_mask(plan, 136)
    oracle = masked_attention(q3, k3, v3, allowed, 0.125, low_precision=False)
    torch_error = relative_error(masked_attention(q3, k3, v3, allowed, 0.125, low_precision=True), oracle)
    assert relative_error(out.reshape(4, 136, 64), oracle) <= 2 * torch_error


def _node_layout(generator, batch=2, heads=3, tokens=136, head_dim=64):
    """[B, H, N, D] transposed views of [B, N, H * D] activations, as ComfyUI's models hand them over."""
    return [torch.randn(batch, tokens, heads * head_dim, generator=generator).to(DEVICE, torch.bfloat16)
            .view(batch, tokens, heads, head_dim).transpose(1, 2) for _ in range(3)]


@pytest.mark.parametrize("dense_suffix", [0, 8])
def test_transposed_views_are_read_in_place_with_the_same_result(dense_suffix):
    """The node's layout gives exactly what contiguous copies give, and the output comes back in that
    layout, so handing it back to ComfyUI as [B, N, H * D] is a view."""
    q, k, v = _node_layout(torch.Generator().manual_seed(1))
    assert not q.is_contiguous()
    config = SVG2Config(top_p=0.7, num_q_clusters=5, num_k_clusters=12, kmeans_init_iters=3)
    out, info = svg2_attention(q, k, v, config, dense_suffix=dense_suffix, backend="triton", return_info=True)
    copied, copied_info = svg2_attention(q.contiguous(), k.contiguous(), v.contiguous(), config,
                                         dense_suffix=dense_suffix, backend="triton", return_info=True)
    assert torch.equal(info.q_labels, copied_info.q_labels) and torch.equal(info.k_labels, copied_info.k_labels)
    assert torch.equal(out, copied)
    assert out.stride() == q.stride()
    assert out.transpose(1, 2).is_contiguous()  # [B, N, H, D] in memory: reshaping to [B, N, H * D] is a view


def test_kmeans_reads_strided_problems_like_contiguous_ones():
    q, _, _ = _node_layout(torch.Generator().manual_seed(2))
    backend = TritonBackend()
    init = q.reshape(6, 136, 64)[:, :7].float()
    strided = backend.kmeans(q, init, 2)
    contiguous = backend.kmeans(q.reshape(6, 136, 64).contiguous(), init, 2)
    assert torch.equal(strided.labels, contiguous.labels)
    assert torch.equal(strided.centroids, contiguous.centroids)
    assert torch.equal(strided.cluster_sizes, contiguous.cluster_sizes)


def test_problem_strides_of_each_layout():
    from svg2_core.problems import ProblemStrides

    flat = torch.zeros(6, 10, 8)
    assert ProblemStrides.of(flat).args() == (6, 0, 80, 8)
    node = torch.zeros(2, 10, 3 * 8).view(2, 10, 3, 8).transpose(1, 2)
    assert ProblemStrides.of(node).args() == (3, 240, 8, 24)
    with pytest.raises(ValueError, match="last dimension must be contiguous"):
        ProblemStrides.of(torch.zeros(2, 3, 8, 10).transpose(-1, -2))
