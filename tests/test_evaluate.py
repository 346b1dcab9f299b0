"""Evaluation: seqeval entity F1 on a known example, the per-language table, and retrieval P@1 via the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint + task builders

from xlm_jax import evaluate as E

ROOT = Path(__file__).parent.parent



def test_seqeval_entity_scores_known_example():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # Entities: gold {PER, LOC, ORG}, predicted {PER, ORG(wrong span type), ORG}: 2 of 3 right both ways.
    scores = E.entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["score"] == pytest.approx(2 / 3)
    # A partial span (I-PER missing) is a wrong entity at entity level.
    assert E.entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])["score"] == 0.0


def test_results_table_average_last_and_language_order():
    results = {"test": {"fr": {"score": 0.5, "n": 2}, "en": {"score": 1.0, "n": 2}, "de": {"score": 0.75, "n": 4}}}
    md, table = E.results_table(results, "accuracy")
    assert md.splitlines() == [
        "| accuracy | en | de | fr | avg |",
        "|---|---|---|---|---|",
        "| test | 100.0 | 75.0 | 50.0 | 75.0 |",
    ]
    assert table["langs"] == ["en", "de", "fr"] and table["splits"]["test"]["avg"] == pytest.approx(0.75)


def test_retrieval_scores_both_directions():
    src = np.eye(3, dtype=np.float32)
    tgt = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0.1]], np.float32)  # rows 1 and 2 swapped
    out = E.retrieval_scores(src, tgt)
    assert out == {"src_to_tgt_p@1": pytest.approx(1 / 3), "tgt_to_src_p@1": pytest.approx(1 / 3), "n": 3}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    t = tiny_setup
    d = tmp_path_factory.mktemp("ev")
    return {"tok": str(t.make_tokenizer(d)), "ckpt": str(t.make_checkpoint(d)), "dir": d}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "xlm_jax.evaluate", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_retrieval_cli_identical_files(tiny):
    lines = [" ".join(tiny_setup.WORDS["fr"][i:i + 4]) for i in range(9)]
    f = tiny["dir"] / "fr.lines"
    f.write_text("\n".join(lines) + "\n")
    r = _cli("retrieval", "--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--src-file", str(f),
             "--tgt-file", str(f), "--src-lang", "fr", "--tgt-lang", "fr", "--layer", "1")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["src_to_tgt_p@1"] == 1.0 and out["tgt_to_src_p@1"] == 1.0 and out["n"] == 9 and out["layer"] == 1


def test_retrieval_cli_bad_inputs(tiny):
    a, b = tiny["dir"] / "a.txt", tiny["dir"] / "b.txt"
    a.write_text("one line\ntwo lines\n")
    b.write_text("only one\n")
    r = _cli("retrieval", "--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--src-file", str(a),
             "--tgt-file", str(b))
    assert r.returncode == 2 and "has 2 lines but" in r.stderr and "line-aligned" in r.stderr
    r = _cli("task", "--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--data", str(a))
    assert r.returncode == 2 and "no task.json found; this is not a fine-tuned checkpoint" in r.stderr


def test_embed_layer_range(tiny):
    from xlm_jax.api import load
    from xlm_jax.errors import UserError
    from xlm_jax.tokenizer import Tokenizer

    model, tok = load(tiny["ckpt"]), Tokenizer.load(tiny["tok"])
    emb = E.embed_sentences(model, tok, ["le chat", "la maison ouvrir", "le chat"], layer=-1)
    assert emb.shape == (3, 64)
    np.testing.assert_allclose(emb[0], emb[2], rtol=1e-5)  # padding and batch position do not change a sentence
    with pytest.raises(UserError, match="layers 1..2"):
        E.embed_sentences(model, tok, ["x"], layer=3)


def test_ranges_checked_before_files_or_checkpoints_are_read(tmp_path):
    from xlm_jax.errors import UserError

    missing = str(tmp_path / "missing")
    for kwargs, words in [(dict(max_len=2), ["max_len=2", ">= 3"]), (dict(max_len=0), ["max_len=0"]),
                          (dict(batch_size=0), ["batch_size=0", ">= 1"])]:
        with pytest.raises(UserError) as err:
            E.run_retrieval(missing, missing, missing, missing, **kwargs)
        assert all(w in str(err.value) for w in words), str(err.value)
    with pytest.raises(UserError, match="batch_size=-1: must be an integer >= 1"):
        E.run_task_eval(missing, missing, [missing], batch_size=-1)


def test_embed_sentences_checks_max_len_and_batch_size(tiny):
    from xlm_jax.api import load
    from xlm_jax.errors import UserError
    from xlm_jax.tokenizer import Tokenizer

    model, tok = load(tiny["ckpt"]), Tokenizer.load(tiny["tok"])
    with pytest.raises(UserError, match="max_len=2 is too small: a single sentence needs 2 special tokens.*max_len must be >= 3"):
        E.embed_sentences(model, tok, ["le chat"], max_len=2)
    with pytest.raises(UserError, match="batch_size=0"):
        E.embed_sentences(model, tok, ["le chat"], batch_size=0)
    assert E.embed_sentences(model, tok, ["le chat ouvrir fichier"], max_len=3).shape == (1, 64)
