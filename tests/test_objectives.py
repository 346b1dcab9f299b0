"""The objectives: masked-position MLM equals the full-logits reference (loss and gradients); CLM is causal."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from xlm_jax.models.config import get_model_config
from xlm_jax.models.xlm import XLMForMaskedLM, init_params
from xlm_jax.training.objectives import clm_loss, cross_entropy, full_logits_mlm_loss, mlm_loss


def _mlm_batch(cfg, batch=3, length=16, predictions=4, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, cfg.vocab_size - 1, size=(batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 11:] = 0
    ids[mask == 0] = cfg.pad_token_id
    positions = np.stack([np.sort(rng.choice(10, predictions, replace=False)) for _ in range(batch)]).astype(np.int32)
    targets = np.take_along_axis(ids, positions, axis=1)
    ids_masked = ids.copy()
    np.put_along_axis(ids_masked, positions, cfg.mask_id, axis=1)
    weights = np.ones((batch, predictions), np.float32)
    weights[2, -1] = 0.0  # a padded prediction slot must not count
    return {
        "input_ids": jnp.asarray(ids_masked), "attention_mask": jnp.asarray(mask),
        "langs": jnp.zeros_like(jnp.asarray(ids)),
        "mlm_positions": jnp.asarray(positions), "mlm_targets": jnp.asarray(targets), "mlm_weights": jnp.asarray(weights),
    }


@pytest.mark.parametrize("name", ["xlmr_tiny", "xlm_tiny"])
def test_masked_position_loss_and_grads_equal_full_logits(name):
    cfg = get_model_config(name)
    model = XLMForMaskedLM(cfg)
    params = nn.unbox(init_params(model, jax.random.key(1)))
    batch = _mlm_batch(cfg)

    (loss, metrics), grads = jax.value_and_grad(lambda p: mlm_loss(model, p, batch), has_aux=True)(params)
    (ref_loss, ref_metrics), ref_grads = jax.value_and_grad(
        lambda p: full_logits_mlm_loss(model, p, batch), has_aux=True)(params)

    assert float(metrics["count"]) == 11.0
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], ref_metrics["accuracy"])
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(g, r, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    # The loss is a real cross-entropy: at init it is near log(V) (XLM's D^-0.5 embeddings sharpen it a little).
    assert abs(float(loss) - np.log(cfg.vocab_size)) < 1.5


def test_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(2, 3))
    weights = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
    rows = cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(rows["loss_sum"], (nll * weights).sum(-1), rtol=1e-5)
    np.testing.assert_array_equal(rows["count"], [2, 1])
    np.testing.assert_array_equal(rows["correct"], ((logits.argmax(-1) == targets) * weights).sum(-1))


def test_clm_is_causal_and_counts_real_next_tokens():
    cfg = get_model_config("xlmr_tiny")
    model = XLMForMaskedLM(cfg)
    params = nn.unbox(init_params(model, jax.random.key(2)))
    ids = np.random.default_rng(0).integers(4, 900, size=(2, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    batch = {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}
    _, metrics = clm_loss(model, params, batch)
    assert float(metrics["count"]) == 11 + 7

    # Changing a later token never changes earlier causal states.
    states = lambda x: model.apply({"params": params}, jnp.asarray(x), jnp.asarray(mask), causal=True)
    changed = ids.copy()
    changed[:, 6] = 5
    a, b = states(ids), states(changed)
    np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert float(jnp.abs(a[:, 6:] - b[:, 6:]).max()) > 1e-3


def test_dropout_is_deterministic_given_rng_and_active():
    cfg = get_model_config("xlmr_tiny")
    model = XLMForMaskedLM(cfg)
    params = nn.unbox(init_params(model, jax.random.key(3)))
    batch = _mlm_batch(cfg)
    l1, _ = mlm_loss(model, params, batch, rng=jax.random.key(7))
    l2, _ = mlm_loss(model, params, batch, rng=jax.random.key(7))
    l3, _ = mlm_loss(model, params, batch, rng=jax.random.key(8))
    l_eval, _ = mlm_loss(model, params, batch)
    assert float(l1) == float(l2)
    assert float(l1) != float(l3) and float(l1) != float(l_eval)
