"""Ranking metrics as BEIR and MTEB report them, and readers for their dataset layout.

Metrics (trec_eval's definitions, which BEIR / MTEB compute through `pytrec_eval`; per query, then averaged over
the queries that have qrels and a ranking):
- nDCG@k (`ndcg_cut.k`): DCG@k / IDCG@k with DCG@k = Σ_{i=1..k} rel_i / log2(i + 1) (graded qrels, gain = rel
  itself, not 2^rel − 1), IDCG@k the same for the judged documents in decreasing relevance; 0 when no document
  is relevant.
- MRR@k (BEIR's `mrr_k`): 1 / rank of the first relevant document within the top k, else 0.
- Recall@k (`recall.k`): relevant documents in the top k / all relevant documents of the query.
- P@k (`P.k`): relevant documents in the top k / k (k, even when the ranking is shorter).
- MAP@k (`map_cut.k`): Σ over relevant documents at rank i ≤ k of P@i, divided by ALL relevant documents of the
  query; MAP (`map`) the same over the whole ranking given.
"Relevant" is rel ≥ 1 (pytrec_eval's default relevance_level); negative grades count as 0.
`evaluate_scores` ranks a score matrix by decreasing score, ties to the lower column index (trec_eval orders
ties by document id instead: identical scores are the only case where the two can differ).

Layout (BEIR; MTEB's retrieval datasets use the same files):
    corpus.jsonl          {"_id": "d1", "title": "…", "text": "…"} per line (title optional)
    queries.jsonl         {"_id": "q1", "text": "…"} per line
    qrels/{split}.tsv     query-id <TAB> corpus-id <TAB> score, after a header line
`read_beir` refuses, naming the file, the line and the value: invalid JSON, a missing or non-string field, an
empty text, a repeated id, a qrels line without three fields or with a non-integer score, and a qrels id absent
from the queries or the corpus.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from xlm_jax.core.errors import UserError, check_range
from xlm_jax.core.textfiles import read_text

DEFAULT_K = (1, 3, 5, 10, 100)


# ------------------------------------------------------------------------------------------------ metrics


def query_metrics(ranking: Sequence[str], rels: Mapping[str, int], k_values: Iterable[int] = DEFAULT_K) -> dict:
    """One query's metrics (module docstring): `ranking` the document ids best first, `rels` {doc id: grade}.
    Returns {"ndcg@k", "mrr@k", "recall@k", "precision@k", "map@k" for each k, and "map"}: floats."""
    gains = [max(int(rels.get(d, 0)), 0) for d in ranking]
    relevant = [g >= 1 for g in gains]
    n_relevant = sum(1 for g in rels.values() if g >= 1)
    ideal = sorted((max(int(g), 0) for g in rels.values()), reverse=True)
    discounts = [1.0 / math.log2(i + 2) for i in range(max(len(ranking), len(ideal), 1))]
    # Running sums: hits and average-precision terms up to each rank.
    hits, ap_terms, first_hit = [], [], None
    h, ap = 0, 0.0
    for i, rel in enumerate(relevant):
        if rel:
            h += 1
            ap += h / (i + 1)
            if first_hit is None:
                first_hit = i
        hits.append(h)
        ap_terms.append(ap)
    out = {}
    for k in k_values:
        top = min(k, len(ranking))
        hit = hits[top - 1] if top else 0
        dcg = sum(g * discounts[i] for i, g in enumerate(gains[:k]))
        idcg = sum(g * discounts[i] for i, g in enumerate(ideal[:k]))
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
        out[f"mrr@{k}"] = 1.0 / (first_hit + 1) if first_hit is not None and first_hit < k else 0.0
        out[f"recall@{k}"] = hit / n_relevant if n_relevant else 0.0
        out[f"precision@{k}"] = hit / k
        out[f"map@{k}"] = (ap_terms[top - 1] if top else 0.0) / n_relevant if n_relevant else 0.0
    out["map"] = (ap_terms[-1] if ap_terms else 0.0) / n_relevant if n_relevant else 0.0
    return out


def _check_k(k_values) -> tuple[int, ...]:
    k_values = tuple(k_values)
    if not k_values:
        raise UserError("k_values: give at least one cut-off")
    for i, k in enumerate(k_values):
        check_range(f"k_values[{i}]", k, 1, integer=True)
    return k_values


def evaluate_rankings(rankings: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]],
                      k_values: Iterable[int] = DEFAULT_K, *, per_query: bool = False) -> dict:
    """Mean metrics (`query_metrics`) over the queries present in both `rankings` ({query id: doc ids, best
    first}) and `qrels` ({query id: {doc id: grade}}), as pytrec_eval / BEIR average them; "queries" gives
    their number. With `per_query`, also "per_query": {query id: its metrics}. Raises UserError for a k < 1 or
    when no query has both a ranking and qrels."""
    k_values = _check_k(k_values)
    per = {q: query_metrics(rankings[q], qrels[q], k_values) for q in rankings if q in qrels}
    if not per:
        raise UserError(f"no query has both a ranking and qrels ({len(rankings)} ranked, {len(qrels)} with qrels): "
                        "do the query ids of the two match?")
    names = next(iter(per.values())).keys()
    out: dict = {name: float(np.mean([m[name] for m in per.values()])) for name in names}
    out["queries"] = len(per)
    if per_query:
        out["per_query"] = per
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k highest scores of each row, best first (ties: lower index first).
    scores: float [Q, N] → int64 [Q, min(k, N)]."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise UserError(f"scores: expected a [queries, documents] matrix, got shape {scores.shape}")
    check_range("k", k, 1, integer=True)
    k = min(k, scores.shape[1])
    # argpartition for the k best, then a stable sort of those (ties to the lower index).
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < scores.shape[1] else np.tile(
        np.arange(scores.shape[1]), (scores.shape[0], 1))
    part = np.sort(part, axis=1)
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64)


def evaluate_scores(scores: np.ndarray, query_ids: Sequence[str], corpus_ids: Sequence[str],
                    qrels: Mapping[str, Mapping[str, int]], k_values: Iterable[int] = DEFAULT_K,
                    *, per_query: bool = False) -> dict:
    """`evaluate_rankings` of the score matrix `scores` float [Q, N] (row i: query_ids[i], column j:
    corpus_ids[j]), each query ranked to its top max(k_values) documents (MAP is over that ranking, as BEIR's
    `map` on a top-k run). Raises UserError when the ids do not match the matrix's shape."""
    k_values = _check_k(k_values)
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape != (len(query_ids), len(corpus_ids)):
        raise UserError(f"scores of shape {scores.shape} for {len(query_ids)} queries x {len(corpus_ids)} documents")
    best = top_k(scores, max(k_values))
    corpus_ids = list(corpus_ids)
    rankings = {q: [corpus_ids[j] for j in row] for q, row in zip(query_ids, best)}
    return evaluate_rankings(rankings, qrels, k_values, per_query=per_query)


# ------------------------------------------------------------------------------------------------ reading


@dataclasses.dataclass(frozen=True)
class RetrievalData:
    """A BEIR / MTEB retrieval split: corpus {doc id: (title, text)}, queries {query id: text}, qrels {query id:
    {doc id: grade}}."""

    corpus: dict[str, tuple[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def doc_texts(self, sep: str = " ") -> tuple[list[str], list[str]]:
        """(doc ids, "title{sep}text" per document, stripped; the text alone without a title), as BEIR's
        dense-retrieval models join them."""
        ids = list(self.corpus)
        return ids, [(title + sep + text).strip() if title else text for title, text in self.corpus.values()]

    def evaluated_queries(self) -> tuple[list[str], list[str]]:
        """(query ids, texts) of the queries that have qrels: the ones the metrics average over."""
        ids = [q for q in self.queries if q in self.qrels]
        return ids, [self.queries[q] for q in ids]


def _id(value, path: Path, line: int, field: str = "_id") -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise UserError(f"{path}:{line}: {field}={value!r:.60}: expected a string")
    value = str(value)
    if not value.strip():
        raise UserError(f"{path}:{line}: {field} is empty")
    return value


def _jsonl(path: Path, what: str, fields: tuple[str, ...], optional: tuple[str, ...] = ()):
    for n, line in enumerate(read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{n}: expected a JSON object, got {line.strip():.60}")
        for field in fields:
            if field not in row:
                raise UserError(f"{path}:{n}: no \"{field}\" field (expected {', '.join(fields + optional)})")
        for field in fields[1:] + optional:
            value = row.get(field, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise UserError(f"{path}:{n}: {field}={value!r:.60}: expected a string")
            row[field] = value
        yield n, _id(row["_id"], path, n), row


def read_corpus(path: str | Path) -> dict[str, tuple[str, str]]:
    """corpus.jsonl → {doc id: (title, text)}. A document needs a text or a title (UserError naming file, line,
    id otherwise)."""
    path = Path(path)
    out: dict[str, tuple[str, str]] = {}
    for n, doc_id, row in _jsonl(path, "BEIR corpus", ("_id", "text"), ("title",)):
        if not row["text"].strip() and not row["title"].strip():
            raise UserError(f"{path}:{n}: _id={doc_id!r}: empty text (and no title)")
        if doc_id in out:
            raise UserError(f"{path}:{n}: _id={doc_id!r} appears twice")
        out[doc_id] = (row["title"], row["text"])
    if not out:
        raise UserError(f"{path}: no documents")
    return out


def read_queries(path: str | Path) -> dict[str, str]:
    """queries.jsonl → {query id: text} (UserError naming file, line, id for an empty text or a repeated id)."""
    path = Path(path)
    out: dict[str, str] = {}
    for n, query_id, row in _jsonl(path, "BEIR queries", ("_id", "text")):
        if not row["text"].strip():
            raise UserError(f"{path}:{n}: _id={query_id!r}: empty text")
        if query_id in out:
            raise UserError(f"{path}:{n}: _id={query_id!r} appears twice")
        out[query_id] = row["text"]
    if not out:
        raise UserError(f"{path}: no queries")
    return out


def read_qrels(path: str | Path, queries: Mapping[str, str] | None = None,
               corpus: Mapping[str, object] | None = None) -> dict[str, dict[str, int]]:
    """qrels/{split}.tsv → {query id: {doc id: grade}}. The first line is the header (query-id, corpus-id,
    score). When `queries` / `corpus` are given, every id must be in them. UserError naming file, line and value
    for a line without three tab-separated fields, a non-integer score, a repeated pair or an unknown id."""
    path = Path(path)
    lines = read_text(path, "BEIR qrels").splitlines()
    out: dict[str, dict[str, int]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        if n == 1:
            if len(fields) >= 3 and fields[2].strip().lstrip("-").isdigit():
                raise UserError(f"{path}:1: expected the header line query-id<TAB>corpus-id<TAB>score, got "
                                f"{line.strip():.60}")
            continue
        if len(fields) != 3:
            raise UserError(f"{path}:{n}: expected query-id<TAB>corpus-id<TAB>score, got {len(fields)} field(s): "
                            f"{line.strip():.60}")
        q, d, score = (f.strip() for f in fields)
        try:
            grade = int(score)
        except ValueError:
            raise UserError(f"{path}:{n}: score={score!r}: expected an integer relevance grade") from None
        q, d = _id(q, path, n, "query-id"), _id(d, path, n, "corpus-id")
        if queries is not None and q not in queries:
            raise UserError(f"{path}:{n}: query-id={q!r} is not in the queries")
        if corpus is not None and d not in corpus:
            raise UserError(f"{path}:{n}: corpus-id={d!r} is not in the corpus")
        if d in out.setdefault(q, {}):
            raise UserError(f"{path}:{n}: the pair query-id={q!r}, corpus-id={d!r} appears twice")
        out[q][d] = grade
    if not out:
        raise UserError(f"{path}: no judgements after the header")
    return out


def read_beir(directory: str | Path, split: str = "test") -> RetrievalData:
    """A BEIR / MTEB retrieval dataset directory (layout: module docstring) → `RetrievalData`. Raises UserError
    naming the file (and line, value) for a missing file or any refusal of `read_corpus`, `read_queries`,
    `read_qrels`."""
    root = Path(directory)
    qrels_path = root / "qrels" / f"{split}.tsv"
    for path in (root / "corpus.jsonl", root / "queries.jsonl", qrels_path):
        if not path.is_file():
            splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
            hint = f" (qrels splits here: {', '.join(splits)})" if splits and path == qrels_path else ""
            raise UserError(f"{path}: not found; a BEIR directory holds corpus.jsonl, queries.jsonl and "
                            f"qrels/{{split}}.tsv{hint}")
    corpus = read_corpus(root / "corpus.jsonl")
    queries = read_queries(root / "queries.jsonl")
    return RetrievalData(corpus, queries, read_qrels(qrels_path, queries, corpus))
