"""Files that are not what they claim (issue #10, kind 4): every reader of a user's file refuses a binary, non-UTF-8,
malformed, truncated or damaged file with one clear error naming it (and the line, when there is one), before
any work starts, and changes nothing on disk. The policy for text is in `xlm_jax.core.textfiles`."""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint

import xlm_jax
from xlm_jax.training import checkpoint as ckpt_lib
from xlm_jax import tasks as T
from xlm_jax.data.corpus import PreprocessedCorpus
from xlm_jax.core.errors import UserError
from xlm_jax.core.textfiles import check_corpus_file, read_text

ROOT = Path(__file__).parent.parent
GERMAN = ["Die Datei wurde gespeichert.", "Größere Fenster schließen.", "Ärger über die Übersetzung.",
          "Das Dokument ist geöffnet.", "Öffnen Sie die Seite.", "Schöne Grüße aus Köln."]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root (or of root itself): what a command must leave unchanged."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def exit_2(main, argv, capsys) -> str:
    """Runs a command's main in-process; asserts exit code 2 and one `error:` line; returns that line."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2, err
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def binary_bytes() -> bytes:
    ls = Path("/bin/ls")
    return ls.read_bytes()[:20000] if ls.is_file() else b"\x7fELF\x02\x01\x01\x00" + random.Random(0).randbytes(20000)


# What a "text" file may really hold; each one is mostly not UTF-8 text.
NOT_TEXT = {
    "elf_binary": (binary_bytes, "not a text file (a NUL byte"),
    "random_bytes": (lambda: random.Random(1).randbytes(20000), "not a text file"),
    "utf16": (lambda: "\n".join(GERMAN * 5).encode("utf-16"), "UTF-16"),
    "latin1": (lambda: ("\n".join(GERMAN * 5) + "\n").encode("latin-1"), "are not valid UTF-8 text"),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    tok = tiny_setup.make_tokenizer(d)
    ckpt = tiny_setup.make_checkpoint(d)
    return {"dir": d, "tok": tok, "ckpt": ckpt}


def _corpus(root: Path, bad: bytes | None = None) -> Path:
    (root / "mono").mkdir(parents=True)
    for lang in ("de", "en"):
        (root / "mono" / f"{lang}.txt").write_text("\n".join(" ".join(random.Random(i).choices(
            tiny_setup.WORDS[lang], k=6)) for i in range(80)) + "\n")
    if bad is not None:
        (root / "mono" / "xx.txt").write_bytes(bad)
    return root


# ----------------------------------------------------------------------------------------------- raw corpora


@pytest.mark.parametrize("kind", sorted(NOT_TEXT))
def test_corpus_file_that_is_not_text_is_refused_before_tokenizer_training(kind, tmp_path, capsys):
    from xlm_jax.tokenizer import main

    make, words = NOT_TEXT[kind]
    corpus = _corpus(tmp_path / "corpus", make())
    before = snapshot(corpus)
    line = exit_2(main, ["train", "--input", corpus, "--vocab-size", 60, "--output", tmp_path / "t.model", "--quiet"],
                  capsys)
    assert "xx.txt" in line and words in line
    assert not (tmp_path / "t.model").exists() and snapshot(corpus) == before


@pytest.mark.parametrize("kind", sorted(NOT_TEXT))
def test_corpus_file_that_is_not_text_is_refused_before_preprocessing(kind, base, tmp_path, capsys):
    from xlm_jax.preprocess import main

    make, words = NOT_TEXT[kind]
    corpus = _corpus(tmp_path / "corpus", make())
    before = snapshot(corpus)
    line = exit_2(main, [corpus, "--tokenizer", base["tok"], "--out", tmp_path / "out", "--workers", 1], capsys)
    assert "xx.txt" in line and words in line
    assert not (tmp_path / "out").exists() and snapshot(corpus) == before
    assert [p.name for p in tmp_path.iterdir()] == ["corpus"]  # no temporary directory left behind


def test_share_of_bad_lines_is_named_and_a_few_bad_lines_are_kept(base, tmp_path, capsys):
    from xlm_jax.data.preprocess import preprocess_corpus
    from xlm_jax.data.tokenizer import train_tokenizer

    mostly = tmp_path / "mostly.txt"
    mostly.write_bytes(b"ok line\n" + "\n".join(GERMAN[1:4]).encode("latin-1") + b"\n")
    with pytest.raises(UserError, match=r"mostly\.txt: not a text file \(3 of its 4 lines \(75 %\)"):
        check_corpus_file(mostly)
    # A few broken lines in web text: decoded as U+FFFD, counted, recorded; the file is used.
    corpus = _corpus(tmp_path / "corpus")
    de = corpus / "mono" / "de.txt"
    de.write_bytes(de.read_bytes() + "Grüße\n".encode("latin-1"))
    assert check_corpus_file(de).bad == 1
    train_tokenizer([str(corpus)], 50, str(tmp_path / "t.model"))
    manifest = preprocess_corpus(corpus, base["tok"], tmp_path / "out", workers=1)
    assert manifest["invalid_utf8_lines"] == {str(de): 1}


def test_read_text_names_line_and_column(tmp_path):
    with pytest.raises(UserError, match=r"is a directory, not a file"):
        read_text(tmp_path)
    with pytest.raises(UserError, match=r"nope\.txt: no such file"):
        read_text(tmp_path / "nope.txt")
    bad = _data_file(tmp_path, "a.txt", "line one\nzwei ".encode() + "Größe\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"a\.txt:2: not valid UTF-8 \(byte 0xf6 at column 8\)"):
        read_text(bad)
    late_nul = _data_file(tmp_path, "b.txt", b"x" * 10000 + b"\n\0\n")
    with pytest.raises(UserError, match=r"b\.txt: not a text file \(a NUL byte at offset 10001"):
        read_text(late_nul)


# ------------------------------------------------------------------------------------------ task data files

XNLI_HEADER = "\t".join(T.XNLI_COLUMNS)


def _xnli_row(lang="en", label="neutral", s1="A cat sat.", s2="A cat is happy.", extra=()) -> str:
    cells = {c: "x" for c in T.XNLI_COLUMNS} | {"language": lang, "gold_label": label, "sentence1": s1,
                                                "sentence2": s2}
    return "\t".join([cells[c] for c in T.XNLI_COLUMNS] + list(extra))


# (task, file name, content, expected message pattern)
BAD_DATA = {
    "xnli_latin1": ("xnli", "xnli.dev.tsv", (XNLI_HEADER + "\n" + _xnli_row() + "\n" + _xnli_row(s1="Größe")
                                             + "\n").encode("latin-1"), r"xnli\.dev\.tsv:3: not valid UTF-8"),
    "xnli_extra_field": ("xnli", "xnli.dev.tsv", XNLI_HEADER + "\n" + _xnli_row(extra=["oops"]) + "\n",
                         r"xnli\.dev\.tsv:2: 20 tab-separated fields, expected 19"),
    "xnli_missing_field": ("xnli", "xnli.dev.tsv", XNLI_HEADER + "\n" + _xnli_row() + "\n" +
                           _xnli_row().rsplit("\t", 1)[0] + "\n", r"xnli\.dev\.tsv:3: 18 tab-separated fields, expected 19"),
    "xnli_binary": ("xnli", "xnli.dev.tsv", binary_bytes(), r"xnli\.dev\.tsv: not a text file"),
    "xnli_empty": ("xnli", "xnli.dev.tsv", b"", r"xnli\.dev\.tsv:1: the first line is empty"),
    "xnli_header_only": ("xnli", "xnli.dev.tsv", XNLI_HEADER + "\n", r"xnli\.dev\.tsv: no examples"),
    "mnli_bad_json": ("xnli", "train.jsonl", '{"gold_label": "neutral", "sentence1": "a", "sentence2": "b"}\n{"gold_',
                      r"train\.jsonl:2: not valid JSON"),
    "mnli_missing_key": ("xnli", "train.jsonl", '{"gold_label": "neutral", "sentence1": "a"}\n',
                         r"train\.jsonl:1: missing field\(s\) sentence2"),
    "mnli_no_label": ("xnli", "train.jsonl", '{"sentence1": "a", "sentence2": "b"}\n',
                      r"train\.jsonl:1: missing field\(s\) gold_label"),
    "mnli_wrong_type": ("xnli", "train.jsonl", '{"gold_label": "neutral", "sentence1": null, "sentence2": "b"}\n',
                        r"train\.jsonl:1: field 'sentence1' is null, expected a string"),
    "mnli_utf16": ("xnli", "train.jsonl", '{"gold_label": "neutral", "sentence1": "a", "sentence2": "b"}\n'
                   .encode("utf-16"), r"train\.jsonl: not a text file .*UTF-16"),
    "pawsx_extra_field": ("pawsx", "de/dev_2k.tsv", "id\tsentence1\tsentence2\tlabel\n1\ta\tb\t1\n2\ta\tb\tc\t0\n",
                          r"dev_2k\.tsv:3: 5 tab-separated fields, expected 4"),
    "pawsx_missing_field": ("pawsx", "de/dev_2k.tsv", "id\tsentence1\tsentence2\tlabel\n1\ta\t1\n",
                            r"dev_2k\.tsv:2: 3 tab-separated fields, expected 4"),
    "pawsx_latin1": ("pawsx", "de/dev_2k.tsv", "id\tsentence1\tsentence2\tlabel\n1\tGröße\tb\t1\n".encode("latin-1"),
                     r"dev_2k\.tsv:2: not valid UTF-8 \(byte 0xf6 at column 5\)"),
    "tsv_extra_field": ("classification", "train.tsv", "text\tlabel\nOpen the file\tfile\nPrint\tit\tprint\n",
                        r"train\.tsv:3: 3 tab-separated fields, expected 2"),
    "tsv_missing_field": ("classification", "train.tsv", "text\tlabel\nOpen the file\tfile\nPrint it\n",
                          r"train\.tsv:3: 1 tab-separated fields, expected 2"),
    "tsv_latin1": ("classification", "train.tsv", "text\tlabel\nOpen\tfile\nÖffnen\tfile\n".encode("latin-1"),
                   r"train\.tsv:3: not valid UTF-8"),
    "tsv_crlf_extra": ("classification", "train.tsv", "text\tlabel\r\nOpen\tfile\r\nPrint\tit\tprint\r\n",
                       r"train\.tsv:3: 3 tab-separated fields, expected 2"),
    "csv_extra_field": ("classification", "train.csv", 'text,label\n"Open, then save",file\nOpen, then save,file\n',
                        r"train\.csv:3: 3 comma-separated fields, expected 2"),
    "tsv_header_only": ("classification", "train.tsv", "text\tlabel\n", r"train\.tsv: no examples"),
    "tsv_empty": ("classification", "train.tsv", b"", r"train\.tsv:1: the header must name columns"),
    "jsonl_label_list": ("classification", "train.jsonl", '{"text": "a", "label": ["x"]}\n',
                         r"train\.jsonl:1: field 'label' is \[\"x\"\], expected a string or an integer"),
    "jsonl_text_number": ("classification", "train.jsonl", '{"text": 3, "label": "x"}\n',
                          r"train\.jsonl:1: field 'text' is 3, expected a string"),
    "jsonl_not_object": ("classification", "train.jsonl", '["a", "x"]\n', r"train\.jsonl:1: expected a JSON object"),
    "jsonl_latin1": ("classification", "train.jsonl", '{"text": "ok", "label": "x"}\n{"text": "Grüße", "label": "x"}\n'
                     .encode("latin-1"), r"train\.jsonl:2: not valid UTF-8"),
    "jsonl_empty": ("classification", "train.jsonl", "\n\n", r"train\.jsonl: no examples"),
    "conll_extra_column": ("ner", "train.txt", "Paris B-LOC\nis O\nNew York B-LOC\n",
                           r"train\.txt:3: 3 space-separated fields, expected 2 like line 1"),
    "conll_tab_columns": ("ner", "train.txt", "en:Paris\tB-LOC\nen:is\tO\tO\n",
                          r"train\.txt:2: 3 tab-separated fields, expected 2 like line 1"),
    "conll_one_column": ("ner", "train.txt", "Paris B-LOC\nnice\n", r"train\.txt:2: malformed line"),
    "conll_latin1": ("ner", "train.txt", "Paris B-LOC\n\nKöln B-LOC\n".encode("latin-1"), r"train\.txt:3: not valid UTF-8"),
    "conll_binary": ("ner", "train.txt", binary_bytes(), r"train\.txt: not a text file"),
    "conll_empty": ("ner", "train.txt", b"", r"train\.txt: no examples"),
}


def _data_file(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_task_file_names_file_and_line(case, tmp_path):
    task, name, content, pattern = BAD_DATA[case]
    path = _data_file(tmp_path, name, content)
    before = snapshot(path)
    with pytest.raises(UserError, match=pattern):
        T.read_file(T.get_task(task), str(path))
    assert snapshot(path) == before


def test_good_files_still_read(tmp_path):
    """The stricter readers keep what is right: CRLF endings, a UTF-8 BOM, quoted CSV, CoNLL-2003's 4 columns."""
    tsv = _data_file(tmp_path, "a.tsv", "\ufefftext\tlabel\r\nÖffnen\tfile\r\n")
    assert [(e.text_a, e.label) for e in T.read_file(T.get_task("classification"), str(tsv))] == [("Öffnen", "file")]
    csv_file = _data_file(tmp_path, "a.csv", 'text,label\n"Open, then save",file\n')
    assert T.read_file(T.get_task("classification"), str(csv_file))[0].text_a == "Open, then save"
    conll = _data_file(tmp_path, "c.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert T.read_file(T.get_task("ner"), str(conll))[0].labels == ("B-ORG", "O")
    nbsp = _data_file(tmp_path, "w.txt", "en:10\u00a0000\tO\nen:Paris\tB-LOC\n")  # a no-break space inside a token
    assert T.read_file(T.get_task("ner"), str(nbsp))[0].words == ("10\u00a0000", "Paris")


@pytest.mark.parametrize("case", ["tsv_extra_field", "jsonl_latin1", "conll_extra_column", "xnli_binary"])
def test_finetune_cli_refuses_bad_train_file_before_work(case, base, tmp_path, capsys):
    from xlm_jax.finetune import main

    task, name, content, pattern = BAD_DATA[case]
    path = _data_file(tmp_path / "data", name, content)
    before = snapshot(tmp_path / "data")
    line = exit_2(main, [f"task={task}", f"init={base['ckpt']}", f"tokenizer={base['tok']}", f"out={tmp_path / 'out'}",
                         f"train=[{path}]"], capsys)
    assert re.search(pattern, line), line
    assert not (tmp_path / "out").exists() and snapshot(tmp_path / "data") == before


@pytest.mark.parametrize("case", ["tsv_missing_field", "xnli_latin1", "conll_tab_columns", "mnli_wrong_type"])
def test_evaluate_task_cli_refuses_bad_data_before_loading_the_model(case, base, tmp_path, capsys):
    from xlm_jax.evaluate import TASK_FILE, TaskInfo, main

    task, name, content, pattern = BAD_DATA[case]
    run = tmp_path / "run"
    shutil.copytree(base["ckpt"], run / "best")  # a fine-tuning run's layout; the data is refused before its use
    (run / "best" / TASK_FILE).write_text(TaskInfo(task, T.get_task(task).labels or ("O", "B-LOC"), 32).to_json())
    path = _data_file(tmp_path / "data", name, content)
    line = exit_2(main, ["task", "--checkpoint", run, "--tokenizer", base["tok"], "--data", path], capsys)
    assert re.search(pattern, line), line


@pytest.mark.parametrize("bad", ["latin1", "binary", "utf16"])
def test_retrieval_file_that_is_not_utf8(bad, base, tmp_path, capsys):
    from xlm_jax.evaluate import main

    good = _data_file(tmp_path, "en.txt", "\n".join(GERMAN) + "\n")
    content = {"latin1": ("\n".join(GERMAN) + "\n").encode("latin-1"), "binary": binary_bytes(),
               "utf16": ("\n".join(GERMAN) + "\n").encode("utf-16")}[bad]
    src = _data_file(tmp_path, "de.txt", content)
    line = exit_2(main, ["retrieval", "--checkpoint", base["ckpt"], "--tokenizer", base["tok"], "--src-file", src,
                         "--tgt-file", good], capsys)
    assert "de.txt" in line
    assert {"latin1": "de.txt:2: not valid UTF-8", "binary": "not a text file", "utf16": "UTF-16"}[bad] in line


def test_damaged_task_json_of_a_finetuned_checkpoint(base, tmp_path):
    from xlm_jax.workflows.loading import TaskInfo

    for content in (b"\xff\xfe", b"{", b'{"task": "xnli"}', b"[1]"):
        path = _data_file(tmp_path, "task.json", content)
        with pytest.raises(UserError, match=r"task\.json(:1)?: (damaged|not valid UTF-8)"):
            TaskInfo.read(path)


# -------------------------------------------------------------------------------------------- YAML configs

BAD_YAML = {
    "latin1": ("train:\n  steps: 3 # Größe\n".encode("latin-1"), r"cfg\.yaml:2: not valid UTF-8"),
    "binary": (binary_bytes(), r"cfg\.yaml: not a text file"),
    "syntax": (b"train: [steps: 3\n", r"cfg\.yaml:\d+:\d+: not valid YAML"),
    "list": (b"- train\n- steps\n", r"cfg\.yaml: the top level must be a mapping"),
    "scalar": (b"hello\n", r"cfg\.yaml: the top level must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_YAML))
def test_bad_yaml_config(case, tmp_path, capsys):
    from xlm_jax.finetune import main as finetune_main
    from xlm_jax.train import main as train_main
    from xlm_jax.pretrain.config import load_config

    content, pattern = BAD_YAML[case]
    cfg = _data_file(tmp_path, "cfg.yaml", content)
    with pytest.raises(UserError, match=pattern):
        load_config(cfg)
    for main in (train_main, finetune_main):
        line = exit_2(main, [cfg, f"run_dir={tmp_path / 'run'}"] if main is train_main else [cfg], capsys)
        assert re.search(pattern, line), line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------- tokenizer models


@pytest.mark.parametrize("kind", ["random", "empty", "text", "truncated", "directory", "vocab_file"])
def test_corrupt_tokenizer_model(kind, base, tmp_path, capsys):
    from xlm_jax.preprocess import main
    from xlm_jax.data.tokenizer import Tokenizer

    path = tmp_path / "bad.model"
    if kind == "random":
        path.write_bytes(random.Random(0).randbytes(3000))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "truncated":
        path.write_bytes(base["tok"].read_bytes()[:3000])
    elif kind == "directory":
        path.mkdir()
    else:
        path = base["tok"].with_suffix(".vocab")
    words = {"empty": "is empty", "directory": "is a directory"}.get(kind, "is not a SentencePiece model")
    with pytest.raises(UserError, match=words):
        Tokenizer.load(path)
    corpus = _corpus(tmp_path / "corpus")
    line = exit_2(main, [corpus, "--tokenizer", path, "--out", tmp_path / "out", "--workers", 1], capsys)
    assert path.name in line and words in line and not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------- preprocessed directories


@pytest.fixture(scope="module")
def preprocessed(base, tmp_path_factory):
    from xlm_jax.data.preprocess import preprocess_corpus

    root = tmp_path_factory.mktemp("pre")
    corpus = _corpus(root / "corpus")
    (corpus / "para").mkdir()
    (corpus / "para" / "de-en.de").write_text("\n".join(GERMAN) + "\n")
    (corpus / "para" / "de-en.en").write_text("\n".join(f"line {i}" for i in range(len(GERMAN))) + "\n")
    preprocess_corpus(corpus, base["tok"], root / "out", workers=1, valid_fraction=0.2)
    return root / "out"


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    elif how == "garbage":
        path.write_bytes(random.Random(2).randbytes(max(64, path.stat().st_size)))
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "shorter_array":  # a valid .npy of another length
        np.save(path, np.load(path)[:-1])
    else:
        raise ValueError(how)


BAD_PREPROCESSED = {
    "ids_deleted": ("train/mono/de.ids.npy", "delete", r"de\.ids\.npy: missing"),
    "offsets_deleted": ("valid/mono/en.offsets.npy", "delete", r"en\.offsets\.npy: missing"),
    "ids_truncated": ("train/mono/de.ids.npy", "truncate", r"de\.ids\.npy: unreadable"),
    "para_truncated": ("train/para/de-en.en.ids.npy", "truncate", r"de-en\.en\.ids\.npy: unreadable"),
    "offsets_garbage": ("train/mono/en.offsets.npy", "garbage", r"en\.offsets\.npy: unreadable"),
    "ids_empty": ("train/mono/en.ids.npy", "empty", r"en\.ids\.npy: unreadable"),
    "ids_shorter": ("train/mono/de.ids.npy", "shorter_array", r"de\.ids\.npy: \d+ ids, but its offsets end at"),
    "offsets_shorter": ("train/mono/de.offsets.npy", "shorter_array", r"de\.offsets\.npy: \d+ sentences, but the "
                        r"manifest says"),
    "manifest_deleted": ("manifest.json", "delete", r"manifest\.json: not found"),
    "manifest_truncated": ("manifest.json", "truncate", r"manifest\.json: not valid JSON"),
    "manifest_garbage": ("manifest.json", "garbage", r"manifest\.json: not valid JSON"),
    "manifest_empty": ("manifest.json", "empty", r"manifest\.json: not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_PREPROCESSED))
def test_damaged_preprocessed_directory_is_refused_when_opened(case, preprocessed, tmp_path):
    rel, how, pattern = BAD_PREPROCESSED[case]
    d = tmp_path / "pre"
    shutil.copytree(preprocessed, d)
    _damage(d / rel, how)
    before = snapshot(d)
    with pytest.raises(UserError, match=pattern) as err:
        PreprocessedCorpus(d)
    assert "preprocess" in str(err.value)  # what to do: re-run preprocess
    assert snapshot(d) == before


@pytest.mark.parametrize("manifest", [[1, 2], {"format": 1, "langs": ["de"]},
                                      {"format": 1, "langs": ["de"], "tokenizer": {}, "splits": {"train": {"mono": {"de": {}}}}}])
def test_malformed_manifest(manifest, preprocessed, tmp_path):
    d = tmp_path / "pre"
    shutil.copytree(preprocessed, d)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"manifest\.json: .*(not an object|missing or malformed|malformed)"):
        PreprocessedCorpus(d)


@pytest.mark.parametrize("case", ["ids_deleted", "manifest_garbage"])
def test_train_refuses_damaged_data_before_training(case, preprocessed, tmp_path, capsys):
    from xlm_jax.train import main

    rel, how, pattern = BAD_PREPROCESSED[case]
    d = tmp_path / "pre"
    shutil.copytree(preprocessed, d)
    _damage(d / rel, how)
    line = exit_2(main, [f"data.dir={d}", f"run_dir={tmp_path / 'run'}", "train.steps=2", "optimizer.warmup_steps=1"], capsys)
    assert re.search(pattern, line) and "re-run" in line, line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_preprocess_rebuilds_a_damaged_output_it_calls_up_to_date(base, preprocessed, tmp_path):
    from xlm_jax.data.preprocess import preprocess_corpus

    corpus = preprocessed.parent / "corpus"
    out = tmp_path / "out"
    preprocess_corpus(corpus, base["tok"], out, workers=1, valid_fraction=0.2)
    (out / "train" / "mono" / "de.ids.npy").unlink()
    messages = []
    preprocess_corpus(corpus, base["tok"], out, workers=1, valid_fraction=0.2, log=messages.append)
    assert any("rebuilding" in m and "de.ids.npy" in m for m in messages), messages
    assert len(PreprocessedCorpus(out).mono("train", "de")) > 0


# ------------------------------------------------------------------------------------------------ checkpoints


def _array_files(item_dir: Path) -> list[Path]:
    """The array data files of an orbax item. Orbax also leaves data files that its index does not reference
    (harmless: nothing reads them), so the tests damage all of them, not one chosen by size."""
    files = sorted(p for p in item_dir.glob("ocdbt.process_*/d/*") if p.is_file())
    assert files, item_dir
    return files


def _damage_checkpoint(step_dir: Path, case: str) -> None:
    params = step_dir / "params"
    if case == "array_truncated":
        for f in _array_files(params):
            _damage(f, "truncate")
    elif case == "array_overwritten":  # same size, random bytes: only decoding finds it
        for f in _array_files(params):
            f.write_bytes(random.Random(f.name).randbytes(f.stat().st_size))
    elif case == "array_deleted":
        for f in _array_files(params):
            f.unlink()
    elif case == "index_truncated":
        _damage(params / "manifest.ocdbt", "truncate")
    elif case == "tree_metadata_garbage":
        _damage(params / "_METADATA", "garbage")
    elif case == "model_config_deleted":
        (step_dir / "model_config" / "metadata").unlink()
    elif case == "model_config_not_a_config":
        (step_dir / "model_config" / "metadata").write_text('{"hidden_sise": 32}')
    elif case == "params_replaced_by_text":
        shutil.rmtree(params)
        params.mkdir()
        (params / "notes.txt").write_text("hello\n")
    else:
        raise ValueError(case)


DAMAGED_CKPT = {
    "array_truncated": r"array params/\S+ cannot be read",
    "array_overwritten": r"array params/\S+ cannot be read",
    "array_deleted": r"array params/\S+ cannot be read",
    "index_truncated": r"the index of params/ cannot be read",
    "tree_metadata_garbage": r"params/_METADATA is not valid JSON",
    "model_config_deleted": r"model_config/metadata is missing",
    "model_config_not_a_config": r"model_config/metadata is not a model configuration",
    "params_replaced_by_text": r"params/_METADATA is missing",
}


@pytest.mark.parametrize("case", sorted(DAMAGED_CKPT))
def test_damaged_checkpoint_api(case, base, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base["ckpt"], ckpt)
    _damage_checkpoint(ckpt / "0", case)
    before = snapshot(ckpt)
    for load in (xlm_jax.load, ckpt_lib.restore_params):
        with pytest.raises(UserError, match=rf"checkpoint {ckpt / '0'} is damaged: {DAMAGED_CKPT[case]}"):
            load(ckpt)
    assert snapshot(ckpt) == before  # nothing deleted or repaired behind the user's back


@pytest.mark.parametrize("case", ["empty_dir", "text_files", "hf_like_without_weights"])
def test_directory_that_holds_no_checkpoint(case, tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    if case == "text_files":
        (d / "notes.txt").write_text("hello\n")
        (d / "0").mkdir()
    elif case == "hf_like_without_weights":
        (d / "config.json").write_text(json.dumps({"model_type": "xlm-roberta"}))
    with pytest.raises(UserError, match=r"(not a recognised checkpoint|no weights|lacks)"):
        xlm_jax.load(d)
    with pytest.raises(UserError, match=r"no complete xlm_jax checkpoint"):
        ckpt_lib.restore_params(d)


def test_damaged_checkpoint_cli_prints_one_line(base, tmp_path):
    """The real exit path: orbax's asynchronous reads must not print stray tracebacks after the error."""
    ckpt = tmp_path / "ckpt"
    shutil.copytree(base["ckpt"], ckpt)
    _damage_checkpoint(ckpt / "0", "array_truncated")
    result = subprocess.run([sys.executable, "-m", "xlm_jax.convert", str(ckpt), str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint {ckpt / '0'} is damaged"), result.stderr
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 2-step pretraining run with checkpoints at steps 1 and 2 (the cheapest real run directory)."""
    from xlm_jax.data.__main__ import write_synthetic
    from xlm_jax.train import train
    from xlm_jax.pretrain.config import load_config

    root = tmp_path_factory.mktemp("run")
    write_synthetic(root / "data", n_langs=2, n_tokens=2000, n_pairs=0, vocab_size=100, seed=0)
    args = [f"data.dir={root / 'data'}", f"run_dir={root / 'run'}", "train.steps=2", "train.batch_size=2",
            "train.seq_len=16", "train.eval_every=0", "train.progress=false", "checkpoint.every=1",
            "checkpoint.keep_best=false", "data.objectives={mlm: 1.0}", "optimizer.warmup_steps=1", "model.hidden_size=16", "model.num_layers=1",
            "model.num_heads=2", "model.intermediate_size=32", "model.max_positions=32"]
    assert train(load_config(None, args)) == 0
    assert (root / "run" / "checkpoints" / "1").is_dir() and (root / "run" / "checkpoints" / "2").is_dir()
    return root / "run", args


@pytest.mark.parametrize("case,item", [("array_truncated", "params"), ("array_overwritten", "opt_state"),
                                       ("model_config_deleted", None), ("train_meta", "train_meta")])
def test_resume_from_a_damaged_checkpoint_names_the_previous_one(case, item, trained_run, tmp_path, capsys):
    from xlm_jax.train import main

    run0, args = trained_run
    run = tmp_path / "run"
    shutil.copytree(run0, run)
    step = run / "checkpoints" / "2"
    if item == "opt_state":
        for f in _array_files(step / "opt_state"):
            f.write_bytes(random.Random(f.name).randbytes(f.stat().st_size))
    elif item == "train_meta":
        _damage(step / "train_meta" / "metadata", "truncate")
    else:
        _damage_checkpoint(step, case)
    before = snapshot(run)
    line = exit_2(main, [a.replace(str(run0), str(run)) for a in args] + ["train.steps=3"], capsys)
    assert f"checkpoint {step} is damaged" in line
    assert f"step 1, {run / 'checkpoints' / '1'}" in line and f"delete {step}" in line and "run_dir=" in line
    assert snapshot(run) == before  # the damaged step is not deleted for the user


def test_resume_when_the_only_checkpoint_is_damaged(trained_run, tmp_path, capsys):
    from xlm_jax.train import main

    run0, args = trained_run
    run = tmp_path / "run"
    shutil.copytree(run0, run)
    shutil.rmtree(run / "checkpoints" / "2")
    _damage_checkpoint(run / "checkpoints" / "1", "tree_metadata_garbage")
    line = exit_2(main, [a.replace(str(run0), str(run)) for a in args], capsys)
    assert "only checkpoint" in line and f"delete {run / 'checkpoints' / '1'} to train from step 0" in line


# ---------------------------------------------------------------------------------------- conversion inputs


@pytest.fixture(scope="module")
def hf_dir(base, tmp_path_factory):
    from xlm_jax.workflows.convert import export_hf

    params, cfg = ckpt_lib.restore_params(base["ckpt"])
    out = tmp_path_factory.mktemp("hf") / "hf"
    export_hf(params, cfg, out)
    return out


BAD_HF = {
    "config_latin1": (lambda d: (d / "config.json").write_bytes(b'{"model_type": "xlm-roberta", "x": "\xe9"}'),
                      r"config\.json:1: not valid UTF-8"),
    "config_binary": (lambda d: (d / "config.json").write_bytes(binary_bytes()), r"config\.json: not a text file"),
    "config_list": (lambda d: (d / "config.json").write_text("[1, 2]"), r"config\.json: a JSON list, expected an object"),
    "config_missing_key": (lambda d: (d / "config.json").write_text('{"model_type": "xlm-roberta"}'),
                           r"lacks the key 'vocab_size'"),
    "weights_truncated": (lambda d: _damage(d / "model.safetensors", "truncate"), r"model\.safetensors: cannot read"),
    "weights_text": (lambda d: (d / "model.safetensors").write_text("hello"), r"model\.safetensors: cannot read"),
    "index_garbage": (lambda d: ((d / "model.safetensors").rename(d / "s.safetensors"),
                                 (d / "model.safetensors.index.json").write_bytes(b"\xff\xfe{")),
                      r"model\.safetensors\.index\.json:1: not valid UTF-8"),
    "index_not_a_map": (lambda d: ((d / "model.safetensors").rename(d / "s.safetensors"),
                                   (d / "model.safetensors.index.json").write_text('{"weight_map": [1]}')),
                        r"not a valid shard index"),
}


@pytest.mark.parametrize("case", sorted(BAD_HF))
def test_bad_hugging_face_directory(case, hf_dir, tmp_path):
    from xlm_jax.workflows.convert import load_any

    damage, pattern = BAD_HF[case]
    d = tmp_path / "hf"
    shutil.copytree(hf_dir, d)
    damage(d)
    before = snapshot(d)
    with pytest.raises(UserError, match=pattern):
        load_any(d)
    assert snapshot(d) == before


@pytest.mark.parametrize("content,pattern", [(b"", "the file is empty"), (b"hello world\n", "it is not a pickle"),
                                             (random.Random(3).randbytes(4000), "not a PyTorch checkpoint")])
def test_pickle_that_is_not_a_checkpoint(content, pattern, tmp_path, capsys):
    pytest.importorskip("torch")
    from xlm_jax.convert import main

    pt = _data_file(tmp_path, "model.pt", content)
    line = exit_2(main, [pt, tmp_path / "out"], capsys)
    assert "model.pt" in line and (pattern in line or "cannot read as a PyTorch checkpoint" in line), line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ gettext catalogs


def test_gettext_names_unreadable_catalogs(tmp_path, capsys):
    from xlm_jax.data.gettext import main

    for locale, content in (("de", binary_bytes()), ("fr", b"hello"), ("es", b"\xde\x12\x04\x95" + bytes(10))):
        (tmp_path / "loc" / locale / "LC_MESSAGES").mkdir(parents=True)
        (tmp_path / "loc" / locale / "LC_MESSAGES" / "x.mo").write_bytes(content)
    before = snapshot(tmp_path / "loc")
    line = exit_2(main, [tmp_path / "out", "--locale-dirs", tmp_path / "loc", "--workers", 1], capsys)
    assert "3 of them unreadable" in line and "x.mo" in line
    assert not (tmp_path / "out").exists() and snapshot(tmp_path / "loc") == before


MISLEADING = {  # checkpoint task, data file, what it is (issue 20 item 8: these said "not valid JSON", "label 'lang'")
    "squad_to_classification": ("classification", "squad.json",
                                '{"data": [{"title": "t", "paragraphs": [{"context": "a b", "qas": []}]}]}',
                                r"SQuAD-format JSON .*\(for task qa\)"),
    "tsv_to_ner": ("ner", "train.tsv", "text\tlabel\tlang\nOpen the file\tfile\ten\n",
                   r"classification TSV / CSV .*\(for task classification\)"),
    "conll_to_xnli": ("xnli", "de.txt", "Köln B-LOC\nist O\n", r"CoNLL / WikiANN .*\(for task ner\)"),
    "xnli_to_qa": ("qa", "dev.tsv", XNLI_HEADER + "\n" + _xnli_row() + "\n", r"XNLI 1\.0 TSV .*\(for task xnli\)"),
}


@pytest.mark.parametrize("case", sorted(MISLEADING))
def test_evaluate_task_names_what_a_file_of_another_task_is(case, base, tmp_path, capsys):
    from xlm_jax.evaluate import TASK_FILE, TaskInfo, main

    task, name, content, pattern = MISLEADING[case]
    run = tmp_path / "run"
    shutil.copytree(base["ckpt"], run / "best")
    (run / "best" / TASK_FILE).write_text(TaskInfo(task, T.get_task(task).labels or ("O", "B-LOC"), 32).to_json())
    path = _data_file(tmp_path / "data", name, content)
    before = snapshot(tmp_path / "data")
    line = exit_2(main, ["task", "--checkpoint", run, "--tokenizer", base["tok"], "--data", path], capsys)
    assert re.search(rf"{name}: this looks like a {pattern}; this checkpoint's task {task} reads ", line), line
    assert snapshot(tmp_path / "data") == before


def test_finetune_names_what_a_file_of_another_task_is(base, tmp_path, capsys):
    from xlm_jax.finetune import main

    task, name, content, pattern = MISLEADING["tsv_to_ner"]
    path = _data_file(tmp_path / "data", name, content)
    line = exit_2(main, [f"task={task}", f"init={base['ckpt']}", f"tokenizer={base['tok']}", f"out={tmp_path / 'out'}",
                         f"train=[{path}]"], capsys)
    assert re.search(rf"this looks like a {pattern}; task=ner reads CoNLL", line), line
    assert not (tmp_path / "out").exists()
