"""Sequence classification: XNLI, PAWS-X and generic single-sentence (or pair) classification.

Tasks:
    xnli            sentence pairs, 3 classes (entailment, neutral, contradiction) — XNLI 1.0 TSV, MultiNLI JSONL,
                    XNLI-MT 1.0 translate-train TSV (multinli.train.{lang}.tsv), tfds `xnli` / `xtreme_xnli`
    pawsx           sentence pairs, 2 classes ("0" not a paraphrase, "1" paraphrase) — PAWS-X TSV, tfds
                    `xtreme_pawsx`
    classification  single sentences (or pairs when `text_b` is present), labels from the config or the train
                    files — generic TSV / CSV with a header / JSONL with `text`, `label`, optional `text_b`, `lang`

Readers return `Example`s; `encode_sequence_examples` frames them (`xlm_jax.tasks.base.InputProtocol`); the head
is `XLMForSequenceClassification`, the loss the mean cross-entropy over real rows, the metric accuracy.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import Sequence


from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import check_max_len, encode_by_language, truncate_pair
from xlm_jax.tasks.base import (Encoded, InputProtocol, Task, _cells, _check_fields, _check_types, _dir_lang, _jsonl,
                                _open, _text, _tsv_rows, check_not_empty, packed, task_loss)

XNLI_LABELS = ("entailment", "neutral", "contradiction")
PAWSX_LABELS = ("0", "1")

# XNLI 1.0's `xnli.{dev,test}.tsv` header, in the released order.
XNLI_COLUMNS = (
    "language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
    "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre", "label1", "label2", "label3",
    "label4", "label5", "sentence1_tokenized", "sentence2_tokenized", "match",
)


@dataclasses.dataclass(frozen=True)
class Example:
    """A sentence (text_b None) or sentence-pair example; `label` is the label *string*."""

    text_a: str
    text_b: str | None
    label: str
    lang: str
    where: str = ""  # "file:line", for error messages



# ------------------------------------------------------------------------------------------------ files


def read_xnli_tsv(path: Path, default_lang: str | None = None) -> list[Example]:
    """XNLI 1.0 `xnli.dev.tsv` / `xnli.test.tsv` (header row; `language`, `gold_label`, `sentence1`,
    `sentence2` are the columns used). Quotes are not special in these files."""
    out = []
    with _open(path) as f:
        header = _cells(f.readline())
        need = ("gold_label", "sentence1", "sentence2")
        missing = [c for c in need if c not in header]
        if missing:
            raise UserError(f"{path}: header lacks column(s) {', '.join(missing)} (XNLI 1.0 header: {' '.join(XNLI_COLUMNS)})")
        col = {c: header.index(c) for c in header}
        for n, cells in _tsv_rows(f, path, header):
            lang = cells[col["language"]] if "language" in col else default_lang or "en"
            out.append(Example(cells[col["sentence1"]], cells[col["sentence2"]], cells[col["gold_label"]], lang, f"{path}:{n}"))
    return out


def read_mnli_jsonl(path: Path, default_lang: str | None = None) -> list[Example]:
    """MultiNLI 1.0 JSONL (`gold_label`, `sentence1`, `sentence2`); "-" (no annotator consensus) is skipped."""
    out = []
    for n, record in _jsonl(path):
        missing = [k for k in ("gold_label", "sentence1", "sentence2") if k not in record]
        if missing:
            raise UserError(f"{path}:{n}: missing field(s) {', '.join(missing)} (MultiNLI JSONL needs gold_label, "
                            "sentence1, sentence2)")
        label = record["gold_label"]
        if label == "-":
            continue
        _check_types(path, n, record, {"gold_label": (str,), "sentence1": (str,), "sentence2": (str,)})
        out.append(Example(record["sentence1"], record["sentence2"], label, default_lang or "en", f"{path}:{n}"))
    return out


# XNLI-MT 1.0 (`XNLI-MT-1.0/multinli/multinli.train.{lang}.tsv`): MultiNLI's training set machine-translated
# into the 15 XNLI languages (en is the original), header `premise hypo label`, label "contradictory" where
# XNLI says "contradiction".
XNLI_MT_COLUMNS = ("premise", "hypo", "label")
XNLI_MT_LABELS = {"entailment": "entailment", "neutral": "neutral", "contradictory": "contradiction",
                  "contradiction": "contradiction"}


def read_xnli_mt_tsv(path: Path, default_lang: str | None = None) -> list[Example]:
    """XNLI-MT 1.0 translate-train files (`multinli.train.{lang}.tsv`, header `premise hypo label`; quotes are
    literal). The language comes from the `LANG:` prefix, else the file name (`multinli.train.de.tsv` -> de),
    else "en". Labels map to XNLI's ("contradictory" -> contradiction); any other label is a UserError naming
    the file and line, as is a row whose field count differs from the header's."""
    match = re.fullmatch(r"multinli\.train\.([a-z]{2,3}(?:[-_][A-Za-z]+)?)\.tsv", path.name)
    lang = default_lang or (match.group(1) if match else None) or "en"
    out = []
    with _open(path) as f:
        header = _cells(f.readline())
        if tuple(header) != XNLI_MT_COLUMNS:
            raise UserError(f"{path}:1: expected the XNLI-MT header {' '.join(XNLI_MT_COLUMNS)!r}, got {header!r}")
        for n, cells in _tsv_rows(f, path, header):
            label = XNLI_MT_LABELS.get(cells[2].strip())
            if label is None:
                raise UserError(f"{path}:{n}: label {cells[2]!r} is not an XNLI-MT label "
                                f"(entailment, neutral, contradictory)")
            out.append(Example(cells[0], cells[1], label, lang, f"{path}:{n}"))
    return out


def read_pawsx_tsv(path: Path, default_lang: str | None = None) -> list[Example]:
    """PAWS-X `x-final/{lang}/{train,dev_2k,test_2k,translated_train}.tsv`: header `id sentence1 sentence2 label`.
    The language comes from the `LANG:` prefix or the directory name (PAWS-X's own layout)."""
    lang = default_lang or _dir_lang(path) or "en"
    out = []
    with _open(path) as f:
        header = _cells(f.readline())
        if header[:4] != ["id", "sentence1", "sentence2", "label"]:
            raise UserError(f"{path}:1: expected the PAWS-X header 'id\\tsentence1\\tsentence2\\tlabel', got {header!r}")
        for n, cells in _tsv_rows(f, path, header):
            out.append(Example(cells[1], cells[2], cells[3].strip(), lang, f"{path}:{n}"))
    return out



def read_classification(path: Path, default_lang: str | None = None) -> list[Example]:
    """Generic single-sentence data: JSONL (`text`, `label`, optional `text_b`, `lang`) or TSV/CSV with a header
    naming the same columns (`.tsv` tab-separated, quotes not special; `.csv` comma-separated with CSV quoting).
    Every row must have as many fields as the header."""
    lang0 = default_lang or "en"
    out = []
    if path.suffix == ".jsonl" or path.suffix == ".json":
        for n, r in _jsonl(path):
            if "text" not in r or "label" not in r:
                raise UserError(f"{path}:{n}: needs fields 'text' and 'label' (optional 'text_b', 'lang'), got {sorted(r)}")
            _check_types(path, n, r, {"text": (str,), "label": (str, int), "text_b": (str, type(None)),
                                      "lang": (str, type(None))})
            out.append(Example(r["text"], r.get("text_b"), str(r["label"]), r.get("lang") or lang0, f"{path}:{n}"))
        return out
    csv_file = path.suffix == ".csv"
    with _open(path) as f:
        reader = csv.reader(f, delimiter="," if csv_file else "\t", quoting=csv.QUOTE_MINIMAL if csv_file else csv.QUOTE_NONE)
        try:
            header = next(reader, None)
            if not header or "text" not in header or "label" not in header:
                raise UserError(f"{path}:1: the header must name columns 'text' and 'label' (optional 'text_b', 'lang'), got {header}")
            for cells in reader:
                n = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                _check_fields(path, n, len(cells), len(header), "comma" if csv_file else "tab")
                r = dict(zip(header, cells))
                out.append(Example(r["text"], r.get("text_b") or None, r["label"].strip(), r.get("lang") or lang0, f"{path}:{n}"))
        except csv.Error as err:
            raise UserError(f"{path}:{reader.line_num}: {err}") from None
    return out



READERS = {"xnli_tsv": read_xnli_tsv, "xnli_mt_tsv": read_xnli_mt_tsv, "mnli_jsonl": read_mnli_jsonl,
           "pawsx_tsv": read_pawsx_tsv, "classification": read_classification}


def detect_format(task_name: str, path: Path) -> str:
    """Which reader a file of task `task_name` (xnli, pawsx, classification) needs, from its first line."""
    if task_name == "classification":
        return "classification"
    if path.suffix in (".jsonl", ".json"):
        return "mnli_jsonl" if task_name == "xnli" else "classification"
    with _open(path) as f:
        first = _cells(f.readline())
    if first == [""]:
        raise UserError(f"{path}:1: the first line is empty; a {task_name} TSV file starts with its header")
    if task_name == "xnli" and "gold_label" in first:
        return "xnli_tsv"
    if task_name == "xnli" and tuple(first) == XNLI_MT_COLUMNS:
        return "xnli_mt_tsv"
    if first[:4] == ["id", "sentence1", "sentence2", "label"]:
        return "pawsx_tsv"
    if "text" in first and "label" in first:
        return "classification"
    raise UserError(
        f"{path}:1: cannot tell the format of this {task_name} file from its header {first[:6]!r}; expected XNLI 1.0 "
        "TSV (language gold_label … sentence1 sentence2 …), XNLI-MT TSV (premise hypo label), MultiNLI JSONL, PAWS-X TSV (id sentence1 sentence2 label) "
        "or a TSV/JSONL with text, label columns"
    )


def reader(task_name: str):
    """-> read(path, lang, purpose) for `Task.read`: the format detected per file; UserError for a file with
    no example."""

    def read(path: Path, lang: str | None = None, purpose: str = "training") -> list[Example]:
        return check_not_empty(READERS[detect_format(task_name, path)](path, lang), path, task_name)

    return read


def check_labels(examples: Sequence[Example], labels: Sequence[str]) -> None:
    """UserError naming the file and line of the first example whose label is not in `labels`."""
    valid = set(labels)
    for ex in examples:
        if ex.label not in valid:
            raise UserError(f"{ex.where}: label {ex.label!r} is not in the label set {{{', '.join(labels)}}}")


# ------------------------------------------------------------------------------------------------ tfds


def tfds_xnli_examples(record: dict, split_langs: Sequence[str] | None = None,
                       label_names: Sequence[str] = XNLI_LABELS) -> list[Example]:
    """tfds `xnli` / `xtreme_xnli` record → one Example per language: `premise` is a Translation
    ({lang: text}), `hypothesis` a TranslationVariableLanguages ({language: [...], translation: [...]}),
    `label` a ClassLabel over (entailment, neutral, contradiction) (`xtreme_xnli` maps XNLI-MT's
    "contradictory" to contradiction when it builds)."""
    premise = {(_text(k)): _text(v) for k, v in record["premise"].items()}
    hyp = record["hypothesis"]
    label = label_names[int(record["label"])]
    out = []
    for lang, text in zip(hyp["language"], hyp["translation"]):
        lang = _text(lang)
        if lang in premise and (split_langs is None or lang in split_langs):
            out.append(Example(premise[lang], _text(text), label, lang, "tfds:xnli"))
    return out


def tfds_pawsx_example(record: dict, lang: str) -> Example:
    """tfds `xtreme_pawsx/{lang}`: sentence1, sentence2, label (ClassLabel different_meaning=0 / paraphrase=1,
    kept as PAWS-X's "0" / "1")."""
    return Example(_text(record["sentence1"]), _text(record["sentence2"]), str(int(record["label"])), lang, "tfds:xtreme_pawsx")


# --------------------------------------------------------------------------------------------- encoding


def encode_sequence_examples(examples: Sequence[Example], tokenizer, protocol: InputProtocol, labels: Sequence[str],
                             max_len: int) -> Encoded:
    """Rows framed by `protocol`, each at most max_len ids (longest-first truncation, counted in `truncated`).
    Raises UserError when max_len cannot hold the specials plus one piece of each sentence (tokenizer.min_max_len)."""
    pair = any(ex.text_b is not None for ex in examples)
    check_max_len(max_len, protocol.n_specials(pair), pair)
    label_ids = {x: i for i, x in enumerate(labels)}
    # Each text is split by the rules of its language where the tokenizer has them (XLM's Moses + BPE).
    texts_a = encode_by_language(tokenizer, [ex.text_a for ex in examples], [ex.lang for ex in examples])
    pair_idx = [i for i, ex in enumerate(examples) if ex.text_b is not None]
    texts_b = dict(zip(pair_idx, encode_by_language(tokenizer, [examples[i].text_b for i in pair_idx],
                                                    [examples[i].lang for i in pair_idx])))
    out = Encoded([], [], [], [], 0)
    for i, ex in enumerate(examples):
        b = texts_b[i].tolist() if i in texts_b else None
        a, b, cut = truncate_pair(texts_a[i].tolist(), b, max_len - protocol.n_specials(b is not None))
        out.truncated += cut
        out.ids.append(protocol.frame(a, b))
        out.labels.append(label_ids.get(ex.label, -1))
        out.langs.append(ex.lang)
        out.lang_ids.append(protocol.lang_id(ex.lang))
    return out



def encode(examples, tokenizer, protocol: InputProtocol, labels: Sequence[str], max_len: int, options: dict,
           train: bool = False) -> Encoded:
    """`Task.features`: `encode_sequence_examples`."""
    return encode_sequence_examples(examples, tokenizer, protocol, labels, max_len)


def predictions(examples, enc: Encoded, outputs: list, labels: Sequence[str], options: dict) -> list[int]:
    """`Task.predictions`: the predicted label index of every example (outputs: argmax per row)."""
    return [int(p) for p in outputs]


def accuracy_by_lang(examples, enc: Encoded, preds: Sequence[int], labels: Sequence[str]) -> dict:
    """{lang: {"score": accuracy, "n": examples}}; an example whose label is outside `labels` counts as wrong."""
    by_lang: dict[str, list[int]] = {}
    for i, lang in enumerate(enc.langs):
        by_lang.setdefault(lang, []).append(i)
    return {lang: {"n": len(rows), "score": sum(preds[r] == enc.labels[r] for r in rows) / len(rows)}
            for lang, rows in by_lang.items()}


# The FILE_FORMATS each classification task reads (`detect_format`): xnli a .jsonl only as MultiNLI's, pawsx and
# classification as text / label JSONL; only xnli recognises XNLI's headers.
FORMATS = {
    "xnli": ("xnli_tsv", "xnli_mt_tsv", "mnli_jsonl", "pawsx_tsv", "classification_tsv"),
    "pawsx": ("pawsx_tsv", "classification_tsv", "classification_jsonl"),
    "classification": ("classification_tsv", "classification_jsonl"),
}


def make_task(name: str, pair: bool, labels: tuple[str, ...]) -> Task:
    return Task(name, "sequence", pair, labels, "accuracy", read=reader(name), formats=FORMATS[name],
                loss=lambda model: task_loss(model, False), check_labels=check_labels, features=encode, packed_batch=packed(False),
                token_level=False, predictions=predictions, score=accuracy_by_lang,
                text_method=("predict(texts)", "one label per text"))


XNLI = make_task("xnli", True, XNLI_LABELS)
PAWSX = make_task("pawsx", True, PAWSX_LABELS)
CLASSIFICATION = make_task("classification", False, ())
