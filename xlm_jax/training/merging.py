"""Checkpoint merging on parameter trees: weighted averaging and TIES merging (Yadav et al. 2023, "TIES-Merging:
Resolving Interference When Merging Models", NeurIPS; the method mmBERT uses to merge its decay-phase variants).

Both functions take parameter trees of NumPy arrays with the same structure and shapes (any dtype; the merge is
computed in float64 and cast back to the first tree's dtypes) and return a new tree; nothing is read or written.

TIES, for models θ_1 … θ_n fine-tuned / trained on from a common base θ_0, per tensor:
  1. task vectors τ_i = θ_i − θ_0;
  2. trim: keep the k = ceil(density · size) entries of largest |τ_i| in each tensor, zero the rest (τ̂_i);
  3. elect a sign per entry: γ = sign(Σ_i w_i τ̂_i);
  4. disjoint mean: τ_m = Σ_i w_i τ̂_i [sign(τ̂_i) = γ] / Σ_i w_i [sign(τ̂_i) = γ] (0 where no τ̂_i agrees,
     trimmed zeros never count as agreeing);
  5. θ = θ_0 + λ · τ_m.
With all weights w_i = 1 this is the paper's Algorithm 1 (trimming per tensor, as mergekit's `ties` does, rather
than over the flattened model). Averaging: θ = Σ_i w_i θ_i / Σ_i w_i.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from xlm_jax.core.errors import UserError, check_range

METHODS = ("average", "ties")


def _weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    if len(weights) != n:
        raise UserError(f"--weights: {len(weights)} values for {n} checkpoints; give one weight per checkpoint")
    for i, w in enumerate(weights):
        check_range(f"--weights[{i}]", w, 0, low_open=True)
    return np.asarray(weights, np.float64)


def _check_trees(trees: Sequence[Any]) -> None:
    first = jax.tree_util.tree_structure(trees[0])
    shapes = [np.shape(x) for x in jax.tree.leaves(trees[0])]
    for i, tree in enumerate(trees[1:], 1):
        if jax.tree_util.tree_structure(tree) != first or [np.shape(x) for x in jax.tree.leaves(tree)] != shapes:
            raise UserError(f"checkpoint {i + 1} has other parameters (names or shapes) than the first: only models "
                            "of one architecture can be merged")


def average(trees: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    """Σ_i w_i θ_i / Σ_i w_i per entry (w_i = 1 by default). `trees`: ≥ 1 parameter trees of equal structure and
    shapes; `weights`: positive, one per tree. Raises UserError otherwise."""
    w = _weights(weights, len(trees))
    _check_trees(trees)

    def one(*leaves):
        stacked = np.stack([np.asarray(x, np.float64) for x in leaves])
        return (np.tensordot(w, stacked, axes=1) / w.sum()).astype(np.asarray(leaves[0]).dtype)

    return jax.tree.map(one, *trees)


def trim(task_vector: np.ndarray, density: float) -> np.ndarray:
    """`task_vector` with all but its k = ceil(density · size) largest-magnitude entries set to 0 (ties at the
    threshold broken by position, so exactly k survive)."""
    flat = np.asarray(task_vector).ravel()
    k = min(flat.size, math.ceil(density * flat.size))
    if k >= flat.size:
        return np.asarray(task_vector).copy()
    keep = np.argpartition(-np.abs(flat), k - 1)[:k]
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(np.shape(task_vector))


def ties(base: Any, trees: Sequence[Any], density: float = 0.2, scale: float = 1.0,
         weights: Sequence[float] | None = None) -> Any:
    """TIES merging of `trees` relative to `base` (see the module docstring for the formula).

    `density` in (0, 1]: the share of each task vector's entries kept; `scale` λ > 0; `weights` positive, one per
    tree (default 1). Raises UserError for a value out of range or trees of another structure / shapes."""
    check_range("--density", density, 0, 1, low_open=True)
    check_range("--scale", scale, 0, low_open=True)
    w = _weights(weights, len(trees))
    _check_trees([base, *trees])

    def one(theta0, *leaves):
        theta0_64 = np.asarray(theta0, np.float64)
        trimmed = np.stack([trim(np.asarray(x, np.float64) - theta0_64, density) for x in leaves])
        weighted = w.reshape((-1,) + (1,) * theta0_64.ndim) * trimmed
        elected = np.sign(weighted.sum(0))
        agree = (np.sign(trimmed) == elected) & (trimmed != 0)
        total = np.where(agree, weighted, 0.0).sum(0)
        count = np.where(agree, w.reshape(weighted.shape[:1] + (1,) * theta0_64.ndim), 0.0).sum(0)
        merged = np.where(count > 0, total / np.where(count > 0, count, 1.0), 0.0)
        return (theta0_64 + scale * merged).astype(np.asarray(theta0).dtype)

    return jax.tree.map(one, base, *trees)
