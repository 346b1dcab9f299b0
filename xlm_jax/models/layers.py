"""Pieces shared by the RoPE encoders (`xlm_jax.models.modernbert`, `xlm_jax.models.eurobert`).

- rotary position embeddings (`apply_rope`), as Hugging Face's `rotate_half` form: channel j pairs with j + Dh/2;
- attention over a dense boolean mask with grouped key / value heads (`attend`), and sliding-window attention
  computed block by block (`local_attend`), whose memory grows linearly with the length;
- the gated MLP (GeGLU / SwiGLU), LayerNorm without bias / RMSNorm, the truncated-normal initialiser;
- sequence pooling for classification heads (first token, masked mean, per packed example);
- the layer stack (`nn.scan` with the remat policy of `xlm_jax.models.xlm`), whose scanned input is each
  layer's index, so that a layer knows whether it is global (ModernBERT) or the first one.

Dense linear layers, embeddings, logical axis names and init helpers are `xlm_jax.models.xlm`'s.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlm_jax.models.config import ModelConfig
from xlm_jax.models.xlm import (_dense, _dtype, _ones, _zeros, activation_fn, segment_mask,
                                segment_positions)

Array = jax.Array


# ------------------------------------------------------------------------------------------------ init, norms

def truncated_normal(std: float, cutoff: float = 2.0):
    """N(0, std) truncated to [-cutoff * std, cutoff * std]: ModernBERT's `init.trunc_normal_` with
    `initializer_cutoff_factor` 2 (`ModernBertPreTrainedModel._init_weights`)."""
    return nn.initializers.truncated_normal(std, lower=-cutoff, upper=cutoff)


def norm(cfg: ModelConfig, name: str | None = None) -> nn.Module:
    """ModernBERT: LayerNorm (bias only with `use_bias`, HF `norm_bias`). EuroBERT: RMSNorm (scale only,
    x * rsqrt(mean(x^2) + eps), HF `EuroBertRMSNorm`). Statistics in float32; parameters named `scale` / `bias`
    with the logical axis `norm`."""
    common = dict(epsilon=cfg.layer_norm_eps, dtype=_dtype(cfg.dtype), param_dtype=_dtype(cfg.param_dtype),
                  scale_init=_ones(("norm",)), name=name)
    if cfg.family == "eurobert":
        return nn.RMSNorm(**common)
    return nn.LayerNorm(use_bias=cfg.use_bias, bias_init=_zeros(("norm",)), **common)


# ---------------------------------------------------------------------------------------------------- RoPE

def apply_rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotary embedding of x [B, T, H, Dh] at positions int [B, T] with base `theta`, computed in float32 and cast
    back (HF `apply_rotary_pos_emb`: x * cos + rotate_half(x) * sin, frequencies theta^(-2i/Dh) repeated over
    both halves; Su et al. 2021)."""
    dh = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, Dh/2]
    angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [B, T, 1, Dh]
    xf = x.astype(jnp.float32)
    rotated = jnp.concatenate([-xf[..., dh // 2:], xf[..., : dh // 2]], axis=-1)
    return (xf * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


# ----------------------------------------------------------------------------------------------- attention

def _softmax_attend(q: Array, k: Array, v: Array, allowed: Array, rate: float, rng: Array | None) -> Array:
    """The explicit form: q [..., T, N, Dh], k / v [..., S, K, Dh] (N a multiple of K: query head n reads key
    head n // (N / K), HF `repeat_kv`), allowed bool broadcastable to [..., N, T, S]; softmax in float32; dropout
    on the probabilities when `rng` is given."""
    *lead, t, n, dh = q.shape
    kh = k.shape[-2]
    qg = q.reshape(*lead, t, kh, n // kh, dh) * dh**-0.5
    scores = jnp.einsum("...tkgd,...skd->...kgts", qg, k).astype(jnp.float32)
    scores = scores.reshape(*lead, n, t, k.shape[-3])
    scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    if rng is not None and rate > 0:
        keep = jax.random.bernoulli(rng, 1.0 - rate, probs.shape)
        probs = jnp.where(keep, probs / (1.0 - rate), 0).astype(v.dtype)
    probs = probs.reshape(*lead, kh, n // kh, t, k.shape[-3])
    return jnp.einsum("...kgts,...skd->...tkgd", probs, v).reshape(*lead, t, n, dh)


def attend(cfg: ModelConfig, q: Array, k: Array, v: Array, mask: Array, rng: Array | None = None) -> Array:
    """Dense attention: q [B, T, N, Dh], k / v [B, T, K, Dh], mask bool [B, 1, T or 1, T] (True: may attend).
    Dropout (`rng` given) or `attention_impl="xla"` take the explicit float32 softmax; otherwise
    `jax.nn.dot_product_attention`, which groups query heads over key heads as HF's `repeat_kv` does."""
    if rng is not None or cfg.attention_impl == "xla":
        return _softmax_attend(q, k, v, mask, cfg.attention_dropout, rng)
    impl = None if cfg.attention_impl == "auto" else cfg.attention_impl
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=q.shape[-1] ** -0.5, implementation=impl)


def window_mask(length: int, half_window: int) -> Array:
    """bool [1, 1, T, T]: |i - j| <= half_window (HF `sliding_window_bidirectional_overlay`, whose window is
    `config.sliding_window` = local_attention // 2)."""
    i = jnp.arange(length)
    return (jnp.abs(i[:, None] - i[None, :]) <= half_window)[None, None]


def local_attend(q: Array, k: Array, v: Array, query_groups: Array, key_groups: Array, half_window: int,
                 rate: float = 0.0, rng: Array | None = None) -> Array:
    """Sliding-window attention, block by block: query i sees key j when |i - j| <= half_window and
    query_groups[i] == key_groups[j].

    q [B, T, N, Dh], k / v [B, T, K, Dh]; query_groups / key_groups int [B, T] (for padding masks: every query 1,
    keys 1 / 0 for real / padding; for packed rows both the segment ids). The sequence is cut into blocks of
    C = half_window tokens; each block of queries attends to its own block and its two neighbours (3 C keys, which
    hold the whole window), so scores take B x N x T x 3C floats instead of B x N x T x T. Returns [B, T, N, Dh],
    equal to dense attention under `window_mask` (tests/test_modernbert.py checks it)."""
    b, t, n, dh = q.shape
    c = max(half_window, 1)
    blocks = -(-t // c)
    pad = blocks * c - t

    def pad_time(x, before, after, value=0):
        widths = [(0, 0)] * x.ndim
        widths[1] = (before, after)
        return jnp.pad(x, widths, constant_values=value)

    def windows(x):  # [B, T, ...] -> [B, blocks, 3C, ...]: blocks b-1, b, b+1 of x (outside: padding)
        xp = pad_time(x, c, pad + c, -1 if x.dtype == jnp.int32 else 0)
        xb = xp.reshape(b, blocks + 2, c, *x.shape[2:])
        return jnp.concatenate([xb[:, :-2], xb[:, 1:-1], xb[:, 2:]], axis=2)

    qb = pad_time(q, 0, pad).reshape(b, blocks, c, n, dh)
    kw, vw = windows(k), windows(v)
    kg = windows(key_groups.astype(jnp.int32))  # -1 outside the sequence: never equal to a query's group
    qg = pad_time(query_groups.astype(jnp.int32), 0, pad, -2).reshape(b, blocks, c)
    qi = jnp.arange(c)[:, None]
    kj = jnp.arange(3 * c)[None, :] - c  # key offset relative to the block start, for query offset qi
    near = jnp.abs(qi - kj) <= half_window  # [C, 3C]
    allowed = near[None, None] & (qg[..., :, None] == kg[..., None, :])  # [B, blocks, C, 3C]
    out = _softmax_attend(qb, kw, vw, allowed[:, :, None], rate, rng)  # [B, blocks, C, N, Dh]
    return out.reshape(b, blocks * c, n, dh)[:, :t]


# ---------------------------------------------------------------------------------------------------- MLP

class GatedMLP(nn.Module):
    """act(x W0) * (x W1) -> W2: GeGLU (ModernBERT: W0 / W1 are the first / second half of `Wi`) or SwiGLU
    (EuroBERT: W0 = gate_proj, W1 = up_proj). Dropout (ModernBERT `mlp_dropout`) before the output projection.
    Params wi_0, wi_1 [D, F], wo [F, D]."""

    config: ModelConfig
    in_init: Any = None
    out_init: Any = None

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        cfg = self.config
        d, f = cfg.hidden_size, cfg.intermediate_size
        kw = dict(use_bias=cfg.use_bias)
        h0 = _dense(cfg, d, f, ("embed",), ("mlp",), "wi_0", kernel_init=self.in_init, **kw)(x)
        h1 = _dense(cfg, d, f, ("embed",), ("mlp",), "wi_1", kernel_init=self.in_init, **kw)(x)
        h = activation_fn(cfg.activation)(h0) * h1
        h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
        return _dense(cfg, f, d, ("mlp",), ("embed",), "wo", kernel_init=self.out_init, **kw)(h)


# ------------------------------------------------------------------------------------------------ pooling

def pool(hidden: Array, how: str, attention_mask: Array | None, segment_ids: Array | None = None,
         example_starts: Array | None = None) -> Array:
    """hidden [B, T, X] -> [B, X] ("first": token 0; "mean": the mean over real tokens, HF's masked mean), or with
    `example_starts` int [B, E] (packed rows) [B, E, X]: each example's first token, or the mean over the tokens
    of its segment (`segment_ids` [B, T]). `attention_mask` None: every token is real (a head's initialisation)."""
    if attention_mask is None:
        attention_mask = jnp.ones(hidden.shape[:2], jnp.int32)
    if how == "first":
        if example_starts is None:
            return hidden[:, 0]
        return jnp.take_along_axis(hidden, example_starts[..., None].astype(jnp.int32), axis=1)
    if example_starts is None or segment_ids is None:
        weights = (attention_mask > 0).astype(jnp.float32)[:, None, :]  # [B, 1, T]
    else:
        seg = jnp.take_along_axis(segment_ids, example_starts.astype(jnp.int32), axis=1)  # [B, E]
        weights = ((segment_ids[:, None, :] == seg[..., None]) & (segment_ids[:, None, :] > 0)).astype(jnp.float32)
    total = jnp.einsum("bet,btx->bex", weights, hidden.astype(jnp.float32))
    mean = total / jnp.maximum(weights.sum(-1, keepdims=True), 1.0)
    mean = mean.astype(hidden.dtype)
    return mean[:, 0] if example_starts is None or segment_ids is None else mean


# ------------------------------------------------------------------------------------------ encoder + head

class EncoderWithHead(nn.Module):
    """A family's encoder + a task head (the subclasses name both). Params: {"encoder": ..., "classifier": ...}.
    Same call as `xlm_jax.models.xlm`'s task models; the head also receives the padding mask and the segment ids
    (mean / late pooling)."""

    config: ModelConfig
    num_labels: int
    encoder_cls: ClassVar[type[nn.Module]]
    head: ClassVar[type[nn.Module]]

    def setup(self):
        self.encoder = self.encoder_cls(self.config)
        self.classifier = self.head(self.config, self.num_labels)

    def __call__(self, input_ids, attention_mask=None, positions=None, langs=None, *, deterministic=True,
                 segment_ids=None, example_starts=None):
        """Unpacked: [B, T] inputs -> [B, C] (sequence), [B, T, C] (token) or [B, T, 2] (span) float32 logits.
        Packed rows: `segment_ids` [B, T] and, for sequence heads, `example_starts` [B, E] -> [B, E, C]."""
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).astype(jnp.int32)
        hidden = self.encoder(input_ids, attention_mask, positions, langs, deterministic=deterministic,
                              segment_ids=segment_ids)
        return self.classifier(hidden, deterministic, example_starts, attention_mask=attention_mask,
                               segment_ids=segment_ids)


def default_attention_inputs(cfg: ModelConfig, input_ids: Array, attention_mask: Array | None,
                             positions: Array | None, segment_ids: Array | None):
    """(attention_mask, positions, dense mask bool [B, 1, 1 or T, T], query_groups, key_groups int [B, T]).

    Positions count every slot from 0 (HF's default `arange`), or restart per packed example. Without segments,
    every query may see every real key (HF's padding mask); with them, only keys of its own segment (padding,
    segment 0, sees padding only; see `xlm_jax.models.xlm.segment_mask`)."""
    if attention_mask is None:
        attention_mask = (input_ids != cfg.pad_token_id).astype(jnp.int32)
    if positions is None:
        positions = (jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
                     if segment_ids is None else segment_positions(segment_ids))
    if segment_ids is None:
        mask = (attention_mask > 0)[:, None, None, :]
        query_groups, key_groups = jnp.ones_like(attention_mask), (attention_mask > 0).astype(jnp.int32)
    else:
        mask = segment_mask(segment_ids)
        query_groups = key_groups = segment_ids
    return attention_mask, positions, mask, query_groups, key_groups


# ------------------------------------------------------------------------------------------------ masked LM

def project(module: nn.Module, cfg: ModelConfig, x: Array, word_embeddings: Array | None, with_bias: bool) -> Array:
    """x [..., D] -> logits [..., V], inside `module` (an LM head's compact call): x E^T with the embedding table
    E [V, D] when given (tied), else x @ decoder/kernel [D, V]; plus `bias` [V] when `with_bias`."""
    if word_embeddings is not None:
        logits = jnp.einsum("...d,vd->...v", x, word_embeddings.astype(x.dtype))
    else:
        logits = _dense(cfg, cfg.hidden_size, cfg.vocab_size, ("embed",), ("vocab",), "decoder", use_bias=False)(x)
    if with_bias:
        bias = module.param("bias", _zeros(("vocab",)), (cfg.vocab_size,), _dtype(cfg.param_dtype))
        logits = logits + bias.astype(logits.dtype)
    return logits


class MaskedLM(nn.Module):
    """Encoder + LM head, the interface of `xlm_jax.models.xlm.XLMForMaskedLM`: `__call__` -> hidden [B, T, D],
    `mlm_logits` -> [B, T, V], `logits_at(..., predict_positions [B, P])` -> [B, P, V] (hidden states gathered
    before the vocabulary projection). The subclasses name the encoder and head classes; the head is called as
    head(hidden, word_embeddings or None)."""

    config: ModelConfig
    encoder_cls: ClassVar[type[nn.Module]]
    head_cls: ClassVar[type[nn.Module]]

    def setup(self):
        self.encoder = self.encoder_cls(self.config)
        self.lm_head = self.head_cls(self.config)

    def __call__(self, input_ids, attention_mask=None, positions=None, langs=None, **kwargs):
        return self.encoder(input_ids, attention_mask, positions, langs, **kwargs)

    def project(self, hidden: Array) -> Array:
        table = None
        if self.config.tie_word_embeddings:
            table = nn.unbox(self.encoder.variables["params"]["embeddings"]["word_embeddings"]["embedding"])
        return self.lm_head(hidden, table)

    def mlm_logits(self, input_ids, attention_mask=None, positions=None, langs=None, **kwargs) -> Array:
        """Logits at every position: [B, T, V]."""
        return self.project(self(input_ids, attention_mask, positions, langs, **kwargs))

    def logits_at(self, input_ids, attention_mask, positions, langs, predict_positions, **kwargs) -> Array:
        """Logits only at `predict_positions` int [B, P] -> [B, P, V]."""
        hidden = self(input_ids, attention_mask, positions, langs, **kwargs)
        picked = jnp.take_along_axis(hidden, predict_positions[..., None], axis=1)
        return self.project(picked)
