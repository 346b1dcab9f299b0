"""Read-only access to a preprocessed directory (format: docs/data_format.md).

Minimal version written by the batches helper so the batch pipeline can be built against the contract;
the tokenizer/corpus helper owns this file and may extend it.
"""

from __future__ import annotations

import json
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
