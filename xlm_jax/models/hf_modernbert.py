"""ModernBERT / mmBERT <-> Hugging Face: state-dict names both ways and config.json <-> ModelConfig.

Architectures: `ModernBertForMaskedLM`, `ModernBertModel` (the bare encoder, no `model.` prefix),
`ModernBertForSequenceClassification`, `ModernBertForTokenClassification`, `ModernBertForQuestionAnswering`
(transformers 5, `models/modernbert/modeling_modernbert.py`). Our trees: `xlm_jax.models.modernbert`.

HF fuses q, k, v into `attn.Wqkv` [3 D, D] (rows: q, k, v, each head-major) and the GeGLU input and gate into
`mlp.Wi` [2 F, D] (rows: input, then gate: `input, gate = Wi(x).chunk(2)`); layer 0 has no `attn_norm`.
The MLM `decoder.weight` is tied to the token embedding (written out by `params_to_hf`, as `save_pretrained`
does; `TIED_KEYS` lists it for writers that drop tied copies).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.models import hf_tables as t
from xlm_jax.models.config import ModelConfig

PREFIX = "ModernBert"
ARCHITECTURES = tuple(f"{PREFIX}{s}" for s in ("ForMaskedLM", "Model", "ForSequenceClassification",
                                                "ForTokenClassification", "ForQuestionAnswering"))
TIED_KEYS = ("decoder.weight",)


def _check_architecture(architecture: str) -> str | None:
    if architecture not in ARCHITECTURES:
        raise UserError(f"unknown ModernBERT architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    return t.head_of(architecture, PREFIX)


def table(cfg: ModelConfig, architecture: str) -> list[t.Piece]:
    """The name table of `architecture` (UserError for an unknown one)."""
    head = _check_architecture(architecture)
    b, base = cfg.use_bias, ("" if head is None else "model.")
    enc = ("encoder",)
    lay = enc + ("layers",)
    layer = f"{base}layers.{{i}}."
    pieces = [t.Piece(enc + ("embeddings", "word_embeddings", "embedding"), f"{base}embeddings.tok_embeddings.weight",
                      t.COPY)]
    pieces += t.norm(enc + ("embeddings", "layer_norm"), f"{base}embeddings.norm", b)
    pieces += t.norm(lay + ("attention_norm",), f"{layer}attn_norm", b, per_layer=True, first_layer=1)
    for part, name in enumerate(("query", "key", "value")):
        pieces += t.linear(lay + ("attention", name), f"{layer}attn.Wqkv", t.QKV, b, True, part=part, parts=3)
    pieces += t.linear(lay + ("attention", "out"), f"{layer}attn.Wo", t.OUT, b, True)
    pieces += t.norm(lay + ("mlp_norm",), f"{layer}mlp_norm", b, per_layer=True)
    for part, name in enumerate(("wi_0", "wi_1")):
        pieces += t.linear(lay + ("mlp", name), f"{layer}mlp.Wi", t.DENSE, b, True, part=part, parts=2)
    pieces += t.linear(lay + ("mlp", "wo"), f"{layer}mlp.Wo", t.DENSE, b, True)
    pieces += t.norm(enc + ("final_norm",), f"{base}final_norm", b)
    if head == "mlm":
        pieces += t.linear(("lm_head", "dense"), "head.dense", t.DENSE, b)
        pieces += t.norm(("lm_head", "layer_norm"), "head.norm", b)
        pieces.append(t.Piece(("lm_head", "bias"), "decoder.bias", t.COPY))
        if not cfg.tie_word_embeddings:
            pieces.append(t.Piece(("lm_head", "decoder", "kernel"), "decoder.weight", t.DENSE))
    elif head is not None:
        pieces += t.linear(("classifier", "head", "dense"), "head.dense", t.DENSE, b)
        pieces += t.norm(("classifier", "head", "layer_norm"), "head.norm", b)
        out = "qa_outputs" if head == "span" else "out_proj"
        pieces += t.linear(("classifier", out), "classifier", t.DENSE, True)
    return pieces


def hf_to_params(state: dict[str, np.ndarray], cfg: ModelConfig, architecture: str, params_shapes: dict,
                 source: str) -> dict:
    """HF state dict -> our parameter tree ({encoder, lm_head} / {encoder, classifier} / {encoder}), every tensor
    checked by name and shape. A bare `ModernBertModel` also reads a file written with a head (`model.` keys)."""
    if t.head_of(architecture, PREFIX) is None:
        state = t.strip_prefix(state)
    return t.hf_to_params(table(cfg, architecture), state, cfg, params_shapes, source)


def params_to_hf(params: dict, cfg: ModelConfig, architecture: str) -> dict[str, np.ndarray]:
    """Our parameter tree -> the HF state dict of `architecture`, tied `decoder.weight` included."""
    state = t.params_to_hf(table(cfg, architecture), params, cfg)
    if t.head_of(architecture, PREFIX) == "mlm" and cfg.tie_word_embeddings:
        state["decoder.weight"] = state["model.embeddings.tok_embeddings.weight"]
    return state


def expected_hf_shapes(cfg: ModelConfig, architecture: str, params_shapes: dict) -> dict[str, tuple]:
    return t.expected_hf_shapes(table(cfg, architecture), cfg, params_shapes)


def default_architecture(cfg: ModelConfig, head: str | None = "mlm") -> str:
    """The HF class for our head kind ("mlm", "sequence", "token", "span" or None: the bare encoder)."""
    suffix = {"mlm": "ForMaskedLM", "sequence": "ForSequenceClassification", "token": "ForTokenClassification",
              "span": "ForQuestionAnswering", None: "Model"}[head]
    return PREFIX + suffix


# ----------------------------------------------------------------------------------------------- configs

_POOLING = {"cls": "first", "mean": "mean"}


def _every_n(layer_types: list[str], source: str) -> int:
    """HF `layer_types` -> our global_attn_every_n (layer i global iff i % n == 0); UserError for other patterns."""
    for n in range(1, len(layer_types) + 1):
        if all((t_ == "full_attention") == (i % n == 0) for i, t_ in enumerate(layer_types)):
            return n
    raise UserError(f"{source}: layer_types {layer_types} is not 'full_attention every n-th layer from layer 0, "
                    "sliding_attention elsewhere', the only pattern xlm_jax supports")


def _rope_thetas(hf: dict, source: str) -> tuple[float, float]:
    params = hf.get("rope_parameters") or {}
    if hf.get("rope_scaling"):
        raise UserError(f"{source}: rope_scaling={hf['rope_scaling']!r} is not supported (default RoPE only)")
    thetas = []
    for kind, old_key, default in (("full_attention", "global_rope_theta", 160000.0),
                                   ("sliding_attention", "local_rope_theta", 10000.0)):
        p = params.get(kind) or {}
        if p.get("rope_type", "default") != "default":
            raise UserError(f"{source}: rope_parameters.{kind}.rope_type={p['rope_type']!r} is not supported "
                            "(default RoPE only)")
        thetas.append(float(p.get("rope_theta", hf.get(old_key, default))))
    return thetas[0], thetas[1]


def hf_config_to_model_config(hf: dict[str, Any], source: str) -> tuple[ModelConfig, str]:
    """ModernBERT config.json (transformers 4.48+ or 5) -> (ModelConfig, architecture). Settings xlm_jax cannot
    represent (mixed bias flags, no decoder bias, a classifier activation other than GELU, other RoPE types,
    other local / global patterns) are refused with UserError."""
    archs = hf.get("architectures") or [f"{PREFIX}ForMaskedLM"]
    arch = archs[0]
    if hf.get("model_type") != "modernbert" or arch not in ARCHITECTURES:
        raise UserError(f"{source}: not a supported ModernBERT model (model_type {hf.get('model_type')!r}, "
                        f"architecture {arch!r}; supported: {', '.join(ARCHITECTURES)})")
    use_bias = t.bias_setting(hf, ("attention_bias", "mlp_bias", "norm_bias", "classifier_bias"), source)
    if not hf.get("decoder_bias", True):
        raise UserError(f"{source}: decoder_bias=false is not supported (the MLM projection always has a bias)")
    if hf.get("classifier_activation", "gelu") != "gelu":
        raise UserError(f"{source}: classifier_activation={hf['classifier_activation']!r} is not supported (gelu)")
    act = hf.get("hidden_activation", "gelu")
    if act not in ("gelu", "relu", "silu"):
        raise UserError(f"{source}: hidden_activation={act!r} is not supported (gelu, relu or silu)")
    pooling = hf.get("classifier_pooling", "cls")
    if pooling not in _POOLING:
        raise UserError(f"{source}: classifier_pooling={pooling!r} is not supported (cls or mean)")
    layers = hf["num_hidden_layers"]
    layer_types = hf.get("layer_types")
    if layer_types is not None and (not isinstance(layer_types, list) or len(layer_types) != layers):
        raise UserError(f"{source}: layer_types {layer_types!r} does not give one type per layer "
                        f"(num_hidden_layers={layers})")
    every_n = _every_n(list(layer_types), source) if layer_types else int(hf.get("global_attn_every_n_layers", 3))
    global_theta, local_theta = _rope_thetas(hf, source)
    ids = {k: hf.get(k) for k in ("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id", "sep_token_id")}
    cfg = ModelConfig(
        family="modernbert",
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=layers,
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_positions=hf.get("max_position_embeddings", 8192),
        activation=act,
        layer_norm_eps=hf.get("norm_eps", 1e-5),
        pre_layer_norm=True,
        embedding_layer_norm=True,
        type_vocab_size=0,
        lm_head_transform=True,
        dropout=float(max(hf.get(k, 0.0) for k in ("embedding_dropout", "mlp_dropout", "classifier_dropout"))),
        attention_dropout=float(hf.get("attention_dropout", 0.0)),
        initializer_range=hf.get("initializer_range", 0.02),
        pad_token_id=ids["pad_token_id"] if ids["pad_token_id"] is not None else 0,
        bos_token_id=next((v for v in (ids["cls_token_id"], ids["bos_token_id"]) if v is not None), 0),
        eos_token_id=next((v for v in (ids["sep_token_id"], ids["eos_token_id"]) if v is not None), 0),
        unk_token_id=hf.get("unk_token_id", 0) if hf.get("unk_token_id") is not None else 0,
        mask_token_id=hf.get("mask_token_id") if hf.get("mask_token_id") is not None else -1,
        rope_theta=global_theta,
        local_rope_theta=local_theta,
        global_attn_every_n=every_n,
        local_window=hf.get("local_attention", 128),
        use_bias=use_bias,
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
        classifier_pooling=_POOLING[pooling],
    )
    return cfg, arch


def model_config_to_hf_config(cfg: ModelConfig, architecture: str, num_labels: int | None = None) -> dict[str, Any]:
    """ModelConfig -> ModernBERT config.json (read by transformers 5, and by 4.48+ through the older keys
    global_attn_every_n_layers / global_rope_theta / local_rope_theta written alongside)."""
    _check_architecture(architecture)
    layer_types = ["full_attention" if cfg.is_global_layer(i) else "sliding_attention" for i in range(cfg.num_layers)]
    out = {
        "architectures": [architecture],
        "model_type": "modernbert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "hidden_activation": cfg.activation,
        "max_position_embeddings": cfg.max_positions,
        "initializer_range": cfg.initializer_range,
        "initializer_cutoff_factor": 2.0,
        "norm_eps": cfg.layer_norm_eps,
        "norm_bias": cfg.use_bias,
        "attention_bias": cfg.use_bias,
        "mlp_bias": cfg.use_bias,
        "classifier_bias": cfg.use_bias,
        "decoder_bias": True,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": cfg.bos_token_id,
        "cls_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "sep_token_id": cfg.eos_token_id,
        "unk_token_id": cfg.unk_token_id,
        "mask_token_id": cfg.mask_id,
        "attention_dropout": cfg.attention_dropout,
        "embedding_dropout": cfg.dropout,
        "mlp_dropout": cfg.dropout,
        "classifier_dropout": cfg.dropout,
        "layer_types": layer_types,
        "rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
                            "sliding_attention": {"rope_type": "default", "rope_theta": cfg.local_rope_theta}},
        "global_attn_every_n_layers": cfg.global_attn_every_n,
        "global_rope_theta": cfg.rope_theta,
        "local_rope_theta": cfg.local_rope_theta,
        "local_attention": cfg.local_window,
        "classifier_pooling": {"first": "cls", "mean": "mean"}[cfg.classifier_pooling],
        "classifier_activation": "gelu",
        "tie_word_embeddings": cfg.tie_word_embeddings,
    }
    if num_labels is not None:
        out["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        out["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    return out
