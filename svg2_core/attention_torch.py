"""Variable-block sparse attention in PyTorch: the reference the Triton kernel is tested against.

Inputs are already in cluster-contiguous order: q, k, v [G, N, D]; q_block_sizes [G, Bq] and
k_block_sizes [G, Bk] partition N; block_mask [G, Bq, Bk] says which blocks interact. Computed in fp32.
"""
from __future__ import annotations

import torch

from .layout import block_ids

# Bounds the [G, rows, N] score block held at once.
_SCORE_CHUNK_ELEMENTS = 1 << 25


def block_sparse_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 q_block_sizes: torch.Tensor, k_block_sizes: torch.Tensor,
                                 block_mask: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(scale * q k^T, restricted to kept blocks) v, row by row; returns [G, N, D] fp32.

    A row with no kept key at all returns zeros (it cannot happen for SVG2 masks: every query cluster
    keeps at least its top key cluster).
    """
    num_problems, num_tokens, _ = q.shape
    q_block = block_ids(q_block_sizes, num_tokens)  # [G, N]
    k_block = block_ids(k_block_sizes, num_tokens)  # [G, N]
    key_float = k.float()
    value_float = v.float()
    out = torch.empty(num_problems, num_tokens, v.shape[-1], dtype=torch.float32, device=q.device)
    rows_per_chunk = max(1, _SCORE_CHUNK_ELEMENTS // max(1, num_problems * num_tokens))
    for start in range(0, num_tokens, rows_per_chunk):
        stop = min(num_tokens, start + rows_per_chunk)
        scores = torch.bmm(q[:, start:stop].float(), key_float.transpose(1, 2)) * scale
        row_blocks = block_mask.gather(1, q_block[:, start:stop, None].expand(-1, -1, block_mask.shape[-1]))
        allowed = row_blocks.gather(2, k_block[:, None, :].expand(-1, stop - start, -1))
        scores = scores.masked_fill(~allowed, float("-inf"))
        probabilities = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        out[:, start:stop] = torch.bmm(probabilities, value_float)
    return out
