"""EuroBERT <-> Hugging Face: state-dict names both ways and config.json <-> ModelConfig.

Architectures (transformers 5, `models/eurobert/modeling_eurobert.py`): `EuroBertForMaskedLM`, `EuroBertModel`
(the bare encoder, no `model.` prefix), `EuroBertForSequenceClassification`, `EuroBertForTokenClassification`.
transformers has no EuroBERT question-answering class: our span head (`classifier/qa_outputs`) has no HF name.
Our trees: `xlm_jax.models.eurobert`. The released models untie `lm_head.weight` from `model.embed_tokens`; a
tied configuration writes the tied copy explicitly (`TIED_KEYS`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.models import hf_tables as t
from xlm_jax.models.config import ModelConfig

PREFIX = "EuroBert"
ARCHITECTURES = tuple(f"{PREFIX}{s}" for s in ("ForMaskedLM", "Model", "ForSequenceClassification",
                                                "ForTokenClassification"))
TIED_KEYS = ("lm_head.weight",)


def _check_architecture(architecture: str) -> str | None:
    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown EuroBERT architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)} "
                        "(transformers has no EuroBERT question-answering class)")
    return t.head_of(architecture, PREFIX)


def table(cfg: ModelConfig, architecture: str) -> list[t.Piece]:
    """The name table of `architecture` (UserError for an unknown one)."""
    head = _check_architecture(architecture)
    b, base = cfg.use_bias, ("" if head is None else "model.")
    enc = ("encoder",)
    lay = enc + ("layers",)
    layer = f"{base}layers.{{i}}."
    pieces = [t.Piece(enc + ("embeddings", "word_embeddings", "embedding"), f"{base}embed_tokens.weight", t.COPY)]
    pieces += t.norm(lay + ("attention_norm",), f"{layer}input_layernorm", False, per_layer=True)
    for ours, hf in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
        pieces += t.linear(lay + ("attention", ours), f"{layer}self_attn.{hf}", t.QKV, b, True)
    pieces += t.linear(lay + ("attention", "out"), f"{layer}self_attn.o_proj", t.OUT, b, True)
    pieces += t.norm(lay + ("mlp_norm",), f"{layer}post_attention_layernorm", False, per_layer=True)
    for ours, hf in (("wi_0", "gate_proj"), ("wi_1", "up_proj"), ("wo", "down_proj")):
        pieces += t.linear(lay + ("mlp", ours), f"{layer}mlp.{hf}", t.DENSE, b, True)
    pieces += t.norm(enc + ("final_norm",), f"{base}norm", False)
    if head == "mlm":
        if not cfg.tie_word_embeddings:
            pieces.append(t.Piece(("lm_head", "decoder", "kernel"), "lm_head.weight", t.DENSE))
        if b:
            pieces.append(t.Piece(("lm_head", "bias"), "lm_head.bias", t.COPY))
    elif head == "sequence":
        pieces += t.linear(("classifier", "dense"), "dense", t.DENSE, True)
        pieces += t.linear(("classifier", "out_proj"), "classifier", t.DENSE, True)
    elif head == "token":
        pieces += t.linear(("classifier", "out_proj"), "classifier", t.DENSE, True)
    return pieces


def hf_to_params(state: dict[str, np.ndarray], cfg: ModelConfig, architecture: str, params_shapes: dict,
                 source: str) -> dict:
    """HF state dict -> our parameter tree, every tensor checked by name and shape. A bare `EuroBertModel` also
    reads a file written with a head (`model.` keys)."""
    if t.head_of(architecture, PREFIX) is None:
        state = t.strip_prefix(state)
    return t.hf_to_params(table(cfg, architecture), state, cfg, params_shapes, source)


def params_to_hf(params: dict, cfg: ModelConfig, architecture: str) -> dict[str, np.ndarray]:
    """Our parameter tree -> the HF state dict of `architecture` (a tied `lm_head.weight` written out)."""
    state = t.params_to_hf(table(cfg, architecture), params, cfg)
    if t.head_of(architecture, PREFIX) == "mlm" and cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


def expected_hf_shapes(cfg: ModelConfig, architecture: str, params_shapes: dict) -> dict[str, tuple]:
    return t.expected_hf_shapes(table(cfg, architecture), cfg, params_shapes)


def default_architecture(cfg: ModelConfig, head: str | None = "mlm") -> str:
    """The HF class for our head kind ("mlm", "sequence", "token" or None: the bare encoder); UserError for
    "span", which transformers lacks."""
    suffix = {"mlm": "ForMaskedLM", "sequence": "ForSequenceClassification", "token": "ForTokenClassification",
              None: "Model"}.get(head)
    if suffix is None:
        raise UserError(f"transformers has no EuroBERT class for the {head!r} head; export the encoder "
                        f"({PREFIX}Model) instead")
    return PREFIX + suffix


# ----------------------------------------------------------------------------------------------- configs

_POOLING = {"bos": "first", "mean": "mean", "late": "late"}


def _rope_theta(hf: dict, source: str) -> float:
    params = hf.get("rope_parameters") or {}
    if hf.get("rope_scaling") or params.get("rope_type", "default") != "default":
        raise UserError(f"{source}: RoPE scaling ({hf.get('rope_scaling') or params.get('rope_type')!r}) is not "
                        "supported (default RoPE only)")
    return float(params.get("rope_theta", hf.get("rope_theta", 250000.0)))


def hf_config_to_model_config(hf: dict[str, Any], source: str) -> tuple[ModelConfig, str]:
    """EuroBERT config.json (transformers 5, or the released remote-code configs) -> (ModelConfig, architecture).
    Refused with UserError: mixed attention / MLP bias flags, RoPE scaling, a head_dim other than
    hidden_size / num_attention_heads."""
    archs = hf.get("architectures") or [f"{PREFIX}ForMaskedLM"]
    arch = archs[0]
    if hf.get("model_type") != "eurobert" or arch not in ARCHITECTURES:
        raise UserError(f"{source}: not a supported EuroBERT model (model_type {hf.get('model_type')!r}, "
                        f"architecture {arch!r}; supported: {', '.join(ARCHITECTURES)})")
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    if head_dim * heads != hf["hidden_size"]:
        raise UserError(f"{source}: head_dim={head_dim} x num_attention_heads={heads} != hidden_size="
                        f"{hf['hidden_size']} is not supported")
    act = hf.get("hidden_act", "silu")
    if act not in ("gelu", "relu", "silu"):
        raise UserError(f"{source}: hidden_act={act!r} is not supported (silu, gelu or relu)")
    pooling = hf.get("classifier_pooling", hf.get("clf_pooling", "late"))
    if pooling not in _POOLING:
        raise UserError(f"{source}: classifier_pooling={pooling!r} is not supported (bos, mean or late)")
    eos = hf.get("eos_token_id", 128001)
    eos = eos[0] if isinstance(eos, list) else eos
    cfg = ModelConfig(
        family="eurobert",
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        intermediate_size=hf["intermediate_size"],
        max_positions=hf.get("max_position_embeddings", 8192),
        activation=act,
        layer_norm_eps=hf.get("rms_norm_eps", 1e-5),
        pre_layer_norm=True,
        embedding_layer_norm=False,
        type_vocab_size=0,
        lm_head_transform=False,
        dropout=0.0,
        attention_dropout=float(hf.get("attention_dropout", 0.0)),
        initializer_range=hf.get("initializer_range", 0.02),
        bos_token_id=hf.get("bos_token_id", 128000),
        eos_token_id=eos,
        pad_token_id=eos if hf.get("pad_token_id") is None else hf["pad_token_id"],
        # The Llama-3 vocabulary has no unknown piece (unk = eos) unless the config names one (a vocabulary that has it).
        unk_token_id=eos if hf.get("unk_token_id") is None else hf["unk_token_id"],
        mask_token_id=hf.get("mask_token_id", 128002),
        rope_theta=_rope_theta(hf, source),
        use_bias=t.bias_setting(hf, ("attention_bias", "mlp_bias"), source),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        classifier_pooling=_POOLING[pooling],
    )
    return cfg, arch


def model_config_to_hf_config(cfg: ModelConfig, architecture: str, num_labels: int | None = None) -> dict[str, Any]:
    """ModelConfig -> EuroBERT config.json for transformers 5."""
    _check_architecture(architecture)
    out = {
        "architectures": [architecture],
        "model_type": "eurobert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": cfg.activation,
        "max_position_embeddings": cfg.max_positions,
        "initializer_range": cfg.initializer_range,
        "rms_norm_eps": cfg.layer_norm_eps,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "mask_token_id": cfg.mask_id,
        **({} if cfg.unk_token_id == cfg.eos_token_id else {"unk_token_id": cfg.unk_token_id}),
        "attention_bias": cfg.use_bias,
        "mlp_bias": cfg.use_bias,
        "attention_dropout": cfg.attention_dropout,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "classifier_pooling": {"first": "bos", "mean": "mean", "late": "late"}[cfg.classifier_pooling],
        "use_cache": False,
    }
    if num_labels is not None:
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    return out
