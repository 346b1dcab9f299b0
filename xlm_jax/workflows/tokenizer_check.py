"""Which tokenizer belongs to a checkpoint, and the one check that pairs a tokenizer with a model.

Every output xlm_jax writes holds a copy of its tokenizer: a pretraining run directory (RUN/tokenizer.model,
recorded with its sha256 in RUN/tokenizer_record.json; its `best/` and step checkpoints resolve to it), a
fine-tuning output (OUT/tokenizer.model or OUT/tokenizer.json, recorded in OUT/finetune_config.json) and a
`convert` output. `checkpoint_tokenizer(path)` finds it (from any working directory) with the sha256 the
checkpoint recorded; `open_tokenizer` loads the one given (or the one found) and refuses it, with
`xlm_jax.data.tokenizer.check_tokenizer_fits`'s one message, when it does not fit the model: every command and
API entry that takes a tokenizer (`xlm_jax.load`, `evaluate task / retrieval / tatoeba / bucc`, `finetune`)
goes through it.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from xlm_jax.core.errors import UserError
from xlm_jax.data.hf_tokenizer import CONFIG_FILES, TOKENIZER_JSON, HFTokenizer
from xlm_jax.data.tokenizer import Tokenizer, check_tokenizer_fits
from xlm_jax.data.tokenizer_files import load_tokenizer, read_run_record
from xlm_jax.data.xlm_bpe import CONFIG_JSON, MERGES_TXT, VOCAB_JSON, XLMBPETokenizer, is_xlm_tokenizer_dir
from xlm_jax.models.config import ModelConfig
from xlm_jax.training.checkpoint import resolve
from xlm_jax.workflows.convert import model_special_ids, orbax_tokenizer_files, source_tokenizer_files
from xlm_jax.workflows.loading import finetune_tokenizer_record, is_task_checkpoint

SPM_COPY = "tokenizer.model"  # the name a SentencePiece model is copied under into our outputs


@dataclasses.dataclass(frozen=True)
class Found:
    """The tokenizer file of a checkpoint (None: none), the sha256 the checkpoint recorded for it ("" when it
    recorded none) and, without a file, why not."""

    file: Path | None
    sha256: str = ""
    note: str = ""


def check_fits(tok, config: ModelConfig, where: str, sha256: str = "") -> None:
    """`check_tokenizer_fits` against `config`: UserError for a size / special-id mismatch, UserWarning when
    `sha256` (recorded with the checkpoint) differs from the tokenizer's."""
    check_tokenizer_fits(tok, config.vocab_size, where, sha256=sha256 or None, **model_special_ids(config))


def checkpoint_tokenizer(path: str | Path) -> Found:
    """The tokenizer that belongs to the checkpoint at `path` (any kind `xlm_jax.load` reads); absolute paths,
    so that it is found from any working directory."""
    p = Path(path).absolute()
    if is_task_checkpoint(p):
        found, note, sha = finetune_tokenizer_record(p)
        if found is None:  # a fine-tuned checkpoint saved elsewhere (`LoadedModel.save`): the files beside it
            try:
                found = _pick(orbax_tokenizer_files(p / "best" if (p / "best").is_dir() else p))
            except UserError:
                found = None
            if found is not None:
                sha = str((read_run_record(found.parent) or {}).get("sha256", ""))
        return Found(found, sha, "" if found else note)
    try:
        resolve(p)
    except UserError:
        files = source_tokenizer_files(p)
        found = _pick(files)
        return Found(found, "", "" if found else f"no tokenizer file next to {p}")
    found = _pick(orbax_tokenizer_files(p))
    if found is None:
        return Found(None, "", f"no tokenizer.model or tokenizer.json in {p} or its run directory")
    record = read_run_record(found.parent)
    return Found(found, str((record or {}).get("sha256", "")))


def _pick(files) -> Path | None:
    """The file `load_tokenizer` reads among a checkpoint's tokenizer files (SentencePiece first)."""
    names = {Path(f).name: Path(f) for f in files}
    for name in ("sentencepiece.bpe.model", SPM_COPY, TOKENIZER_JSON):
        if name in names:
            return names[name]
    if VOCAB_JSON in names and is_xlm_tokenizer_dir(names[VOCAB_JSON].parent):  # XLM's Moses + BPE
        return names[VOCAB_JSON]
    return None


def open_tokenizer(given, found: Found, config: ModelConfig, where: str):
    """The tokenizer to use with a checkpoint: `given` (a path, a Tokenizer / HFTokenizer) when not None, else
    the checkpoint's own (`found`; None when it has none). Either is checked with `check_fits` against the
    model, with the sha256 the checkpoint recorded. Raises UserError for an unreadable tokenizer (one found next
    to the checkpoint says so) and for one that does not fit."""
    if given is None:
        if found.file is None:
            return None
        try:
            tok = load_tokenizer(found.file)
        except UserError as err:
            raise UserError(f"{err} (found next to the checkpoint; pass tokenizer=PATH to use another)") from None
    elif isinstance(given, Tokenizer | HFTokenizer | XLMBPETokenizer):
        tok = given
    else:
        tok = load_tokenizer(given)
    check_fits(tok, config, where, found.sha256)
    return tok


def copy_tokenizer(tok, out: Path, spm_name: str = SPM_COPY) -> str:
    """Copies the tokenizer `tok` was loaded from into the directory `out` (a SentencePiece model as `spm_name`,
    tokenizer.model by default, sentencepiece.bpe.model for a Hugging Face directory; a tokenizer.json with its
    tokenizer_config.json / special_tokens_map.json; XLM's vocab.json + merges.txt + tokenizer_config.json) -> the
    copy's name, relative to `out`."""
    src = Path(tok.path)
    if isinstance(tok, XLMBPETokenizer):  # vocab.json + merges.txt + tokenizer_config.json, under their own names
        for name in (VOCAB_JSON, MERGES_TXT, CONFIG_JSON):
            _copy(src.parent / name, out / name)
        return VOCAB_JSON
    if isinstance(tok, HFTokenizer):
        _copy(src, out / TOKENIZER_JSON)
        for name in CONFIG_FILES:
            if (src.parent / name).is_file():
                _copy(src.parent / name, out / name)
        return TOKENIZER_JSON
    _copy(src, out / spm_name)
    return spm_name


def _copy(src: Path, dst: Path) -> None:
    if not dst.exists() or src.resolve() != dst.resolve():  # re-run with OUT's own copy: nothing to do
        shutil.copyfile(src, dst)
