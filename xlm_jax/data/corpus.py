"""Corpora: the raw text layout (read by `xlm_jax.preprocess`) and the preprocessed arrays (read by batches).

Raw corpus directory (what `python -m xlm_jax.data.gettext` writes, and what users give):

    CORPUS/mono/{lang}.txt                   one sentence per line, a blank line between documents
    CORPUS/para/{l1}-{l2}.{l1}, .{l2}        line-aligned translations, l1 < l2 alphabetically

Splits are subdirectories (CORPUS/train/mono/…, CORPUS/valid/…, CORPUS/test/…). A flat corpus (no split
directories) is split at preprocess time by `heldout_split`: a text goes to valid / test when a hash of it
falls below --valid-fraction / --test-fraction. The hash makes the split deterministic and independent of
line order and file size. It is applied to whole translation groups (a sentence, its translations, theirs …;
`xlm_jax.data.heldout`), so that no valid / test sentence is also in a train split, by duplicates or through
the sides of pairs.

Preprocessed directory: format in docs/data_format.md; `PreprocessedCorpus` opens it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlm_jax.errors import UserError


@dataclass(frozen=True)
class TokenArray:
    """Sentences stored as one flat id array plus offsets: sentence i is ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sentence(self, i: int) -> np.ndarray:
        return np.asarray(self.ids[self.offsets[i] : self.offsets[i + 1]])

    def lengths(self) -> np.ndarray:
        return np.diff(np.asarray(self.offsets))


class PreprocessedCorpus:
    """A preprocessed directory: `manifest.json` plus memory-mapped `{split}/{mono,para}/*.npy` arrays."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        manifest_path = self.dir / "manifest.json"
        if not manifest_path.is_file():
            raise UserError(f"{manifest_path}: not found; run `python -m xlm_jax.preprocess` to create it")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != 1:
            raise UserError(f"{manifest_path}: format {self.manifest.get('format')!r} unsupported, expected 1")
        self.langs: list[str] = list(self.manifest["langs"])

    def _split(self, split: str) -> dict:
        splits = self.manifest["splits"]
        if split not in splits:
            raise UserError(f"{self.dir}: no split {split!r}; available: {sorted(splits)}")
        return splits[split]

    def mono_langs(self, split: str) -> list[str]:
        return sorted(self._split(split).get("mono", {}))

    def para_pairs(self, split: str) -> list[tuple[str, str]]:
        return [tuple(p.split("-")) for p in sorted(self._split(split).get("para", {}))]

    def _load(self, stem: Path) -> TokenArray:
        return TokenArray(
            np.load(f"{stem}.ids.npy", mmap_mode="r"), np.load(f"{stem}.offsets.npy", mmap_mode="r")
        )

    def mono(self, split: str, lang: str) -> TokenArray:
        if lang not in self.mono_langs(split):
            raise UserError(
                f"{self.dir}: no monolingual {split!r} data for {lang!r}; available: {self.mono_langs(split)}"
            )
        return self._load(self.dir / split / "mono" / lang)

    def para(self, split: str, l1: str, l2: str) -> tuple[TokenArray, TokenArray]:
        if l1 > l2:
            second, first = self.para(split, l2, l1)
            return first, second
        if (l1, l2) not in self.para_pairs(split):
            names = ["-".join(p) for p in self.para_pairs(split)]
            raise UserError(f"{self.dir}: no parallel {split!r} data for {l1}-{l2}; available: {names}")
        stem = self.dir / split / "para" / f"{l1}-{l2}"
        return self._load(Path(f"{stem}.{l1}")), self._load(Path(f"{stem}.{l2}"))


def check_vocab(manifest: dict, model_vocab_size: int) -> None:
    """Refuse to train a model whose embedding table does not match the tokenizer the data was made with."""
    data_vocab = manifest["tokenizer"]["vocab_size"]
    if data_vocab != model_vocab_size:
        raise UserError(
            f"vocabulary mismatch: the preprocessed data uses tokenizer {manifest['tokenizer']['path']} with "
            f"vocab_size {data_vocab}, but the model configuration has vocab_size {model_vocab_size}; set the "
            f"model's vocab_size to {data_vocab} or preprocess with the model's tokenizer"
        )


# --------------------------------------------------------------------------------------- raw corpora

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class RawSource:
    """One monolingual file, or the two files of a language pair, in one split (None: flat corpus)."""

    kind: str  # "mono" | "para"
    name: str  # "de" or "de-en"
    langs: tuple[str, ...]
    files: tuple[Path, ...]
    split: str | None


def _count_lines(path: Path) -> int:
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _scan_split(base: Path, split: str | None) -> list[RawSource]:
    sources = []
    for f in sorted((base / "mono").glob("*.txt")):
        sources.append(RawSource("mono", f.stem, (f.stem,), (f,), split))
    para_files: dict[str, list[Path]] = {}
    for f in sorted((base / "para").glob("*")):
        if f.is_file() and "-" in f.stem:
            para_files.setdefault(f.stem, []).append(f)
    for stem, files in sorted(para_files.items()):
        l1, _, l2 = stem.partition("-")
        expected = [base / "para" / f"{stem}.{l1}", base / "para" / f"{stem}.{l2}"]
        if not l1 < l2:
            raise UserError(f"{files[0]}: parallel files are named {{l1}}-{{l2}} with l1 < l2; rename to {l2}-{l1}.*")
        missing = [str(p) for p in expected if not p.is_file()]
        if missing:
            raise UserError(f"parallel data {base / 'para' / stem}.* lacks {', '.join(missing)} (both sides are needed)")
        n1, n2 = _count_lines(expected[0]), _count_lines(expected[1])
        if n1 != n2:
            raise UserError(
                f"parallel files are not line-aligned: {expected[0]} has {n1} lines but {expected[1]} has {n2}"
            )
        sources.append(RawSource("para", stem, (l1, l2), tuple(expected), split))
    return sources


def scan_corpus(corpus_dir: str | Path, langs: list[str] | None = None) -> list[RawSource]:
    """Find and validate a raw corpus's files (see the module docstring for the layout)."""
    root = Path(corpus_dir)
    if not root.is_dir():
        raise UserError(f"corpus directory {root} does not exist")
    split_dirs = [s for s in SPLITS if (root / s).is_dir()]
    if split_dirs:
        if "train" not in split_dirs:
            raise UserError(f"{root} has {split_dirs} split directories but no train/")
        sources = [src for s in split_dirs for src in _scan_split(root / s, s)]
    else:
        sources = _scan_split(root, None)
    if not sources:
        raise UserError(
            f"empty corpus: no mono/{{lang}}.txt or para/{{l1}}-{{l2}}.{{l1}} files under {root} "
            "(or under its train/ valid/ test/ subdirectories)"
        )
    for src in sources:
        for f in src.files:
            if not _has_text(f):
                raise UserError(f"{f} is empty (no non-blank line); remove it or fill it")
    available = sorted({lang for src in sources for lang in src.langs})
    if langs:
        missing = sorted(set(langs) - set(available))
        if missing:
            raise UserError(f"corpus {root} has no data for {missing}; languages it has: {available}")
        sources = [src for src in sources if set(src.langs) <= set(langs)]
    return sources


def _has_text(path: Path) -> bool:
    with open(path, "rb") as f:
        return any(line.strip() for line in f)


def read_lines(path: Path) -> tuple[list[str], int]:
    """Lines of a text file (split on '\\n' only, so Unicode line separators cannot break alignment) and
    the number of lines that had invalid UTF-8 (decoded with U+FFFD instead)."""
    data = path.read_bytes()
    if data.endswith(b"\n"):
        data = data[:-1]
    raw = data.split(b"\n") if data else []
    try:
        return [line.decode("utf-8").rstrip("\r") for line in raw], 0
    except UnicodeDecodeError:
        pass
    lines, bad = [], 0
    for line in raw:
        try:
            lines.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            lines.append(line.decode("utf-8", "replace").rstrip("\r"))
            bad += 1
    return lines, bad


def heldout_split(text: str, valid_fraction: float, test_fraction: float) -> str:
    """Deterministic split ("train" / "valid" / "test") of a text, by a hash of it. `xlm_jax.data.heldout`
    applies it to the smallest text of each translation group of a flat corpus."""
    if valid_fraction <= 0 and test_fraction <= 0:
        return "train"
    u = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little") / 2**64
    if u < valid_fraction:
        return "valid"
    if u < valid_fraction + test_fraction:
        return "test"
    return "train"


def replace_dir(new: Path, target: Path) -> None:
    """Move the finished directory `new` to `target`, so that readers never see a half-written one."""
    target = Path(target)
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(target)
