"""Pretraining objectives as pure functions of (params, batch).

MLM and TLM share one loss: the model projects only the predicted positions (the masked LM's `logits_at`, every family's: `xlm_jax.models.families`), so
B x T x V logits never exist. CLM predicts token t+1 from the causal states at t. Each loss returns the mean
loss and a metrics dict with per-row sums, so that the trainer can weight objectives and report per language.
"""

from __future__ import annotations

import jax
import flax.linen as nn
import jax.numpy as jnp


Array = jax.Array


def cross_entropy(logits: Array, targets: Array, weights: Array) -> dict[str, Array]:
    """Weighted token cross-entropy in float32, summed per row.

    Returns per-row `loss_sum`, `correct` and `count` ([B]); `weights` is 1 for a real prediction, 0 for padding.
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = (log_z - target_logit) * weights
    correct = (jnp.argmax(logits, axis=-1) == targets) * weights
    return {"loss_sum": nll.sum(-1), "correct": correct.sum(-1), "count": weights.sum(-1)}


def summarize(rows: dict[str, Array]) -> tuple[Array, dict[str, Array]]:
    """Mean loss over all predicted tokens, plus the metrics the trainer reports."""
    count = rows["count"].sum()
    denom = jnp.maximum(count, 1.0)
    loss = rows["loss_sum"].sum() / denom
    return loss, {"loss": loss, "accuracy": rows["correct"].sum() / denom, "count": count, "rows": rows}


def _model_inputs(batch: dict[str, Array]) -> tuple:
    return batch["input_ids"], batch["attention_mask"], batch.get("positions"), batch.get("langs")


def mlm_loss(model: nn.Module, params, batch: dict[str, Array], rng: Array | None = None):
    """Masked LM (and TLM: the same loss on concatenated pairs). Predicts `mlm_targets` at `mlm_positions`."""
    deterministic = rng is None
    logits = model.apply(
        {"params": params},
        *_model_inputs(batch),
        batch["mlm_positions"],
        deterministic=deterministic,
        segment_ids=batch.get("segment_ids"),  # packed TLM rows (xlm_jax.data.packing); None: one example a row
        rngs=None if deterministic else {"dropout": rng},
        method="logits_at",
    )
    return summarize(cross_entropy(logits, batch["mlm_targets"], batch["mlm_weights"].astype(jnp.float32)))


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
