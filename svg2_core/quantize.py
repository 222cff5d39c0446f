"""int8 query-key scores (SVG2Config.qk_int8), the reference: what the Triton kernel computes, in fp32.

Scores q . k are taken from int8 codes, as SageAttention does; P V stays in the input dtype:
- keys are smoothed by their per-(batch, head) channel mean mu first. q . (k - mu) = q . k - q . mu, and q . mu
  is the same for every key of a query row, so no softmax row sees the shift (this holds for any subset of
  keys, so for every sparse mask too); it removes the shared offset that would otherwise eat the int8 range;
- one key scale per (batch, head): s_k = max |k - mu| / 127, k_code = round((k - mu) / s_k);
- one query scale per token: s_q = max_d |q| / 127, q_code = round(q / s_q);
- score = (q_code . k_code) * s_q * s_k, exact in int32 (|sum| <= 128 x 127 x 127 < 2^31).
round() is floor(x + 0.5) here and in the kernels. One scale per head is what the kernel can afford (a
per-key scale is one more gathered load per key tile: 42% slower on the H200, BENCHMARKS.md); video DiTs
RMS-normalise q and k per token before RoPE, so token norms within a head are close.
"""
from __future__ import annotations

import torch

INT8_LEVELS = 127.0


def int8_codes(x: torch.Tensor, multiplier: torch.Tensor) -> torch.Tensor:
    """floor(x * multiplier + 0.5) clamped to [-127, 127], in fp32 (x, multiplier broadcastable)."""
    return torch.floor(x * multiplier + 0.5).clamp_(-INT8_LEVELS, INT8_LEVELS)


def key_smoothing(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k: [G, N, D] -> (mean [G, D] fp32, absmax [G] fp32 = max |k - mean| over tokens and channels, > 0)."""
    k = k.float()
    mean = k.mean(dim=1)
    absmax = (k - mean[:, None]).abs().amax(dim=(1, 2))
    return mean, torch.where(absmax > 0, absmax, torch.ones_like(absmax))


def quantize_dequantize_qk(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k: [G, N, D] -> (q_codes * s_q, k_codes * s_k) fp32 [G, N, D]: scores from these equal the
    kernel's int8 scores (k without its mean, which no softmax row sees)."""
    q = q.float()
    q_absmax = q.abs().amax(dim=-1, keepdim=True)
    q_absmax = torch.where(q_absmax > 0, q_absmax, torch.ones_like(q_absmax))
    q_hat = int8_codes(q, INT8_LEVELS / q_absmax) * (q_absmax / INT8_LEVELS)
    mean, k_absmax = key_smoothing(k)
    k_hat = int8_codes(k.float() - mean[:, None], (INT8_LEVELS / k_absmax)[:, None, None])
    return q_hat, k_hat * (k_absmax / INT8_LEVELS)[:, None, None]
