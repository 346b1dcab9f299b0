"""Language sampling probabilities and keyed, stateless random numbers for the batch pipeline.

The batch for step k must be a pure function of (seed, k, objective, global row), so resuming needs no data
seek and every JAX process can build only its own rows. Rather than seeding one `np.random.Generator` per row
(~30 µs each, a measurable share of the per-batch budget) the rows draw from a counter-based generator:
SplitMix64 applied to `row_key + j * golden_gamma`, where row_key hashes the tuple of key parts. That is the
SplitMix64 stream seeded with row_key, computed for every (row, j) at once in vectorised NumPy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xlm_jax.core.errors import UserError

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (a bijection on uint64 with good avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def hash_key(parts: Sequence[int]) -> np.uint64:
    """Hash a tuple of non-negative integers (seed, step, objective, ...) into one 64-bit key."""
    h = np.array([0x6A09E667F3BCC908], dtype=np.uint64)
    for part in parts:
        h = _mix64(h ^ np.array([int(part) & _MASK64], dtype=np.uint64)) + _GOLDEN_GAMMA
    return h[0]


def row_uniforms(key_parts: Sequence[int], rows: np.ndarray, n: int) -> np.ndarray:
    """Uniform floats in [0, 1), shape [len(rows), n]; row r's numbers depend only on (key_parts, rows[r])."""
    base = hash_key(key_parts)
    row_keys = _mix64(np.asarray(rows, dtype=np.uint64) ^ base)
    counters = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN_GAMMA)[None, :]
    bits = _mix64(row_keys[:, None] + counters)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sampling_probs(counts: Sequence[float], alpha: float) -> np.ndarray:
    """XLM's language sampling: p_i ∝ (n_i / Σn)^alpha, renormalised (alpha=1: by size, alpha=0: uniform)."""
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or len(n) == 0 or np.any(n < 0) or n.sum() <= 0:
        raise UserError(f"sampling_probs: counts must be a non-empty list of non-negative numbers, got {counts!r}")
    q = (n / n.sum()) ** alpha
    q[n == 0] = 0.0  # an empty language is never sampled, even with alpha = 0
    return q / q.sum()


def choose(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: index i with probability probs[i] for each uniform in u."""
    cdf = np.cumsum(probs)
    return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(probs) - 1)
