"""The XLM / XLM-R encoder family in Flax linen.

One set of modules covers, by `ModelConfig`:
- XLM: token + position (learned or frozen sinusoidal) + language embeddings, post-LN, padded states zeroed;
- XLM-R base / large: post-LN, pad-aware positions from padding_idx + 1, a 1-row token-type table;
- XLM-R XL / XXL: pre-LN with a final LayerNorm and no embedding LayerNorm.

Parameter layout (stacked layers, whether or not the layers are scanned):

    encoder/embeddings/{word,position,token_type,lang}_embeddings/embedding, encoder/embeddings/layer_norm
    encoder/layers/{attention/{query,key,value,out}, attention_norm, mlp/{wi,wo}, mlp_norm}   # leading axis L
    encoder/final_norm                                                                         # pre-LN only
    lm_head/{dense, layer_norm, bias}                                                         # projection tied

Packed rows (several examples per row, `segment_ids` 1, 2, ... and 0 on padding) get a block-diagonal attention
mask and per-example positions (`segment_mask`, `segment_positions`; docs/attention.md says which attention
kernel runs where).

Every parameter carries logical axis names (vocab, embed, heads, kv, mlp, layers, ...) so that the trainer can
shard by a rule table without touching this file.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xlm_jax.models.config import ModelConfig

Array = jax.Array


def _dtype(name: str) -> Any:
    return jnp.dtype(name)


def _init(std: float, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(std), axes)


def _zeros(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def sinusoidal_table(n_pos: int, dim: int) -> np.ndarray:
    """XLM's frozen position table: sin on even channels, cos on odd ones (same formula as XLM / HF)."""
    j = np.arange(dim)
    angles = np.arange(n_pos)[:, None] / np.power(10000.0, 2 * (j // 2) / dim)[None, :]
    table = np.empty((n_pos, dim), np.float32)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table


def gelu(x: Array) -> Array:
    """Exact GELU, x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))) (Hendrycks & Gimpel 2016), same shape and dtype
    as x: the formula of PyTorch's `F.gelu` / HF's "gelu". The same function as `jax.nn.gelu(approximate=False)`
    (which XLA evaluates through erfc) to ~5e-7 in float32; this erf form costs about half as much on CPU (forward
    1.8 vs 3.6 ms, gradient 2.9 vs 3.8 ms on [2048, 1024], one core; docs/benchmarks.md, "CPU levers")."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * np.asarray(0.7071067811865476, x.dtype)))


def activation_fn(name: str):
    """"gelu" (exact, erf: `gelu`), "relu" or "silu" (EuroBERT's SwiGLU)."""
    return {"gelu": gelu, "relu": jax.nn.relu, "silu": jax.nn.silu}[name]


def layer_norm(cfg: ModelConfig, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm with logically named parameters; Flax computes its statistics in float32."""
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps,
        dtype=_dtype(cfg.dtype),
        param_dtype=_dtype(cfg.param_dtype),
        scale_init=_ones(("norm",)),
        bias_init=_zeros(("norm",)),
        name=name,
    )


class Embed(nn.Module):
    """A lookup table with logically named axes."""

    num_embeddings: int
    features: int
    std: float
    axes: tuple[str, str]
    param_dtype: Any = jnp.float32
    embedding_init: Any = None  # an initializer (key, shape, dtype) -> array; None: normal(std)

    def setup(self):
        init = (_init(self.std, self.axes) if self.embedding_init is None
                else nn.with_logical_partitioning(self.embedding_init, self.axes))
        self.embedding = self.param("embedding", init, (self.num_embeddings, self.features), self.param_dtype)

    def __call__(self, ids: Array, dtype: Any) -> Array:
        return jnp.take(self.embedding, ids, axis=0).astype(dtype)


def default_positions(config: ModelConfig, attention_mask: Array) -> Array:
    """0-based logical positions: XLM counts every slot, XLM-R counts only real tokens (as HF / fairseq)."""
    if config.family == "xlmr":
        return jnp.maximum(jnp.cumsum(attention_mask, axis=1) - 1, 0).astype(jnp.int32)
    return jnp.broadcast_to(jnp.arange(attention_mask.shape[1], dtype=jnp.int32), attention_mask.shape)


def segment_positions(segment_ids: Array) -> Array:
    """0-based positions that restart at the first token of every segment: int32 [B, T] from segment_ids [B, T].

    A segment is a run of equal ids; packed rows give each example its own id (padding 0), so every packed
    example is numbered exactly as it would be alone in its row (XLM counts slots, XLM-R real tokens: the same
    numbers for an example's real tokens, which come first)."""
    length = segment_ids.shape[1]
    index = jnp.arange(length, dtype=jnp.int32)[None, :]
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
    first = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    return (index - first).astype(jnp.int32)


def segment_mask(segment_ids: Array) -> Array:
    """Block-diagonal attention mask of packed rows: bool [B, 1, T, T], True where query and key share a segment.

    Padding (segment 0) attends only to padding, so no query row is empty (a softmax over nothing) and no real
    token sees a pad or another example; the padded outputs are never read."""
    return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]


def position_rows(config: ModelConfig, positions: Array, attention_mask: Array) -> Array:
    """Rows of the position table. XLM-R gives padding the padding_idx row and real tokens padding_idx + 1 + p."""
    if config.family == "xlmr":
        return jnp.where(attention_mask > 0, positions + config.position_offset, config.pad_token_id)
    return positions


class Embeddings(nn.Module):
    config: ModelConfig

    def setup(self):
        cfg = self.config
        pdt = _dtype(cfg.param_dtype)
        std = cfg.embedding_init_std
        self.word_embeddings = Embed(cfg.vocab_size, cfg.hidden_size, std, ("vocab", "embed"), pdt)
        if not cfg.sinusoidal_positions:
            self.position_embeddings = Embed(cfg.num_position_rows, cfg.hidden_size, std, ("pos", "embed"), pdt)
        if cfg.type_vocab_size:
            self.token_type_embeddings = Embed(cfg.type_vocab_size, cfg.hidden_size, std, ("types", "embed"), pdt)
        if cfg.has_lang_embeddings:
            self.lang_embeddings = Embed(cfg.n_langs, cfg.hidden_size, std, ("langs", "embed"), pdt)
        if cfg.embedding_layer_norm:
            self.layer_norm = layer_norm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, input_ids, attention_mask, positions, langs, deterministic: bool,
                 token_types: Array | None = None) -> Array:
        """int [B, T] inputs -> [B, T, D]. `token_types` (int [B, T], default all 0) picks rows of the token-type
        table: the XLM-R-family decoder passes the target language there (`xlm_jax.models.decoder`)."""
        cfg = self.config
        dt = _dtype(cfg.dtype)
        x = self.word_embeddings(input_ids, dt)
        rows = position_rows(cfg, positions, attention_mask)
        if cfg.sinusoidal_positions:
            x = x + jnp.take(jnp.asarray(sinusoidal_table(cfg.num_position_rows, cfg.hidden_size)), rows, axis=0).astype(dt)
        else:
            x = x + self.position_embeddings(rows, dt)
        if cfg.type_vocab_size:
            x = x + self.token_type_embeddings(jnp.zeros_like(input_ids) if token_types is None else token_types, dt)
        if cfg.has_lang_embeddings and langs is not None:
            x = x + self.lang_embeddings(langs, dt)
        if cfg.embedding_layer_norm:
            x = self.layer_norm(x)
        x = self.dropout(x, deterministic=deterministic)
        if cfg.zero_pad_states:
            x = x * attention_mask[..., None].astype(dt)
        return x


class Linear(nn.Module):
    """A dense layer whose kernel is created in its real multi-axis shape ([D, H, Dh] for q/k/v, [H, Dh, D]
    for the attention output), so that its logical axis names always match its rank. (`nn.DenseGeneral`
    initialises a flattened kernel, which breaks logical partitioning under `nn.logical_axis_rules`.)"""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_axes: tuple[str, ...]
    out_axes: tuple[str, ...]
    std: float
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    use_bias: bool = True
    kernel_init: Any = None  # an initializer (key, shape, dtype) -> array; None: normal(std)

    @nn.compact
    def __call__(self, x: Array | None) -> Array:
        """x [..., *in_shape] -> [..., *out_shape]; x None -> (kernel, bias or None) as stored, for a caller that
        applies several layers' kernels in one product (`SelfAttention`)."""
        axes = self.in_axes + self.out_axes
        init = _init(self.std, axes) if self.kernel_init is None else nn.with_logical_partitioning(self.kernel_init, axes)
        kernel = self.param("kernel", init, self.in_shape + self.out_shape, self.param_dtype)
        if x is None:
            bias = self.param("bias", _zeros(self.out_axes), self.out_shape, self.param_dtype) if self.use_bias else None
            return kernel, bias
        n = len(self.in_shape)
        contract = (tuple(range(x.ndim - n, x.ndim)), tuple(range(n)))
        y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
        if not self.use_bias:
            return y
        bias = self.param("bias", _zeros(self.out_axes), self.out_shape, self.param_dtype)
        return y + bias.astype(self.dtype)


def _dense(cfg: ModelConfig, in_shape, out_shape, in_axes: tuple, out_axes: tuple, name: str, *,
           use_bias: bool = True, kernel_init: Any = None) -> Linear:
    as_tuple = lambda s: tuple(s) if isinstance(s, (tuple, list)) else (s,)
    return Linear(
        as_tuple(in_shape), as_tuple(out_shape), in_axes, out_axes, cfg.initializer_range,
        _dtype(cfg.dtype), _dtype(cfg.param_dtype), use_bias, kernel_init, name=name,
    )


class SelfAttention(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
        """x: [B, T, D]; mask: bool [B, 1, T or 1, T], True where attention is allowed."""
        cfg = self.config
        d, heads = cfg.hidden_size, (cfg.num_heads, cfg.head_dim)
        dt = _dtype(cfg.dtype)
        # One product for q, k and v (a [D, 3, H, Dh] kernel stacked from the three stored ones, so parameters
        # and checkpoints keep their own query / key / value; the stacked axis is unsharded, so a mesh that
        # shards heads needs no gather): one larger GEMM instead of three (docs/benchmarks.md, "CPU levers").
        stored = [_dense(cfg, d, heads, ("embed",), ("heads", "kv"), n)(None) for n in ("query", "key", "value")]
        kernel = jnp.stack([kernel.astype(dt) for kernel, _ in stored], axis=1)
        qkv = jax.lax.dot_general(x.astype(dt), kernel, (((x.ndim - 1,), (0,)), ((), ())))  # [B, T, 3, H, Dh]
        qkv = qkv + jnp.stack([bias.astype(dt) for _, bias in stored])
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        out = attend(cfg, q, k, v, mask, deterministic)
        return _dense(cfg, heads, d, ("heads", "kv"), ("embed",), "out")(out)


def attend(cfg: ModelConfig, q: Array, k: Array, v: Array, mask: Array, deterministic: bool) -> Array:
    """Scaled dot-product attention: q [B, Tq, H, Dh], k / v [B, Tk, H, Dh], mask bool broadcastable to
    [B, 1, Tq, Tk] (True = attend) -> [B, Tq, H, Dh]. Call it inside a compact module: attention dropout is a
    submodule of the caller (the encoder's self-attention, the decoder's self- and cross-attention)."""
    use_dropout = not deterministic and cfg.attention_dropout > 0
    if use_dropout or cfg.attention_impl == "xla":
        # Explicit form: attention dropout needs the probabilities; softmax in float32 as XLM / fairseq.
        scores = jnp.einsum("bqhd,bkhd->bhqk", q * cfg.head_dim**-0.5, k).astype(jnp.float32)
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        probs = nn.Dropout(cfg.attention_dropout)(probs, deterministic=deterministic)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    impl = None if cfg.attention_impl == "auto" else cfg.attention_impl
    return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=cfg.head_dim**-0.5, implementation=impl)


class MLP(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, deterministic: bool) -> Array:
        cfg = self.config
        h = _dense(cfg, cfg.hidden_size, cfg.intermediate_size, ("embed",), ("mlp",), "wi")(x)
        h = activation_fn(cfg.activation)(h)
        h = _dense(cfg, cfg.intermediate_size, cfg.hidden_size, ("mlp",), ("embed",), "wo")(h)
        return nn.Dropout(cfg.dropout)(h, deterministic=deterministic)


class Layer(nn.Module):
    """One transformer block, post-LN (XLM, XLM-R) or pre-LN (XLM-R XL). Scan-compatible: (carry, _) -> (carry, y)."""

    config: ModelConfig
    deterministic: bool = True
    output_states: bool = False

    @nn.compact
    def __call__(self, carry, _):
        x, mask, pad = carry
        cfg = self.config
        attention = SelfAttention(cfg, name="attention")
        mlp = MLP(cfg, name="mlp")
        attention_norm, mlp_norm = layer_norm(cfg, "attention_norm"), layer_norm(cfg, "mlp_norm")
        drop = nn.Dropout(cfg.dropout)
        if cfg.pre_layer_norm:
            x = x + drop(attention(attention_norm(x), mask, self.deterministic), deterministic=self.deterministic)
            x = x + mlp(mlp_norm(x), self.deterministic)
        else:
            x = attention_norm(x + drop(attention(x, mask, self.deterministic), deterministic=self.deterministic))
            x = mlp_norm(x + mlp(x, self.deterministic))
        if cfg.zero_pad_states:
            x = x * pad
        x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
        return (x, mask, pad), (x if self.output_states else None)


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def layer_stack(layer_cls: type[nn.Module], cfg: ModelConfig, *layer_args, name: str = "layers"):
    """`layer_cls(cfg, *layer_args)` scanned over cfg.num_layers: params stacked on a leading `layers` axis, remat
    by cfg.remat_policy, unrolled when cfg.scan_layers is False. Every family's encoder and the decoder use it."""
    if cfg.remat_policy != "none":
        layer_cls = nn.remat(layer_cls, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    stack = nn.scan(
        layer_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        length=cfg.num_layers,
        unroll=1 if cfg.scan_layers else cfg.num_layers,
        metadata_params={nn.PARTITION_NAME: "layers"},
    )
    return stack(cfg, *layer_args, name=name)


class Encoder(nn.Module):
    """Embeddings and the layer stack; returns the last hidden states (and every layer's when asked)."""

    config: ModelConfig

    def _stack(self, deterministic: bool, output_states: bool):
        return layer_stack(Layer, self.config, deterministic, output_states)

    @nn.compact
    def __call__(
        self,
        input_ids: Array,
        attention_mask: Array | None = None,
        positions: Array | None = None,
        langs: Array | None = None,
        *,
        deterministic: bool = True,
        causal: bool = False,
        output_all_layers: bool = False,
        segment_ids: Array | None = None,
    ):
        """input_ids, attention_mask, positions, langs, segment_ids: int [B, T]. `segment_ids` (packed rows: 1, 2,
        ... per example, 0 on padding) restricts attention to each example's own tokens (`segment_mask`) and,
        when `positions` is None, restarts positions per example. Returns float [B, T, D] (compute dtype)."""
        cfg = self.config
        if attention_mask is None:
            attention_mask = (input_ids != cfg.pad_token_id).astype(jnp.int32)
        if positions is None:
            positions = default_positions(cfg, attention_mask) if segment_ids is None else segment_positions(segment_ids)
        x = Embeddings(cfg, name="embeddings")(input_ids, attention_mask, positions, langs, deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed_act"))
        mask = (attention_mask > 0)[:, None, None, :] if segment_ids is None else segment_mask(segment_ids)
        if causal:
            length = input_ids.shape[1]
            mask = mask & jnp.tril(jnp.ones((length, length), bool))[None, None]
        pad = attention_mask[..., None].astype(x.dtype)
        (x, _, _), states = self._stack(deterministic, output_all_layers)((x, mask, pad), None)
        if cfg.pre_layer_norm:
            x = layer_norm(cfg, "final_norm")(x)
        if output_all_layers:
            # states[i] is the output of layer i; the final LayerNorm of pre-LN models belongs to the last one.
            return x, states
        return x


class LMHead(nn.Module):
    """MLM / CLM head. XLM: tied projection + bias. XLM-R: dense -> GELU -> LayerNorm -> tied projection + bias."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, word_embeddings: Array) -> Array:
        cfg = self.config
        if cfg.lm_head_transform:
            x = _dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed",), ("embed_out",), "dense")(x)
            x = activation_fn("gelu")(x)
            x = layer_norm(cfg, "layer_norm")(x)
        bias = self.param("bias", _zeros(("vocab",)), (cfg.vocab_size,), _dtype(cfg.param_dtype))
        return jnp.einsum("...d,vd->...v", x, word_embeddings.astype(x.dtype)) + bias.astype(x.dtype)


class XLMForMaskedLM(nn.Module):
    """Encoder + tied LM head. `__call__` gives hidden states; `mlm_logits` / `logits_at` the predictions."""

    config: ModelConfig

    def setup(self):
        self.encoder = Encoder(self.config)
        self.lm_head = LMHead(self.config)

    def __call__(self, input_ids, attention_mask=None, positions=None, langs=None, **kwargs):
        return self.encoder(input_ids, attention_mask, positions, langs, **kwargs)

    def project(self, hidden: Array) -> Array:
        # The projection is tied to the token embedding (XLM `share_inout_emb`, XLM-R `lm_head.decoder`).
        table = self.encoder.variables["params"]["embeddings"]["word_embeddings"]["embedding"]
        return self.lm_head(hidden, nn.unbox(table))

    def mlm_logits(self, input_ids, attention_mask=None, positions=None, langs=None, **kwargs) -> Array:
        """Logits at every position: [B, T, V]. For inspection; training uses `logits_at`."""
        return self.project(self(input_ids, attention_mask, positions, langs, **kwargs))

    def logits_at(self, input_ids, attention_mask, positions, langs, predict_positions, **kwargs) -> Array:
        """Logits only at `predict_positions` [B, P]: the hidden states are gathered before the vocabulary
        projection, so B x T x V logits never exist."""
        hidden = self(input_ids, attention_mask, positions, langs, **kwargs)
        picked = jnp.take_along_axis(hidden, predict_positions[..., None], axis=1)
        return self.project(picked)

    def head_inputs_at(self, input_ids, attention_mask, positions, langs, predict_positions, **kwargs):
        """What `logits_at` projects, unprojected, for a loss that does the projection itself in vocabulary chunks
        (`xlm_jax.training.objectives.chunked_softmax_cross_entropy`): the states at `predict_positions` [B, P]
        after the LM head's transform (XLM-R: dense -> GELU -> LayerNorm; XLM: none), [B, P, D] in the compute
        dtype; the tied table [V, D] and the head's bias [V], as stored. `logits_at` equals
        `hidden @ table.T + bias` in the compute dtype."""
        cfg = self.config
        hidden = self(input_ids, attention_mask, positions, langs, **kwargs)
        x = jnp.take_along_axis(hidden, predict_positions[..., None], axis=1)
        table = nn.unbox(self.encoder.variables["params"]["embeddings"]["word_embeddings"]["embedding"])
        head = nn.unbox(self.lm_head.variables["params"])
        if cfg.lm_head_transform:
            # `LMHead`'s modules on its parameters, without its projection (parent=None: unbound, applied here).
            d = cfg.hidden_size
            dense = Linear((d,), (d,), ("embed",), ("embed_out",), cfg.initializer_range, _dtype(cfg.dtype),
                           _dtype(cfg.param_dtype), parent=None)
            norm = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=_dtype(cfg.dtype),
                                param_dtype=_dtype(cfg.param_dtype), parent=None)
            x = dense.apply({"params": head["dense"]}, x)
            x = activation_fn("gelu")(x)
            x = norm.apply({"params": head["layer_norm"]}, x)
        return x, table, head["bias"]


class SequenceClassificationHead(nn.Module):
    """XLM: first token -> dropout -> linear. XLM-R: <s> -> dropout -> dense -> tanh -> dropout -> out_proj."""

    config: ModelConfig
    num_labels: int

    @nn.compact
    def __call__(self, hidden: Array, deterministic: bool, example_starts: Array | None = None) -> Array:
        """hidden [B, T, D] -> logits float32 [B, C] from each row's first token, or with `example_starts`
        (int [B, E], packed rows: the first token of each example) [B, E, C], one per packed example."""
        cfg = self.config
        first = hidden[:, 0] if example_starts is None else jnp.take_along_axis(
            hidden, example_starts[..., None].astype(jnp.int32), axis=1)
        x = nn.Dropout(cfg.dropout)(first, deterministic=deterministic)
        if cfg.family == "xlmr":
            x = jnp.tanh(_dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed",), ("embed_out",), "dense")(x))
            x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        return _dense(cfg, cfg.hidden_size, self.num_labels, ("embed",), ("labels",), "out_proj")(x).astype(jnp.float32)


class TokenClassificationHead(nn.Module):
    config: ModelConfig
    num_labels: int

    @nn.compact
    def __call__(self, hidden: Array, deterministic: bool, example_starts: Array | None = None) -> Array:
        """hidden [B, T, D] -> logits float32 [B, T, C]; every token's own state, so packed rows need nothing more
        (`example_starts` is accepted for a uniform call and unused)."""
        x = nn.Dropout(self.config.dropout)(hidden, deterministic=deterministic)
        return _dense(self.config, self.config.hidden_size, self.num_labels, ("embed",), ("labels",), "out_proj")(
            x).astype(jnp.float32)


class SpanHead(nn.Module):
    """Extractive QA: a linear layer from each final state to (start, end) logits -> float32 [B, T, 2], as
    BERT's and Hugging Face's *ForQuestionAnswering heads (no dropout, no pooling). `num_labels` is always 2."""

    config: ModelConfig
    num_labels: int = 2

    @nn.compact
    def __call__(self, hidden: Array, deterministic: bool, example_starts: Array | None = None) -> Array:
        """hidden [B, T, D] -> float32 [B, T, 2]; per token, so `example_starts` is accepted for a uniform call and
        unused (QA windows are not packed: each is one row)."""
        return _dense(self.config, self.config.hidden_size, 2, ("embed",), ("labels",), "qa_outputs")(
            hidden).astype(jnp.float32)


class _EncoderWithHead(nn.Module):
    """Encoder + a task head; the subclasses name the head. Params: {"encoder": ..., "classifier": ...}."""

    config: ModelConfig
    num_labels: int
    head: ClassVar[type[nn.Module]]

    def setup(self):
        self.encoder = Encoder(self.config)
        self.classifier = self.head(self.config, self.num_labels)

    def __call__(self, input_ids, attention_mask=None, positions=None, langs=None, *, deterministic=True,
                 segment_ids=None, example_starts=None):
        """Unpacked: [B, T] inputs -> [B, C] (sequence) or [B, T, C] (token) logits. Packed rows: `segment_ids`
        [B, T] and, for sequence heads, `example_starts` [B, E] -> [B, E, C] (see `xlm_jax.data.packing`)."""
        hidden = self.encoder(input_ids, attention_mask, positions, langs, deterministic=deterministic,
                              segment_ids=segment_ids)
        return self.classifier(hidden, deterministic, example_starts)


class XLMForSequenceClassification(_EncoderWithHead):
    head = SequenceClassificationHead


class XLMForTokenClassification(_EncoderWithHead):
    head = TokenClassificationHead


class XLMForQuestionAnswering(_EncoderWithHead):
    head = SpanHead


def init_params(model: nn.Module, rng: Array, seq_len: int = 8, batch: int = 1) -> dict:
    """Initialises parameters (boxed with their logical axes). `nn.unbox` gives plain arrays."""
    ids = jnp.zeros((batch, seq_len), jnp.int32)
    # Every family's masked LM has `mlm_logits` (the LM head is only created when it runs).
    method = model.mlm_logits if hasattr(type(model), "mlm_logits") else None
    # langs are passed so that language embeddings (created on first use) are initialised too.
    variables = model.init({"params": rng, "dropout": rng}, ids, jnp.ones_like(ids), None, ids, method=method)
    return variables["params"]
