"""tensorflow-datasets, for real: every corpus source (`xlm_jax.data.tfds_source`) and task reader
(`xlm_jax.tasks.tfds.load_tfds`) runs through `tfds.load` under `tfds.testing.mock_data`, on the real builders'
feature specs:
- random mock examples (tfds generates them from the builder's FeaturesDict: a wrong feature name is a KeyError);
- hand-made examples in each builder's format, encoded by the builder's own FeaturesDict (`encode_example`
  refuses a key the builder does not have), so the mapping is checked value by value.

The `[tfds]` extra is optional for users. CI installs it and sets XLM_JAX_REQUIRE_TFDS=1: then a missing
TensorFlow fails these tests instead of skipping them.
"""

import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from xlm_jax import tasks as T
from xlm_jax.data import tfds_source
from xlm_jax.data.tfds_source import example_records, export, write_records
from xlm_jax.core.errors import UserError


def require_tfds():
    if os.environ.get("XLM_JAX_REQUIRE_TFDS"):
        import tensorflow_datasets as tfds  # CI: a missing extra is a failure, not a skip

        return tfds
    return pytest.importorskip("tensorflow_datasets")


def test_field_mapping_without_tf(tmp_path):
    wiki = {"text": b"_START_ARTICLE_\nTitel\n_START_PARAGRAPH_\nEin Satz._NEWLINE_Noch einer."}
    assert list(example_records("wiki40b/de", wiki)) == [("mono", ("de", ["Titel", "Ein Satz.", "Noch einer."]))]
    ted = {"translations": {"language": [b"en", b"fr", b"de"], "translation": [b"Hi there", b"Salut", b"Hallo"]}}
    assert list(example_records("ted_multi_translate", ted)) == [
        ("para", (("en", "Hi there"), ("fr", "Salut"))),
        ("para", (("en", "Hi there"), ("de", "Hallo"))),
    ]
    pc = {"en": b"Good day", "de": b"Guten Tag"}
    records = [*example_records("para_crawl/ende", pc), *example_records("wiki40b/de", wiki)]
    counts = write_records(records, tmp_path)
    assert counts == {"mono/de.txt": 3, "para/de-en": 1}
    assert (tmp_path / "para" / "de-en.de").read_text() == "Guten Tag\n"
    assert (tmp_path / "para" / "de-en.en").read_text() == "Good day\n"


def test_hyphenated_codes_become_underscores(tmp_path):
    """ted's pt-br / zh-cn would make para/en-pt-br.* whose stem the corpus splits at the first hyphen."""
    ted = {"translations": {"language": [b"en", b"pt-br"], "translation": [b"Hello", "Olá"]}}
    counts = write_records(example_records("ted_multi_translate", ted), tmp_path)
    assert counts == {"para/en-pt_br": 1}
    assert (tmp_path / "para" / "en-pt_br.pt_br").read_text() == "Olá\n"


def test_missing_tensorflow_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if not installed
    with pytest.raises(UserError, match=r"\[tfds\] extra"):
        export("wiki40b/de", str(tmp_path / "out"))
    with pytest.raises(UserError, match=r"\[tfds\] extra"):
        T.load_tfds("xnli", "test")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------- realistic mock data

XNLI_LANGS = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")

# Keyed by "dataset/config" (or "dataset"): examples in the builder's own input format.
EXAMPLES = {
    "wiki40b/de": [{"wikidata_id": "Q1", "version_id": "1",
                    "text": "\n_START_ARTICLE_\nKatze\n_START_SECTION_\nLeben\n_START_PARAGRAPH_\n"
                            "Die Katze schläft._NEWLINE_Sie frisst."}],
    "c4/multilingual": [{"text": "Ein Satz.\nNoch ein Satz.", "url": "u", "content-type": "text/plain",
                         "content-length": "1", "timestamp": "t"}],
    "para_crawl/ende": [{"en": "Good morning", "de": "Guten Morgen"}, {"en": "  ", "de": "leer"}],
    "ted_multi_translate": [{"translations": {"en": "Thank you.", "pt-br": "Obrigado.", "de": "Danke."},
                             "talk_name": "talk"},
                            {"translations": {"fr": "Merci.", "de": "Danke."}, "talk_name": "no english"}],
    "opus/medical": [{"de": "Dosis", "en": "Dose"}],
    "xnli": [{"premise": {lang: f"premise {lang}" for lang in XNLI_LANGS},
              "hypothesis": {"de": "Hypothese", "en": "hypothesis"}, "label": "contradiction"}],
    "xtreme_xnli": [{"premise": {lang: f"p {lang}" for lang in XNLI_LANGS},
                     "hypothesis": {lang: f"h {lang}" for lang in XNLI_LANGS}, "label": "neutral"}],
    "xtreme_pawsx/de": [{"sentence1": "Satz eins", "sentence2": "Satz zwei", "label": "paraphrase"},
                        {"sentence1": "a", "sentence2": "b", "label": "different_meaning"}],
    "wikiann/de": [{"tokens": ["Angela", "Merkel", "in", "Berlin"], "tags": ["B-PER", "I-PER", "O", "B-LOC"],
                    "langs": ["de"] * 4, "spans": ["PER: Angela Merkel", "LOC: Berlin"]}],
    "tatoeba/tatoeba_de": [{"source_sentence": "Ich bin müde.", "target_sentence": "I am tired.",
                            "source_language": "de", "target_language": "en"}],
    "bucc/bucc_de": [{"source_sentence": "Hallo Welt", "target_sentence": "Hello world", "source_id": "de-000001",
                      "target_id": "en-000007"}],
}


def _mock_as_dataset(self, *args, **kwargs):
    """`DatasetBuilder._as_dataset` replacement: EXAMPLES of this builder, encoded by its FeaturesDict."""
    import tensorflow as tf

    config = getattr(self.builder_config, "name", None)
    examples = EXAMPLES[f"{self.name}/{config}" if config and f"{self.name}/{config}" in EXAMPLES else self.name]
    features = self.info.features
    spec = features.get_tensor_spec()

    def tensors(s, v):
        if isinstance(s, dict):
            return {k: tensors(s[k], v[k]) for k in s}
        return tf.constant(np.asarray(v, dtype=object).tolist() if s.dtype == tf.string else np.asarray(v), s.dtype)

    rows = [tensors(spec, features.encode_example(ex)) for ex in examples]
    ds = tf.data.Dataset.from_tensors(rows[0])
    for row in rows[1:]:
        ds = ds.concatenate(tf.data.Dataset.from_tensors(row))
    return ds


@pytest.fixture(scope="module")
def tfds():
    return require_tfds()


def test_corpus_sources_on_real_feature_specs(tfds, tmp_path):
    """Random examples from each builder's FeaturesDict: the feature names we read exist."""
    with tfds.testing.mock_data(num_examples=3):
        for name, split, expect in [("wiki40b/de", "train", "mono/de.txt"), ("wiki40b/zh-cn", "test", "mono/zh_cn.txt"),
                                    ("c4/multilingual", "de", "mono/de.txt"), ("c4/en", "validation", "mono/en.txt"),
                                    ("para_crawl/ende", "train", "para/de-en"), ("opus/medical", "train", "para/de-en"),
                                    ("wiki40b", "train", "mono/en.txt"), ("c4", "train", "mono/en.txt")]:  # default configs
            out = tmp_path / name.replace("/", "_")
            counts = export(name, str(out), split=split)
            assert counts[expect] > 0, name
        # ted's random languages are never "en": nothing pairs with English, which is an error, not an empty output.
        with pytest.raises(UserError, match="ted_multi_translate split train gave no text"):
            export("ted_multi_translate", str(tmp_path / "ted"))
        assert not (tmp_path / "ted").exists()


def test_corpus_sources_map_each_builders_fields(tfds, tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset):
        assert export("wiki40b/de", str(tmp_path / "w")) == {"mono/de.txt": 4}
        assert (tmp_path / "w/mono/de.txt").read_text() == "Katze\nLeben\nDie Katze schläft.\nSie frisst.\n\n"
        assert export("c4/multilingual", str(tmp_path / "c"), split="de-validation") == {"mono/de.txt": 2}
        assert export("para_crawl/ende", str(tmp_path / "p")) == {"para/de-en": 1}  # the blank English is dropped
        assert (tmp_path / "p/para/de-en.de").read_text() == "Guten Morgen\n"
        assert export("opus/medical", str(tmp_path / "o")) == {"para/de-en": 1}
        ted = export("ted_multi_translate", str(tmp_path / "t"), split="validation")
        assert ted == {"para/de-en": 1, "para/en-pt_br": 1}  # the talk without English gives no pair
        assert (tmp_path / "t/para/en-pt_br.pt_br").read_text() == "Obrigado.\n"
        assert (tmp_path / "t/para/en-pt_br.en").read_text() == "Thank you.\n"
        assert export("ted_multi_translate", str(tmp_path / "t2"), langs=["en", "pt-br"]) == {"para/en-pt_br": 1}


def test_task_readers_map_each_builders_fields(tfds):
    with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset):
        xnli = T.load_tfds("xnli", "test")
        assert [(e.lang, e.text_a, e.text_b, e.label) for e in xnli] == [
            ("de", "premise de", "Hypothese", "contradiction"), ("en", "premise en", "hypothesis", "contradiction")]
        mt = T.load_tfds("xtreme_xnli", "train")
        assert len(mt) == 15 and {e.label for e in mt} == {"neutral"} and mt[2].text_a == "p de"
        paws = T.load_tfds("xtreme_pawsx", "train", lang="de")
        assert [(e.text_a, e.label, e.lang) for e in paws] == [("Satz eins", "1", "de"), ("a", "0", "de")]
        ner = T.load_tfds("wikiann", "test", lang="de")
        assert ner[0].words == ("Angela", "Merkel", "in", "Berlin")
        assert ner[0].labels == ("B-PER", "I-PER", "O", "B-LOC")
        assert T.load_tfds("tatoeba", "train", lang="de") == [("Ich bin müde.", "I am tired.")]
        assert T.load_tfds("bucc", "validation", lang="de") == [("Hallo Welt", "Hello world")]


def test_task_readers_on_random_mock_data(tfds):
    with tfds.testing.mock_data(num_examples=3):
        ex = T.load_tfds("xtreme_pawsx", "train", lang="de")
        assert len(ex) == 3 and all(e.lang == "de" and e.label in ("0", "1") for e in ex)
        ner = T.load_tfds("wikiann", "validation", lang="fr")
        assert len(ner) == 3 and all(set(e.labels) <= set(T.WIKIANN_LABELS) for e in ner)
        assert len(T.load_tfds("tatoeba", "train", lang="ja")) == 3
        assert len(T.load_tfds("bucc", "test", lang="zh")) == 3
        assert all(e.label in T.XNLI_LABELS for e in T.load_tfds("xnli", "validation"))


@pytest.mark.parametrize("name, split, lang, message", [
    ("squad", "train", "en", "unknown tfds dataset 'squad'; known: xnli, xtreme_xnli"),
    ("xnli", "train", "en", "split 'train' does not exist; its splits are test, validation"),
    ("xnli", "test+trian[:5]", "en", "split 'trian' does not exist (in 'test+trian[:5]')"),
    ("xtreme_xnli", "test", "en", "its splits are train"),
    ("xtreme_pawsx", "train", "en", "has no language 'en'; its languages are de, es, fr, ja, ko, zh"),
    ("bucc", "validation", "ja", "its languages are de, fr, ru, zh"),
    ("bucc", "train", "de", "its splits are test, validation"),
    ("wikiann", "test", "xx", "tfds dataset 'wikiann' has no config 'xx'"),
    ("tatoeba", "train", "en", "has no config 'tatoeba_en'"),
])
def test_task_reader_bad_names(tfds, name, split, lang, message):
    with tfds.testing.mock_data(num_examples=1):
        with pytest.raises(UserError, match=re.escape(message)):
            T.load_tfds(name, split, lang=lang)


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("argv, message", [
    (["wikki40b/de"], "not supported; use one of wiki40b, c4"),
    (["wiki40b/xx"], "tfds dataset 'wiki40b' has no config 'xx'; its configs are en, ar"),
    (["wiki40b/de", "--split", "dev"], "tfds wiki40b/de: split 'dev' does not exist; its splits are test, train, validation"),
    (["c4/multilingual"], "split 'train' does not exist"),
    (["c4/multilingual", "--split", "de+fr"], "mixes languages ['de', 'fr']"),
    (["para_crawl/enxx"], "has no config 'enxx'; its configs are enbg"),
    (["opus/medical", "--split", "test"], "its splits are train"),
    (["ted_multi_translate", "--split", "train[:10]+valid"], "split 'valid' does not exist"),
    (["ted_multi_translate", "--langs", "ja"], "gave no text for languages ['ja']"),
])
def test_cli_bad_name_or_split(tfds, tmp_path, capsys, argv, message):
    """One `error:` line, exit 2, and nothing written: neither a new OUT_DIR nor a change to an old one."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("mine")
    before = _digest(tmp_path)
    with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset):
        for out in (tmp_path / "new", old):
            with pytest.raises(SystemExit) as exit_info:
                tfds_source.main([argv[0], str(out), *argv[1:], "--force"] if out == old else [argv[0], str(out), *argv[1:]])
            assert exit_info.value.code == 2
            err = capsys.readouterr().err
            assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert _digest(tmp_path) == before and not (tmp_path / "new").exists()


def test_real_builder_code_path_imports(tfds):
    """Outside mock_data, tfds 4.9.10 reaches `importlib_resources` when it prepares a dataset (the builder's
    code_path); the [tfds] extra must install it (etils 1.15 no longer does)."""
    assert tfds.builder("tatoeba/tatoeba_de").code_path


def test_failed_download_is_one_error_line(tfds, tmp_path, monkeypatch, capsys):
    import requests

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("HTTPSConnectionPool(host='example.org'): Max retries exceeded")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(UserError, match=r"could not download or prepare tatoeba/tatoeba_de \(split train\): "
                                         r"HTTPSConnectionPool.*already prepared"):
        T.load_tfds("tatoeba", "train", lang="de")
    with pytest.raises(SystemExit) as exit_info:
        tfds_source.main(["wiki40b/de", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "could not download or prepare wiki40b/de" in err
    assert not (tmp_path / "out").exists()
