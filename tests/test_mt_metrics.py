"""MT metrics against sacreBLEU's own API and command line, the multi-bleu-style tokenized BLEU on a case worked
by hand, the copy-the-source row, and refusals."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import sacrebleu

from xlm_jax.core.errors import UserError
from xlm_jax.tasks.mt_metrics import format_report, moses_tokenize, mt_report, scores

HYPS = ["Le chat est assis sur le tapis.", "Ouvrir le fichier…", "Enregistrer sous « %s »", "Quitter"]
REFS = ["Le chat s'est assis sur le tapis.", "Ouvrir un fichier…", "Enregistrer « %s » sous", "Quitter"]
SRCS = ["The cat sat on the mat.", "Open the file…", "Save as “%s”", "Quit"]


def test_scores_equal_sacrebleu_api_and_cli(tmp_path):
    ours = scores(HYPS, REFS, "fr")
    assert ours["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    assert ours["chrf++"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score)
    assert "tok:13a" in ours["signatures"]["bleu"] and "nw:2" in ours["signatures"]["chrf++"]
    (tmp_path / "hyp").write_text("\n".join(HYPS) + "\n", encoding="utf-8")
    (tmp_path / "ref").write_text("\n".join(REFS) + "\n", encoding="utf-8")
    cli = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref"), "-i", str(tmp_path / "hyp"),
                          "-m", "bleu", "chrf", "--chrf-word-order", "2", "-f", "json", "-w", "4"],
                         capture_output=True, text=True, check=True).stdout
    cli = {d["name"]: d["score"] for d in json.loads(cli)}
    assert cli["BLEU"] == pytest.approx(ours["bleu"], abs=1e-4)
    assert cli["chrF2++"] == pytest.approx(ours["chrf++"], abs=1e-4)


def test_tokenized_bleu_by_hand():
    # multi-bleu.perl on Moses tokens: hyp "a b c d" vs ref "a b c e": p1 3/4, p2 2/3, p3 1/2, p4 0/1 -> 0 (no
    # smoothing); identical lines -> 100; one missing token -> BP = exp(1 - 5/4) on the 4-gram geometric mean.
    assert scores(["a b c d"], ["a b c e"])["bleu_tok"] == 0.0
    assert scores(["a b c d e"], ["a b c d e"])["bleu_tok"] == pytest.approx(100.0)
    p = [4 / 4, 3 / 3, 2 / 2, 1 / 1]
    expected = 100 * math.exp(1 - 5 / 4) * math.exp(sum(math.log(x) for x in p) / 4)
    assert scores(["a b c d"], ["a b c d e"])["bleu_tok"] == pytest.approx(expected)
    # Moses splits punctuation (French rules keep "s'" with the apostrophe) and keeps characters unescaped.
    assert moses_tokenize("Le chat s'est assis.", "fr") == "Le chat s' est assis ."
    assert moses_tokenize("a & b", "en") == "a & b"
    tok = scores(["Le chat s'est assis."], ["Le chat s'est assis ."], "fr")
    assert tok["bleu_tok"] == pytest.approx(100.0) and tok["bleu"] == pytest.approx(100.0)


def test_report_has_copy_row_and_table():
    rep = mt_report(HYPS, REFS, SRCS, tgt_lang="fr")
    assert [r["system"] for r in rep["rows"]] == ["model", "copy source"] and rep["sentences"] == 4
    copy = scores(SRCS, REFS, "fr")
    assert rep["rows"][1]["chrf++"] == pytest.approx(copy["chrf++"])
    json.dumps(rep)
    table = format_report(rep)
    assert "copy source" in table and "BLEU" in table and "version:" in table


def test_refusals():
    with pytest.raises(UserError, match="2 lines but 1 references"):
        scores(["a", "b"], ["a"])
    with pytest.raises(UserError, match="no sentences"):
        scores([], [])
    with pytest.raises(UserError, match="sources"):
        mt_report(["a"], ["a"], ["a", "b"])
