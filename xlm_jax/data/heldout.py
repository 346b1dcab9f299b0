"""The held-out split of a flat corpus: a sentence held out anywhere is held out everywhere.

Invariant: no valid / test sentence of a language occurs in a train split of that language, as a monolingual
line or as either side of a pair. So that evaluation on held-out pairs (retrieval, zero-shot transfer) measures
sentences the model has not been trained on, also when the monolingual files are the sides of the pairs.

- A *sentence* is a language and the ids it is stored as (after truncation to --max-len). Lines that store the
  same ids are one sentence, also when their texts differ in what the tokenizer normalises (spaces, Unicode
  forms, case with --lowercase-and-strip-accents) or in what --max-len cuts off.
- A pair links its two sides. The sentences linked through pairs, across every pair file, form a *translation
  group* (a connected component: a sentence, its translations, their other translations, ...). A sentence in
  no pair is a group of its own.
- Each group goes to one split, as a whole: `heldout_split` (a hash of the text) of the group's smallest text
  in code point order, taken over its pair sides, or over its own lines for a sentence in no pair. So a mono
  line in no pair with no look-alike splits exactly as `heldout_split(line)`. The choice is deterministic and
  does not depend on line or file order, nor on the number of workers.
- A mono line or a pair goes to the split of its group. A line or pair that is not stored (dropped as empty or
  too long) links nothing; it is counted as dropped in the split that `heldout_split` gives its text (a pair:
  "a\\tb").

Consequence for the fractions: --valid-fraction / --test-fraction are the probabilities that a group is held
out. In expectation that is the same fraction of sentences, mono lines and pairs, but the realised fractions
vary more than with one hash per line, since groups move whole (on the gettext en↔de/fr/es/it/pt corpus a
group has 2 to 560 sentences, 4.8 on average).

Cost: a pair's split depends on every pair file, so `preprocess` tokenizes all pair files (and keeps their
texts and ids) before it writes any split; mono files are still read one at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xlm_jax.data.corpus import heldout_split

Sentence = tuple[str, bytes]  # (language, stored ids as int32 bytes)
Stored = Sequence[list[np.ndarray | None]]  # per side (or file): each line's ids as stored, None when dropped


def sentence_key(lang: str, ids: np.ndarray | None) -> Sentence | None:
    """The identity of a stored sentence; None for a sentence that is not stored."""
    return None if ids is None else (lang, np.asarray(ids, dtype=np.int32).tobytes())


class HeldOutSplit:
    """Translation groups of a flat corpus's pairs (union-find), then the split of every line and pair.

    Use: `link_pairs` for every pair file first, then `pair_splits` / `mono_splits`, which return one split name
    per pair / per non-blank mono line. The fractions are validated by the caller (`preprocess_corpus`)."""

    def __init__(self, valid_fraction: float, test_fraction: float):
        self.valid_fraction, self.test_fraction = valid_fraction, test_fraction
        self._parent: dict[Sentence, Sentence] = {}
        self._smallest: dict[Sentence, str] = {}  # root -> the group's smallest text
        self._frozen = False

    def _root(self, s: Sentence) -> Sentence:
        parent = self._parent
        while parent[s] != s:
            parent[s] = parent[parent[s]]  # path halving keeps the trees shallow
            s = parent[s]
        return s

    def _add(self, s: Sentence, text: str) -> Sentence:
        if s not in self._parent:
            self._parent[s] = s
            self._smallest[s] = text
            return s
        root = self._root(s)
        if text < self._smallest[root]:
            self._smallest[root] = text
        return root

    @property
    def _nothing_held_out(self) -> bool:
        return self.valid_fraction <= 0 and self.test_fraction <= 0

    def link_pairs(self, langs: Sequence[str], texts: Sequence[list[str]], stored: Stored) -> None:
        """Link the two sides of each stored pair. `texts`: the two files' lines; `stored`: the ids of each
        side as stored (1-D int arrays), None for a side that is dropped."""
        if self._frozen:
            raise RuntimeError("link_pairs after the splits were read")
        if self._nothing_held_out:
            return  # every split is "train": no group is needed
        l1, l2 = langs
        for text_a, text_b, ids_a, ids_b in zip(*texts, *stored):
            if ids_a is None or ids_b is None:
                continue
            ra = self._add(sentence_key(l1, ids_a), text_a)
            rb = self._add(sentence_key(l2, ids_b), text_b)
            if ra != rb:
                self._parent[rb] = ra
                self._smallest[ra] = min(self._smallest[ra], self._smallest.pop(rb))

    def _group_split(self, s: Sentence) -> str:
        self._frozen = True
        return heldout_split(self._smallest[self._root(s)], self.valid_fraction, self.test_fraction)

    def pair_splits(self, langs: Sequence[str], texts: Sequence[list[str]], stored: Stored) -> list[str]:
        """The split ("train" / "valid" / "test") of each pair of a file given to `link_pairs` (same arguments)."""
        if self._nothing_held_out:
            return ["train"] * len(texts[0])
        l1 = langs[0]
        return [
            heldout_split(f"{a}\t{b}", self.valid_fraction, self.test_fraction) if ia is None or ib is None
            else self._group_split(sentence_key(l1, ia))
            for a, b, ia, ib in zip(*texts, *stored)
        ]

    def mono_splits(self, lang: str, lines: list[str], stored: list[np.ndarray | None]) -> list[str]:
        """The split of each line of the mono file of `lang` (`lines`: its non-blank lines; `stored`: the ids
        of each as stored, None for a dropped line). Call after every `link_pairs`."""
        if self._nothing_held_out:
            return ["train"] * len(lines)
        keys = [sentence_key(lang, ids) for ids in stored]
        own: dict[Sentence, str] = {}  # a sentence in no pair: its smallest line
        for key, line in zip(keys, lines):
            if key is not None and key not in self._parent and (key not in own or line < own[key]):
                own[key] = line
        return [
            heldout_split(line, self.valid_fraction, self.test_fraction) if key is None
            else self._group_split(key) if key in self._parent
            else heldout_split(own[key], self.valid_fraction, self.test_fraction)
            for key, line in zip(keys, lines)
        ]
