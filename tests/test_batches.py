import json
from pathlib import Path

import numpy as np
import pytest

from xlm_jax.data.batches import BatchSource, DataConfig
from xlm_jax.data.corpus import PreprocessedCorpus
from xlm_jax.core.errors import UserError

V = 500
MASK = V - 1


def _write(stem: Path, sentences: list[np.ndarray]) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    lengths = [len(s) for s in sentences]
    np.save(f"{stem}.ids.npy", np.concatenate(sentences).astype(np.int32) if sentences else np.zeros(0, np.int32))
    np.save(f"{stem}.offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def write_corpus(root: Path, mono: dict, para: dict, valid: dict | None = None) -> PreprocessedCorpus:
    """A preprocessed directory in the contract format from lists of id arrays."""
    splits = {}
    for split, m, p in (("train", mono, para), ("valid", valid or {}, {})):
        info = {"mono": {}, "para": {}}
        for lang, sents in m.items():
            _write(root / split / "mono" / lang, sents)
            info["mono"][lang] = {"sentences": len(sents), "tokens": int(sum(map(len, sents))), "dropped": 0,
                                  "truncated": 0}
        for (l1, l2), (s1, s2) in p.items():
            for lang, sents in ((l1, s1), (l2, s2)):
                _write(root / split / "para" / f"{l1}-{l2}.{lang}", sents)
            info["para"][f"{l1}-{l2}"] = {"sentences": len(s1), "tokens": {l1: 0, l2: 0}}
        splits[split] = info
    langs = sorted(set(mono) | {x for pair in para for x in pair})
    manifest = {"format": 1, "tokenizer": {"path": "t.model", "sha256": "0", "vocab_size": V, "mask_id": MASK,
                                           "pad_id": 1, "bos_id": 0, "eos_id": 2, "unk_id": 3},
                "splits": splits, "langs": langs, "max_len": 100, "source_hash": "0"}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return PreprocessedCorpus(root)


def _random_sentences(rng, n, lo=1, hi=30):
    return [rng.integers(4, MASK, size=rng.integers(lo, hi)).astype(np.int32) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    mono = {"de": _random_sentences(rng, 200), "en": _random_sentences(rng, 400), "fr": _random_sentences(rng, 50)}
    para = {("en", "fr"): (_random_sentences(rng, 300, 1, 60), _random_sentences(rng, 300, 1, 60))}
    para[("en", "fr")][0][0] = np.full(120, 7, np.int32)  # too long: filtered out
    valid = {"en": _random_sentences(rng, 40)}
    return write_corpus(tmp_path_factory.mktemp("pre"), mono, para, valid)


def _stream(corpus, lang):
    tokens = corpus.mono("train", lang)
    pieces = []
    for i in range(len(tokens)):
        pieces += [[2], tokens.sentence(i).tolist()]
    return np.concatenate(pieces)


def _contains_cyclic(stream, window):
    doubled = np.concatenate([stream, stream[: len(window)]])
    view = np.lib.stride_tricks.sliding_window_view(doubled, len(window))
    return np.any(np.all(view == window, axis=1))


CFG = DataConfig(seq_len=32, batch_size=8, objectives={"mlm": 1.0, "clm": 0.5, "tlm": 1.0},
                 mono_langs=("de", "en", "fr"), para_pairs=("en-fr",), seed=3)


def test_stream_rows_are_slices_of_the_eos_joined_text(corpus):
    src = BatchSource(corpus, DataConfig(seq_len=32, batch_size=16, objectives={"clm": 1.0},
                                         mono_langs=("de", "en", "fr"), bos_per_sequence=False))
    b = src.batch(0)["clm"]
    assert set(b) == {"input_ids", "attention_mask", "positions", "langs", "example_lang"}
    assert b["input_ids"].shape == (16, 32) and b["input_ids"].dtype == np.int32
    assert np.all(b["attention_mask"] == 1)
    np.testing.assert_array_equal(b["positions"], np.tile(np.arange(32), (16, 1)))
    streams = {lang: _stream(corpus, lang) for lang in ("de", "en", "fr")}
    for r in range(16):
        lang = ("de", "en", "fr")[b["example_lang"][r]]
        assert np.all(b["langs"][r] == ["de", "en", "fr"].index(lang))
        assert _contains_cyclic(streams[lang], b["input_ids"][r])
    # exact check of the layout: a window that starts at the very first separator
    en = corpus.mono("train", "en")
    s0, s1 = en.sentence(0), en.sentence(1)
    expected = np.concatenate([[2], s0, [2], s1])
    assert _contains_cyclic(streams["en"], expected) and streams["en"][0] == 2


def test_bos_per_sequence_and_mlm_fields(corpus):
    src = BatchSource(corpus, CFG)
    b = src.batch(5)["mlm"]
    assert np.all(b["input_ids"][:, 0] == 0)
    p = src.num_predictions()
    assert p == 5  # ceil(0.15 * 32)
    for k in ("mlm_positions", "mlm_targets", "mlm_weights"):
        assert b[k].shape == (8, p)
    assert b["mlm_weights"].dtype == np.float32 and b["mlm_positions"].dtype == np.int32
    used = b["mlm_weights"] > 0
    assert np.all(b["mlm_positions"][used] > 0)  # <s> is never predicted
    # unmasked text of a row is a slice of the stream
    rows = np.nonzero(used)[0]
    original = b["input_ids"].copy()
    original[rows, b["mlm_positions"][used]] = b["mlm_targets"][used]
    for r in range(8):
        lang = ("de", "en", "fr")[b["example_lang"][r]]
        assert _contains_cyclic(_stream(corpus, lang), original[r, 1:])


def _expected_tlm(layout, src, tgt):
    first = 0 if layout == "xlmr" else 2
    return np.concatenate([[first], src, [2, 2], tgt, [2]])


@pytest.mark.parametrize("layout", ["xlmr", "xlm"])
def test_tlm_layout_positions_and_langs(corpus, layout):
    # pack=False: this test reads one pair per row (the packed layout: tests/test_packing.py)
    cfg = DataConfig(seq_len=128, batch_size=16, objectives={"tlm": 1.0}, para_pairs=(("fr", "en"),),
                     mono_langs=("de",), tlm_layout=layout, tlm_max_len=100, seed=1, pack=False)
    src = BatchSource(corpus, cfg)
    b = src.batch(2)["tlm"]
    en, fr = corpus.para("train", "en", "fr")
    lang_id = {"de": 0, "en": 1, "fr": 2}
    # un-mask, then identify each row's pair by its content
    ids = b["input_ids"].copy()
    used = b["mlm_weights"] > 0
    ids[np.nonzero(used)[0], b["mlm_positions"][used]] = b["mlm_targets"][used]
    en_sents = [tuple(en.sentence(i)) for i in range(len(en))]
    swapped = 0
    for r in range(16):
        n = int(b["attention_mask"][r].sum())
        row = ids[r, :n]
        sep = np.nonzero((row[:-1] == 2) & (row[1:] == 2))[0][-1]
        first_half, second_half = row[1:sep], row[sep + 2 : n - 1]
        is_fr_first = tuple(first_half) not in en_sents
        swapped += is_fr_first
        i = en_sents.index(tuple(second_half if is_fr_first else first_half))
        src_s, tgt_s = (fr.sentence(i), en.sentence(i)) if is_fr_first else (en.sentence(i), fr.sentence(i))
        np.testing.assert_array_equal(row, _expected_tlm(layout, src_s, tgt_s))
        a = len(src_s) + 2
        np.testing.assert_array_equal(b["positions"][r, :n], np.r_[np.arange(a), np.arange(n - a)])
        first_lang, second_lang = ("fr", "en") if is_fr_first else ("en", "fr")
        assert np.all(b["langs"][r, :a] == lang_id[first_lang]) and np.all(b["langs"][r, a:n] == lang_id[second_lang])
        assert np.all(ids[r, n:] == 1) and np.all(b["positions"][r, n:] == 0)
        assert i != 0  # the 120-token sentence exceeds tlm_max_len and is filtered
        assert len(src_s) <= 100 and len(tgt_s) <= 100
    assert 0 < swapped < 16  # both directions occur
    assert np.all(b["example_lang"] == 0)


def test_tlm_exact_row_for_known_pair(tmp_path):
    c = write_corpus(tmp_path, {}, {("de", "en"): ([np.array([10, 11, 12])], [np.array([20, 21])])})
    for layout, first in (("xlmr", 0), ("xlm", 2)):
        cfg = DataConfig(seq_len=16, batch_size=1, objectives={"tlm": 1.0}, para_pairs=("de-en",),
                         tlm_layout=layout, tlm_random_order=False, mask_prob=0.01)
        b = BatchSource(c, cfg)._tlm_layout(np.array([0]), np.array([0]), np.array([False]), 16)
        np.testing.assert_array_equal(b["input_ids"][0], [first, 10, 11, 12, 2, 2, 20, 21, 2] + [1] * 7)
        np.testing.assert_array_equal(b["positions"][0], [0, 1, 2, 3, 4, 0, 1, 2, 3] + [0] * 7)
        np.testing.assert_array_equal(b["langs"][0], [0] * 5 + [1] * 4 + [0] * 7)
        np.testing.assert_array_equal(b["attention_mask"][0], [1] * 9 + [0] * 7)


def test_tlm_token_budget_buckets(corpus):
    cfg = DataConfig(seq_len=128, batch_size=8, objectives={"tlm": 1.0}, para_pairs=("en-fr",),
                     tlm_batching="tokens", tlm_tokens_per_batch=1024, seed=0)
    src = BatchSource(corpus, cfg, 1, 2)
    assert src.tlm_bucket_lengths() == [32, 64, 96, 128]
    shapes = set()
    for step in range(30):
        b = src.batch(step)["tlm"]
        n, t = b["input_ids"].shape
        shapes.add((n, t))
        assert 2 * n == (1024 // t) - (1024 // t) % 2 and t in (32, 64, 96, 128)
        lengths = b["attention_mask"].sum(1)
        assert np.all(lengths <= t) and np.all(lengths > t - 32)  # grouped by length
    assert len(shapes) >= 2


def test_sampling_probs_used_for_languages(corpus):
    cfg = DataConfig(seq_len=16, batch_size=4000, objectives={"clm": 1.0}, mono_langs=("de", "en", "fr"),
                     lang_alpha_mono=0.5)
    src = BatchSource(corpus, cfg)
    sizes = np.array([len(_stream(corpus, lang)) for lang in ("de", "en", "fr")], float)
    q = (sizes / sizes.sum()) ** 0.5
    np.testing.assert_allclose(src.mono_probs, q / q.sum())
    freq = np.bincount(src.batch(0)["clm"]["example_lang"], minlength=3) / 4000
    assert np.all(np.abs(freq - q / q.sum()) < 0.03)


def test_resume_determinism(corpus):
    a = BatchSource(corpus, CFG).batch(17)
    first = BatchSource(corpus, CFG)
    first.batch(3)
    b = first.batch(17)  # a fresh object and one with history agree
    for name in ("mlm", "clm", "tlm"):
        for k in a[name]:
            np.testing.assert_array_equal(a[name][k], b[name][k])
    c = BatchSource(corpus, CFG).batch(18)
    assert not np.array_equal(a["mlm"]["input_ids"], c["mlm"]["input_ids"])
    # enabling/disabling another objective leaves a batch unchanged
    only_mlm = DataConfig(**{**CFG.__dict__, "objectives": {"mlm": 1.0}})
    np.testing.assert_array_equal(BatchSource(corpus, only_mlm).batch(17)["mlm"]["input_ids"], a["mlm"]["input_ids"])


def test_two_processes_union_equals_single_process(corpus):
    whole = BatchSource(corpus, CFG).batch(9)
    parts = [BatchSource(corpus, CFG, pid, 2).batch(9) for pid in range(2)]
    for name in whole:
        for k in whole[name]:
            assert parts[0][name][k].shape[0] == 4
            np.testing.assert_array_equal(np.concatenate([p[name][k] for p in parts]), whole[name][k])


def test_valid_batches_cover_the_stream_and_are_fixed(corpus):
    cfg = DataConfig(seq_len=32, batch_size=4, objectives={"mlm": 1.0}, mono_langs=("en",), bos_per_sequence=False)
    src = BatchSource(corpus, cfg)
    first = list(src.valid_batches("en"))
    again = list(BatchSource(corpus, cfg).valid_batches("en"))
    for x, y in zip(first, again, strict=True):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    ids = np.concatenate([b["input_ids"] for b in first])
    att = np.concatenate([b["attention_mask"] for b in first]).astype(bool)
    pos = np.concatenate([b["mlm_positions"] for b in first])
    tgt = np.concatenate([b["mlm_targets"] for b in first])
    w = np.concatenate([b["mlm_weights"] for b in first]) > 0
    rows = np.nonzero(w)[0]
    ids[rows, pos[w]] = tgt[w]
    tokens = corpus.mono("valid", "en")
    expected = np.concatenate([np.r_[2, tokens.sentence(i)] for i in range(len(tokens))] + [[2]])
    np.testing.assert_array_equal(ids[att], expected)
    assert np.all(ids[~att] == 1)
    parts = [list(BatchSource(corpus, cfg, p, 2).valid_batches("en")) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([np.concatenate([a["input_ids"], b["input_ids"]])
                                                  for a, b in zip(*parts)]),
                                  np.concatenate([b["input_ids"] for b in first]))


def test_bad_inputs(corpus):
    with pytest.raises(UserError, match=r"\['xx'\].*available: \['de', 'en', 'fr'\]"):
        BatchSource(corpus, DataConfig(mono_langs=("en", "xx")))
    with pytest.raises(UserError, match=r"de-en.*available: \['en-fr'\]"):
        BatchSource(corpus, DataConfig(objectives={"tlm": 1.0}, para_pairs=("de-en",)))
    with pytest.raises(UserError, match="not divisible by the process count 3"):
        BatchSource(corpus, DataConfig(batch_size=8, mono_langs=("en",)), 0, 3)
    with pytest.raises(UserError, match="unknown"):
        DataConfig(objectives={"mlm": 1.0, "nsp": 1.0}, mono_langs=("en",))
    with pytest.raises(UserError, match="tlm_layout"):
        DataConfig(objectives={"tlm": 1.0}, para_pairs=("de-en",), tlm_layout="bert")
    with pytest.raises(UserError, match="mono_langs is empty"):
        DataConfig(objectives={"mlm": 1.0})


def test_cli_synth_and_bench(tmp_path, capsys):
    from xlm_jax.data.__main__ import main

    main(["synth", str(tmp_path / "s"), "--langs", "2", "--tokens", "20000", "--para-pairs", "1", "--vocab-size", "300"])
    main(["bench", str(tmp_path / "s"), "--seq-len", "64", "--batch-size", "8", "--steps", "3", "--objective", "tlm"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["steps"] == 3 and report["tokens_per_s"] > 0
    assert report["real_tokens_per_s"] < report["tokens_per_s"]  # TLM rows are padded to seq_len
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(tmp_path / "missing")])
    assert exit_info.value.code == 2


def test_tlm_seq_len_separate_from_stream_len(corpus):
    cfg = DataConfig(seq_len=32, tlm_seq_len=128, batch_size=4, objectives={"mlm": 1.0, "tlm": 1.0},
                     mono_langs=("en",), para_pairs=("en-fr",), tlm_max_len=60)
    b = BatchSource(corpus, cfg).batch(0)
    assert b["mlm"]["input_ids"].shape == (4, 32) and b["tlm"]["input_ids"].shape == (4, 128)
    assert b["tlm"]["mlm_positions"].shape == (4, 20)  # ceil(0.15 * 128)


def test_several_pairs_are_sampled_by_lang_alpha_para(tmp_path):
    rng = np.random.default_rng(5)
    sizes = {("en", "fr"): 400, ("de", "en"): 100, ("en", "es"): 25}
    para = {pair: (_random_sentences(rng, n, 1, 20), _random_sentences(rng, n, 1, 20)) for pair, n in sizes.items()}
    corpus = write_corpus(tmp_path, {}, para)
    pairs = ("en-fr", "de-en", "en-es")
    n = np.array([400, 100, 25], float)
    for alpha in (0.3, 1.0):
        expected = (n / n.sum()) ** alpha / ((n / n.sum()) ** alpha).sum()  # XLM: p_i ∝ (n_i / Σn)^alpha
        fixed = BatchSource(corpus, DataConfig(seq_len=48, batch_size=4000, objectives={"tlm": 1.0},
                                               para_pairs=pairs, lang_alpha_para=alpha))
        np.testing.assert_allclose(fixed.para_probs, expected, rtol=1e-12)
        freq = np.bincount(fixed.batch(0)["tlm"]["example_lang"], minlength=3) / 4000  # one draw per row
        assert np.all(np.abs(freq - expected) < 0.03), (alpha, freq, expected)
        # Token-budget batches draw one pair per step.
        tokens = BatchSource(corpus, DataConfig(seq_len=48, batch_size=8, objectives={"tlm": 1.0}, para_pairs=pairs,
                                                lang_alpha_para=alpha, tlm_batching="tokens",
                                                tlm_tokens_per_batch=96, tlm_bucket_multiple=48))
        per_step = np.bincount([tokens.batch(s)["tlm"]["example_lang"][0] for s in range(400)], minlength=3) / 400
        assert np.all(np.abs(per_step - expected) < 0.08), (alpha, per_step, expected)
    # alpha 0.3 and 1.0 differ by far more than the tolerances: the test tells them apart.
    assert abs((n[0] / n.sum()) - ((n / n.sum()) ** 0.3 / ((n / n.sum()) ** 0.3).sum())[0]) > 0.2


def test_sample_alpha_masks_tokens_by_their_corpus_frequency(tmp_path):
    """XLM's sample_alpha through BatchSource: the weights come from the training token counts, and with one
    prediction per row, the predicted position is drawn with probability w(token) / Σ w over the row."""
    rng = np.random.default_rng(6)
    ranks = np.arange(1, 101)
    zipf = (1 / ranks) / (1 / ranks).sum()  # ids 4..103, id 4 the most frequent
    mono = {"en": [(4 + rng.choice(100, size=rng.integers(5, 30), p=zipf)).astype(np.int32) for _ in range(400)]}
    corpus = write_corpus(tmp_path, mono, {})
    counts = np.bincount(np.concatenate(mono["en"]), minlength=V)
    alpha = 0.5
    cfg = DataConfig(seq_len=16, batch_size=4000, objectives={"mlm": 1.0}, mono_langs=("en",), sample_alpha=alpha,
                     mask_count="ceil", mask_prob=0.05)  # ceil(0.05 * <= 15 candidates) = 1 prediction per row
    src = BatchSource(corpus, cfg)
    weights = np.where(counts > 0, np.maximum(counts, 1.0) ** -alpha, 0.0)
    weights[:4] = weights[MASK] = 0.0
    np.testing.assert_allclose(src.token_weights, weights, rtol=1e-12)

    b = src.batch(0)["mlm"]
    assert np.all(b["mlm_weights"].sum(1) == 1)
    original = b["input_ids"].copy()
    original[np.arange(4000), b["mlm_positions"][:, 0]] = b["mlm_targets"][:, 0]
    rare = counts < np.median(counts[4:104])  # the rarer half of the vocabulary
    w = weights[original]
    expected = (w * rare[original]).sum(1) / w.sum(1)  # P(the row predicts a rare token), per row
    uniform = ((w > 0) * rare[original]).sum(1) / (w > 0).sum(1)  # the same with sample_alpha = 0
    observed = rare[b["mlm_targets"][:, 0]]
    assert abs(observed.mean() - expected.mean()) < 0.02, (observed.mean(), expected.mean())
    assert expected.mean() - uniform.mean() > 0.1  # the weighting matters by far more than the tolerance
