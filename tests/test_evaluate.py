"""Evaluation: seqeval entity F1 on a known example, the per-language table, and retrieval P@1 via the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint + task builders

from xlm_jax import evaluate as E
from xlm_jax import tasks as T

ROOT = Path(__file__).parent.parent



def test_seqeval_entity_scores_known_example():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O"]]
    # Entities: gold {PER, LOC, ORG}, predicted {PER, ORG(wrong span type), ORG}: 2 of 3 right both ways.
    scores = T.entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["score"] == pytest.approx(2 / 3)
    # A partial span (I-PER missing) is a wrong entity at entity level.
    assert T.entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])["score"] == 0.0


def test_results_table_average_last_and_language_order():
    results = {"test": {"fr": {"score": 0.5, "n": 2}, "en": {"score": 1.0, "n": 2}, "de": {"score": 0.75, "n": 4}}}
    md, table = T.results_table(results, "accuracy")
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


def test_retrieval_cli_on_a_permuted_target_matches_the_in_process_scores(tiny, capsys):
    from xlm_jax.api import load
    from xlm_jax.data.tokenizer import Tokenizer

    words = tiny_setup.WORDS["fr"]
    src_lines = [" ".join(words[i:i + 3 + i % 2]) for i in range(9)]  # nine different sentences
    # Line i of the target is source line perm[i]: only the 2 fixed points (0 and 5) are aligned with themselves,
    # so a correct P@1 is 2/9 each way (identical files would give 1.0 for any deterministic embedding).
    perm = [0, 2, 3, 1, 6, 5, 7, 8, 4]
    src, tgt = tiny["dir"] / "src.lines", tiny["dir"] / "tgt.lines"
    src.write_text("\n".join(src_lines) + "\n")
    tgt.write_text("\n".join(src_lines[j] for j in perm) + "\n")
    E.main(["retrieval", "--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--src-file", str(src),
            "--tgt-file", str(tgt), "--src-lang", "fr", "--tgt-lang", "fr", "--layer", "1"])
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 9 and out["layer"] == 1
    assert out["src_to_tgt_p@1"] == pytest.approx(2 / 9) and out["tgt_to_src_p@1"] == pytest.approx(2 / 9)
    model, tok = load(tiny["ckpt"]), Tokenizer.load(tiny["tok"])
    a = E.embed_sentences(model, tok, src_lines, layer=1)
    b = E.embed_sentences(model, tok, [src_lines[j] for j in perm], layer=1)
    expected = E.retrieval_scores(a, b)
    assert (out["src_to_tgt_p@1"], out["tgt_to_src_p@1"]) == (expected["src_to_tgt_p@1"], expected["tgt_to_src_p@1"])


def test_retrieval_cli_bad_inputs(tiny, capsys):
    a, b = tiny["dir"] / "a.txt", tiny["dir"] / "b.txt"
    a.write_text("one line\ntwo lines\n")
    b.write_text("only one\n")
    # The one subprocess of this file: the real exit path (exit 2, one `error:` line, no traceback).
    r = _cli("retrieval", "--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--src-file", str(a),
             "--tgt-file", str(b))
    assert r.returncode == 2 and "has 2 lines but" in r.stderr and "line-aligned" in r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    with pytest.raises(SystemExit) as exit_:
        E.main(["task", "--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--data", str(a)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "no task.json found; this is not a fine-tuned checkpoint" in err, err


def test_embed_layer_range(tiny):
    from xlm_jax.api import load
    from xlm_jax.core.errors import UserError
    from xlm_jax.tasks import InputProtocol
    from xlm_jax.data.tokenizer import Tokenizer

    model, tok = load(tiny["ckpt"]), Tokenizer.load(tiny["tok"])
    protocol = InputProtocol.from_config(model.config)
    long = " ".join(tiny_setup.WORDS["fr"] * 2)  # > 16 pieces: the batch is padded to 32, a short sentence alone to 16
    lines = ["le chat", long, "la maison ouvrir", "le chat"]
    for layer in (-1, 1):
        emb = E.embed_sentences(model, tok, lines, layer=layer)
        assert emb.shape == (4, 64)
        for i, line in enumerate(lines):
            # The reference: no padding at all, the mean of that layer's states over the sentence's own tokens.
            ids = np.asarray([protocol.frame(tok.encode_batch_pieces_ids([line])[0].tolist(), None)], np.int32)
            states = np.asarray(model.layer_states(ids, np.ones_like(ids))[layer if layer < 0 else layer - 1])
            np.testing.assert_allclose(emb[i], states[0].mean(0), rtol=1e-4, atol=1e-5, err_msg=f"{layer} {line}")
            # Embedded alone (other padding width, other batch position) it is the same vector.
            np.testing.assert_allclose(E.embed_sentences(model, tok, [line], layer=layer)[0], emb[i], rtol=1e-4,
                                       atol=1e-5)
    with pytest.raises(UserError, match="layers 1..2"):
        E.embed_sentences(model, tok, ["x"], layer=3)


def test_ranges_checked_before_files_or_checkpoints_are_read(tmp_path):
    from xlm_jax.core.errors import UserError

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
    from xlm_jax.core.errors import UserError
    from xlm_jax.data.tokenizer import Tokenizer

    model, tok = load(tiny["ckpt"]), Tokenizer.load(tiny["tok"])
    with pytest.raises(UserError, match="max_len=2 is too small: a single sentence needs 2 special tokens.*max_len must be >= 3"):
        E.embed_sentences(model, tok, ["le chat"], max_len=2)
    with pytest.raises(UserError, match="batch_size=0"):
        E.embed_sentences(model, tok, ["le chat"], batch_size=0)
    assert E.embed_sentences(model, tok, ["le chat ouvrir fichier"], max_len=3).shape == (1, 64)


def test_evaluate_task_truncation_note_names_the_max_len(tiny, tmp_path, capsys):
    """The note about cut inputs names the checkpoint's max_len (it printed `max_len=` with a blank value), and
    results.json records it."""
    from xlm_jax import finetune

    d = tmp_path
    train = tiny_setup.write_jsonl(d / "train.jsonl", tiny_setup.task_examples("fr", 8, 0))
    finetune.main(["task=classification", f"init={tiny['ckpt']}", f"tokenizer={tiny['tok']}", f"train=[{train}]",
                   f"out={d / 'ft'}", "max_steps=1", "batch_size=8", "max_len=8", "log_every=1", "train_lang=fr"])
    capsys.readouterr()
    words = tiny_setup.WORDS["fr"]
    for n_long, n_short in ((1, 2), (3, 0)):
        rows = [{"text": " ".join(words * 3), "label": "file", "lang": "fr"}] * n_long + \
            [{"text": words[0], "label": "other", "lang": "fr"}] * n_short
        data = tiny_setup.write_jsonl(d / f"test{n_long}.jsonl", rows)
        out = d / f"eval{n_long}"
        E.main(["task", "--checkpoint", str(d / "ft"), "--tokenizer", tiny["tok"], "--data", str(data),
                "--out", str(out)])
        err = capsys.readouterr().err
        assert f"note: {n_long} inputs were longer than max_len=8 and were truncated" in err, err
        assert "max_len= " not in err
        record = json.loads((out / "results.json").read_text())
        assert record["max_len"] == 8 and record["truncated"] == n_long
