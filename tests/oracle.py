"""Independent fp64 oracle for SVG2 outputs: expand cluster labels and a block mask to an element mask
and run dense masked attention. Written without the library's layout/permutation code."""
from __future__ import annotations

import torch


def element_mask(q_labels: torch.Tensor, k_labels: torch.Tensor, block_mask: torch.Tensor) -> torch.Tensor:
    """q_labels, k_labels: [B, H, N] (-1 = dense token); block_mask: [B, H, Cq, Ck] -> [B, H, N, N] bool."""
    batch, heads, num_tokens = q_labels.shape
    mask = torch.zeros(batch, heads, num_tokens, num_tokens, dtype=torch.bool)
    for b in range(batch):
        for h in range(heads):
            rows = q_labels[b, h].long()
            cols = k_labels[b, h].long()
            dense_row = rows < 0
            dense_col = cols < 0
            allowed = block_mask[b, h][rows.clamp(min=0)][:, cols.clamp(min=0)]
            mask[b, h] = allowed | dense_row[:, None] | dense_col[None, :]
    return mask


def masked_attention_fp64(q, k, v, mask) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) masked) v in fp64; q, k, v: [B, H, N, D]; mask: [B, H, N, N] bool."""
    scores = q.double() @ k.double().transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v.double()
