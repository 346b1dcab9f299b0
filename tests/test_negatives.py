"""Hard-negative mining (`xlm_jax.tasks.negatives`, `python -m xlm_jax.negatives`): the choice on hand-made 2-d
embeddings whose cosines are the angles' (the positive and its duplicates never chosen, both margins as
sentence-transformers' `mine_hard_negatives` applies them, k per row, the deep second pass, ties by corpus
order on both knn backends), the command on a tiny random checkpoint (JSONL and TSV, extra keys kept,
deterministic) and on an e5-style sentence-transformers directory (its prompts and pooling, checked against
`SentenceTransformer.encode`), and bad inputs (one `error:` line naming file, line and value; exit 2; nothing written)."""

import json
import re

import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint

from xlm_jax import negatives as C
from xlm_jax.core.errors import UserError
from xlm_jax.tasks import negatives as N


def unit(deg):
    r = np.deg2rad(np.asarray(deg, np.float64))
    return np.stack([np.cos(r), np.sin(r)], axis=1).astype(np.float32)


# Anchor at 0°, its positive at 20° (cos 0.940). Candidates by angle: the positive itself, a normalised duplicate of
# it (10°: scores above the positive), a near-duplicate at 21° (0.934: inside the 5 % relative margin, whose limit
# is 0.940 − 0.047 = 0.893), then 30° (0.866), 40° (0.766), 50° (0.643), 70° (0.342) and the anchor's own text (0°).
CANDS = {"the positive": 20, "  The   POSITIVE ": 10, "near copy": 21, "c30": 30, "c40": 40, "c50": 50, "c70": 70,
         "the anchor": 0}


def one_row(k=3, relative=N.DEFAULT_RELATIVE_MARGIN, absolute=None, backend="numpy", depth=None, cands=CANDS):
    pairs = [N.Pair("the anchor", "the positive", [], 1)]
    texts = list(cands)
    negs, scores, stats = N.select_negatives(pairs, unit([0]), unit([20]), texts, unit(list(cands.values())), k,
                                             relative, absolute, backend=backend, depth=depth)
    return negs[0], scores[0], stats


def test_positive_anchor_and_their_duplicates_are_never_negatives():
    negs, scores, stats = one_row(k=7, relative=None)  # no margin: only the exclusion rules act
    assert negs == ["near copy", "c30", "c40", "c50", "c70"]  # everything else is the positive or the anchor
    assert stats.excluded_positive == 3 and stats.short_rows == 1
    assert scores == pytest.approx(np.cos(np.deg2rad([21, 30, 40, 50, 70])), abs=1e-6)


@pytest.mark.parametrize("relative, absolute, expected", [
    (0.05, None, ["c30", "c40", "c50"]),   # limit 0.940 - 0.047 = 0.893: "near copy" (0.934) dropped
    (0.0, None, ["near copy", "c30", "c40"]),  # only scores above the positive's dropped
    (None, 0.1, ["c40", "c50", "c70"]),   # limit 0.840: 30° (0.866) dropped too
    (0.05, 0.2, ["c50", "c70"]),          # both: the lower limit (0.740) wins; only two candidates remain
])
def test_margins_as_sentence_transformers(relative, absolute, expected):
    negs, scores, _ = one_row(relative=relative, absolute=absolute)
    assert negs == expected
    pos = np.cos(np.deg2rad(20))
    for s in scores:
        assert relative is None or s <= pos - abs(pos) * relative
        assert absolute is None or s + absolute <= pos


def test_k_per_row_deep_second_pass_and_repeated_anchors():
    # Two rows share an anchor: neither row's positive may be the other's negative. depth=2 makes the first search
    # find nothing valid, so the rows are searched again over the whole corpus.
    pairs = [N.Pair("a", "p1", [], 1), N.Pair("a", "p2", [], 2), N.Pair("b", "q", [], 3)]
    cands = ["p1", "p2", "q", "x1", "x2", "x3", "x4"]
    emb = unit([10, 12, 100, 30, 40, 50, 60])
    negs, _, stats = N.select_negatives(pairs, unit([0, 0, 100]), unit([10, 12, 95]), cands, emb, 2, None,
                                        backend="numpy", depth=2)
    assert negs[0] == negs[1] == ["x1", "x2"]
    assert negs[2] == ["x4", "x3"]
    assert stats.short_rows == 0 and all(len(n) == 2 for n in negs)


def test_ties_by_corpus_order_on_both_backends():
    cands = {f"t{i}": 45 for i in range(6)}  # six identical scores
    first, _, _ = one_row(k=3, relative=None, cands={"the positive": 20, **cands})
    assert first == ["t0", "t1", "t2"]
    pytest.importorskip("faiss")
    again, _, _ = one_row(k=3, relative=None, cands={"the positive": 20, **cands}, backend="faiss")
    assert again == first


def test_readers(tmp_path):
    # TSV: the header contrastive fine-tuning reads (anchor / query, positive / pos, neg*, other columns kept)
    (tmp_path / "p.tsv").write_text("query\tlang\tpos\tneg1\na\tde\tb\tn1\n\nc\tfr\td\n")
    pairs, fmt = N.read_pairs(tmp_path / "p.tsv")
    assert fmt == "tsv" and [(p.anchor, p.positive, p.negatives, p.line, p.extra) for p in pairs] == [
        ("a", "b", ["n1"], 2, {"lang": "de"}), ("c", "d", [], 4, {"lang": "fr"})]
    assert N.format_pairs(pairs, [["x", "y"], ["z", "w"]], "tsv") == (
        "anchor\tpositive\tlang\tneg1\tneg2\na\tb\tde\tx\ty\nc\td\tfr\tz\tw\n")
    (tmp_path / "bad.tsv").write_text("a\tb\n")
    with pytest.raises(UserError, match=r"bad\.tsv:1: the header 'a\\tb' must name an 'anchor'"):
        N.read_pairs(tmp_path / "bad.tsv")
    (tmp_path / "pairs").write_text('{"anchor": "a", "positive": "b", "id": 7}\n')  # no suffix: sniffed
    pairs, fmt = N.read_pairs(tmp_path / "pairs")
    assert fmt == "jsonl" and pairs[0].extra == {"id": 7}
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "x"}\n{"_id": "d2", "text": "y"}\n')
    assert N.read_corpus_texts(tmp_path) == ["T x", "y"]
    assert N.candidate_texts(pairs, ["b", "z"]) == ["b", "z"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("neg")
    tok = tiny_setup.make_tokenizer(d)
    ckpt = tiny_setup.make_checkpoint(d)
    w = tiny_setup.WORDS
    # Positives: the anchor's words reversed (close under mean pooling even with random weights, so that most
    # candidates score below them).
    rows = [{"anchor": " ".join(w["en"][i:i + 4]), "positive": " ".join(w["en"][i:i + 4][::-1]), "lang": "en"}
            for i in range(6)]
    pairs = tiny_setup.write_jsonl(d / "pairs.jsonl", rows)
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(" ".join(w["de"][i:i + 3 + i % 4]) for i in range(10)) + "\n\n")
    return {"dir": d, "tok": str(tok), "ckpt": str(ckpt), "pairs": str(pairs), "corpus": str(corpus), "rows": rows}


def mine(tiny, out, *extra):
    C.main(["--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--pairs", tiny["pairs"], "--corpus",
            tiny["corpus"], "--out", str(out), *extra])


def test_command_writes_k_negatives_deterministically(tiny, capsys):
    out = tiny["dir"] / "mined.jsonl"
    mine(tiny, out, "--k", "3", "--relative-margin", "0")
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 6 and summary["candidates"] == 16 and summary["rows_short_of_k"] == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row, given in zip(rows, tiny["rows"]):
        assert (row["anchor"], row["positive"], row["lang"]) == (given["anchor"], given["positive"], "en")
        assert len(row["negatives"]) == 3 and row["positive"] not in row["negatives"]
        assert row["anchor"] not in row["negatives"] and len(set(row["negatives"])) == 3
    again = tiny["dir"] / "again.tsv"
    mine(tiny, again, "--k", "3", "--relative-margin", "0")
    capsys.readouterr()
    assert again.read_text() == "anchor\tpositive\tlang\tneg1\tneg2\tneg3\n" + "".join(
        "\t".join([r["anchor"], r["positive"], r["lang"], *r["negatives"]]) + "\n" for r in rows)
    # ... and contrastive fine-tuning reads that file with its negatives and languages
    from xlm_jax.tasks.embedding import read as read_contrastive

    read_back = read_contrastive(again)
    assert [(e.anchor, e.positive, list(e.negatives), e.lang) for e in read_back] == [
        (r["anchor"], r["positive"], r["negatives"], "en") for r in rows]
    # Nothing-lost: an existing output is kept unless --force.
    before = out.read_text()
    with pytest.raises(SystemExit):
        mine(tiny, out)
    assert "exists" in capsys.readouterr().err and out.read_text() == before
    mine(tiny, out, "--k", "1", "--force")
    capsys.readouterr()
    assert all(len(json.loads(line)["negatives"]) == 1 for line in out.read_text().splitlines())


@pytest.mark.parametrize("pairs_text, extra, match", [
    ('{"anchor": "a b"}\n', [], r"pairs\.jsonl:1: no \"positive\" field"),
    ('{"anchor": "a", "positive": "b"}\n{"anchor": "c", "positive": "  "}\n', [], r"pairs\.jsonl:2: positive is empty"),
    ('{"anchor": "", "positive": "b"}\n', [], r"pairs\.jsonl:1: anchor is empty"),
    ('{"anchor": "a", "positive": 3}\n', [], r"pairs\.jsonl:1: positive=3: expected a string"),
    ("", [], r"pairs\.jsonl: empty"),
    (None, ["--k", "0"], r"--k: invalid value 0: must be an integer >= 1"),
    (None, ["--relative-margin", "1.5"], r"--relative-margin: invalid value 1\.5: must be a number in \[0, 1\]"),
    (None, ["--absolute-margin", "-0.1"], r"--absolute-margin: invalid value -0\.1"),
    (None, ["--corpus", "EMPTY"], r"empty\.txt: empty; the corpus has one text per line"),
    (None, ["--out", "PAIRS", "--force"], r"overlaps the pairs file"),
    (None, ["--out", "x.csv"], r"x\.csv: the output must end in \.jsonl"),
])
def test_bad_inputs_exit_2_and_write_nothing(tiny, capsys, pairs_text, extra, match):
    d = tiny["dir"] / "bad"
    d.mkdir(exist_ok=True)
    pairs = d / "pairs.jsonl"
    pairs.write_text(pairs_text if pairs_text is not None else '{"anchor": "a", "positive": "b"}\n')
    (d / "empty.txt").write_text("\n \n")
    extra = [{"EMPTY": str(d / "empty.txt"), "PAIRS": str(pairs), "x.csv": str(d / "x.csv")}.get(x, x) for x in extra]
    out = d / "out.jsonl"
    args = ["--checkpoint", tiny["ckpt"], "--tokenizer", tiny["tok"], "--pairs", str(pairs), "--out", str(out), *extra]
    before = pairs.read_text()
    with pytest.raises(SystemExit) as exit_:
        C.main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    assert sorted(p.name for p in d.iterdir()) == ["empty.txt", "pairs.jsonl"] and pairs.read_text() == before


def test_tsv_row_without_positive_names_file_and_line(tmp_path):
    (tmp_path / "p.tsv").write_text("anchor\tpositive\nlonely anchor\n")
    with pytest.raises(UserError, match=r"p\.tsv:2: missing positive.*'lonely anchor'"):
        N.read_pairs(tmp_path / "p.tsv")


def test_sentence_transformers_directory_uses_its_prompts_and_pooling(tmp_path, capsys):
    """An e5-style directory (mean pooling, "query: " / "passage: " prompts): the command's negatives equal those
    chosen from `SentenceTransformer.encode` vectors (anchors with the query prompt, candidates with the passage
    prompt)."""
    import shutil

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers import models

    (tmp_path / "src").mkdir()
    shutil.copy(tiny_setup.make_tokenizer(tmp_path), tmp_path / "src" / "sentencepiece.bpe.model")
    tok = transformers.XLMRobertaTokenizer.from_pretrained(str(tmp_path / "src"))
    torch.manual_seed(0)
    cfg = transformers.XLMRobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=37, max_position_embeddings=130, type_vocab_size=1,
                                        layer_norm_eps=1e-5)
    model = transformers.XLMRobertaModel(cfg, add_pooling_layer=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    e5 = st.SentenceTransformer(modules=[models.Transformer(str(tmp_path / "hf"), max_seq_length=64),
                                         models.Pooling(32, "mean")],
                                prompts={"query": "query: ", "passage": "passage: "})
    e5.save(str(tmp_path / "e5"))
    w = tiny_setup.WORDS
    rows = [{"anchor": " ".join(w["en"][i:i + 3]), "positive": " ".join(w["de"][i:i + 3])} for i in range(5)]
    pairs = tiny_setup.write_jsonl(tmp_path / "pairs.jsonl", rows)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(w["fr"][i:i + 2 + i % 3]) for i in range(8)) + "\n")
    out = tmp_path / "out.jsonl"
    C.main(["--checkpoint", str(tmp_path / "e5"), "--pairs", str(pairs), "--corpus", str(corpus), "--out", str(out),
            "--k", "2", "--relative-margin", "0", "--backend", "numpy"])
    capsys.readouterr()
    ref = st.SentenceTransformer(str(tmp_path / "e5"), device="cpu")
    read, _ = N.read_pairs(pairs)
    cands = N.candidate_texts(read, N.read_corpus_texts(corpus))
    a = ref.encode([r["anchor"] for r in rows], prompt_name="query")
    c = ref.encode(cands, prompt_name="passage")
    expected, _, _ = N.select_negatives(read, a, c[[cands.index(r["positive"]) for r in rows]], cands, c, 2, 0.0,
                                        backend="numpy")
    assert [json.loads(line)["negatives"] for line in out.read_text().splitlines()] == expected
