"""A call on a slice of the heads (head_offset) clusters each head as the call on all heads does."""
import pytest
import torch

from svg2_core import SVG2Config, SVG2State, svg2_attention

CONFIG = SVG2Config(top_p=0.6, num_q_clusters=6, num_k_clusters=10, min_k_cluster_ratio=0.1,
                    kmeans_init_iters=8, kmeans_iters=2)


def _qkv(generator, shape=(2, 4, 96, 16)):
    return [torch.randn(shape, generator=generator) for _ in range(3)]


def _halves(q, k, v, states, cache_key, **kwargs):
    """The two halves of the heads as two calls (head_offset 0 and H/2), each with its own state."""
    heads = q.shape[1] // 2
    outs, infos = [], []
    for rank, state in enumerate(states):
        part = slice(rank * heads, (rank + 1) * heads)
        out, info = svg2_attention(q[:, part], k[:, part], v[:, part], CONFIG, state=state, cache_key=cache_key,
                                   backend="torch", return_info=True, head_offset=rank * heads, **kwargs)
        outs.append(out)
        infos.append(info)
    return torch.cat(outs, dim=1), infos


def _assert_same_clusters(full_info, half_infos):
    for name in ("q_labels", "k_labels", "block_mask", "q_cluster_sizes", "k_cluster_sizes"):
        joined = torch.cat([getattr(info, name) for info in half_infos], dim=1)
        assert torch.equal(getattr(full_info, name), joined), name


@pytest.mark.parametrize("dense_suffix", [0, 5])
def test_two_halves_equal_the_call_on_all_heads_cold_and_warm(dense_suffix):
    generator = torch.Generator().manual_seed(3)
    full_state, half_states = SVG2State(), [SVG2State(), SVG2State()]
    for step in range(3):  # step 0 cold (no cached centroids), steps 1-2 warm-started from the cache
        q, k, v = _qkv(generator)
        full, full_info = svg2_attention(q, k, v, CONFIG, state=full_state, cache_key=("layer", 0), backend="torch",
                                         return_info=True, dense_suffix=dense_suffix)
        joined, half_infos = _halves(q, k, v, half_states, ("layer", 0), dense_suffix=dense_suffix)
        _assert_same_clusters(full_info, half_infos)
        torch.testing.assert_close(joined, full, rtol=0, atol=0)
        assert float(full_info.density.max()) < 1.0  # sparse: the comparison is not dense vs dense
        heads = q.shape[1] // 2
        for rank, state in enumerate(half_states):  # each rank caches exactly its heads' centroids
            torch.testing.assert_close(state.entry(("layer", 0)).k_centroids,
                                       full_state.entry(("layer", 0)).k_centroids[:, rank * heads:(rank + 1) * heads],
                                       rtol=0, atol=0)


def test_a_warm_slice_differs_from_a_cold_slice():
    """The warm comparison above can fail: warm-started clusters are not the cold ones."""
    generator = torch.Generator().manual_seed(4)
    state = SVG2State()
    q, k, v = _qkv(generator)
    svg2_attention(q, k, v, CONFIG, state=state, cache_key=0, backend="torch")
    q, k, v = _qkv(generator)
    _, warm = svg2_attention(q, k, v, CONFIG, state=state, cache_key=0, backend="torch", return_info=True)
    _, cold = svg2_attention(q, k, v, CONFIG, backend="torch", return_info=True)
    assert not torch.equal(warm.k_labels, cold.k_labels)


@pytest.mark.parametrize("head_offset", [-1, 1.5, True, "2"])
def test_head_offset_must_be_a_non_negative_int(head_offset):
    q, k, v = _qkv(torch.Generator().manual_seed(0), (1, 2, 32, 8))
    with pytest.raises(ValueError, match="head_offset"):
        svg2_attention(q, k, v, SVG2Config(num_q_clusters=4, num_k_clusters=4), backend="torch",
                       head_offset=head_offset)
