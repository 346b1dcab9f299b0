import math
from fractions import Fraction

import numpy as np
import pytest

from xlm_jax.data.masking import MaskConfig, frequency_weights, mask_tokens, noise_width, num_predictions
from xlm_jax.data.sampling import row_uniforms, sampling_probs
from xlm_jax.core.errors import UserError

V, MASK = 1000, 999


def _batch(rng, b=2000, t=64, pad_from=None):
    ids = rng.integers(4, MASK, size=(b, t)).astype(np.int32)
    ids[:, 0] = 0
    ids[:, 10] = 2
    ids[:, 20] = 3
    ids[:, 30] = MASK
    attention = np.ones_like(ids)
    if pad_from is not None:
        lengths = rng.integers(pad_from, t + 1, size=b)
        attention = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int32)
        ids[attention == 0] = 1
    return ids, attention


def _mask(ids, attention, cfg, rng, weights=None):
    noise = rng.random((ids.shape[0], noise_width(ids.shape[1], cfg.mask_prob)))
    return mask_tokens(ids, attention, noise, cfg, weights)


def _candidates(ids, attention):
    return ((ids >= 4) & (ids != MASK) & (attention > 0)).sum(1)


def test_num_predictions_rule():
    assert num_predictions(256, 0.15) == 39  # ceil(38.4)
    assert num_predictions(20, 0.15) == 3  # 0.15*20 is 3.0000000000000004 in floats; still 3
    assert num_predictions(100, 0.15) == 15
    assert noise_width(256, 0.15) == 256 + 1 + 2 * 39


def test_ceil_rule_exact_count_and_never_specials_or_pads():
    rng = np.random.default_rng(0)
    ids, attention = _batch(rng, pad_from=20)
    cfg = MaskConfig(V, MASK, count_rule="ceil")
    out = _mask(ids, attention, cfg, rng)
    n = _candidates(ids, attention)
    expected = np.array([math.ceil(Fraction(15, 100) * int(k)) for k in n])
    np.testing.assert_array_equal(out["mlm_weights"].sum(1), expected)
    used = out["mlm_weights"] > 0
    rows = np.nonzero(used)[0]
    pos = out["mlm_positions"][used]
    chosen = ids[rows, pos]
    assert np.all(chosen >= 4) and np.all(chosen != MASK) and np.all(attention[rows, pos] == 1)
    np.testing.assert_array_equal(out["mlm_targets"][used], chosen)
    # positions distinct per row (without replacement) and sorted
    p = np.where(used, out["mlm_positions"], 10_000)
    assert np.all(np.diff(np.sort(p, 1), axis=1)[np.sort(p, 1)[:, 1:] < 10_000] > 0)
    # unused slots are inert
    assert np.all(out["mlm_targets"][~used] == 1) and np.all(out["mlm_positions"][~used] == 0)
    # only chosen positions changed
    changed = out["input_ids"] != ids
    only = np.zeros_like(changed)
    only[rows, pos] = True
    assert not np.any(changed & ~only)


def test_stochastic_rule_count_and_mean_fraction():
    rng = np.random.default_rng(1)
    ids, attention = _batch(rng, b=4000, t=64, pad_from=8)
    cfg = MaskConfig(V, MASK)
    out = _mask(ids, attention, cfg, rng)
    n = _candidates(ids, attention)
    count = out["mlm_weights"].sum(1)
    lo = np.floor(np.round(0.15 * n, 9))
    assert np.all((count == lo) | (count == lo + 1))
    assert np.all(count <= num_predictions(64, 0.15))
    # E[count] = 0.15 n exactly: the total is within a few std of 0.15 * Σn (std <= sqrt(B)/2)
    assert abs(count.sum() - 0.15 * n.sum()) < 4 * math.sqrt(len(n)) / 2


def test_80_10_10_split_and_random_ids_never_mask():
    rng = np.random.default_rng(2)
    ids, attention = _batch(rng, b=4000, t=128)
    out = _mask(ids, attention, MaskConfig(V, MASK, count_rule="ceil"), rng)
    used = out["mlm_weights"] > 0
    rows = np.nonzero(used)[0]
    new = out["input_ids"][rows, out["mlm_positions"][used]]
    target = out["mlm_targets"][used]
    total = len(new)
    masked = np.mean(new == MASK)
    kept = np.mean(new == target)
    rand = np.mean((new != MASK) & (new != target))
    # random ids equal the target with probability 1/994, which shifts "kept" by ~1e-4
    sd = math.sqrt(0.25 / total)
    assert abs(masked - 0.8) < 5 * sd and abs(kept - 0.1) < 5 * sd + 2e-4 and abs(rand - 0.1) < 5 * sd
    replaced = new[(new != MASK) & (new != target)]
    assert replaced.min() >= 4 and replaced.max() < MASK


def test_random_replacement_uniform_excludes_mask_in_the_middle():
    # a mask id inside the vocabulary is skipped and ids above it are reachable
    cfg = MaskConfig(vocab_size=10, mask_id=7, mask_replace=0.0, mask_random=1.0, mask_keep=0.0, mask_prob=1.0,
                     count_rule="ceil")
    rng = np.random.default_rng(3)
    ids = np.full((3000, 8), 4, np.int32)
    out = _mask(ids, np.ones_like(ids), cfg, rng)
    values, counts = np.unique(out["input_ids"], return_counts=True)
    np.testing.assert_array_equal(values, [4, 5, 6, 8, 9])
    assert np.all(np.abs(counts / counts.sum() - 0.2) < 0.01)


def test_sample_alpha_masks_rare_tokens_more_with_exact_count():
    rng = np.random.default_rng(4)
    b, t = 3000, 40
    # token 4 is frequent (count 10_000), token 5 rare (count 100); each row half of each
    ids = np.where(np.arange(t)[None, :] % 2 == 0, 4, 5).repeat(b, 0).astype(np.int32)
    counts = np.zeros(V)
    counts[4], counts[5] = 10_000, 100
    cfg = MaskConfig(V, MASK, count_rule="ceil")
    weights = frequency_weights(counts, 0.5, cfg)
    assert weights[4] == pytest.approx(0.01) and weights[5] == pytest.approx(0.1)
    assert weights[:4].sum() == 0 and weights[MASK] == 0 and weights[6] == 0  # unseen ids never chosen
    out = _mask(ids, np.ones_like(ids), cfg, rng, weights)
    assert np.all(out["mlm_weights"].sum(1) == math.ceil(0.15 * t))
    chosen = out["mlm_targets"][out["mlm_weights"] > 0]
    rare_share = np.mean(chosen == 5)
    # each row draws 6 of 40 without replacement, weights 10:1 → the rare token dominates (~0.9)
    assert rare_share > 0.85
    # alpha = 0 keeps sampling uniform
    flat = _mask(ids, np.ones_like(ids), cfg, rng, frequency_weights(counts, 0.0, cfg))
    assert abs(np.mean(flat["mlm_targets"][flat["mlm_weights"] > 0] == 5) - 0.5) < 0.02


def test_sampling_probs_closed_form():
    counts = [1000, 100, 10]
    for alpha in (0.0, 0.3, 0.7, 1.0):
        q = (np.array(counts) / 1110) ** alpha
        np.testing.assert_allclose(sampling_probs(counts, alpha), q / q.sum(), rtol=1e-12)
    np.testing.assert_allclose(sampling_probs([5, 0], 0.0), [1.0, 0.0])
    with pytest.raises(UserError):
        sampling_probs([], 0.5)


def test_row_uniforms_are_keyed_per_row():
    a = row_uniforms((1, 2, 3), np.arange(8), 100)
    b = row_uniforms((1, 2, 3), np.arange(4, 8), 100)
    np.testing.assert_array_equal(a[4:], b)
    c = row_uniforms((1, 2, 4), np.arange(8), 100)
    assert not np.any(a == c)
    assert a.min() >= 0 and a.max() < 1 and abs(a.mean() - 0.5) < 0.02


def test_bad_mask_config():
    with pytest.raises(UserError, match="sum to 1"):
        MaskConfig(V, MASK, mask_replace=0.9)
    with pytest.raises(UserError, match="count_rule"):
        MaskConfig(V, MASK, count_rule="bernoulli")
