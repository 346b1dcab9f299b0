"""Extractive-QA metrics: exact match and token F1, as the official evaluation scripts compute them.

The metric is chosen by DATASET, never by language (`metric_for_file`), with two definitions:
- "squad_v1.1" (rajpurkar/SQuAD-explorer `evaluate-v1.1.py`): lowercase, drop ASCII punctuation
  (`string.punctuation`), drop the English articles a / an / the, collapse whitespace — in every language. SQuAD
  v1.1, XQuAD and TyDi QA gold passage are scored with it (XTREME's `scripts/eval_qa.sh` runs `evaluate-v1.1.py`
  on XQuAD and TyDi QA; its MLQA line runs MLQA's script).
- "mlqa" (facebookresearch/MLQA `mlqa_evaluation_v1.py`), for MLQA's `{dev,test}-context-XX-question-YY.json`
  files, normalising with the context language XX (en, es, de, ar, hi, vi, zh): lowercase, drop every
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
from pathlib import Path
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


SQUAD = "squad_v1.1"
MLQA = "mlqa"
METRICS = (SQUAD, MLQA)
METRIC_NAMES = {SQUAD: "SQuAD v1.1 evaluate-v1.1.py", MLQA: "MLQA mlqa_evaluation_v1.py"}
_MLQA_FILE = re.compile(r"^(dev|test)-context-([a-z]{2})-question-([a-z]{2})\.json$")


def mlqa_file_langs(path: str | Path) -> tuple[str, str] | None:
    """(context language, question language) of an MLQA file name (`test-context-de-question-en.json`), else None."""
    m = _MLQA_FILE.match(Path(path).name)
    return (m.group(2), m.group(3)) if m else None


def metric_for_file(path: str | Path, configured: str = "auto") -> str:
    """The official metric of a QA file: `configured` when it is one of METRICS, else (`"auto"`) MLQA's for MLQA's
    file names and SQuAD v1.1's for every other file (SQuAD, XQuAD, TyDi QA gold passage). Raises ValueError for
    any other `configured` value."""
    if configured in METRICS:
        return configured
    if configured != "auto":
        raise ValueError(f"qa metric {configured!r}: valid values are auto, {', '.join(METRICS)}")
    return MLQA if mlqa_file_langs(path) else SQUAD


def normalize_answer(text: str, lang: str, metric: str) -> str:
    """The normalised answer under `metric` ("squad_v1.1": language-independent; "mlqa": with the context language
    `lang`, one of MLQA_LANGS); its whitespace-separated tokens are what F1 counts. Raises ValueError for an
    unknown metric or an MLQA language outside MLQA_LANGS."""
    if metric == SQUAD:
        return squad_normalize(text)
    if metric == MLQA:
        return mlqa_normalize(text, lang)
    raise ValueError(f"qa metric {metric!r}: valid metrics are {', '.join(METRICS)}")


def exact_match(prediction: str, gold: str, lang: str, metric: str) -> float:
    return float(normalize_answer(prediction, lang, metric) == normalize_answer(gold, lang, metric))


def f1(prediction: str, gold: str, lang: str, metric: str) -> float:
    """Token F1 of the normalised strings (0 when they share no token, as in both official scripts)."""
    pred, ref = normalize_answer(prediction, lang, metric).split(), normalize_answer(gold, lang, metric).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_over_golds(prediction: str, golds: Sequence[str], lang: str, metric: str) -> tuple[float, float]:
    """(EM, F1) of one prediction: each the maximum over the gold answers. Raises ValueError without golds."""
    if not golds:
        raise ValueError("no gold answers to score against")
    return (max(exact_match(prediction, g, lang, metric) for g in golds),
            max(f1(prediction, g, lang, metric) for g in golds))


def score_predictions(items: Iterable[tuple[str, Sequence[str], str, str]]) -> dict[str, dict]:
    """items: (prediction, gold answers, lang, metric) per question -> {lang: {"exact_match", "f1", "score" (= f1),
    "n", "metric"}} with EM and F1 averaged over that language's questions (fractions in [0, 1]); "metric" names
    the definition(s) used (`METRICS`, "+"-joined if a language mixes datasets)."""
    sums: dict[str, list] = {}
    for prediction, golds, lang, metric in items:
        em, f = best_over_golds(prediction, golds, lang, metric)
        acc = sums.setdefault(lang, [0.0, 0.0, 0, set()])
        acc[0] += em
        acc[1] += f
        acc[2] += 1
        acc[3].add(metric)
    return {lang: {"exact_match": em / n, "f1": f / n, "score": f / n, "n": n, "metric": "+".join(sorted(m))}
            for lang, (em, f, n, m) in sums.items()}
