"""Variable-block sparse flash attention (forward) over the kept key clusters of each query cluster.

Each program owns one query tile (BLOCK_M rows of one query block) and streams the keys of that block's
kept key blocks, packed back to back so that small key clusters share BLOCK_N-wide tiles. A query block is
cut into full BLOCK_M-row tiles plus, when its remainder fits, one REMAINDER_M-row tile run by a second
launch of the same kernel (less query padding). q and out stay in the original token order (rows gathered /
scattered through `q_rows`), and k / v are read in place through the plan's `k_rows`.

The keys of a query block are read through a row table (`kv_rows`: the k / v row of every packed slot),
built once per query block by `_kv_rows_kernel` from the plan's per-tile block-start masks and shared by
the block's tiles. The attention loop then only loads the next tile's rows (an affine load the pipeliner
can run ahead) instead of decoding them per slot, which keeps the loop's loads off its critical path. The
table holds N slots per query block, so it is built and consumed for a few problems (batch x heads) at a
time, keeping it within the size of q + k + v.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..gpu_classes import GpuClass
from ..gpu_classes import gpu_class as current_gpu_class
from ..problems import ProblemStrides, problem_rows
from . import interpreting
from .plan import AttentionLaunch
from .quantize import quantize_keys, quantize_queries
from .value_scale import scale_values_fp16

_LOG2_E = 1.4426950408889634

# The first Triton whose software pipeliner compiles the first-tile-max loop (older ones fail an assertion in
# its PassManager at num_stages > 1).
FIRST_TILE_MAX_TRITON = (3, 6)


def triton_version(version: str | None = None) -> tuple[int, int] | None:
    """(major, minor) of `version` (None: the installed `triton.__version__`), e.g. "3.5.1" -> (3, 5),
    "3.6.0+git1234" -> (3, 6), "3.3.1.post19" -> (3, 3); None when it does not start with two numbers."""
    match = re.match(r"\s*(\d+)\.(\d+)", triton.__version__ if version is None else str(version))
    return (int(match.group(1)), int(match.group(2))) if match else None


def first_tile_max_compiles(version: str | None = None) -> bool:
    """Whether Triton `version` (None: the installed one) compiles the first-tile-max loop on a GPU: 3.6 or
    newer. An unreadable version counts as older (the online softmax compiles on every supported Triton)."""
    parsed = triton_version(version)
    return parsed is not None and parsed >= FIRST_TILE_MAX_TRITON


@dataclass(frozen=True)
class AttentionConfig:
    """Tile sizes and launch shape of the sparse attention kernel.

    block_m x block_n query x key tiles, num_warps, num_stages (software pipeline depth).
    remainder_m: rows of the tile that takes a query block's last <= remainder_m rows (0: none, every tile is
    block_m rows); remainder_warps, remainder_block_n: its warps and key tile (0: block_n), so that with less
    shared memory two of its programs fit on an SM; it pipelines num_stages deep like the main tiles.
    first_tile_max: every key tile's weights are taken against the row max of the query block's first key
    tile, and the next tile's score MMA is issued before this tile's P V MMA (`_first_tile_max_key_tiles`):
    no running max, no rescaling, and a tile's exponentials overlap the previous tile's P V on the tensor
    cores. A query tile whose row sums overflow is recomputed with the online softmax.
    pv_fp16_accumulate: P V per key tile with fp16 operands and an fp16 result (the GeForce classes' double
    rate MMA), added to the fp32 accumulator across tiles; v is scaled per head by a power of two into an
    fp16 copy so that no tile's sum overflows fp16.
    """

    block_m: int = 128
    block_n: int = 128
    num_warps: int = 8
    num_stages: int = 3
    remainder_m: int = 64
    remainder_warps: int = 4
    remainder_block_n: int = 0
    first_tile_max: bool = False
    pv_fp16_accumulate: bool = False

    def describe(self) -> str:
        """A short human description, e.g. `128x128 tiles, 8 warps, 3 stages; remainder 64 rows, 4 warps`."""
        text = f"{self.block_m}x{self.block_n} tiles, {self.num_warps} warps, {self.num_stages} stages"
        if self.remainder_m:
            text += f"; remainder {self.remainder_m} rows, {self.remainder_warps} warps"
            if self.remainder_block_n and self.remainder_block_n != self.block_n:
                text += f", {self.remainder_block_n}-key tiles"
        else:
            text += "; no remainder tiles"
        return text + ("; first-tile max" if self.first_tile_max else "")


def default_config(head_dim: int, qk_int8: bool = False, gpu_class: GpuClass | None = None,
                   smallest: bool = False) -> AttentionConfig:
    """The tiles of `gpu_class` (None: the current device's, `gpu_classes.gpu_class()`) by its tile family;
    smallest: the small family's (what a launch that ran out of resources is retried with).

    Large (sm_80 / sm_90 / sm_100; measured fastest on the H200, BENCHMARKS.md): head dim 128, bf16 / fp16
    scores: 128 x 128 tiles, 8 warps, 3 stages, remainder tiles of 64 rows x 4 warps (two stages would not make
    room for a second program and are slower; the first-tile max needs more shared memory than a block has at
    3 stages). Head dim 128, int8 scores: the first-tile max with scores a tile ahead (shorter dependency chain
    per key tile, though the main tiles' registers spill), and remainder tiles of 64 keys, which spill nothing
    and fit two programs per SM. Head dim 64: 128 x 64 tiles, 4 warps.
    Consumer (101,376 B per block: sm_86 / sm_89 / sm_120): 128 x 64 tiles at head dim 128 too, 8 warps,
    3 stages, the first-tile max with int8 scores; P V accumulates in fp16 per key tile where the class's
    fp16-accumulate MMA runs at double rate. Small: 64 x 64 tiles, 4 warps, 2 stages, no remainder tiles.
    The plan's tiles (block_m, block_n, remainder_m) do not depend on the score precision.
    Under a Triton older than 3.6 (`first_tile_max_compiles`), int8 scores take the bf16 scores' tiles and
    their online softmax."""
    gpu_class = gpu_class or current_gpu_class()
    if interpreting():  # small tiles (the interpreter's time grows with them); P V as the class takes it
        pv_fp16 = gpu_class.fp16_accumulate_double_rate
        if smallest:
            return AttentionConfig(block_m=16, block_n=16, num_warps=4, num_stages=1, remainder_m=0,
                                   pv_fp16_accumulate=pv_fp16)
        return AttentionConfig(block_m=32, block_n=32, num_warps=4, num_stages=1, remainder_m=16,
                               pv_fp16_accumulate=pv_fp16)
    return class_config(head_dim, qk_int8, gpu_class, smallest)


def class_config(head_dim: int, qk_int8: bool, gpu_class: GpuClass, smallest: bool = False) -> AttentionConfig:
    """`default_config`'s GPU tiles for `gpu_class`, whether or not kernels run interpreted (the compile
    check's)."""
    if qk_int8 and not first_tile_max_compiles():  # the int8 tiles differ only to serve the first-tile max
        qk_int8 = False
    family = "small" if smallest else gpu_class.tile_family
    pv_fp16 = gpu_class.fp16_accumulate_double_rate
    if family == "small":
        return AttentionConfig(block_m=64, block_n=64, num_warps=4, num_stages=2, remainder_m=0,
                               first_tile_max=qk_int8, pv_fp16_accumulate=pv_fp16)
    if head_dim <= 64:
        return AttentionConfig(block_m=128, block_n=64, num_warps=4, num_stages=3, remainder_m=64,
                               remainder_warps=4, pv_fp16_accumulate=pv_fp16)
    if family == "consumer":
        return AttentionConfig(block_m=128, block_n=64, first_tile_max=qk_int8, pv_fp16_accumulate=pv_fp16)
    if qk_int8:
        return AttentionConfig(remainder_block_n=64, first_tile_max=True)
    return AttentionConfig()


def attention_launches(config: AttentionConfig) -> list[tuple[int, int, int, int]]:
    """(block_m, block_n, num_warps, num_stages) of the kernel's launches under `config`: the main tiles, then
    the remainder tiles when config.remainder_m."""
    launches = [(config.block_m, config.block_n, config.num_warps, config.num_stages)]
    if config.remainder_m:
        launches.append((config.remainder_m, config.remainder_block_n or config.block_n, config.remainder_warps,
                         config.num_stages))
    return launches


# The row table's launch: key tiles walked per step and warps per program.
ROW_TABLE_TILES = 4
ROW_TABLE_WARPS = 2


@triton.jit
def _popcount64(x, USE_ASM: tl.constexpr):
    """Set bits of each uint64 lane: `popc.b64` on the GPU, SWAR in the interpreter."""
    if USE_ASM:
        return tl.inline_asm_elementwise("popc.b64 $0, $1;", "=r,l", [x], dtype=tl.int32, is_pure=True, pack=1)
    else:
        x = x - ((x >> 1) & 0x5555555555555555)
        x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
        return ((x * 0x0101010101010101) >> 56).to(tl.int32)


@triton.jit
def _kv_rows_kernel(kv_rows_ptr, k_rows_ptr, kv_length_ptr, kv_row_shift_ptr, kv_tile_starts_ptr,
                    first_problem, num_tokens, num_q_blocks, num_k_blocks, num_kv_tiles,
                    BLOCK_N: tl.constexpr, WORDS: tl.constexpr, TILES: tl.constexpr, USE_ASM: tl.constexpr):
    """kv_rows[p, b, s] = row (within the problem) of k / v under packed slot s of query block b, for the
    problems first_problem + p of this chunk; slots past the block's kv_length are left unwritten.
    k_rows [G, N]: the flat k / v row of each cluster-sorted key position (the plan's).

    Walks the block's BLOCK_N-slot key tiles, TILES at a time. Bit r of a tile's start mask (low word: slots
    0-63, high word: 64-127) is set where a kept block starts at slot r, so the packed block of slot r is the
    kept blocks starting before the tile plus the starts in [0, r] of the tile, minus one."""
    q_block = tl.program_id(0)
    local_problem = tl.program_id(1)
    problem = first_problem + local_problem
    block_slot = problem * num_q_blocks + q_block
    kv_length = tl.load(kv_length_ptr + block_slot)
    row_shift_ptr = kv_row_shift_ptr + block_slot.to(tl.int64) * num_k_blocks
    tile_starts_ptr = kv_tile_starts_ptr + block_slot.to(tl.int64) * (num_kv_tiles * WORDS)
    out_base = kv_rows_ptr + (local_problem * num_q_blocks + q_block).to(tl.int64) * num_tokens
    within = tl.arange(0, BLOCK_N)
    low_bits = tl.minimum(within, 63).to(tl.uint64)
    high_bits = tl.maximum(within - 64, 0).to(tl.uint64)
    kept_before = 0
    for first_tile in range(0, tl.cdiv(kv_length, BLOCK_N), TILES):
        tiles = first_tile + tl.arange(0, TILES)
        tile_ok = tiles < num_kv_tiles
        low = tl.load(tile_starts_ptr + tiles * WORDS, mask=tile_ok, other=0).to(tl.uint64, bitcast=True)
        starts_up_to = _popcount64(low[:, None] & ((2 << low_bits[None, :]) - 1), USE_ASM)  # [TILES, BLOCK_N]
        if WORDS == 2:
            high = tl.load(tile_starts_ptr + tiles * WORDS + 1, mask=tile_ok, other=0).to(tl.uint64, bitcast=True)
            high_count = _popcount64(high[:, None] & ((2 << high_bits[None, :]) - 1), USE_ASM)
            starts_up_to += tl.where(within[None, :] >= 64, high_count, 0)
        starts_in_tile = tl.max(starts_up_to, axis=1)
        tile_kept_before = kept_before + tl.cumsum(starts_in_tile, axis=0) - starts_in_tile
        slots = tiles[:, None] * BLOCK_N + within[None, :]
        slot_ok = slots < kv_length
        shift = tl.load(row_shift_ptr + tile_kept_before[:, None] + starts_up_to - 1, mask=slot_ok, other=0)
        sorted_rows = tl.where(slot_ok, slots + shift, 0)
        flat = tl.load(k_rows_ptr + problem.to(tl.int64) * num_tokens + sorted_rows, mask=slot_ok, other=0)
        rows = flat - problem * num_tokens
        tl.store(out_base + slots, rows, mask=slot_ok)
        kept_before += tl.sum(starts_in_tile, axis=0)


# With the first-tile max, a tile's weights are 2^(score - the row's max over the first key tile), >= 1 where
# scores rise above that max. A query tile whose row sums pass this (never at real inputs: 2^100 is a score 69
# above the first tile's max, in natural-log units) is recomputed with the online softmax, so nothing overflows.
FIRST_TILE_MAX_SUM_LIMIT = tl.constexpr(2.0 ** 100)


@triton.jit
def _tile_scores(q, k, QK_INT8: tl.constexpr):
    """Scores of a query tile against a key tile [BLOCK_M, BLOCK_N] (QK_INT8: int32 codes' dot, as fp32)."""
    if QK_INT8:
        return tl.dot(q, tl.trans(k)).to(tl.float32)
    else:
        return tl.dot(q, tl.trans(k))


@triton.jit
def _row_scale(qk_scale, QK_INT8: tl.constexpr):
    """What scores are multiplied by: the scalar scale, or (QK_INT8) its [BLOCK_M] per-row factors as a column."""
    if QK_INT8:
        return qk_scale[:, None]
    else:
        return qk_scale


@triton.jit
def _pv_operand(p, v, PV_FP16: tl.constexpr):
    """The weights as the P V MMA takes them: fp16 (PV_FP16), else v's dtype."""
    if PV_FP16:
        return p.to(tl.float16)
    else:
        return p.to(v.dtype)


@triton.jit
def _pv_fp16(p, v, BLOCK_N: tl.constexpr, EMULATE: tl.constexpr):
    """p [BLOCK_M, BLOCK_N] fp16 x v [BLOCK_N, HEAD_DIM] (fp16 values) summed in fp16: the fp16-accumulate MMA
    (m16n8k16, f16 result) that GeForce cards run at twice the fp32-accumulate rate. EMULATE (interpreter, v as
    fp32): the interpreter's fp16 dot sums in fp32 and rounds once, so the MMA chain is emulated: every 16 keys
    their products are summed in fp32 and added to the fp16 partial, rounded to nearest fp16 (overflow: inf)."""
    if EMULATE:
        p = p.to(tl.float32)
        keys = tl.arange(0, BLOCK_N)
        pv = tl.dot(tl.where((keys < 16)[None, :], p, 0.0), v).to(tl.float16)
        for step in tl.static_range(16, BLOCK_N, 16):
            in_step = (keys >= step) & (keys < step + 16)
            pv = (pv.to(tl.float32) + tl.dot(tl.where(in_step[None, :], p, 0.0), v)).to(tl.float16)
        return pv
    else:
        return tl.dot(p, v, out_dtype=tl.float16)


@triton.jit
def _attend(q, k, v, m_i, l_i, acc, qk_scale, slot_ok, MASKED: tl.constexpr, QK_INT8: tl.constexpr,
            PV_FP16: tl.constexpr = False, BLOCK_N: tl.constexpr = 0, UPCAST: tl.constexpr = False):
    """One key tile of the online softmax: new running max, rescaled running sum and accumulator.
    qk_scale: a scalar, or (QK_INT8: int8 codes of q and k, int32 scores) [BLOCK_M] per-row factors.
    A row with every slot masked so far keeps max 0 (not -inf), sum 0 and accumulator 0.
    PV_FP16: the tile's P V in fp16 (`_pv_fp16`; v holds fp16 values), added to the fp32 accumulator."""
    scores = _tile_scores(q, k, QK_INT8)
    row_scale = _row_scale(qk_scale, QK_INT8)
    if MASKED:
        scores = tl.where(slot_ok[None, :], scores, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(scores, axis=1) * qk_scale)  # every scale is > 0
    if MASKED:
        m_new = tl.where(m_new > float("-inf"), m_new, 0.0)
    p = tl.math.exp2(scores * row_scale - m_new[:, None])
    alpha = tl.math.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if PV_FP16:
        acc = acc * alpha[:, None] + _pv_fp16(_pv_operand(p, v, PV_FP16), v, BLOCK_N, UPCAST).to(tl.float32)
    else:
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return m_new, l_i, acc


@triton.jit
def _load_rows(base, rows, dims, stride_n, UPCAST: tl.constexpr):
    """Rows [BLOCK_N, HEAD_DIM] of k or v (UPCAST: fp32, for the interpreter)."""
    tile = tl.load(base + rows[:, None] * stride_n + dims[None, :])
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _load_key_tile(k_base, v_base, rows, dims, k_stride_n, v_stride_n, UPCAST: tl.constexpr):
    """k, v rows [BLOCK_N, HEAD_DIM] of one key tile."""
    return (_load_rows(k_base, rows, dims, k_stride_n, UPCAST), _load_rows(v_base, rows, dims, v_stride_n, UPCAST))


@triton.jit
def _key_tiles(q, k_base, v_base, rows_base, kv_length, k_stride_n, v_stride_n, qk_scale, dims,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, QK_INT8: tl.constexpr,
               UPCAST: tl.constexpr, PV_FP16: tl.constexpr = False):
    """The online softmax (`_attend`) over all kv_length packed key slots of the query block: (l_i, acc),
    acc / l_i the output."""
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    within = tl.arange(0, BLOCK_N)
    # The rows of the next key tile are loaded one iteration ahead and carried, so the k / v loads of an
    # iteration depend on no load of their own iteration (slots past kv_length read row 0: masked later).
    rows = tl.load(rows_base + within, mask=within < kv_length, other=0)
    full_end = (kv_length // BLOCK_N) * BLOCK_N
    for key_start in range(0, full_end, BLOCK_N):
        k, v = _load_key_tile(k_base, v_base, rows, dims, k_stride_n, v_stride_n, UPCAST)
        next_slots = key_start + BLOCK_N + within
        rows = tl.load(rows_base + next_slots, mask=next_slots < kv_length, other=0)
        m_i, l_i, acc = _attend(q, k, v, m_i, l_i, acc, qk_scale, within, False, QK_INT8, PV_FP16, BLOCK_N, UPCAST)
    if full_end < kv_length:
        # -- the last, partial key tile: slots past kv_length are masked --
        k, v = _load_key_tile(k_base, v_base, rows, dims, k_stride_n, v_stride_n, UPCAST)
        slot_ok = full_end + within < kv_length
        m_i, l_i, acc = _attend(q, k, v, m_i, l_i, acc, qk_scale, slot_ok, True, QK_INT8, PV_FP16, BLOCK_N, UPCAST)
    return l_i, acc


@triton.jit
def _first_tile_max_key_tiles(q, k_base, v_base, rows_base, kv_length, k_stride_n, v_stride_n, qk_scale, dims,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                              QK_INT8: tl.constexpr, UPCAST: tl.constexpr, PV_FP16: tl.constexpr = False):
    """Softmax over all kv_length packed key slots with every tile's weights against a fixed reference,
    p = 2^(score - m_ref), m_ref the row max of the query block's first key tile: no later tile waits for a
    reduction of its scores and the accumulator is never rescaled (the output holds unless l_i passes
    FIRST_TILE_MAX_SUM_LIMIT). Pipelined by hand: iteration j takes key tile j's weights from the scores of
    iteration j - 1, issues tile j + 1's score MMA, then tile j's P V MMA (asynchronous), so that the weights
    of tile j + 1 are computed while the tensor cores run tile j's P V. PV_FP16: each tile's P V in fp16
    (`_pv_fp16`), added to acc; weights past fp16's range or a tile sum past it give inf / nan in acc, which
    the caller's overflow check catches. Returns (l_i, acc)."""
    row_scale = _row_scale(qk_scale, QK_INT8)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
    within = tl.arange(0, BLOCK_N)
    num_tiles = tl.cdiv(kv_length, BLOCK_N)
    # rows of tiles j and j + 1 are carried, so no load of an iteration depends on a load of the same one
    rows = tl.load(rows_base + within, mask=within < kv_length, other=0)
    rows_next = tl.load(rows_base + BLOCK_N + within, mask=BLOCK_N + within < kv_length, other=0)
    scores = _tile_scores(q, _load_rows(k_base, rows, dims, k_stride_n, UPCAST), QK_INT8)
    first_max = tl.max(tl.where((within < kv_length)[None, :], scores, float("-inf")), axis=1) * qk_scale
    m_ref = tl.where(first_max > float("-inf"), first_max, 0.0)  # a block without keys: no tile at all
    for tile in range(0, num_tiles - 1):  # tile j is full (a later one exists)
        v = _load_rows(v_base, rows, dims, v_stride_n, UPCAST)
        k = _load_rows(k_base, rows_next, dims, k_stride_n, UPCAST)
        after_next = (tile + 2) * BLOCK_N + within
        # (a value carried two iterations stops Triton's pipeliner; rows >= 0, so this is rows_next, not
        # the loop argument itself)
        rows = tl.maximum(rows_next, 0)
        rows_next = tl.load(rows_base + after_next, mask=after_next < kv_length, other=0)
        p = tl.math.exp2(scores * row_scale - m_ref[:, None])
        l_i += tl.sum(p, axis=1)
        p = _pv_operand(p, v, PV_FP16)  # before the score MMA: its fp32 form must not be live beside the new scores
        scores = _tile_scores(q, k, QK_INT8)
        if PV_FP16:
            acc += _pv_fp16(p, v, BLOCK_N, UPCAST).to(tl.float32)
        else:
            acc = tl.dot(p, v, acc)
    if num_tiles > 0:
        # -- the last tile, maybe partial: slots past kv_length are masked --
        v = _load_rows(v_base, rows, dims, v_stride_n, UPCAST)
        slot_ok = (num_tiles - 1) * BLOCK_N + within < kv_length
        scores = tl.where(slot_ok[None, :], scores, float("-inf"))
        p = tl.math.exp2(scores * row_scale - m_ref[:, None])
        l_i += tl.sum(p, axis=1)
        if PV_FP16:
            acc += _pv_fp16(_pv_operand(p, v, PV_FP16), v, BLOCK_N, UPCAST).to(tl.float32)
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
    return l_i, acc


@triton.jit
def _sparse_attention_kernel(q_ptr, k_ptr, v_ptr, out_ptr, q_scale_ptr, k_scale_ptr, q_rows_ptr, tile_block_ptr, tile_start_ptr,
                             q_block_end_ptr, kv_length_ptr, kv_rows_ptr, first_problem, num_tokens,
                             num_q_blocks, num_tiles, qk_scale, heads,
                             q_stride_b, q_stride_h, q_stride_n, k_stride_b, k_stride_h, k_stride_n,
                             v_stride_b, v_stride_h, v_stride_n, out_stride_b, out_stride_h, out_stride_n,
                             HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             QK_INT8: tl.constexpr, UPCAST: tl.constexpr, FIRST_TILE_MAX: tl.constexpr = False,
                             PV_FP16: tl.constexpr = False, v_scale_ptr=None):
    """QK_INT8: q_ptr / k_ptr hold int8 codes, q_scale_ptr [G, N] and k_scale_ptr [G] their scales
    (triton_kernels.quantize), and scores come from one int8 MMA (svg2_core.quantize). Else the scale
    pointers are unused. FIRST_TILE_MAX: `_first_tile_max_key_tiles`, with the online softmax again for a
    query tile whose weights grew past FIRST_TILE_MAX_SUM_LIMIT; else the online softmax (`_key_tiles`).
    PV_FP16: v_ptr holds v's fp16 copy, v / v_scale (triton_kernels.value_scale; v_scale_ptr [G] fp32, a power
    of two per problem), P V is summed in fp16 per key tile, and the output is multiplied by v_scale. Else
    v_scale_ptr is None (a constexpr: no kernel argument)."""
    tile = tl.program_id(0)
    local_problem = tl.program_id(1)
    problem = first_problem + local_problem
    q_block = tl.load(tile_block_ptr + problem * num_tiles + tile)
    if q_block >= num_q_blocks:
        return
    block_slot = problem * num_q_blocks + q_block
    tile_start = tl.load(tile_start_ptr + problem * num_tiles + tile)
    block_end = tl.load(q_block_end_ptr + block_slot)
    dims = tl.arange(0, HEAD_DIM)
    offs_m = tile_start + tl.arange(0, BLOCK_M)
    row_ok = offs_m < block_end
    problem_row = problem.to(tl.int64) * num_tokens
    batch_index = problem.to(tl.int64) // heads
    head_index = problem.to(tl.int64) % heads
    # tokens (within the problem) of this tile's query rows; q and out are read / written in place
    q_tokens = tl.load(q_rows_ptr + problem_row + offs_m, mask=row_ok, other=0).to(tl.int64) - problem_row
    q_tokens = tl.where(row_ok, q_tokens, 0)
    q_base = q_ptr + batch_index * q_stride_b + head_index * q_stride_h
    q = tl.load(q_base + q_tokens[:, None] * q_stride_n + dims[None, :], mask=row_ok[:, None], other=0.0)
    if QK_INT8:  # per row: s_q x s_k x softmax scale (log2 e folded in)
        q_scale = tl.load(q_scale_ptr + problem_row + q_tokens, mask=row_ok, other=1.0)
        qk_scale = q_scale * (tl.load(k_scale_ptr + problem) * qk_scale)
    if UPCAST:
        q = q.to(tl.float32)

    kv_length = tl.load(kv_length_ptr + block_slot)
    rows_base = kv_rows_ptr + (local_problem * num_q_blocks + q_block).to(tl.int64) * num_tokens
    # one 64-bit base per problem; offsets inside it are int32 (N x token stride < 2^31)
    k_base = k_ptr + batch_index * k_stride_b + head_index * k_stride_h
    v_base = v_ptr + batch_index * v_stride_b + head_index * v_stride_h
    if FIRST_TILE_MAX:
        l_i, acc = _first_tile_max_key_tiles(q, k_base, v_base, rows_base, kv_length, k_stride_n, v_stride_n,
                                             qk_scale, dims, BLOCK_M, BLOCK_N, HEAD_DIM, QK_INT8, UPCAST, PV_FP16)
        # l_i <= limit (2^100) keeps acc finite for |v| < 2^27; inf / nan in acc (larger v) are caught too
        overflow = (l_i > FIRST_TILE_MAX_SUM_LIMIT)[:, None] | (tl.abs(acc) > 3.0e38) | (acc != acc)
        if tl.max(overflow.to(tl.int32)) > 0:
            l_i, acc = _key_tiles(q, k_base, v_base, rows_base, kv_length, k_stride_n, v_stride_n, qk_scale,
                                  dims, BLOCK_M, BLOCK_N, HEAD_DIM, QK_INT8, UPCAST, PV_FP16)
    else:
        l_i, acc = _key_tiles(q, k_base, v_base, rows_base, kv_length, k_stride_n, v_stride_n, qk_scale, dims,
                              BLOCK_M, BLOCK_N, HEAD_DIM, QK_INT8, UPCAST, PV_FP16)
    # A query block that keeps no key at all (never the case for SVG2 masks) gets zeros, like the reference.
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    if PV_FP16:
        out = out * tl.load(v_scale_ptr + problem)
    out_base = out_ptr + batch_index * out_stride_b + head_index * out_stride_h
    tl.store(out_base + q_tokens[:, None] * out_stride_n + dims[None, :], out.to(out_ptr.dtype.element_ty),
             mask=row_ok[:, None])


def problems_per_chunk(num_problems: int, num_q_blocks: int, num_tokens: int, head_dim: int,
                       element_size: int) -> int:
    """How many problems share one row table ([P, Bq, N] int32) so that it stays within the size of
    q + k + v (at least one problem): fewer, larger launches while a call's extra memory stays <= 2x q + k + v."""
    qkv_bytes_per_problem = 3 * num_tokens * head_dim * element_size
    table_bytes_per_problem = num_q_blocks * num_tokens * 4
    return max(1, min(num_problems, num_problems * qkv_bytes_per_problem // table_bytes_per_problem))


def fill_row_table(kv_rows: torch.Tensor, launch: AttentionLaunch, first_problem: int, problems: int) -> None:
    """kv_rows [P, Bq, N] int32 (P >= problems): for problems first_problem .. + problems, the row of the
    original k / v under every packed key slot of every query block. One program per (query block, problem),
    ROW_TABLE_TILES key tiles per step (the fastest of the shapes tried on the H200)."""
    num_tokens = launch.q_rows.shape[1]
    num_q_blocks, num_k_blocks = launch.kv_row_shift.shape[1:]
    num_kv_tiles = launch.kv_tile_starts.shape[2] // launch.kv_words
    _kv_rows_kernel[(num_q_blocks, problems)](
        kv_rows, launch.k_rows, launch.kv_length, launch.kv_row_shift, launch.kv_tile_starts, first_problem,
        num_tokens, num_q_blocks, num_k_blocks, num_kv_tiles,
        BLOCK_N=launch.block_n, WORDS=launch.kv_words, TILES=ROW_TABLE_TILES, USE_ASM=not interpreting(),
        num_warps=ROW_TABLE_WARPS)


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, launch: AttentionLaunch, scale: float,
                     config: AttentionConfig, qk_int8: bool = False) -> torch.Tensor:
    """q, k, v: [G, N, D] or [B, H, N, D] in original order, read in place (any strides, last dim contiguous;
    svg2_core.problems), one dtype (fp16/bf16). qk_int8: scores from int8 codes
    of q and k (svg2_core.quantize), coded first (triton_kernels.quantize).

    Tiles come from `launch`, warps and stages from `config`. Returns out in q's shape, dtype, original
    order and (when q is dense) q's strides. Extra memory: one row table, at most q + k + v, with
    qk_int8 the codes of q and k (half their size), and with config.pv_fp16_accumulate v's scaled fp16 copy
    (triton_kernels.value_scale: v's size), in all at most 2x q + k + v.
    """
    num_problems, num_tokens, head_dim = problem_rows(q)
    out = torch.empty_like(q)
    if qk_int8:
        q, q_scale = quantize_queries(q)
        k, k_scale = quantize_keys(k)
    else:
        q_scale = k_scale = torch.empty(0, dtype=torch.float32, device=q.device)
    v_scale = None  # None: a constexpr, no kernel argument
    if config.pv_fp16_accumulate:
        v, v_scale = scale_values_fp16(v)
    # the kernel's key offsets within a problem are int32: rows too far apart are read from a compact copy
    if num_tokens * ProblemStrides.of(k).token >= 2 ** 31:
        k = k.contiguous()
    if num_tokens * ProblemStrides.of(v).token >= 2 ** 31:
        v = v.contiguous()
    q_strides, k_strides, v_strides = ProblemStrides.of(q), ProblemStrides.of(k), ProblemStrides.of(v)
    if k_strides.heads != q_strides.heads or v_strides.heads != q_strides.heads:
        raise ValueError(f"k / v {tuple(k.shape)}, {tuple(v.shape)} and q {tuple(q.shape)} must "
                         "have the same batch x heads layout")
    out_strides = ProblemStrides.of(out)
    num_q_blocks = launch.q_block_end.shape[1]
    chunk = problems_per_chunk(num_problems, num_q_blocks, num_tokens, head_dim, q.element_size())
    kv_rows = torch.empty(chunk, num_q_blocks, num_tokens, dtype=torch.int32, device=q.device)
    main, *remainder = attention_launches(config)
    if (main[0], main[1]) != (launch.block_m, launch.block_n) or bool(remainder) != bool(launch.remainder_m) or (
            remainder and remainder[0][0] != launch.remainder_m):
        raise ValueError(f"launch tiles ({launch.block_m}x{launch.block_n}, remainder {launch.remainder_m}) do "
                         f"not match the config ({config.describe()})")
    tiles = [(launch.q_tile_block, launch.q_tile_start, *main)]
    if remainder:
        tiles.append((launch.rem_tile_block, launch.rem_tile_start, *remainder[0]))
    for first_problem in range(0, num_problems, chunk):
        problems = min(chunk, num_problems - first_problem)
        fill_row_table(kv_rows, launch, first_problem, problems)
        for tile_block, tile_start, block_m, block_n, warps, stages in tiles:
            num_tiles = tile_block.shape[1]
            _sparse_attention_kernel[(num_tiles, problems)](
                q, k, v, out, q_scale, k_scale, launch.q_rows, tile_block, tile_start, launch.q_block_end,
                launch.kv_length, kv_rows, first_problem, num_tokens, num_q_blocks, num_tiles, scale * _LOG2_E,
                q_strides.heads, *q_strides.strides, *k_strides.strides, *v_strides.strides, *out_strides.strides,
                HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, QK_INT8=qk_int8,
                UPCAST=interpreting(), FIRST_TILE_MAX=config.first_tile_max, PV_FP16=config.pv_fp16_accumulate,
                v_scale_ptr=v_scale, num_warps=warps, num_stages=stages)
    return out
