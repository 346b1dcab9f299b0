"""Continued pretraining: start a run from a published checkpoint, keep its tokenizer, train part of the model.

    python -m xlm_jax.train configs/continue_xlmr_base.yaml model.init_from=xlm-roberta-base/ data.corpus=my_text/
    python -m xlm_jax.train ... model.init_from=runs/default train.trainable=embeddings

`model.init_from=PATH` takes anything `python -m xlm_jax.convert` reads (`convert.detect`): a Hugging Face
directory, a fairseq XLM-R `model.pt`, our orbax checkpoint or run directory. The architecture is the checkpoint's;
`model.base` and `model.<field>` may only change the fields in `models.config.NON_ARCHITECTURE` (dtype, remat, scan,
dropout ...): any other field that differs is refused, listing every differing field. The parameters, LM head
included, are placed straight into their sharded layout (`jax.make_array_from_callback` per leaf, or orbax
restoring into sharded targets); the optimizer state and the schedule start fresh at step 0. A run that already
has checkpoints resumes from its own and never reads `init_from` again (it may since have been deleted).

Tokenizer (`data.tokenizer=PATH` or, by default, the checkpoint's own: an HF directory's `sentencepiece.bpe.model`,
a fairseq directory's `sentencepiece.bpe.model` + `dict.txt`, our run directory's `tokenizer.model`). fairseq's
`dict.txt` defines its ids (`fairseq_dict_ids`): line k is id 4 + k (after `<s> <pad> </s> <unk>`), `<mask>`
follows the last line; it is checked piece by piece against the SentencePiece model, and the model is used only
when the two agree with our id layout (`xlm_jax.tokenizer`: SentencePiece id i -> i + 1). A tokenizer whose size
differs from the checkpoint's vocabulary is refused naming both sizes; a larger one (new pieces appended) goes
through `xlm_jax.models.vocab_extension.extend_embeddings` once that module exists (`_extend`, the single call site).

Original XLM checkpoints (`.pth`, and HF `xlm` directories) tokenize with Moses + fastBPE (`dico_word2id`), which
the data pipeline does not implement: starting from one is refused with a message saying what is supported.

`train.trainable`: `all`, `embeddings` (the word embeddings and the LM-head bias: the lexical transfer recipe of
Artetxe, Ruder & Yogatama 2020, "On the cross-lingual transferability of monolingual representations"), or a
list of regular expressions over parameter paths such as `encoder/embeddings/word_embeddings/embedding` (a pattern
selects a path when it matches the whole path or a whole leading part of it, so `lm_head` selects the LM head).
Frozen parameters get `optax.set_to_zero` inside `optax.multi_transform`: no Adam moments are allocated for them
and they stay bit-identical. Gradient clipping then sees the trainable parameters' gradients only.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import yaml

from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import Tokenizer, check_tokenizer_fits
from xlm_jax.models.vocab_extension import extend_embeddings
from xlm_jax.models.config import NAMED_CONFIGS, NON_ARCHITECTURE, ModelConfig, require_encoder, to_dict as model_to_dict
from xlm_jax.pretrain.config import check_positions
from xlm_jax.workflows import convert
from xlm_jax.workflows.convert import param_shapes
from xlm_jax.training import checkpoint
from xlm_jax.training.optim import _key
from xlm_jax.training.step import boxed_abstract_params

# The vocabulary-sized parameters of the XLM-R / ModernBERT families: the word embeddings and the LM-head bias; the
# preset adds an untied LM projection (EuroBERT). A preset selects those its model has (a pattern of a preset may
# match nothing; the preset as a whole may not).
EMBEDDINGS = ("encoder/embeddings/word_embeddings/embedding", "lm_head/bias")
UNTIED_PROJECTION = "lm_head/decoder"
PRESETS = {"embeddings": (*EMBEDDINGS, UNTIED_PROJECTION)}
FAIRSEQ_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq Dictionary's first ids, before dict.txt's lines


# ---- train.trainable ---------------------------------------------------------------------------------------------


def param_paths(params: Any) -> list[str]:
    """The '/'-joined path of every leaf of `params` (plain or abstract arrays), in tree-flattening order."""
    return ["/".join(_key(e) for e in path if not isinstance(e, jax.tree_util.GetAttrKey))
            for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _selects(rx: re.Pattern, path: str) -> bool:
    parts = path.split("/")
    return any(rx.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1))


def trainable_mask(trainable: tuple[str, ...] | list[str], params: Any) -> Any | None:
    """A bool per leaf of `params` (True = trained), or None when every parameter is trained (`all`).

    Raises UserError for an empty list, `all` mixed with patterns, a pattern that is not a regular expression, and
    a pattern (or preset) that selects no parameter, naming it and listing the parameter paths."""
    items = tuple(trainable)
    if not items:
        raise UserError("train.trainable=[]: give all, embeddings, or a list of parameter-path patterns")
    if "all" in items:
        if len(items) > 1:
            raise UserError(f"train.trainable={list(items)}: 'all' already trains everything; give it alone")
        return None
    paths = param_paths(params)
    chosen: set[str] = set()
    for item in items:
        if not isinstance(item, str) or not item:
            raise UserError(f"train.trainable: {item!r} is not a parameter-path pattern (a non-empty string)")
        preset_hit: set[str] = set()
        for pattern in PRESETS.get(item, (item,)):
            try:
                rx = re.compile(pattern)
            except re.error as err:
                raise UserError(f"train.trainable: {pattern!r} is not a regular expression ({err})") from None
            hit = {p for p in paths if _selects(rx, p)}
            if not hit and item not in PRESETS:
                raise UserError(f"train.trainable: {pattern!r} matches no parameter of this model; valid: all, "
                                f"embeddings, or patterns over the paths {', '.join(paths)}")
            preset_hit |= hit
        if not preset_hit:
            raise UserError(f"train.trainable: {item!r} matches no parameter of this model; valid: all, "
                            f"embeddings, or patterns over the paths {', '.join(paths)}")
        chosen |= preset_hit
    treedef = jax.tree_util.tree_structure(params)
    return jax.tree_util.tree_unflatten(treedef, [p in chosen for p in paths])


def restrict_optimizer(optimizer: optax.GradientTransformation, trainable: tuple[str, ...], params: Any
                       ) -> optax.GradientTransformation:
    """`optimizer` for the trainable parameters, zero updates and no state for the others (`trainable_mask`;
    `params`: the parameters or their abstract shapes). Unchanged for `all`."""
    mask = trainable_mask(trainable, params)
    if mask is None:
        return optimizer
    labels = jax.tree.map(lambda m: "trained" if m else "frozen", mask)
    return optax.multi_transform({"trained": optimizer, "frozen": optax.set_to_zero()}, labels)


def describe_trainable(trainable: tuple[str, ...], params: Any) -> str | None:
    """'trainable: N of M parameters (...)' for the run's log, or None for `all`."""
    mask = trainable_mask(trainable, params)
    if mask is None:
        return None
    sizes = [int(np.prod(x.shape)) for x in jax.tree.leaves(params)]
    on = sum(s for s, m in zip(sizes, jax.tree.leaves(mask)) if m)
    return f"trainable: {on:,} of {sum(sizes):,} parameters ({', '.join(trainable)}); the rest is frozen"


# ---- the tokenizer -----------------------------------------------------------------------------------------------


def load_tokenizer(path: str | Path, key: str):
    """`Tokenizer.load`, its UserError prefixed with the config key that named the file."""
    try:
        return Tokenizer.load(path)
    except UserError as err:
        raise UserError(f"{key}={str(path)!r}: {err}") from None


def fairseq_dict_ids(dict_txt: Path) -> dict[str, int]:
    """fairseq's ids of the pieces of `dict_txt` (`<piece> <count>` per line, optionally `#fairseq:overwrite`):
    the Dictionary starts with `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3, line k (from 0) gets id 4 + k.
    Raises UserError for an unreadable file or a malformed line (naming its number)."""
    ids = {s: i for i, s in enumerate(FAIRSEQ_SPECIALS)}
    try:
        lines = dict_txt.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{dict_txt}: cannot read the fairseq dictionary ({err})") from None
    for number, line in enumerate(lines, 1):
        fields = line.rstrip().rsplit(" ", 2 if line.rstrip().endswith("#fairseq:overwrite") else 1)
        if len(fields) < 2 or not fields[1].lstrip("-").isdigit():
            raise UserError(f"{dict_txt}:{number}: expected '<piece> <count>', got {line[:60]!r}")
        piece = fields[0]
        if piece in ids and not line.rstrip().endswith("#fairseq:overwrite"):
            raise UserError(f"{dict_txt}:{number}: the piece {piece!r} is listed twice")
        ids.setdefault(piece, len(ids))
    return ids


def check_fairseq_dict(dict_txt: Path, tok) -> None:
    """Refuses a SentencePiece model whose ids (`xlm_jax.tokenizer`: piece i -> i + 1, `<mask>` last) differ from
    the ones fairseq's `dict.txt` defines, naming the first piece that differs and both sizes."""
    ids = fairseq_dict_ids(dict_txt)
    sp = tok.sp
    for piece, fid in ids.items():
        if fid < len(FAIRSEQ_SPECIALS):
            continue
        spm_id = sp.piece_to_id(piece)
        ours = spm_id + 1 if spm_id != sp.unk_id() else None
        if ours != fid:
            where = "is not in it" if ours is None else f"gets id {ours} from it"
            raise UserError(f"{dict_txt}: the piece {piece!r} has fairseq id {fid} (line {fid - 3}), but "
                            f"{tok.path} {where}: the SentencePiece model does not give fairseq's ids; give the "
                            "model the checkpoint was trained with")
    if len(ids) + 1 != len(tok):  # + <mask>, appended by fairseq after the dictionary
        raise UserError(f"{dict_txt} defines {len(ids) + 1} ids (with <mask>) but {tok.path} has {len(tok)}: "
                        "they are not the same vocabulary")


def _own_tokenizer(kind: str, path: Path) -> tuple[Path | None, Path | None, list[str]]:
    """(SentencePiece model, fairseq dict.txt, the places looked at) of a checkpoint."""
    if kind == "orbax":
        directory, _ = checkpoint.resolve(path)
        places = [directory / "tokenizer.model", directory.parent / "tokenizer.model"]
        found = next((p for p in places if p.is_file()), None)
        return found, None, [str(p) for p in places]
    directory = path if path.is_dir() else path.parent
    spm = directory / "sentencepiece.bpe.model"
    dict_txt = directory / "dict.txt" if kind == "fairseq" else None
    return (spm if spm.is_file() else None), (dict_txt if dict_txt and dict_txt.is_file() else None), [str(spm)]


# ---- model.init_from ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Start:
    """Where a run starts, decided (and checked) before its data is prepared (`prepare`)."""

    tokenizer: Path | None = None  # the SentencePiece model to prepare data with (None: the run trains one)
    config: ModelConfig | None = None  # the checkpoint's architecture (None: from model.base and the data)
    init_from: Path | None = None  # the checkpoint to load at step 0 (None: random, or resuming)
    kind: str = ""  # convert.detect's / load_any's kind of init_from
    host_params: dict | None = None  # NumPy parameters already read (fairseq, HF, or an extended vocabulary)
    tokenizer_sha256: str = ""  # of the tokenizer the run uses, to compare with a given data.dir's

    def log_lines(self, fresh: bool) -> list[str]:
        if self.init_from is None or not fresh:
            return []
        return [f"init: {self.kind} checkpoint {self.init_from} (optimizer and schedule start at step 0)"]


def _arch_diff(ours: ModelConfig, theirs: dict, fields: list[str] | None = None) -> list[str]:
    have = model_to_dict(ours)
    names = fields if fields is not None else sorted(theirs)
    return [f"model.{k}: checkpoint {have[k]!r}, config {theirs[k]!r}" for k in names
            if k not in NON_ARCHITECTURE and k in theirs and k in have
            and (list(theirs[k]) if isinstance(theirs[k], tuple) else theirs[k]) != have[k]]


# The ModelConfig fields a run takes from its data (`TrainConfig.model.resolve`), not from model.base.
DATA_FIELDS = ("langs", "n_langs", "vocab_size", "bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id",
               "mask_token_id")


def check_overrides(cfg, config: ModelConfig, where: str) -> None:
    """Refuses `model.base` / `model.<field>` values that contradict the checkpoint's architecture, listing every
    differing field; numerics and regularisation (models.config.NON_ARCHITECTURE) may differ."""
    diff = _arch_diff(config, dict(cfg.model.overrides))
    if cfg.model.base:
        # A named base's languages, vocabulary size and special ids are never used: a run from scratch replaces
        # them with the data's (TrainConfig.model.resolve), and with init_from the tokenizer is checked against
        # the checkpoint's vocabulary instead. So configs/default.yaml (model.base=xlmr_tiny, vocab 1000) can
        # continue a run it trained.
        base = {k: v for k, v in model_to_dict(NAMED_CONFIGS[cfg.model.base]).items() if k not in DATA_FIELDS}
        diff += [f"{d} (model.base={cfg.model.base})" for d in _arch_diff(config, base)
                 if d.split(":")[0].removeprefix("model.") not in cfg.model.overrides]
    if diff:
        raise UserError(f"model.init_from={where}: the model settings contradict the checkpoint's architecture ("
                        + "; ".join(diff) + "). Leave them out (the checkpoint decides the architecture); only "
                        "numerics and dropout may differ")


def _check_specials(tok, config: ModelConfig, where: str) -> None:
    ours = {"bos": tok.bos_id, "pad": tok.pad_id, "eos": tok.eos_id, "unk": tok.unk_id, "mask": tok.mask_id}
    theirs = {"bos": config.bos_token_id, "pad": config.pad_token_id, "eos": config.eos_token_id,
              "unk": config.unk_token_id, "mask": config.mask_id}
    diff = [f"{k} {ours[k]} vs {theirs[k]}" for k in ours if ours[k] != theirs[k]]
    if diff:
        raise UserError(f"the tokenizer {tok.path} and the checkpoint {where} put the special tokens at different "
                        f"ids (tokenizer vs checkpoint: {', '.join(diff)})")


def _moses_refusal(where: str) -> UserError:
    return UserError(
        f"model.init_from={where} is an original XLM model, which tokenizes with Moses + fastBPE (its dictionary "
        "dico_word2id) and uses XLM's special ids; continued pretraining reads SentencePiece-tokenized data only, so "
        "it is not supported. Supported: Hugging Face XLM-R directories, fairseq XLM-R model.pt, xlm_jax "
        "checkpoints. (`python -m xlm_jax.convert` still converts XLM models for fine-tuning.)")


def _resuming(run_dir: Path) -> bool:
    try:
        checkpoint.resolve(run_dir / "checkpoints")
        return True
    except UserError:
        return False


def _orbax_config(path: Path) -> ModelConfig:
    """The model configuration of an orbax checkpoint and a check that its tensors have that model's shapes (from
    orbax's metadata; the arrays themselves are read, and verified, at step 0)."""
    directory, step = checkpoint.resolve(path)
    step_dir = directory / str(step)
    config = require_encoder(checkpoint.load_model_config(step_dir), str(path), "model.init_from")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            meta = ckptr.metadata((step_dir / checkpoint.PARAMS).absolute())
    except Exception as err:  # noqa: BLE001 - orbax's own errors
        raise checkpoint.DamagedCheckpoint(step_dir, f"params/ metadata cannot be read ({checkpoint.short_error(err)})")
    saved = getattr(meta, "item_metadata", meta)
    flat = {"/".join(str(getattr(k, "key", k)) for k in p): tuple(m.shape) for p, m in
            jax.tree_util.tree_flatten_with_path(saved, is_leaf=lambda m: hasattr(m, "shape"))[0]}
    shapes = _shapes(config)
    want = {p: tuple(a.shape) for p, a in zip(param_paths(shapes), jax.tree.leaves(shapes))}
    if not any(p.startswith("lm_head/") for p in flat):  # EuroBERT's LM head may have no bias
        raise UserError(f"model.init_from={path}: the checkpoint has no LM head (an encoder-only export); "
                        "continued MLM pretraining needs one")
    bad = [f"{p}: {flat.get(p)} vs {s}" for p, s in want.items() if flat.get(p) != s]
    if bad:
        raise checkpoint.DamagedCheckpoint(step_dir, "its tensors do not fit its model_config (" + "; ".join(bad[:3]) + ")")
    return config


def prepare(cfg, run_dir: Path) -> Start:
    """Checks model.init_from, data.tokenizer, the model overrides and train.trainable before any data is prepared
    or anything compiled; reads the init checkpoint (fairseq / HF into host memory; orbax: its configuration).
    Raises UserError naming the key, the path and what is valid."""
    start = Start()
    given = load_tokenizer(cfg.data.tokenizer, "data.tokenizer") if cfg.data.tokenizer else None
    start.tokenizer = Path(given.path) if given else None
    if given is not None and cfg.data.dir:
        _check_data_dir_tokenizer(Path(cfg.data.dir), given)
    resuming = _resuming(run_dir)
    if resuming:
        _check_same_trainable(run_dir, tuple(cfg.train.trainable))
    longest = max(cfg.train.seq_len, (cfg.data.tlm_seq_len or cfg.train.seq_len)
                  if cfg.data.objectives.get("tlm", 0) > 0 else 0)
    if not cfg.model.init_from:
        model = cfg.model.provisional(None if cfg.data.dir else (len(given) if given else cfg.data.vocab_size + 2))
        # Language embeddings exist only with two or more languages, which the data decides: check the patterns
        # against the largest parameter set here, and again against the real model (`restrict_optimizer`).
        if tuple(cfg.train.trainable) != ("all",):  # (tracing the model's shapes takes a moment)
            trainable_mask(cfg.train.trainable, _shapes(model.replace(n_langs=max(2, model.n_langs), langs=())))
        return start
    where = cfg.model.init_from
    if resuming:
        # The run resumes from its own checkpoints: init_from is not read again (it may be gone).
        start.config = checkpoint.load_model_config(run_dir)
        own = run_dir / "tokenizer.model"
        if start.tokenizer is None and own.is_file():
            start.tokenizer = own
    else:
        try:
            kind, path = convert.detect(where)
        except UserError as err:
            raise UserError(f"model.init_from={where}: {str(err).removeprefix(f'{where}: ')}") from None
        start.init_from, start.kind = path, kind
        if kind == "orbax":
            start.config = _orbax_config(path)
        else:
            try:
                params, config, info = convert.load_any(path)
            except UserError as err:
                raise UserError(f"model.init_from: {err}") from None
            require_encoder(config, where, "model.init_from")
            start.kind = info.kind
            if info.kind == "xlm" or config.family == "xlm":
                raise _moses_refusal(where)
            if "lm_head" not in params:
                raise UserError(f"model.init_from={where}: {info.architecture} has no LM head; continued MLM "
                                "pretraining needs one (a ...ForMaskedLM checkpoint)")
            start.host_params, start.config = params, config
        own_spm, dict_txt, looked = _own_tokenizer(start.kind, path)
        own = load_tokenizer(own_spm, "the checkpoint's tokenizer") if own_spm else None
        if start.kind == "fairseq" and own is not None:
            if dict_txt is None:
                raise UserError(f"model.init_from={where}: found {own_spm} but no dict.txt next to it, which "
                                "defines fairseq's ids; add the checkpoint's dict.txt, or give data.tokenizer=PATH")
            check_fairseq_dict(dict_txt, own)
        tok = given or own
        start.tokenizer_sha256 = tok.sha256 if tok else ""
        if tok is None and not cfg.data.dir:
            raise UserError(f"model.init_from={where}: the checkpoint has no tokenizer of its own (looked for "
                            f"{', '.join(looked)}); give data.tokenizer=PATH.model, the SentencePiece model it was "
                            "trained with, or a preprocessed data.dir")
        if tok is not None:
            start.tokenizer = Path(tok.path)
            if len(tok) > start.config.vocab_size:
                _extend(start, own, tok, where)
            elif len(tok) < start.config.vocab_size:
                raise UserError(f"the tokenizer {tok.path} has {len(tok)} ids but the checkpoint {where} has a "
                                f"vocabulary of {start.config.vocab_size}: they must be the same vocabulary")
            _check_specials(tok, start.config, where)
            if given is not None and own is not None and len(given) == len(own):
                # The one check every tokenizer given with a checkpoint goes through: here only its sha256
                # warning (another file with the same ids may still split text differently).
                check_tokenizer_fits(given, start.config.vocab_size, f"model.init_from={where}", sha256=own.sha256)
    check_overrides(cfg, start.config, where)
    if longest > start.config.max_positions:
        raise UserError(f"sequences of {longest} tokens (train.seq_len / data.tlm_seq_len) exceed the "
                        f"{start.config.max_positions} positions of the checkpoint {where}: shorten them")
    if tuple(cfg.train.trainable) != ("all",):
        trainable_mask(cfg.train.trainable, _shapes(start.config))
    return start


def _check_data_dir_tokenizer(data_dir: Path, tok) -> None:
    """data.tokenizer with an already preprocessed data.dir: the data must have been tokenized with it."""
    try:
        recorded = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))["tokenizer"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # the corpus reader reports a missing or damaged manifest in its own words
    if isinstance(recorded, dict) and recorded.get("sha256") and recorded["sha256"] != tok.sha256:
        raise UserError(f"data.tokenizer={tok.path} is not the tokenizer {data_dir} was preprocessed with "
                        f"({recorded.get('path')}): leave data.tokenizer out, or give the raw corpus as data.corpus")


def _check_same_trainable(run_dir: Path, trainable: tuple[str, ...]) -> None:
    """A resumed run keeps its train.trainable: its optimizer state holds moments for those parameters only."""
    try:
        before = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["train"].get("trainable")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return
    before = (tuple(before) if isinstance(before, (list, tuple)) else (before,) if isinstance(before, str)
              else ("all",))
    if before != trainable:
        raise UserError(f"train.trainable={list(trainable)}: {run_dir} was trained with train.trainable="
                        f"{list(before)}, and its optimizer state holds moments for those parameters only; keep "
                        "it to resume, or start a new run_dir (model.init_from=" + str(run_dir) + " continues from "
                        "its weights)")


def _extend(start: Start, base, extended, where: str) -> None:
    """The single call site of `xlm_jax.models.vocab_extension.extend_embeddings` (issue #12 part 3): a tokenizer larger than the
    checkpoint's vocabulary appends rows to the word embeddings and the LM-head bias."""
    n = start.config.vocab_size
    if base is None or len(base) != n:
        raise UserError(f"the tokenizer {extended.path} has {len(extended)} ids but the checkpoint {where} has "
                        f"{n}: extending the vocabulary needs the checkpoint's own tokenizer"
                        + (f" ({base.path} has {len(base)})" if base is not None else " (it has none)"))
    if start.host_params is None:
        start.host_params, _ = checkpoint.restore_params(start.init_from)
    # "xlmr": the id layout (fairseq's, every SentencePiece vocabulary here); the original XLM's is refused above.
    start.host_params, start.config = extend_embeddings(start.host_params, start.config, base, extended, "xlmr")


def abstract_params(config: ModelConfig) -> Any:
    """The model's parameters as ShapeDtypeStructs (nothing allocated)."""
    return nn.unbox(boxed_abstract_params(config))


def _shapes(config: ModelConfig) -> Any:
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, np.float32), param_shapes(config),
                        is_leaf=lambda x: isinstance(x, tuple))


def model_config(start: Start, cfg, corpus, data_cfg) -> ModelConfig:
    """The run's ModelConfig when it starts from (or resumes after) a checkpoint: its architecture, the user's
    numerics, the data's languages. Refuses data whose vocabulary or tokenizer is not the checkpoint's."""
    config = start.config
    where = cfg.model.init_from
    tok = corpus.manifest["tokenizer"]
    if int(tok["vocab_size"]) != config.vocab_size:
        raise UserError(f"{corpus.dir} was preprocessed with a vocabulary of {tok['vocab_size']} ids "
                        f"({tok.get('path')}) but the checkpoint {where} has {config.vocab_size}: prepare the data "
                        "with the checkpoint's tokenizer (leave data.dir empty, or data.tokenizer=PATH)")
    theirs = start.tokenizer_sha256 or ""
    if theirs and tok.get("sha256") and tok["sha256"] != theirs:
        raise UserError(f"{corpus.dir} was preprocessed with {tok.get('path')} (sha256 {tok['sha256'][:12]}…), not "
                        f"with the checkpoint's tokenizer (sha256 {theirs[:12]}…), whose ids the checkpoint knows")
    specials = {"bos_token_id": "bos_id", "pad_token_id": "pad_id", "eos_token_id": "eos_id", "unk_token_id": "unk_id"}
    diff = [f"{v} {tok[v]} vs {getattr(config, k)}" for k, v in specials.items() if int(tok[v]) != getattr(config, k)]
    if int(tok["mask_id"]) != config.mask_id:
        diff.append(f"mask_id {tok['mask_id']} vs {config.mask_id}")
    if diff:
        raise UserError(f"{corpus.dir}: its special ids differ from the checkpoint {where}'s (data vs checkpoint: "
                        f"{', '.join(diff)})")
    langs = tuple(data_cfg.langs)
    if config.has_lang_embeddings:
        if langs != tuple(config.langs):
            raise UserError(f"the checkpoint {where} has language embeddings for {list(config.langs)} but the "
                            f"run's languages are {list(langs)}: train on the same languages (data.mono_langs)")
        changes: dict[str, Any] = {}
    else:
        # No language embeddings: the language list is bookkeeping only, the data's.
        changes = {"langs": langs, "n_langs": max(1, len(langs)), "use_lang_emb": False}
    changes |= {k: v for k, v in cfg.model.overrides.items() if k in NON_ARCHITECTURE}
    config = config.replace(**changes)
    check_positions(max(data_cfg.seq_len, data_cfg.pair_len if "tlm" in data_cfg.enabled else 0), config)
    return config


def init_state(start: Start, optimizer: optax.GradientTransformation, abstract: dict, shardings: dict) -> dict:
    """The step-0 state from the init checkpoint: parameters placed shard by shard on the mesh (each device
    receives only its slices; no device holds a full copy it does not need), fresh optimizer state, step 0."""
    target = abstract["params"]
    if start.host_params is None:
        params, _ = checkpoint.restore_params(start.init_from, target=target)
    else:
        host = start.host_params
        if jax.tree_util.tree_structure(host) != jax.tree_util.tree_structure(target):
            raise UserError(f"model.init_from={start.init_from}: its parameter tree does not fit the model "
                            f"({sorted(param_paths(host))[:3]}... vs {sorted(param_paths(target))[:3]}...)")

        def place(x, a):
            x = np.asarray(x)
            if x.shape != a.shape:
                raise UserError(f"model.init_from={start.init_from}: a tensor of shape {x.shape} where the model "
                                f"has {a.shape}")
            return jax.make_array_from_callback(a.shape, a.sharding, lambda index: x[index].astype(a.dtype))

        params = jax.tree.map(place, host, target)
        start.host_params = None  # the host copy is not needed any more
    opt_state = jax.jit(optimizer.init, out_shardings=shardings["opt_state"])(params)
    step = jax.device_put(jnp.zeros((), jnp.int32), shardings["step"])
    return {"params": params, "opt_state": opt_state, "step": step}


__all__ = ["EMBEDDINGS", "Start", "check_fairseq_dict", "describe_trainable", "fairseq_dict_ids", "init_state",
           "model_config", "prepare", "restrict_optimizer", "trainable_mask"]
