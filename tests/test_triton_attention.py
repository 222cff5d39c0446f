"""The Triton variable-block sparse attention against an fp32 oracle (element-masked dense attention):
its error must stay within 2x the error of PyTorch doing the same masked attention in the same dtype."""
import pytest
import torch

from oracle import masked_attention, plan_mask, relative_error
from triton_helpers import DEVICE, one_key_rises, random_labels

from svg2_core.backends import ClusterPlan, TorchBackend
from svg2_core.triton_backend import TritonBackend
from svg2_core.triton_kernels.attention import AttentionConfig, problems_per_chunk


def _problem(num_problems, num_tokens, head_dim, dtype, prefix, suffix, num_q_clusters, num_k_clusters, seed,
             density=0.3):
    generator = torch.Generator().manual_seed(seed)
    clustered = num_tokens - prefix - suffix
    q_labels, q_sizes = random_labels(num_problems, clustered, num_q_clusters, generator)
    k_labels, k_sizes = random_labels(num_problems, clustered, num_k_clusters, generator)
    block_mask = torch.rand(num_problems, num_q_clusters, num_k_clusters, generator=generator) < density
    block_mask[:, 0, :] = False  # a query cluster with no kept key cluster
    plan = ClusterPlan(q_labels, k_labels, q_sizes, k_sizes, block_mask, prefix, suffix)
    plan = ClusterPlan(*(x.to(DEVICE) if isinstance(x, torch.Tensor) else x for x in vars(plan).values()))
    q, k, v = (torch.randn(num_problems, num_tokens, head_dim, generator=generator).to(DEVICE, dtype)
               for _ in range(3))
    return q, k, v, plan


def _config(block_m, block_n, remainder_m=0, remainder_block_n=0, first_tile_max=False):
    """Interpreter-sized tiles (4 warps, 1 stage)."""
    return AttentionConfig(block_m=block_m, block_n=block_n, num_warps=4, num_stages=1, remainder_m=remainder_m,
                           remainder_block_n=remainder_block_n, first_tile_max=first_tile_max)


# the first-tile max loop at 16 x 16 tiles, 8-row remainder tiles (many key tiles per query block)
FIRST_TILE_MAX = _config(16, 16, 8, first_tile_max=True)

CASES = [
    # G, N, D, dtype, prefix, suffix, Cq, Ck
    (2, 160, 64, torch.float16, 0, 0, 6, 24),
    (2, 160, 64, torch.bfloat16, 5, 17, 6, 24),
    (1, 192, 128, torch.bfloat16, 0, 40, 5, 40),
    (3, 96, 128, torch.float16, 9, 0, 4, 30),
    (3, 192, 64, torch.bfloat16, 2, 3, 130, 24),  # 132 query blocks: the row table covers two problems, then one
]


@pytest.mark.parametrize("num_problems, num_tokens, head_dim, dtype, prefix, suffix, cq, ck", CASES)
def test_sparse_attention_within_twice_torch_error(num_problems, num_tokens, head_dim, dtype, prefix, suffix,
                                                   cq, ck):
    q, k, v, plan = _problem(num_problems, num_tokens, head_dim, dtype, prefix, suffix, cq, ck, seed=num_tokens)
    scale = head_dim ** -0.5
    out = TritonBackend().sparse_attention(q, k, v, plan, scale)
    allowed = plan_mask(plan, num_tokens)
    oracle = masked_attention(q, k, v, allowed, scale, low_precision=False)
    torch_error = relative_error(masked_attention(q, k, v, allowed, scale, low_precision=True), oracle)
    assert out.dtype == q.dtype and out.shape == q.shape
    assert relative_error(out, oracle) <= 2 * torch_error
    # the query cluster that keeps no key cluster attends only the dense tokens, or gets zeros without any
    if prefix + suffix == 0:
        rows = plan.q_labels == 0
        assert torch.all(out[:, prefix:num_tokens - suffix][rows] == 0)


@pytest.mark.parametrize("case", [CASES[1], CASES[3]])
def test_first_tile_max_within_twice_torch_error(case):
    """Weights against the first key tile's row max, scores a tile ahead; a query cluster without kept keys
    (CASES[3]: it still attends the prefix) comes out right too."""
    num_problems, num_tokens, head_dim, dtype, prefix, suffix, cq, ck = case
    q, k, v, plan = _problem(num_problems, num_tokens, head_dim, dtype, prefix, suffix, cq, ck, seed=num_tokens)
    scale = head_dim ** -0.5
    out = TritonBackend(FIRST_TILE_MAX).sparse_attention(q, k, v, plan, scale)
    allowed = plan_mask(plan, num_tokens)
    oracle = masked_attention(q, k, v, allowed, scale, low_precision=False)
    torch_error = relative_error(masked_attention(q, k, v, allowed, scale, low_precision=True), oracle)
    assert torch.isfinite(out).all()
    assert relative_error(out, oracle) <= 2 * torch_error


def test_first_tile_max_without_kept_keys_gives_zeros():
    q, k, v, plan = _problem(2, 160, 64, torch.float16, 0, 0, 6, 24, seed=5)
    out = TritonBackend(FIRST_TILE_MAX).sparse_attention(q, k, v, plan, 0.125)
    assert torch.all(out[plan.q_labels == 0] == 0)


# the interpreter's numpy warns when the first-tile max loop overflows (the 300 case), before the online
# softmax reruns
@pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning")
@pytest.mark.parametrize("rise", [40.0, 300.0])
def test_first_tile_max_survives_a_score_rise_past_the_limit(rise):
    """One key, in the last key tile, scores `rise` (natural-log units) above every key of the first tile, so it
    takes nearly all the weight. 40: weight 2^58 against the first tile's max, served by the first-tile max
    loop; 300 would overflow fp32 there (2^433) and the query tile is recomputed with the online softmax. Both
    must give that key's v within two bf16 roundings, 2^-7: its weight's (the loop sums its weights unrounded,
    like flash attention, and a 2^58 weight is not exact in bf16 as a running max's 1 is) and the output's;
    nothing may turn inf / nan."""
    q, k, v, plan, scale = one_key_rises(rise)
    num_tokens = q.shape[1]
    out = TritonBackend(_config(16, 16, first_tile_max=True)).sparse_attention(q, k, v, plan, scale)
    oracle = masked_attention(q, k, v, plan_mask(plan, num_tokens), scale, low_precision=False)
    assert torch.isfinite(out).all()
    assert relative_error(out, oracle) <= 2.0 ** -7


def test_row_table_is_split_to_stay_within_the_size_of_qkv():
    # 132 query blocks x 192 slots x 4 bytes per problem against 3 x 192 x 64 x 2 bytes of q, k, v
    assert problems_per_chunk(3, 132, 192, 64, 2) == 2
    assert problems_per_chunk(3, 6, 160, 64, 2) == 3
    assert problems_per_chunk(1, 500, 160, 64, 2) == 1


def test_matches_the_reference_backend():
    q, k, v, plan = _problem(2, 128, 64, torch.float16, 3, 4, 5, 20, seed=1, density=0.5)
    out = TritonBackend().sparse_attention(q, k, v, plan, 0.125)
    reference = TorchBackend().sparse_attention(q.float(), k.float(), v.float(), plan, 0.125)
    allowed = plan_mask(plan, 128)
    torch_error = relative_error(masked_attention(q, k, v, allowed, 0.125, low_precision=True), reference)
    assert relative_error(out, reference) <= 2 * torch_error


@pytest.mark.parametrize("config", [
    _config(16, 16),  # 16-slot key tiles, no remainder tiles
    _config(32, 128, 16),  # 128-slot key tiles: block starts in both 64-bit words
    _config(32, 32, 16, remainder_block_n=16),  # remainder tiles with their own (smaller) key tiles
    FIRST_TILE_MAX,  # weights against the first key tile's row max, scores a tile ahead
    _config(32, 128, 16, first_tile_max=True),  # ... with one partial key tile only
    _config(32, 32, 16, remainder_block_n=16, first_tile_max=True),  # ... remainder tiles on smaller key tiles
], ids=lambda config: config.describe())
def test_small_key_tiles_share_many_tiny_clusters(config):
    """Small key tiles over 60 key clusters, most of size 1-3: many block starts per tile; query blocks
    split into full tiles and remainder tiles."""
    q, k, v, plan = _problem(2, 128, 64, torch.bfloat16, 0, 8, 4, 60, seed=3, density=0.6)
    out = TritonBackend(config).sparse_attention(q, k, v, plan, 0.125)
    allowed = plan_mask(plan, 128)
    oracle = masked_attention(q, k, v, allowed, 0.125, low_precision=False)
    torch_error = relative_error(masked_attention(q, k, v, allowed, 0.125, low_precision=True), oracle)
    assert relative_error(out, oracle) <= 2 * torch_error


def test_config_describes_itself():
    assert AttentionConfig().describe() == "128x128 tiles, 8 warps, 3 stages; remainder 64 rows, 4 warps"
    assert (AttentionConfig(remainder_block_n=64, first_tile_max=True).describe()
            == "128x128 tiles, 8 warps, 3 stages; remainder 64 rows, 4 warps, 64-key tiles; first-tile max")
    assert _config(16, 16).describe() == "16x16 tiles, 4 warps, 1 stages; no remainder tiles"


def test_tiles_run_longest_first_and_cover_every_query_row_once():
    from svg2_core.triton_kernels.plan import build_launch

    _, _, _, plan = _problem(3, 192, 64, torch.float16, 4, 6, 9, 30, seed=5, density=0.4)
    launch = build_launch(plan.q_labels, plan.k_labels, plan.q_cluster_sizes, plan.k_cluster_sizes,
                          plan.block_mask, plan.dense_prefix, plan.dense_suffix, 192, 32, 32, 16)
    num_q_blocks = launch.q_block_end.shape[1]
    for g in range(3):
        covered = torch.zeros(192, dtype=torch.int64)
        for names, rows in ((("q_tile_block", "q_tile_start"), 32), (("rem_tile_block", "rem_tile_start"), 16)):
            pairs = list(zip(*(getattr(launch, name)[g].tolist() for name in names)))
            real = [(b, s) for b, s in pairs if b < num_q_blocks]
            assert all(b < num_q_blocks for b, _ in pairs[:len(real)])  # real tiles first
            work = [int(launch.kv_length[g, b]) for b, _ in real]
            assert work == sorted(work, reverse=True)  # by their block's kept keys, longest first
            for b, start in real:
                covered[start:min(start + rows, int(launch.q_block_end[g, b]))] += 1
            if rows == 32:
                assert len(set(work)) > 1  # the case really reorders something
        assert torch.equal(covered, torch.ones_like(covered))


@pytest.mark.parametrize("chunk", [1024, 8])
def test_key_side_metadata_packs_kept_blocks_in_order(chunk, monkeypatch):
    """kv_length, kv_row_shift and the start bits against a direct walk over the extended mask; chunk 8
    makes the plan kernel walk the 32 key blocks in four chunks."""
    from svg2_core.layout import block_mask_with_dense, block_sizes_with_dense
    from svg2_core.triton_kernels import plan as plan_module

    monkeypatch.setattr(plan_module, "KV_PLAN_CHUNK", chunk)
    _, _, _, plan = _problem(2, 192, 64, torch.float16, 4, 6, 9, 30, seed=7, density=0.4)
    block_n = 32
    launch = plan_module.build_launch(plan.q_labels, plan.k_labels, plan.q_cluster_sizes, plan.k_cluster_sizes,
                                      plan.block_mask, 4, 6, 192, 32, block_n, 16)
    mask = block_mask_with_dense(plan.block_mask).cpu()
    k_sizes = block_sizes_with_dense(plan.k_cluster_sizes, 4, 6).cpu()
    k_starts = k_sizes.cumsum(-1) - k_sizes
    starts = launch.kv_tile_starts.cpu()
    for g in range(2):
        for b in range(mask.shape[1]):
            kept = [j for j in range(mask.shape[2]) if mask[g, b, j] and k_sizes[g, j] > 0]
            slot, expected_bits = 0, torch.zeros(starts.shape[-1], dtype=torch.int64)
            for packed, j in enumerate(kept):
                assert int(launch.kv_row_shift[g, b, packed]) == int(k_starts[g, j]) - slot
                expected_bits[slot // block_n] |= 1 << (slot % block_n)
                slot += int(k_sizes[g, j])
            assert int(launch.kv_length[g, b]) == slot
            assert torch.equal(starts[g, b], expected_bits)


def test_gpu_defaults_by_score_precision(monkeypatch):
    """On a GPU, int8 scores at head dim 128 run their remainder tiles on 64-key tiles (two programs per SM)
    and take weights against the first key tile's max, scores a tile ahead; bf16 and head dim 64 keep the
    online softmax. The plan's tiles are the same either way."""
    from svg2_core.triton_kernels import attention

    monkeypatch.setattr(attention, "interpreting", lambda: False)
    monkeypatch.setattr(attention.triton, "__version__", "3.6.0")  # the first-tile max compiles
    int8, bf16 = attention.default_config(128, qk_int8=True), attention.default_config(128)
    assert int8 == AttentionConfig(128, 128, 8, 3, 64, 4, remainder_block_n=64, first_tile_max=True)
    assert bf16 == AttentionConfig(128, 128, 8, 3, 64, 4)
    assert attention.default_config(64) == AttentionConfig(128, 64, 4, 3, 64, 4)
    assert (int8.block_m, int8.block_n, int8.remainder_m) == (bf16.block_m, bf16.block_n, bf16.remainder_m)
    assert attention.default_config(64, qk_int8=True) == attention.default_config(64)
    backend = TritonBackend()
    assert backend.config_for(128, qk_int8=True) == int8 and backend.config_for(128) == bf16
