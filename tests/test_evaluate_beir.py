"""`evaluate retrieval --data`: ranked retrieval on a tiny hand-made BEIR directory with a tiny random model; the
command's metrics against an independent path (our embeddings, a full cosine matrix, `evaluate_scores`), identical
query / document texts ranking first, cross-lingual languages, and bad inputs (one `error:` line naming file,
line and value; exit 2; nothing written)."""

import json
from pathlib import Path

import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint

from xlm_jax import evaluate as E
from xlm_jax.tasks.retrieval_metrics import evaluate_scores

W = tiny_setup.WORDS
DOCS = {f"d{i}": " ".join(W["en"][i:i + 3 + i % 3]) for i in range(8)}
QUERIES = {"q1": DOCS["d1"], "q2": DOCS["d4"], "q3": " ".join(W["fr"][2:5]), "q4": "unjudged query"}


def write_beir(d: Path, qrels: dict[str, list[str]], split: str = "test", corpus=DOCS, queries=QUERIES) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                            for k, v in corpus.items()))
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (d / "qrels").mkdir(exist_ok=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{doc}\t1" for q, docs in qrels.items() for doc in docs]
    (d / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("beir")
    return {"tok": str(tiny_setup.make_tokenizer(d)), "ckpt": str(tiny_setup.make_checkpoint(d)), "dir": d}


def test_identical_texts_rank_first(tiny, capsys):
    data = write_beir(tiny["dir"] / "same", {"q1": ["d1"], "q2": ["d4"]})
    out = tiny["dir"] / "same.json"
    E.main(["retrieval", "--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--data", str(data),
            "--out", str(out), "--backend", "numpy"])
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("| split | queries | documents | nDCG@10 | MRR@10 | R@1 |")
    result = json.loads(out.read_text())
    assert (result["queries"], result["documents"]) == (2, 8)
    for key in ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map"):
        assert result[key] == pytest.approx(1.0), key
    assert "| test | 2 | 8 | 100.00 | 100.00 | 100.00 |" in table


def test_metrics_equal_an_independent_path(tiny, capsys):
    from xlm_jax.api import load
    from xlm_jax.data.tokenizer import Tokenizer

    qrels = {"q1": ["d2", "d5"], "q2": ["d0"], "q3": ["d3", "d6", "d7"]}
    data = write_beir(tiny["dir"] / "graded", qrels, split="dev")
    out = tiny["dir"] / "graded.json"
    E.main(["retrieval", "--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--data", str(data),
            "--split", "dev", "--out", str(out), "--layer", "1", "--query-lang", "fr", "--corpus-lang", "en"])
    capsys.readouterr()
    result = json.loads(out.read_text())
    model, tok = load(tiny["ckpt"]), Tokenizer.load(tiny["tok"])
    qids = ["q1", "q2", "q3"]
    q = E.embed_sentences(model, tok, [QUERIES[i] for i in qids], layer=1)
    d = E.embed_sentences(model, tok, list(DOCS.values()), layer=1)
    expected = evaluate_scores(E.cosine_matrix(q, d), qids, list(DOCS), {k: {x: 1 for x in v} for k, v in qrels.items()},
                               (1, 10, 100))
    assert result["queries"] == 3 and result["split"] == "dev"
    assert (result["query_lang"], result["corpus_lang"]) == ("fr", "en")
    for key in ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map"):
        assert result[key] == pytest.approx(expected[key], abs=1e-6), key


@pytest.mark.parametrize("edit, match", [
    (lambda d: (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td99\t1\n"),
     r"qrels/test\.tsv:3: corpus-id='d99' is not in the corpus"),
    (lambda d: (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq7\td1\t1\n"),
     r"qrels/test\.tsv:2: query-id='q7' is not in the queries"),
    (lambda d: (d / "queries.jsonl").write_text('{"_id": "q1", "text": ""}\n'),
     r"queries\.jsonl:1: _id='q1': empty text"),
    (lambda d: (d / "qrels" / "test.tsv").unlink(), r"qrels/test\.tsv: not found"),
])
def test_bad_beir_inputs_exit_2_and_write_nothing(tiny, capsys, edit, match):
    data = write_beir(tiny["dir"] / "bad", {"q1": ["d1"]})
    edit(data)
    out = tiny["dir"] / "bad.json"
    with pytest.raises(SystemExit) as exit_:
        E.main(["retrieval", "--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--data", str(data),
                "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    import re
    assert re.search(match, err), err
    assert not out.exists()


def test_modes_are_exclusive(tiny, capsys):
    data = write_beir(tiny["dir"] / "modes", {"q1": ["d1"]})
    for args, match in ((["--data", str(data), "--src-file", "a"], "two modes"),
                        (["--src-file", "a"], "needs --data BEIR_DIR, or both --src-file and --tgt-file")):
        with pytest.raises(SystemExit) as exit_:
            E.main(["retrieval", "--checkpoint", tiny["ckpt"], *args])
        assert exit_.value.code == 2 and match in capsys.readouterr().err
