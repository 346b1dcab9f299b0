"""One loader for every tokenizer file xlm_jax reads: `load_tokenizer(PATH)`.

PATH may be
- a SentencePiece model (`*.model`: ours, XLM-R's `sentencepiece.bpe.model`) -> `Tokenizer` (fairseq ids);
- a Hugging Face `tokenizer.json` (any `*.json` file) -> `HFTokenizer`;
- a directory holding one of them: `sentencepiece.bpe.model`, else `tokenizer.model`, else `tokenizer.json`;
- an XLM tokenizer (Moses + fastBPE codes + XLM's dictionary: transformers' XLMTokenizer files vocab.json,
  merges.txt and tokenizer_config.json, as `convert --bpe-codes` writes them), its directory or its vocab.json
  -> `XLMBPETokenizer` (`xlm_jax.data.xlm_bpe`).

When a directory holds both a SentencePiece model and a tokenizer.json, the SentencePiece model is preferred:
- a training run directory written before the record was renamed `tokenizer_record.json` holds `tokenizer.model`
  beside a `tokenizer.json` that is training's record of its tokenizer (sha256, path), not a Hugging Face tokenizer;
- the sha256 that preprocessed data, run records and fine-tuning configs hold is the `.model`'s, and vocabulary
  extension (`xlm_jax.data.vocab`), continued pretraining's dict.txt check and the fairseq layout read the
  SentencePiece model itself (`tok.sp`);
- for XLM-R-style directories (transformers 4 wrote both files) both give the same ids (tests/test_hf_tokenizer.py).
One exception: a `tokenizer.model` beside a tokenizer.json that puts the special tokens elsewhere (Llama 2, Gemma,
T5: SentencePiece models whose ids are NOT fairseq's) is the raw file of another layout, so the tokenizer.json,
which AutoTokenizer reads, is used. `sentencepiece.bpe.model` is XLM-R's fairseq file by name and always wins.
"""

from __future__ import annotations

import os
from pathlib import Path

from xlm_jax.core.errors import UserError
from xlm_jax.data.hf_tokenizer import TOKENIZER_JSON, HFTokenizer, is_hf_tokenizer_json, read_json
from xlm_jax.data.tokenizer import Tokenizer, TokenizerLike
from xlm_jax.data.xlm_bpe import VOCAB_JSON, XLMBPETokenizer, is_xlm_tokenizer_dir

RUN_RECORD = "tokenizer_record.json"  # a pretraining run's record of its tokenizer: sha256, path, data
LEGACY_RUN_RECORD = "tokenizer.json"  # its name before: it clashed with Hugging Face's tokenizer.json
SPM_NAMES = ("sentencepiece.bpe.model", "tokenizer.model")  # XLM-R's name first, then ours (train copies it into RUN)
VALID = ("a SentencePiece PATH.model, a Hugging Face tokenizer.json, or a directory holding sentencepiece.bpe.model, "
         "tokenizer.model, tokenizer.json or an XLM tokenizer (vocab.json + merges.txt + tokenizer_config.json)")


def tokenizer_file(directory: str | os.PathLike) -> Path | None:
    """The file `load_tokenizer(directory)` reads (see the module docstring), or None when there is none.
    Raises UserError when a tokenizer.json that is a tokenizer cannot be parsed."""
    d = Path(directory)
    if (d / SPM_NAMES[0]).is_file():
        return d / SPM_NAMES[0]
    spm, hf = d / SPM_NAMES[1], d / TOKENIZER_JSON
    hf_ok = hf.is_file() and _is_tokenizer(hf)
    if spm.is_file():
        if not hf_ok or _same_ids(spm, hf):
            return spm
        return hf
    if hf_ok:
        return hf
    return d / VOCAB_JSON if is_xlm_tokenizer_dir(d) else None


def _is_tokenizer(path: Path) -> bool:
    """Whether a tokenizer.json is a tokenizers serialization (training's small record is not)."""
    # Training's record is a few hundred bytes; parsing a multi-megabyte tokenizer.json just to look is not needed.
    if path.stat().st_size < 1 << 16:
        return is_hf_tokenizer_json(read_json(path, "a Hugging Face tokenizer.json"))
    return True


def _same_ids(spm: Path, hf: Path) -> bool:
    """Whether the SentencePiece model, read with fairseq's ids, puts the special tokens where the tokenizer.json
    does (it does for XLM-R directories; Llama 2 / Gemma / T5 ones differ)."""
    try:
        ours = Tokenizer.load(spm)
    except UserError:
        return False  # e.g. Gemma's model: unk_id 3, not the fairseq layout at all
    theirs = HFTokenizer.load(hf)
    names = ("bos_id", "pad_id", "eos_id", "unk_id", "mask_id")
    return len(ours) == len(theirs) and all(getattr(ours, n) == getattr(theirs, n) for n in names)


def load_tokenizer(path, lowercase_and_strip_accents: bool = False) -> TokenizerLike:
    """The tokenizer at `path` (see the module docstring): a `Tokenizer` for a SentencePiece model, an
    `HFTokenizer` for a tokenizer.json, an `XLMBPETokenizer` for XLM's vocab.json + merges.txt.
    `lowercase_and_strip_accents` (XLM's normalisation) applies to SentencePiece models only (an XLM tokenizer's
    tokenizer_config.json says whether it lowercases).

    Raises UserError naming `path` and what would be valid when it is not a str / Path, does not exist, is a
    directory without a tokenizer file, or a file neither loader reads (each loader's own message: not a
    SentencePiece model, not a tokenizer.json, training's tokenizer record, …)."""
    if not isinstance(path, str | os.PathLike) or not str(path).strip():
        raise UserError(f"tokenizer={path!r:.60}: give the path (str or Path) of {VALID}")
    p = Path(path)
    if p.is_dir():
        found = tokenizer_file(p)
        if found is None:
            raise UserError(f"{path} is a directory without a tokenizer file; give {VALID}")
        p = found
    elif not p.exists():
        raise UserError(f"tokenizer {path} does not exist; give {VALID} (train one with "
                        "`python -m xlm_jax.tokenizer train`)")
    if p.name == VOCAB_JSON and is_xlm_tokenizer_dir(p.parent):
        if lowercase_and_strip_accents:
            raise UserError(f"{p}: lowercase_and_strip_accents is set by the XLM tokenizer's own "
                            "tokenizer_config.json (do_lowercase_and_remove_accent)")
        return XLMBPETokenizer.load(p)
    if p.suffix == ".json":
        return HFTokenizer.load(p, lowercase_and_strip_accents)
    return Tokenizer.load(p, lowercase_and_strip_accents)


def read_run_record(directory: str | os.PathLike) -> dict | None:
    """A pretraining run directory's tokenizer record ({"sha256", "path", "data"}): RUN/tokenizer_record.json, or
    for runs written before, RUN/tokenizer.json when it is that record (not a Hugging Face tokenizer.json);
    None when there is none or it cannot be read."""
    d = Path(directory)
    for name in (RUN_RECORD, LEGACY_RUN_RECORD):
        path = d / name
        if not path.is_file() or (name == LEGACY_RUN_RECORD and path.stat().st_size >= 1 << 16):
            continue
        try:
            data = read_json(path, "a tokenizer record")
        except UserError:
            continue
        if isinstance(data, dict) and not is_hf_tokenizer_json(data) and "sha256" in data:
            return data
    return None
