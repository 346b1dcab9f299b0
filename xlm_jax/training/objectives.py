"""Pretraining objectives as pure functions of (params, batch).

MLM and TLM share one loss: the model projects only the predicted positions (the masked LM's `logits_at`; every
family has one: `xlm_jax.models.families`), so B x T x V logits never exist; with `model.lm_head_chunk` > 0 not even
the P x V logits at the predicted positions: the loss projects `head_inputs_at`'s states a vocabulary chunk at a
time (`chunked_softmax_cross_entropy`). CLM predicts token t+1 from the causal states at t. Each loss returns the mean
loss and a metrics dict with per-row sums, so that the trainer can weight objectives and report per language.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


def cross_entropy(logits: Array, targets: Array, weights: Array) -> dict[str, Array]:
    """Weighted token cross-entropy in float32, summed per row.

    logits [..., V] (any float dtype; computed in float32), targets [...] int, weights [...] (1 for a real
    prediction, 0 for padding). Returns per-row `loss_sum`, `correct` and `count` ([B] float32).

    A prediction is `correct` when the target's logit is the row's maximum (a tie with another column counts as
    correct). This is argmax accuracy except on exact ties, and costs no pass of its own: the maximum is the one
    the logsumexp needs anyway, whereas `argmax` is a separate (value, index) reduction over [..., V] that cost
    ~20 % of the LM head's forward + backward on one CPU core at V = 250,002 (docs/benchmarks.md, "CPU levers").
    """
    logits = logits.astype(jnp.float32)
    row_max = jax.lax.stop_gradient(logits.max(-1))
    log_z = row_max + jnp.log(jnp.exp(logits - row_max[..., None]).sum(-1))  # jax.nn.logsumexp for finite logits
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = (log_z - target_logit) * weights
    correct = (target_logit >= row_max) * weights
    return {"loss_sum": nll.sum(-1), "correct": correct.sum(-1), "count": weights.sum(-1)}


def _chunk_bounds(i: Array, chunk: int, vocab: int) -> tuple[Array, Array, Array]:
    """Chunk i covers the new columns [lo, hi). Its window [start, start + chunk) stays inside the table: the
    last window is shifted back (start = V - chunk) and its columns below lo, already seen, are masked."""
    lo = i * chunk
    return jnp.minimum(lo, vocab - chunk), lo, jnp.minimum(lo + chunk, vocab)


def _chunk_logits(hidden: Array, table: Array, bias: Array, i: Array, chunk: int):
    """float32 logits [N, chunk] of window i (masked columns -inf), the window's column ids [chunk], and which
    columns are new ([chunk] bool). Same arithmetic as `LMHead`: matmul and bias in the hidden dtype, then f32."""
    start, lo, hi = _chunk_bounds(i, chunk, table.shape[0])
    rows = jax.lax.dynamic_slice_in_dim(table, start, chunk, axis=0).astype(hidden.dtype)
    b = jax.lax.dynamic_slice_in_dim(bias, start, chunk).astype(hidden.dtype)
    cols = start + jnp.arange(chunk)
    valid = (cols >= lo) & (cols < hi)
    logits = (jnp.einsum("nd,cd->nc", hidden, rows) + b).astype(jnp.float32)
    return jnp.where(valid, logits, -jnp.inf), cols, valid


def _chunked_forward(hidden, table, bias, targets, chunk):
    n, vocab = hidden.shape[0], table.shape[0]

    def body(carry, i):
        m, s, target_logit = carry
        logits, cols, valid = _chunk_logits(hidden, table, bias, i, chunk)
        m_new = jnp.maximum(m, logits.max(-1))
        s = s * jnp.exp(m - m_new) + jnp.exp(logits - m_new[:, None]).sum(-1)
        hit = (cols[None, :] == targets[:, None]) & valid[None, :]
        target_logit = target_logit + jnp.where(hit, logits, 0.0).sum(-1)
        return (m_new, s, target_logit), None

    zeros = jnp.zeros((n,), jnp.float32)
    init = (jnp.full((n,), -jnp.inf, jnp.float32), zeros, zeros)
    (m, s, target_logit), _ = jax.lax.scan(body, init, jnp.arange(-(-vocab // chunk)))
    log_z = m + jnp.log(s)
    # Correct where the target's logit is the row maximum: `cross_entropy`'s definition (a tie counts as correct).
    return log_z - target_logit, (target_logit >= m).astype(jnp.float32), log_z


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def chunked_softmax_cross_entropy(hidden: Array, table: Array, bias: Array, targets: Array, chunk: int):
    """Per-position softmax cross-entropy of the linear head `hidden @ table.T + bias`, computed `chunk`
    vocabulary columns at a time, so that the [N, V] logits and their gradient never exist at once.

    hidden [N, D] (any float dtype: the matmul runs in it, as `LMHead`), table [V, D], bias [V], targets [N] int;
    chunk: a static int >= 1 (V need not be divisible by it; a chunk >= V is one pass over the whole table).
    Returns `nll` [N] float32 (logsumexp - target logit) and `correct` [N] float32 (1.0 where the target's logit is
    the row maximum, as `cross_entropy`; not differentiated). The forward pass scans the chunks with an online
    logsumexp (its running max gives `correct`); the backward pass recomputes each chunk's logits and forms
    d hidden, d table, d bias chunk by chunk: memory O(N * chunk + V * D).

    Method: the "Cut Your Losses in Large-Vocabulary Language Models" cross-entropy (Wijmans et al. 2024,
    arXiv:2411.09009) and Liger Kernel's fused linear cross-entropy, as a `lax.scan` in place of a fused kernel
    (tokamax's `linear_softmax_cross_entropy_loss` has no bias, weights or argmax, and only its TPU kernel avoids
    the full logits). The online logsumexp is Milakov & Gimelshein 2018, "Online normalizer calculation for
    softmax".
    """
    nll, correct, _ = _chunked_forward(hidden, table, bias, targets, min(chunk, table.shape[0]))
    return nll, correct


def _chunked_fwd(hidden, table, bias, targets, chunk):
    nll, correct, log_z = _chunked_forward(hidden, table, bias, targets, min(chunk, table.shape[0]))
    return (nll, correct), (hidden, table, bias, targets, log_z)


def _chunked_bwd(chunk, residuals, cotangents):
    hidden, table, bias, targets, log_z = residuals
    g = cotangents[0].astype(jnp.float32)  # d loss / d nll [N]; `correct` has no gradient
    vocab = table.shape[0]
    chunk = min(chunk, vocab)

    def body(carry, i):
        d_hidden, d_table, d_bias = carry
        logits, cols, valid = _chunk_logits(hidden, table, bias, i, chunk)
        onehot = (cols[None, :] == targets[:, None]) & valid[None, :]
        # d nll / d logits = softmax - onehot; masked columns have softmax exp(-inf) = 0 and no target.
        d_logits = (g[:, None] * (jnp.exp(logits - log_z[:, None]) - onehot)).astype(hidden.dtype)
        start, _, _ = _chunk_bounds(i, chunk, vocab)
        rows = jax.lax.dynamic_slice_in_dim(table, start, chunk, axis=0).astype(hidden.dtype)
        d_hidden = d_hidden + jnp.einsum("nc,cd->nd", d_logits, rows).astype(jnp.float32)
        # The shifted last window overlaps the previous one only in masked columns, whose d_logits are 0: add.
        d_rows = jnp.einsum("nc,nd->cd", d_logits, hidden).astype(jnp.float32)
        d_table = jax.lax.dynamic_update_slice_in_dim(
            d_table, jax.lax.dynamic_slice_in_dim(d_table, start, chunk, axis=0) + d_rows, start, axis=0)
        d_b = d_logits.astype(jnp.float32).sum(0)
        d_bias = jax.lax.dynamic_update_slice_in_dim(
            d_bias, jax.lax.dynamic_slice_in_dim(d_bias, start, chunk) + d_b, start, axis=0)
        return (d_hidden, d_table, d_bias), None

    init = (jnp.zeros(hidden.shape, jnp.float32), jnp.zeros(table.shape, jnp.float32),
            jnp.zeros(bias.shape, jnp.float32))
    (d_hidden, d_table, d_bias), _ = jax.lax.scan(body, init, jnp.arange(-(-vocab // chunk)))
    return d_hidden.astype(hidden.dtype), d_table.astype(table.dtype), d_bias.astype(bias.dtype), None


chunked_softmax_cross_entropy.defvjp(_chunked_fwd, _chunked_bwd)


def summarize(rows: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """Mean loss over all predicted tokens, plus the metrics the trainer reports."""
    count = rows["count"].sum()
    denom = jnp.maximum(count, 1.0)
    loss = rows["loss_sum"].sum() / denom
    return loss, {"loss": loss, "accuracy": rows["correct"].sum() / denom, "count": count, "rows": rows}


def _model_inputs(batch: dict[str, Array]) -> tuple:
    return batch["input_ids"], batch["attention_mask"], batch.get("positions"), batch.get("langs")


def mlm_loss(model: nn.Module, params, batch: dict[str, Array], rng: Array | None = None):
    """Masked LM (and TLM: the same loss on concatenated pairs). Predicts `mlm_targets` at `mlm_positions`.

    `model.config.lm_head_chunk` picks the head: 0 projects onto the whole vocabulary (`logits_at`, [B, P, V]
    logits), N > 0 N columns at a time (`head_inputs_at` + `chunked_softmax_cross_entropy`); same loss and metrics.
    """
    deterministic = rng is None
    chunk = model.config.lm_head_chunk
    out = model.apply(
        {"params": params},
        *_model_inputs(batch),
        batch["mlm_positions"],
        deterministic=deterministic,
        segment_ids=batch.get("segment_ids"),  # packed TLM rows (xlm_jax.data.packing); None: one example a row
        rngs=None if deterministic else {"dropout": rng},
        method="head_inputs_at" if chunk else "logits_at",
    )
    targets, weights = batch["mlm_targets"], batch["mlm_weights"].astype(jnp.float32)
    if not chunk:
        return summarize(cross_entropy(out, targets, weights))
    hidden, table, bias = out
    nll, correct = chunked_softmax_cross_entropy(
        hidden.reshape(-1, hidden.shape[-1]), table, bias, targets.reshape(-1), chunk)
    return summarize({"loss_sum": (nll.reshape(targets.shape) * weights).sum(-1),
                      "correct": (correct.reshape(targets.shape) * weights).sum(-1), "count": weights.sum(-1)})


def clm_loss(model: nn.Module, params, batch: dict[str, Array], rng: Array | None = None):
    """Causal LM: state at t (seeing tokens <= t) predicts token t + 1 where that token is real."""
    deterministic = rng is None
    logits = model.apply(
        {"params": params},
        *_model_inputs(batch),
        deterministic=deterministic,
        causal=True,
        segment_ids=batch.get("segment_ids"),
        rngs=None if deterministic else {"dropout": rng},
        method="mlm_logits",
    )
    targets = batch["input_ids"][:, 1:]
    weights = (batch["attention_mask"][:, 1:] > 0).astype(jnp.float32)
    return summarize(cross_entropy(logits[:, :-1], targets, weights))


def full_logits_mlm_loss(model: nn.Module, params, batch: dict[str, Array]):
    """Reference: projects every position then picks the predicted ones. Used by tests only."""
    logits = model.apply({"params": params}, *_model_inputs(batch), method="mlm_logits")
    picked = jnp.take_along_axis(logits, batch["mlm_positions"][..., None], axis=1)
    return summarize(cross_entropy(picked, batch["mlm_targets"], batch["mlm_weights"].astype(jnp.float32)))


OBJECTIVES = {"mlm": mlm_loss, "tlm": mlm_loss, "clm": clm_loss}
