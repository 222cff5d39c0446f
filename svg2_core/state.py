"""The centroid cache that warm-starts k-means between denoising steps.

Entries are keyed by the caller's `cache_key` (e.g. `(layer, branch)`) and remember the shapes they were
made for; centroids are fp32 `[B, H, C, D]`, so every batch element and head keeps its own clusters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import torch


@dataclass(frozen=True)
class CentroidSignature:
    """What a cached entry is valid for: a key whose signature changes is re-initialised."""

    batch: int
    heads: int
    clustered_tokens: int
    head_dim: int
    num_q_clusters: int
    num_k_clusters: int
    device: str


@dataclass
class CentroidEntry:
    signature: CentroidSignature
    q_centroids: torch.Tensor  # [B, H, Cq, D] fp32
    k_centroids: torch.Tensor  # [B, H, Ck, D] fp32


class SVG2State:
    """Centroid cache for warm-started k-means. Create one per sampling run, or call `reset()`."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, CentroidEntry] = {}

    def lookup(self, cache_key: Hashable, signature: CentroidSignature) -> CentroidEntry | None:
        """The entry for `cache_key` if it was made for `signature`; a stale entry is dropped."""
        entry = self._entries.get(cache_key)
        if entry is None:
            return None
        if entry.signature != signature:
            del self._entries[cache_key]
            return None
        return entry

    def entry(self, cache_key: Hashable) -> CentroidEntry | None:
        """The cached entry for `cache_key` whatever its signature (for inspection), or None."""
        return self._entries.get(cache_key)

    def store(self, cache_key: Hashable, entry: CentroidEntry) -> None:
        self._entries[cache_key] = entry

    def reset(self) -> None:
        """Forget every cached centroid (start of a new video)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cache_key: Hashable) -> bool:
        return cache_key in self._entries
