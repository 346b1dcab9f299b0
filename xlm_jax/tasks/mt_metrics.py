"""Machine-translation metrics: sacreBLEU, chrF++, a tokenized BLEU comparable with XLM's tables, a copy baseline.

Every score comes from the `sacrebleu` package (2.x), never re-implemented:
- "bleu": sacreBLEU corpus BLEU on detokenized text with its defaults (13a tokenization, case-sensitive,
  exponential smoothing), reported with its signature string (`nrefs:1|case:mixed|eff:no|tok:13a|...`).
- "chrf++": `sacrebleu.metrics.CHRF(word_order=2)` (Popović 2017: character 6-grams plus word 2-grams, β = 2).
- "bleu_tok": the BLEU XLM reports (REFERENCE.md, MT section): Moses `multi-bleu.perl`, case-sensitive, on
  Moses-tokenized text. XLM tokenizes with `tools/tokenize.sh` = replace-unicode-punctuation, normalize-punctuation
  `-l LANG`, remove-non-printing-char, `tokenizer.perl -no-escape -l LANG`; here `sacremoses`'
  `MosesPunctNormalizer(lang, pre_replace_unicode_punct=True)` and `MosesTokenizer(lang).tokenize(escape=False)`,
  then sacreBLEU with `tokenize="none"` and `smooth_method="none"` (multi-bleu.perl has no smoothing: any zero
  n-gram precision gives 0). Not comparable with "bleu" (detokenized 13a).
- the copy-the-source baseline: the same three scores with the source sentences as hypotheses. UI strings share
  names, numbers and placeholders across languages, so a model must beat this row to have learnt anything.

Scores are in percent (as sacreBLEU prints them). One reference per hypothesis.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacremoses import MosesPunctNormalizer, MosesTokenizer

from xlm_jax.core.errors import UserError

METRICS = ("bleu", "chrf++", "bleu_tok")


@lru_cache(maxsize=None)
def _moses(lang: str) -> tuple[MosesPunctNormalizer, MosesTokenizer]:
    return MosesPunctNormalizer(lang=lang, pre_replace_unicode_punct=True), MosesTokenizer(lang=lang)


def moses_tokenize(text: str, lang: str) -> str:
    """XLM's `tokenize.sh` for one line (`str` -> space-separated tokens), via sacremoses; see the module docstring."""
    norm, tok = _moses(lang)
    return tok.tokenize(norm.normalize(text), escape=False, return_str=True)


def _check(hypotheses: Sequence[str], references: Sequence[str], what: str = "hypotheses") -> None:
    if len(hypotheses) != len(references):
        raise UserError(f"{what}: {len(hypotheses)} lines but {len(references)} references; "
                        "give one reference per line")
    if not references:
        raise UserError("no sentences to score: give at least one (hypothesis, reference) pair")


def scores(hypotheses: Sequence[str], references: Sequence[str], tgt_lang: str = "en") -> dict:
    """The three corpus scores of `hypotheses` against `references` (one each, same order).

    Args: hypotheses, references: sequences of detokenized strings of equal length; tgt_lang: the references'
    language code (Moses tokenization rules for "bleu_tok").
    Returns {"bleu", "chrf++", "bleu_tok": float (percent), "signatures": {metric: sacreBLEU signature}}.
    Raises UserError when the lengths differ or both are empty.
    """
    _check(hypotheses, references)
    hyps, refs = [str(h) for h in hypotheses], [[str(r) for r in references]]
    bleu, chrf = BLEU(), CHRF(word_order=2)
    bleu_tok = BLEU(tokenize="none", smooth_method="none", force=True)
    out = {"bleu": bleu.corpus_score(hyps, refs).score, "chrf++": chrf.corpus_score(hyps, refs).score}
    tok_h = [moses_tokenize(h, tgt_lang) for h in hyps]
    tok_r = [[moses_tokenize(r, tgt_lang) for r in refs[0]]]
    out["bleu_tok"] = bleu_tok.corpus_score(tok_h, tok_r).score
    out["signatures"] = {"bleu": str(bleu.get_signature()), "chrf++": str(chrf.get_signature()),
                         "bleu_tok": str(bleu_tok.get_signature()) + f"|moses:{tgt_lang}"}
    return out


def mt_report(hypotheses: Sequence[str], references: Sequence[str], sources: Sequence[str] | None = None,
              tgt_lang: str = "en", system: str = "model") -> dict:
    """Scores of a system and of the copy-the-source baseline, as one report.

    Args: hypotheses, references (and sources, when given): equal-length sequences of detokenized strings;
    tgt_lang: the target language (Moses rules for the tokenized BLEU); system: the row's name.
    Returns {"rows": [{"system", "bleu", "chrf++", "bleu_tok"}, ...] (the system first, then "copy source" when
    sources are given), "signatures": {...}, "sentences": n}. Raises UserError on length mismatches or no lines.
    """
    main = scores(hypotheses, references, tgt_lang)
    rows = [{"system": system, **{m: main[m] for m in METRICS}}]
    if sources is not None:
        _check(sources, references, "sources")
        copy = scores(sources, references, tgt_lang)
        rows.append({"system": "copy source", **{m: copy[m] for m in METRICS}})
    return {"rows": rows, "signatures": main["signatures"], "sentences": len(references)}


def format_report(report: dict) -> str:
    """`mt_report`'s dict as a plain-text table (one row per system) followed by the sacreBLEU signatures."""
    head = f"{'system':<16}{'BLEU':>8}{'chrF++':>8}{'tokBLEU':>9}"
    lines = [head] + [f"{r['system']:<16}{r['bleu']:>8.2f}{r['chrf++']:>8.2f}{r['bleu_tok']:>9.2f}"
                      for r in report["rows"]]
    lines += [f"{m}: {s}" for m, s in report["signatures"].items()]
    return "\n".join(lines)
