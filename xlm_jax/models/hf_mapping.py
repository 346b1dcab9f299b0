"""Name and layout mapping between our parameter tree and Hugging Face state dicts.

One table per family drives both directions, so import and export cannot drift apart. Our tree stacks layers
on a leading axis and keeps attention heads as separate axes ([D, H, Dh]); HF keeps per-layer
`nn.Linear` weights as [out, in].

fairseq and original-XLM checkpoints are first renamed to HF keys (`fairseq_to_hf_keys`, `xlm_pth_to_hf_keys`,
at the end of this file) and then share this table.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from xlm_jax.models.config import ModelConfig
from xlm_jax.models.xlm import sinusoidal_table
from xlm_jax.core.errors import UserError

# Linear kinds: how an HF [out, in] weight becomes our kernel, given (D, H, Dh, F).
_QKV, _OUT, _DENSE = "qkv", "out", "dense"


@dataclasses.dataclass(frozen=True)
class Entry:
    ours: tuple[str, ...]  # path in our params tree
    hf: str  # HF key; "{i}" for per-layer tensors
    kind: str  # "copy" | "qkv" | "out" | "dense"; "kernel"/"bias" implied by the last path element
    per_layer: bool = False


def _layer_entries(prefix: str, names: dict[str, str]) -> list[Entry]:
    """names: our module -> HF module (relative to the layer); each yields kernel + bias (or scale + bias)."""
    out = []
    for ours, (hf, kind) in names.items():
        path = ("encoder", "layers") + tuple(ours.split("/"))
        if kind == "norm":
            out += [Entry(path + ("scale",), f"{prefix}{hf}.weight", "copy", True)]
            out += [Entry(path + ("bias",), f"{prefix}{hf}.bias", "copy", True)]
        else:
            out += [Entry(path + ("kernel",), f"{prefix}{hf}.weight", kind, True)]
            out += [Entry(path + ("bias",), f"{prefix}{hf}.bias", kind, True)]
    return out


def _norm(ours: tuple[str, ...], hf: str) -> list[Entry]:
    return [Entry(ours + ("scale",), f"{hf}.weight", "copy"), Entry(ours + ("bias",), f"{hf}.bias", "copy")]


def xlmr_table(cfg: ModelConfig, base: str = "roberta.", with_head: bool = True) -> list[Entry]:
    layer = f"{base}encoder.layer.{{i}}."
    names = {
        "attention/query": ("attention.self.query", _QKV),
        "attention/key": ("attention.self.key", _QKV),
        "attention/value": ("attention.self.value", _QKV),
        "mlp/wi": ("intermediate.dense", _DENSE),
        "mlp/wo": ("output.dense", _DENSE),
    }
    if cfg.pre_layer_norm:  # HF XLMRobertaXL*
        names |= {
            "attention/out": ("attention.output.dense", _OUT),
            "attention_norm": ("attention.self_attn_layer_norm", "norm"),
            "mlp_norm": ("LayerNorm", "norm"),
        }
    else:
        names |= {
            "attention/out": ("attention.output.dense", _OUT),
            "attention_norm": ("attention.output.LayerNorm", "norm"),
            "mlp_norm": ("output.LayerNorm", "norm"),
        }
    emb = ("encoder", "embeddings")
    table = [
        Entry(emb + ("word_embeddings", "embedding"), f"{base}embeddings.word_embeddings.weight", "copy"),
        Entry(emb + ("position_embeddings", "embedding"), f"{base}embeddings.position_embeddings.weight", "copy"),
        Entry(emb + ("token_type_embeddings", "embedding"), f"{base}embeddings.token_type_embeddings.weight", "copy"),
    ]
    if cfg.embedding_layer_norm:
        table += _norm(emb + ("layer_norm",), f"{base}embeddings.LayerNorm")
    table += _layer_entries(layer, names)
    if cfg.pre_layer_norm:
        table += _norm(("encoder", "final_norm"), f"{base}encoder.LayerNorm")
    if with_head:
        table += [
            Entry(("lm_head", "dense", "kernel"), "lm_head.dense.weight", _DENSE),
            Entry(("lm_head", "dense", "bias"), "lm_head.dense.bias", _DENSE),
            *_norm(("lm_head", "layer_norm"), "lm_head.layer_norm"),
            Entry(("lm_head", "bias"), "lm_head.bias", "copy"),
        ]
    return table


def xlm_table(cfg: ModelConfig, base: str = "transformer.", with_head: bool = True) -> list[Entry]:
    names = {
        "attention/query": ("attentions.{i}.q_lin", _QKV),
        "attention/key": ("attentions.{i}.k_lin", _QKV),
        "attention/value": ("attentions.{i}.v_lin", _QKV),
        "attention/out": ("attentions.{i}.out_lin", _OUT),
        "attention_norm": ("layer_norm1.{i}", "norm"),
        "mlp/wi": ("ffns.{i}.lin1", _DENSE),
        "mlp/wo": ("ffns.{i}.lin2", _DENSE),
        "mlp_norm": ("layer_norm2.{i}", "norm"),
    }
    emb = ("encoder", "embeddings")
    table = [Entry(emb + ("word_embeddings", "embedding"), f"{base}embeddings.weight", "copy")]
    if not cfg.sinusoidal_positions:
        table.append(Entry(emb + ("position_embeddings", "embedding"), f"{base}position_embeddings.weight", "copy"))
    if cfg.has_lang_embeddings:
        table.append(Entry(emb + ("lang_embeddings", "embedding"), f"{base}lang_embeddings.weight", "copy"))
    table += _norm(emb + ("layer_norm",), f"{base}layer_norm_emb")
    table += _layer_entries(base, names)
    if with_head:
        table.append(Entry(("lm_head", "bias"), "pred_layer.proj.bias", "copy"))
    return table


def _linear(ours: tuple[str, ...], hf: str) -> list[Entry]:
    return [Entry(ours + ("kernel",), f"{hf}.weight", _DENSE), Entry(ours + ("bias",), f"{hf}.bias", _DENSE)]


def task_head_table(cfg: ModelConfig, kind: str) -> list[Entry]:
    """The task head of a fine-tuned model (`xlm_jax.models.xlm`'s heads, params under "classifier") -> the HF
    names of transformers' `...ForSequenceClassification` (XLM-R: `classifier.dense` + `classifier.out_proj`; XLM:
    `sequence_summary.summary`), `...ForTokenClassification` (`classifier`) and `...ForQuestionAnswering` /
    `XLMForQuestionAnsweringSimple` (`qa_outputs`)."""
    head = ("classifier",)
    if kind == "span":
        return _linear(head + ("qa_outputs",), "qa_outputs")
    if kind == "token":
        return _linear(head + ("out_proj",), "classifier")
    if cfg.family == "xlm":
        return _linear(head + ("out_proj",), "sequence_summary.summary")
    return _linear(head + ("dense",), "classifier.dense") + _linear(head + ("out_proj",), "classifier.out_proj")


def table_for(cfg: ModelConfig, architecture: str) -> list[Entry]:
    with_head = architecture.endswith("ForMaskedLM") or architecture.endswith("WithLMHeadModel")
    kind = head_kind(architecture)
    prefixed = with_head or kind is not None
    if cfg.family == "xlm":
        table = xlm_table(cfg, "transformer." if prefixed else "", with_head)
    else:
        table = xlmr_table(cfg, "roberta." if prefixed else "", with_head)
    return table + (task_head_table(cfg, kind) if kind else [])


def _to_ours(w: np.ndarray, kind: str, leaf: str, cfg: ModelConfig) -> np.ndarray:
    d, h, dh = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    if kind == "copy":
        return w
    if leaf == "bias":
        return w.reshape(h, dh) if kind == _QKV else w
    if kind == _QKV:
        return w.T.reshape(d, h, dh)
    if kind == _OUT:
        return w.T.reshape(h, dh, d)
    return w.T


def _to_hf(w: np.ndarray, kind: str, leaf: str) -> np.ndarray:
    if kind == "copy":
        return w
    if leaf == "bias":
        return w.reshape(-1)
    if kind == _QKV:
        return w.reshape(w.shape[0], -1).T
    if kind == _OUT:
        return w.reshape(-1, w.shape[-1]).T
    return w.T


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def check_shape(name: str, got: tuple, want: tuple, source: str) -> None:
    if tuple(got) != tuple(want):
        hint = ""
        # Positions and languages first: XLM's `position_embeddings.weight` / `lang_embeddings.weight` also end
        # in "embeddings.weight", like its word table `embeddings.weight`.
        if "position" in name:
            hint = " (position table mismatch: XLM-R tables have max_positions + 2 rows, e.g. 514 for 512 tokens)"
        elif "lang" in name:
            hint = " (language embedding mismatch: n_langs differs, or the model has no language embeddings)"
        elif ("word_embeddings" in name or name.split(" ")[0].split(".")[-2:] == ["embeddings", "weight"]
              or "proj" in name or "lm_head.bias" in name):
            hint = " (vocabulary size mismatch: the tokenizer / dictionary and the model disagree)"
        raise UserError(f"{source}: tensor {name} has shape {tuple(got)}, expected {tuple(want)}{hint}")


def expected_hf_shapes(cfg: ModelConfig, architecture: str, params_shapes: dict) -> dict[str, tuple]:
    """HF key -> shape, derived from our parameter shapes (one stacked layer axis expanded)."""
    out = {}
    for e in table_for(cfg, architecture):
        shape = _get(params_shapes, e.ours)
        shape = shape[1:] if e.per_layer else shape
        out_shape = _to_hf(np.empty(shape, np.float32), e.kind, e.ours[-1]).shape
        if e.per_layer:
            for i in range(cfg.num_layers):
                out[e.hf.format(i=i)] = out_shape
        else:
            out[e.hf] = out_shape
    return out


def hf_to_params(
    state: dict[str, np.ndarray], cfg: ModelConfig, architecture: str, params_shapes: dict, source: str
) -> dict:
    """Builds our (unboxed) parameter tree from an HF state dict; every tensor checked by name and shape."""
    return table_to_params(state, table_for(cfg, architecture), cfg, params_shapes, source)


def table_to_params(state: dict[str, np.ndarray], table: list[Entry], cfg: ModelConfig, params_shapes: dict,
                    source: str, params: dict | None = None) -> dict:
    """The tensors `table` names, from `state` into our tree (`params`, or a new one); per-layer entries stacked
    over `cfg.num_layers`. UserError for a missing tensor or a shape other than `params_shapes` gives."""
    params = {} if params is None else params
    for e in table:
        want = _get(params_shapes, e.ours)
        keys = [e.hf.format(i=i) for i in range(cfg.num_layers)] if e.per_layer else [e.hf]
        tensors = []
        for key in keys:
            if key not in state:
                raise UserError(f"{source}: missing tensor {key} (needed for {'/'.join(e.ours)})")
            w = _to_ours(np.asarray(state[key], np.float32), e.kind, e.ours[-1], cfg)
            check_shape(key, w.shape, want[1:] if e.per_layer else want, source)
            tensors.append(w)
        _set(params, e.ours, np.stack(tensors) if e.per_layer else tensors[0])
    return params


def params_to_hf(params: dict, cfg: ModelConfig, architecture: str) -> dict[str, np.ndarray]:
    """Our parameter tree -> HF state dict (tied weights written explicitly, as `save_pretrained` does)."""
    state = params_to_state(params, table_for(cfg, architecture), cfg)
    if cfg.family == "xlm":
        base = "transformer." if "transformer.embeddings.weight" in state else ""
        if cfg.sinusoidal_positions:
            state[f"{base}position_embeddings.weight"] = sinusoidal_table(cfg.num_position_rows, cfg.hidden_size)
        if "pred_layer.proj.bias" in state:
            state["pred_layer.proj.weight"] = state["transformer.embeddings.weight"]
    elif "lm_head.bias" in state:
        state["lm_head.decoder.weight"] = state["roberta.embeddings.word_embeddings.weight"]
        state["lm_head.decoder.bias"] = state["lm_head.bias"]
    return state


def params_to_state(params: dict, table: list[Entry], cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The tensors `table` names, from our tree into a state dict (per-layer entries over `cfg.num_layers`)."""
    state: dict[str, np.ndarray] = {}
    for e in table:
        w = np.asarray(_get(params, e.ours), np.float32)
        if e.per_layer:
            for i in range(cfg.num_layers):
                state[e.hf.format(i=i)] = np.ascontiguousarray(_to_hf(w[i], e.kind, e.ours[-1]))
        else:
            state[e.hf] = np.ascontiguousarray(_to_hf(w, e.kind, e.ours[-1]))
    return state


# ----------------------------------------------------------------------------------------------- configs

LM_ARCHITECTURES = (
    "XLMRobertaForMaskedLM",
    "XLMRobertaModel",
    "XLMRobertaXLForMaskedLM",
    "XLMRobertaXLModel",
    "XLMWithLMHeadModel",
    "XLMModel",
)
# transformers' classes of fine-tuned models, by class prefix and our head kind (`xlm_jax.models.families.HEADS`).
HEAD_ARCHITECTURES: dict[str, dict[str, str]] = {
    prefix: {"sequence": f"{prefix}ForSequenceClassification", "token": f"{prefix}ForTokenClassification",
             "span": f"{prefix}ForQuestionAnswering" + ("Simple" if prefix == "XLM" else "")}
    for prefix in ("XLMRoberta", "XLMRobertaXL", "XLM")
}
HF_ARCHITECTURES = LM_ARCHITECTURES + tuple(a for heads in HEAD_ARCHITECTURES.values() for a in heads.values())


def class_prefix(cfg: ModelConfig) -> str:
    """"XLMRobertaXL" (pre-LN XLM-R), "XLMRoberta" or "XLM": how transformers' class names of `cfg` begin."""
    return ("XLMRobertaXL" if cfg.pre_layer_norm else "XLMRoberta") if cfg.family == "xlmr" else "XLM"


def head_architecture(cfg: ModelConfig, kind: str) -> str:
    """transformers' class of `cfg`'s model with a task head of `kind` ("sequence", "token", "span")."""
    return HEAD_ARCHITECTURES[class_prefix(cfg)][kind]


def head_kind(architecture: str) -> str | None:
    """The task head kind ("sequence", "token", "span") of a fine-tuned model's class; None for the others."""
    return next((k for heads in HEAD_ARCHITECTURES.values() for k, a in heads.items() if a == architecture), None)


def hf_config_to_model_config(hf: dict[str, Any], source: str) -> tuple[ModelConfig, str]:
    """HF config.json dict -> (ModelConfig, architecture)."""
    archs = hf.get("architectures") or []
    model_type = hf.get("model_type")
    arch = archs[0] if archs else {"xlm-roberta": "XLMRobertaForMaskedLM", "xlm-roberta-xl": "XLMRobertaXLForMaskedLM", "xlm": "XLMWithLMHeadModel"}.get(model_type, "")
    known_heads = {a.replace("ForMaskedLM", "").replace("WithLMHeadModel", "").replace("Model", "") for a in LM_ARCHITECTURES}
    family_of = {"xlm-roberta": "xlmr", "xlm-roberta-xl": "xlmr", "xlm": "xlm"}
    if model_type not in family_of:
        raise UserError(
            f"{source}: unsupported model_type {model_type!r} (architectures {archs}); "
            f"supported: xlm-roberta, xlm-roberta-xl, xlm ({', '.join(HF_ARCHITECTURES)})"
        )
    if arch not in HF_ARCHITECTURES:
        # Other heads (e.g. ...ForSequenceClassification) still carry the encoder: import it bare.
        prefix = next((p for p in sorted(known_heads, key=len, reverse=True) if arch.startswith(p)), None)
        if prefix is None:
            raise UserError(f"{source}: unsupported architecture {arch!r}; supported: {', '.join(HF_ARCHITECTURES)}")
        arch = prefix + "Model"
    if family_of[model_type] == "xlmr":
        act = hf.get("hidden_act", "gelu")
        if act not in ("gelu", "relu"):
            raise UserError(f"{source}: hidden_act={act!r} is not supported (gelu or relu)")
        xl = model_type == "xlm-roberta-xl"
        cfg = ModelConfig(
            family="xlmr",
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            max_positions=hf["max_position_embeddings"] - hf.get("pad_token_id", 1) - 1,
            activation=act,
            layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
            pre_layer_norm=xl,
            embedding_layer_norm=not xl,
            type_vocab_size=hf.get("type_vocab_size", 1),
            dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
            initializer_range=hf.get("initializer_range", 0.02),
            bos_token_id=hf.get("bos_token_id", 0),
            pad_token_id=hf.get("pad_token_id", 1),
            eos_token_id=hf.get("eos_token_id", 2),
        )
        return cfg, arch
    lang2id = hf.get("lang2id") or {}
    langs = tuple(sorted(lang2id, key=lang2id.get)) if len(lang2id) == hf.get("n_langs", 1) else ()
    cfg = ModelConfig(
        family="xlm",
        vocab_size=hf["vocab_size"],
        hidden_size=hf["emb_dim"],
        num_layers=hf["n_layers"],
        num_heads=hf["n_heads"],
        intermediate_size=4 * hf["emb_dim"],
        max_positions=hf.get("max_position_embeddings", 512),
        activation="gelu" if hf.get("gelu_activation", True) else "relu",
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        type_vocab_size=0,
        n_langs=hf.get("n_langs", 1),
        use_lang_emb=hf.get("use_lang_emb", True),
        sinusoidal_positions=hf.get("sinusoidal_embeddings", False),
        lm_head_transform=False,
        zero_pad_states=True,
        dropout=hf.get("dropout", 0.1),
        attention_dropout=hf.get("attention_dropout", 0.1),
        initializer_range=hf.get("init_std", 0.02),
        bos_token_id=hf.get("bos_index", hf.get("bos_token_id", 0)),
        pad_token_id=hf.get("pad_index", hf.get("pad_token_id", 2)),
        eos_token_id=hf.get("eos_index", hf.get("eos_token_id", 1)),
        unk_token_id=hf.get("unk_index", 3),
        mask_token_id=hf.get("mask_index", 5),
        langs=langs,
    )
    return cfg, arch


def model_config_to_hf_config(cfg: ModelConfig, architecture: str) -> dict[str, Any]:
    if cfg.family == "xlm":
        return {
            "architectures": [architecture],
            "model_type": "xlm",
            "vocab_size": cfg.vocab_size,
            "emb_dim": cfg.hidden_size,
            "n_layers": cfg.num_layers,
            "n_heads": cfg.num_heads,
            "dropout": cfg.dropout,
            "attention_dropout": cfg.attention_dropout,
            "gelu_activation": cfg.activation == "gelu",
            "sinusoidal_embeddings": cfg.sinusoidal_positions,
            "n_langs": cfg.n_langs,
            "use_lang_emb": cfg.use_lang_emb,
            "max_position_embeddings": cfg.max_positions,
            "embed_init_std": cfg.hidden_size**-0.5,
            "layer_norm_eps": cfg.layer_norm_eps,
            "init_std": cfg.initializer_range,
            "bos_index": cfg.bos_token_id,
            "eos_index": cfg.eos_token_id,
            "pad_index": cfg.pad_token_id,
            "unk_index": cfg.unk_token_id,
            "mask_index": cfg.mask_id,
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
            "pad_token_id": cfg.pad_token_id,
            "lang2id": {lang: i for i, lang in enumerate(cfg.langs)} if cfg.langs else None,
            "id2lang": {i: lang for i, lang in enumerate(cfg.langs)} if cfg.langs else None,
            "tie_word_embeddings": True,
        }
    return {
        "architectures": [architecture],
        "model_type": "xlm-roberta-xl" if cfg.pre_layer_norm else "xlm-roberta",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.activation,
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.num_position_rows,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.initializer_range,
        "layer_norm_eps": cfg.layer_norm_eps,
        "bos_token_id": cfg.bos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "eos_token_id": cfg.eos_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,
    }


def head_config(cfg: ModelConfig, architecture: str, labels: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config.json keys of a fine-tuned model's head (none for other architectures): `id2label` /
    `label2id` (which give transformers' `num_labels`) of a sequence or token classifier; for QA transformers'
    default two outputs (start, end); for `XLMForSequenceClassification` the `summary_*` keys that make its
    `XLMSequenceSummary` ours: first token -> dropout -> linear to the labels."""
    kind = head_kind(architecture)
    out: dict[str, Any] = {}
    if kind in ("sequence", "token"):
        out["id2label"] = {str(i): label for i, label in enumerate(labels)}
        out["label2id"] = {label: i for i, label in enumerate(labels)}
    if kind == "sequence" and cfg.family == "xlm":
        out |= {"summary_type": "first", "summary_use_proj": True, "summary_proj_to_labels": True,
                "summary_activation": None, "summary_first_dropout": cfg.dropout, "summary_last_dropout": 0.0}
    return out


def hf_labels(hf: dict[str, Any], kind: str) -> tuple[str, ...]:
    """The labels of a fine-tuned HF model's config.json, in id order (`id2label`; transformers' LABEL_i when
    absent, sized by `num_labels`, default 2)."""
    id2label = hf.get("id2label") or {}
    n = len(id2label) or int(hf.get("num_labels", 2))
    if kind == "span":
        return ("start", "end")
    return tuple(str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n))


def check_xlm_intermediate(cfg: ModelConfig, source: str) -> None:
    if cfg.family == "xlm" and cfg.intermediate_size != 4 * cfg.hidden_size:
        raise UserError(f"{source}: XLM models have FFN width 4 x hidden ({4 * cfg.hidden_size}), got {cfg.intermediate_size}")



# ------------------------------------------------------------------------------ fairseq / original XLM names

def fairseq_prefix(state: dict[str, Any]) -> str | None:
    """"decoder." (old fairseq) or "encoder." (newer), or None when this is no fairseq XLM-R state dict."""
    return next((p for p in ("decoder.", "encoder.") if f"{p}sentence_encoder.embed_tokens.weight" in state), None)


def fairseq_hf_name(key: str, prefix: str, pre_layer_norm: bool) -> str | None:
    """The HF name of one fairseq XLM-R tensor, or None for tensors HF has no use for (e.g. the tied
    `lm_head.weight`, `version` buffers)."""
    enc = f"{prefix}sentence_encoder."
    fixed = {
        f"{enc}embed_tokens.weight": "roberta.embeddings.word_embeddings.weight",
        f"{enc}embed_positions.weight": "roberta.embeddings.position_embeddings.weight",
        f"{enc}emb_layer_norm.weight": "roberta.embeddings.LayerNorm.weight",
        f"{enc}emb_layer_norm.bias": "roberta.embeddings.LayerNorm.bias",
        f"{enc}layernorm_embedding.weight": "roberta.embeddings.LayerNorm.weight",
        f"{enc}layernorm_embedding.bias": "roberta.embeddings.LayerNorm.bias",
        f"{enc}layer_norm.weight": "roberta.encoder.LayerNorm.weight",
        f"{enc}layer_norm.bias": "roberta.encoder.LayerNorm.bias",
        f"{prefix}lm_head.dense.weight": "lm_head.dense.weight",
        f"{prefix}lm_head.dense.bias": "lm_head.dense.bias",
        f"{prefix}lm_head.layer_norm.weight": "lm_head.layer_norm.weight",
        f"{prefix}lm_head.layer_norm.bias": "lm_head.layer_norm.bias",
        f"{prefix}lm_head.bias": "lm_head.bias",
    }
    if key in fixed:
        return fixed[key]
    if not key.startswith(f"{enc}layers."):
        return None
    index, _, name = key[len(f"{enc}layers."):].partition(".")
    module, _, leaf = name.rpartition(".")
    if pre_layer_norm:  # HF XLMRobertaXL* names
        norms = {"self_attn_layer_norm": "attention.self_attn_layer_norm", "final_layer_norm": "LayerNorm"}
    else:
        norms = {"self_attn_layer_norm": "attention.output.LayerNorm", "final_layer_norm": "output.LayerNorm"}
    layer_names = norms | {
        "self_attn.q_proj": "attention.self.query",
        "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value",
        "self_attn.out_proj": "attention.output.dense",
        "fc1": "intermediate.dense",
        "fc2": "output.dense",
    }
    if module in layer_names and index.isdigit():
        return f"roberta.encoder.layer.{index}.{layer_names[module]}.{leaf}"
    return None


_IN_PROJ_PARTS = ("attention.self.query", "attention.self.key", "attention.self.value")


def fairseq_in_proj_names(key: str, prefix: str) -> list[str]:
    """The three HF names (query, key, value) of a fused `self_attn.in_proj_weight` / `in_proj_bias`, the layout
    of the released XLM-R base / large `model.pt` (2019 fairseq); [] for any other key."""
    head = f"{prefix}sentence_encoder.layers."
    if not key.startswith(head):
        return []
    index, _, name = key[len(head):].partition(".")
    leaf = {"self_attn.in_proj_weight": "weight", "self_attn.in_proj_bias": "bias"}.get(name)
    if leaf is None or not index.isdigit():
        return []
    return [f"roberta.encoder.layer.{index}.{part}.{leaf}" for part in _IN_PROJ_PARTS]


def fairseq_to_hf_keys(state: dict[str, np.ndarray], pre_layer_norm: bool, source: str) -> dict[str, np.ndarray]:
    """fairseq XLM-R state dict -> HF `XLMRobertaForMaskedLM` / `XLMRobertaXLForMaskedLM` keys.

    Old fairseq prefixes everything with `decoder.`, newer with `encoder.`; the embedding LayerNorm was renamed
    `layernorm_embedding`; old checkpoints (the released XLM-R base / large) fuse the attention projections into
    `self_attn.in_proj_weight` [3 D, D] / `in_proj_bias` [3 D], split here into query, key, value in that order
    (as fairseq's own `MultiheadAttention.upgrade_state_dict_named` does). fairseq has no token-type table: HF's
    conversion script adds a zero row, so do we.
    The LM projection `lm_head.weight` is tied to `embed_tokens` in fairseq; one that differs cannot be
    represented by a tied model and is refused.
    """
    prefix = fairseq_prefix(state)
    if prefix is None:
        raise UserError(
            f"{source}: not a fairseq XLM-R state dict (no decoder.sentence_encoder.embed_tokens.weight or "
            f"encoder.sentence_encoder.embed_tokens.weight; first keys: {', '.join(list(state)[:5])})"
        )
    out: dict[str, np.ndarray] = {}
    for key, value in state.items():
        name = fairseq_hf_name(key, prefix, pre_layer_norm)
        if name is not None:
            out[name] = value
        elif parts := fairseq_in_proj_names(key, prefix):
            if value.shape[0] % 3:
                raise UserError(f"{source}: tensor {key} has shape {tuple(value.shape)}; a fused query / key / value "
                                "projection needs a first dimension divisible by 3")
            third = value.shape[0] // 3
            for i, part in enumerate(parts):
                out[part] = value[i * third:(i + 1) * third]
    if "roberta.embeddings.LayerNorm.weight" in out and pre_layer_norm:
        raise UserError(f"{source}: pre-LN (normalize_before) model with an embedding LayerNorm is not supported")
    enc = f"{prefix}sentence_encoder."
    tied = state.get(f"{prefix}lm_head.weight")
    words = state[f"{enc}embed_tokens.weight"]
    if tied is not None and (tied.shape != words.shape or not np.array_equal(tied, words)):
        raise UserError(
            f"{source}: {prefix}lm_head.weight {tuple(tied.shape)} is not tied to {enc}embed_tokens.weight "
            f"{tuple(words.shape)}; xlm_jax models always tie the output projection to the token embeddings"
        )
    out["roberta.embeddings.token_type_embeddings.weight"] = np.zeros((1, words.shape[1]), np.float32)
    return out


def fairseq_layer_count(state: dict[str, Any]) -> int:
    indices = {int(k.split("layers.", 1)[1].split(".", 1)[0]) for k in state
               if ".sentence_encoder.layers." in k and k.split("layers.", 1)[1].split(".", 1)[0].isdigit()}
    return max(indices) + 1 if indices else 0


def xlm_pth_hf_name(key: str) -> str:
    """Original XLM name (maybe `module.`-prefixed, from DistributedDataParallel) -> HF `XLMWithLMHeadModel`
    name: the same names under `transformer.`, `pred_layer.proj.*` kept."""
    key = key.removeprefix("module.")
    return key if key.startswith("pred_layer.") else f"transformer.{key}"


def xlm_pth_to_hf_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {xlm_pth_hf_name(key): value for key, value in state.items()}
