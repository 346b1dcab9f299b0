"""Sentence-embedding training pieces: pooling, the in-batch-negatives (InfoNCE) loss with Matryoshka prefixes, and
GradCache. Pure JAX, no file I/O; the contrastive fine-tuning task plugs these into the step.

Pooling (`pool`) follows sentence-transformers' `Pooling` module (the modes its `1_Pooling/config.json` names):
"mean" (the states of the real tokens averaged: multilingual-e5, paraphrase-multilingual), "cls" (the first real
token, `<s>`: BGE-M3), "max", "mean_sqrt_len_tokens" (the sum over sqrt(n)), "weightedmean" (token i weighted i, as
SGPT) and "lasttoken" (the last real token). `normalize=True` is its `Normalize` module (unit L2 length).

The loss (`contrastive_loss`) is sentence-transformers' MultipleNegativesRankingLoss (van den Oord et al. 2018,
"Representation Learning with Contrastive Predictive Coding"; Henderson et al. 2017):

    loss = mean_i −log softmax_j(s · cos(a_i, c_j))[i],   c = [positives; hard negatives],   s = 1 / temperature

every anchor scored against every positive of the batch (its own is the target, the others are in-batch
negatives) and every hard negative of every row (shared extra columns, as sentence-transformers concatenates
them). `symmetric` averages it with the transposed term (each positive against every anchor:
MultipleNegativesSymmetricRankingLoss, `directions=("query_to_doc", "doc_to_query")`, `partition_mode=
"per_direction"`). Matryoshka (Kusupati et al. 2022; sentence-transformers' MatryoshkaLoss) sums that loss,
weighted, over the embeddings cut to their first d dimensions (cosine renormalises each prefix).

In-batch negatives over the data-parallel mesh need nothing here: under `jax.jit` with the batch sharded by
`xlm_jax.training.sharding.batch_sharding`, the [B, B] similarity matrix of `contrastive_loss` is a product of
two globally sharded arrays, so XLA gathers the other devices' rows and every anchor sees the GLOBAL batch's
positives, as sentence-transformers' `gather_across_devices=True` does by hand (tests/test_contrastive.py checks
it on 8 devices).

GradCache (`grad_cache_step`; Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup"): embed the batch chunk by chunk without keeping activations, take the loss and its gradient with respect
to the embeddings on the whole batch, then re-run each chunk under `jax.vjp` and pull that chunk's slice of the
embedding gradient back into the parameters. The result is the full-batch gradient exactly (up to float
rounding), with activation memory of one chunk.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from xlm_jax.core.errors import UserError, check_choice, check_fields, check_range
from xlm_jax.models.sentence_transformers import POOLING_MODES

Array = jax.Array
NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps (sentence-transformers' Normalize and cos_sim)
COUNT_EPS = 1e-9  # sentence-transformers' Pooling clamps token counts at 1e-9


# ------------------------------------------------------------------------------------------------ pooling


def _pool_one(hidden: Array, mask: Array, mode: str, start: Array) -> Array:
    t = hidden.shape[1]
    weights = mask[..., None]
    if mode == "cls":
        # The first real token (index 0 for right padding; after the padding when rows are left-padded).
        first = jnp.argmax(mask > 0, axis=1)
        return jnp.take_along_axis(hidden, first[:, None, None], axis=1)[:, 0]
    if mode == "lasttoken":
        # The last real token; a row without one gives zeros, as in sentence-transformers.
        last = t - 1 - jnp.argmax(jnp.flip(mask > 0, axis=1), axis=1)
        return jnp.take_along_axis(hidden * weights, last[:, None, None], axis=1)[:, 0]
    if mode == "max":
        picked = jnp.where(weights > 0, hidden, -jnp.inf).max(axis=1)
        return jnp.where(mask.sum(1, keepdims=True) > 0, picked, 0.0)
    if mode == "weightedmean":
        # Position weights 1, 2, ... counted from the first real token, prompt included even when it is left out
        # of the pooling (sentence-transformers' weightedmean).
        weights = weights * (jnp.arange(1, t + 1)[None, :] - start[:, None])[..., None]
        return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), COUNT_EPS)
    total = (hidden * weights).sum(1)
    count = jnp.maximum(weights.sum(1), COUNT_EPS)
    return total / (count if mode == "mean" else jnp.sqrt(count))


def pool(hidden: Array, mask: Array, mode: str | tuple[str, ...] = "mean", *, normalize: bool = False,
         skip_first: int = 0) -> Array:
    """Sentence embeddings from token states, as sentence-transformers' Pooling (+ Normalize) module computes them.

    hidden: float [B, T, D] (any float dtype; pooled in float32); mask: int / bool [B, T], nonzero on real tokens.
    mode: one of `POOLING_MODES` (see the module docstring), or a tuple of them whose results are concatenated in
    that order ([B, len(mode) · D], sentence-transformers' multi-mode pooling). normalize: rows scaled to unit
    L2 length (eps 1e-12, as torch's F.normalize). skip_first: the first `skip_first` positions are left out of
    the pooling (sentence-transformers' `include_prompt=False`: the prompt's tokens, `prompt_length`, for
    right-padded rows). Returns float32 [B, D'] (a row without real tokens pools to zeros).

    Raises UserError for an unknown mode (naming it and the valid ones) or mismatched shapes.
    """
    modes = (mode,) if isinstance(mode, str) else tuple(mode)
    if not modes:
        raise UserError(f"pooling={mode!r}: give one of {', '.join(POOLING_MODES)} (or a tuple of them)")
    for m in modes:
        check_choice("pooling", m, POOLING_MODES)
    if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
        raise UserError(f"pool: hidden {tuple(hidden.shape)} must be [B, T, D] and mask {tuple(mask.shape)} [B, T]")
    hidden = hidden.astype(jnp.float32)
    mask = mask.astype(jnp.float32)
    start = jnp.argmax(mask > 0, axis=1)
    if skip_first:
        mask = mask * (jnp.arange(mask.shape[1]) >= skip_first)[None, :]
    out = jnp.concatenate([_pool_one(hidden, mask, m, start) for m in modes], axis=-1)
    return l2_normalize(out) if normalize else out


def l2_normalize(x: Array) -> Array:
    """Rows of x [..., D] scaled to unit L2 length (x / max(|x|, 1e-12), torch's F.normalize); float32."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), NORM_EPS)


# ------------------------------------------------------------------------------------------------ the loss


@dataclasses.dataclass(frozen=True)
class ContrastiveConfig:
    """The contrastive loss's settings (the `contrastive.` keys of a fine-tuning config).

    temperature: τ > 0; the cosine similarities are scaled by s = 1/τ (0.05 = sentence-transformers' scale 20;
        multilingual-e5 trained with 0.01). symmetric: also the positive → anchors term, averaged with the
        forward one. matryoshka_dims: embedding prefixes to train (each ≥ 1 and at most the hidden size; () =
        the full embedding only); matryoshka_weights: one weight ≥ 0 per dim (() = 1 each).
    Fine-tuning (task=contrastive, `xlm_jax.tasks.embedding`) also reads: pooling (a mode of `POOLING_MODES`),
        normalize (unit-length embeddings from `embed` and the exported model; the loss is cosine either way),
        query_prefix / passage_prefix (prepended to anchors / to positives and negatives: e5's "query: " /
        "passage: "), grad_cache_chunk (0 = off; else pairs per GradCache chunk, a divisor of batch_size).
    """

    def check_batch(self, batch_size: int) -> None:
        """UserError naming the key unless grad_cache_chunk is 0 or divides `batch_size` (so is at most it)."""
        c = self.grad_cache_chunk
        if c and (c > batch_size or batch_size % c):
            divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
            raise UserError(f"contrastive.grad_cache_chunk={c}: must divide batch_size={batch_size} (valid: 0 = off, "
                            f"or one of {', '.join(map(str, divisors))})")

    temperature: float = 0.05
    symmetric: bool = False
    matryoshka_dims: tuple[int, ...] = ()
    matryoshka_weights: tuple[float, ...] = ()
    pooling: str = "mean"
    normalize: bool = True
    query_prefix: str = ""
    passage_prefix: str = ""
    grad_cache_chunk: int = 0

    def __post_init__(self):
        check_fields(self, "contrastive.")
        check_range("contrastive.temperature", self.temperature, 0, low_open=True)
        check_choice("contrastive.pooling", self.pooling, POOLING_MODES)
        check_range("contrastive.grad_cache_chunk", self.grad_cache_chunk, 0, integer=True, also={0: "off"})
        for i, d in enumerate(self.matryoshka_dims):
            check_range(f"contrastive.matryoshka_dims[{i}]", d, 1, integer=True)
        if len(set(self.matryoshka_dims)) != len(self.matryoshka_dims):
            raise UserError(f"contrastive.matryoshka_dims={list(self.matryoshka_dims)}: each dimension once")
        for i, w in enumerate(self.matryoshka_weights):
            check_range(f"contrastive.matryoshka_weights[{i}]", w, 0)
        if self.matryoshka_weights and len(self.matryoshka_weights) != len(self.matryoshka_dims):
            raise UserError(
                f"contrastive.matryoshka_weights={list(self.matryoshka_weights)}: one weight per dimension of "
                f"contrastive.matryoshka_dims={list(self.matryoshka_dims)} (or none: 1 each)")

    @property
    def scale(self) -> float:
        return 1.0 / self.temperature

    def check_hidden_size(self, hidden_size: int) -> None:
        """UserError naming the key when a Matryoshka dimension exceeds the embedding size `hidden_size`."""
        for i, d in enumerate(self.matryoshka_dims):
            if d > hidden_size:
                raise UserError(f"contrastive.matryoshka_dims[{i}]={d}: at most the embedding size {hidden_size}")

    def prefixes(self, hidden_size: int) -> tuple[tuple[int, float], ...]:
        """((dim, weight), ...) the loss sums over: the Matryoshka dims, or the whole embedding."""
        self.check_hidden_size(hidden_size)
        if not self.matryoshka_dims:
            return ((hidden_size, 1.0),)
        weights = self.matryoshka_weights or (1.0,) * len(self.matryoshka_dims)
        return tuple(zip(self.matryoshka_dims, (float(w) for w in weights)))


def _columns(positives: Array, negatives: Array | None) -> Array:
    if negatives is None:
        return positives
    if negatives.ndim == 3:  # [B, K, D]: every row's K hard negatives, shared with all anchors
        negatives = negatives.reshape(-1, negatives.shape[-1])
    if negatives.ndim != 2 or negatives.shape[-1] != positives.shape[-1]:
        raise UserError(f"hard negatives {tuple(negatives.shape)} must be [B, K, D] or [M, D] with "
                        f"D = {positives.shape[-1]}")
    return jnp.concatenate([positives, negatives], axis=0)


def info_nce(anchors: Array, positives: Array, negatives: Array | None = None, *, scale: float = 20.0,
             symmetric: bool = False) -> Array:
    """Multiple-negatives ranking loss on one set of embeddings (see the module docstring for the formula).

    anchors, positives: float [B, D], row i of one matching row i of the other; negatives: float [B, K, D] (K hard
    negatives per row) or [M, D], all of them extra columns for every anchor; scale: s = 1/τ. Returns the float32
    scalar mean over anchors (over both directions when `symmetric`). Raises UserError for mismatched shapes.
    """
    if anchors.ndim != 2 or anchors.shape != positives.shape:
        raise UserError(f"anchors {tuple(anchors.shape)} and positives {tuple(positives.shape)} must both be [B, D]")
    a = l2_normalize(anchors)
    p = l2_normalize(positives)
    c = l2_normalize(_columns(positives, negatives))
    b = a.shape[0]
    labels = jnp.arange(b)
    logits = scale * (a @ c.T)  # [B, B + M]; with a sharded batch XLA gathers the columns: global negatives
    forward = jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[labels, labels])
    if not symmetric:
        return forward
    back = scale * (p @ a.T)  # [B, B]: each positive against every anchor
    backward = jnp.mean(jax.nn.logsumexp(back, axis=1) - back[labels, labels])
    return (forward + backward) / 2


def contrastive_loss(anchors: Array, positives: Array, negatives: Array | None = None,
                     config: ContrastiveConfig = ContrastiveConfig()) -> Array:
    """`info_nce` summed with weights over the Matryoshka prefixes of the embeddings (the whole embedding when
    `config.matryoshka_dims` is empty). Shapes as `info_nce`; returns a float32 scalar. Raises UserError naming
    the key when a Matryoshka dimension exceeds D."""
    total = jnp.zeros((), jnp.float32)
    for dim, weight in config.prefixes(anchors.shape[-1]):
        neg = None if negatives is None else negatives[..., :dim]
        total = total + weight * info_nce(anchors[..., :dim], positives[..., :dim], neg, scale=config.scale,
                                          symmetric=config.symmetric)
    return total


def in_batch_accuracy(anchors: Array, positives: Array, negatives: Array | None = None) -> Array:
    """Share of anchors whose own positive is the most cosine-similar of all columns (a training metric):
    float32 scalar. Shapes as `info_nce`."""
    sims = l2_normalize(anchors) @ l2_normalize(_columns(positives, negatives)).T
    return jnp.mean(jnp.argmax(sims, axis=1) == jnp.arange(anchors.shape[0]))


# ------------------------------------------------------------------------------------------------ GradCache


EmbedFn = Callable[[Any, Any, Any], Array]


def _check_chunk(batch: Mapping[str, Any], chunk: int) -> dict[str, int]:
    check_range("grad_cache.chunk", chunk, 1, integer=True)
    rows = {}
    for name, column in batch.items():
        sizes = {x.shape[0] for x in jax.tree.leaves(column)}
        if len(sizes) != 1:
            raise UserError(f"batch[{name!r}]: its arrays have different numbers of rows {sorted(sizes)}")
        (n,) = sizes
        if chunk > n or n % chunk:
            raise UserError(f"grad_cache.chunk={chunk}: must divide the {n} rows of batch[{name!r}] and be at most "
                            f"{n} (valid: a divisor of {n})")
        rows[name] = n
    if not rows:
        raise UserError("grad_cache_step: the batch has no columns")
    return rows


def grad_cache_step(embed_fn: EmbedFn, params: Any, batch: Mapping[str, Any], chunk: int,
                    loss_fn: Callable[[dict[str, Array]], Array], rng: Array | None = None, *,
                    has_aux: bool = False) -> tuple[Array, Any]:
    """Loss and parameter gradients of `loss_fn(embeddings)` on the whole batch, computed GradCache-style.

    embed_fn(params, inputs, rng) -> float [n, D]: the embeddings of one chunk of rows (`inputs` is a column of
        `batch` cut to n rows; `rng` a key for dropout, or None). It is called twice per chunk with the same
        key (no gradient pass, then the `jax.vjp` pass), so dropout masks agree and the gradient stays exact.
    batch: {column name: pytree of arrays with the same leading row count}, e.g. {"anchor": {"input_ids": [B, T],
        "attention_mask": [B, T]}, "positive": {...}, "negative": {... [B·K, T]}}.
    chunk: rows per chunk; it must divide every column's rows (and so be at most the smallest).
    loss_fn({column name: float32 [rows, D]}) -> float32 scalar (e.g. `contrastive_loss` on the columns).
    rng: a PRNG key folded per (column, chunk), or None (deterministic embed_fn).
    Chunk c of a column holds its rows c, c + n, c + 2n, ... (n = rows / chunk), so that with the batch sharded
    over the data-parallel devices each chunk spans all of them (the sum over chunks is the same gradient).

    has_aux: loss_fn returns (loss, aux); then the first result is (loss, aux).
    Returns (loss float32 scalar, grads with `params`' structure). The chunks run under `jax.lax.scan`, so one
    chunk's activations are alive at a time (Gao et al. 2021). Raises UserError for a chunk that is < 1, larger
    than a column or does not divide it.
    """
    rows = _check_chunk(batch, chunk)

    # Chunk c holds rows c, c + n, c + 2n, ... (n chunks): with the rows sharded in contiguous blocks over the
    # data-parallel devices, every chunk then spans all devices and the reshape moves no data between them.
    def to_chunks(x, n_rows):
        n = n_rows // chunk
        return x.reshape((chunk, n) + x.shape[1:]).swapaxes(0, 1)

    def from_chunks(x):  # [n, chunk, ...] -> rows in their original order
        return x.swapaxes(0, 1).reshape((-1,) + x.shape[2:])

    def chunked(name):
        return jax.tree.map(lambda x: to_chunks(x, rows[name]), batch[name])

    def key(col: int, i):
        return None if rng is None else jax.random.fold_in(jax.random.fold_in(rng, col), i)

    names = list(batch)
    inputs = {name: chunked(name) for name in names}

    # 1. Embeddings of every chunk, without gradients (no residuals are kept for a backward pass).
    embeddings = {}
    for col, name in enumerate(names):
        def forward(_, xs, col=col):
            x, i = xs
            return None, jax.lax.stop_gradient(embed_fn(params, x, key(col, i)).astype(jnp.float32))

        _, e = jax.lax.scan(forward, None, (inputs[name], jnp.arange(rows[name] // chunk)))
        embeddings[name] = from_chunks(e)

    # 2. The loss and d loss / d embeddings on the whole batch: the only place the chunks meet.
    loss, cached = jax.value_and_grad(loss_fn, has_aux=has_aux)(embeddings)

    # 3. Each chunk again, with its VJP fed the cached slice of the embedding gradient.
    grads = jax.tree.map(jnp.zeros_like, params)
    for col, name in enumerate(names):
        g = to_chunks(cached[name], rows[name])

        def backward(acc, xs, col=col):
            x, g_chunk, i = xs
            out, vjp = jax.vjp(lambda p: embed_fn(p, x, key(col, i)).astype(jnp.float32), params)
            (g_params,) = vjp(g_chunk.astype(out.dtype))
            return jax.tree.map(jnp.add, acc, g_params), None

        grads, _ = jax.lax.scan(backward, grads, (inputs[name], g, jnp.arange(rows[name] // chunk)))
    return loss, grads
