"""Bad configuration values and bad inputs raise ValueError naming what is wrong."""
import pytest
import torch

from svg2_core import SVG2Config, svg2_attention


@pytest.mark.parametrize("field, value, allowed", [
    ("top_p", 0.0, "(0, 1]"), ("top_p", 1.5, "(0, 1]"), ("top_p", float("nan"), "(0, 1]"),
    ("top_p", "0.9", "(0, 1]"), ("num_q_clusters", 0, "[1, 65536]"), ("num_k_clusters", 2.5, "[1, 65536]"),
    ("num_k_clusters", True, "[1, 65536]"), ("min_k_cluster_ratio", -0.1, "[0, 1]"),
    ("min_k_cluster_ratio", 1.1, "[0, 1]"), ("kmeans_init_iters", 0, "[1, 1000]"),
    ("kmeans_iters", 0, "[1, 1000]"), ("seed", -1, "[0, "),
])
def test_invalid_config_names_field_value_and_range(field, value, allowed):
    with pytest.raises(ValueError) as error:
        SVG2Config(**{field: value})
    message = str(error.value)
    assert field in message and allowed in message


def test_defaults_match_official_scripts():
    config = SVG2Config()
    assert (config.top_p, config.num_q_clusters, config.num_k_clusters) == (0.9, 300, 1000)
    assert (config.min_k_cluster_ratio, config.kmeans_init_iters, config.kmeans_iters) == (0.10, 8, 2)
    assert config.min_kept_k_clusters == 100


SMALL = SVG2Config(num_q_clusters=4, num_k_clusters=8)


def _qkv(shape=(1, 2, 32, 16), dtype=torch.float32):
    return [torch.randn(shape, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("make, fragment", [
    (lambda: (torch.randn(2, 32, 16),) * 3, "4-D [B, H, N, D]"),
    (lambda: (torch.randn(1, 2, 32, 16), torch.randn(1, 2, 31, 16), torch.randn(1, 2, 32, 16)), "same shape"),
    (lambda: [torch.randint(0, 5, (1, 2, 32, 16))] * 3, "float32, float16 or bfloat16"),
    (lambda: (torch.randn(1, 2, 32, 16), torch.randn(1, 2, 32, 16).half(), torch.randn(1, 2, 32, 16)), "one dtype"),
    (lambda: [torch.randn(1, 1, 6, 16)] * 3, "fewer than num_q_clusters=4 / num_k_clusters=8"),
    (lambda: [torch.full((1, 2, 32, 16), float("nan"))] * 3, "NaN or Inf"),
    (lambda: [torch.full((1, 2, 32, 16), float("inf"))] * 3, "NaN or Inf"),
    (lambda: [[1.0]] * 3, "torch.Tensor"),
])
def test_bad_inputs_raise(make, fragment):
    q, k, v = make()
    with pytest.raises(ValueError) as error:
        svg2_attention(q, k, v, SMALL, backend="torch")
    assert fragment in str(error.value)


def test_dense_spans_leaving_too_few_tokens_raise():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="leaves 6"):
        svg2_attention(q, k, v, SMALL, dense_prefix=20, dense_suffix=6, backend="torch")
    with pytest.raises(ValueError, match="dense_prefix must be an int >= 0"):
        svg2_attention(q, k, v, SMALL, dense_prefix=-1, backend="torch")


def test_unknown_backend_and_config_type_raise():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="backend must be one of"):
        svg2_attention(q, k, v, SMALL, backend="cuda")
    with pytest.raises(ValueError, match="config must be an SVG2Config"):
        svg2_attention(q, k, v, {"top_p": 0.9}, backend="torch")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_output_keeps_shape_dtype_device(dtype):
    q, k, v = _qkv((2, 2, 40, 16), dtype)
    out = svg2_attention(q, k, v, SMALL, backend="torch")
    assert out.shape == q.shape and out.dtype == dtype and out.device == q.device
