"""Ulysses sequence parallelism with SVG2: two CPU processes (gloo, loopback) equal one process on all heads."""
import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from svg2_core import SVG2Config, SVG2State
from svg2_core.ulysses import (SparseCall, UlyssesSVG2Processor, reference_attention_with_lse,
                               ulysses_all_to_all)

CONFIG = SVG2Config(top_p=0.6, num_q_clusters=6, num_k_clusters=10, kmeans_init_iters=8, kmeans_iters=2)
SHAPE = (2, 96, 4, 16)  # [B, N, H, D], yunchang's layout
STEPS, LAYERS, DENSE_LAYER = 2, 2, 0  # layer 0 stays dense, as the node's dense_layers=1 does


def _inputs(step: int, layer: int):
    generator = torch.Generator().manual_seed(100 * step + layer)
    return [torch.randn(SHAPE, generator=generator) for _ in range(3)]


def _processor(rank: int, world_size: int, state: SVG2State, densities: list):
    layer = {"index": 0}

    def route(q, k, v):
        index = layer["index"]
        if index == DENSE_LAYER:
            return "dense layer"
        return SparseCall(state, cache_key=("layer", index), dense_suffix=3,
                          on_done=lambda info: densities.append(float(info.density.max())))

    return UlyssesSVG2Processor(CONFIG, route, rank=rank, world_size=world_size, backend="torch"), layer


def _run(processor, layer, rank: int, world_size: int, group=None):
    """STEPS x LAYERS calls, as a Ulysses rank runs them: this rank's tokens in, this rank's tokens out."""
    outputs = []
    tokens = SHAPE[1] // world_size
    for step in range(STEPS):
        for index in range(LAYERS):
            layer["index"] = index
            q, k, v = (x[:, rank * tokens:(rank + 1) * tokens] for x in _inputs(step, index))
            if world_size > 1:
                q, k, v = (ulysses_all_to_all(x, group, to_heads=True) for x in (q, k, v))
            out, lse = processor(q, k, v, softmax_scale=SHAPE[-1] ** -0.5)
            assert out.shape == q.shape and lse.shape == (q.shape[0], q.shape[2], q.shape[1])
            if world_size > 1:
                out = ulysses_all_to_all(out, group, to_heads=False)
            outputs.append(out)
    return torch.stack(outputs)


def _rank_main(rank: int, world_size: int, port: int, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        densities = []
        processor, layer = _processor(rank, world_size, SVG2State(), densities)
        results[rank] = (_run(processor, layer, rank, world_size), densities, dict(processor.dense_reasons))
    finally:
        dist.destroy_process_group()


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_equal_one_process_on_all_heads():
    densities = []
    processor, layer = _processor(0, 1, SVG2State(), densities)
    single = _run(processor, layer, 0, 1)
    assert densities and max(densities) < 1.0  # the sparse calls really are sparse

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(2, _free_loopback_port(), results), nprocs=2, join=True)
        results = dict(results)
    tokens = SHAPE[1] // 2
    for rank in range(2):
        outputs, rank_densities, dense_reasons = results[rank]
        torch.testing.assert_close(outputs, single[:, :, rank * tokens:(rank + 1) * tokens], rtol=0, atol=0)
        assert len(rank_densities) == STEPS * (LAYERS - 1)
        assert dense_reasons == {"dense layer": STEPS}


def test_all_to_all_in_one_process_is_the_identity():
    """World size 1 (a gloo group of one): the swap changes nothing, so the two-rank test is the real check."""
    port = _free_loopback_port()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        x = torch.randn(SHAPE)
        assert torch.equal(ulysses_all_to_all(x, to_heads=True), x)
        assert torch.equal(ulysses_all_to_all(x, to_heads=False), x)
    finally:
        dist.destroy_process_group()


def test_dense_calls_return_the_exact_lse_and_sparse_calls_nan():
    q, k, v = _inputs(0, 0)
    processor = UlyssesSVG2Processor(CONFIG, lambda *qkv: SparseCall(SVG2State()), backend="torch")
    out, lse = processor(q, k, v)
    assert bool(lse.isnan().all())
    cross_k, cross_v = k[:, :40], v[:, :40]  # cross-attention: other key count -> dense, exact lse
    out, lse = processor(q, cross_k, cross_v)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, cross_k) / math.sqrt(SHAPE[-1])
    torch.testing.assert_close(lse, scores.logsumexp(-1))
    torch.testing.assert_close(out, torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), cross_v))
    assert processor.dense_reasons == {"cross-attention": 1}


@pytest.mark.parametrize("kwargs, reason", [
    ({"causal": True}, "causal attention"), ({"window_size": (8, 8)}, "sliding-window attention"),
    ({"softmax_scale": 0.5}, "softmax scale other than 1/sqrt(head_dim)"),
])
def test_calls_svg2_does_not_compute_stay_dense(kwargs, reason):
    q, k, v = _inputs(0, 1)
    processor = UlyssesSVG2Processor(CONFIG, lambda *qkv: pytest.fail("routed a call SVG2 cannot serve"),
                                     backend="torch")
    out, _ = processor(q, k, v, **kwargs)
    torch.testing.assert_close(out, reference_attention_with_lse(q, k, v, **kwargs)[0])
    assert processor.dense_reasons == {reason: 1}


def test_ring_attention_is_refused():
    with pytest.raises(ValueError, match="Ulysses sequence parallelism only.*ring degree 2"):
        UlyssesSVG2Processor(CONFIG, lambda *qkv: "unused", rank=0, world_size=2, ring_degree=2)


@pytest.mark.parametrize("kwargs, name", [({"rank": 2, "world_size": 2}, "rank"), ({"world_size": 0}, "world_size")])
def test_bad_rank_or_world_size_is_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        UlyssesSVG2Processor(CONFIG, lambda *qkv: "unused", **kwargs)
