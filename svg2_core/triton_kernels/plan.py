"""Launch metadata for the variable-block sparse attention kernel, built on the device with fixed-size
torch ops and one small Triton kernel for the key side (no host synchronisation, CUDA-graph capturable).

Block layout is `[dense prefix, clusters..., dense suffix]` (svg2_core.layout). G = batch x heads,
Bq = Cq + 2 query blocks, Bk = Ck + 2 key blocks, N tokens per problem.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..layout import block_sizes_with_dense
from .kmeans import sort_by_label


@dataclass
class AttentionLaunch:
    """Everything the kernel reads besides q, k, v (int32 unless noted, contiguous).

    q_rows [G, N]: flat row (g * N + n) of q / out for each cluster-sorted query position.
    k_rows [G, N]: flat row of k / v for each cluster-sorted key position (gather k, v with it).
    q_tile_block, q_tile_start [G, Tq]: query block (Bq = no tile) and first sorted position of each
    block_m-row tile; rem_tile_block, rem_tile_start [G, Bq]: the same for the remainder_m-row tile of
    each block (Bq where the block has none; unused when remainder_m is 0);
    q_block_end [G, Bq]: sorted position past each query block's last row.
    kv_length [G, Bq]: kept key tokens of a query block (packed back to back, "slots");
    kv_row_shift [G, Bq, Bk]: cluster-sorted key row minus slot inside the p-th kept key block (entries
    past the block's kept count are not written);
    kv_tile_starts [G, Bq, Tk * kv_words] int64, Tk = ceil(N / block_n): bit r of word w of a tile set where
    a kept block starts at slot 64 w + r of that tile. The kept block of a slot is the number of starts up to
    and including it, minus one.
    """

    q_rows: torch.Tensor
    k_rows: torch.Tensor
    q_tile_block: torch.Tensor
    q_tile_start: torch.Tensor
    rem_tile_block: torch.Tensor
    rem_tile_start: torch.Tensor
    q_block_end: torch.Tensor
    kv_length: torch.Tensor
    kv_row_shift: torch.Tensor
    kv_tile_starts: torch.Tensor
    block_m: int
    block_n: int
    remainder_m: int
    kv_words: int


# Key blocks a _kv_plan_kernel program holds at once (it walks longer rows in chunks).
KV_PLAN_CHUNK = 1024

def cluster_rows(labels: torch.Tensor, num_clusters: int, num_tokens: int, dense_prefix: int,
                 dense_suffix: int, label_sort: torch.Tensor | None = None) -> torch.Tensor:
    """Flat rows (g * N + n) in cluster-contiguous order, dense tokens in place.

    labels: [G, Nc] int32 of the clustered span; returns [G, N] int32. label_sort: `sort_by_label(labels)`'s
    sorted_points [G * Nc] when the caller has it (the Triton k-means' last sort, KMeansResult.label_sort),
    else the labels are sorted here.
    """
    num_problems, num_clustered = labels.shape
    device = labels.device
    sorted_points = label_sort
    if sorted_points is None:
        sorted_points, _ = sort_by_label(labels.contiguous(), num_clusters)
    flat = sorted_points.view(num_problems, num_clustered)
    problem = torch.arange(num_problems, device=device, dtype=torch.int32).unsqueeze(1)
    middle = flat + problem * (num_tokens - num_clustered) + dense_prefix
    prefix = problem * num_tokens + torch.arange(dense_prefix, device=device, dtype=torch.int32)
    suffix_start = dense_prefix + num_clustered
    suffix = problem * num_tokens + torch.arange(suffix_start, num_tokens, device=device, dtype=torch.int32)
    return torch.cat([prefix, middle, suffix], dim=1)


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    inclusive = x.cumsum(-1, dtype=torch.int32)
    return inclusive - x


def _longest_first(kv_length: torch.Tensor, tile_block: torch.Tensor, tile_start: torch.Tensor):
    """Reorder tiles [G, T] (block Bq = no tile, sorted last) by their block's kv_length [G, Bq], descending;
    stable, so tiles of one block keep their order and stay next to each other."""
    num_q_blocks = kv_length.shape[1]
    padded = torch.cat([kv_length, kv_length.new_full((kv_length.shape[0], 1), -1)], dim=1)
    work = padded.gather(1, tile_block.long().clamp(max=num_q_blocks))
    order = torch.sort(work, dim=1, descending=True, stable=True).indices
    return tile_block.gather(1, order).contiguous(), tile_start.gather(1, order).contiguous()


@triton.jit
def _kv_plan_kernel(block_mask_ptr, k_block_size_ptr, k_block_start_ptr, kv_length_ptr, kv_row_shift_ptr,
                    kv_tile_starts_ptr, num_q_blocks, num_k_blocks, words_per_q_block,
                    BLOCK_N: tl.constexpr, WORDS: tl.constexpr, CHUNK: tl.constexpr):
    """Key side of one query block (program (q block, problem)): walk the key blocks in order, keep the
    non-empty ones its mask row keeps (dense prefix / suffix blocks always), pack them back to back and
    write kv_length, kv_row_shift and the start bits (kv_tile_starts must come in zeroed).

    block_mask [G, Bq - 2, Bk - 2] uint8; k_block_size, k_block_start [G, Bk] int32."""
    q_block = tl.program_id(0)
    problem = tl.program_id(1)
    block_slot = problem.to(tl.int64) * num_q_blocks + q_block
    dense_row = (q_block == 0) | (q_block == num_q_blocks - 1)
    num_k_clusters = num_k_blocks - 2
    mask_row_ptr = block_mask_ptr + (problem.to(tl.int64) * (num_q_blocks - 2) + q_block - 1) * num_k_clusters
    row_shift_ptr = kv_row_shift_ptr + block_slot * num_k_blocks
    tile_starts_ptr = kv_tile_starts_ptr + block_slot * words_per_q_block
    slots_before = 0
    kept_before = 0
    for chunk_start in range(0, num_k_blocks, CHUNK):
        k_block = chunk_start + tl.arange(0, CHUNK)
        k_block_ok = k_block < num_k_blocks
        size = tl.load(k_block_size_ptr + problem * num_k_blocks + k_block, mask=k_block_ok, other=0)
        start = tl.load(k_block_start_ptr + problem * num_k_blocks + k_block, mask=k_block_ok, other=0)
        dense_column = (k_block == 0) | (k_block == num_k_blocks - 1)
        from_mask = k_block_ok & ~dense_column & ~dense_row
        cluster_kept = tl.load(mask_row_ptr + k_block - 1, mask=from_mask, other=0) != 0
        kept = k_block_ok & (size > 0) & (dense_row | dense_column | cluster_kept)
        length = tl.where(kept, size, 0)
        kept_start = slots_before + tl.cumsum(length, axis=0) - length
        packed = kept_before + tl.cumsum(kept.to(tl.int32), axis=0) - 1
        tl.store(row_shift_ptr + packed, start - kept_start, mask=kept)
        word = (kept_start // BLOCK_N) * WORDS + (kept_start % BLOCK_N) // 64
        bit = tl.full([CHUNK], 1, tl.int64) << ((kept_start % BLOCK_N) % 64).to(tl.int64)
        tl.atomic_or(tile_starts_ptr + word, bit, mask=kept, sem="relaxed")
        slots_before += tl.sum(length, axis=0)
        kept_before += tl.sum(kept.to(tl.int32), axis=0)
    tl.store(kv_length_ptr + block_slot, slots_before)


def build_launch(q_labels: torch.Tensor, k_labels: torch.Tensor, q_cluster_sizes: torch.Tensor,
                 k_cluster_sizes: torch.Tensor, block_mask: torch.Tensor, dense_prefix: int,
                 dense_suffix: int, num_tokens: int, block_m: int, block_n: int,
                 remainder_m: int = 0, q_label_sort: torch.Tensor | None = None,
                 k_label_sort: torch.Tensor | None = None) -> AttentionLaunch:
    """Turn a ClusterPlan's fields into kernel metadata.

    q_labels, k_labels: [G, Nc] int32; q_cluster_sizes [G, Cq], k_cluster_sizes [G, Ck] int32;
    block_mask [G, Cq, Ck] bool. Sizes are bounded by G x Bq x max(Bk, N / block_n) int32.
    remainder_m (0 or < block_m): a query block's last rows go to one remainder_m-row tile when they fit.
    q_label_sort, k_label_sort: the labels' `sort_by_label` sorted_points where known (`cluster_rows`).
    Each problem's tiles are ordered by their block's kept keys, longest first (tiles of one block stay
    adjacent), so that a launch does not end on a few long tiles while most of the GPU idles.
    """
    num_problems = q_labels.shape[0]
    num_q_clusters = q_cluster_sizes.shape[1]
    num_k_clusters = k_cluster_sizes.shape[1]
    device = q_labels.device
    q_rows = cluster_rows(q_labels, num_q_clusters, num_tokens, dense_prefix, dense_suffix, q_label_sort)
    k_rows = cluster_rows(k_labels, num_k_clusters, num_tokens, dense_prefix, dense_suffix, k_label_sort)

    # -- query tiles: full block_m-row tiles, the last rows in one remainder_m-row tile when they fit --
    if not 0 <= remainder_m < block_m:
        raise ValueError(f"remainder_m must be in [0, block_m), got {remainder_m}")
    q_block_size = block_sizes_with_dense(q_cluster_sizes, dense_prefix, dense_suffix)
    num_q_blocks = q_block_size.shape[1]
    q_block_start = _exclusive_cumsum(q_block_size)
    q_block_end = (q_block_start + q_block_size).contiguous()
    if remainder_m:
        tail = q_block_size % block_m
        has_remainder = (tail > 0) & (tail <= remainder_m)
        q_block_tiles = (q_block_size + block_m - 1) // block_m - has_remainder.int()
    else:
        has_remainder = torch.zeros_like(q_block_size, dtype=torch.bool)
        q_block_tiles = (q_block_size + block_m - 1) // block_m
    q_tiles_inclusive = q_block_tiles.cumsum(-1, dtype=torch.int32)
    max_q_tiles = -(-num_tokens // block_m) + num_q_blocks
    tile_index = torch.arange(max_q_tiles, device=device, dtype=torch.int32).expand(num_problems, -1)
    q_tile_block = torch.searchsorted(q_tiles_inclusive, tile_index.contiguous(), right=True, out_int32=True)
    tile_block_safe = q_tile_block.clamp(max=num_q_blocks - 1).long()
    q_block_first_tile = q_tiles_inclusive - q_block_tiles
    q_tile_start = (q_block_start.gather(1, tile_block_safe)
                    + (tile_index - q_block_first_tile.gather(1, tile_block_safe)) * block_m).to(torch.int32)
    block_index = torch.arange(num_q_blocks, device=device, dtype=torch.int32).expand(num_problems, -1)
    rem_tile_block = torch.where(has_remainder, block_index, num_q_blocks).to(torch.int32).contiguous()
    rem_tile_start = (q_block_start + q_block_tiles * block_m).to(torch.int32).contiguous()

    # -- key side: per query block, the kept non-empty key blocks packed back to back (one small kernel) --
    k_block_size = block_sizes_with_dense(k_cluster_sizes, dense_prefix, dense_suffix)
    num_k_blocks = k_block_size.shape[1]
    k_block_start = _exclusive_cumsum(k_block_size).contiguous()
    if block_n > 128:
        raise ValueError(f"block_n must be <= 128 (two 64-bit start masks per key tile), got {block_n}")
    words = 2 if block_n > 64 else 1
    num_kv_tiles = -(-num_tokens // block_n)
    kv_length = torch.empty(num_problems, num_q_blocks, dtype=torch.int32, device=device)
    kv_row_shift = torch.empty(num_problems, num_q_blocks, num_k_blocks, dtype=torch.int32, device=device)
    kv_tile_starts = torch.zeros(num_problems, num_q_blocks, num_kv_tiles * words, dtype=torch.int64, device=device)
    _kv_plan_kernel[(num_q_blocks, num_problems)](
        block_mask.contiguous().view(torch.uint8), k_block_size.contiguous(), k_block_start, kv_length,
        kv_row_shift, kv_tile_starts, num_q_blocks, num_k_blocks, num_kv_tiles * words, BLOCK_N=block_n,
        WORDS=words, CHUNK=min(KV_PLAN_CHUNK, triton.next_power_of_2(num_k_blocks)), num_warps=4)

    q_tile_block, q_tile_start = _longest_first(kv_length, q_tile_block, q_tile_start.contiguous())
    rem_tile_block, rem_tile_start = _longest_first(kv_length, rem_tile_block, rem_tile_start)
    return AttentionLaunch(
        q_rows=q_rows, k_rows=k_rows, q_tile_block=q_tile_block, q_tile_start=q_tile_start,
        rem_tile_block=rem_tile_block, rem_tile_start=rem_tile_start, q_block_end=q_block_end,
        kv_length=kv_length, kv_row_shift=kv_row_shift, kv_tile_starts=kv_tile_starts,
        block_m=block_m, block_n=block_n, remainder_m=remainder_m, kv_words=words)
