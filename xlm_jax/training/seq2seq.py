"""The encoder–decoder's training pieces: the translation loss for `make_step`, sharded state, and the
no-gradient generation of online back-translation.

Batch rows (all int32, [R, W] unless noted; `xlm_jax.mt.data` builds them):

    src, src_mask, src_langs     encoder input `</s> w1 .. wn </s>` (XLM) with the source language everywhere
    tgt, tgt_mask, tgt_langs     the whole target sentence with the target language everywhere; the decoder reads
                                 tgt[:, :-1] and predicts tgt[:, 1:] where tgt_mask[:, 1:] (XLM's `pred_mask`)
    weight                       float32 [R]: the objective's lambda at this step (one value repeated per row)

The loss is XLM's: mean token cross-entropy over the batch's predicted target tokens (no label smoothing), times
lambda. Rows of padding (masks all 0) predict nothing and count nothing.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xlm_jax.models.config import EncoderDecoderConfig
from xlm_jax.models.decoder import EncoderDecoder, init_params
from xlm_jax.models.decoding import greedy_decode
from xlm_jax.training.sharding import param_shardings
from xlm_jax.training.step import StepLoss

BATCH_KEYS = ("src", "src_mask", "src_langs", "tgt", "tgt_mask", "tgt_langs", "weight")


def seq2seq_loss(model: EncoderDecoder) -> StepLoss:
    """The translation / denoising / back-translation loss of `make_step` (see the module docstring).

    Metrics: loss (lambda-weighted mean token cross-entropy), nll (unweighted), accuracy, tokens (predicted)."""

    def fn(params, batch, rng, totals):
        tgt_in, labels = batch["tgt"][:, :-1], batch["tgt"][:, 1:]
        pred = batch["tgt_mask"][:, 1:] > 0
        logits = model.apply({"params": params}, batch["src"], batch["src_mask"], batch["src_langs"], tgt_in,
                             batch["tgt_mask"][:, :-1], batch["tgt_langs"][:, :-1], deterministic=False,
                             rngs={"dropout": rng})
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
        loss_sum = jnp.where(pred, ce, 0.0).sum()
        correct = jnp.where(pred, jnp.argmax(logits, -1) == labels, False).sum().astype(jnp.float32)
        weight = batch["weight"][0]
        return weight * loss_sum / totals, {"loss_sum": loss_sum, "correct": correct,
                                            "count": pred.sum().astype(jnp.float32),
                                            "weighted": weight * loss_sum}

    def totals(batch):
        return jnp.maximum((batch["tgt_mask"][:, 1:] > 0).sum().astype(jnp.float32), 1.0)

    def metrics(sums):
        count = jnp.maximum(sums["count"], 1.0)
        return {"loss": sums["weighted"] / count, "nll": sums["loss_sum"] / count,
                "accuracy": sums["correct"] / count, "tokens": sums["count"]}

    def select(batch):
        return {k: batch[k] for k in BATCH_KEYS}

    return StepLoss(fn, totals, metrics, select)


def mt_state_shardings(config: EncoderDecoderConfig, optimizer: optax.GradientTransformation, mesh: Mesh):
    """(abstract state with shardings, NamedSharding tree) of {"params", "opt_state", "step"} of an
    `EncoderDecoder`: parameters by the logical rules (as the encoder's), Adam moments like their parameter."""
    model = EncoderDecoder(config)
    boxed = jax.eval_shape(lambda rng: init_params(model, rng), jax.random.key(0))
    params_sh = param_shardings(boxed, mesh)
    abstract_params = nn.unbox(boxed)
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, abstract_opt, params_sh,
                                   transform_non_params=lambda _: replicated)
    shardings = {"params": params_sh, "opt_state": opt_sh, "step": replicated}
    abstract = {"params": abstract_params, "opt_state": abstract_opt, "step": jax.ShapeDtypeStruct((), jnp.int32)}
    with_sh = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return with_sh, shardings


def place_state(params, optimizer: optax.GradientTransformation, shardings, mesh: Mesh, updates: int = 0) -> dict:
    """{"params", "opt_state", "step"} laid out on `mesh` from (unboxed or boxed) `params`, a fresh optimizer state."""
    params = jax.device_put(nn.unbox(params), shardings["params"])

    def init(p):
        return {"params": p, "opt_state": optimizer.init(p), "step": jnp.asarray(updates, jnp.int32)}

    with jax.set_mesh(mesh):
        return jax.jit(init, out_shardings=shardings)(params)


def bt_max_len(src_width: int) -> int:
    """XLM's back-translation length limit `int(1.3 * L + 5)` for sources of (padded) width L."""
    return int(1.3 * src_width + 5)


@functools.partial(jax.jit, static_argnames=("model", "max_len"))
def _generate(model, params, src, src_mask, src_langs, tgt_lang, max_len):
    params = jax.lax.stop_gradient(params)
    tgt_langs = jnp.full((src.shape[0],), tgt_lang, jnp.int32)
    return greedy_decode(model, params, src, src_mask, src_langs, tgt_langs, max_len=max_len)


def back_translate(model: EncoderDecoder, params, src, src_mask, src_langs, tgt_lang: int, max_len: int):
    """Online back-translation's generation: greedy, dropout off (decoding is deterministic), no gradient — it
    runs as its own jitted call outside any `jax.grad`, on `stop_gradient`ed parameters, so the following
    update sees its output as constant data (XLM: `torch.no_grad()`, `eval()`).

    src, src_mask, src_langs: int [B, S]; tgt_lang: the language to write. Returns (tokens int32 [B, max_len],
    mask int32 [B, max_len]) with `start w1 .. wn EOS`, padding after."""
    tokens, lengths = _generate(model, params, src, src_mask, src_langs, int(tgt_lang), max_len)
    mask = (jnp.arange(max_len)[None, :] < lengths[:, None]).astype(jnp.int32)
    return tokens, mask
