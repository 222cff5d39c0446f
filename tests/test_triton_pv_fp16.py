"""P V with fp16 accumulation per key tile (AttentionConfig.pv_fp16_accumulate) against the fp64 oracle.

On the interpreter `_pv_fp16` emulates the fp16-accumulate MMA (fp16 partial rounded every 16 keys). v is
scaled per head by a power of two into fp16 (triton_kernels.value_scale), so v past fp16's range (1e5) and
heads far apart in magnitude give the fp32-accumulate path's error: with bf16 inputs within 5% of it (the
bf16 output's rounding dominates both), with fp16 inputs within 2x (fp16 rounds the output 8x finer, so the
fp16 sums show)."""
import dataclasses

import pytest
import torch

from oracle import masked_attention, plan_mask, relative_error
from triton_helpers import DEVICE, needs_ptxas, one_key_rises, random_labels, run_compiled

from svg2_core.backends import ClusterPlan
from svg2_core.triton_backend import TritonBackend
from svg2_core.triton_kernels.attention import AttentionConfig
from svg2_core.triton_kernels.value_scale import scale_values_fp16

NUM_TOKENS = 96
FP16_MMA = "mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16"


def _problem(dtype, v_scale, seed=3):
    """2 problems, 96 tokens (8 dense), head dim 64, 4 query x 20 key clusters at 60% density; v: standard
    normal times v_scale ([G] per problem, or a number)."""
    generator = torch.Generator().manual_seed(seed)
    q_labels, q_sizes = random_labels(2, NUM_TOKENS - 8, 4, generator)
    k_labels, k_sizes = random_labels(2, NUM_TOKENS - 8, 20, generator)
    block_mask = torch.rand(2, 4, 20, generator=generator) < 0.6
    plan = ClusterPlan(q_labels, k_labels, q_sizes, k_sizes, block_mask, 0, 8)
    plan = ClusterPlan(*(x.to(DEVICE) if isinstance(x, torch.Tensor) else x for x in vars(plan).values()))
    q, k, v = (torch.randn(2, NUM_TOKENS, 64, generator=generator) for _ in range(3))
    v = v * torch.as_tensor(v_scale, dtype=torch.float32).reshape(-1, 1, 1)
    return q.to(DEVICE, dtype), k.to(DEVICE, dtype), v.to(DEVICE, dtype), plan


def _config(first_tile_max, block=32, pv_fp16_accumulate=False):
    """Interpreter tiles: block x block, 16-row remainder tiles, 4 warps, 1 stage."""
    return AttentionConfig(block_m=block, block_n=block, num_warps=4, num_stages=1, remainder_m=block // 2,
                           first_tile_max=first_tile_max, pv_fp16_accumulate=pv_fp16_accumulate)


def _worst_head_error(out, oracle):
    """The largest relative error of one problem (heads of any magnitude count alike)."""
    return max(relative_error(out[g], oracle[g]) for g in range(out.shape[0]))


def _errors(q, k, v, plan, config, qk_int8, scale=0.125):
    """(fp16-accumulate output, its worst head's error, the fp32-accumulate path's) against the oracle (fp64:
    norms of 1e30 values)."""
    oracle = masked_attention(q, k, v, plan_mask(plan, NUM_TOKENS), scale, dtype=torch.float64)
    fp32 = TritonBackend(config).sparse_attention(q, k, v, plan, scale, qk_int8=qk_int8)
    fp16 = TritonBackend(dataclasses.replace(config, pv_fp16_accumulate=True)).sparse_attention(
        q, k, v, plan, scale, qk_int8=qk_int8)
    assert not torch.equal(fp16, fp32)  # the fp16 path is the one taken
    return fp16, _worst_head_error(fp16, oracle), _worst_head_error(fp32, oracle)


CASES = [pytest.param(first_tile_max, qk_int8, v_scale, id=f"{loop}-{scores}-{magnitude}")
         for first_tile_max, loop in ((False, "online"), (True, "first-tile max"))
         for qk_int8, scores in ((False, "bf16 scores"), (True, "int8 scores"))
         for v_scale, magnitude in ((1.0, "ordinary v"), (1e5, "v 1e5"))]
CASES.append(pytest.param(True, True, [1e-3, 1e30], id="first-tile max-int8 scores-heads of 1e-3 and 1e30"))


@pytest.mark.parametrize("first_tile_max, qk_int8, v_scale", CASES)
def test_fp16_accumulate_within_5_percent_of_fp32_accumulate(first_tile_max, qk_int8, v_scale):
    """first_tile_max (else the online softmax), qk_int8 (else bf16 scores), v's magnitude."""
    q, k, v, plan = _problem(torch.bfloat16, v_scale)
    out, error, fp32_error = _errors(q, k, v, plan, _config(first_tile_max), qk_int8)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert error <= 1.05 * fp32_error


@pytest.mark.parametrize("first_tile_max", [False, True], ids=["online", "first-tile max"])
def test_fp16_inputs_past_the_fp16_sum_range(first_tile_max):
    """fp16 v of 4e4 (a key tile's sum of p x v would pass 65,504 unscaled), bf16 scores."""
    q, k, v, plan = _problem(torch.float16, 1e4)
    assert v.abs().max() > 3e4
    out, error, fp32_error = _errors(q, k, v, plan, _config(first_tile_max), qk_int8=False)
    assert torch.isfinite(out).all()
    assert error <= 2 * fp32_error


# the interpreter's numpy warns where the first-tile max loop's fp16 weights or sums overflow, before the
# online softmax reruns the query tile
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("rise", [10.0, 40.0])
def test_first_tile_max_fp16_overflow_is_recomputed(rise):
    """One key of the last key tile scores `rise` above every key of the first tile and holds the head's
    largest v. 10: weight 2^14.4, fp16, but its product with v (x 2^e: 8 to 16) passes 65,504; 40: weight 2^58,
    inf in fp16. The overflow check must catch both and rerun the online softmax: that key's v within two
    bf16 roundings (2^-7), nothing inf / nan."""
    q, k, v, plan, scale = one_key_rises(rise, value_boost=4.0)
    num_tokens = q.shape[1]
    config = dataclasses.replace(_config(True, block=16), remainder_m=0, pv_fp16_accumulate=True)
    out = TritonBackend(config).sparse_attention(q, k, v, plan, scale)
    oracle = masked_attention(q, k, v, plan_mask(plan, num_tokens), scale)
    assert torch.isfinite(out).all()
    assert relative_error(out, oracle) <= 2.0 ** -7


def test_value_copy_is_exact_and_scaled_per_head():
    """A [B, H, N, D] view with head strides: copy x v_scale = v exactly, max |copy| in [8, 16) per head,
    v_scale a power of two; an all-zero head gets zeros (v_scale 2^-4)."""
    v = torch.randn(2, NUM_TOKENS, 3, 64, generator=torch.Generator().manual_seed(1)).transpose(1, 2)
    v = v * torch.tensor([1e-20, 1.0, 1e5, 1e30, 0.0, 3e37]).reshape(2, 3, 1, 1)
    v = v.to(torch.bfloat16).to(DEVICE)
    copy, v_scale = scale_values_fp16(v)
    assert copy.shape == v.shape and copy.dtype == torch.float16 and copy.is_contiguous()
    assert torch.equal(torch.frexp(v_scale)[0], torch.full_like(v_scale, 0.5))  # powers of two
    assert torch.equal(copy.float() * v_scale.reshape(2, 3, 1, 1), v.float())
    peaks = copy.float().abs().amax(dim=(-2, -1)).flatten()
    assert torch.all((peaks >= 8) & (peaks < 16) | (peaks == 0)) and peaks[4] == 0 and v_scale[4] == 2.0 ** -4


@needs_ptxas
def test_ptx_accumulates_p_v_in_fp16_on_sm89():
    """Compiled for sm_89 (small tiles, int8 scores, the first-tile max where this Triton compiles it, else the
    online softmax), the kernel with PV_FP16 holds the fp16-accumulate MMA and without it does not."""
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "try:\n    from svg2_core.triton_kernels.compile_check import compile_kernel\n"
        "except ImportError:\n    from compile_kernels import compile_kernel\n"
        "from svg2_core.triton_kernels import attention\n"
        "types = {'q_ptr': '*i8', 'k_ptr': '*i8', 'v_ptr': '*fp16', 'v_scale_ptr': '*fp32'}\n"
        "for pv_fp16 in (True, False):\n"
        "    constexprs = dict(HEAD_DIM=64, BLOCK_M=64, BLOCK_N=32, QK_INT8=True, UPCAST=False,\n"
        "                      FIRST_TILE_MAX=attention.first_tile_max_compiles(),\n"
        "                      PV_FP16=pv_fp16, **({} if pv_fp16 else dict(v_scale_ptr=None)))\n"
        "    ptx = compile_kernel(attention._sparse_attention_kernel, constexprs, 4, 2, 89,\n"
        "                         types if pv_fp16 else {'q_ptr': '*i8', 'k_ptr': '*i8'}).asm['ptx']\n"
        f"    print(pv_fp16, ptx.count('{FP16_MMA}'))\n")
    result = run_compiled("-c", code, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    counts = dict(line.split() for line in result.stdout.splitlines())
    assert int(counts["True"]) > 0 and int(counts["False"]) == 0, result.stdout
