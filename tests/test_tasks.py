"""Readers on fixtures in the released formats, label checks, NER sub-word alignment, the XLM / XLM-R input
protocols (language ids on both halves), and the tfds field mapping (pure functions, no TensorFlow)."""

from pathlib import Path

import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint + task builders

from xlm_jax import tasks as T
from xlm_jax.models.config import get_model_config
from xlm_jax.core.errors import UserError

FIX = Path(__file__).parent / "fixtures" / "finetune"



@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from xlm_jax.data.tokenizer import Tokenizer

    return Tokenizer.load(tiny_setup.make_tokenizer(tmp_path_factory.mktemp("tok")))


def test_xnli_tsv_reader_uses_language_column():
    ex = T.read_file(T.TASKS["xnli"], str(FIX / "xnli.dev.tsv"))
    assert [e.lang for e in ex] == ["en", "en", "de", "fr", "fr"]
    assert ex[2] == T.Example("Die Katze saß auf der Matte.", "Eine Katze sitzt.", "entailment", "de",
                              f"{FIX / 'xnli.dev.tsv'}:4")
    # Quotes are literal in XNLI (no CSV quoting).
    assert ex[4].text_b == 'Le chat est "content".'


def test_xnli_header_matches_release_order():
    header = (FIX / "xnli.dev.tsv").read_text().splitlines()[0].split("\t")
    assert tuple(header) == T.XNLI_COLUMNS


MT = FIX / "XNLI-MT-1.0" / "multinli"


def test_xnli_mt_translate_train_files():
    """XNLI-MT 1.0's released layout: multinli.train.{lang}.tsv, header premise/hypo/label, "contradictory"."""
    de = T.read_file(T.TASKS["xnli"], str(MT / "multinli.train.de.tsv"))
    assert [e.label for e in de] == ["neutral", "entailment", "entailment", "contradiction"]
    assert {e.lang for e in de} == {"de"} and de[3].where == f"{MT / 'multinli.train.de.tsv'}:5"
    assert de[3].text_a == 'Woher weißt du das ? "All" das sind wieder ihre Informationen .'  # quotes are literal
    assert de[0].text_b.startswith("Produkt und Geographie")
    en = T.read_file(T.TASKS["xnli"], f"fr:{MT / 'multinli.train.en.tsv'}")  # a LANG: prefix wins over the name
    assert {e.lang for e in en} == {"fr"} and en[0].text_b.endswith("work . ")


@pytest.mark.parametrize("body, message", [
    ("premise\thypo\tlabel\na\tb\tcontradicts\n", r"multinli.train.de.tsv:2: label 'contradicts' is not an XNLI-MT label"),
    ("premise\thypo\tlabel\na\tb\n", r"multinli.train.de.tsv:2: 2 tab-separated fields, expected 3"),
    ("premise\thypo\tlabel\na\tb\tneutral\tx\n", r"multinli.train.de.tsv:2: 4 tab-separated fields, expected 3"),
    ("premise\thypo\tlabel\n", r"multinli.train.de.tsv: no examples"),
    ("premise\thypothesis\tlabel\na\tb\tneutral\n", r"cannot tell the format .* XNLI-MT TSV \(premise hypo label\)"),
])
def test_xnli_mt_bad_rows(tmp_path, body, message):
    path = tmp_path / "multinli.train.de.tsv"
    path.write_text(body)
    with pytest.raises(UserError, match=message):
        T.read_file(T.TASKS["xnli"], str(path))


def test_xnli_mt_translate_train_all_finetunes(tmp_path):
    from xlm_jax import finetune as F

    ckpt = tiny_setup.make_checkpoint(tmp_path)
    tok = tiny_setup.make_tokenizer(tmp_path)
    files = [str(MT / f"multinli.train.{lang}.tsv") for lang in ("en", "de")]
    cfg = F.load_config(None, ["task=xnli", f"init={ckpt}", f"tokenizer={tok}", f"out={tmp_path / 'out'}",
                               f"train=[{','.join(files)}]", "valid=[]", f"test=[{files[1]}]",
                               "protocol=translate_train_all", "max_steps=1", "batch_size=8", "max_len=32"])
    result = F.finetune(cfg, log=lambda m: None)
    assert result.table["train_examples"] == {"de": 4, "en": 4}


def test_mnli_jsonl_skips_no_consensus():
    ex = T.read_file(T.TASKS["xnli"], str(FIX / "multinli_train.jsonl"))
    assert [e.label for e in ex] == ["entailment", "contradiction", "neutral"]
    assert {e.lang for e in ex} == {"en"}


def test_pawsx_language_from_directory_or_prefix():
    de = T.read_file(T.TASKS["pawsx"], str(FIX / "pawsx/de/dev_2k.tsv"))
    assert [(e.lang, e.label) for e in de] == [("de", "0"), ("de", "1")]
    forced = T.read_file(T.TASKS["pawsx"], f"fr:{FIX / 'pawsx/de/dev_2k.tsv'}")
    assert {e.lang for e in forced} == {"fr"}
    en = T.read_file(T.TASKS["pawsx"], str(FIX / "pawsx/en/train.tsv"))
    assert len(en) == 3 and en[1].text_a.startswith("The NBA season")


def test_classification_tsv_and_jsonl():
    tsv = T.read_file(T.TASKS["classification"], str(FIX / "classify.tsv"))
    assert [(e.text_a, e.label, e.lang) for e in tsv] == [
        ("Open the file", "file", "en"), ("Datei öffnen", "file", "de"), ("Print the page", "print", "en")]
    js = T.read_file(T.TASKS["classification"], str(FIX / "classify.jsonl"))
    assert [e.lang for e in js] == ["en", "fr", "en"]  # missing lang -> default
    assert all(e.text_b is None for e in js)


def test_conll_and_wikiann_readers():
    conll = T.read_file(T.TASKS["ner"], str(FIX / "conll_en.txt"))
    assert [e.words for e in conll] == [("EU", "rejects", "German", "call", "."), ("Peter", "Blackburn")]
    assert conll[0].labels == ("B-ORG", "O", "B-MISC", "O", "O")
    wiki = T.read_file(T.TASKS["ner"], str(FIX / "wikiann_test.txt"))
    assert [(e.lang, e.words[0]) for e in wiki] == [("en", "Paris"), ("de", "Angela")]
    assert wiki[1].labels == ("B-PER", "I-PER", "O", "O", "B-LOC")


def test_malformed_ner_line_names_file_and_line():
    with pytest.raises(UserError, match=r"bad_ner.txt:3: malformed line 'nice'"):
        T.read_file(T.TASKS["ner"], str(FIX / "bad_ner.txt"))


def test_label_outside_set_names_file_line_label_and_set():
    ex = T.read_file(T.TASKS["classification"], str(FIX / "bad_label.tsv"))
    with pytest.raises(UserError, match=r"bad_label.tsv:3: label 'prnt' is not in the label set \{file, print\}"):
        T.check_labels(ex, ["file", "print"])
    ner = T.read_file(T.TASKS["ner"], str(FIX / "wikiann_test.txt"))
    with pytest.raises(UserError, match=r"wikiann_test.txt:6: label 'I-PER'"):
        T.check_labels(ner, ["O", "B-LOC", "B-PER"])


def test_unknown_task_lists_known():
    with pytest.raises(UserError, match="known tasks: xnli, pawsx, classification, ner"):
        T.get_task("mnli")


def test_resolve_labels():
    ner = T.read_file(T.TASKS["ner"], str(FIX / "conll_en.txt"))
    assert T.resolve_labels(T.TASKS["ner"], (), ner) == ("O", "B-MISC", "B-ORG", "B-PER", "I-PER")
    assert T.resolve_labels(T.TASKS["xnli"], ("x",), []) == T.XNLI_LABELS


def test_ner_first_subword_alignment(tokenizer):
    ex = T.TokenExample(("Katzenhaus", "öffnen", "x"), ("B-LOC", "O", "I-LOC"), "de")
    labels = ("O", "B-LOC", "I-LOC")
    protocol = T.InputProtocol.from_config(get_model_config("xlmr_tiny"))
    enc = T.encode_token_examples([ex], tokenizer, protocol, labels, max_len=64)
    pieces = [tokenizer.encode_pieces_ids(w) for w in ex.words]
    assert len(pieces[0]) > 1  # the test needs a word split into several pieces
    expected_ids = [0] + [i for p in pieces for i in p] + [2]
    expected_labels = [-100]
    for p, lab in zip(pieces, (1, 0, 2)):
        expected_labels += [lab] + [-100] * (len(p) - 1)
    expected_labels += [-100]
    assert enc.ids[0] == expected_ids
    assert enc.labels[0] == expected_labels
    assert enc.word_starts[0] == [1, 1 + len(pieces[0]), 1 + len(pieces[0]) + len(pieces[1])]
    batch = T.make_batch(enc, [0], 2, 64, 1, token_task=True)
    width = T.pad_width(len(expected_ids), 64)
    assert width % 16 == 0 and batch["labels"].shape == (2, width) and (batch["labels"][1] == -100).all()
    assert batch["weights"].tolist() == [1.0, 0.0]
    # Word-level predictions are read at first sub-words; a cut word is predicted "O".
    preds = np.zeros(width, np.int32)
    preds[enc.word_starts[0][0]] = 1
    assert T.word_predictions(preds, enc.word_starts[0][:2], 3, labels) == ["B-LOC", "O", "O"]


def test_ner_truncation_counts_words(tokenizer):
    ex = T.TokenExample(tuple(["document"] * 30), tuple(["O"] * 30), "en")
    protocol = T.InputProtocol.from_config(get_model_config("xlmr_tiny"))
    enc = T.encode_token_examples([ex], tokenizer, protocol, ("O",), max_len=16)
    assert len(enc.ids[0]) <= 16
    assert enc.truncated == 1 and len(enc.word_starts[0]) < 30


def test_xlm_protocol_both_halves_get_evaluated_language(tokenizer):
    config = get_model_config("xlm_tiny")  # langs (de, en, fr), language embeddings, XLM specials (</s>=1, pad=2)
    protocol = T.InputProtocol.from_config(config)
    ex = T.Example("le chat", "la maison", "entailment", "fr")
    enc = T.encode_sequence_examples([ex], tokenizer, protocol, T.XNLI_LABELS, max_len=64)
    a, b = tokenizer.encode_pieces_ids("le chat"), tokenizer.encode_pieces_ids("la maison")
    assert enc.ids[0] == [1, *a, 1, *b, 1]  # XLM: </s> A </s> B </s>
    batch = T.make_batch(enc, [0], 2, 64, config.pad_token_id, token_task=False)
    n = len(enc.ids[0])
    assert (batch["langs"][0, :n] == 2).all()  # fr = index 2 of (de, en, fr) on every token, both halves
    assert (batch["input_ids"][0, n:] == 2).all()  # XLM pad id
    with pytest.raises(UserError, match="'sw' is not one of the model's languages"):
        T.encode_sequence_examples([T.Example("x", "y", "neutral", "sw")], tokenizer, protocol, T.XNLI_LABELS, 64)


def test_xlmr_protocol_and_pair_truncation(tokenizer):
    protocol = T.InputProtocol.from_config(get_model_config("xlmr_tiny"))
    ex = T.Example("the cat", "the dog", "neutral", "en")
    enc = T.encode_sequence_examples([ex], tokenizer, protocol, T.XNLI_LABELS, max_len=64)
    a, b = tokenizer.encode_pieces_ids("the cat"), tokenizer.encode_pieces_ids("the dog")
    assert enc.ids[0] == [0, *a, 2, 2, *b, 2] and enc.labels == [1] and enc.truncated == 0
    long = T.Example("the cat " * 20, "dog", "neutral", "en")
    enc = T.encode_sequence_examples([long, ex], tokenizer, protocol, T.XNLI_LABELS, max_len=12)
    assert len(enc.ids[0]) == 12 and enc.truncated == 1
    dog = tokenizer.encode_pieces_ids("dog")
    assert enc.ids[0][-len(dog) - 3:] == [2, 2, *dog, 2]  # the longer side (A) lost pieces, B is whole


def test_tfds_field_mapping_without_tensorflow():
    record = {
        "premise": {b"de": b"Die Katze", b"en": b"The cat"},
        "hypothesis": {"language": [b"de", b"en"], "translation": [b"Ein Tier", b"An animal"]},
        "label": 0,
    }
    ex = T.tfds_xnli_examples(record)
    assert [(e.lang, e.text_a, e.text_b, e.label) for e in ex] == [
        ("de", "Die Katze", "Ein Tier", "entailment"), ("en", "The cat", "An animal", "entailment")]
    p = T.tfds_pawsx_example({"sentence1": b"a", "sentence2": b"b", "label": 1}, "ko")
    assert (p.text_a, p.label, p.lang) == ("a", "1", "ko")
    w = T.tfds_wikiann_example({"tokens": [b"Paris", b"is"], "tags": [5, 0], "langs": [b"fr", b"fr"]}, "fr")
    assert w.labels == ("B-LOC", "O") and w.words == ("Paris", "is")
    assert T.tfds_pair_sentences({"source_sentence": b"x", "target_sentence": "y"}) == ("x", "y")


# tfds itself (missing extra, mock data on the real builders): tests/test_tfds_source.py


# A file plainly in another task's format is refused before it is read, naming what it looks like (issue 20: a
# SQuAD JSON given to a classifier said "not valid JSON"; a classification TSV given to NER "label 'lang' is not in
# the label set").
def _squad(path: Path, indent) -> Path:
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "the file is open", "qas": [
        {"id": "q1", "question": "what is open?", "answers": [{"text": "the file", "answer_start": 0}]}]}]}]}
    path.write_text(__import__("json").dumps(data, indent=indent))
    return path


KNOWN_FILES = {  # name -> (path builder, its format's words, the task that reads it)
    "squad_indented": (lambda d: _squad(d / "squad.json", 1), "SQuAD-format JSON", "qa"),
    "squad_one_line": (lambda d: _squad(d / "squad_train.json", None), "SQuAD-format JSON", "qa"),
    "xnli_tsv": (lambda d: FIX / "xnli.dev.tsv", "XNLI 1.0 TSV", "xnli"),
    "xnli_mt_tsv": (lambda d: MT / "multinli.train.de.tsv", "XNLI-MT TSV", "xnli"),
    "conll": (lambda d: FIX / "conll_en.txt", "CoNLL / WikiANN", "ner"),
    "wikiann": (lambda d: FIX / "wikiann_test.txt", "CoNLL / WikiANN", "ner"),
    "classification_tsv": (lambda d: FIX / "classify.tsv", "classification TSV", "classification"),
    "classification_tsv_no_lang": (lambda d: FIX / "bad_label.tsv", "classification TSV", "classification"),
    "classification_jsonl": (lambda d: FIX / "classify.jsonl", "classification JSONL", "classification"),
    "mnli_jsonl": (lambda d: FIX / "multinli_train.jsonl", "MultiNLI JSONL", "xnli"),
}


@pytest.mark.parametrize("name", sorted(KNOWN_FILES))
@pytest.mark.parametrize("task", ["xnli", "pawsx", "classification", "ner", "qa"])
def test_a_file_of_another_tasks_format_is_named_for_what_it_is(name, task, tmp_path):
    build, words, owner = KNOWN_FILES[name]
    path = build(tmp_path)
    before = path.read_bytes()
    spec = T.get_task(task)
    if T.sniff_formats(path) & set(spec.formats):
        T.read_file(spec, str(path))  # a format this task reads: read as before
        return
    with pytest.raises(UserError) as err:
        T.read_file(spec, str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: this looks like a {words}"), message
    assert f"(for task {owner}); task={task} reads " in message, message
    for key in spec.formats:
        assert T.FILE_FORMATS[key][0] in message
    assert path.read_bytes() == before


def test_sniffing_keeps_each_readers_own_files_and_errors(tmp_path):
    # Each fixture is recognised as the format it is, and its task reads it.
    for name, (build, _, owner) in KNOWN_FILES.items():
        path = build(tmp_path)
        found = T.sniff_formats(path)
        assert any(T.FILE_FORMATS[k][1] == owner for k in found), (name, found)
        assert T.read_file(T.get_task(owner), str(path)), name
    # Unknown or broken content is left to the reader's own message.
    for content in ("", "\n\n", "hello world\n", "premise\thypothesis\tlabel\n", "\x00\x01\x02"):
        (tmp_path / "x.txt").write_text(content)
        assert T.sniff_formats(tmp_path / "x.txt") == set(), content
    assert T.sniff_formats(tmp_path / "missing.txt") == set()


def test_a_directory_gives_a_language_only_when_its_name_is_a_language_code():
    from xlm_jax.tasks.base import _dir_lang

    for name, lang in [("de", "de"), ("pt_BR", "pt_BR"), ("zh-CN", "zh-CN"), ("sr-Latn", "sr-Latn"),
                       ("nu_neg", None), ("my_data", None), ("tr_old", None), ("tmp", None), ("data", None)]:
        assert _dir_lang(Path("/x") / name / "train.jsonl") == lang, name
