"""The torch reference: dense at top_p = 1, equal to an independent masked-attention oracle otherwise,
per-sample clustering, determinism and the centroid cache."""
import math

import pytest
import torch

from oracle import element_mask, masked_attention
from svg2_core import SVG2Config, SVG2State, svg2_attention
from svg2_core.attention_torch import block_sparse_attention_torch
from svg2_core.layout import attention_density

SMALL = dict(num_q_clusters=6, num_k_clusters=10, kmeans_init_iters=8)


def _qkv(shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(3)]


@pytest.mark.parametrize("prefix, suffix", [(0, 0), (5, 0), (0, 7), (3, 9)])
def test_top_p_one_is_dense_attention(prefix, suffix):
    q, k, v = _qkv((2, 3, 96, 32))
    out, info = svg2_attention(q, k, v, SVG2Config(top_p=1.0, **SMALL), dense_prefix=prefix,
                               dense_suffix=suffix, backend="torch", return_info=True)
    dense = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
    assert torch.allclose(out.double(), dense, atol=1e-5, rtol=1e-5)
    assert torch.allclose(info.density, torch.ones_like(info.density))


def _duplicated_tokens(shape, seed):
    """Random tokens where a quarter are exact copies of token 0: distinct seeds on identical points
    leave empty clusters, and with many clusters some hold a single token."""
    q, k, v = _qkv(shape, seed)
    q[:, :, 1:shape[2] // 4] = q[:, :, :1]
    k[:, :, 1:shape[2] // 4] = k[:, :, :1]
    return q, k, v


@pytest.mark.parametrize("seed", range(4))
def test_matches_masked_attention_oracle(seed):
    top_p = torch.empty(1).uniform_(0.3, 0.95, generator=torch.Generator().manual_seed(seed)).item()
    config = SVG2Config(top_p=top_p, num_q_clusters=24, num_k_clusters=40, kmeans_init_iters=5,
                        min_k_cluster_ratio=0.05, seed=seed)
    q, k, v = _duplicated_tokens((2, 2, 80, 16), seed)
    prefix, suffix = (seed % 3) * 2, seed
    out, info = svg2_attention(q, k, v, config, dense_prefix=prefix, dense_suffix=suffix,
                               backend="torch", return_info=True)
    sizes = torch.cat([info.q_cluster_sizes.flatten(), info.k_cluster_sizes.flatten()])
    assert (sizes == 0).any() and (sizes == 1).any(), "the input must produce clusters of size 0 and 1"
    assert not info.block_mask.all(), "top_p < 1 must drop some blocks here"
    mask = element_mask(info.q_labels, info.k_labels, info.block_mask)
    expected = masked_attention(q, k, v, mask, dtype=torch.float64)
    assert torch.allclose(out.double(), expected, atol=1e-5, rtol=1e-5)
    # density is the fraction of the element mask that is computed
    assert torch.allclose(info.density.double(), mask.double().mean(dim=(-1, -2)), atol=1e-6)


def test_info_contract():
    config = SVG2Config(top_p=0.7, **SMALL)
    q, k, v = _qkv((2, 3, 64, 16))
    _, info = svg2_attention(q, k, v, config, dense_prefix=4, dense_suffix=2, backend="torch", return_info=True)
    assert info.q_labels.shape == info.k_labels.shape == (2, 3, 64)
    assert info.q_cluster_sizes.shape == (2, 3, 6) and info.k_cluster_sizes.shape == (2, 3, 10)
    assert info.block_mask.shape == (2, 3, 6, 10) and info.block_mask.dtype == torch.bool
    assert info.density.shape == (2, 3)
    assert (info.q_labels[..., :4] == -1).all() and (info.q_labels[..., -2:] == -1).all()
    clustered = info.q_labels[..., 4:-2]
    assert clustered.min() >= 0 and clustered.max() < 6
    assert (info.q_cluster_sizes.sum(-1) == 58).all() and (info.k_cluster_sizes.sum(-1) == 58).all()
    floor = math.floor(config.min_k_cluster_ratio * config.num_k_clusters)
    assert (info.block_mask.sum(-1) >= max(1, floor)).all()


def test_random_block_partitions_including_empty_and_single_blocks():
    generator = torch.Generator().manual_seed(7)
    num_problems, num_tokens, head_dim = 3, 50, 8
    q, k, v = (torch.randn(num_problems, num_tokens, head_dim, generator=generator) for _ in range(3))

    def partition(num_blocks):
        cuts = torch.randint(0, num_tokens + 1, (num_problems, num_blocks - 1), generator=generator).sort(-1).values
        edges = torch.cat([torch.zeros(num_problems, 1, dtype=torch.long), cuts,
                           torch.full((num_problems, 1), num_tokens)], dim=1)
        sizes = edges.diff(dim=1)
        sizes[:, 0], sizes[:, 1] = 0, 1  # make sure both edge cases are present
        sizes[:, -1] += num_tokens - sizes.sum(-1)
        return sizes.to(torch.int32)

    q_sizes, k_sizes = partition(9), partition(13)
    block_mask = torch.rand(num_problems, 9, 13, generator=generator) < 0.4
    block_mask[:, :, 5] = True  # every row keeps something
    out = block_sparse_attention_torch(q, k, v, q_sizes, k_sizes, block_mask, scale=head_dim ** -0.5)
    q_ids = torch.repeat_interleave(torch.arange(9).expand(num_problems, -1).flatten(),
                                    q_sizes.flatten().long()).view(num_problems, num_tokens)
    k_ids = torch.repeat_interleave(torch.arange(13).expand(num_problems, -1).flatten(),
                                    k_sizes.flatten().long()).view(num_problems, num_tokens)
    mask = element_mask(q_ids, k_ids, block_mask)
    expected = masked_attention(q, k, v, mask, dtype=torch.float64)
    assert torch.allclose(out.double(), expected, atol=1e-5, rtol=1e-5)
    density = attention_density(q_sizes, k_sizes, block_mask)
    assert torch.allclose(density.double(), mask.double().mean(dim=(-1, -2)), atol=1e-6)


def test_deterministic_for_a_seed():
    q, k, v = _qkv((1, 2, 64, 16))
    config = SVG2Config(top_p=0.6, **SMALL)
    first, info_a = svg2_attention(q, k, v, config, backend="torch", return_info=True)
    second, info_b = svg2_attention(q, k, v, config, backend="torch", return_info=True)
    assert torch.equal(first, second) and torch.equal(info_a.q_labels, info_b.q_labels)
    other_seed = SVG2Config(top_p=0.6, seed=1, **SMALL)
    _, info_c = svg2_attention(q, k, v, other_seed, backend="torch", return_info=True)
    assert not torch.equal(info_a.k_labels, info_c.k_labels)


def test_batch_elements_get_their_own_clusters():
    """Sample 1 lives far from sample 0: if clusters were shared, its centroids would mix both."""
    q, k, v = _qkv((2, 2, 64, 16))
    q[1] += 5.0
    k[1] -= 5.0
    config = SVG2Config(top_p=0.5, **SMALL)
    state = SVG2State()
    out, info = svg2_attention(q, k, v, config, state=state, cache_key="layer0", backend="torch", return_info=True)
    entry = state.entry("layer0")
    assert entry.q_centroids.shape == (2, 2, 6, 16)
    for b in range(2):
        assert (entry.q_centroids[b] - q[b].mean(dim=(0, 1))).norm(dim=-1).max() < 10.0
        assert (entry.k_centroids[b] - k[b].mean(dim=(0, 1))).norm(dim=-1).max() < 10.0
        mask = element_mask(info.q_labels[b:b + 1], info.k_labels[b:b + 1], info.block_mask[b:b + 1])
        expected = masked_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], mask, dtype=torch.float64)
        assert torch.allclose(out[b:b + 1].double(), expected, atol=1e-5)


def test_state_warm_starts_and_reinitialises_on_shape_change():
    config = SVG2Config(top_p=0.6, **SMALL)
    state = SVG2State()
    q, k, v = _qkv((1, 2, 64, 16))
    svg2_attention(q, k, v, config, state=state, cache_key=("layer", 0), backend="torch")
    entry = state.entry(("layer", 0))
    assert entry.signature.clustered_tokens == 64
    # same shapes: warm start reuses and refines the cached centroids (stored again under the key)
    svg2_attention(q, k, v, config, state=state, cache_key=("layer", 0), backend="torch")
    assert state.entry(("layer", 0)).signature == entry.signature
    # a different token count must not reuse the old centroids
    q2, k2, v2 = _qkv((1, 2, 48, 16), seed=3)
    out, info = svg2_attention(q2, k2, v2, config, state=state, cache_key=("layer", 0), backend="torch",
                               return_info=True)
    assert state.entry(("layer", 0)).signature.clustered_tokens == 48
    fresh, fresh_info = svg2_attention(q2, k2, v2, config, backend="torch", return_info=True)
    assert torch.equal(out, fresh) and torch.equal(info.q_labels, fresh_info.q_labels)
    assert len(state) == 1
    state.reset()
    assert len(state) == 0 and ("layer", 0) not in state


def test_warm_start_uses_fewer_iterations_than_cold():
    """With a cache the call runs kmeans_iters (1) instead of kmeans_init_iters (50)."""
    q, k, v = _qkv((1, 1, 64, 16))
    config = SVG2Config(top_p=0.6, num_q_clusters=6, num_k_clusters=10, kmeans_init_iters=50, kmeans_iters=1)
    state = SVG2State()
    _, cold = svg2_attention(q, k, v, config, state=state, cache_key=0, backend="torch", return_info=True)
    cached = state.entry(0).q_centroids.clone()
    _, warm = svg2_attention(q, k, v, config, state=state, cache_key=0, backend="torch", return_info=True)
    # one Lloyd step from converged centroids keeps the same partition and centroids
    assert torch.equal(cold.q_labels, warm.q_labels)
    assert torch.allclose(state.entry(0).q_centroids, cached, atol=1e-6)
