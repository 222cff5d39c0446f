"""Top-p selection of key clusters on the GPU: one program per query-cluster row sorts that row's
probabilities in registers, so the block map costs one small kernel instead of a segmented sort, a
cumulative sum and a scatter over [G, Cq, Ck] (same rule as svg2_core.selection.top_p_mask).

probabilities: [R, Ck] fp32 (rows sum to 1, R = G x Cq) -> keep mask [R, Ck] bool.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# One row lives in registers: beyond this many key clusters the reference top_p_mask is used.
MAX_KEY_CLUSTERS = 8192


@triton.jit
def _top_p_kernel(probabilities_ptr, mask_ptr, num_key_clusters, top_p, min_kept,
                  BLOCK_K: tl.constexpr, INDEX_BITS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    col_ok = cols < num_key_clusters
    p = tl.load(probabilities_ptr + row * num_key_clusters + cols, mask=col_ok, other=0.0)
    # p >= 0, so its bit pattern orders like its value; the low bits hold (BLOCK_K - 1 - col), so a
    # descending sort puts larger p first and, among equal p, the lower column first (the reference's ties)
    p_bits = p.to(tl.int32, bitcast=True).to(tl.int64)
    keys = tl.where(col_ok, (p_bits << INDEX_BITS) | (BLOCK_K - 1 - cols), -1)
    keys = tl.sort(keys, descending=True)
    rank = tl.arange(0, BLOCK_K)
    real = rank < num_key_clusters  # padding keys (-1) sort last
    sorted_cols = (BLOCK_K - 1) - (keys & (BLOCK_K - 1)).to(tl.int32)
    sorted_p = tl.where(real, (keys >> INDEX_BITS).to(tl.int32).to(tl.float32, bitcast=True), 0.0)
    mass_before = tl.cumsum(sorted_p, axis=0) - sorted_p
    keep = (mass_before < top_p) | (rank < min_kept)
    tl.store(mask_ptr + row * num_key_clusters + sorted_cols, keep, mask=real)


def top_p_mask(probabilities: torch.Tensor, top_p: float, min_kept: int) -> torch.Tensor:
    """Per row of probabilities [..., Ck] fp32, keep entries in descending order up to and including the one
    whose cumulative sum reaches `top_p`, and at least the top `min_kept`; ties keep the lower index first.
    Returns a bool mask of the same shape; top_p >= 1 keeps all. Ck <= MAX_KEY_CLUSTERS.

    Same rule as svg2_core.selection.top_p_mask; the cumulative sums may differ from it in the last bit,
    so a row whose running mass lands within rounding of top_p can keep one block more or fewer."""
    num_key_clusters = probabilities.shape[-1]
    if num_key_clusters > MAX_KEY_CLUSTERS:
        raise ValueError(f"top_p_mask: {num_key_clusters} key clusters, at most {MAX_KEY_CLUSTERS} supported")
    if top_p >= 1.0:
        return torch.ones_like(probabilities, dtype=torch.bool)
    rows = probabilities.reshape(-1, num_key_clusters).float().contiguous()
    mask = torch.empty(rows.shape, dtype=torch.bool, device=rows.device)
    block_k = triton.next_power_of_2(num_key_clusters)
    _top_p_kernel[(rows.shape[0],)](rows, mask, num_key_clusters, float(top_p), int(min_kept), BLOCK_K=block_k,
                                    INDEX_BITS=max(1, (block_k - 1).bit_length()),
                                    num_warps=4 if block_k <= 2048 else 8)
    return mask.view(probabilities.shape)
