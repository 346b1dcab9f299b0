"""The translation decoder and the encoder–decoder model (XLM's MT models; Lample & Conneau 2019).

Two decoder layouts, chosen by the decoder config's `family` (both post-LN unless `pre_layer_norm`):
- XLM (`TransformerModel(is_decoder=True)` of facebookresearch/XLM): `x = LN1(x + causal self-attention)`,
  `x = LN15(x + cross-attention(q=x, kv=encoder states, mask=source padding))`, `x = LN2(x + FFN(x))`, padded
  states zeroed; word + position + language embeddings, `layer_norm_emb`; output tied to the decoder's own word
  embeddings with a bias.
- XLM-R: Hugging Face `XLMRobertaForCausalLM` with `add_cross_attention=True` (the decoder of an
  `EncoderDecoderModel`): attention -> crossattention -> FFN, each post-LN; the XLM-R LM head (dense -> GELU ->
  LayerNorm -> tied projection + bias).
Positions restart at 0 on the decoder side. Encoder and decoder share no parameters.

Target-language signal of the XLM-R family. XLM tells a shared decoder which language to write only through
the language embedding added at every decoder position. XLM-R has no language embeddings; the two usual
choices are a language tag as the first decoder token (mBART, M2M-100, NLLB) or a new decoder language
embedding. We take the embedding, stored as XLM-R's token-type table widened to one row per target language
(the decoder's `type_vocab_size`; HF `token_type_ids` = target language id), because:
- XLM-R's vocabulary has no language tokens: tags would mean growing the tied embedding and the output bias
  (and the tokenizer), so the decoder would no longer match the pretrained MLM's shapes for initialisation;
- the token-type table is already a vector added at every position before the embedding LayerNorm, so no new
  tensor appears and the model stays exactly an HF `XLMRobertaForCausalLM` (parity and export need nothing
  more than `decoder_token_type_ids`);
- initialised from an MLM, every row starts as the MLM's single token-type row, so the decoder computes
  exactly the pretrained function until training separates the languages (a fresh table or new tag
  embeddings would perturb it);
- both families then take the same input: `tgt_langs` at every decoder position, XLM's convention, so data,
  training and decoding code have one path.

Parameter layout (stacked layers, leading axis L, as the encoder's):

    encoder/...                                                        # `xlm_jax.models.xlm.Encoder`
    decoder/embeddings/{word,position,token_type,lang}_embeddings, decoder/embeddings/layer_norm
    decoder/layers/{attention, attention_norm, cross_attention/{query,key,value,out}, cross_attention_norm,
                    mlp/{wi,wo}, mlp_norm}
    decoder/final_norm                                                 # pre-LN only
    decoder/lm_head/{bias | dense, layer_norm, bias}                   # projection tied to decoder words

Incremental decoding cache (a plain dict, batch on axis 1 of the layer-stacked arrays):

    self_k [L, B, H, Dh, max_len], self_v [L, B, H, max_len, Dh]   this sequence's keys / values, written one
                                                                    slot per new token
    cross_k [L, B, H, Dh, S], cross_v [L, B, H, S, Dh]              the source's keys / values, computed once
    memory_mask [B, S]                                              source padding
    index int32 []                                                  slots filled so far (= next token's position)

Keys are stored transposed and heads before positions: these are the operand layouts of the two attention
products (`attend_cached`), so that XLA's CPU backend reads the cache as it is instead of copying it into a
transposed layout for every layer at every step (it did: a fifth of a beam-search step, docs/translation.md).
The layer scan carries the whole self-attention cache and each layer updates its own slot in place
(`dynamic_update_slice`), so a step writes B x H x Dh values per layer instead of copying the cache; the
cross-attention cache is a scanned input (read only). The same scanned (and remat'd) layers serve training,
cache set-up and incremental steps: the mode follows from the inputs' structure.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.models.config import EncoderDecoderConfig, ModelConfig
from xlm_jax.models.xlm import (
    MLP, Embeddings, Encoder, LMHead, _dense, _dtype, attend, default_positions, layer_norm, layer_stack,
)

Array = jax.Array


def attend_cached(cfg: ModelConfig, q: Array, k: Array, v: Array, mask: Array) -> Array:
    """`attend` (explicit form, no dropout) on the cache's layouts: q [B, Tq, H, Dh], k [B, H, Dh, Tk], v
    [B, H, Tk, Dh], mask bool broadcastable to [B, 1, Tq, Tk] -> [B, Tq, H, Dh]."""
    scores = jnp.einsum("bqhd,bhdk->bhqk", q * cfg.head_dim**-0.5, k.astype(q.dtype)).astype(jnp.float32)
    probs = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(jnp.float32).min), axis=-1)
    return jnp.einsum("bhqk,bhkd->bqhd", probs.astype(q.dtype), v.astype(q.dtype))


class DecoderAttention(nn.Module):
    """Attention whose queries come from `x` and keys / values from `source` (self-attention: `source = x`;
    cross-attention: the encoder states) or from a cache. Its projections are named as the encoder's
    `SelfAttention` (query, key, value, out), so the decoder's self-attention loads from an MLM unchanged."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array | None, mask: Array | None = None, deterministic: bool = True, *,
                 source: Array | None = None, kv: tuple[Array, Array] | None = None,
                 cached: tuple[Array, Array] | None = None):
        """x [B, Tq, D] (None: only project `source`); source [B, Tk, D], or kv = (k, v) [B, Tk, H, Dh], or cached
        = (k [B, H, Dh, Tk], v [B, H, Tk, Dh]) in the cache's layouts; mask bool broadcastable to [B, 1, Tq, Tk].
        Returns (k, v) [B, Tk, H, Dh] when x is None, else the output [B, Tq, D]."""
        cfg = self.config
        d, heads = cfg.hidden_size, (cfg.num_heads, cfg.head_dim)
        if source is not None:
            kv = (_dense(cfg, d, heads, ("embed",), ("heads", "kv"), "key")(source),
                  _dense(cfg, d, heads, ("embed",), ("heads", "kv"), "value")(source))
        if x is None:
            return kv
        q = _dense(cfg, d, heads, ("embed",), ("heads", "kv"), "query")(x)
        if cached is not None:
            out = attend_cached(cfg, q, *cached, mask)
        else:
            out = attend(cfg, q, kv[0].astype(q.dtype), kv[1].astype(q.dtype), mask, deterministic)
        return _dense(cfg, heads, d, ("heads", "kv"), ("embed",), "out")(out)


class DecoderLayer(nn.Module):
    """One decoder block (scan-compatible: (carry, xs) -> (carry, ys)). Three uses, told apart by the inputs:

    - full forward: carry {x, mask, pad, memory, memory_mask}, xs None;
    - source set-up: carry {memory}, xs None -> ys {cross_k, cross_v} (this layer's cross-attention keys/values);
    - incremental step: carry {x, mask, pad, memory_mask, self_k, self_v, index}, xs {layer, cross_k, cross_v}:
      the new tokens' keys / values are written into the stacked cache at (layer, :, index)."""

    config: ModelConfig
    deterministic: bool = True

    @nn.compact
    def __call__(self, carry: dict, xs: dict | None):
        cfg, det = self.config, self.deterministic
        attention = DecoderAttention(cfg, name="attention")
        cross_attention = DecoderAttention(cfg, name="cross_attention")
        if "x" not in carry:
            k, v = cross_attention(None, source=carry["memory"])
            return carry, {"cross_k": k, "cross_v": v}
        mlp = MLP(cfg, name="mlp")
        attention_norm = layer_norm(cfg, "attention_norm")
        cross_norm = layer_norm(cfg, "cross_attention_norm")
        mlp_norm = layer_norm(cfg, "mlp_norm")
        drop = nn.Dropout(cfg.dropout)
        carry = dict(carry)

        def self_attend(h):
            if xs is None:
                return attention(h, carry["mask"], det, source=h)
            k_new, v_new = attention(None, source=h)  # [B, n, H, Dh]
            kv = []
            for name, new, axis in (("self_k", k_new.transpose(0, 2, 3, 1), 3),
                                    ("self_v", v_new.transpose(0, 2, 1, 3), 2)):
                stacked = carry[name]
                new = new.astype(stacked.dtype)
                own = jax.lax.dynamic_index_in_dim(stacked, xs["layer"], 0, keepdims=False)
                kv.append(jax.lax.dynamic_update_slice_in_dim(own, new, carry["index"], axis=axis))
                starts = [xs["layer"], 0, 0, 0, 0]
                starts[axis + 1] = carry["index"]
                carry[name] = jax.lax.dynamic_update_slice(stacked, new[None], starts)
            return attention(h, carry["mask"], det, cached=tuple(kv))

        def cross_attend(h):
            mask = carry["memory_mask"]
            if xs is None:
                return cross_attention(h, mask, det, source=carry["memory"])
            return cross_attention(h, mask, det, cached=(xs["cross_k"], xs["cross_v"]))

        x = carry["x"]
        for sublayer, norm in ((self_attend, attention_norm), (cross_attend, cross_norm)):
            if cfg.pre_layer_norm:
                x = x + drop(sublayer(norm(x)), deterministic=det)
            else:
                x = norm(x + drop(sublayer(x), deterministic=det))
        x = x + mlp(mlp_norm(x), det) if cfg.pre_layer_norm else mlp_norm(x + mlp(x, det))
        if cfg.zero_pad_states:
            x = x * carry["pad"]
        carry["x"] = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
        return carry, None


class Decoder(nn.Module):
    """Embeddings, the scanned decoder layers and the tied LM head of one decoder config."""

    config: ModelConfig

    def _stack(self, deterministic: bool):
        return layer_stack(DecoderLayer, self.config, deterministic)

    @nn.compact
    def __call__(
        self,
        tokens: Array | None,
        langs: Array | None,
        memory_mask: Array,
        *,
        tokens_mask: Array | None = None,
        memory: Array | None = None,
        cache: dict | None = None,
        deterministic: bool = True,
        predict_positions: Array | None = None,
    ):
        """Three calls (see the module docstring for the cache):

        - `tokens` [B, T], `tokens_mask` [B, T], `memory` [B, S, D], `memory_mask` [B, S]: the full causal forward
          -> logits [B, T, V] (compute dtype), or [B, P, V] at `predict_positions` [B, P] (hidden states gathered
          before the vocabulary projection);
        - `tokens` None, `memory`: the source part of the cache -> {cross_k, cross_v} in the cache's layouts;
        - `tokens` [B, n], `cache`: the next n tokens at positions index .. index + n - 1 -> (logits [B, n, V],
          the updated cache).
        `langs` int [B, T] (or [B, n]): the target language at every position (XLM: language embeddings; XLM-R:
        token-type rows when the decoder has more than one)."""
        cfg = self.config
        if tokens is None:
            _, cross = self._stack(True)({"memory": memory}, None)  # [L, B, S, H, Dh] each
            return {"cross_k": cross["cross_k"].transpose(0, 1, 3, 4, 2),
                    "cross_v": cross["cross_v"].transpose(0, 1, 3, 2, 4)}
        dt = _dtype(cfg.dtype)
        if cache is None:
            if tokens_mask is None:
                tokens_mask = (tokens != cfg.pad_token_id).astype(jnp.int32)
            positions = default_positions(cfg, tokens_mask)
            length = tokens.shape[1]
            mask = (tokens_mask > 0)[:, None, None, :] & jnp.tril(jnp.ones((length, length), bool))[None, None]
        else:
            n, max_len = tokens.shape[1], cache["self_k"].shape[-1]
            tokens_mask = jnp.ones_like(tokens, jnp.int32)
            steps = cache["index"] + jnp.arange(n, dtype=jnp.int32)
            positions = jnp.broadcast_to(steps[None], tokens.shape)
            mask = (jnp.arange(max_len)[None, :] <= steps[:, None])[None, None]
            memory_mask = cache["memory_mask"]
        token_types = langs if cfg.family != "xlm" and cfg.type_vocab_size > 1 and langs is not None else None
        embeddings = Embeddings(cfg, name="embeddings")
        x = embeddings(tokens, tokens_mask, positions, langs, deterministic, token_types=token_types)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
        carry = {"x": x, "mask": mask, "pad": tokens_mask[..., None].astype(dt),
                 "memory_mask": (memory_mask > 0)[:, None, None, :]}
        if cache is None:
            carry["memory"] = memory
            xs = None
        else:
            carry |= {"self_k": cache["self_k"], "self_v": cache["self_v"], "index": cache["index"]}
            xs = {"layer": jnp.arange(cfg.num_layers, dtype=jnp.int32), "cross_k": cache["cross_k"],
                  "cross_v": cache["cross_v"]}
        carry, _ = self._stack(deterministic)(carry, xs)
        x = carry["x"]
        if cfg.pre_layer_norm:
            x = layer_norm(cfg, "final_norm")(x)
        if predict_positions is not None:
            x = jnp.take_along_axis(x, predict_positions[..., None], axis=1)
        # The projection is tied to this decoder's own word embeddings (XLM `share_inout_emb`, HF tied weights).
        table = nn.unbox(self.variables["params"]["embeddings"]["word_embeddings"]["embedding"])
        logits = LMHead(cfg, name="lm_head")(x, table)
        if cache is None:
            return logits
        return logits, {**cache, "self_k": carry["self_k"], "self_v": carry["self_v"],
                        "index": cache["index"] + tokens.shape[1]}


class EncoderDecoder(nn.Module):
    """`xlm_jax.models.xlm.Encoder` + `Decoder`, no shared parameters. Params: {"encoder": ..., "decoder": ...}.

    Inputs as XLM's MT batches: src / src_mask / src_langs int [B, S] (source language at every position),
    tgt_in / tgt_mask / tgt_langs int [B, T] (the decoder reads y[:-1] with the target language at every
    position and predicts y[1:]). `src_langs` is read only by encoders with language embeddings."""

    config: EncoderDecoderConfig

    def setup(self):
        self.encoder = Encoder(self.config.encoder)
        self.decoder = Decoder(self.config.decoder)

    def encode(self, src, src_mask, src_langs=None, deterministic: bool = True) -> Array:
        """-> encoder states [B, S, D] (compute dtype)."""
        return self.encoder(src, src_mask, None, src_langs, deterministic=deterministic)

    def __call__(self, src, src_mask, src_langs, tgt_in, tgt_mask, tgt_langs, deterministic: bool = True) -> Array:
        """-> logits [B, T, V] at every target position. For inspection and tests; training uses `logits_at`."""
        memory = self.encode(src, src_mask, src_langs, deterministic)
        return self.decoder(tgt_in, tgt_langs, src_mask, tokens_mask=tgt_mask, memory=memory,
                            deterministic=deterministic)

    def logits_at(self, src, src_mask, src_langs, tgt_in, tgt_mask, tgt_langs, predict_positions,
                  deterministic: bool = True) -> Array:
        """-> logits [B, P, V] only at `predict_positions` int [B, P] of the target (as `XLMForMaskedLM.logits_at`:
        B x T x V logits never exist)."""
        memory = self.encode(src, src_mask, src_langs, deterministic)
        return self.decoder(tgt_in, tgt_langs, src_mask, tokens_mask=tgt_mask, memory=memory,
                            deterministic=deterministic, predict_positions=predict_positions)

    def init_cache(self, memory: Array, src_mask: Array, max_len: int) -> dict:
        """An empty incremental-decoding cache for `max_len` target tokens, the source keys / values computed once
        from `memory` [B, S, D] (layout in the module docstring)."""
        cfg = self.config.decoder
        cross = self.decoder(None, None, src_mask, memory=memory)
        shape = (cfg.num_layers, memory.shape[0], cfg.num_heads, cfg.head_dim, max_len)
        zeros = jnp.zeros(shape, _dtype(cfg.dtype))
        return {"self_k": zeros, "self_v": jnp.swapaxes(zeros, -1, -2), **cross,
                "memory_mask": src_mask.astype(jnp.int32),
                "index": jnp.zeros((), jnp.int32)}

    def decode_step(self, tokens: Array, langs: Array, cache: dict) -> tuple[Array, dict]:
        """The next tokens [B, n] (target language `langs` [B, n]) -> (logits [B, n, V], cache advanced by n)."""
        return self.decoder(tokens, langs, cache["memory_mask"], cache=cache)


def reorder_cache(cache: dict, rows: Array) -> dict:
    """The cache of rows `rows` int [B'] (beam search: each new beam's parent). Only the target side moves: the
    rows must come from the same source sentence, as beams do, so the source keys / values stay."""
    def take(x):  # [L, B, rest]: one contiguous block per row; "clip" (rows are in bounds) adds no masking select
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        return jnp.take(flat, rows, axis=1, mode="clip").reshape(x.shape[0], len(rows), *x.shape[2:])

    return {**cache, "self_k": take(cache["self_k"]), "self_v": take(cache["self_v"])}


def init_params(model: EncoderDecoder, rng: Array, src_len: int = 8, tgt_len: int = 8, batch: int = 1) -> dict:
    """Initialises parameters (boxed with their logical axes; `nn.unbox` gives plain arrays)."""
    src = jnp.zeros((batch, src_len), jnp.int32)
    tgt = jnp.zeros((batch, tgt_len), jnp.int32)
    # langs are passed so that language embeddings (created on first use) are initialised too.
    variables = model.init({"params": rng, "dropout": rng}, src, jnp.ones_like(src), src, tgt, jnp.ones_like(tgt), tgt)
    return variables["params"]


# ------------------------------------------------------------------------------- initialisation from an MLM

# Decoder sub-trees that exist in an MLM (`XLMForMaskedLM` params: {"encoder": ..., "lm_head": ...}) and are
# copied into the decoder: path in the decoder -> path in the MLM. Everything else of the decoder (cross-attention
# and its LayerNorm: XLM's `encoder_attn.i.*`, `layer_norm15.i.*`) keeps its fresh initialisation.
_SHARED = (
    (("embeddings",), ("encoder", "embeddings")),
    (("layers", "attention"), ("encoder", "layers", "attention")),
    (("layers", "attention_norm"), ("encoder", "layers", "attention_norm")),
    (("layers", "mlp"), ("encoder", "layers", "mlp")),
    (("layers", "mlp_norm"), ("encoder", "layers", "mlp_norm")),
    (("final_norm",), ("encoder", "final_norm")),
    (("lm_head",), ("lm_head",)),
)


def _leaves(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _leaves(value, prefix + (key,))
        else:
            out[prefix + (key,)] = value
    return out


def _put(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _copy_tensor(value: np.ndarray, want: tuple, name: str) -> np.ndarray:
    if value.shape == tuple(want):
        return value
    # XLM-R decoder: one token-type row per target language, each starting as the MLM's single row.
    if name.endswith("token_type_embeddings/embedding") and value.shape[0] == 1 and value.shape[1:] == want[1:]:
        return np.broadcast_to(value, want).copy()
    raise UserError(f"initialisation from the MLM: tensor {name} has shape {tuple(value.shape)} in the MLM but "
                    f"{tuple(want)} in the encoder-decoder (layers, hidden size, languages and vocabulary must "
                    "match)")


def init_from_mlm(mlm_params: dict, fresh_params: dict, *, decoder: bool = True) -> dict:
    """Encoder–decoder params initialised from a pretrained MLM, as XLM's `--reload_model 'mlm.pth,mlm.pth'`.

    mlm_params: `XLMForMaskedLM` params ({"encoder", "lm_head"}), boxed or not; fresh_params: `init_params` of the
    `EncoderDecoder` (they provide the decoder-only tensors and the boxing of the result). The encoder takes every
    MLM encoder tensor (strictly: each present, same shape; the MLM head is not part of the encoder); with
    `decoder`, the decoder takes everything it shares with the MLM (embeddings, positions, language embeddings,
    embedding LayerNorm, self-attention, LN1 / LN2, FFN, final LayerNorm of pre-LN models, the LM head with its
    output bias) while cross-attention and its LayerNorm keep their fresh values; `decoder=False` initialises
    the encoder only. An XLM-R decoder's token-type table (one row per target language) starts with every row
    equal to the MLM's single row. Raises UserError naming a missing tensor or a shape mismatch (both shapes).
    """
    mlm = _leaves(nn.unbox(mlm_params))
    fresh = nn.unbox(fresh_params)
    out = jax.tree_util.tree_map(np.asarray, fresh)
    for path, want in _leaves(out["encoder"], ("encoder",)).items():
        name = "/".join(path)
        if path not in mlm:
            raise UserError(f"initialisation from the MLM: tensor {name} is missing from the MLM")
        _put(out, path, _copy_tensor(np.asarray(mlm[path]), want.shape, name))
    if decoder:
        for ours, theirs in _SHARED:
            subtree = out["decoder"]
            for key in ours:
                subtree = subtree.get(key) if isinstance(subtree, dict) else None
            if subtree is None:
                continue
            for path, want in _leaves(subtree if isinstance(subtree, dict) else {"": subtree}).items():
                rel = tuple(p for p in path if p)
                name = "/".join(("decoder",) + ours + rel)
                source = theirs + rel
                if source not in mlm:
                    raise UserError(f"initialisation from the MLM: tensor {name} has no counterpart "
                                    f"{'/'.join(source)} in the MLM")
                _put(out, ("decoder",) + ours + rel, _copy_tensor(np.asarray(mlm[source]), want.shape, name))
    boxed = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
    return jax.tree_util.tree_map(
        lambda f, v: f.replace_boxed(jnp.asarray(v)) if boxed(f) else jnp.asarray(v), fresh_params, out,
        is_leaf=boxed)
