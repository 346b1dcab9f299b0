"""The vocabulary-chunked MLM head loss (`model.lm_head_chunk`) equals the whole-vocabulary one: loss, accuracy and
every gradient, for chunks that do and do not divide V, under jit, grad and checkpoint."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from xlm_jax.core.errors import UserError
from xlm_jax.models.config import get_model_config
from xlm_jax.models.xlm import XLMForMaskedLM, init_params
from xlm_jax.training.objectives import chunked_softmax_cross_entropy, cross_entropy, mlm_loss

from test_objectives import _mlm_batch

V, D, N = 1000, 16, 12
# 64 and 7 do not divide V (the last window is shifted back and overlaps), 100 does, 4096 > V is one pass.
CHUNKS = [7, 64, 100, 4096]


def _head_problem(seed=0):
    rng = np.random.default_rng(seed)
    hidden = jnp.asarray(rng.normal(size=(N, D)), jnp.float32)
    table = jnp.asarray(rng.normal(size=(V, D)) * 0.5, jnp.float32)
    bias = jnp.asarray(rng.normal(size=(V,)) * 0.1, jnp.float32)
    # 940 lies where chunk 64's shifted last window [936, 1000) overlaps the one before; 0 and V - 1 are the ends.
    targets = jnp.asarray(np.r_[[0, V - 1, 940, 959, 960], rng.integers(0, V, N - 5)], jnp.int32)
    weights = jnp.asarray(np.r_[np.ones(N - 3), np.zeros(3)], jnp.float32)  # zero-weight rows: no loss, no gradient
    return hidden, table, bias, targets, weights


def _reference(hidden, table, bias, targets, weights):
    rows = cross_entropy(hidden @ table.T + bias, targets, weights)
    return rows["loss_sum"], rows["correct"]


def _chunked(chunk):
    def f(hidden, table, bias, targets, weights):
        nll, correct = chunked_softmax_cross_entropy(hidden, table, bias, targets, chunk)
        return (nll * weights).sum(), (correct * weights).sum()
    return f


@pytest.mark.parametrize("chunk", CHUNKS)
def test_chunked_cross_entropy_equals_full_logits(chunk):
    args = _head_problem()
    hidden, table, bias, targets, weights = args
    logits = hidden @ table.T + bias
    nll, correct = jax.jit(chunked_softmax_cross_entropy, static_argnums=4)(hidden, table, bias, targets, chunk)
    np.testing.assert_allclose(nll, jax.nn.logsumexp(logits, -1) - logits[jnp.arange(N), targets], rtol=1e-5)
    np.testing.assert_array_equal(correct, (jnp.argmax(logits, -1) == targets).astype(np.float32))

    ref_grad = jax.grad(lambda *a: _reference(*a)[0], argnums=(0, 1, 2))(*args)
    for wrap in (lambda f: f, jax.checkpoint) if chunk == 64 else (lambda f: f,):
        loss_fn = wrap(lambda *a: _chunked(chunk)(*a)[0])
        loss, grads = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))(*args)
        np.testing.assert_allclose(loss, _reference(*args)[0], rtol=1e-5)
        for g, r, name in zip(grads, ref_grad, ("hidden", "table", "bias")):
            np.testing.assert_allclose(g, r, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(grads[0][-3:], 0.0)  # the zero-weight rows


def test_correct_means_the_target_logit_is_the_row_maximum_in_both_heads():
    hidden, table, bias, targets, weights = _head_problem()
    table = table.at[3].set(hidden[0] * 10).at[970].set(hidden[0] * 10)  # row 0's best logit twice, in two chunks
    bias = jnp.zeros_like(bias)
    logits = hidden @ table.T
    runner_up = int(jnp.argsort(logits[0])[-3])
    for target, expected in ((3, 1.0), (970, 1.0), (runner_up, 0.0)):  # a tie counts as correct for both columns
        t = targets.at[0].set(target)
        _, correct = chunked_softmax_cross_entropy(hidden, table, bias, t, 64)
        assert float(correct[0]) == expected
        assert float(cross_entropy(logits[:1], t[:1], jnp.ones(1))["correct"]) == expected


@pytest.mark.parametrize("name", ["xlmr_tiny", "xlm_tiny"])
def test_mlm_loss_with_chunked_head_equals_whole_vocabulary(name):
    cfg = get_model_config(name, num_layers=1)  # V = 1000; one layer: the encoder's gradients, quickly compiled
    params = nn.unbox(init_params(XLMForMaskedLM(cfg), jax.random.key(1)))
    batch = _mlm_batch(cfg)  # one zero-weight prediction slot
    rng = jax.random.key(7)  # dropout on: the chunked path must see the same encoder states

    def run(chunk):
        model = XLMForMaskedLM(cfg.replace(lm_head_chunk=chunk))
        return jax.jit(jax.value_and_grad(lambda p: mlm_loss(model, p, batch, rng), has_aux=True))(params)

    (ref_loss, ref_metrics), ref_grads = run(0)
    for chunk in (64, 100):  # 64 does not divide V, 100 does
        (loss, metrics), grads = run(chunk)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        np.testing.assert_allclose(metrics["accuracy"], ref_metrics["accuracy"])
        for k in ("loss_sum", "correct", "count"):
            np.testing.assert_allclose(metrics["rows"][k], ref_metrics["rows"][k], rtol=1e-5, err_msg=k)
        for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(ref_grads)):
            np.testing.assert_allclose(g, r, atol=1e-5, err_msg=f"{chunk} {jax.tree_util.keystr(path)}")


def test_lm_head_chunk_must_be_a_non_negative_integer():
    with pytest.raises(UserError, match="model.lm_head_chunk"):
        get_model_config("xlmr_tiny", lm_head_chunk=-1)
