"""Hard-negative mining for contrastive training: the pairs file, the candidate corpus, and the choice of negatives
from nearest neighbours. No model runs here: `select_negatives` takes embeddings ([N, D] float arrays); the
command `python -m xlm_jax.negatives` (`xlm_jax.workflows.negatives`) embeds with the model and writes the file.

The pairs file (the format contrastive fine-tuning reads):
- JSONL (`.jsonl` / `.json`, or a first line starting with `{`): one object a line,
  `{"anchor": str, "positive": str, "negatives": [str, ...]}` ("negatives" optional; other keys are kept).
- TSV (any other name): a header line naming the columns, `anchor` (or `query`), `positive` (or `pos`), negatives
  `neg1`, `neg2`, ... (any name starting with "neg"), other columns kept (e.g. `lang`); then one row a line.
Every anchor and positive must be a non-empty string (UserError naming the file, line and value otherwise).

The corpus: one text per line (blank lines skipped), or a BEIR `corpus.jsonl` ("title text" per document, as
`evaluate retrieval` embeds it). The candidates are the corpus texts and the positives of the pairs file (as
sentence-transformers' `mine_hard_negatives` adds its `corpus` to the positive column), each distinct text once.

The choice (`select_negatives`), for row i with anchor a, positive p and score s(x) = cos(a, x):
1. never a positive: no text equal to a positive of the same anchor (a repeated anchor's positives are all
   excluded, as sentence-transformers excludes every positive of a query), nor to the anchor itself, compared
   after `normalize_text` (Unicode NFKC, case folded, whitespace collapsed: exact and normalised duplicates);
2. the margins of sentence-transformers' `mine_hard_negatives` (sentence_transformers/util/hard_negatives.py,
   v6.3; NV-Retriever, Moreira et al. 2024, "Mining Hard Negatives for Text Embedding Models", found the
   relative margin 0.05 best: its "TopK-PercPos" 95 %): a candidate is dropped when
       absolute_margin:  s(x) + absolute_margin > s(p)
       relative_margin:  s(x) > s(p) − |s(p)| · relative_margin
   (near-duplicates of the positive score close to it and are dropped; unlike sentence-transformers, whose
   threshold is the lowest positive score of a repeated anchor, each row uses its own positive's score);
3. the k highest-scoring survivors, ties broken by corpus order (deterministic on either knn backend), no two
   of them normalised duplicates of each other.
A row keeps fewer than k negatives only when the whole corpus has fewer valid candidates for it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xlm_jax.core.errors import UserError, check_range
from xlm_jax.core.textfiles import read_text
from xlm_jax.tasks.mining import DEFAULT_BLOCK_BYTES, knn
from xlm_jax.tasks.retrieval_metrics import read_corpus

JSONL_SUFFIXES = (".jsonl", ".json")
TSV_SUFFIXES = (".tsv", ".txt")
DEFAULT_RELATIVE_MARGIN = 0.05  # NV-Retriever's best setting (sentence-transformers' documented example)


@dataclasses.dataclass
class Pair:
    """One row of a pairs file: anchor, positive, its negatives, the line it came from and (JSONL) its other
    keys, written back unchanged."""

    anchor: str
    positive: str
    negatives: list[str]
    line: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def normalize_text(text: str) -> str:
    """The key duplicates are compared by: Unicode NFKC, case folded, runs of whitespace as one space, stripped."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def pairs_format(path: str | Path, first_line: str = "") -> str:
    """"jsonl" or "tsv": by the suffix (.jsonl / .json, .tsv / .txt), else by the first line (`{`: JSONL)."""
    suffix = Path(path).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in TSV_SUFFIXES:
        return "tsv"
    return "jsonl" if first_line.lstrip().startswith("{") else "tsv"


def _text(value: Any, path: Path, n: int, field: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{path}:{n}: {field}={value!r:.60}: expected a string")
    if not value.strip():
        raise UserError(f"{path}:{n}: {field} is empty ({value!r}); every anchor and positive needs text")
    return value


ANCHOR_COLUMNS, POSITIVE_COLUMNS = ("anchor", "query"), ("positive", "pos")  # as contrastive fine-tuning reads


def _tsv_header(line: str, path: Path, n: int) -> dict:
    """A TSV pairs file's header -> column indices {"anchor", "positive", "negatives" (list), "extra" ({name:
    index}), "names"}. UserError when it names no anchor or no positive column."""
    names = [c.strip() for c in line.split("\t")]
    anchor = next((names.index(c) for c in ANCHOR_COLUMNS if c in names), None)
    positive = next((names.index(c) for c in POSITIVE_COLUMNS if c in names), None)
    if anchor is None or positive is None:
        raise UserError(f"{path}:{n}: the header {line.strip()[:80]!r} must name an 'anchor' (or 'query') and a "
                        "'positive' (or 'pos') column, negatives as neg1, neg2, ... (the TSV layout contrastive "
                        "fine-tuning reads); or write JSONL")
    negatives = [i for i, c in enumerate(names) if c.startswith("neg")]
    extra = {c: i for i, c in enumerate(names) if i not in (anchor, positive, *negatives)}
    return {"anchor": anchor, "positive": positive, "negatives": negatives, "extra": extra, "names": names}


def read_pairs(path: str | Path) -> tuple[list[Pair], str]:
    """The rows of a pairs file and its format ("jsonl" / "tsv"). Blank lines are skipped. Raises UserError naming
    the file and line for a missing / non-UTF-8 / empty file, bad JSON, a missing or empty anchor / positive, a
    value that is not a string, or "negatives" that is not a list of non-empty strings."""
    path = Path(path)
    lines = read_text(path, "pairs file").splitlines()
    first = next((line for line in lines if line.strip()), "")
    fmt = pairs_format(path, first)
    pairs, header = [], None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if fmt == "tsv" and header is None:
            header = _tsv_header(line, path, n)
            continue
        if fmt == "jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}); a JSONL pairs file has "
                                '{"anchor": ..., "positive": ..., "negatives": [...]} per line') from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{n}: expected a JSON object, got {line.strip():.60}")
            for field in ("anchor", "positive"):
                if field not in row:
                    raise UserError(f'{path}:{n}: no "{field}" field (a pairs row needs "anchor" and "positive")')
            negatives = row.get("negatives", [])
            if not isinstance(negatives, list):
                raise UserError(f"{path}:{n}: negatives={negatives!r:.60}: expected a list of strings")
            extra = {k: v for k, v in row.items() if k not in ("anchor", "positive", "negatives")}
            anchor, positive = row["anchor"], row["positive"]
        else:
            cells = line.split("\t")
            if len(cells) <= max(header["anchor"], header["positive"]):
                raise UserError(f"{path}:{n}: missing positive: expected the header's columns "
                                f"({', '.join(header['names'])}), got {line[:60]!r}")
            anchor, positive = cells[header["anchor"]], cells[header["positive"]]
            negatives = [cells[i] for i in header["negatives"] if i < len(cells) and cells[i]]
            extra = {name: cells[i] for name, i in header["extra"].items() if i < len(cells)}
        pairs.append(Pair(_text(anchor, path, n, "anchor"), _text(positive, path, n, "positive"),
                          [_text(x, path, n, f"negatives[{i}]") for i, x in enumerate(negatives)], n, extra))
    if not pairs:
        raise UserError(f"{path}: empty; a pairs file has one (anchor, positive) pair per line")
    return pairs, fmt


def read_corpus_texts(path: str | Path) -> list[str]:
    """Candidate texts: a BEIR `corpus.jsonl` (a path named corpus.jsonl, or a directory holding one: "title text"
    per document) or a text file with one text per line (blank lines skipped). UserError for a missing /
    non-UTF-8 file or one without any text (naming it)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "corpus.jsonl").is_file():
            raise UserError(f"{path}: a directory without corpus.jsonl; give a text file (one text per line) or a "
                            "BEIR corpus.jsonl")
        path = path / "corpus.jsonl"
    if path.name == "corpus.jsonl":
        return [f"{title} {text}".strip() for title, text in read_corpus(path).values()]
    texts = [line.strip() for line in read_text(path, "corpus file").splitlines() if line.strip()]
    if not texts:
        raise UserError(f"{path}: empty; the corpus has one text per line (or is a BEIR corpus.jsonl)")
    return texts


def candidate_texts(pairs: Sequence[Pair], corpus: Sequence[str] = ()) -> list[str]:
    """The distinct texts negatives are chosen from: the pairs' positives, then the corpus, each text once (first
    occurrence kept, exact comparison; normalised duplicates are handled by `select_negatives`)."""
    return list(dict.fromkeys([p.positive for p in pairs] + list(corpus)))


def check_options(k: int, relative_margin: float | None, absolute_margin: float | None) -> None:
    """UserError naming the option for k < 1, relative_margin outside [0, 1], absolute_margin outside [0, 2]
    (cosines lie in [-1, 1])."""
    check_range("--k", k, 1, integer=True)
    if relative_margin is not None:
        check_range("--relative-margin", relative_margin, 0, 1)
    if absolute_margin is not None:
        check_range("--absolute-margin", absolute_margin, 0, 2)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    def unit(x):
        x = np.asarray(x, np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.sum(unit(a) * unit(b), axis=1)


@dataclasses.dataclass
class MiningStats:
    """What `select_negatives` dropped: candidates that were a positive / the anchor (or a normalised duplicate
    of one), that the margins removed, and the rows left with fewer than k negatives."""

    excluded_positive: int = 0
    excluded_margin: int = 0
    short_rows: int = 0


def select_negatives(pairs: Sequence[Pair], anchors: np.ndarray, positives: np.ndarray, candidates: Sequence[str],
                     candidate_emb: np.ndarray, k: int, relative_margin: float | None = DEFAULT_RELATIVE_MARGIN,
                     absolute_margin: float | None = None, *, depth: int | None = None, backend: str = "auto",
                     block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[list[list[str]], list[list[float]], MiningStats]:
    """The k hard negatives of every row (the rules in the module docstring).

    pairs: N rows; anchors, positives: float [N, D] (row i embeds pairs[i]'s anchor / positive); candidates: M
    texts with candidate_emb float [M, D]. Neighbours come from `mining.knn` (faiss when installed), first
    `depth` deep (default min(M, 10k + 10), sentence-transformers' range_max with margins), then over the whole
    corpus for the rows that found fewer than k there. Returns (negatives: N lists of texts, their cosines to the
    anchor, MiningStats), each list best first. Raises UserError for bad k / margins or mismatched shapes."""
    check_options(k, relative_margin, absolute_margin)
    n, m = len(pairs), len(candidates)
    if anchors.shape[0] != n or positives.shape != anchors.shape or candidate_emb.shape[0] != m:
        raise UserError(f"select_negatives: {n} pairs, anchors {anchors.shape}, positives {positives.shape}, "
                        f"{m} candidates with embeddings {candidate_emb.shape}")
    # Every positive of an anchor (normalised), so a repeated anchor never gets another row's positive.
    positives_of: dict[str, set[str]] = {}
    for p in pairs:
        positives_of.setdefault(normalize_text(p.anchor), set()).add(normalize_text(p.positive))
    cand_keys = [normalize_text(t) for t in candidates]
    pos_scores = _cos(anchors, positives)
    stats = MiningStats()
    out_texts: list[list[str] | None] = [None] * n
    out_scores: list[list[float] | None] = [None] * n

    def choose(rows: np.ndarray, d: int, final: bool) -> None:
        sims, ids = knn(anchors[rows], candidate_emb, d, backend=backend, block_bytes=block_bytes)
        for r, row_sims, row_ids in zip(rows, sims, ids):
            # Decreasing score, ties by corpus order: the same choice from faiss and from NumPy.
            order = np.lexsort((row_ids, -row_sims))
            p = pairs[r]
            banned = positives_of[normalize_text(p.anchor)] | {normalize_text(p.anchor)}
            pos = float(pos_scores[r])
            limit = np.inf
            if absolute_margin is not None:
                limit = min(limit, pos - absolute_margin)
            if relative_margin is not None:
                limit = min(limit, pos - abs(pos) * relative_margin)
            texts, scores, seen = [], [], set()
            excluded = margin = 0
            for j in order:
                key, s = cand_keys[row_ids[j]], float(row_sims[j])
                if key in banned:
                    excluded += 1
                elif s > limit:
                    margin += 1
                elif key not in seen:
                    seen.add(key)
                    texts.append(candidates[row_ids[j]])
                    scores.append(s)
                    if len(texts) == k:
                        break
            if len(texts) == k or final:
                stats.excluded_positive += excluded
                stats.excluded_margin += margin
                stats.short_rows += len(texts) < k
                out_texts[r], out_scores[r] = texts, scores

    depth = min(m, depth or 10 * k + 10)
    choose(np.arange(n), depth, final=depth >= m)
    short = np.array([i for i in range(n) if out_texts[i] is None], np.int64)
    if len(short):
        choose(short, m, final=True)
    return out_texts, out_scores, stats


def format_pairs(pairs: Sequence[Pair], negatives: Sequence[Sequence[str]], fmt: str, path: str | Path = "") -> str:
    """The pairs file's text with each row's negatives replaced by `negatives[i]`: JSONL rows keep their other
    keys ("anchor", "positive", "negatives" first); TSV rows are anchor, positive, negatives by tabs. UserError
    when a text cannot be a TSV cell (it holds a tab or a line break: write JSONL instead)."""
    lines = []
    if fmt == "tsv":  # the header contrastive fine-tuning reads: anchor, positive, the other columns, neg1..negK
        extra = list(pairs[0].extra) if pairs else []
        k = max((len(negs) for negs in negatives), default=0)
        lines.append("\t".join(["anchor", "positive", *extra, *(f"neg{i + 1}" for i in range(k))]))
    for p, negs in zip(pairs, negatives):
        if fmt == "jsonl":
            lines.append(json.dumps({"anchor": p.anchor, "positive": p.positive, "negatives": list(negs), **p.extra},
                                    ensure_ascii=False))
            continue
        cells = [p.anchor, p.positive, *(p.extra.get(c, "") for c in extra), *negs]
        bad = next((c for c in cells if re.search(r"[\t\r\n]", c)), None)
        if bad is not None:
            raise UserError(f"{path}: the text {bad[:60]!r} (line {p.line}'s row) holds a tab or line break and cannot "
                            "be a TSV cell; write a .jsonl file instead")
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"
