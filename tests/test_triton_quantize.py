"""int8 scores (SVG2Config.qk_int8): the torch rule, the Triton key codes, and the sparse kernel's int8 path
against the fp32 emulation of the same rule (svg2_core.quantize)."""
import pytest
import torch

from oracle import masked_attention, plan_mask, relative_error
from triton_helpers import DEVICE

from svg2_core import SVG2Config, svg2_attention
from svg2_core.backends import ClusterPlan, TorchBackend
from svg2_core.quantize import INT8_LEVELS, int8_codes, key_smoothing, quantize_dequantize_qk
from svg2_core.triton_backend import TritonBackend
from svg2_core.triton_kernels.attention import AttentionConfig
from svg2_core.triton_kernels.quantize import quantize_keys, quantize_queries
from test_triton_attention import CASES, _problem


def _keys_with_offset(num_problems, num_tokens, head_dim, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    k = torch.randn(num_problems, num_tokens, head_dim, generator=generator)
    offset = 4 * torch.randn(num_problems, 1, head_dim, generator=generator)  # what smoothing removes
    return (k + offset).to(DEVICE, dtype)


def test_reference_codes_round_trip_within_half_a_step():
    q = torch.randn(3, 50, 64, dtype=torch.float64).float() * torch.linspace(0.1, 3, 50)[:, None]
    k = _keys_with_offset(3, 50, 64, torch.float32, seed=0).cpu()
    q_hat, k_hat = quantize_dequantize_qk(q, k)
    q_step = q.abs().amax(-1, keepdim=True) / INT8_LEVELS
    mean, k_absmax = key_smoothing(k)
    k_step = (k_absmax / INT8_LEVELS)[:, None, None]
    assert torch.all((q_hat - q).abs() <= q_step / 2 * (1 + 1e-5))
    assert torch.all((k_hat - (k - mean[:, None])).abs() <= k_step / 2 * (1 + 1e-5))
    # every code level is used at the extremes: the scale is the absolute maximum, not more
    assert torch.equal(int8_codes(q, INT8_LEVELS / q.abs().amax(-1, keepdim=True)).abs().amax(-1),
                       torch.full((3, 50), INT8_LEVELS))


def test_smoothing_does_not_change_any_softmax_row():
    """Adding one vector to every key of a head shifts each query row's scores by a constant."""
    q, k, v, plan = _problem(2, 96, 64, torch.float32, 0, 5, 4, 12, seed=5)
    q, k, v = q.cpu(), k.cpu(), v.cpu()
    plan = type(plan)(*(x.cpu() if isinstance(x, torch.Tensor) else x for x in vars(plan).values()))
    shifted = k + 3 * torch.randn(2, 1, 64)
    reference = TorchBackend()
    assert relative_error(reference.sparse_attention(q, shifted, v, plan, 0.125),
                          reference.sparse_attention(q, k, v, plan, 0.125)) < 1e-5
    assert relative_error(reference.sparse_attention(q, shifted, v, plan, 0.125, qk_int8=True),
                          reference.sparse_attention(q, k, v, plan, 0.125, qk_int8=True)) < 0.02


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_key_codes_match_the_reference(dtype, layout):
    k = _keys_with_offset(4, 300, 64, dtype, seed=1)  # 300 tokens: a partial last 64-token block
    if layout == "transposed":  # [B, N, H, D] activations seen as [B, H, N, D], as ComfyUI hands them over
        k = k.view(2, 2, 300, 64).transpose(1, 2).contiguous().transpose(1, 2)
    codes, key_scale = quantize_keys(k)
    assert codes.shape == k.shape
    codes, flat = codes.reshape(4, 300, 64), k.reshape(4, 300, 64)
    mean, absmax = key_smoothing(flat)
    expected = int8_codes(flat.float() - mean[:, None], (INT8_LEVELS / absmax)[:, None, None])
    assert codes.dtype == torch.int8 and codes.shape == (4, 300, 64) and codes.is_contiguous()
    torch.testing.assert_close(key_scale, absmax / INT8_LEVELS, rtol=1e-6, atol=0)
    differ = codes.float() != expected
    # the mean is summed in another order: a code may sit on the other side of a .5 boundary, nothing more
    assert (codes.float() - expected).abs().max() <= 1 and differ.float().mean() < 1e-3
    assert codes.abs().max() == 127


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_query_codes_match_the_reference(dtype):
    generator = torch.Generator().manual_seed(6)
    q = torch.randn(2, 3, 100, 128, generator=generator) * torch.linspace(0.01, 5, 100)[:, None]
    q[0, 1, 7] = 0  # an all-zero row codes to zeros
    q = q.to(DEVICE, dtype).transpose(1, 2).contiguous().transpose(1, 2)  # the node's strides
    codes, scales = quantize_queries(q)
    assert codes.shape == q.shape and codes.dtype == torch.int8 and scales.shape == (6, 100)
    flat = q.reshape(6, 100, 128).float()
    absmax = flat.abs().amax(-1)
    expected = int8_codes(flat, (INT8_LEVELS / torch.where(absmax > 0, absmax, 1.0))[..., None])
    assert (codes.reshape(6, 100, 128).float() - expected).abs().max() <= 1
    assert (codes.reshape(6, 100, 128).float() != expected).float().mean() < 1e-3
    assert torch.all(codes[0, 1, 7] == 0) and torch.all(codes.abs().amax(-1)[absmax.view(2, 3, 100) > 0] == 127)
    torch.testing.assert_close(scales, torch.where(absmax > 0, absmax, 1.0) / INT8_LEVELS, rtol=1e-6, atol=0)


@pytest.mark.parametrize("num_problems, num_tokens, head_dim, dtype, prefix, suffix, cq, ck", CASES[:4])
def test_int8_kernel_matches_the_int8_reference(num_problems, num_tokens, head_dim, dtype, prefix, suffix, cq, ck):
    q, k, v, plan = _problem(num_problems, num_tokens, head_dim, dtype, prefix, suffix, cq, ck, seed=num_tokens)
    k = k + _keys_with_offset(num_problems, 1, head_dim, dtype, seed=2)
    scale = head_dim ** -0.5
    out = TritonBackend().sparse_attention(q, k, v, plan, scale, qk_int8=True)
    q_hat, k_hat = quantize_dequantize_qk(q, k)
    allowed = plan_mask(plan, num_tokens)
    oracle = masked_attention(q_hat, k_hat, v.float(), allowed, scale, low_precision=False)
    torch_error = relative_error(masked_attention(q, k, v, allowed, scale, low_precision=True),
                                 masked_attention(q, k, v, allowed, scale, low_precision=False))
    exact = masked_attention(q, k, v, allowed, scale, low_precision=False)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert relative_error(out, oracle) <= 2 * torch_error
    # the int8 path ran: its output sits closer to the int8 rule than to exact attention
    assert relative_error(out, oracle) < relative_error(out, exact)


@pytest.mark.parametrize("config", [
    AttentionConfig(32, 128, 4, 1, remainder_m=16),  # 128-slot key tiles, one partial
    AttentionConfig(32, 32, 4, 1, remainder_m=16, remainder_block_n=16),  # remainder tiles on smaller key tiles
    AttentionConfig(16, 16, 4, 1, remainder_m=8, first_tile_max=True),  # the int8 default's loop, small tiles
    AttentionConfig(32, 32, 4, 1, remainder_m=16, remainder_block_n=16, first_tile_max=True),
], ids=lambda config: config.describe())
def test_int8_kernel_with_remainder_tiles(config):
    q, k, v, plan = _problem(2, 128, 64, torch.bfloat16, 0, 8, 4, 60, seed=3, density=0.6)
    out = TritonBackend(config).sparse_attention(q, k, v, plan, 0.125, qk_int8=True)
    reference = TorchBackend().sparse_attention(q, k, v, plan, 0.125, qk_int8=True)
    allowed = plan_mask(plan, 128)
    torch_error = relative_error(masked_attention(q, k, v, allowed, 0.125, low_precision=True),
                                 masked_attention(q, k, v, allowed, 0.125, low_precision=False))
    assert relative_error(out, reference) <= 2 * torch_error


def test_public_api_int8_within_twice_torch_error():
    generator = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 2, 136, 64, generator=generator).to(DEVICE, torch.bfloat16) for _ in range(3))
    config = SVG2Config(top_p=0.8, num_q_clusters=6, num_k_clusters=16, kmeans_init_iters=4, qk_int8=True)
    out, info = svg2_attention(q, k, v, config, dense_suffix=8, backend="triton", return_info=True)
    plan = ClusterPlan(info.q_labels.reshape(4, -1)[:, :-8], info.k_labels.reshape(4, -1)[:, :-8],
                       info.q_cluster_sizes.reshape(4, -1), info.k_cluster_sizes.reshape(4, -1),
                       info.block_mask.reshape(4, 6, 16), 0, 8)
    q3, k3, v3 = (x.reshape(4, 136, 64) for x in (q, k, v))
    allowed = plan_mask(plan, 136)
    q_hat, k_hat = quantize_dequantize_qk(q3, k3)
    oracle = masked_attention(q_hat, k_hat, v3.float(), allowed, 0.125, low_precision=False)
    exact = masked_attention(q3, k3, v3, allowed, 0.125, low_precision=False)
    torch_error = relative_error(masked_attention(q3, k3, v3, allowed, 0.125, low_precision=True), exact)
    assert relative_error(out.reshape(4, 136, 64), oracle) <= 2 * torch_error
    assert relative_error(out.reshape(4, 136, 64), oracle) < relative_error(out.reshape(4, 136, 64), exact)


def test_config_rejects_a_non_bool_qk_int8():
    with pytest.raises(ValueError, match="qk_int8 must be True or False, got 'yes'"):
        SVG2Config(qk_int8="yes")
