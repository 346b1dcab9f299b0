"""Model configuration: one dataclass covers XLM, XLM-R (post-LN), XLM-R XL/XXL (pre-LN) and the RoPE encoders
that succeed them, ModernBERT / mmBERT and EuroBERT (`family` "modernbert" / "eurobert").

Every published size has a named configuration (`get_model_config("xlmr_base")`); the tiny ones are for tests
and the embedded default run.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Literal

from xlm_jax.core.errors import UserError, check_fields, check_range, unknown_name

Family = Literal["xlm", "xlmr", "modernbert", "eurobert"]
ROPE_FAMILIES = ("modernbert", "eurobert")  # RoPE, pre-norm, no position table

# Special ids of the two dictionaries. Our own vocabularies always use the XLM-R (fairseq) layout; the XLM
# layout only appears in checkpoints converted from the original XLM models.
XLMR_SPECIALS = dict(bos_token_id=0, pad_token_id=1, eos_token_id=2, unk_token_id=3)
XLM_SPECIALS = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2, unk_token_id=3, mask_token_id=5)

XNLI15_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")

# Compute / parameter dtypes. float16 is left out on purpose: without loss scaling its gradients underflow, and
# XLA's CPU backend cannot compile parts of the model in it.
DTYPES = ("float32", "bfloat16")


def check_dtype(key: str, value: str) -> str:
    """`value` if it is one of DTYPES, else UserError naming key, value and the valid dtypes."""
    if value not in DTYPES:
        raise UserError(f"{key}={value!r}: valid dtypes are {', '.join(DTYPES)} (float16 is not supported: "
                        "it would need loss scaling)")
    return value


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and numerics of one encoder.

    `family` decides the two things that differ between XLM and XLM-R beyond plain hyperparameters: how
    positions are computed (XLM-R offsets them past the padding row and gives padding its own row) and the
    shape of the classification head. "modernbert" and "eurobert" select other modules altogether
    (`xlm_jax.models.families`); of the XLM fields they read the sizes, `activation`, `layer_norm_eps`, the
    dropouts, the special ids and the numerics, and the block of fields at the end is theirs.
    """

    family: Family = "xlmr"
    vocab_size: int = 250002
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 512  # usable positions; the table has max_positions + position_offset rows
    activation: Literal["gelu", "relu", "silu"] = "gelu"  # exact (erf) GELU, as in both papers' code; EuroBERT SiLU
    layer_norm_eps: float = 1e-5
    pre_layer_norm: bool = False  # XLM-R XL / XXL
    embedding_layer_norm: bool = True  # False for the pre-LN models
    type_vocab_size: int = 1  # XLM-R carries a 1-row token-type table; XLM has none (0)
    n_langs: int = 1
    use_lang_emb: bool = False
    sinusoidal_positions: bool = False  # XLM option: frozen sin/cos table, not a parameter
    lm_head_transform: bool = True  # XLM-R: dense -> GELU -> LayerNorm before the tied projection
    zero_pad_states: bool = False  # XLM zeroes padded positions after the embeddings and every block
    dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02  # XLM-R; XLM embeddings use D^-0.5 (see `embedding_init_std`)
    bos_token_id: int = 0
    pad_token_id: int = 1
    eos_token_id: int = 2
    unk_token_id: int = 3
    mask_token_id: int = -1  # -1: the last id (XLM-R's layout)
    langs: tuple[str, ...] = ()  # language codes in lang-id order (sorted, as XLM's lang2id)
    # Numerics and memory: not part of the architecture, so they never make two checkpoints incompatible.
    dtype: str = "float32"  # compute dtype (bfloat16 for training on accelerators)
    param_dtype: str = "float32"
    scan_layers: bool = True  # nn.scan over layers (fast compile); False unrolls the same stacked params
    remat_policy: Literal["none", "full", "dots", "dots_no_batch"] = "none"
    attention_impl: Literal["auto", "xla", "cudnn"] = "auto"
    # MLM / TLM loss: 0 projects the predicted positions onto the whole vocabulary at once ([P, V] logits); N > 0
    # computes the loss N vocabulary columns at a time (memory O(P * N), objectives.chunked_softmax_cross_entropy).
    lm_head_chunk: int = 0
    # --- ModernBERT / mmBERT and EuroBERT (family "modernbert" / "eurobert"): RoPE, pre-norm, gated MLP (GeGLU /
    # SwiGLU from `activation`). The XLM families keep the defaults (checked in __post_init__).
    num_kv_heads: int = 0  # grouped-query attention (EuroBERT); 0: one key/value head per query head
    rope_theta: float = 10000.0  # RoPE base of the global-attention layers (every EuroBERT layer)
    local_rope_theta: float = 10000.0  # RoPE base of ModernBERT's sliding-window layers
    global_attn_every_n: int = 1  # ModernBERT: layer i attends globally when i % n == 0, else in a window
    local_window: int = 128  # total window (HF `local_attention`): a token sees keys with |i - j| <= window // 2
    use_bias: bool = True  # biases in attention, MLP, norms and the head transform (HF attention/mlp/norm_bias)
    tie_word_embeddings: bool = True  # EuroBERT's releases have an untied LM projection
    classifier_pooling: Literal["first", "mean", "late"] = "first"  # sequence head: first token, mean of states,
    # or (EuroBERT "late") the mean of per-token logits

    def __post_init__(self):
        """Every field's type and range (UserError naming `model.<field>`, the value and what is valid), so that
        a bad value is refused when the config is built, never deep inside the model."""
        check_fields(self, "model.")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions",
                     "n_langs"):
            check_range(f"model.{name}", getattr(self, name), 1, integer=True)
        if self.hidden_size % self.num_heads:
            raise UserError(f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads="
                            f"{self.num_heads}: the head count must divide the hidden size")
        check_range("model.type_vocab_size", self.type_vocab_size, 0, integer=True)
        check_range("model.lm_head_chunk", self.lm_head_chunk, 1, integer=True, also={0: "the whole vocabulary"})
        check_range("model.layer_norm_eps", self.layer_norm_eps, 0, low_open=True)
        check_range("model.initializer_range", self.initializer_range, 0, low_open=True)
        for name in ("dropout", "attention_dropout"):
            check_range(f"model.{name}", getattr(self, name), 0, 1, high_open=True)
        for name in ("bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id"):
            check_range(f"model.{name}", getattr(self, name), 0, self.vocab_size - 1, integer=True)
        check_range("model.mask_token_id", self.mask_token_id, 0, self.vocab_size - 1, integer=True,
                    also={-1: "the last id"})
        if self.langs and len(self.langs) != self.n_langs:
            raise UserError(f"model.langs has {len(self.langs)} codes but model.n_langs={self.n_langs}")
        if len(set(self.langs)) != len(self.langs):
            raise UserError(f"model.langs={list(self.langs)}: a language is listed twice")
        check_dtype("model.dtype", self.dtype)
        check_dtype("model.param_dtype", self.param_dtype)
        self._check_rope_fields()

    def _check_rope_fields(self):
        """The ModernBERT / EuroBERT fields: ranges, and defaults on the XLM families (which would ignore them)."""
        check_range("model.num_kv_heads", self.num_kv_heads, 0, integer=True)
        if self.num_heads % self.kv_heads:
            raise UserError(f"model.num_kv_heads={self.num_kv_heads} does not divide model.num_heads="
                            f"{self.num_heads}: grouped-query attention shares each key/value head among an equal "
                            "number of query heads")
        for name in ("rope_theta", "local_rope_theta"):
            check_range(f"model.{name}", getattr(self, name), 0, low_open=True)
        check_range("model.local_window", self.local_window, 1, integer=True)
        check_range("model.global_attn_every_n", self.global_attn_every_n, 1, self.num_layers, integer=True)
        if self.family in ROPE_FAMILIES:
            if self.family == "eurobert" and self.global_attn_every_n != 1:
                raise UserError(f"model.global_attn_every_n={self.global_attn_every_n}: EuroBERT attends globally "
                                "in every layer (1)")
            if self.family == "modernbert" and self.classifier_pooling == "late":
                raise UserError("model.classifier_pooling='late' is EuroBERT's; ModernBERT pools 'first' or 'mean'")
            return
        defaults = {"num_kv_heads": 0, "global_attn_every_n": 1, "use_bias": True, "tie_word_embeddings": True,
                    "classifier_pooling": "first"}
        changed = [name for name, default in defaults.items() if getattr(self, name) != default]
        changed += ["activation"] if self.activation == "silu" else []
        if changed:
            raise UserError(f"model.{changed[0]}={getattr(self, changed[0])!r} is not available for model.family="
                            f"{self.family!r} (only for {' / '.join(ROPE_FAMILIES)})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        """Key / value heads (grouped-query attention when fewer than num_heads)."""
        return self.num_kv_heads or self.num_heads

    def is_global_layer(self, index: int) -> bool:
        """ModernBERT's pattern (HF `layer_types`): layer i attends globally when i % global_attn_every_n == 0."""
        return index % self.global_attn_every_n == 0

    @property
    def position_offset(self) -> int:
        """XLM-R numbers real tokens from padding_idx + 1 (rows 0..padding_idx are never used by text)."""
        return self.pad_token_id + 1 if self.family == "xlmr" else 0

    @property
    def num_position_rows(self) -> int:
        return self.max_positions + self.position_offset

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1 if self.mask_token_id < 0 else self.mask_token_id

    @property
    def has_lang_embeddings(self) -> bool:
        return self.use_lang_emb and self.n_langs > 1

    @property
    def embedding_init_std(self) -> float:
        return self.hidden_size**-0.5 if self.family == "xlm" else self.initializer_range

    def replace(self, **changes: Any) -> "ModelConfig":
        return from_dict({**to_dict(self), **changes})

    def num_params(self) -> dict[str, int]:
        """Parameter counts (embeddings vs the rest), without building the model."""
        d, f, l_ = self.hidden_size, self.intermediate_size, self.num_layers
        if self.family in ROPE_FAMILIES:
            return self._rope_num_params()
        emb = self.vocab_size * d
        if not self.sinusoidal_positions:
            emb += self.num_position_rows * d
        emb += self.type_vocab_size * d + (self.n_langs * d if self.has_lang_embeddings else 0)
        norms = 2 * d * (int(self.embedding_layer_norm) + int(self.pre_layer_norm))
        layer = 4 * (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
        head = self.vocab_size + ((d * d + d) + 2 * d if self.lm_head_transform else 0)
        return {"embeddings": emb, "non_embedding": l_ * layer + norms + head, "total": emb + l_ * layer + norms + head}


    def _rope_num_params(self) -> dict[str, int]:
        d, f, l_, v = self.hidden_size, self.intermediate_size, self.num_layers, self.vocab_size
        b = int(self.use_bias)
        kv = self.kv_heads * self.head_dim
        attention = d * (d + 2 * kv) + d * d + b * (2 * d + 2 * kv)
        mlp = 3 * d * f + b * (2 * f + d)
        if self.family == "modernbert":  # LayerNorms: embedding, 2 per layer (layer 0: 1), final, head
            norm = d * (1 + b)
            layer_norms = (2 * l_ - 1) * norm
            head = (d * d + b * d) + norm + v
            rest = norm + layer_norms + norm + head
        else:  # RMSNorms (no bias): 2 per layer and a final one; the LM projection has a bias only with use_bias
            rest = (2 * l_ + 1) * d + b * v
        # An untied LM projection is a second vocabulary table: counted with the embeddings.
        emb = v * d * (1 if self.tie_word_embeddings else 2)
        non_embedding = l_ * (attention + mlp) + rest
        return {"embeddings": emb, "non_embedding": non_embedding, "total": emb + non_embedding}


_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}


def to_dict(config: ModelConfig) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    out["langs"] = list(config.langs)
    return out


def from_dict(d: dict[str, Any], where: str = "model") -> ModelConfig:
    """Builds a config, rejecting unknown keys with the closest valid names."""
    unknown = [k for k in d if k not in _FIELDS]
    if unknown:
        raise unknown_name("key", unknown[0], sorted(_FIELDS), prefix=f"{where}.")
    d = dict(d)
    if "langs" in d:
        d["langs"] = tuple(d["langs"])
    return ModelConfig(**d)


def to_json(config: ModelConfig) -> str:
    return json.dumps(to_dict(config), indent=2, sort_keys=True)


def _xlm(**kw) -> ModelConfig:
    base = dict(
        family="xlm", layer_norm_eps=1e-12, type_vocab_size=0, lm_head_transform=False, zero_pad_states=True,
        **XLM_SPECIALS,
    )
    return ModelConfig(**{**base, **kw})


NAMED_CONFIGS: dict[str, ModelConfig] = {
    # Original XLM (Lample & Conneau 2019): post-LN, eps 1e-12, 512 learned positions, tied output + bias.
    "xlm_mlm_en_2048": _xlm(vocab_size=30145, hidden_size=2048, num_layers=12, num_heads=16, intermediate_size=8192),
    "xlm_mlm_xnli15_1024": _xlm(
        vocab_size=95000, hidden_size=1024, num_layers=12, num_heads=8, intermediate_size=4096,
        n_langs=15, use_lang_emb=True, langs=XNLI15_LANGS,
    ),
    "xlm_mlm_tlm_xnli15_1024": _xlm(
        vocab_size=95000, hidden_size=1024, num_layers=12, num_heads=8, intermediate_size=4096,
        n_langs=15, use_lang_emb=True, langs=XNLI15_LANGS,
    ),
    "xlm_mlm_17_1280": _xlm(
        vocab_size=200000, hidden_size=1280, num_layers=16, num_heads=16, intermediate_size=5120, n_langs=17,
        use_lang_emb=False,
    ),
    "xlm_mlm_100_1280": _xlm(
        vocab_size=200000, hidden_size=1280, num_layers=16, num_heads=16, intermediate_size=5120, n_langs=100,
        use_lang_emb=False,
    ),
    # XLM-R (Conneau et al. 2020).
    "xlmr_base": ModelConfig(),
    "xlmr_large": ModelConfig(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    "xlmr_xl": ModelConfig(
        hidden_size=2560, num_layers=36, num_heads=32, intermediate_size=10240,
        pre_layer_norm=True, embedding_layer_norm=False,
    ),
    "xlmr_xxl": ModelConfig(
        hidden_size=4096, num_layers=48, num_heads=32, intermediate_size=16384,
        pre_layer_norm=True, embedding_layer_norm=False,
    ),
    # Tiny models for tests and the CPU default run.
    "xlmr_tiny": ModelConfig(
        vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_positions=128
    ),
    "xlmr_xl_tiny": ModelConfig(
        vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_positions=128,
        pre_layer_norm=True, embedding_layer_norm=False,
    ),
    "xlm_tiny": _xlm(
        vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_positions=128,
        n_langs=3, use_lang_emb=True, langs=("de", "en", "fr"),
    ),
}


def _modernbert(**kw) -> ModelConfig:
    """ModernBERT (Warner et al. 2024) as released: no biases (the LM decoder keeps one), LayerNorm eps 1e-5, GeGLU,
    global attention every 3rd layer, a 128-token window elsewhere, 8192 positions, dropout 0."""
    base = dict(
        family="modernbert", activation="gelu", layer_norm_eps=1e-5, pre_layer_norm=True, embedding_layer_norm=True,
        type_vocab_size=0, lm_head_transform=True, dropout=0.0, attention_dropout=0.0, max_positions=8192,
        global_attn_every_n=3, local_window=128, rope_theta=160000.0, local_rope_theta=10000.0, use_bias=False,
        classifier_pooling="mean",
    )
    return ModelConfig(**{**base, **kw})


# mmBERT (Marone et al. 2025): ModernBERT with the Gemma 2 tokenizer (pad 0, eos 1, bos 2, unk 3, mask 4) and RoPE
# theta 160k in global and local layers (the released config.json of jhu-clsp/mmBERT-small / -base).
MMBERT_SPECIALS = dict(vocab_size=256000, pad_token_id=0, eos_token_id=1, bos_token_id=2, unk_token_id=3,
                       mask_token_id=4, rope_theta=160000.0, local_rope_theta=160000.0)


def _eurobert(**kw) -> ModelConfig:
    """EuroBERT (Boizard et al. 2025): Llama-style, RMSNorm eps 1e-5, SwiGLU, RoPE theta 250k, no biases, untied
    LM projection, Llama-3 vocabulary (128,256; bos 128000, eos = pad 128001, mask 128002), "late" pooling."""
    base = dict(
        family="eurobert", vocab_size=128256, activation="silu", layer_norm_eps=1e-5, pre_layer_norm=True,
        embedding_layer_norm=False, type_vocab_size=0, lm_head_transform=False, dropout=0.0, attention_dropout=0.0,
        max_positions=8192, rope_theta=250000.0, use_bias=False, tie_word_embeddings=False,
        classifier_pooling="late", bos_token_id=128000, eos_token_id=128001, pad_token_id=128001,
        unk_token_id=128001, mask_token_id=128002,
    )
    return ModelConfig(**{**base, **kw})


NAMED_CONFIGS |= {
    # ModernBERT-base (answerdotai): 22 layers, 768 wide, GeGLU 1152, 12 heads, its own 50,368-piece vocabulary.
    "modernbert_base": _modernbert(
        vocab_size=50368, hidden_size=768, num_layers=22, num_heads=12, intermediate_size=1152,
        bos_token_id=50281, eos_token_id=50282, pad_token_id=50283, unk_token_id=50280, mask_token_id=50284,
    ),
    "mmbert_small": _modernbert(hidden_size=384, num_layers=22, num_heads=6, intermediate_size=1152,
                                **MMBERT_SPECIALS),
    "mmbert_base": _modernbert(hidden_size=768, num_layers=22, num_heads=12, intermediate_size=1152,
                               **MMBERT_SPECIALS),
    "eurobert_210m": _eurobert(hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=12, intermediate_size=3072),
    # Tiny models for tests: 4 layers so that global (0, 3) and local (1, 2) layers both occur; an 8-token window.
    "modernbert_tiny": _modernbert(
        vocab_size=1000, hidden_size=64, num_layers=4, num_heads=4, intermediate_size=96, max_positions=128,
        local_window=8, pad_token_id=0, eos_token_id=1, bos_token_id=2, unk_token_id=3, mask_token_id=4,
    ),
    "eurobert_tiny": _eurobert(
        vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
        max_positions=128, bos_token_id=0, eos_token_id=2, pad_token_id=1, unk_token_id=3, mask_token_id=4,
    ),
}


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    if name not in NAMED_CONFIGS:
        raise unknown_name("model config", name, NAMED_CONFIGS)
    config = NAMED_CONFIGS[name]
    return config.replace(**overrides) if overrides else config


# Fields that do not change what a checkpoint means (numerics, memory, regularisation): a run may resume, or start
# from a checkpoint (`xlm_jax.pretrain.adapt`), with other values of these.
NON_ARCHITECTURE = frozenset({"dtype", "param_dtype", "scan_layers", "remat_policy", "attention_impl", "dropout",
                              "attention_dropout", "lm_head_chunk"})


# ---- encoder–decoder (machine translation) ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EncoderDecoderConfig:
    """An encoder and a decoder that share no parameters (XLM's MT models; `xlm_jax.models.decoder`).

    Each side is a full `ModelConfig`: the decoder's `family` picks its layout (XLM's `TransformerModel`
    decoder or Hugging Face's `XLMRobertaForCausalLM` with cross-attention), its `num_layers` the depth. The
    decoder of the XLM-R family reads the target language from its token-type table, so its `type_vocab_size`
    is the number of target languages (`encoder_decoder_config` sets it; see the decoder module for why).
    Raises UserError when the sides cannot be joined (hidden sizes differ: cross-attention reads the encoder's
    states without a projection).
    """

    encoder: ModelConfig
    decoder: ModelConfig

    def __post_init__(self):
        for side in ("encoder", "decoder"):
            if not isinstance(getattr(self, side), ModelConfig):
                raise UserError(f"{side}: expected a model config, got {type(getattr(self, side)).__name__}")
        if self.encoder.hidden_size != self.decoder.hidden_size:
            raise UserError(f"decoder.hidden_size={self.decoder.hidden_size} differs from encoder.hidden_size="
                            f"{self.encoder.hidden_size}: cross-attention reads the encoder states directly")

    @property
    def target_langs(self) -> int:
        """Rows of the decoder's language signal: XLM's language table or XLM-R's token-type table."""
        return self.decoder.n_langs if self.decoder.family == "xlm" else self.decoder.type_vocab_size


def encoder_decoder_config(encoder: ModelConfig, decoder_layers: int | None = None) -> EncoderDecoderConfig:
    """The decoder XLM builds for MT from one model's hyperparameters (`--encoder_only false`): same sizes,
    vocabulary and languages, `decoder_layers` layers (default: the encoder's). XLM-R family: one token-type
    row per language of `encoder.langs` / `encoder.n_langs`, the target-language signal."""
    layers = encoder.num_layers if decoder_layers is None else decoder_layers
    check_range("decoder_layers", layers, 1, integer=True)
    changes: dict[str, Any] = {"num_layers": layers}
    if encoder.family != "xlm":
        changes["type_vocab_size"] = max(1, encoder.n_langs)
    return EncoderDecoderConfig(encoder, encoder.replace(**changes))


def encoder_decoder_to_dict(config: EncoderDecoderConfig) -> dict[str, Any]:
    return {"encoder": to_dict(config.encoder), "decoder": to_dict(config.decoder)}


def encoder_decoder_from_dict(d: dict[str, Any]) -> EncoderDecoderConfig:
    unknown = [k for k in d if k not in ("encoder", "decoder")]
    if unknown:
        raise unknown_name("key", unknown[0], ["encoder", "decoder"])
    missing = [k for k in ("encoder", "decoder") if k not in d]
    if missing:
        raise UserError(f"encoder-decoder config: missing {missing[0]}")
    return EncoderDecoderConfig(from_dict(d["encoder"], "encoder"), from_dict(d["decoder"], "decoder"))


def any_config_to_dict(config: ModelConfig | EncoderDecoderConfig) -> dict[str, Any]:
    """Plain data of an encoder's or an encoder–decoder's config (what checkpoints store as `model_config`)."""
    return encoder_decoder_to_dict(config) if isinstance(config, EncoderDecoderConfig) else to_dict(config)


def any_config_from_dict(d: dict[str, Any]) -> ModelConfig | EncoderDecoderConfig:
    """Inverse of `any_config_to_dict`: an object with exactly the keys `encoder` and `decoder` is an
    encoder–decoder (no `ModelConfig` field has either name). Raises UserError on unknown or missing keys."""
    return encoder_decoder_from_dict(d) if {"encoder", "decoder"} & set(d) else from_dict(d)


def require_encoder(config: ModelConfig | EncoderDecoderConfig, source: str, what: str) -> ModelConfig:
    """`config` when it is an encoder's (`ModelConfig`); UserError naming `source` and the command / key `what`
    when it is a translation model's (`EncoderDecoderConfig`), which only `translate`, `train_mt` and `convert` take."""
    if isinstance(config, EncoderDecoderConfig):
        raise UserError(f"{source}: a translation model (an encoder-decoder: train_mt's output, a Hugging Face "
                        f"EncoderDecoderModel or an XLM MT .pth); {what} needs an encoder (a pretraining run, a masked "
                        "LM converted with python -m xlm_jax.convert, or a fine-tuning output); it translates with "
                        "python -m xlm_jax.translate")
    return config
