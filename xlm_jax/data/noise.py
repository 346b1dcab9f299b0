"""Denoising auto-encoder noise for unsupervised MT (facebookresearch/XLM `Trainer.word_shuffle`, `word_dropout`,
`word_blank`; Lample et al. 2018), vectorised over a batch of token rows.

Rows are `start w1 ... wn eos` followed by padding (`lengths` counts start and eos). Only the words w1 ... wn
are touched: the first and last delimiters stay, padding stays padding. Applied to the encoder input only, in
XLM's order by `add_noise`: shuffle, dropout, blank.
- shuffle(k): word i gets the key i + U(0, k) and the words are sorted by key, so each moves fewer than k
  places (k > 1; 0 turns it off);
- dropout(p): each word is deleted with probability p, keeping at least one (a random one when all drew
  "delete", as XLM);
- blank(p): each word is replaced by `<mask>` with probability p.
Every function is a pure function of its `numpy.random.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xlm_jax.core.errors import UserError, check_range


@dataclass(frozen=True)
class NoiseConfig:
    """XLM's `--word_shuffle 3 --word_dropout 0.1 --word_blank 0.1` (the UNMT recipe); zeros turn a part off."""

    word_shuffle: float = 0.0
    word_dropout: float = 0.0
    word_blank: float = 0.0

    def __post_init__(self):
        check_range("word_shuffle", self.word_shuffle, 0)
        if 0 < self.word_shuffle <= 1:
            raise UserError(f"word_shuffle={self.word_shuffle!r}: must be 0 (off) or above 1 (each word moves fewer "
                            "than word_shuffle places; 1 or less never moves one)")
        check_range("word_dropout", self.word_dropout, 0, 1, high_open=True)
        check_range("word_blank", self.word_blank, 0, 1, high_open=True)


def _words(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """bool [B, T]: the word slots 1 .. length - 2 of each row."""
    positions = np.arange(ids.shape[1])[None, :]
    return (positions >= 1) & (positions < np.asarray(lengths)[:, None] - 1)


def _check(ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, lengths = np.asarray(ids), np.asarray(lengths)
    if ids.ndim != 2 or lengths.shape != ids.shape[:1]:
        raise UserError(f"noise: ids must be [B, T] and lengths [B], got {ids.shape} and {lengths.shape}")
    if lengths.size and (lengths.min() < 2 or lengths.max() > ids.shape[1]):
        raise UserError(f"noise: lengths must lie in 2 .. {ids.shape[1]} (start and end delimiters included)")
    return ids, lengths


def word_shuffle(ids, lengths, k: float, rng: np.random.Generator) -> np.ndarray:
    """ids int [B, T], lengths int [B] -> ids [B, T] with each row's words locally shuffled (< k places)."""
    ids, lengths = _check(ids, lengths)
    if k == 0:
        return ids.copy()
    words = _words(ids, lengths)
    index = np.arange(ids.shape[1], dtype=np.float64)[None, :]
    # Words sort among themselves (XLM shuffles the slots before the end delimiter with the start pinned at -1):
    # the start sorts first, the end delimiter and padding after every word, in their order.
    others = np.where(index == 0, -1.0, 2.0 * ids.shape[1] + k + index)
    keys = np.where(words, index + rng.uniform(0, k, ids.shape), others)
    return np.take_along_axis(ids, np.argsort(keys, axis=1, kind="stable"), axis=1)


def word_dropout(ids, lengths, p: float, pad_id: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids [B, T], lengths [B]): each word deleted with probability p, at least one kept, padding after."""
    ids, lengths = _check(ids, lengths)
    if p == 0:
        return ids.copy(), lengths.copy()
    words = _words(ids, lengths)
    keep = ~words | (rng.random(ids.shape) >= p)
    # A row whose words all drew "delete" keeps one at random (XLM appends a random word of the sentence).
    lost = words.any(axis=1) & ~(keep & words).any(axis=1)
    rescue = 1 + np.floor(rng.random(len(ids)) * np.maximum(lengths - 2, 1)).astype(int)
    keep[np.flatnonzero(lost), rescue[lost]] = True
    keep &= np.arange(ids.shape[1])[None, :] < lengths[:, None]
    order = np.argsort(~keep, axis=1, kind="stable")  # kept slots first, in order
    new_lengths = keep.sum(axis=1)
    out = np.take_along_axis(ids, order, axis=1)
    out[np.arange(ids.shape[1])[None, :] >= new_lengths[:, None]] = pad_id
    return out, new_lengths


def word_blank(ids, lengths, p: float, mask_id: int, rng: np.random.Generator) -> np.ndarray:
    """-> ids [B, T] with each word replaced by `mask_id` with probability p."""
    ids, lengths = _check(ids, lengths)
    if p == 0:
        return ids.copy()
    blank = _words(ids, lengths) & (rng.random(ids.shape) < p)
    return np.where(blank, mask_id, ids)


def add_noise(ids, lengths, config: NoiseConfig, *, pad_id: int, mask_id: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """XLM's `add_noise`: shuffle, then dropout, then blank. -> (ids [B, T], lengths [B])."""
    ids = word_shuffle(ids, lengths, config.word_shuffle, rng)
    ids, lengths = word_dropout(ids, lengths, config.word_dropout, pad_id, rng)
    return word_blank(ids, lengths, config.word_blank, mask_id, rng), lengths
