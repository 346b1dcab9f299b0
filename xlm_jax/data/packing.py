"""Sequence packing: several examples per fixed [R, T] row, told apart by segment ids.

A packed row holds examples back to back, then padding:

    input_ids    e0 e0 e0 e0 e1 e1 e1 e2 e2 pad pad
    segment_ids   1  1  1  1  2  2  2  3  3   0   0      (0 = padding)
    positions     0  1  2  3  0  1  2  0  1   0   0      (restart per example)

The model attends only within a segment (`xlm_jax.models.xlm.segment_mask`, block-diagonal), numbers positions per
example, and a sequence-classification head reads each example's own first token (`example_starts` [R, E],
`example_valid` [R, E]; E is the segment budget, the most examples a row may hold). So a packed example's
logits, losses and gradients equal those of the same example alone in a padded row (tests/test_packing.py checks
them to 1e-5 in float32). Packing is what NVIDIA's MLPerf BERT does (up to 3 sequences per row) and what
ModernBERT / MosaicBERT do by unpadding; it removes the compute spent on padding.

Everything here is host-side NumPy and deterministic: the same lengths give the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xlm_jax.core.errors import UserError, check_range


def check_packing(width: int, segments: int, longest: int, width_key: str, segments_key: str,
                  longest_what: str = "the longest example") -> None:
    """UserError naming the key and value unless rows of `width` tokens with up to `segments` examples each can
    hold an example of `longest` tokens."""
    check_range(segments_key, segments, 1, integer=True)
    check_range(width_key, width, 1, integer=True)
    if longest > width:
        raise UserError(f"{width_key}={width}: {longest_what} has {longest} tokens and would not fit in a packed "
                        f"row; use {width_key} >= {longest}")


def first_fit(lengths: Sequence[int], width: int, segments: int, order: Sequence[int] | None = None,
              key: str = "width") -> list[list[int]]:
    """Packs example indices into rows: each example (taken in `order`, default longest first: first-fit
    decreasing) goes into the first row with room for its tokens and a free segment, else a new row.

    Returns the rows, each a list of example indices in placement order. Raises UserError when an example is
    longer than `width` (the message names `key`, the row length's config key) or `segments` < 1."""
    lengths = [int(n) for n in lengths]
    check_range("segments", segments, 1, integer=True)
    if order is None:
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        if n > width:
            raise UserError(f"{key}={width}: an example of {n} tokens does not fit in a packed row of {width} tokens")
        for r, free in enumerate(room):
            if free >= n and len(rows[r]) < segments:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(width - n)
    return rows


def pack(sequences: Sequence[Sequence[int]], rows: Sequence[Sequence[int]], width: int, segments: int,
         pad_id: int, n_rows: int | None = None) -> dict[str, np.ndarray]:
    """Lays out `rows` (lists of indices into `sequences`, e.g. from `first_fit`) as a packed batch.

    Returns int32 arrays: input_ids / attention_mask / segment_ids / positions [R, T] (R = n_rows or len(rows);
    rows beyond len(rows) are all padding), example_starts [R, E] (the first token of each packed example; 0 in
    unused slots) and float32 example_valid [R, E]; plus `slot_of` (int64 [N, 2]: row and slot of sequence i, -1
    when it is not packed) and `start_of` (int64 [N]: its first token in its row) for reading outputs back."""
    n_rows = len(rows) if n_rows is None else n_rows
    if len(rows) > n_rows:
        raise UserError(f"{len(rows)} packed rows do not fit in a batch of {n_rows} rows")
    ids = np.full((n_rows, width), pad_id, np.int32)
    segment_ids = np.zeros((n_rows, width), np.int32)
    positions = np.zeros((n_rows, width), np.int32)
    starts = np.zeros((n_rows, segments), np.int32)
    valid = np.zeros((n_rows, segments), np.float32)
    slot_of = np.full((len(sequences), 2), -1, np.int64)
    start_of = np.full(len(sequences), -1, np.int64)
    for r, members in enumerate(rows):
        if len(members) > segments:
            raise UserError(f"row {r} holds {len(members)} examples, more than the segment budget {segments}")
        t = 0
        for s, i in enumerate(members):
            seq = np.asarray(sequences[i], np.int32)
            if t + len(seq) > width:
                raise UserError(f"row {r}: its examples have more than {width} tokens")
            ids[r, t:t + len(seq)] = seq
            segment_ids[r, t:t + len(seq)] = s + 1
            positions[r, t:t + len(seq)] = np.arange(len(seq))
            starts[r, s], valid[r, s] = t, 1.0
            slot_of[i] = (r, s)
            start_of[i] = t
            t += len(seq)
    return {"input_ids": ids, "attention_mask": (segment_ids > 0).astype(np.int32), "segment_ids": segment_ids,
            "positions": positions, "example_starts": starts, "example_valid": valid, "slot_of": slot_of,
            "start_of": start_of}


def scatter_rows(values: Sequence[np.ndarray], out: np.ndarray, packed: dict, members: Sequence[int]) -> None:
    """Writes per-example token arrays `values[i]` into `out` [R, T] at the packed place of example
    `members[i]` (for per-token fields: labels, language ids)."""
    for value, i in zip(values, members):
        r, t = packed["slot_of"][i][0], packed["start_of"][i]
        out[r, t:t + len(value)] = value


def padding_share(attention_mask: np.ndarray) -> float:
    """Fraction of the [R, T] slots that are padding (0 for an empty array)."""
    mask = np.asarray(attention_mask)
    return float((mask == 0).mean()) if mask.size else 0.0
