"""Structured q, k, v for benchmarks and tests: tokens on a frames x rows x cols video grid.

Per head, q . k / sqrt(D) ~= peakedness * (locality * kappa(distance) + semantic * [same object]) + noise:
- local component: random Fourier features of the (frame, row, col) position, so q_i . k_j decays with
  the space-time distance of i and j like a Gaussian of width `length_scale` tokens (what RoPE makes);
- semantic component: `num_objects` discs that move across the frames; tokens of one object (or of the
  background) share an embedding, so they attend each other wherever they are;
- peakedness scales all logits: higher means more peaked attention, so lower density at a given top-p.
Text tokens (`dense_suffix`) get random vectors of the same norm. v is standard normal.
"""
from __future__ import annotations

import math

import torch

MODEL_SHAPES = {
    # name: (batch, heads, (frames, rows, cols), head_dim, dense_suffix)
    "tiny": (1, 2, (2, 12, 16), 64, 0),
    "small": (1, 8, (8, 24, 32), 128, 0),
    "wan21-1.3b-480p": (1, 12, (21, 30, 52), 128, 0),
    "wan21-14b-720p": (1, 40, (21, 45, 80), 128, 0),
    "hunyuan-720p": (1, 24, (33, 45, 80), 128, 256),
}


def _object_ids(grid: tuple[int, int, int], num_objects: int, generator: torch.Generator) -> torch.Tensor:
    """Object id of every grid token ([F * R * C] int64; 0 = background): moving discs, later ones on top."""
    frames, rows, cols = grid
    start = torch.rand(num_objects, 2, generator=generator) * torch.tensor([rows, cols])
    velocity = (torch.rand(num_objects, 2, generator=generator) - 0.5) * 2.0
    radius = (0.12 + 0.18 * torch.rand(num_objects, generator=generator)) * min(rows, cols)
    f, r, c = torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij")
    ids = torch.zeros(frames, rows, cols, dtype=torch.int64)
    for obj in range(num_objects):
        center = start[obj] + velocity[obj] * f.unsqueeze(-1)
        inside = ((r - center[..., 0]) ** 2 + (c - center[..., 1]) ** 2) <= radius[obj] ** 2
        ids[inside] = obj + 1
    return ids.reshape(-1)


def structured_qkv(batch: int, heads: int, grid: tuple[int, int, int], head_dim: int, *,
                   locality: float = 1.0, semantic: float = 1.0, peakedness: float = 4.0,
                   noise: float = 0.3, num_objects: int = 12, length_scale: float = 3.0, dense_suffix: int = 0,
                   dtype: torch.dtype = torch.bfloat16, device="cpu", seed: int = 0):
    """q, k, v: [batch, heads, F * R * C + dense_suffix, head_dim], video tokens first, text last."""
    generator = torch.Generator().manual_seed(seed)
    frames, rows, cols = grid
    num_video = frames * rows * cols
    f, r, c = torch.meshgrid(torch.arange(frames), torch.arange(rows), torch.arange(cols), indexing="ij")
    positions = torch.stack([f, r, c], dim=-1).reshape(-1, 3).float()
    logit_scale = math.sqrt(peakedness * math.sqrt(head_dim))
    shape = (batch, heads, num_video + dense_suffix, head_dim)
    q = torch.empty(shape, dtype=dtype, device=device)
    k = torch.empty(shape, dtype=dtype, device=device)
    v = torch.randn(shape, generator=generator).to(device=device, dtype=dtype)
    half = head_dim // 2
    for b in range(batch):
        object_ids = _object_ids(grid, num_objects, generator)
        for h in range(heads):
            # local: E[cos(w . (p_i - p_j))] = exp(-|p_i - p_j|^2 / (2 l^2)) for w ~ N(0, 1 / l^2)
            frequencies = torch.randn(3, half, generator=generator) / length_scale
            phase = positions @ frequencies
            local = torch.cat([phase.cos(), phase.sin()], dim=-1) / math.sqrt(half)
            rotation, _ = torch.linalg.qr(torch.randn(head_dim, head_dim, generator=generator))
            local = local @ rotation
            embeddings = torch.randn(num_objects + 1, head_dim, generator=generator) / math.sqrt(head_dim)
            shared = math.sqrt(locality) * local + math.sqrt(semantic) * embeddings[object_ids]
            for target in (q, k):
                video = shared + noise * torch.randn(num_video, head_dim, generator=generator) / math.sqrt(head_dim)
                text = torch.randn(dense_suffix, head_dim, generator=generator) * math.sqrt(
                    (locality + semantic) / head_dim)
                target[b, h] = (logit_scale * torch.cat([video, text])).to(device=device, dtype=dtype)
    return q, k, v
