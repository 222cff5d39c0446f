"""TritonBackend capability checks and a whole svg2_attention call through it."""
import pytest
import torch

from triton_helpers import DEVICE, element_mask, masked_attention, relative_error

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
    allowed = element_mask(plan, 136)
    oracle = masked_attention(q3, k3, v3, allowed, 0.125, low_precision=False)
    torch_error = relative_error(masked_attention(q3, k3, v3, allowed, 0.125, low_precision=True), oracle)
    assert relative_error(out.reshape(4, 136, 64), oracle) <= 2 * torch_error
