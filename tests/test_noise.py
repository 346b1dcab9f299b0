"""Denoising noise (data/noise.py) and lambda schedules (training/lambdas.py): properties over many random
batches (seeded NumPy generators, no extra dependency)."""

from __future__ import annotations

import numpy as np
import pytest

from xlm_jax.core.errors import UserError
from xlm_jax.data.noise import NoiseConfig, add_noise, word_blank, word_dropout, word_shuffle
from xlm_jax.training.lambdas import parse_lambda

EOS, PAD, MASK = 2, 1, 9


def _rows(rng: np.random.Generator, batch=6, width=14):
    """Rows `EOS w1 ... wn EOS` + padding, words unique within a row (ids 10+), n from 0 to width - 2."""
    lengths = rng.integers(2, width + 1, batch)
    ids = np.full((batch, width), PAD)
    for row, n in enumerate(lengths):
        ids[row, :n] = [EOS] + list(10 + rng.permutation(100)[:n - 2]) + [EOS]
    return ids, lengths


def _same_frame(before, after, lengths, new_lengths=None):
    new_lengths = lengths if new_lengths is None else new_lengths
    for row, (n, m) in enumerate(zip(lengths, new_lengths)):
        assert after[row, 0] == EOS and after[row, m - 1] == EOS
        assert (after[row, m:] == PAD).all()


@pytest.mark.parametrize("seed", range(20))
def test_shuffle_is_a_local_permutation_of_the_words(seed):
    rng = np.random.default_rng(seed)
    ids, lengths = _rows(rng)
    k = [1.5, 3.0, 5.0][seed % 3]
    out = word_shuffle(ids, lengths, k, rng)
    _same_frame(ids, out, lengths)
    for row, n in enumerate(lengths):
        words, shuffled = list(ids[row, 1:n - 1]), list(out[row, 1:n - 1])
        assert sorted(words) == sorted(shuffled)
        moves = [abs(shuffled.index(w) - i) for i, w in enumerate(words)]
        assert max(moves, default=0) < k


def test_shuffle_moves_words_and_zero_is_identity():
    rng = np.random.default_rng(0)
    ids, lengths = _rows(rng, batch=32)
    assert (word_shuffle(ids, lengths, 3, rng) != ids).any()
    np.testing.assert_array_equal(word_shuffle(ids, lengths, 0, rng), ids)


@pytest.mark.parametrize("seed", range(20))
def test_dropout_keeps_an_ordered_subsequence_with_a_word(seed):
    rng = np.random.default_rng(seed)
    ids, lengths = _rows(rng)
    p = [0.1, 0.5, 0.95][seed % 3]
    out, new_lengths = word_dropout(ids, lengths, p, PAD, rng)
    _same_frame(ids, out, lengths, new_lengths)
    for row, (n, m) in enumerate(zip(lengths, new_lengths)):
        words, kept = list(ids[row, 1:n - 1]), list(out[row, 1:m - 1])
        assert m <= n and (len(kept) >= 1 or n == 2)
        positions = [words.index(w) for w in kept]
        assert positions == sorted(positions)


def test_dropout_rate_and_zero_is_identity():
    rng = np.random.default_rng(1)
    ids, lengths = _rows(rng, batch=400, width=30)
    out, new_lengths = word_dropout(ids, lengths, 0.3, PAD, rng)
    dropped = (lengths - new_lengths).sum() / (lengths - 2).sum()
    assert 0.27 < dropped < 0.33
    same, same_lengths = word_dropout(ids, lengths, 0.0, PAD, rng)
    np.testing.assert_array_equal(same, ids)
    np.testing.assert_array_equal(same_lengths, lengths)


@pytest.mark.parametrize("seed", range(10))
def test_blank_replaces_words_only(seed):
    rng = np.random.default_rng(seed)
    ids, lengths = _rows(rng)
    out = word_blank(ids, lengths, 0.4, MASK, rng)
    _same_frame(ids, out, lengths)
    changed = out != ids
    assert (out[changed] == MASK).all()
    for row, n in enumerate(lengths):
        assert not changed[row, [0, n - 1]].any() and not changed[row, n:].any()


def test_add_noise_is_a_pure_function_of_the_generator():
    ids, lengths = _rows(np.random.default_rng(3), batch=16)
    cfg = NoiseConfig(word_shuffle=3, word_dropout=0.1, word_blank=0.1)
    a = add_noise(ids, lengths, cfg, pad_id=PAD, mask_id=MASK, rng=np.random.default_rng(7))
    b = add_noise(ids, lengths, cfg, pad_id=PAD, mask_id=MASK, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    _same_frame(ids, a[0], lengths, a[1])


def test_noise_config_refuses_bad_values():
    for bad, match in [(dict(word_shuffle=1), "word_shuffle"), (dict(word_shuffle=-1), "word_shuffle"),
                       (dict(word_dropout=1.0), "word_dropout"), (dict(word_blank=-0.1), "word_blank")]:
        with pytest.raises(UserError, match=match):
            NoiseConfig(**bad)
    with pytest.raises(UserError, match="lengths"):
        word_blank(np.zeros((2, 4), int), np.array([1, 4]), 0.1, MASK, np.random.default_rng(0))


def test_lambda_schedule_interpolates_and_holds():
    schedule = parse_lambda("0:1,100000:0.1,300000:0")
    assert schedule(0) == 1.0
    assert schedule(50000) == pytest.approx(0.55)
    assert schedule(100000) == pytest.approx(0.1)
    assert schedule(200000) == pytest.approx(0.05)
    assert schedule(300000) == 0.0 and schedule(10**7) == 0.0
    assert parse_lambda("0.5")(123) == 0.5 and parse_lambda(1)(0) == 1.0
    assert parse_lambda("10:2,20:4")(0) == 2.0  # before the first point: its value


@pytest.mark.parametrize("text, match", [
    ("0:1,0:2", "increase strictly"), ("0:1,x:2", "non-negative integer"), ("0:1,10", "step:value"),
    ("0:-1", ">= 0"), ("0:nan", ">= 0"), ("abc", "not a number"), ("", "expected"), (True, "expected"),
    ("-5:1", "non-negative integer"),
])
def test_lambda_schedule_refuses_malformed_text(text, match):
    with pytest.raises(UserError, match=match):
        parse_lambda(text, "lambda_ae")
