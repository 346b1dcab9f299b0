"""Checkpoint interop, the library of `python -m xlm_jax.convert` (and of `xlm_jax.load`, `model.init_from`):
read any supported checkpoint into our parameters (`load_any`), write ours as a Hugging Face model (`export_hf`),
and convert SRC into DST (`convert`).

SRC is detected (`detect`), in this order:
  (d) an xlm_jax (orbax) checkpoint: anything `checkpoint.resolve` accepts; a fine-tuning output directory means
      its best checkpoint (`loading.fine_tuned_checkpoint`), whose task.json gives the head's task and labels;
  (a) a Hugging Face directory: `config.json` + `model.safetensors` (or a sharded `model.safetensors.index.json`,
      or `pytorch_model.bin[.index.json]`; safetensors preferred when both exist);
  (b) a fairseq XLM-R `model.pt` (or a directory holding one): `{"model": state_dict, "args"|"cfg": ...}`;
  (c) an original XLM `.pth`: `{"model", "params", "dico_id2word", "dico_word2id", "dico_counts"}`.
fairseq and XLM state dicts are renamed to HF keys (`hf_mapping.fairseq_to_hf_keys`, `xlm_pth_to_hf_keys`), their
hyperparameters turned into an HF-style config dict, and from there every source takes the same checked path
(`hf_mapping.hf_to_params`: every tensor by name and shape).

PyTorch pickles are read with `torch.load(weights_only=True)` and a short allow-list (argparse.Namespace for the
`args` / `params` of fairseq and XLM, NumPy scalars for fairseq's bookkeeping): a file that needs any other global
is refused, naming the global, and nothing from it runs. torch is imported only there (`torch_load`).

Output of `convert`: `to="orbax"` (default unless SRC is ours) writes `DST/0/{params,model_config}` via
`checkpoint.save_params`; `to="hf"` writes `DST/config.json` + `DST/model.safetensors` (tied weights left out, as
`save_pretrained` does, so `AutoModelForMaskedLM.from_pretrained(DST)` reports nothing missing or unexpected) and
copies tokenizer files found next to SRC. Everything is written to a temporary sibling directory first and renamed
into place, so a failure leaves no half-written DST.

A fine-tuned model (params {encoder, classifier} with its `TaskInfo`) is exported as transformers' class with
that head (`hf_mapping.HEAD_ARCHITECTURES`), `id2label` / `label2id` and the task record `xlm_jax_task`; an HF
directory of such a class is read back with its head and labels (`SourceInfo.task`). Dropping a head (a bare
`architecture`) is reported in `SourceInfo.note`, which `convert` prints.

A source without an LM head (XLMRobertaModel, XLMModel, or `architecture` naming one) gives an encoder-only
checkpoint (no `lm_head` subtree); exporting it writes the bare architecture. HF `XLMRobertaModel` carries an
(untrained) pooler that our model does not have: loading such an export in transformers reports the pooler missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from safetensors import safe_open
from safetensors.numpy import save_file

from xlm_jax.core import outputs
from xlm_jax.core.errors import UserError, check_range
from xlm_jax.core.textfiles import read_text
from xlm_jax.data.hf_tokenizer import HFTokenizer
from xlm_jax.data import xlm_bpe
from xlm_jax.data.tokenizer import check_tokenizer_fits
from xlm_jax.data.tokenizer_files import _is_tokenizer, read_run_record
from xlm_jax.models import families, hf_families, hf_mapping, hf_seq2seq
from xlm_jax.models.config import EncoderDecoderConfig, ModelConfig
from xlm_jax.models.decoder import EncoderDecoder
from xlm_jax.models.decoder import init_params as init_mt_params
from xlm_jax.models.sentence_transformers import (POOLING_MODES, SentenceEmbeddingConfig, read_sentence_transformers,
                                                  write_sentence_transformers)
from xlm_jax.models.xlm import init_params
from xlm_jax.tasks import get_task
from xlm_jax.tasks.embedding import sentence_config as embedding_sentence_config
from xlm_jax.training import checkpoint
from xlm_jax.workflows.loading import (FINETUNE_CONFIG, TASK_FILE, TaskInfo, fine_tuned_checkpoint, finetune_tokenizer,
                                       is_task_checkpoint)

TOKENIZER_FILES = (
    "sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "tokenizer.model",  # tokenizer.model: what training copies into a run directory
)
# Tied copies that `save_pretrained` leaves out (transformers re-ties them on load).
TIED_HF_KEYS = ("lm_head.decoder.weight", "lm_head.decoder.bias", "pred_layer.proj.weight")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What `load_any` found: `kind` is one of "orbax", "hf", "fairseq", "xlm"; `task` the task (labels) of a
    fine-tuned model's head, None without one; `note` what was left out (a head), "" when nothing."""

    kind: str
    path: str
    architecture: str
    num_params: int
    tokenizer_files: tuple[str, ...] = ()
    task: TaskInfo | None = None
    note: str = ""
    dico: tuple[str, ...] = ()  # an original XLM checkpoint's dictionary (dico_id2word), word of each id


# ----------------------------------------------------------------------------------------------- reading

def _safe_globals() -> list[Any]:
    # argparse.Namespace: fairseq `args` and XLM `params`. NumPy scalars/dtypes: fairseq's `extra_state`
    # (losses, meters). Rebuilding these calls no user-defined code.
    allowed: list[Any] = [argparse.Namespace, np.dtype]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed.append(scalar)
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return allowed


def torch_load(path: Path) -> Any:
    """`torch.load` that never executes pickled code: anything beyond tensors, containers and the allow-list is
    refused with a UserError naming the file and the global it asked for."""
    try:
        import torch  # deferred: only PyTorch pickles need torch, which the core never imports
    except ImportError as e:
        raise UserError(f"{path}: reading PyTorch pickles needs torch (pip install torch); "
                        f"Hugging Face directories with model.safetensors do not") from e
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if not found:  # not a pickle at all (random bytes, a text file): no global was asked for
            detail = re.search(r"WeightsUnpickler error: \s*(.+)", str(e))
            raise UserError(f"{path}: not a PyTorch checkpoint (it does not unpickle: "
                            f"{detail.group(1).strip() if detail else str(e).strip().splitlines()[0]})") from None
        offending = found.group(1)
        raise UserError(
            f"{path}: refusing to unpickle: it needs the global {offending}, which is not on the allow-list "
            f"(tensors, containers, argparse.Namespace, NumPy scalars) and could execute arbitrary code. "
            f"Load it yourself in a trusted environment and re-save the state dict with safetensors."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        # The weights-only unpickler raises KeyError / IndexError on bytes that are not a pickle.
        reason = ("the file is empty" if path.is_file() and path.stat().st_size == 0 else
                  "it is not a pickle" if isinstance(e, (KeyError, IndexError)) else str(e).strip() or type(e).__name__)
        raise UserError(f"{path}: cannot read as a PyTorch checkpoint: {reason}") from None


def _to_numpy_state(state: Any, source: str) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise UserError(f"{source}: expected a state dict (name -> tensor), got {type(state).__name__}")
    out = {}
    for key, value in state.items():
        if hasattr(value, "detach"):  # torch.Tensor; bf16/fp16 go through float32, which NumPy can hold
            value = value.detach()
            out[key] = (value.float() if value.is_floating_point() else value).numpy()
        elif isinstance(value, np.ndarray):
            out[key] = value
    return out


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types; bf16 needs torch
        try:
            with safe_open(str(path), framework="pt") as f:
                return _to_numpy_state({k: f.get_tensor(k) for k in f.keys()}, str(path))
        except ImportError:
            pass
        except Exception:  # noqa: BLE001
            pass
        raise UserError(f"{path}: cannot read safetensors file: {e}") from None


def _read_hf_weights(directory: Path) -> dict[str, np.ndarray]:
    def shards(index: Path) -> list[Path]:
        try:
            weight_map = json.loads(read_text(index, "shard index"))["weight_map"]
            files = sorted(set(weight_map.values()))
            if not all(isinstance(f, str) for f in files):
                raise TypeError("file names must be strings")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{index}: not a valid shard index (needs a 'weight_map' object of tensor -> file): "
                            f"{e}") from None
        missing = [f for f in files if not (directory / f).exists()]
        if missing:
            raise UserError(f"{index}: shard file {directory / missing[0]} does not exist")
        return [directory / f for f in files]

    state: dict[str, np.ndarray] = {}
    if (directory / "model.safetensors").exists():
        return _read_safetensors(directory / "model.safetensors")
    if (directory / "model.safetensors.index.json").exists():
        for shard in shards(directory / "model.safetensors.index.json"):
            state |= _read_safetensors(shard)
        return state
    if (directory / "pytorch_model.bin").exists():
        return _to_numpy_state(torch_load(directory / "pytorch_model.bin"), str(directory / "pytorch_model.bin"))
    if (directory / "pytorch_model.bin.index.json").exists():
        for shard in shards(directory / "pytorch_model.bin.index.json"):
            state |= _to_numpy_state(torch_load(shard), str(shard))
        return state
    raise UserError(
        f"{directory}: config.json but no weights (expected model.safetensors, model.safetensors.index.json, "
        f"pytorch_model.bin or pytorch_model.bin.index.json)"
    )


def _namespace_dict(value: Any, what: str, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, argparse.Namespace):
        return vars(value)
    if isinstance(value, dict):
        return dict(value)
    raise UserError(f"{source}: '{what}' is a {type(value).__name__}; expected a dict or argparse.Namespace")


# ------------------------------------------------------------------------- fairseq / XLM -> HF-style config

def _fairseq(ckpt: dict, source: str, num_heads: int | None) -> tuple[dict, dict[str, np.ndarray], dict[str, str]]:
    state = _to_numpy_state(ckpt["model"], source)
    args = _namespace_dict(ckpt.get("args"), "args", source)
    if not args and ckpt.get("cfg") is not None:
        cfg = _namespace_dict(ckpt["cfg"], "cfg", source)
        args = _namespace_dict(cfg.get("model"), "cfg.model", source)
    pre_ln = bool(args.get("encoder_normalize_before", False)) or any(
        k.endswith("sentence_encoder.layer_norm.weight") for k in state
    )
    hf_state = hf_mapping.fairseq_to_hf_keys(state, pre_ln, source)
    words = hf_state["roberta.embeddings.word_embeddings.weight"]
    heads = num_heads or args.get("encoder_attention_heads")
    if not heads:
        raise UserError(f"{source}: the number of attention heads is not recorded (no args.encoder_attention_heads); "
                        f"pass --num-heads (XLM-R base 12, large 16, XL 32, XXL 32)")
    fc1 = hf_state.get("roberta.encoder.layer.0.intermediate.dense.weight")
    pad = 1  # fairseq dictionary: <s>=0 <pad>=1 </s>=2 <unk>=3
    positions = hf_state.get("roberta.embeddings.position_embeddings.weight")
    if args.get("max_positions"):
        # fairseq's learned table has padding_idx + 1 + max_positions rows, exactly like HF's.
        position_rows = int(args["max_positions"]) + pad + 1
    else:
        position_rows = positions.shape[0] if positions is not None else 514
    hf_cfg = {
        "model_type": "xlm-roberta-xl" if pre_ln else "xlm-roberta",
        "architectures": [("XLMRobertaXL" if pre_ln else "XLMRoberta")
                          + ("ForMaskedLM" if "lm_head.bias" in hf_state else "Model")],
        "vocab_size": int(words.shape[0]),
        "hidden_size": int(args.get("encoder_embed_dim") or words.shape[1]),
        "num_hidden_layers": int(args.get("encoder_layers") or hf_mapping.fairseq_layer_count(state)),
        "num_attention_heads": int(heads),
        "intermediate_size": int(args.get("encoder_ffn_embed_dim") or (fc1.shape[0] if fc1 is not None else 4 * words.shape[1])),
        "max_position_embeddings": position_rows,
        "hidden_act": args.get("activation_fn", "gelu"),
        "layer_norm_eps": 1e-5,
        "hidden_dropout_prob": float(args.get("dropout", 0.1)),
        "attention_probs_dropout_prob": float(args.get("attention_dropout", 0.1)),
        "type_vocab_size": 1,
        "bos_token_id": 0, "pad_token_id": pad, "eos_token_id": 2,
    }
    prefix = hf_mapping.fairseq_prefix(state)
    names = {n: k for k in state if (n := hf_mapping.fairseq_hf_name(k, prefix, pre_ln)) is not None}
    names |= {n: k for k in state for n in hf_mapping.fairseq_in_proj_names(k, prefix)}
    return hf_cfg, hf_state, names


def _xlm(ckpt: dict, source: str, num_heads: int | None) -> tuple[dict, dict[str, np.ndarray], dict[str, str]]:
    state = _to_numpy_state(ckpt["model"], source)
    p = _namespace_dict(ckpt.get("params"), "params", source)
    hf_state = hf_mapping.xlm_pth_to_hf_keys(state)
    names = {hf_mapping.xlm_pth_hf_name(k): k for k in state}
    words = hf_state.get("transformer.embeddings.weight")
    if words is None:
        raise UserError(f"{source}: no embeddings.weight in 'model' (keys: {', '.join(list(state)[:5])}, ...); "
                        f"encoder-decoder (MT) checkpoints are not supported")
    tied = hf_state.get("pred_layer.proj.weight")
    if tied is not None and (tied.shape != words.shape or not np.array_equal(tied, words)):
        raise UserError(f"{source}: pred_layer.proj.weight {tuple(tied.shape)} is not tied to embeddings.weight "
                        f"{tuple(words.shape)} (share_inout_emb=False is not supported)")
    if any(k.startswith("pred_layer.asm") for k in hf_state):
        raise UserError(f"{source}: adaptive-softmax output layers (params.asm=True) are not supported")
    heads = num_heads or p.get("n_heads")
    if not heads:
        raise UserError(f"{source}: params.n_heads is missing; pass --num-heads")
    n_words = int(p.get("n_words") or words.shape[0])
    dico = ckpt.get("dico_id2word")
    if isinstance(dico, dict) and dico and len(dico) != n_words:
        raise UserError(f"{source}: dico_id2word has {len(dico)} words but params.n_words={n_words}: "
                        f"the dictionary and the model disagree on the vocabulary size")
    n_langs = int(p.get("n_langs", 1))
    lang2id = p.get("lang2id") or {v: k for k, v in (p.get("id2lang") or {}).items()}
    positions = hf_state.get("transformer.position_embeddings.weight")
    layers = {int(m.group(1)) for k in hf_state if (m := re.match(r"transformer\.attentions\.(\d+)\.", k))}
    hf_cfg = {
        "model_type": "xlm",
        "architectures": ["XLMWithLMHeadModel" if "pred_layer.proj.bias" in hf_state else "XLMModel"],
        "vocab_size": n_words,
        "emb_dim": int(p.get("emb_dim") or words.shape[1]),
        "n_layers": int(p.get("n_layers") or (max(layers) + 1 if layers else 0)),
        "n_heads": int(heads),
        "n_langs": n_langs,
        "use_lang_emb": bool(p.get("use_lang_emb", True)),
        "sinusoidal_embeddings": bool(p.get("sinusoidal_embeddings", False)),
        "gelu_activation": bool(p.get("gelu_activation", True)),
        # XLM's N_MAX_POSITIONS (512) is a constant, not a param: the table itself is the record.
        "max_position_embeddings": int(positions.shape[0]) if positions is not None else 512,
        "dropout": float(p.get("dropout", 0.1)),
        "attention_dropout": float(p.get("attention_dropout", 0.1)),
        "lang2id": dict(lang2id) if lang2id else None,
        **{k: int(p[k]) for k in ("bos_index", "eos_index", "pad_index", "unk_index", "mask_index") if k in p},
    }
    return hf_cfg, hf_state, names


# ------------------------------------------------------------------------------- encoder-decoder (MT)

MT_ARCHITECTURE = "EncoderDecoderModel"  # SourceInfo.architecture of every encoder-decoder source
MT_LANGS_KEY = "xlm_jax_langs"  # config.json key of an exported EncoderDecoderModel: its target-language codes


def _is_xlm_mt(ckpt: Any) -> bool:
    return isinstance(ckpt, dict) and "model" not in ckpt and "encoder" in ckpt and "decoder" in ckpt


def mt_param_shapes(cfg: EncoderDecoderConfig) -> dict:
    """The `EncoderDecoder` parameter shapes for `cfg` ({encoder, decoder}), without allocating anything."""
    abstract = jax.eval_shape(lambda key: nn.unbox(init_mt_params(EncoderDecoder(cfg), key)), jax.random.key(0))
    return jax.tree_util.tree_map(lambda x: tuple(x.shape), abstract)


def _check_mt_vocab(cfg: EncoderDecoderConfig, vocab_size: int | None, source: str) -> None:
    if vocab_size is not None:
        enc = cfg.encoder
        hf_mapping.check_shape("encoder/embeddings/word_embeddings/embedding (--vocab-size)",
                               (enc.vocab_size, enc.hidden_size), (vocab_size, enc.hidden_size), source)


def _from_hf_seq2seq(hf_cfg: dict, state: dict[str, np.ndarray], source: str, vocab_size: int | None
                     ) -> tuple[dict, EncoderDecoderConfig]:
    """An HF `EncoderDecoderModel` (XLM-R encoder, `XLMRobertaForCausalLM` decoder with cross-attention) -> our
    params and config. The target-language codes come from config.json's `xlm_jax_langs` (what
    `export_hf_seq2seq` writes), one per row of the decoder's token-type table; without it the model has
    `type_vocab_size` unnamed target languages."""
    try:
        cfg = hf_seq2seq.hf_seq2seq_config_to_config(hf_cfg, source)
    except KeyError as e:
        raise UserError(f"{source}: the encoder-decoder configuration (config.json) lacks the key {e}") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: malformed encoder-decoder configuration (config.json): {e}") from None
    langs = hf_cfg.get(MT_LANGS_KEY)
    if langs:
        if (not isinstance(langs, list) or not all(isinstance(x, str) for x in langs)
                or len(langs) != cfg.target_langs):
            raise UserError(f"{source}: config.json {MT_LANGS_KEY}={langs!r:.80} must list {cfg.target_langs} "
                            "language codes, one per row of the decoder's token-type table")
        named = dict(n_langs=len(langs), langs=tuple(langs))
        cfg = EncoderDecoderConfig(cfg.encoder.replace(**named), cfg.decoder.replace(**named))
    _check_mt_vocab(cfg, vocab_size, source)
    params = hf_seq2seq.hf_seq2seq_to_params(state, cfg, mt_param_shapes(cfg), source)
    return params, cfg


def _layer_count(state: dict[str, Any]) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(r"attentions\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _from_xlm_mt(ckpt: dict, source: str, vocab_size: int | None, num_heads: int | None
                 ) -> tuple[dict, EncoderDecoderConfig]:
    """facebookresearch/XLM's MT checkpoint (`{"encoder", "decoder", "params", "dico_*"}`, as its trainer's
    `save_checkpoint` / `save_model` write it) -> our params and config. The hyperparameters are read as for an
    XLM MLM `.pth` (`params`: emb_dim, n_heads, n_langs, lang2id, special indices, ...); layer counts from the
    tensors (`params.n_enc_layers` / `n_dec_layers`), so a stale `n_layers` cannot mislead."""
    sides = {}
    for side in ("encoder", "decoder"):
        state = _to_numpy_state(ckpt[side], f"{source} ({side})")
        sides[side] = {k.removeprefix("module."): v for k, v in state.items()}
    p = _namespace_dict(ckpt.get("params"), "params", source)
    layers = {side: _layer_count(sides[side]) for side in sides}
    for side, n in layers.items():
        if n == 0:
            raise UserError(f"{source}: the {side} state dict holds no layers (attentions.N.*)")
    # The encoder is an XLM MLM without its prediction head's own weights: read its config as `_xlm` does.
    enc_state = {k: v for k, v in sides["encoder"].items() if not k.startswith("pred_layer.")}
    as_mlm = {"model": enc_state, "params": {**p, "n_layers": layers["encoder"]},
              "dico_id2word": ckpt.get("dico_id2word")}
    hf_cfg, _, _ = _xlm(as_mlm, source, num_heads)
    try:
        encoder, _ = hf_mapping.hf_config_to_model_config(hf_cfg, source)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{source}: malformed XLM params: {e}") from None
    hf_mapping.check_xlm_intermediate(encoder, source)
    cfg = EncoderDecoderConfig(encoder, encoder.replace(num_layers=layers["decoder"]))
    _check_mt_vocab(cfg, vocab_size, source)
    params = hf_seq2seq.xlm_mt_to_params(sides, cfg, mt_param_shapes(cfg), source)
    return params, cfg


def export_hf_seq2seq(params: dict, config: EncoderDecoderConfig, out_dir: str | Path) -> str:
    """Writes an encoder-decoder as a Hugging Face `EncoderDecoderModel` directory (config.json +
    model.safetensors) -> its architecture. `EncoderDecoderModel.from_pretrained(out_dir)` computes our logits
    (to 1e-4; `decoder_token_type_ids` = the target language id); config.json records the target-language
    codes under `xlm_jax_langs`, which `load_any` reads back. Only post-LN XLM-R-family models have this layout:
    UserError otherwise (XLM's encoder-decoder has no transformers class)."""
    state = hf_seq2seq.params_to_hf_seq2seq(params, config)  # raises UserError for other families
    hf_config = hf_seq2seq.hf_seq2seq_config(config)
    if config.decoder.langs:
        hf_config[MT_LANGS_KEY] = list(config.decoder.langs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return MT_ARCHITECTURE


# ----------------------------------------------------------------------------------------------- loading

def param_shapes(cfg: ModelConfig, kind: str | None = None, num_labels: int = 2) -> dict:
    """Our parameter shapes for `cfg` (with a task head of `kind` and `num_labels` outputs: {encoder,
    classifier}; else the masked LM's {encoder, lm_head}), without allocating anything."""
    model = families.task_model(cfg, kind, num_labels) if kind else families.masked_lm(cfg)
    abstract = jax.eval_shape(lambda key: nn.unbox(init_params(model, key)), jax.random.key(0))
    return jax.tree_util.tree_map(lambda x: tuple(x.shape), abstract)


def head_kind(architecture: str) -> str | None:
    """The task head kind ("sequence", "token", "span") of any family's fine-tuned HF class; None for the masked LM
    and the bare encoder."""
    return hf_mapping.head_kind(architecture) or hf_families.head_kind(architecture)


def _is_bare(architecture: str) -> bool:
    return architecture.endswith("Model") and not architecture.endswith("WithLMHeadModel")


def _strip_base_prefix(state: dict[str, np.ndarray], architecture: str) -> dict[str, np.ndarray]:
    # Encoder-only tables have no "roberta." / "transformer." prefix, but files written from a model with a head
    # (e.g. ...ForSequenceClassification imported as its encoder) keep it.
    if not _is_bare(architecture):
        return state
    for base in ("roberta.", "transformer."):
        if any(k.startswith(base) for k in state):
            return {k.removeprefix(base): v for k, v in state.items()}
    return state


def _check_layer_count(state: dict[str, np.ndarray], cfg: ModelConfig, source: str) -> None:
    found = {int(m.group(1)) for k in state
             if (m := re.search(r"(?:encoder\.layer|attentions|(?:^|\.)layers)\.(\d+)\.", k))}
    if found and max(found) + 1 != cfg.num_layers:
        raise UserError(f"{source}: the tensors hold {max(found) + 1} layers but the config says "
                        f"num_layers={cfg.num_layers}")


def check_architecture(architecture: str, cfg: ModelConfig, source: str) -> None:
    known = hf_mapping.HF_ARCHITECTURES + hf_families.architectures()
    if architecture not in known:
        raise UserError(f"{source}: unknown architecture {architecture!r}; valid: {', '.join(known)}")
    rope = hf_families.module_for(cfg.family)
    if rope is not None:
        valid = list(rope.ARCHITECTURES)
    else:
        family = hf_mapping.class_prefix(cfg)
        valid = ([f"{family}ForMaskedLM", f"{family}Model"] if cfg.family == "xlmr"
                 else ["XLMWithLMHeadModel", "XLMModel"]) + list(hf_mapping.HEAD_ARCHITECTURES[family].values())
    if architecture not in valid:
        raise UserError(f"{source}: architecture {architecture} does not fit this model "
                        f"(family {cfg.family}, pre_layer_norm={cfg.pre_layer_norm}); valid: {', '.join(valid)}")


def default_architecture(cfg: ModelConfig, with_head: bool = True, kind: str | None = None) -> str:
    """transformers' class for `cfg`: with a task head of `kind` ("sequence", "token", "span") its fine-tuned
    class (`XLMRobertaForSequenceClassification`, ...), else the masked LM (`with_head`) or the bare encoder.
    ModernBERT / EuroBERT: their own classes (`hf_families`); UserError for a EuroBERT span head, which
    transformers lacks."""
    rope = hf_families.module_for(cfg.family)
    if rope is not None:
        return rope.default_architecture(cfg, kind or ("mlm" if with_head else None))
    if kind:
        return hf_mapping.head_architecture(cfg, kind)
    if cfg.family == "xlm":
        return "XLMWithLMHeadModel" if with_head else "XLMModel"
    base = "XLMRobertaXL" if cfg.pre_layer_norm else "XLMRoberta"
    return base + ("ForMaskedLM" if with_head else "Model")


def _from_hf_state(hf_cfg: dict, state: dict[str, np.ndarray], source: str, vocab_size: int | None,
                   names: dict[str, str] | None = None) -> tuple[dict, ModelConfig, str]:
    rope = hf_families.module_for_hf(hf_cfg)  # ModernBERT / EuroBERT, else None: XLM / XLM-R
    mapping = rope or hf_mapping
    try:
        cfg, arch = mapping.hf_config_to_model_config(hf_cfg, source)
    except KeyError as e:
        raise UserError(f"{source}: the model configuration (config.json) lacks the key {e}") from None
    except (TypeError, ValueError) as e:  # e.g. a number given as a string
        raise UserError(f"{source}: malformed model configuration (config.json): {e}") from None
    hf_mapping.check_xlm_intermediate(cfg, source)
    if rope is None:  # the RoPE families' hf_to_params strip their own prefix
        state = _strip_base_prefix(state, arch)
    kind = head_kind(arch)
    shapes = param_shapes(cfg, kind, len(hf_mapping.hf_labels(hf_cfg, kind)) if kind else 2)
    table = rope.table(cfg, arch) if rope is not None else hf_mapping.table_for(cfg, arch)
    word_key = next(e.hf for e in table if e.ours[-2] == "word_embeddings")
    if vocab_size is not None and vocab_size != cfg.vocab_size:
        got = state[word_key].shape if word_key in state else (cfg.vocab_size, cfg.hidden_size)
        hf_mapping.check_shape(f"{word_key} (--vocab-size {vocab_size})", got, (vocab_size, cfg.hidden_size), source)
    _check_layer_count(state, cfg, source)
    try:
        params = mapping.hf_to_params(state, cfg, arch, shapes, source)
    except UserError as e:
        if not names:
            raise
        # Quote the name the user's file actually uses next to the HF name.
        message = re.sub(r"tensor (\S+)", lambda m: f"tensor {m.group(1)}"
                         + (f" ({names[m.group(1)]} in the file)" if m.group(1) in names else ""), str(e), count=1)
        raise UserError(message) from None
    return params, cfg, arch


def _num_params(params: dict) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


def _tokenizer_files(directory: Path, run_dir: bool = False) -> tuple[str, ...]:
    # A training run directory's tokenizer record (tokenizer_record.json; tokenizer.json in runs written before
    # it was renamed) is not a Hugging Face fast tokenizer: copied into an export, transformers would fail to
    # read it. `run_dir` is kept for callers; the record is told apart by its contents.
    names = [f for f in TOKENIZER_FILES if not (f == "tokenizer.json" and read_run_record(directory) is not None
                                                and not _is_hf_tokenizer(directory / f))]
    return tuple(str(directory / f) for f in names if (directory / f).is_file())


def _is_hf_tokenizer(path: Path) -> bool:
    try:
        return path.is_file() and _is_tokenizer(path)
    except UserError:
        return False


def orbax_tokenizer_files(path: str | Path) -> tuple[str, ...]:
    """Tokenizer files of an xlm_jax checkpoint: in the directory given, else in its checkpoints directory, else
    in the run directory above `checkpoints/` or `best/` (where training copies tokenizer.model, and fine-tuning
    its tokenizer), else the tokenizer a fine-tuning output written before that copy recorded."""
    path = Path(path)
    directory, _ = checkpoint.resolve(path)
    places = [path, directory] + ([directory.parent] if directory.name in ("checkpoints", "best") else [])
    found = next((files for d in places if (files := _tokenizer_files(d, run_dir=(d / "checkpoints").is_dir()))), ())
    if not found and is_task_checkpoint(path.absolute()):
        recorded, _ = finetune_tokenizer(path.absolute())
        if recorded is not None:
            found = (str(recorded),)
    return found


def source_tokenizer_files(path: str | Path) -> tuple[str, ...]:
    """Tokenizer files next to a Hugging Face directory, a fairseq model.pt or an XLM .pth (what `load_any`
    carries as `SourceInfo.tokenizer_files`), without reading the weights."""
    kind, p = detect(path)
    if kind == "orbax":
        return orbax_tokenizer_files(p)
    return _tokenizer_files(p if kind == "hf" else p.parent)


def _is_orbax(path: Path) -> bool:
    try:
        checkpoint.resolve(path)
        return True
    except UserError:
        return False


def detect(src: str | Path) -> tuple[str, Path]:
    """-> ("orbax" | "hf" | "pickle", path to read). Pickles are told apart (fairseq / XLM) by their contents."""
    path = Path(src)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    path, _ = fine_tuned_checkpoint(path)  # a fine-tuning output: its best checkpoint, as xlm_jax.load reads it
    if _is_orbax(path):
        return "orbax", path
    if path.is_file() and path.name in ("config.json", "model.safetensors", "model.safetensors.index.json"):
        path = path.parent
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf", path
        picks = [path / n for n in ("model.pt", "checkpoint_best.pt", "checkpoint_last.pt") if (path / n).is_file()]
        picks += sorted(path.glob("*.pth"))
        if picks:
            return "pickle", picks[0]
    elif path.suffix in _PICKLE_SUFFIXES:
        if path.name.startswith("pytorch_model") and (path.parent / "config.json").is_file():
            return "hf", path.parent
        return "pickle", path
    near = next((d for d in (path, path.parent) if (d / FINETUNE_CONFIG).is_file() and (d / "best").is_dir()), None)
    raise UserError(
        f"{src}: not a recognised checkpoint; expected an xlm_jax checkpoint (<step>/params), a Hugging Face "
        f"directory (config.json + model.safetensors or pytorch_model.bin), a fairseq XLM-R model.pt or an "
        f"original XLM .pth" + (f"; the fine-tuned model here is {near / 'best'}" if near else "")
    )


def _encoder_pickle(ckpt: Any, path: Path, source: str, vocab_size: int | None, num_heads: int | None
                    ) -> tuple[str, dict, ModelConfig, str]:
    """A fairseq XLM-R model.pt or an original XLM (MLM) .pth -> (kind, params, config, architecture)."""
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        keys = ", ".join(map(str, list(ckpt)[:8])) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise UserError(f"{path}: expected a dict with a 'model' state dict (fairseq model.pt or XLM .pth) or "
                        f"'encoder' and 'decoder' state dicts (XLM MT .pth); found {keys}")
    keys = list(ckpt["model"]) if isinstance(ckpt["model"], dict) else []
    if "params" in ckpt or any(k.removeprefix("module.").startswith("attentions.") for k in keys):
        kind = "xlm"
        hf_cfg, state, names = _xlm(ckpt, source, num_heads)
    elif any(".sentence_encoder." in k for k in keys):
        kind = "fairseq"
        hf_cfg, state, names = _fairseq(ckpt, source, num_heads)
    else:
        raise UserError(f"{path}: neither a fairseq XLM-R nor an original XLM checkpoint "
                        f"(first 'model' keys: {', '.join(keys[:5])})")
    params, cfg, arch = _from_hf_state(hf_cfg, state, source, vocab_size, names)
    return kind, params, cfg, arch


def xlm_dico(ckpt: dict, source: str) -> tuple[str, ...]:
    """The words of an original XLM checkpoint's dictionary in id order, from `dico_id2word` (else `dico_word2id`);
    () when it has neither. Raises UserError when the ids are not 0..n-1 or a word is not a str."""
    id2word = ckpt.get("dico_id2word")
    if not id2word and isinstance(ckpt.get("dico_word2id"), dict):
        id2word = {i: w for w, i in ckpt["dico_word2id"].items()}
    if not id2word:
        return ()
    if not isinstance(id2word, dict) or sorted(id2word) != list(range(len(id2word))) or not all(
            isinstance(w, str) for w in id2word.values()):
        raise UserError(f"{source}: dico_id2word must map the ids 0..n-1 to words (str): not an XLM dictionary")
    return tuple(id2word[i] for i in range(len(id2word)))


def find_bpe_codes(pth: Path) -> Path | None:
    """The fastBPE codes file next to an XLM .pth: `codes`, else the one `codes_*` (XLM's downloads name them
    codes_xnli_15, codes_enfr, ...); None when there is none. Raises UserError when several `codes_*` are there."""
    if (pth.parent / "codes").is_file():
        return pth.parent / "codes"
    found = sorted(p for p in pth.parent.glob("codes_*") if p.is_file())
    if len(found) > 1:
        raise UserError(f"{pth.parent} holds several BPE codes files ({', '.join(p.name for p in found)}): pick the "
                        "model's with --bpe-codes FILE")
    return found[0] if found else None


def load_any(src: str | Path, *, vocab_size: int | None = None, num_heads: int | None = None,
             architecture: str | None = None) -> tuple[dict, ModelConfig | EncoderDecoderConfig, SourceInfo]:
    """Any supported checkpoint -> (our params as NumPy arrays, ModelConfig, SourceInfo). Pure apart from reading.

    An encoder-decoder (machine translation) source gives params {encoder, decoder} and an
    `EncoderDecoderConfig` (`SourceInfo.architecture` = MT_ARCHITECTURE): our MT checkpoints, Hugging Face
    `EncoderDecoderModel` directories (XLM-R encoder + `XLMRobertaForCausalLM` decoder) and original XLM MT
    `.pth` files (`encoder` / `decoder` state dicts); callers that need an encoder check the config's type.

    `architecture` restricts the import (a bare `...Model` drops the LM head); `vocab_size` is the size the
    caller's tokenizer expects: a checkpoint of another size is refused, naming the tensor and both shapes.
    """
    for key, value in (("--vocab-size", vocab_size), ("--num-heads", num_heads)):
        if value is not None:
            check_range(key, value, 1, integer=True)
    kind, path = detect(src)
    source = str(path)
    tokenizer_files: tuple[str, ...] = ()
    task, note, dico = None, "", ()
    if kind == "orbax":
        params, cfg = checkpoint.restore_params(path)
        if vocab_size is not None:
            enc = cfg.encoder if isinstance(cfg, EncoderDecoderConfig) else cfg
            hf_mapping.check_shape("encoder/embeddings/word_embeddings/embedding (--vocab-size)",
                                   (enc.vocab_size, enc.hidden_size), (vocab_size, enc.hidden_size), source)
        if "classifier" in params:
            task = fine_tuned_checkpoint(path)[1]
            if task is None:  # a head whose labels nothing records: it cannot be exported faithfully
                params = {k: v for k, v in params.items() if k != "classifier"}
                note = (f"left out the classifier head of {source}: no {TASK_FILE} records its task and labels "
                        "(fine-tuning writes one next to OUT/best)")
        arch = (MT_ARCHITECTURE if isinstance(cfg, EncoderDecoderConfig)
                else default_architecture(cfg, "lm_head" in params, task.spec.kind if task else None))
        tokenizer_files = orbax_tokenizer_files(path)
    elif kind == "hf":
        try:
            hf_cfg = json.loads(read_text(path / "config.json", "config file"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path / 'config.json'}: not valid JSON: {e}") from None
        if not isinstance(hf_cfg, dict):
            raise UserError(f"{path / 'config.json'}: a JSON {type(hf_cfg).__name__}, expected an object (a Hugging "
                            "Face model configuration)")
        state = _read_hf_weights(path)
        if hf_cfg.get("model_type") == "encoder-decoder":  # an EncoderDecoderModel: our MT checkpoint format
            params, cfg = _from_hf_seq2seq(hf_cfg, state, source, vocab_size)
            arch = MT_ARCHITECTURE
        else:
            params, cfg, arch = _from_hf_state(hf_cfg, state, source, vocab_size)
        task = None if isinstance(cfg, EncoderDecoderConfig) else _hf_task(hf_cfg, arch, cfg)
        named = (hf_cfg.get("architectures") or [arch])[0]
        if named != arch and head_kind(arch) is None and "For" in str(named):
            note = f"{named}'s head has no xlm_jax counterpart: read the encoder only ({arch})"
        tokenizer_files = _tokenizer_files(path)
    else:
        ckpt = torch_load(path)
        if _is_xlm_mt(ckpt):  # facebookresearch/XLM's MT checkpoint: encoder + decoder
            kind = "xlm"
            params, cfg = _from_xlm_mt(ckpt, source, vocab_size, num_heads)
            arch = MT_ARCHITECTURE
        else:
            kind, params, cfg, arch = _encoder_pickle(ckpt, path, source, vocab_size, num_heads)
        tokenizer_files = _tokenizer_files(path.parent)
        dico = xlm_dico(ckpt, source) if kind == "xlm" else ()
    if architecture is not None and isinstance(cfg, EncoderDecoderConfig):
        raise UserError(f"{source}: --architecture {architecture} is for encoders; an encoder-decoder (MT) "
                        f"checkpoint is written as {MT_ARCHITECTURE} (leave --architecture out)")
    if architecture is not None:
        check_architecture(architecture, cfg, source)
        want = head_kind(architecture)
        if _is_bare(architecture):
            if task is not None:
                note = (f"left out the {task.task} head (labels {', '.join(task.labels)}): {architecture} is the "
                        f"encoder alone; --architecture {arch} keeps it")
            params, task = {k: v for k, v in params.items() if k not in ("lm_head", "classifier")}, None
        elif want is not None and (task is None or task.spec.kind != want):
            has = f"a {task.task} head ({arch})" if task else f"no task head ({arch})"
            raise UserError(f"{source}: --architecture {architecture} needs a fine-tuned {want} head, but the "
                            f"checkpoint has {has}; use {arch}")
        elif want is None and "lm_head" not in params:
            keep = f"{arch} (keeps the {task.task} head) or " if task else ""
            raise UserError(f"{source}: --architecture {architecture} needs an LM head, but the checkpoint "
                            f"({arch}) has none; use {keep}{default_architecture(cfg, False)}")
        arch = architecture
    info = SourceInfo(kind, source, arch, _num_params(params), tokenizer_files, task, note, dico)
    return params, cfg, info


def _hf_task(hf_cfg: dict, arch: str, cfg: ModelConfig) -> TaskInfo | None:
    """The task of a fine-tuned HF model (None for other classes): the one `export_hf` recorded
    (`xlm_jax_task`), else by head kind: sequence -> task classification (xnli / pawsx when `finetuning_task`
    names one and the labels are its own), token -> ner, span -> qa; labels from `id2label`."""
    kind = head_kind(arch)
    if kind is None:
        return None
    labels = hf_mapping.hf_labels(hf_cfg, kind)
    max_len = min(cfg.max_positions, 512)
    record = hf_cfg.get("xlm_jax_task")
    if isinstance(record, dict):
        try:
            info = TaskInfo(str(record["task"]), labels, int(record.get("max_len", max_len)),
                            dict(record.get("options") or {}))
            if info.spec.kind == kind:
                return info
        except (KeyError, TypeError, ValueError, UserError):
            pass
    name = {"sequence": "classification", "token": "ner", "span": "qa"}[kind]
    named = hf_cfg.get("finetuning_task")
    if kind == "sequence" and named in ("xnli", "pawsx") and get_task(named).labels == labels:
        name = named
    return TaskInfo(name, labels, max_len)


# ----------------------------------------------------------------------------------------------- writing

def export_hf(params: dict, config: ModelConfig, out_dir: str | Path, architecture: str | None = None,
              task: TaskInfo | None = None) -> str:
    """Writes `out_dir/config.json` + `out_dir/model.safetensors` for transformers; returns the architecture.

    `params` {encoder, lm_head} gives the masked LM (`XLMRobertaForMaskedLM`, ...), {encoder} the bare encoder,
    {encoder, classifier} a fine-tuned model with its head: `task` (its TaskInfo: `xlm_jax.load(...).task`, or
    `task.json` of a fine-tuning output) picks the class (`XLMRobertaForSequenceClassification` /
    `...ForTokenClassification` / `...ForQuestionAnswering`, XLM: `XLMForSequenceClassification` /
    `XLMForTokenClassification` / `XLMForQuestionAnsweringSimple`) and gives config.json's `id2label` /
    `label2id`, `finetuning_task` and `xlm_jax_task` (task, labels, max_len, options: read back by `load_any`).
    `architecture` overrides the class; a bare `...Model` leaves any head out. Raises UserError for a head
    without `task`, a class that does not fit the params, or an XLM FFN width other than 4 x hidden."""
    kind = task.spec.kind if task is not None else None
    if "classifier" in params and task is None and not (architecture and _is_bare(architecture)):
        raise UserError(f"{out_dir}: these params hold a task head (classifier) but no task was given: pass "
                        f"task= (its TaskInfo, with the labels) or architecture={default_architecture(config, False)} "
                        "to write the encoder alone")
    if kind is not None and "classifier" not in params:
        raise UserError(f"{out_dir}: task {task.task} was given but these params have no classifier head")
    with_head = "lm_head" in params
    arch = architecture or default_architecture(config, with_head, kind)
    check_architecture(arch, config, str(out_dir))
    want = head_kind(arch)
    if want is not None and want != kind:
        has = f"a {task.task} ({kind}) head" if task else "no task head"
        raise UserError(f"{out_dir}: {arch} needs a {want} head but these params have {has}; "
                        f"use {default_architecture(config, with_head, kind)}")
    if want is None and not _is_bare(arch) and not with_head:
        raise UserError(f"{out_dir}: {arch} needs an LM head but these params have none; "
                        f"use {default_architecture(config, False, kind)}")
    hf_mapping.check_xlm_intermediate(config, str(out_dir))
    rope = hf_families.module_for(config.family)
    if rope is not None:  # ModernBERT / EuroBERT: their own names; tied copies left out only when tied
        state = rope.params_to_hf(params, config, arch)
        tied = rope.TIED_KEYS if config.tie_word_embeddings else ()
        state = {k: v for k, v in state.items() if k not in tied}
        hf_config = rope.model_config_to_hf_config(config, arch)
        if want in ("sequence", "token"):
            hf_config |= {"id2label": {str(i): label for i, label in enumerate(task.labels)},
                          "label2id": {label: i for i, label in enumerate(task.labels)}}
    else:
        state = hf_mapping.params_to_hf(params, config, arch)
        state = {k: v for k, v in state.items() if k not in TIED_HF_KEYS}
        hf_config = hf_mapping.model_config_to_hf_config(config, arch)
    if want is not None:
        hf_config |= hf_mapping.head_config(config, arch, task.labels)
        hf_config |= {"finetuning_task": task.task, "xlm_jax_task": {"task": task.task, "labels": list(task.labels),
                                                                      "max_len": task.max_len, "options": task.options}}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    return arch


def model_special_ids(config: ModelConfig) -> dict:
    """The model's special ids as `check_tokenizer_fits` takes them. The mask id only when the config names it
    (mask_token_id >= 0): -1 means "the last row", which is not the tokenizer's mask when the model has spare
    rows."""
    ids = dict(bos_id=config.bos_token_id, pad_id=config.pad_token_id, eos_id=config.eos_token_id,
               unk_id=config.unk_token_id)
    if config.mask_token_id >= 0:
        ids["mask_id"] = config.mask_token_id
    return ids


def check_tokenizer_json(files: tuple[str, ...], config: ModelConfig, source: str) -> None:
    """A source whose tokenizer is a Hugging Face tokenizer.json (no SentencePiece model beside it: ModernBERT,
    mmBERT, EuroBERT) must fit the model before anything is written: `check_tokenizer_fits`'s UserError (sizes
    and every differing special id) otherwise. SentencePiece sources are left to the readers, as before."""
    names = {Path(f).name: f for f in files}
    if "tokenizer.json" not in names or {"sentencepiece.bpe.model", "tokenizer.model"} & set(names):
        return
    if not _is_hf_tokenizer(Path(names["tokenizer.json"])):
        return
    check_tokenizer_fits(HFTokenizer.load(names["tokenizer.json"]), config.vocab_size, f"convert {source}",
                         **model_special_ids(config))


def convert(src: str | Path, dst: str | Path, *, to: str | None = None, architecture: str | None = None,
            force: bool = False, vocab_size: int | None = None, num_heads: int | None = None,
            bpe_codes: str | Path | None = None) -> str:
    """Reads SRC, writes DST; returns the one-line summary the CLI prints.

    An original XLM .pth gets its tokenizer written into DST (`xlm_jax.data.xlm_bpe`: vocab.json from its dictionary,
    merges.txt = the fastBPE codes, tokenizer_config.json with the languages and whether it lowercases, read from the
    dictionary) when `bpe_codes` is given or a `codes` / `codes_*` file lies next to the .pth. Raises UserError,
    before anything is written, for `bpe_codes` with another kind of source, a codes file that does not parse or
    does not belong to the dictionary, and a dictionary that is not XLM's."""
    src, dst = Path(src), Path(dst)
    kind, path = detect(src)
    outputs.check_dir(dst, "convert", force=force)
    outputs.check_overlap(dst, src)
    if bpe_codes is not None and kind != "pickle":
        raise UserError(f"--bpe-codes {bpe_codes}: BPE codes belong to an original XLM .pth; {src} is a {kind} "
                        "checkpoint, which carries its own tokenizer files")
    codes = Path(bpe_codes) if bpe_codes is not None else find_bpe_codes(path) if kind == "pickle" else None
    if codes is not None:
        xlm_bpe.read_codes(codes)  # a file that does not parse is refused before the weights are read
    to = to or ("hf" if kind == "orbax" else "orbax")
    if to not in ("orbax", "hf"):
        raise UserError(f"--to {to!r}: valid values are 'orbax' and 'hf'")
    params, cfg, info = load_any(src, vocab_size=vocab_size, num_heads=num_heads, architecture=architecture)
    if to == "hf" and isinstance(cfg, EncoderDecoderConfig):
        try:  # checked before anything is written
            hf_seq2seq.hf_seq2seq_tables(cfg)
        except UserError as e:
            raise UserError(f"{src}: --to hf: {e}; XLM's encoder-decoder has no transformers class, keep it as "
                            "xlm_jax (--to orbax)") from None
    # an encoder-decoder's tokenizer is its encoder's (both sides share the vocabulary)
    check_tokenizer_json(info.tokenizer_files, getattr(cfg, "encoder", cfg), str(src))
    if codes is not None and info.kind != "xlm":
        if bpe_codes is not None:
            raise UserError(f"--bpe-codes {bpe_codes}: {src} is a {info.kind} checkpoint, not an original XLM .pth")
        codes = None  # a codes file next to a fairseq model.pt is not ours to read
    if codes is not None:
        if not info.dico:
            raise UserError(f"{src}: no dico_id2word / dico_word2id in the checkpoint, so --bpe-codes {codes} has no "
                            "dictionary to give ids: give an XLM .pth that holds its dictionary")
        xlm_bpe.check_codes_fit(xlm_bpe.read_codes(codes), xlm_bpe.dico_vocab(info.dico, str(src)), str(codes),
                                str(src))
    langs = tuple(getattr(cfg, "encoder", cfg).langs)
    lowercase = xlm_bpe.lowercased_dico(info.dico)

    def write(tmp: Path) -> str:
        # The tokenizer comes along either way, so that `xlm_jax.load(DST)` carries it; transformers'
        # XLMRobertaTokenizer looks for a SentencePiece model under the name sentencepiece.bpe.model.
        tmp.mkdir(parents=True, exist_ok=True)
        for f in info.tokenizer_files:
            name = Path(f).name
            shutil.copy2(f, tmp / ("sentencepiece.bpe.model" if to == "hf" and name == "tokenizer.model" else name))
        if codes is not None:
            xlm_bpe.write_xlm_tokenizer(tmp, codes, info.dico, langs, lowercase, str(src))
        if to == "orbax":
            checkpoint.save_params(tmp, params, cfg, step=0)
            if info.task is not None:  # the head's task and labels: DST is a fine-tuned checkpoint, like OUT/best
                (tmp / TASK_FILE).write_text(info.task.to_json())
            return info.architecture
        if isinstance(cfg, EncoderDecoderConfig):
            return export_hf_seq2seq(params, cfg, tmp)
        return export_hf(params, cfg, tmp, info.architecture, info.task)

    arch = outputs.write_atomically(dst, write, "convert")
    head = f", {info.task.task} head" if info.task is not None else ""
    labels = f" [{', '.join(info.task.labels)}]" if info.task is not None and info.task.spec.kind != "span" else ""
    return (f"converted {info.kind} checkpoint {src} ({arch}{head}{labels}, {info.num_params:,} parameters) "
            f"-> {'xlm_jax orbax' if to == 'orbax' else 'Hugging Face'} {dst}"
            + (f"; tokenizer: Moses + BPE codes {codes}{' (lowercased, accents stripped)' if lowercase else ''}"
               if codes is not None else "")
            + (f"\nnote: {info.note}" if info.note else "")
            + ("\nnote: no BPE codes found next to it, so the output carries no tokenizer (text methods and "
               "translate need one): give the model's fastBPE codes with --bpe-codes FILE"
               if info.kind == "xlm" and codes is None and info.dico else ""))


# ------------------------------------------------------------------------------- sentence-transformers

ST_FORMAT = "sentence-transformers"


def _pooling_name(pooling: str | tuple[str, ...]) -> str:
    return pooling if isinstance(pooling, str) else "+".join(pooling)


def convert_sentence_transformers(src: str | Path, dst: str | Path, *, pooling: str | None = None,
                                  normalize: bool | None = None, max_seq_length: int | None = None,
                                  force: bool = False, vocab_size: int | None = None,
                                  num_heads: int | None = None) -> str:
    """SRC -> a sentence-transformers model directory DST (`convert --to sentence-transformers`); returns the
    one-line summary.

    SRC: anything `load_any` reads, or a sentence-transformers directory (modules.json; its pooling,
    normalisation, max_seq_length and prompts are kept unless overridden). DST holds, in the v2–v5 layout every
    sentence-transformers version reads (`xlm_jax.models.sentence_transformers.write_sentence_transformers`):
    the encoder as a bare Hugging Face model in the root (config.json + model.safetensors; an LM or task head is
    left out), modules.json, 1_Pooling/config.json (`pooling`, default "mean"), 2_Normalize when `normalize`
    (default False), sentence_bert_config.json (`max_seq_length`, default the model's max_positions),
    config_sentence_transformers.json (prompts), and the tokenizer files found with SRC (a `tokenizer.model` as
    `sentencepiece.bpe.model`, the name transformers' XLMRobertaTokenizer reads). `SentenceTransformer(DST)`
    then encodes as `xlm_jax.load(DST).embed` does. Written atomically (nothing on failure).

    A `pooling` other than the one SRC records (a sentence-transformers directory's, or the pooling a contrastive
    fine-tuning was trained with, from its task.json) is used, with a UserWarning naming both (`convert` prints
    it as a `warning:` line, as it prints other overrides' notes rather than refusing them).

    Raises UserError for an unknown pooling mode, a max_seq_length < 1 or above the model's positions, a
    source without tokenizer files, and what `load_any` / `outputs.check_dir` refuse."""
    src, dst = Path(src), Path(dst)
    if pooling is not None and pooling not in POOLING_MODES:
        raise UserError(f"--pooling {pooling!r}: valid modes are {', '.join(POOLING_MODES)}")
    if max_seq_length is not None:
        check_range("--max-seq-length", max_seq_length, 1, integer=True)
    base = read_sentence_transformers(src) if (src / "modules.json").is_file() else SentenceEmbeddingConfig()
    recorded = f"of {src} (its 1_Pooling/config.json)" if (src / "modules.json").is_file() else None
    if not (src / "modules.json").is_file() and is_task_checkpoint(src):
        task = fine_tuned_checkpoint(src)[1]
        if task is not None and task.spec.kind == "embedding":  # a contrastive fine-tuning output: its own pooling
            base = embedding_sentence_config(task.options, task.max_len)
            recorded = f"that {src} was trained with (its {TASK_FILE})"
    model_src = src / base.transformer_path
    detect(model_src)
    outputs.check_dir(dst, "convert", force=force)
    outputs.check_overlap(dst, src)
    params, cfg, info = load_any(model_src, vocab_size=vocab_size, num_heads=num_heads)
    if isinstance(cfg, EncoderDecoderConfig):
        raise UserError(f"{src}: an encoder-decoder (MT) checkpoint; --to {ST_FORMAT} needs an encoder (an MLM "
                        "or a fine-tuned encoder); an MT checkpoint goes to --to orbax or --to hf")
    length = max_seq_length or base.max_seq_length or cfg.max_positions
    if length > cfg.max_positions:
        raise UserError(f"--max-seq-length {length}: the model has {cfg.max_positions} positions (max_positions)")
    if not info.tokenizer_files:
        raise UserError(f"{src}: no tokenizer files found with it ({', '.join(TOKENIZER_FILES)}); "
                        "SentenceTransformer needs one")
    if recorded and pooling is not None and pooling != base.pooling:
        warnings.warn(f"--pooling {pooling} replaces the {_pooling_name(base.pooling)} pooling {recorded}: the "
                      "embeddings will differ from the source's", UserWarning, stacklevel=2)
    config = dataclasses.replace(base, pooling=base.pooling if pooling is None else pooling,
                                 normalize=base.normalize if normalize is None else normalize,
                                 max_seq_length=length, transformer_path="", embedding_dimension=None)
    encoder = {k: v for k, v in params.items() if k == "encoder"}
    arch = default_architecture(cfg, with_head=False)

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        for f in info.tokenizer_files:
            name = Path(f).name
            shutil.copy2(f, tmp / ("sentencepiece.bpe.model" if name == "tokenizer.model" else name))
        write_sentence_transformers(tmp, config, cfg.hidden_size)
        export_hf(encoder, cfg, tmp, arch)

    outputs.write_atomically(dst, write, "convert")
    return (f"converted {info.kind} checkpoint {src} ({arch}, {_num_params(encoder):,} parameters) -> "
            f"sentence-transformers {dst} (pooling {config.pooling}{', normalized' if config.normalize else ''}, "
            f"max_seq_length {length})")
