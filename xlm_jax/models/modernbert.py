"""ModernBERT / mmBERT in Flax linen, exact against Hugging Face `modeling_modernbert` (transformers 5).

    token embedding -> LayerNorm -> dropout
    L pre-norm layers: x + attention(norm(x)) (layer 0: no norm), then x + GeGLU(norm(x))
      attention: q, k, v (no bias), RoPE (theta `rope_theta` in global layers, `local_rope_theta` in local ones),
      global in layers i % global_attn_every_n == 0, elsewhere a sliding window |i - j| <= local_window // 2
    final LayerNorm
    MLM head: dense -> GELU -> LayerNorm -> projection tied to the embedding, with a bias

Parameter layout (layers stacked on a leading axis, as `xlm_jax.models.xlm`):

    encoder/embeddings/{word_embeddings/embedding, layer_norm}
    encoder/layers/{attention/{query,key,value,out}, attention_norm, mlp/{wi_0,wi_1,wo}, mlp_norm}
    encoder/final_norm
    lm_head/{dense, layer_norm, bias}                    (lm_head/decoder/kernel only when untied)
    classifier/{head/{dense, layer_norm}, out_proj | qa_outputs}

`attention_norm` of layer 0 exists in the stacked tree (so that every layer has one shape) but is never read:
HF's first layer normalises nothing before attention, and `xlm_jax.models.hf_mapping` neither reads nor writes it.
Local layers attend block by block (`layers.local_attend`): memory linear in the length, no T x T mask.
Initialisation follows `ModernBertPreTrainedModel._init_weights`: truncated normals (cutoff 2 std), std
`initializer_range` for embeddings and input projections, initializer_range / sqrt(2 L) for output projections and
head transforms, hidden_size^-0.5 for the classifier.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from xlm_jax.models import layers
from xlm_jax.models.config import ModelConfig
from xlm_jax.models.xlm import Embed, _dense, _dtype, activation_fn, layer_stack

Array = jax.Array


def _inits(cfg: ModelConfig) -> dict:
    std = cfg.initializer_range
    return {"in": layers.truncated_normal(std), "out": layers.truncated_normal(std / math.sqrt(2.0 * cfg.num_layers)),
            "embedding": layers.truncated_normal(std), "final_out": layers.truncated_normal(cfg.hidden_size**-0.5)}


class Embeddings(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids: Array, deterministic: bool) -> Array:
        cfg = self.config
        x = Embed(cfg.vocab_size, cfg.hidden_size, cfg.initializer_range, ("vocab", "embed"),
                  _dtype(cfg.param_dtype), _inits(cfg)["embedding"], name="word_embeddings")(input_ids, _dtype(cfg.dtype))
        x = layers.norm(cfg, "layer_norm")(x)
        return nn.Dropout(cfg.dropout)(x, deterministic=deterministic)


class Attention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, is_global: Array, context: dict, deterministic: bool) -> Array:
        """x [B, T, D]; is_global: bool scalar (traced: the layer index is scanned); context: positions, the dense
        mask and the groups of `layers.default_attention_inputs`. Returns [B, T, D]."""
        cfg = self.config
        init = _inits(cfg)
        d, kv = cfg.hidden_size, cfg.kv_heads
        proj = lambda name, heads: _dense(cfg, d, (heads, cfg.head_dim), ("embed",), ("heads", "kv"), name,
                                          use_bias=cfg.use_bias, kernel_init=init["in"])(x)
        q, k, v = proj("query", cfg.num_heads), proj("key", kv), proj("value", kv)
        rng = self.make_rng("dropout") if not deterministic and cfg.attention_dropout > 0 else None
        positions, mask = context["positions"], context["mask"]
        half = cfg.local_window // 2

        def global_attention(q, k, v):
            q, k = (layers.apply_rope(t, positions, cfg.rope_theta) for t in (q, k))
            return layers.attend(cfg, q, k, v, mask, rng)

        def local_attention(q, k, v):
            q, k = (layers.apply_rope(t, positions, cfg.local_rope_theta) for t in (q, k))
            if q.shape[1] > 3 * max(half, 1):
                return layers.local_attend(q, k, v, context["query_groups"], context["key_groups"], half,
                                           cfg.attention_dropout, rng)
            # Short rows: one block would hold the whole row anyway; a dense windowed mask is as cheap.
            return layers.attend(cfg, q, k, v, mask & layers.window_mask(q.shape[1], half), rng)

        if cfg.global_attn_every_n == 1:
            out = global_attention(q, k, v)
        else:
            # Each branch is rematerialised: differentiating a lax.cond keeps the residuals of both branches in
            # every layer of the scan (JAX joins them), so the local layers would store the global branch's T x T
            # probabilities too. Checkpointed, a branch keeps only its inputs, and the backward pass recomputes
            # the branch taken: local layers stay linear in T (experiments/long_context.py, docs/long_context.md).
            out = jax.lax.cond(is_global, jax.checkpoint(global_attention), jax.checkpoint(local_attention), q, k, v)
        out = _dense(cfg, (cfg.num_heads, cfg.head_dim), d, ("heads", "kv"), ("embed",), "out",
                     use_bias=cfg.use_bias, kernel_init=init["out"])(out)
        return nn.Dropout(cfg.attention_dropout)(out, deterministic=deterministic)


class Layer(nn.Module):
    """One pre-norm block; scan-compatible: (carry, layer index) -> (carry, y)."""

    config: ModelConfig
    deterministic: bool = True
    output_states: bool = False

    @nn.compact
    def __call__(self, carry, index):
        x, context = carry
        cfg = self.config
        init = _inits(cfg)
        normed = layers.norm(cfg, "attention_norm")(x)
        h = jnp.where(index == 0, x, normed)  # HF: the first layer's attn_norm is the identity
        x = x + Attention(cfg, name="attention")(h, index % cfg.global_attn_every_n == 0, context, self.deterministic)
        mlp = layers.GatedMLP(cfg, init["in"], init["out"], name="mlp")
        x = x + mlp(layers.norm(cfg, "mlp_norm")(x), self.deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
        return (x, context), (x if self.output_states else None)


class Encoder(nn.Module):
    """Embeddings, the layer stack and the final norm."""

    config: ModelConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None, positions: Array | None = None,
                 langs: Array | None = None, *, deterministic: bool = True, causal: bool = False,
                 output_all_layers: bool = False, segment_ids: Array | None = None):
        """input_ids, attention_mask, positions, segment_ids: int [B, T] (`langs` accepted and ignored: no language
        embeddings). Packed rows (`segment_ids` 1, 2, ... per example, 0 on padding): no attention across
        examples, positions restart per example. Returns float [B, T, D] (and the per-layer states [L, B, T, D]
        before the final norm with `output_all_layers`)."""
        cfg = self.config
        if causal:
            raise ValueError("ModernBERT is bidirectional: causal attention is not available")
        attention_mask, positions, mask, query_groups, key_groups = layers.default_attention_inputs(
            cfg, input_ids, attention_mask, positions, segment_ids)
        x = Embeddings(cfg, name="embeddings")(input_ids, deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
        context = {"positions": positions, "mask": mask, "query_groups": query_groups, "key_groups": key_groups}
        stack = layer_stack(Layer, cfg, deterministic, output_all_layers)
        (x, _), states = stack((x, context), jnp.arange(cfg.num_layers))
        x = layers.norm(cfg, "final_norm")(x)
        return (x, states) if output_all_layers else x


def _transform(cfg: ModelConfig, x: Array) -> Array:
    """dense (bias only with use_bias, HF `classifier_bias`) -> GELU -> LayerNorm (HF `ModernBertPredictionHead`);
    its modules belong to whichever module calls it (named dense, layer_norm)."""
    x = _dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed",), ("embed_out",), "dense", use_bias=cfg.use_bias,
               kernel_init=_inits(cfg)["out"])(x)
    return layers.norm(cfg, "layer_norm")(activation_fn("gelu")(x))


class PredictionHead(nn.Module):
    """The classification heads' transform, under their `head/` (HF `head` of the task classes)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return _transform(self.config, x)


class LMHead(nn.Module):
    """The transform (lm_head/dense, lm_head/layer_norm) -> projection tied to the embedding (HF `decoder`, tied by
    `tie_word_embeddings`) + bias (HF `decoder_bias`, always there in ModernBERT releases)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, word_embeddings: Array | None) -> Array:
        return layers.project(self, self.config, _transform(self.config, x), word_embeddings, with_bias=True)


class ModernBertForMaskedLM(layers.MaskedLM):
    """Encoder + MLM head. `__call__` gives hidden states; `mlm_logits` / `logits_at` the predictions."""

    encoder_cls = Encoder
    head_cls = LMHead


class SequenceHead(nn.Module):
    """pool ("first": HF `cls`, or "mean") -> PredictionHead -> dropout -> out_proj (with bias; HF `classifier`)."""

    config: ModelConfig
    num_labels: int

    @nn.compact
    def __call__(self, hidden, deterministic, example_starts=None, *, attention_mask=None, segment_ids=None):
        """hidden [B, T, D] -> float32 [B, C], or [B, E, C] with example_starts [B, E] (packed rows)."""
        cfg = self.config
        pooled = layers.pool(hidden, cfg.classifier_pooling, attention_mask, segment_ids, example_starts)
        x = nn.Dropout(cfg.dropout)(PredictionHead(cfg, name="head")(pooled), deterministic=deterministic)
        return _dense(cfg, cfg.hidden_size, self.num_labels, ("embed",), ("labels",), "out_proj",
                      kernel_init=_inits(cfg)["final_out"])(x).astype(jnp.float32)


def _token_logits(cfg: ModelConfig, hidden: Array, deterministic: bool, num_labels: int, out_name: str) -> Array:
    # Inside the calling head: head/{dense, layer_norm} -> dropout -> out_name (with bias).
    x = nn.Dropout(cfg.dropout)(PredictionHead(cfg, name="head")(hidden), deterministic=deterministic)
    return _dense(cfg, cfg.hidden_size, num_labels, ("embed",), ("labels",), out_name,
                  kernel_init=_inits(cfg)["final_out"])(x).astype(jnp.float32)


class TokenHead(nn.Module):
    """Per token: PredictionHead -> dropout -> out_proj (HF `ModernBertForTokenClassification`)."""

    config: ModelConfig
    num_labels: int

    @nn.compact
    def __call__(self, hidden, deterministic, example_starts=None, *, attention_mask=None, segment_ids=None):
        """hidden [B, T, D] -> float32 [B, T, C] (per token: packed rows need nothing more)."""
        return _token_logits(self.config, hidden, deterministic, self.num_labels, "out_proj")


class SpanHead(nn.Module):
    """Extractive QA as HF `ModernBertForQuestionAnswering`: PredictionHead -> dropout -> qa_outputs, float32
    [B, T, 2] (start, end). `num_labels` is always 2."""

    config: ModelConfig
    num_labels: int = 2

    @nn.compact
    def __call__(self, hidden, deterministic, example_starts=None, *, attention_mask=None, segment_ids=None):
        return _token_logits(self.config, hidden, deterministic, 2, "qa_outputs")


class ModernBertForSequenceClassification(layers.EncoderWithHead):
    encoder_cls = Encoder
    head = SequenceHead


class ModernBertForTokenClassification(layers.EncoderWithHead):
    encoder_cls = Encoder
    head = TokenHead


class ModernBertForQuestionAnswering(layers.EncoderWithHead):
    encoder_cls = Encoder
    head = SpanHead
