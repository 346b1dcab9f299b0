"""The held-out split holds: no valid / test sentence of a language is in any train split of that language."""

import random

import numpy as np
import pytest

from xlm_jax.data.corpus import PreprocessedCorpus, heldout_split
from xlm_jax.data.heldout import HeldOutSplit
from xlm_jax.data.preprocess import preprocess_corpus
from xlm_jax.data.tokenizer import train_tokenizer

WORDS = {
    "en": "the file folder window error message page was saved closed opened cannot found new old".split(),
    "de": "die datei ordner fenster fehler meldung seite wurde gespeichert geschlossen neu alt nicht".split(),
    "fr": "le fichier dossier fenêtre erreur message page été enregistré fermé ouvert nouveau vieux".split(),
}


def _sentence(rng, lang, n=None):
    return " ".join(rng.choice(WORDS[lang]) for _ in range(n or rng.randint(2, 6)))


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def overlapping_corpus(root, reverse=False):
    """en-de and en-fr pairs whose sides are also the mono files, with many-to-one translations, duplicate
    pairs and lines, extra mono lines, lines that differ only in spacing or case, and long lines that share
    their first pieces (equal after --max-len truncation). `reverse`: every file's lines in reverse order."""
    rng = random.Random(0)
    english = [_sentence(rng, "en") for _ in range(150)]
    pairs = {"de": [], "fr": []}
    for lang in pairs:
        translations = [_sentence(rng, lang) for _ in range(110)]  # fewer than English: many-to-one
        for en in english:
            if rng.random() < 0.8:
                pairs[lang].append((en, rng.choice(translations)))
        pairs[lang] += rng.sample(pairs[lang], 20)  # duplicate pairs
        long_prefix = _sentence(rng, lang, 12)
        pairs[lang] += [(_sentence(rng, "en", 12), f"{long_prefix} {_sentence(rng, lang)}") for _ in range(5)]
    mono = {"en": sorted({en for p in pairs.values() for en, _ in p})}
    for lang, p in pairs.items():
        mono[lang] = [x for _, x in p]
    for lang in mono:
        sides = list(mono[lang])
        mono[lang] += [_sentence(rng, lang) for _ in range(60)]  # in no pair
        mono[lang] += rng.sample(sides, 30)  # duplicates
        mono[lang] += [s.replace(" ", "  ", 1) for s in rng.sample(sides, 15)]  # same ids, other text
        mono[lang] += [s.capitalize() for s in rng.sample(sides, 15)]  # same ids with lowercasing only
        rng.shuffle(mono[lang])
    order = (lambda xs: xs[::-1]) if reverse else (lambda xs: xs)
    for lang, lines in mono.items():
        half = len(lines) // 2
        _write(root / "mono" / f"{lang}.txt", order(lines[:half]) + [""] + order(lines[half:]))
    for lang, p in pairs.items():
        l1, l2 = sorted(("en", lang))
        by_lang = {"en": [en for en, _ in p], lang: [x for _, x in p]}
        _write(root / "para" / f"{l1}-{l2}.{l1}", order(by_lang[l1]))
        _write(root / "para" / f"{l1}-{l2}.{l2}", order(by_lang[l2]))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    corpus = overlapping_corpus(root / "corpus")
    train_tokenizer([str(corpus)], 60, str(root / "spm.model"))
    return corpus, root / "spm.model", root


def stored_sentences(directory):
    """{split: {lang: [ids bytes of every mono line and pair side of that language]}}."""
    data = PreprocessedCorpus(directory)
    out = {}
    for split in data.manifest["splits"]:
        by_lang = out.setdefault(split, {})
        for lang in data.mono_langs(split):
            arr = data.mono(split, lang)
            by_lang.setdefault(lang, []).extend(arr.sentence(i).tobytes() for i in range(len(arr)))
        for l1, l2 in data.para_pairs(split):
            for lang, arr in zip((l1, l2), data.para(split, l1, l2)):
                by_lang.setdefault(lang, []).extend(arr.sentence(i).tobytes() for i in range(len(arr)))
    return out


@pytest.mark.parametrize("max_len, lowercase", [(64, False), (64, True), (8, False)])
def test_no_heldout_sentence_in_any_train_split(corpus, tmp_path, max_len, lowercase):
    corpus_dir, model, _ = corpus
    manifest = preprocess_corpus(corpus_dir, model, tmp_path / "out", max_len=max_len, workers=1, valid_fraction=0.15,
                                 test_fraction=0.15, lowercase_and_strip_accents=lowercase)
    sentences = stored_sentences(tmp_path / "out")
    for lang in ("de", "en", "fr"):
        train = set(sentences["train"][lang])
        for split in ("valid", "test"):
            held = sentences[split][lang]
            assert held, f"no {split} sentence for {lang}: the test would hold vacuously"
            leaks = [s for s in held if s in train]
            assert not leaks, f"{len(leaks)} of {len(held)} {split} {lang} sentences are in a train split"
    for split in ("valid", "test"):  # held-out pairs exist, so the pair sides were really checked
        assert all(manifest["splits"][split]["para"][p]["sentences"] > 0 for p in ("de-en", "en-fr"))


def test_split_independent_of_line_order_and_workers(corpus, tmp_path):
    corpus_dir, model, root = corpus
    reversed_dir = overlapping_corpus(tmp_path / "reversed", reverse=True)
    runs = [(corpus_dir, 1), (reversed_dir, 2)]
    results = []
    for i, (c, workers) in enumerate(runs):
        out = tmp_path / f"o{i}"
        preprocess_corpus(c, model, out, max_len=8, workers=workers, valid_fraction=0.15, test_fraction=0.15)
        results.append({s: {lang: sorted(v) for lang, v in by.items()} for s, by in stored_sentences(out).items()})
    assert results[0] == results[1]


def test_translation_groups_move_whole():
    def ids(*xs):
        return np.asarray(xs, dtype=np.int32)

    h = HeldOutSplit(0.3, 0.3)
    # en 1 <-> de 7, en 2 <-> de 7, en 2 <-> fr 9: one group; en 3 <-> de 8: another.
    de_en = (["x", "x", "y"], ["a", "b", "c"]), ([ids(7), ids(7), ids(8)], [ids(1), ids(2), ids(3)])
    h.link_pairs(("de", "en"), *de_en)
    h.link_pairs(("en", "fr"), (["b2"], ["z"]), ([ids(2)], [ids(9)]))
    group = heldout_split("a", 0.3, 0.3)  # "a" is the smallest text of {a, b, b2, x, z}
    assert h.pair_splits(("de", "en"), *de_en) == [group, group, heldout_split("c", 0.3, 0.3)]
    assert h.pair_splits(("en", "fr"), (["b2"], ["z"]), ([ids(2)], [ids(9)])) == [group]
    # Mono: a pair side goes with its group whatever its own text; a line in no pair by its (smallest) text;
    # the same ids in another language are another sentence; a dropped line by its own text.
    lines = ["zzz", "q", "q ", "dropped"]
    assert h.mono_splits("fr", lines, [ids(9), ids(5), ids(5), None]) == [
        group, heldout_split("q", 0.3, 0.3), heldout_split("q", 0.3, 0.3), heldout_split("dropped", 0.3, 0.3)]
    assert h.mono_splits("de", ["zzz"], [ids(9)]) == [heldout_split("zzz", 0.3, 0.3)]
    with pytest.raises(RuntimeError):
        h.link_pairs(("de", "en"), (["x"], ["a"]), ([ids(7)], [ids(1)]))
    # A pair with a dropped side links nothing (a hub of empty sentences would merge unrelated groups).
    h = HeldOutSplit(0.3, 0.3)
    h.link_pairs(("de", "en"), (["", ""], ["a", "b"]), ([None, None], [ids(1), ids(2)]))
    assert h.mono_splits("en", ["a", "b"], [ids(1), ids(2)]) == [heldout_split(t, 0.3, 0.3) for t in "ab"]
    assert HeldOutSplit(0.0, 0.0).mono_splits("en", ["a"], [ids(1)]) == ["train"]


def test_fractions_are_per_group():
    h = HeldOutSplit(0.1, 0.1)
    texts = [[f"en {i}" for i in range(4000)], [f"de {i}" for i in range(4000)]]
    ids = [[np.asarray([i, 0], np.int32) for i in range(4000)], [np.asarray([i, 1], np.int32) for i in range(4000)]]
    h.link_pairs(("de", "en"), texts[::-1], ids[::-1])
    splits = h.pair_splits(("de", "en"), texts[::-1], ids[::-1])
    # One hash per pair (not "held out when either side is"): about 10 % each, not 19 %.
    assert 300 < splits.count("valid") < 500 and 300 < splits.count("test") < 500
