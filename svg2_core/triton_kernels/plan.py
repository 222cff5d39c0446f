"""Launch metadata for the variable-block sparse attention kernel, built on the device with fixed-size
torch ops (no host synchronisation, CUDA-graph capturable).

Block layout is `[dense prefix, clusters..., dense suffix]` (svg2_core.layout). G = batch x heads,
Bq = Cq + 2 query blocks, Bk = Ck + 2 key blocks, N tokens per problem.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import block_mask_with_dense, block_sizes_with_dense
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
    kv_row_shift [G, Bq, Bk]: cluster-sorted key row minus slot inside the p-th kept key block;
    kv_tile_first [G, Bq, Tk]: the kept block in which each BLOCK_N-slot key tile starts;
    kv_tile_starts [G, Bq, Tk * kv_words] int64: bit r of word w set where a kept block starts at slot
    64 w + r of the tile.
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
    kv_tile_first: torch.Tensor
    kv_tile_starts: torch.Tensor
    block_m: int
    block_n: int
    remainder_m: int
    kv_words: int


# TritonBackend.kmeans leaves its last label sort (sort_by_label's sorted_points) on the labels tensor
# under this attribute, so the plan does not sort the same labels again.
LABEL_SORT_ATTRIBUTE = "_svg2_label_sort"


def cluster_rows(labels: torch.Tensor, num_clusters: int, num_tokens: int, dense_prefix: int,
                 dense_suffix: int) -> torch.Tensor:
    """Flat rows (g * N + n) in cluster-contiguous order, dense tokens in place.

    labels: [G, Nc] int32 of the clustered span; returns [G, N] int32.
    """
    num_problems, num_clustered = labels.shape
    device = labels.device
    sorted_points = getattr(labels, LABEL_SORT_ATTRIBUTE, None)
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


def build_launch(q_labels: torch.Tensor, k_labels: torch.Tensor, q_cluster_sizes: torch.Tensor,
                 k_cluster_sizes: torch.Tensor, block_mask: torch.Tensor, dense_prefix: int,
                 dense_suffix: int, num_tokens: int, block_m: int, block_n: int,
                 remainder_m: int = 0, longest_first: bool = True) -> AttentionLaunch:
    """Turn a ClusterPlan's fields into kernel metadata.

    q_labels, k_labels: [G, Nc] int32; q_cluster_sizes [G, Cq], k_cluster_sizes [G, Ck] int32;
    block_mask [G, Cq, Ck] bool. Sizes are bounded by G x Bq x max(Bk, N / block_n) int32.
    remainder_m (0 or < block_m): a query block's last rows go to one remainder_m-row tile when they fit.
    longest_first: order each problem's tiles by their block's kept keys, longest first (tiles of one block
    stay adjacent), so that a launch does not end on a few long tiles while most of the GPU idles.
    """
    num_problems = q_labels.shape[0]
    num_q_clusters = q_cluster_sizes.shape[1]
    num_k_clusters = k_cluster_sizes.shape[1]
    device = q_labels.device
    q_rows = cluster_rows(q_labels, num_q_clusters, num_tokens, dense_prefix, dense_suffix)
    k_rows = cluster_rows(k_labels, num_k_clusters, num_tokens, dense_prefix, dense_suffix)

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

    # -- key side: per query block, the kept non-empty key blocks packed back to back --
    k_block_size = block_sizes_with_dense(k_cluster_sizes, dense_prefix, dense_suffix)
    num_k_blocks = k_block_size.shape[1]
    k_block_start = _exclusive_cumsum(k_block_size)
    kept = block_mask_with_dense(block_mask) & (k_block_size > 0).unsqueeze(1)
    kept_length = torch.where(kept, k_block_size.unsqueeze(1), 0)
    kept_inclusive = kept_length.cumsum(-1, dtype=torch.int32)
    kept_start = kept_inclusive - kept_length
    kv_length = kept_inclusive[..., -1].contiguous()
    packed_index = torch.where(kept, kept.cumsum(-1, dtype=torch.int32) - 1, num_k_blocks).long()
    shape = (num_problems, num_q_blocks, num_k_blocks + 1)
    kv_slot_start = kv_length.unsqueeze(-1).expand(shape).contiguous()
    kv_slot_start.scatter_(-1, packed_index, kept_start)
    kv_row_shift = torch.zeros(shape, dtype=torch.int32, device=device)
    kv_row_shift.scatter_(-1, packed_index, k_block_start.unsqueeze(1) - kept_start)
    kv_slot_start = kv_slot_start[..., :num_k_blocks].contiguous()
    kv_row_shift = kv_row_shift[..., :num_k_blocks].contiguous()
    if block_n > 128:
        raise ValueError(f"block_n must be <= 128 (two 64-bit start masks per key tile), got {block_n}")
    words = 2 if block_n > 64 else 1
    num_kv_tiles = -(-num_tokens // block_n)
    tile_slot = torch.arange(num_kv_tiles, device=device, dtype=torch.int32) * block_n
    tile_slot = tile_slot.expand(num_problems * num_q_blocks, -1).contiguous()
    kv_tile_first = torch.searchsorted(kv_slot_start.view(-1, num_k_blocks), tile_slot, right=True,
                                       out_int32=True) - 1
    # -- one bit per kept block start: distinct bits of one word, so a sum is their OR --
    start_word = (kept_start // block_n) * words + (kept_start % block_n) // 64
    start_word = torch.where(kept, start_word, num_kv_tiles * words).long()
    start_bit = torch.bitwise_left_shift(torch.ones_like(start_word), (kept_start % block_n % 64).long())
    kv_tile_starts = torch.zeros(num_problems, num_q_blocks, num_kv_tiles * words + 1, dtype=torch.int64,
                                 device=device)
    kv_tile_starts.scatter_add_(-1, start_word, start_bit)

    q_tile_start = q_tile_start.contiguous()
    if longest_first:
        q_tile_block, q_tile_start = _longest_first(kv_length, q_tile_block, q_tile_start)
        rem_tile_block, rem_tile_start = _longest_first(kv_length, rem_tile_block, rem_tile_start)
    return AttentionLaunch(
        q_rows=q_rows, k_rows=k_rows, q_tile_block=q_tile_block, q_tile_start=q_tile_start,
        rem_tile_block=rem_tile_block, rem_tile_start=rem_tile_start, q_block_end=q_block_end,
        kv_length=kv_length, kv_row_shift=kv_row_shift,
        kv_tile_first=kv_tile_first.view(num_problems, num_q_blocks, num_kv_tiles),
        kv_tile_starts=kv_tile_starts[..., :num_kv_tiles * words].contiguous(),
        block_m=block_m, block_n=block_n, remainder_m=remainder_m, kv_words=words)
