"""The oracle of every test tier (CPU, Triton interpreter, GPU, ComfyUI): dense attention under an element
mask, in fp64 or fp32, and the same masked attention done as PyTorch would do it in the inputs' dtype.

The element mask is built from cluster labels and a block mask directly (query i may attend key j when
block_mask[label(i), label(j)] or either token is dense), without the library's layout or permutation code.
"""
from __future__ import annotations

import torch


def element_mask(q_labels: torch.Tensor, k_labels: torch.Tensor, block_mask: torch.Tensor,
                 dense_prefix: int = 0, dense_suffix: int = 0, rows: torch.Tensor | None = None) -> torch.Tensor:
    """[..., N, N] bool in original token order: query i may attend key j.

    q_labels, k_labels: [..., Nc] integer cluster ids (-1 marks a dense token); block_mask: [..., Cq, Ck] bool.
    The first dense_prefix and last dense_suffix of the N = dense_prefix + Nc + dense_suffix tokens are dense
    (they attend, and are attended by, every token). rows: optional [R] query indices: then [..., R, N].
    """
    lead = q_labels.shape[:-1]
    q = _with_dense_tokens(q_labels.reshape(-1, q_labels.shape[-1]), dense_prefix, dense_suffix)
    k = _with_dense_tokens(k_labels.reshape(-1, k_labels.shape[-1]), dense_prefix, dense_suffix)
    blocks = block_mask.reshape(-1, *block_mask.shape[-2:]).bool()
    if rows is not None:
        q = q[:, rows.to(q.device)]
    masks = []
    for g in range(q.shape[0]):
        allowed = blocks[g][q[g].clamp(min=0)][:, k[g].clamp(min=0)]
        masks.append(allowed | (q[g] < 0)[:, None] | (k[g] < 0)[None, :])
    return torch.stack(masks).reshape(*lead, q.shape[1], k.shape[1])


def plan_mask(plan, num_tokens: int | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """element_mask of a ClusterPlan: [G, N, N] bool (or [G, R, N] for query `rows`). num_tokens, when
    given, must equal the plan's N (dense tokens included)."""
    mask = element_mask(plan.q_labels, plan.k_labels, plan.block_mask, plan.dense_prefix, plan.dense_suffix, rows)
    if num_tokens is not None and mask.shape[-1] != num_tokens:
        raise ValueError(f"the plan covers {mask.shape[-1]} tokens, not num_tokens={num_tokens}")
    return mask


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     scale: float | None = None, low_precision: bool = False,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """softmax(q k^T * scale, masked) v; q: [..., R, D], k, v: [..., N, D], mask: [..., R, N] bool.

    The oracle computes in `dtype` throughout (torch.float32 or torch.float64). low_precision=True does it
    as PyTorch would in q's dtype instead: scores from a q-dtype matmul, softmax in fp32, probabilities and
    p @ v in q's dtype (the bar a kernel's error is measured against). A row with no allowed key gives 0.
    scale defaults to 1 / sqrt(D). Returns `dtype` (fp32 when low_precision).
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, not {dtype}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if low_precision:
        scores = (q @ k.transpose(-1, -2)).float() * scale
        probabilities = scores.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0)
        return (probabilities.to(q.dtype) @ v).float()
    scores = (q.to(dtype) @ k.to(dtype).transpose(-1, -2)) * scale
    probabilities = scores.masked_fill(~mask, float("-inf")).softmax(-1).nan_to_num(0.0)
    return probabilities @ v.to(dtype)


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """||x - reference|| / ||reference|| (Frobenius), computed in the reference's precision."""
    reference_dtype = torch.promote_types(reference.dtype, torch.float32)
    reference = reference.to(reference_dtype)
    return float((x.to(reference_dtype) - reference).norm() / reference.norm())


def _with_dense_tokens(labels: torch.Tensor, dense_prefix: int, dense_suffix: int) -> torch.Tensor:
    """labels: [G, Nc] -> [G, dense_prefix + Nc + dense_suffix] int64, dense tokens as -1."""
    labels = labels.long()
    return torch.cat([labels.new_full((labels.shape[0], dense_prefix), -1), labels,
                      labels.new_full((labels.shape[0], dense_suffix), -1)], dim=1)
