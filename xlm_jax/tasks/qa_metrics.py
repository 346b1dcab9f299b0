"""Extractive-QA metrics: exact match and token F1, as the official evaluation scripts compute them.

Two normalisations, chosen per language by `normalize_answer(text, lang)`:
- SQuAD v1.1 (rajpurkar/SQuAD-explorer `evaluate-v1.1.py`): lowercase, drop ASCII punctuation
  (`string.punctuation`), drop the English articles a / an / the, collapse whitespace. XTREME scores XQuAD and
  every language outside MLQA's seven with it.
- MLQA (facebookresearch/MLQA `mlqa_evaluation_v1.py`), for en, es, de, ar, hi, vi, zh: lowercase, drop every
  Unicode punctuation character (category P*) and ASCII punctuation, drop that language's articles (es: un una
  unos unas el la los las; de: ein eine einen einem eines einer der die das den dem des; vi: của là cái chiếc
  những; ar: every "ال"; hi, zh: none), then split on whitespace — or, for zh, "mixed segmentation": each CJK
  character (U+4E00–U+9FA5) and each punctuation character is a token of its own, the rest is split on whitespace.

F1 is the harmonic mean of the bag-of-tokens precision and recall of the normalised prediction against one
normalised gold answer; EM is 1 when the normalised strings are equal. Both take the maximum over the gold
answers and are averaged over questions (reported in percent by the tables, as fractions here).
"""

from __future__ import annotations

import re
import string
import sys
import unicodedata
from collections import Counter
from typing import Iterable, Sequence

SQUAD_PUNCT = frozenset(string.punctuation)
# MLQA's PUNCT: every code point below sys.maxunicode whose Unicode category starts with "P", plus ASCII punctuation.
MLQA_PUNCT = frozenset(chr(i) for i in range(sys.maxunicode) if unicodedata.category(chr(i)).startswith("P")) | SQUAD_PUNCT
MLQA_LANGS = ("en", "es", "hi", "vi", "de", "ar", "zh")
_WHITESPACE_LANGS = ("en", "es", "hi", "vi", "de", "ar")
_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    # MLQA's pattern as released: its first branch (`\sال^`) can never match, so every "ال" is removed.
    "ar": re.compile(r"\sال^|ال"),
}
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def squad_normalize(text: str) -> str:
    """SQuAD v1.1's `normalize_answer`: lower, drop ASCII punctuation, drop a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in SQUAD_PUNCT)
    return " ".join(_ARTICLES["en"].sub(" ", text).split())


def mixed_segmentation(text: str) -> list[str]:
    """MLQA's zh tokens: each CJK character and each punctuation character alone, other runs split on whitespace."""
    out, run = [], ""
    for ch in text:
        if _CJK.search(ch) or ch in MLQA_PUNCT:
            out += run.split()
            run = ""
            out.append(ch)
        else:
            run += ch
    return out + run.split()


def mlqa_normalize(text: str, lang: str) -> str:
    """MLQA's `normalize_answer(s, lang)` for lang in MLQA_LANGS (ValueError otherwise): tokens joined by spaces."""
    if lang not in MLQA_LANGS:
        raise ValueError(f"MLQA's normalisation knows languages {', '.join(MLQA_LANGS)}, not {lang!r}")
    text = "".join(ch for ch in text.lower() if ch not in MLQA_PUNCT)
    if lang in _ARTICLES:
        text = _ARTICLES[lang].sub(" ", text)
    tokens = text.split() if lang in _WHITESPACE_LANGS else mixed_segmentation(text)
    return " ".join(t for t in tokens if t.strip())


def normalize_answer(text: str, lang: str) -> str:
    """MLQA's normalisation for its seven languages, SQuAD v1.1's for every other language (as XTREME scores
    XQuAD); the result's whitespace-separated tokens are what F1 counts."""
    return mlqa_normalize(text, lang) if lang in MLQA_LANGS else squad_normalize(text)


def exact_match(prediction: str, gold: str, lang: str = "en") -> float:
    return float(normalize_answer(prediction, lang) == normalize_answer(gold, lang))


def f1(prediction: str, gold: str, lang: str = "en") -> float:
    """Token F1 of the normalised strings (0 when they share no token, as in both official scripts)."""
    pred, ref = normalize_answer(prediction, lang).split(), normalize_answer(gold, lang).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(prediction: str, golds: Sequence[str], lang: str = "en") -> tuple[float, float]:
    """(EM, F1) of one prediction: each the maximum over the gold answers. Raises ValueError without golds."""
    if not golds:
        raise ValueError("no gold answers to score against")
    return max(exact_match(prediction, g, lang) for g in golds), max(f1(prediction, g, lang) for g in golds)


def score_predictions(items: Iterable[tuple[str, Sequence[str], str]]) -> dict[str, dict]:
    """items: (prediction, gold answers, lang) per question -> {lang: {"exact_match", "f1", "score" (= f1), "n"}}
    with EM and F1 averaged over that language's questions (fractions in [0, 1])."""
    sums: dict[str, list[float]] = {}
    for prediction, golds, lang in items:
        em, f = best_over_golds(prediction, golds, lang)
        acc = sums.setdefault(lang, [0.0, 0.0, 0])
        acc[0] += em
        acc[1] += f
        acc[2] += 1
    return {lang: {"exact_match": em / n, "f1": f / n, "score": f / n, "n": n} for lang, (em, f, n) in sums.items()}
