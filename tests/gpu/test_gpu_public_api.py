"""GPU-only checks of the public call on the fast path: a warm `svg2_attention` call makes no host
synchronisation (CUDA sync debug mode raises on one) and captures in a CUDA graph. Skipped without CUDA."""
import pytest
import torch

from svg2_core import SVG2Config, SVG2State, svg2_attention
from svg2_core.synthetic import structured_qkv

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONFIG = SVG2Config(top_p=0.9, num_q_clusters=48, num_k_clusters=160)
CONFIGS = [CONFIG, SVG2Config(top_p=0.9, num_q_clusters=48, num_k_clusters=160, qk_int8=True)]


@pytest.fixture(params=["in line", "two streams"])
def streams(request, monkeypatch):
    """Run a test with the second-stream overlaps off (this shape's default) and forced on."""
    from svg2_core import triton_backend

    if request.param == "two streams":
        monkeypatch.setattr(triton_backend, "OVERLAP_MIN_ROWS", 0)
    return request.param


def _node_layout_inputs():
    """[B, H, N, D] transposed views of [B, N, H, D], as ComfyUI's models hand them over, 64 text tokens."""
    q, k, v = structured_qkv(2, 4, (8, 24, 32), 128, dense_suffix=64, device="cuda")
    return [x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v)]


@pytest.mark.parametrize("config", CONFIGS, ids=["bf16", "int8"])
def test_warm_call_makes_no_host_synchronisation(config, streams):
    q, k, v = _node_layout_inputs()
    state = SVG2State()
    svg2_attention(q, k, v, config, state=state, cache_key="layer", dense_suffix=64, backend="triton")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = svg2_attention(q, k, v, config, state=state, cache_key="layer", dense_suffix=64, backend="triton")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.shape == q.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("config", CONFIGS, ids=["bf16", "int8"])
def test_warm_public_call_replays_in_a_cuda_graph(config, streams):
    q, k, v = _node_layout_inputs()
    state = SVG2State()
    svg2_attention(q, k, v, config, state=state, cache_key="layer", dense_suffix=64, backend="triton")
    cached = state.entry("layer")
    q_centroids, k_centroids = cached.q_centroids.clone(), cached.k_centroids.clone()

    def restore_centroids():
        cached.q_centroids.copy_(q_centroids)
        cached.k_centroids.copy_(k_centroids)
        state.store("layer", cached)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        expected = svg2_attention(q, k, v, config, state=state, cache_key="layer", dense_suffix=64,
                                  backend="triton")
    torch.cuda.current_stream().wait_stream(side)
    restore_centroids()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = svg2_attention(q, k, v, config, state=state, cache_key="layer", dense_suffix=64,
                                  backend="triton")
    restore_centroids()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, expected)


def test_node_layout_call_makes_no_copies_of_q_k_v():
    """Extra memory of a warm call on the node's layout: the output (1/3 of q + k + v), the row table
    (here 50 query blocks x 4 bytes per token: 0.26 x q + k + v) and small metadata, ~0.6 x q + k + v;
    copying q, k and v into [G, N, D] would add another full q + k + v."""
    q, k, v = _node_layout_inputs()
    state = SVG2State()
    svg2_attention(q, k, v, CONFIG, state=state, cache_key="layer", dense_suffix=64, backend="triton")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = svg2_attention(q, k, v, CONFIG, state=state, cache_key="layer", dense_suffix=64, backend="triton")
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - before
    qkv_bytes = 3 * q.numel() * q.element_size()
    assert out.stride() == q.stride()
    assert extra <= 1.5 * qkv_bytes, f"extra {extra / qkv_bytes:.2f} x q + k + v"
