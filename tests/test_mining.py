"""Tatoeba / BUCC (`xlm_jax.tasks.mining`, `python -m xlm_jax.evaluate tatoeba | bucc`): exact neighbours (blocked
NumPy against a direct computation, and against faiss), the ratio margin against its formula, candidate
selection, the threshold search, the released file layouts, and bad inputs through the CLI."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint

from xlm_jax import evaluate as E
from xlm_jax.tasks import mining as M
from xlm_jax.core.errors import UserError


def _direct_knn(x, y, k):
    sim = M.normalize(x) @ M.normalize(y).T
    ids = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, ids, axis=1), ids


@pytest.mark.parametrize("n, m, k, block_bytes", [
    (37, 53, 4, 24 * 53),  # one row per block
    (37, 53, 4, 24 * 53 * 5 + 3),  # blocks of 5 rows, the last one short
    (10, 6, 6, 1 << 20),  # k = every row of y
    (10, 6, 9, 1 << 20),  # k > rows of y: capped
    (1, 200, 1, 1),  # a budget under one row still makes progress
])
def test_blocked_knn_matches_direct_computation(n, m, k, block_bytes):
    rng = np.random.default_rng(n * m)
    x, y = rng.normal(size=(n, 16)), rng.normal(size=(m, 16))
    sims, ids = M.knn(x, y, k, backend="numpy", block_bytes=block_bytes)
    want_sims, want_ids = _direct_knn(x, y, k)
    np.testing.assert_allclose(sims, want_sims, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ids, want_ids)  # random floats: no ties
    assert sims.dtype == np.float32 and ids.dtype == np.int64 and sims.shape == (n, min(k, m))


def test_blocked_knn_memory_stays_under_the_budget():
    """The full 3000 x 3000 similarity matrix is 34 MiB; with a 2 MiB budget the NumPy path never holds it."""
    import tracemalloc

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(3000, 16)).astype(np.float32), rng.normal(size=(3000, 16)).astype(np.float32)
    inputs = 2 * x.nbytes + 2 * y.nbytes  # the inputs and their unit-length copies
    tracemalloc.start()
    M.knn(x, y, 4, backend="numpy", block_bytes=2 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < inputs + (2 << 20) + (256 << 10), peak


def test_faiss_backend_agrees_with_numpy():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 32)), rng.normal(size=(80, 32))
    a, b = M.knn(x, y, 5, backend="faiss"), M.knn(x, y, 5, backend="numpy")
    np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a[1], b[1])


def test_knn_bad_arguments():
    x = np.ones((2, 3))
    with pytest.raises(UserError, match="k=0"):
        M.knn(x, x, 0)
    with pytest.raises(UserError, match="the other side is empty"):
        M.knn(x, np.zeros((0, 3)), 1)
    with pytest.raises(UserError, match="widths differ: 3 and 4"):
        M.knn(x, np.ones((2, 4)), 1)
    with pytest.raises(UserError, match="backend='annoy'"):
        M.knn(x, x, 1, backend="annoy")


def test_ratio_margin_scores_follow_the_formula():
    """Every mined score equals cos(x, y) / ((mean of x's k NN cos + mean of y's k NN cos) / 2)."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 8)), rng.normal(size=(9, 8))
    k = 3
    sim = M.normalize(x) @ M.normalize(y).T
    x_mean = np.sort(sim, axis=1)[:, -k:].mean(1)
    y_mean = np.sort(sim, axis=0)[-k:, :].mean(0)
    margin = sim / ((x_mean[:, None] + y_mean[None, :]) / 2)
    pairs = M.margin_candidates(x, y, k, backend="numpy")
    assert len({i for i, _, _ in pairs}) == len(pairs) == len({j for _, j, _ in pairs})  # each sentence once
    for i, j, score in pairs:
        assert score == pytest.approx(margin[i, j], rel=1e-5)
    assert [s for _, _, s in pairs] == sorted((s for _, _, s in pairs), reverse=True)


def test_margin_mining_finds_translations_among_distractors():
    rng = np.random.default_rng(2)
    base = rng.normal(size=(40, 32))
    x = np.concatenate([base + 0.1 * rng.normal(size=base.shape), rng.normal(size=(60, 32))])
    perm = rng.permutation(40)
    y = np.concatenate([base[perm] + 0.1 * rng.normal(size=base.shape), rng.normal(size=(30, 32))])
    gold = {(int(perm[j]), j) for j in range(40)}
    pairs = M.margin_candidates(x, y, 4)
    top = {(i, j) for i, j, _ in pairs[:40]}
    assert top == gold  # the 40 translations score above every distractor pair
    # All-zero embeddings: cosines 0, denominators clamped: finite scores, never NaN.
    zeros = M.margin_candidates(np.zeros((3, 4)), np.zeros((2, 4)), 2, backend="numpy")
    assert all(np.isfinite(s) for _, _, s in zeros)


def test_threshold_search_and_scores_by_hand():
    cands = [("a", "1", 0.9), ("b", "2", 0.8), ("c", "9", 0.7), ("d", "4", 0.6), ("e", "9", 0.5)]
    gold = {("a", "1"), ("b", "2"), ("d", "4"), ("z", "0")}
    best = M.best_threshold(cands, gold)
    # Keeping 4 candidates: 3 correct of 4 kept, 3 of 4 gold: F1 0.75 (keeping 2: P 1, R 0.5, F1 0.667).
    assert best["f1"] == pytest.approx(0.75) and best["threshold"] == pytest.approx(0.55)
    assert M.prf(cands, gold, 0.55) == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "mined": 4, "correct": 3,
                                        "gold": 4}
    assert M.prf(cands, gold, 2.0)["f1"] == 0.0  # nothing kept: 0, not NaN
    assert M.best_threshold([("x", "y", 1.0)], gold)["threshold"] == float("inf")
    assert M.best_threshold([("a", "1", 1.0)], gold)["threshold"] == 1.0  # the last candidate: its own score
    # Tuned on one split, applied to another: the threshold 0.55 keeps two of the test candidates.
    tune = M.BuccSplit("de", "sample", [], [], [], [], frozenset(gold))
    test = M.BuccSplit("de", "test", [], [], [], [], frozenset({("p", "1"), ("q", "2")}))
    scores = M.bucc_scores((tune, cands), (test, [("p", "1", 0.9), ("r", "3", 0.6), ("q", "2", 0.4)]))
    assert scores["threshold"] == pytest.approx(0.55) and scores["tune"]["f1"] == pytest.approx(0.75)
    assert (scores["precision"], scores["recall"], scores["candidate_recall"]) == (0.5, 0.5, 1.0)
    none = M.bucc_scores((tune, [("x", "y", 1.0)]), (test, [("p", "1", 0.9)]))
    assert none["threshold"] is None and none["f1"] == 0.0 and "Infinity" not in json.dumps(none)


# ------------------------------------------------------------------------------------------ file layouts


def write_bucc(d: Path, lang: str, split: str, xx: list[str], en: list[str], gold: list[tuple[int, int]]) -> None:
    (d / f"{lang}-en.{split}.{lang}").write_text("".join(f"{lang}-{i:06d}\t{s}\n" for i, s in enumerate(xx)))
    (d / f"{lang}-en.{split}.en").write_text("".join(f"en-{i:06d}\t{s}\n" for i, s in enumerate(en)))
    (d / f"{lang}-en.{split}.gold").write_text("".join(f"{lang}-{a:06d}\ten-{b:06d}\n" for a, b in gold))


def test_read_bucc_released_layout(tmp_path):
    (tmp_path / "de-en").mkdir()
    write_bucc(tmp_path / "de-en", "de", "sample", ["die katze", "das haus"], ["the house", "the cat", "a dog"],
               [(0, 1), (1, 0)])
    split = M.read_bucc(tmp_path, "de", "sample")  # found in DIR/de-en/ as in the archive
    assert split.xx_ids == ["de-000000", "de-000001"] and split.en_sentences[2] == "a dog"
    assert split.gold == {("de-000000", "en-000001"), ("de-000001", "en-000000")}
    assert M.bucc_langs(tmp_path, "sample") == ["de"]


BAD_BUCC = [
    ("gold id missing", lambda d: (d / "de-en.sample.gold").write_text("de-000000\ten-000001\nde-000007\ten-000000\n"),
     ["de-en.sample.gold:2", "'de-000007'", "de-en.sample.de"]),
    ("gold en id missing", lambda d: (d / "de-en.sample.gold").write_text("de-000000\ten-000042\n"),
     ["de-en.sample.gold:1", "'en-000042'", "de-en.sample.en"]),
    ("duplicate id", lambda d: (d / "de-en.sample.en").write_text("en-1\ta\nen-2\tb\nen-1\tc\n"),
     ["de-en.sample.en:3", "duplicate id 'en-1'", "line 1"]),
    ("empty sentences", lambda d: (d / "de-en.sample.de").write_text(""), ["de-en.sample.de", "empty"]),
    ("empty gold", lambda d: (d / "de-en.sample.gold").write_text("\n"), ["de-en.sample.gold", "empty"]),
    ("no tab", lambda d: (d / "de-en.sample.de").write_text("de-000000 die katze\n"),
     ["de-en.sample.de:1", "expected 'id<TAB>sentence'"]),
    ("gold 3 columns", lambda d: (d / "de-en.sample.gold").write_text("de-000000\ten-000001\tx\n"),
     ["de-en.sample.gold:1", "expected 'id_de<TAB>id_en'"]),
    ("missing file", lambda d: (d / "de-en.sample.en").unlink(), ["de-en.sample.en: no such BUCC file"]),
    ("not utf-8", lambda d: (d / "de-en.sample.de").write_bytes(b"de-000000\tK\xe4tzchen\n"),
     ["de-en.sample.de:1", "UTF-8"]),
]


@pytest.mark.parametrize("what, damage, words", BAD_BUCC, ids=[b[0] for b in BAD_BUCC])
def test_read_bucc_bad_files(tmp_path, what, damage, words):
    write_bucc(tmp_path, "de", "sample", ["die katze", "das haus"], ["the house", "the cat"], [(0, 1), (1, 0)])
    damage(tmp_path)
    with pytest.raises(UserError) as err:
        M.read_bucc(tmp_path, "de", "sample")
    for word in words:
        assert word in str(err.value), str(err.value)


def test_read_tatoeba_layout_and_bad_files(tmp_path):
    (tmp_path / "tatoeba.deu-eng.deu").write_text("Ich bin müde.\nHallo.\n")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("I am tired.\nHello.\n")
    assert M.read_tatoeba(tmp_path, "de") == M.read_tatoeba(tmp_path, "deu") == (
        ["Ich bin müde.", "Hallo."], ["I am tired.", "Hello."])
    assert M.tatoeba_langs(tmp_path) == ["deu"]
    (tmp_path / "tatoeba.de-eng.de").write_text("Hallo.\n")  # two-letter file names are found as given
    (tmp_path / "tatoeba.de-eng.eng").write_text("Hello.\n")
    assert M.read_tatoeba(tmp_path, "de") == (["Hallo."], ["Hello."])
    assert M.read_tatoeba(tmp_path, "deu")[0] == ["Ich bin müde.", "Hallo."]
    (tmp_path / "tatoeba.de-eng.de").unlink()
    with pytest.raises(UserError, match=r"tatoeba.fra-eng.fra: no such Tatoeba file \(language 'fr'; .* has deu\)"):
        M.read_tatoeba(tmp_path, "fr")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("I am tired.\nHello.\nExtra.\n")
    with pytest.raises(UserError, match=r"tatoeba.deu-eng.deu has 2 lines but .*tatoeba.deu-eng.eng has 3"):
        M.read_tatoeba(tmp_path, "de")
    (tmp_path / "tatoeba.deu-eng.eng").write_text("")
    with pytest.raises(UserError, match=r"tatoeba.deu-eng.eng: empty"):
        M.read_tatoeba(tmp_path, "de")


# --------------------------------------------------------------------------------------------------- CLI

EN = ["the cat", "the dog house", "open the file", "print the page", "save the document", "close the window",
      "error message", "the house"]
DE = ["die katze", "die hund haus", "datei öffnen", "seite drucken", "dokument speichern", "fenster schließen",
      "fehler", "das haus"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("mining")
    tok = tiny_setup.make_tokenizer(d)
    ckpt = tiny_setup.make_checkpoint(d)
    return {"tok": str(tok), "ckpt": str(ckpt), "dir": d}


def _bucc_dir(d: Path) -> Path:
    d.mkdir()
    # Sample: 3 gold pairs among 5 / 4 sentences; test: 4 gold pairs.
    write_bucc(d, "de", "sample", DE[:5], EN[2:6] + EN[:1], [(2, 0), (3, 1), (0, 4)])
    write_bucc(d, "de", "test", DE[3:8], EN[4:8] + ["a dog"], [(1, 0), (2, 1), (3, 2), (4, 3)])
    return d


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_cli_bucc_and_tatoeba_end_to_end(setup, tmp_path, capsys):
    data = _bucc_dir(tmp_path / "bucc")
    out = tmp_path / "bucc.json"
    E.main(["bucc", "--checkpoint", setup["ckpt"], "--tokenizer", setup["tok"], "--data", str(data), "--k", "2",
            "--out", str(out), "--backend", "numpy"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    de = printed["langs"]["de"]
    assert de["gold"] == 4 and de["split"] == "test" and de["tune"]["split"] == "sample"
    assert all(0.0 <= de[key] <= 1.0 for key in ("precision", "recall", "f1", "candidate_recall"))
    assert de["recall"] <= de["candidate_recall"]
    assert printed["margin"] == "ratio" and printed["k"] == 2

    tat = tmp_path / "tatoeba"
    tat.mkdir()
    (tat / "tatoeba.deu-eng.deu").write_text("\n".join(DE) + "\n")
    (tat / "tatoeba.deu-eng.eng").write_text("\n".join(EN) + "\n")
    result = E.run_tatoeba(setup["ckpt"], setup["tok"], str(tat), ["de"])
    assert result["langs"]["de"]["n"] == 8 and 0.0 <= result["average_accuracy"] <= 1.0


def _bad_cases(setup, tmp_path):
    """(argv, words in the one error line) for every kind of bad input of `evaluate tatoeba | bucc`."""
    good = _bucc_dir(tmp_path / "good")
    broken = _bucc_dir(tmp_path / "broken")
    (broken / "de-en.test.gold").write_text("de-000001\ten-000000\nde-000009\ten-000001\n")
    dup = _bucc_dir(tmp_path / "dup")
    (dup / "de-en.sample.de").write_text("de-1\ta\nde-1\tb\n")
    tat = tmp_path / "tat"
    tat.mkdir()
    (tat / "tatoeba.deu-eng.deu").write_text("a\nb\n")
    (tat / "tatoeba.deu-eng.eng").write_text("a\n")
    base = ["--checkpoint", setup["ckpt"], "--tokenizer", setup["tok"]]
    return [
        (["bucc", *base, "--data", str(broken)], ["de-en.test.gold:2", "'de-000009'", "is not in", "de-en.test.de"]),
        (["bucc", *base, "--data", str(dup)], ["de-en.sample.de:2", "duplicate id 'de-1'"]),
        (["bucc", *base, "--data", str(good), "--langs", "fr"], ["fr-en.sample.fr: no such BUCC file", "gold files for de"]),
        (["bucc", *base, "--data", str(good), "--test-split", "training"], ["de-en.training", "sample and training"]),
        (["bucc", *base, "--data", str(good), "--test-split", "sample"], ["both 'sample'"]),
        (["bucc", *base, "--data", str(tmp_path / "nowhere")], ["nowhere: no such directory"]),
        (["bucc", *base, "--data", str(tat)], ["no BUCC gold files"]),
        (["bucc", *base, "--data", str(good), "--k", "0"], ["--k", "0"]),
        (["tatoeba", *base, "--data", str(tat)], ["tatoeba.deu-eng.deu has 2 lines", "tatoeba.deu-eng.eng has 1"]),
        (["tatoeba", *base, "--data", str(good)], ["no tatoeba.{xxx}-eng.{xxx} files"]),
        (["tatoeba", *base, "--data", str(tat), "--max-len", "1"], ["--max-len", "1"]),
        (["tatoeba", "--checkpoint", str(tmp_path / "nockpt"), "--tokenizer", setup["tok"], "--data", str(tat),
          "--langs", "xx"], ["tatoeba.xx-eng.xx: no such Tatoeba file"]),
    ]


def test_cli_bad_inputs_one_error_line_nothing_written(setup, tmp_path, capsys):
    cases = _bad_cases(setup, tmp_path)
    old = tmp_path / "old.json"
    old.write_text("{}\n")
    before = _digest(tmp_path)
    for argv, words in cases:
        for out, extra in ((tmp_path / "new.json", []), (old, ["--force"])):
            with pytest.raises(SystemExit) as exit_info:
                E.main([*argv, "--out", str(out), *extra])
            err = capsys.readouterr().err
            assert exit_info.value.code == 2, argv
            assert err.startswith("error: ") and err.count("\n") == 1, err
            for word in words:
                assert word in err, (word, err)
    # An existing --out without --force is refused before any work.
    with pytest.raises(SystemExit):
        E.main(["bucc", "--checkpoint", setup["ckpt"], "--tokenizer", setup["tok"], "--data", str(tmp_path / "good"),
                "--out", str(old)])
    assert "old.json: exists" in capsys.readouterr().err
    assert _digest(tmp_path) == before and not (tmp_path / "new.json").exists()
