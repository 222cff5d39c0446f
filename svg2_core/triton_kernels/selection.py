"""Top-p selection of key clusters on the GPU: one program per query-cluster row finds, by a binary search
over the bit patterns of its probabilities, the smallest one still kept, so the block map needs neither a
sort nor a scatter over [G, Cq, Ck] (same rule as svg2_core.selection.top_p_mask).

probabilities: [R, Ck] fp32 (rows sum to 1, R = G x Cq) -> keep mask [R, Ck] bool.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# One row lives in registers: beyond this many key clusters the reference top_p_mask is used.
MAX_KEY_CLUSTERS = 8192
# fp32 +inf: no probability's bit pattern is above it
_INF_BITS = tl.constexpr(0x7F800000)


@triton.jit
def _top_p_kernel(probabilities_ptr, mask_ptr, num_key_clusters, top_p, min_kept, BLOCK_K: tl.constexpr):
    """In descending order (ties: lower column first) an entry is kept when the mass before it is < top_p
    or fewer than min_kept entries come before it. Non-negative floats order like their bit patterns, so the
    kept entries are those above a boundary value v (bits), plus the first few columns equal to v:

    - top-p: v = smallest t with mass(bits > t) < top_p; a column equal to v is kept while
      mass(bits > v) + v x (columns equal to v before it) < top_p;
    - floor: u = smallest t with count(bits > t) < min_kept; a column equal to u is kept while
      count(bits > u) + (columns equal to u before it) < min_kept.
    Both are found by a 31-step binary search over [-1, +inf bits] (-1: every entry is kept)."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    col_ok = cols < num_key_clusters
    p = tl.load(probabilities_ptr + row * num_key_clusters + cols, mask=col_ok, other=0.0)
    bits = tl.where(col_ok, p.to(tl.int32, bitcast=True), -2)  # padding below every real entry
    mass_lo, mass_hi = -2, _INF_BITS  # the predicate is false at lo (or lo = -2), true at hi
    count_lo, count_hi = -2, _INF_BITS
    for _ in range(31):
        mass_mid = mass_lo + (mass_hi - mass_lo) // 2
        mass_ok = tl.sum(tl.where(bits > mass_mid, p, 0.0), axis=0) < top_p
        mass_hi = tl.where(mass_ok, mass_mid, mass_hi)
        mass_lo = tl.where(mass_ok, mass_lo, mass_mid)
        count_mid = count_lo + (count_hi - count_lo) // 2
        count_ok = tl.sum((bits > count_mid).to(tl.int32), axis=0) < min_kept
        count_hi = tl.where(count_ok, count_mid, count_hi)
        count_lo = tl.where(count_ok, count_lo, count_mid)
    mass_above = tl.sum(tl.where(bits > mass_hi, p, 0.0), axis=0)
    boundary_value = tl.max(tl.where(bits == mass_hi, p, 0.0), axis=0)
    at_mass = (bits == mass_hi).to(tl.int32)
    ties_before = tl.cumsum(at_mass, axis=0) - at_mass
    keep = (bits > mass_hi) | ((at_mass != 0) & (mass_above + boundary_value * ties_before.to(tl.float32) < top_p))
    count_above = tl.sum((bits > count_hi).to(tl.int32), axis=0)
    at_count = (bits == count_hi).to(tl.int32)
    keep |= (bits > count_hi) | ((at_count != 0) & (count_above + tl.cumsum(at_count, axis=0) - at_count < min_kept))
    tl.store(mask_ptr + row * num_key_clusters + cols, keep, mask=col_ok)


def top_p_mask(probabilities: torch.Tensor, top_p: float, min_kept: int) -> torch.Tensor:
    """Per row of probabilities [..., Ck] fp32, keep entries in descending order up to and including the one
    whose cumulative sum reaches `top_p`, and at least the top `min_kept`; ties keep the lower index first.
    Returns a bool mask of the same shape; top_p >= 1 keeps all. Ck <= MAX_KEY_CLUSTERS.

    Same rule as svg2_core.selection.top_p_mask; the masses are summed in another order, so a row whose
    running mass lands within rounding of top_p can keep one block more or fewer."""
    num_key_clusters = probabilities.shape[-1]
    if num_key_clusters > MAX_KEY_CLUSTERS:
        raise ValueError(f"top_p_mask: {num_key_clusters} key clusters, at most {MAX_KEY_CLUSTERS} supported")
    if top_p >= 1.0:
        return torch.ones_like(probabilities, dtype=torch.bool)
    rows = probabilities.reshape(-1, num_key_clusters).float().contiguous()
    mask = torch.empty(rows.shape, dtype=torch.bool, device=rows.device)
    block_k = triton.next_power_of_2(num_key_clusters)
    # one warp per row up to 1024 columns: the 62 reductions of the search then need no barrier
    _top_p_kernel[(rows.shape[0],)](rows, mask, num_key_clusters, float(top_p), int(min_kept), BLOCK_K=block_k,
                                    num_warps=max(1, min(4, block_k // 1024)))
    return mask.view(probabilities.shape)
