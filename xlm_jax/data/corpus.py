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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.core.textfiles import check_corpus_file


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
    """A preprocessed directory: `manifest.json` plus memory-mapped `{split}/{mono,para}/*.npy` arrays.

    Opening it checks the whole directory (cheaply: array headers and two offsets each, no data read), so that a
    damaged one is refused before training starts: UserError naming the file when the manifest is missing or not
    a manifest, or when an array it lists is missing, unreadable, truncated or inconsistent with it."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        manifest_path = self.dir / "manifest.json"
        if not manifest_path.is_file():
            raise UserError(f"{manifest_path}: not found; run `python -m xlm_jax.preprocess` to create it")
        try:
            self.manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
        except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
            raise self._damaged(manifest_path, f"not valid JSON: {err}") from None
        if not isinstance(self.manifest, dict):
            raise self._damaged(manifest_path, f"a JSON {type(self.manifest).__name__}, not an object")
        if self.manifest.get("format") != 1:
            raise UserError(f"{manifest_path}: format {self.manifest.get('format')!r} unsupported, expected 1")
        expected = {"langs": list, "splits": dict, "tokenizer": dict}
        wrong = [k for k, t in expected.items() if not isinstance(self.manifest.get(k), t)]
        if wrong:
            raise self._damaged(manifest_path, f"missing or malformed {', '.join(wrong)}")
        self.langs: list[str] = list(self.manifest["langs"])
        self._check_arrays(manifest_path)

    def _damaged(self, path: Path, what: str) -> UserError:
        m = getattr(self, "manifest", None)
        m = m if isinstance(m, dict) else {}
        corpus = m.get("corpus", "CORPUS")
        tokenizer = m["tokenizer"].get("path", "T.model") if isinstance(m.get("tokenizer"), dict) else "T.model"
        return UserError(f"{path}: {what}; the preprocessed directory {self.dir} is damaged: re-run "
                         f"`python -m xlm_jax.preprocess {corpus} --tokenizer {tokenizer} --out {self.dir}`")

    def _check_arrays(self, manifest_path: Path) -> None:
        """Every array the manifest lists: present, a readable .npy, 1-D, and offsets matching the sentence count
        and the ids (a truncated .npy file cannot be memory-mapped)."""
        for split, data in self.manifest["splits"].items():
            entries = []
            try:
                for lang, st in data.get("mono", {}).items():
                    entries.append((self.dir / split / "mono" / lang, int(st["sentences"])))
                for pair, st in data.get("para", {}).items():
                    for lang in pair.split("-"):
                        entries.append((self.dir / split / "para" / f"{pair}.{lang}", int(st["sentences"])))
            except (AttributeError, KeyError, TypeError, ValueError) as err:
                raise self._damaged(manifest_path, f"split {split!r} is malformed ({type(err).__name__}: {err})")
            for stem, sentences in entries:
                arrays = self._load(stem)
                offsets = arrays.offsets
                if len(offsets) != sentences + 1:
                    raise self._damaged(Path(f"{stem}.offsets.npy"), f"{len(offsets) - 1} sentences, but the manifest "
                                        f"says {sentences}")
                if len(offsets) and (offsets[0] != 0 or offsets[-1] != len(arrays.ids)):
                    raise self._damaged(Path(f"{stem}.ids.npy"), f"{len(arrays.ids)} ids, but its offsets end at "
                                        f"{offsets[-1]}")

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
        arrays = []
        for suffix, dtypes in (("ids", "iu"), ("offsets", "iu")):
            path = Path(f"{stem}.{suffix}.npy")
            if not path.is_file():
                raise self._damaged(path, "missing")
            try:
                array = np.load(path, mmap_mode="r")
            except (ValueError, OSError, EOFError) as err:  # a truncated file cannot be mapped; a bad header
                raise self._damaged(path, f"unreadable ({err})") from None
            if array.ndim != 1 or array.dtype.kind not in dtypes:
                raise self._damaged(path, f"a {array.dtype} array of shape {array.shape}, expected 1-D integers")
            arrays.append(array)
        return TokenArray(*arrays)

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
        sources.append(RawSource("para", stem, (l1, l2), tuple(expected), split))
    return sources


def scan_corpus(corpus_dir: str | Path, langs: list[str] | None = None, asked_by: str = "") -> list[RawSource]:
    """Find and validate a raw corpus's files (see the module docstring for the layout). Raises UserError for a
    language of `langs` the corpus lacks (the message starts with `asked_by`, the setting that asked for it), a
    file that is empty, binary or mostly not UTF-8 (`xlm_jax.core.textfiles.check_corpus_file`), or a pair whose
    two files differ in line count."""
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
    available = sorted({lang for src in sources for lang in src.langs})
    if langs:
        missing = sorted(set(langs) - set(available))
        if missing:
            raise UserError(f"{asked_by + ': ' if asked_by else ''}corpus {root} has no data for {missing}; "
                            f"languages it has: {available}")
        sources = [src for src in sources if set(src.langs) <= set(langs)]
    for src in sources:  # the files that will be read: each one text, not empty, the two sides of a pair aligned
        stats = [check_corpus_file(f) for f in src.files]
        for f, st in zip(src.files, stats):
            if not st.has_text:
                raise UserError(f"{f} is empty (no non-blank line); remove it or fill it")
        if src.kind == "para" and stats[0].lines != stats[1].lines:
            raise UserError(f"parallel files are not line-aligned: {src.files[0]} has {stats[0].lines} lines but "
                            f"{src.files[1]} has {stats[1].lines}")
    return sources


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

