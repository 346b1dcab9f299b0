"""EuroBERT in Flax linen, exact against Hugging Face `modeling_eurobert` (transformers 5).

A Llama-style bidirectional encoder:

    token embedding (no norm, no dropout)
    L pre-norm layers: x + attention(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))
      attention: q [H heads], k / v [num_kv_heads] (grouped-query), RoPE theta `rope_theta`, global
    final RMSNorm
    MLM head: a projection, untied from the embedding in the releases (`tie_word_embeddings`), with a bias only
    with `use_bias` (HF `mlp_bias`)

Parameter layout (layers stacked on a leading axis, as `xlm_jax.models.xlm`):

    encoder/embeddings/word_embeddings/embedding
    encoder/layers/{attention/{query,key,value,out}, attention_norm, mlp/{wi_0 (gate),wi_1 (up),wo}, mlp_norm}
    encoder/final_norm
    lm_head/decoder/kernel (untied) [, lm_head/bias]
    classifier/{dense, out_proj} (sequence) | classifier/out_proj (token) | classifier/qa_outputs (span)

Initialisation as HF's default `_init_weights`: normal(initializer_range) for every kernel and the embedding (its
padding row zero), zero biases, unit norms. EuroBERT has no dropout but on the attention probabilities
(`attention_dropout`); `dropout` is not read.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlm_jax.models import layers
from xlm_jax.models.config import ModelConfig
from xlm_jax.models.xlm import Embed, _dense, _dtype, activation_fn, layer_stack

Array = jax.Array


def _embedding_init(cfg: ModelConfig):
    """normal(initializer_range) with the padding row zero (HF `nn.Embedding(padding_idx=pad)` after
    `_init_weights`)."""

    def init(key, shape, dtype=jnp.float32):
        table = cfg.initializer_range * jax.random.normal(key, shape, dtype)
        return table.at[cfg.pad_token_id].set(0)

    return init


class Embeddings(nn.Module):
    """The token table alone (encoder/embeddings/word_embeddings, the path every family shares)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids: Array) -> Array:
        cfg = self.config
        return Embed(cfg.vocab_size, cfg.hidden_size, cfg.initializer_range, ("vocab", "embed"),
                     _dtype(cfg.param_dtype), _embedding_init(cfg), name="word_embeddings")(input_ids, _dtype(cfg.dtype))


class Attention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, context: dict, deterministic: bool) -> Array:
        """x [B, T, D] -> [B, T, D]; context: positions and the dense mask of `layers.default_attention_inputs`."""
        cfg = self.config
        d = cfg.hidden_size
        proj = lambda name, heads: _dense(cfg, d, (heads, cfg.head_dim), ("embed",), ("heads", "kv"), name,
                                          use_bias=cfg.use_bias)(x)
        q, k, v = proj("query", cfg.num_heads), proj("key", cfg.kv_heads), proj("value", cfg.kv_heads)
        q, k = (layers.apply_rope(t, context["positions"], cfg.rope_theta) for t in (q, k))
        rng = self.make_rng("dropout") if not deterministic and cfg.attention_dropout > 0 else None
        out = layers.attend(cfg, q, k, v, context["mask"], rng)
        return _dense(cfg, (cfg.num_heads, cfg.head_dim), d, ("heads", "kv"), ("embed",), "out",
                      use_bias=cfg.use_bias)(out)


class Layer(nn.Module):
    """One pre-norm block (HF `EuroBertDecoderLayer`); scan-compatible: (carry, layer index) -> (carry, y)."""

    config: ModelConfig
    deterministic: bool = True
    output_states: bool = False

    @nn.compact
    def __call__(self, carry, index):
        x, context = carry
        cfg = self.config
        x = x + Attention(cfg, name="attention")(layers.norm(cfg, "attention_norm")(x), context, self.deterministic)
        x = x + layers.GatedMLP(cfg, name="mlp")(layers.norm(cfg, "mlp_norm")(x), self.deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
        return (x, context), (x if self.output_states else None)


class Encoder(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None, positions: Array | None = None,
                 langs: Array | None = None, *, deterministic: bool = True, causal: bool = False,
                 output_all_layers: bool = False, segment_ids: Array | None = None):
        """input_ids, attention_mask, positions, segment_ids: int [B, T] (`langs` accepted and ignored). Packed
        rows (`segment_ids`): no attention across examples, positions restart per example. Returns float
        [B, T, D] (and the per-layer states [L, B, T, D] before the final norm with `output_all_layers`)."""
        cfg = self.config
        if causal:
            raise ValueError("EuroBERT is bidirectional: causal attention is not available")
        attention_mask, positions, mask, _, _ = layers.default_attention_inputs(
            cfg, input_ids, attention_mask, positions, segment_ids)
        x = Embeddings(cfg, name="embeddings")(input_ids)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
        context = {"positions": positions, "mask": mask}
        stack = layer_stack(Layer, cfg, deterministic, output_all_layers)
        (x, _), states = stack((x, context), jnp.arange(cfg.num_layers))
        x = layers.norm(cfg, "final_norm")(x)
        return (x, states) if output_all_layers else x


class LMHead(nn.Module):
    """The projection (HF `lm_head`, bias = `mlp_bias`), tied to the embedding only with tie_word_embeddings."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, word_embeddings: Array | None) -> Array:
        return layers.project(self, self.config, x, word_embeddings, with_bias=self.config.use_bias)


class EuroBertForMaskedLM(layers.MaskedLM):
    """Encoder + MLM head. `__call__` gives hidden states; `mlm_logits` / `logits_at` the predictions."""

    encoder_cls = Encoder
    head_cls = LMHead


class SequenceHead(nn.Module):
    """HF `EuroBertForSequenceClassification`: "first" (HF `bos`) / "mean": pool -> dense -> GELU -> out_proj;
    "late": dense -> GELU -> out_proj at every token, then the masked mean of the logits."""

    config: ModelConfig
    num_labels: int

    @nn.compact
    def __call__(self, hidden, deterministic, example_starts=None, *, attention_mask=None, segment_ids=None):
        """hidden [B, T, D] -> float32 [B, C], or [B, E, C] with example_starts [B, E] (packed rows)."""
        cfg = self.config
        dense = _dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed",), ("embed_out",), "dense")
        out = _dense(cfg, cfg.hidden_size, self.num_labels, ("embed",), ("labels",), "out_proj")
        classify = lambda x: out(activation_fn("gelu")(dense(x))).astype(jnp.float32)
        if cfg.classifier_pooling == "late":
            return layers.pool(classify(hidden), "mean", attention_mask, segment_ids, example_starts)
        return classify(layers.pool(hidden, cfg.classifier_pooling, attention_mask, segment_ids, example_starts))


class TokenHead(nn.Module):
    """HF `EuroBertForTokenClassification`: a linear layer on every final state (no dropout)."""

    config: ModelConfig
    num_labels: int
    out_name: str = "out_proj"

    @nn.compact
    def __call__(self, hidden, deterministic, example_starts=None, *, attention_mask=None, segment_ids=None):
        """hidden [B, T, D] -> float32 [B, T, C]."""
        return _dense(self.config, self.config.hidden_size, self.num_labels, ("embed",), ("labels",),
                      self.out_name)(hidden).astype(jnp.float32)


class SpanHead(nn.Module):
    """Extractive QA: a linear layer to (start, end) logits, float32 [B, T, 2], as BERT's (transformers 5 has no
    EuroBERT QA head). `num_labels` is always 2."""

    config: ModelConfig
    num_labels: int = 2

    @nn.compact
    def __call__(self, hidden, deterministic, example_starts=None, *, attention_mask=None, segment_ids=None):
        return _dense(self.config, self.config.hidden_size, 2, ("embed",), ("labels",), "qa_outputs")(
            hidden).astype(jnp.float32)


class EuroBertForSequenceClassification(layers.EncoderWithHead):
    encoder_cls = Encoder
    head = SequenceHead


class EuroBertForTokenClassification(layers.EncoderWithHead):
    encoder_cls = Encoder
    head = TokenHead


class EuroBertForQuestionAnswering(layers.EncoderWithHead):
    encoder_cls = Encoder
    head = SpanHead
