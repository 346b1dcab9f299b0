"""Retrieval metrics against pytrec_eval (trec_eval, what BEIR and MTEB call) on random rankings with graded qrels,
one case by hand, and the BEIR / MTEB readers' refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import pytrec_eval

from xlm_jax.core.errors import UserError
from xlm_jax.tasks.retrieval_metrics import (evaluate_rankings, evaluate_scores, query_metrics, read_beir,
                                             top_k)

K = (1, 3, 5, 10, 50)


def _random_case(seed, n_queries=40, n_docs=60):
    rng = np.random.default_rng(seed)
    qids = [f"q{i}" for i in range(n_queries)]
    dids = [f"d{j}" for j in range(n_docs)]
    qrels = {}
    for q in qids[:-3]:  # the last queries have no qrels: left out of the means, as pytrec_eval does
        docs = rng.choice(n_docs, size=int(rng.integers(1, 8)), replace=False)
        qrels[q] = {dids[j]: int(rng.integers(0, 4)) for j in docs}  # graded, some judged non-relevant (0)
    return qids, dids, qrels, rng.normal(size=(n_queries, n_docs))


@pytest.mark.parametrize("seed", [0, 1])
def test_metrics_match_pytrec_eval(seed):
    qids, dids, qrels, scores = _random_case(seed)
    ours = evaluate_scores(scores, qids, dids, qrels, K, per_query=True)
    best = top_k(scores, max(K))
    run = {q: {dids[j]: float(scores[i, j]) for j in best[i]} for i, q in enumerate(qids)}
    cuts = ",".join(map(str, K))
    measures = {f"ndcg_cut.{cuts}", f"recall.{cuts}", f"P.{cuts}", f"map_cut.{cuts}", "map"}
    theirs = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    assert set(theirs) == set(ours["per_query"]) and ours["queries"] == len(qrels)
    for q, m in theirs.items():
        for k in K:
            for trec, name in (("ndcg_cut", "ndcg"), ("recall", "recall"), ("P", "precision"), ("map_cut", "map")):
                assert ours["per_query"][q][f"{name}@{k}"] == pytest.approx(m[f"{trec}_{k}"], abs=1e-12), (q, name, k)
        assert ours["per_query"][q]["map"] == pytest.approx(m["map"], abs=1e-12)
    # The means are BEIR's: pytrec_eval's per-query values averaged.
    assert ours["ndcg@10"] == pytest.approx(np.mean([m["ndcg_cut_10"] for m in theirs.values()]), abs=1e-12)
    # MRR@k: trec_eval's reciprocal rank of the run cut to its top k (BEIR computes mrr@k so).
    for k in (1, 10):
        cut = {q: dict(list(docs.items())[:k]) for q, docs in run.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
        assert ours[f"mrr@{k}"] == pytest.approx(np.mean([m["recip_rank"] for m in rr.values()]), abs=1e-12)


def test_one_query_by_hand():
    # Ranking d3 d1 d9 d2; grades d1=2, d2=1, d5=3 (d5 never retrieved), d9=0 (judged, not relevant).
    rels = {"d1": 2, "d2": 1, "d5": 3, "d9": 0}
    m = query_metrics(["d3", "d1", "d9", "d2"], rels, (1, 2, 4, 10))
    dcg4 = 2 / math.log2(3) + 1 / math.log2(5)
    idcg4 = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@4"] == pytest.approx(dcg4 / idcg4)
    assert m["ndcg@1"] == 0.0 and m["mrr@1"] == 0.0 and m["mrr@2"] == 0.5 and m["mrr@10"] == 0.5
    assert m["recall@2"] == pytest.approx(1 / 3) and m["recall@4"] == pytest.approx(2 / 3)
    assert m["precision@1"] == 0.0 and m["precision@4"] == 0.5 and m["precision@10"] == 0.2
    assert m["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 3) and m["map"] == m["map@4"]
    assert m["map@2"] == pytest.approx((1 / 2) / 3)


def test_ties_and_refusals():
    assert top_k(np.array([[0.5, 0.9, 0.5, 0.9]]), 3).tolist() == [[1, 3, 0]]
    with pytest.raises(UserError, match=r"k_values\[1\]=0: must be an integer >= 1"):
        evaluate_rankings({"q": ["d"]}, {"q": {"d": 1}}, (1, 0))
    with pytest.raises(UserError, match="no query has both a ranking and qrels"):
        evaluate_rankings({"q1": ["d"]}, {"q2": {"d": 1}})
    with pytest.raises(UserError, match=r"shape \(2, 3\) for 2 queries x 2 documents"):
        evaluate_scores(np.zeros((2, 3)), ["a", "b"], ["x", "y"], {"a": {"x": 1}})


def _write(d, corpus=None, queries=None, qrels=None, split="test"):
    corpus = corpus if corpus is not None else [{"_id": "d1", "title": "Cats", "text": "Cats purr."},
                                                {"_id": "d2", "title": "", "text": "Dogs bark."}, {"_id": 3, "text": "x"}]
    queries = queries if queries is not None else [{"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "bark"}]
    qrels = qrels if qrels is not None else "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\t3\t0\nq2\td2\t1\n"
    d.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus.jsonl", corpus), ("queries.jsonl", queries)):
        (d / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    (d / "qrels").mkdir(exist_ok=True)
    (d / "qrels" / f"{split}.tsv").write_text(qrels)
    return d


def test_read_beir(tmp_path):
    data = read_beir(_write(tmp_path / "ok"))
    assert data.corpus == {"d1": ("Cats", "Cats purr."), "d2": ("", "Dogs bark."), "3": ("", "x")}
    assert data.queries == {"q1": "what purrs", "q2": "bark"}
    assert data.qrels == {"q1": {"d1": 2, "3": 0}, "q2": {"d2": 1}}
    assert data.doc_texts() == (["d1", "d2", "3"], ["Cats Cats purr.", "Dogs bark.", "x"])
    assert data.evaluated_queries() == (["q1", "q2"], ["what purrs", "bark"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(corpus=[{"_id": "d1", "title": "t"}]), r"corpus\.jsonl:1: no \"text\" field"),
    (dict(corpus=[{"_id": "d1", "text": "a"}, {"_id": "d2", "title": " ", "text": ""}]),
     r"corpus\.jsonl:2: _id='d2': empty text"),
    (dict(corpus=[{"_id": "d1", "text": "a"}, "{not json"]), r"corpus\.jsonl:2: not valid JSON"),
    (dict(corpus=[{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}]), r"corpus\.jsonl:2: _id='d1' appears twice"),
    (dict(queries=[{"_id": "q1", "text": ""}]), r"queries\.jsonl:1: _id='q1': empty text"),
    (dict(queries=[{"text": "a"}]), r"queries\.jsonl:1: no \"_id\" field"),
    (dict(queries=[{"_id": "q1", "text": 5}]), r"queries\.jsonl:1: text=5: expected a string"),
    (dict(qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n"), r"test\.tsv:3: query-id='q9' is not in the queries"),
    (dict(qrels="query-id\tcorpus-id\tscore\nq1\td7\t1\n"), r"test\.tsv:2: corpus-id='d7' is not in the corpus"),
    (dict(qrels="query-id\tcorpus-id\tscore\nq1\td1\thigh\n"), r"test\.tsv:2: score='high': expected an integer"),
    (dict(qrels="query-id\tcorpus-id\tscore\nq1 d1 1\n"), r"test\.tsv:2: expected query-id<TAB>corpus-id<TAB>score"),
    (dict(qrels="q1\td1\t1\n"), r"test\.tsv:1: expected the header line"),
    (dict(qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t2\n"), r"test\.tsv:3: the pair .* appears twice"),
])
def test_read_beir_refusals_name_file_line_and_value(tmp_path, kwargs, match):
    with pytest.raises(UserError, match=match):
        read_beir(_write(tmp_path / "bad", **kwargs))


def test_read_beir_missing_split_lists_the_ones_there(tmp_path):
    d = _write(tmp_path / "dev_only", split="dev")
    with pytest.raises(UserError, match=r"qrels/test\.tsv: not found.*qrels splits here: dev"):
        read_beir(d)
    assert read_beir(d, "dev").qrels["q2"] == {"d2": 1}
