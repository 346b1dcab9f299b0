"""Fine-tuning tasks: readers for the released file formats, label sets, and model inputs.

Tasks (`TASKS`):
    xnli            sentence pairs, 3 classes (entailment, neutral, contradiction) — XNLI 1.0 TSV, MultiNLI JSONL,
                    XNLI-MT 1.0 translate-train TSV (multinli.train.{lang}.tsv)
    pawsx           sentence pairs, 2 classes ("0" not a paraphrase, "1" paraphrase) — PAWS-X TSV
    classification  single sentences (or pairs when `text_b` is present), labels from the config or the train
                    files — generic TSV with a header / JSONL with `text`, `label`, optional `text_b`, `lang`
    ner             token classification, BIO tags — CoNLL / WikiANN (`token label` per line)
    qa              extractive question answering (start / end of the answer span) — SQuAD-format JSON
                    (SQuAD v1.1, MLQA, XQuAD); its reader, features and decoding are in `xlm_jax.tasks.qa`

Readers return plain dataclasses; `encode_*` turn them into fixed-shape NumPy batches following the
original input protocols:
- XLM-R: `<s> A </s>` and `<s> A </s></s> B </s>`; langs are ignored by the model;
- XLM:   `</s> A </s>` and `</s> A </s> B </s>` (XLM's XNLI code), and *every* token — both halves — carries
  the id of the language being evaluated (index in `ModelConfig.langs`), as the original fine-tuning did.

Which language an example belongs to: a per-row field wins (XNLI's `language` column, JSONL `lang`, WikiANN's
`en:` token prefix), then a `LANG:` prefix on the file name given in the config (`de:data/de/test.tsv`),
then `default_lang`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from xlm_jax.data import packing
from xlm_jax.core.errors import UserError
from xlm_jax.core.textfiles import open_text
from xlm_jax.data.tokenizer import check_max_len, min_max_len, pad_rows, truncate_pair

IGNORE_INDEX = -100  # token-classification label of positions that do not count (later sub-words, specials, pads)

XNLI_LABELS = ("entailment", "neutral", "contradiction")
PAWSX_LABELS = ("0", "1")
WIKIANN_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")

# XNLI 1.0's `xnli.{dev,test}.tsv` header, in the released order.
XNLI_COLUMNS = (
    "language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
    "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre", "label1", "label2", "label3",
    "label4", "label5", "sentence1_tokenized", "sentence2_tokenized", "match",
)

csv.field_size_limit(sys.maxsize)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "sequence" (one label per example), "token" (one label per word) or "span" (answer start / end)
    pair: bool  # sentence-pair input
    labels: tuple[str, ...]  # fixed label set; empty: from the config or the training files
    metric: str  # "accuracy", "f1" (seqeval entity-level) or "em_f1" (SQuAD / MLQA exact match and token F1)


TASKS: dict[str, TaskSpec] = {
    "xnli": TaskSpec("xnli", "sequence", True, XNLI_LABELS, "accuracy"),
    "pawsx": TaskSpec("pawsx", "sequence", True, PAWSX_LABELS, "accuracy"),
    "classification": TaskSpec("classification", "sequence", False, (), "accuracy"),
    "ner": TaskSpec("ner", "token", False, (), "f1"),
    "qa": TaskSpec("qa", "span", True, ("start", "end"), "em_f1"),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


@dataclasses.dataclass(frozen=True)
class Example:
    """A sentence (text_b None) or sentence-pair example; `label` is the label *string*."""

    text_a: str
    text_b: str | None
    label: str
    lang: str
    where: str = ""  # "file:line", for error messages


@dataclasses.dataclass(frozen=True)
class TokenExample:
    words: tuple[str, ...]
    labels: tuple[str, ...]
    lang: str
    where: str = ""


# ------------------------------------------------------------------------------------------------ files


def split_lang_prefix(spec: str) -> tuple[str | None, Path]:
    """"de:path/x.tsv" → ("de", Path("path/x.tsv")); a plain path → (None, path). Windows drive letters and
    paths that exist as given are never split."""
    match = re.fullmatch(r"([a-z]{2,3}(?:[-_][A-Za-z]+)?):(.+)", spec)
    if match and not Path(spec).exists():
        return match.group(1), Path(match.group(2))
    return None, Path(spec)


def _open(path: Path):
    """A data file as text, line endings untouched (for `csv`). Data files must be UTF-8: a missing, binary or
    non-UTF-8 file is a UserError naming the file and the line (`xlm_jax.core.textfiles.read_text`)."""
    return open_text(path, "data file", newline="")


def _cells(line: str) -> list[str]:
    return line.rstrip("\r\n").split("\t")


def _check_fields(path: Path, n: int, found: int, expected: int, sep: str = "tab", like: str = "the header") -> None:
    """A row with more fields than the header would shift the label column, one with fewer lacks it: both refused."""
    if found != expected:
        raise UserError(f"{path}:{n}: {found} {sep}-separated fields, expected {expected} like {like} "
                        f"({f'a {sep} inside a text?' if found > expected else 'a missing field?'})")


def _tsv_rows(f, path: Path, header: list[str]):
    """-> (line number, cells) of the rows after the header line (from line 2), blank lines skipped; a row whose
    field count differs from the header's is a UserError (`_check_fields`)."""
    for n, line in enumerate(f, start=2):
        if not line.strip():
            continue
        cells = _cells(line)
        _check_fields(path, n, len(cells), len(header))
        yield n, cells


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


def _dir_lang(path: Path) -> str | None:
    name = path.parent.name
    return name if re.fullmatch(r"[a-z]{2}(?:[-_][A-Za-z]+)?", name) else None


def _jsonl(path: Path) -> Iterable[tuple[int, dict]]:
    with _open(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{n}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{n}: expected a JSON object per line")
            yield n, record


def _check_types(path: Path, n: int, record: dict, types: dict[str, tuple[type, ...]]) -> None:
    """Fields present in `record` must have one of their types (null is allowed only where NoneType is listed)."""
    for key, allowed in types.items():
        if key in record and not (isinstance(record[key], allowed) and not isinstance(record[key], bool)):
            names = " or ".join({str: "a string", int: "an integer", type(None): "null"}[t] for t in allowed)
            raise UserError(f"{path}:{n}: field {key!r} is {json.dumps(record[key])[:40]}, expected {names}")


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


def read_conll(path: Path, default_lang: str | None = None) -> list[TokenExample]:
    """CoNLL / WikiANN BIO: `token ... label` per line (tab-separated when the line has a tab, else space-separated;
    label last), blank line between sentences, `-DOCSTART-` lines skipped. XTREME's WikiANN prefixes tokens with
    their language (`en:Paris`). Every line of a file has the column count of its first token line."""
    out: list[TokenExample] = []
    words: list[str] = []
    labels: list[str] = []
    lang = default_lang or "en"
    start = 1
    columns = None  # (count, line number) of the first token line

    def flush():
        nonlocal words, labels, lang
        if words:
            out.append(TokenExample(tuple(words), tuple(labels), lang, f"{path}:{start}"))
        words, labels, lang = [], [], default_lang or "en"

    with _open(path) as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                flush()
                continue
            if line.startswith("-DOCSTART-"):
                continue
            # Not str.split(): a token may hold a no-break or ideographic space, which would shift the label.
            parts = [p.strip() for p in re.split(r"\t" if "\t" in line else r" +", line) if p.strip()]
            if len(parts) < 2:
                raise UserError(
                    f"{path}:{n}: malformed line {line[:60]!r}; expected 'token label' (whitespace-separated), "
                    "a blank line between sentences"
                )
            if columns is None:
                columns = (len(parts), n)
            sep = "tab" if "\t" in line else "space"
            _check_fields(path, n, len(parts), columns[0], sep, f"line {columns[1]}")
            token, label = parts[0], parts[-1]
            match = re.match(r"^([a-z]{2,3}(?:[-_][A-Za-z]+)?):(.+)$", token)
            if match:
                lang, token = match.group(1), match.group(2)
            if not words:
                start = n
            words.append(token)
            labels.append(label)
        flush()
    return out


READERS = {"xnli_tsv": read_xnli_tsv, "xnli_mt_tsv": read_xnli_mt_tsv, "mnli_jsonl": read_mnli_jsonl,
           "pawsx_tsv": read_pawsx_tsv,
           "classification": read_classification, "conll": read_conll}


def detect_format(task: TaskSpec, path: Path) -> str:
    """Which reader a file needs, from the task and the file's first line."""
    if task.name == "ner":
        return "conll"
    if task.name == "classification":
        return "classification"
    if path.suffix in (".jsonl", ".json"):
        return "mnli_jsonl" if task.name == "xnli" else "classification"
    with _open(path) as f:
        first = _cells(f.readline())
    if first == [""]:
        raise UserError(f"{path}:1: the first line is empty; a {task.name} TSV file starts with its header")
    if task.name == "xnli" and "gold_label" in first:
        return "xnli_tsv"
    if task.name == "xnli" and tuple(first) == XNLI_MT_COLUMNS:
        return "xnli_mt_tsv"
    if first[:4] == ["id", "sentence1", "sentence2", "label"]:
        return "pawsx_tsv"
    if "text" in first and "label" in first:
        return "classification"
    raise UserError(
        f"{path}:1: cannot tell the format of this {task.name} file from its header {first[:6]!r}; expected XNLI 1.0 "
        "TSV (language gold_label … sentence1 sentence2 …), XNLI-MT TSV (premise hypo label), MultiNLI JSONL, PAWS-X TSV (id sentence1 sentence2 label) "
        "or a TSV/JSONL with text, label columns"
    )


def read_file(task: TaskSpec, spec: str) -> list[Example] | list[TokenExample]:
    """The examples of one data file (`LANG:PATH` or `PATH`). Raises UserError naming the file (and the line)
    when it is missing, not UTF-8 text, malformed for its format, or holds no example."""
    lang, path = split_lang_prefix(spec)
    if task.kind == "span":  # SQuAD-format JSON: xlm_jax.tasks.qa owns that format
        from xlm_jax.tasks.qa import read_squad

        return read_squad(path, lang)
    examples = READERS[detect_format(task, path)](path, lang)
    if not examples:
        raise UserError(f"{path}: no examples in this {task.name} file (empty, only a header, or no row with a label)")
    return examples


def read_files(task: TaskSpec, specs: Sequence[str]) -> list:
    out: list = []
    for spec in specs:
        out += read_file(task, spec)
    return out


# ----------------------------------------------------------------------------------------------- labels


def resolve_labels(task: TaskSpec, configured: Sequence[str], train: Sequence) -> tuple[str, ...]:
    """The label set: the task's fixed one, else the config's, else every label seen in training (sorted; for
    NER "O" first so that a model predicting nothing predicts the outside tag)."""
    if task.labels:
        return task.labels
    if configured:
        return tuple(configured)
    seen: set[str] = set()
    for ex in train:
        seen.update(ex.labels if isinstance(ex, TokenExample) else (ex.label,))
    labels = sorted(seen)
    if "O" in seen:
        labels = ["O"] + [x for x in labels if x != "O"]
    if len(labels) < 2:
        # One class cannot be learned, and usually means the file is not in this task's format (a JSONL read as
        # CoNLL yields one "label" per line ending) or was filtered to one label.
        raise UserError(f"the {task.name} training data has {len(labels)} label(s) {list(labels)}: a classifier needs "
                        f"at least 2; check that the files are in the {task.name} format, or set labels=")
    return tuple(labels)


def check_labels(examples: Sequence, labels: Sequence[str]) -> None:
    valid = set(labels)
    for ex in examples:
        if isinstance(ex, TokenExample):
            # `where` is the sentence's first line; sentences have no blank lines inside, so token i is on start + i.
            path, _, start = ex.where.rpartition(":")
            for i, label in enumerate(ex.labels):
                if label not in valid:
                    where = f"{path}:{int(start) + i}" if start.isdigit() else ex.where
                    raise UserError(f"{where}: label {label!r} is not in the label set {{{', '.join(labels)}}}")
        elif ex.label not in valid:
            raise UserError(f"{ex.where}: label {ex.label!r} is not in the label set {{{', '.join(labels)}}}")


# ------------------------------------------------------------------------------------------------ tfds


def _text(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


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


def tfds_wikiann_example(record: dict, lang: str, tag_names: Sequence[str] = WIKIANN_LABELS) -> TokenExample:
    """tfds `wikiann/{lang}`: tokens, tags (ClassLabel over WIKIANN_LABELS), langs, spans."""
    words = tuple(_text(t) for t in record["tokens"])
    tags = tuple(tag_names[int(t)] for t in record["tags"])
    return TokenExample(words, tags, lang, "tfds:wikiann")


def tfds_pair_sentences(record: dict) -> tuple[str, str]:
    """tfds `tatoeba/tatoeba_{lang}` (source: the xx sentence, target: its English) and `bucc/bucc_{lang}`
    (the gold pairs only, with source_id / target_id): source_sentence, target_sentence."""
    return _text(record["source_sentence"]), _text(record["target_sentence"])


# name -> (builder name pattern, languages of the per-language configs or None, splits); from the
# tensorflow-datasets 4.9 builders.
TFDS_TASKS: dict[str, tuple[str, tuple[str, ...] | None, tuple[str, ...]]] = {
    "xnli": ("xnli", None, ("test", "validation")),
    "xtreme_xnli": ("xtreme_xnli", None, ("train",)),  # XTREME's translate-train (MultiNLI machine-translated)
    "xtreme_pawsx": ("xtreme_pawsx/{lang}", ("de", "es", "fr", "ja", "ko", "zh"), ("train",)),
    "wikiann": ("wikiann/{lang}", None, ("train", "validation", "test")),
    "tatoeba": ("tatoeba/tatoeba_{lang}", None, ("train",)),
    "bucc": ("bucc/bucc_{lang}", ("de", "fr", "ru", "zh"), ("validation", "test")),  # validation: BUCC's sample
}


def load_tfds(name: str, split: str, data_dir: str | None = None, lang: str = "en") -> list:
    """Reads a task from tensorflow_datasets (the `[tfds]` extra). name: xnli, xtreme_xnli, xtreme_pawsx,
    wikiann, tatoeba, bucc (per-language builders take `lang`). Returns Examples (xnli, xtreme_xnli,
    xtreme_pawsx), TokenExamples (wikiann) or (source, target) sentence pairs (tatoeba: (xx, English); bucc:
    the gold pairs).

    Raises UserError, before reading, for an unknown name, a language without a config, or a split the
    builder does not have (`split` may slice or add: "train[:1000]", "validation+test")."""
    from xlm_jax.data.tfds_source import check_split, load_split, open_builder

    if name not in TFDS_TASKS:
        raise UserError(f"unknown tfds dataset {name!r}; known: {', '.join(TFDS_TASKS)}")
    pattern, langs, splits = TFDS_TASKS[name]
    if langs is not None and lang not in langs:
        raise UserError(f"tfds {name} has no language {lang!r}; its languages are {', '.join(langs)}")
    builder_name = pattern.format(lang=lang)
    tfds, builder = open_builder(builder_name, data_dir)
    check_split(builder_name, split, splits, builder.info.splits or ())
    features = builder.info.features
    ds = tfds.as_numpy(load_split(tfds, builder_name, split, data_dir))
    if name in ("xnli", "xtreme_xnli"):
        return [ex for r in ds for ex in tfds_xnli_examples(r, label_names=features["label"].names)]
    if name == "xtreme_pawsx":
        return [tfds_pawsx_example(r, lang) for r in ds]
    if name == "wikiann":
        return [tfds_wikiann_example(r, lang, features["tags"].feature.names) for r in ds]
    return [tfds_pair_sentences(r) for r in ds]


# --------------------------------------------------------------------------------------------- encoding


@dataclasses.dataclass(frozen=True)
class InputProtocol:
    """How one model family frames sentences: special ids from the model config, lang ids from its langs."""

    family: str
    bos_id: int
    eos_id: int
    pad_id: int
    langs: tuple[str, ...]
    use_langs: bool  # the model has language embeddings

    @classmethod
    def from_config(cls, config) -> "InputProtocol":
        return cls(config.family, config.bos_token_id, config.eos_token_id, config.pad_token_id, tuple(config.langs),
                   bool(config.has_lang_embeddings))

    def frame(self, a: list[int], b: list[int] | None) -> list[int]:
        if self.family == "xlm":  # XLM's XNLI code: </s> a </s> [b </s>]
            return [self.eos_id, *a, self.eos_id] + ([*b, self.eos_id] if b is not None else [])
        return [self.bos_id, *a, self.eos_id] + ([self.eos_id, *b, self.eos_id] if b is not None else [])

    def n_specials(self, pair: bool) -> int:
        return n_specials(self.family, pair)

    def lang_id(self, lang: str) -> int:
        """Index of `lang` in the model's language list (0 when the model has no language embeddings)."""
        if not self.use_langs:
            return 0
        if lang not in self.langs:
            raise UserError(
                f"language {lang!r} is not one of the model's languages ({', '.join(self.langs)}); an XLM model with "
                "language embeddings can only be run on its own languages"
            )
        return self.langs.index(lang)


def n_specials(family: str, pair: bool) -> int:
    """Special tokens `InputProtocol.frame` adds around one text or a pair."""
    if family == "xlm":
        return 3 if pair else 2
    return 4 if pair else 2


def min_len(family: str, pair: bool) -> int:
    """The shortest max_len the input layout of `family` can use: its special tokens and one piece per text."""
    return min_max_len(n_specials(family, pair), pair)


def check_layout_max_len(max_len: int, family: str, pair: bool) -> None:
    """UserError unless rows of `max_len` tokens hold `family`'s special tokens and one piece per text."""
    check_max_len(max_len, n_specials(family, pair), pair)


@dataclasses.dataclass
class Encoded:
    """Model inputs for a list of examples (rows in example order), unpadded; `batches` pads them."""

    ids: list[list[int]]
    labels: list[Any]  # int per row (sequence) or list[int] per row aligned with ids (token)
    langs: list[str]
    lang_ids: list[int]
    truncated: int
    word_starts: list[list[int]] = dataclasses.field(default_factory=list)  # token tasks: position of each word
    n_words: list[int] = dataclasses.field(default_factory=list)


def encode_sequence_examples(examples: Sequence[Example], tokenizer, protocol: InputProtocol, labels: Sequence[str],
                             max_len: int) -> Encoded:
    """Rows framed by `protocol`, each at most max_len ids (longest-first truncation, counted in `truncated`).
    Raises UserError when max_len cannot hold the specials plus one piece of each sentence (tokenizer.min_max_len)."""
    pair = any(ex.text_b is not None for ex in examples)
    check_max_len(max_len, protocol.n_specials(pair), pair)
    label_ids = {x: i for i, x in enumerate(labels)}
    texts_a = tokenizer.encode_batch_pieces_ids([ex.text_a for ex in examples])
    pair_idx = [i for i, ex in enumerate(examples) if ex.text_b is not None]
    texts_b = dict(zip(pair_idx, tokenizer.encode_batch_pieces_ids([examples[i].text_b for i in pair_idx])))
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


def encode_token_examples(examples: Sequence[TokenExample], tokenizer, protocol: InputProtocol,
                          labels: Sequence[str], max_len: int) -> Encoded:
    """Each word is encoded on its own; its label goes on its FIRST sub-word, the other sub-words (and the
    specials) get IGNORE_INDEX. Words that do not fit in max_len are cut and counted (predicted 'O'). Raises
    UserError when max_len cannot hold the specials plus one piece."""
    check_max_len(max_len, protocol.n_specials(False), False)
    label_ids = {x: i for i, x in enumerate(labels)}
    out = Encoded([], [], [], [], 0)
    budget = max_len - protocol.n_specials(False)
    for ex in examples:
        pieces = tokenizer.encode_batch_pieces_ids(list(ex.words)) if ex.words else []
        ids, row_labels, starts = [], [], []
        for word_pieces, label in zip(pieces, ex.labels):
            word_pieces = word_pieces.tolist() or [tokenizer.unk_id]
            if len(ids) + len(word_pieces) > budget:
                out.truncated += 1
                break
            starts.append(len(ids) + 1)  # +1: the leading special
            row_labels += [label_ids.get(label, -1)] + [IGNORE_INDEX] * (len(word_pieces) - 1)
            ids += word_pieces
        out.ids.append(protocol.frame(ids, None))
        out.labels.append([IGNORE_INDEX] + row_labels + [IGNORE_INDEX])
        out.langs.append(ex.lang)
        out.lang_ids.append(protocol.lang_id(ex.lang))
        out.word_starts.append(starts)
        out.n_words.append(len(ex.words))
    return out


def pad_width(length: int, max_len: int, multiple: int = 16) -> int:
    """Batches are padded to a multiple of 16 (capped at max_len): few distinct shapes, so few compilations."""
    return min(max_len, -(-length // multiple) * multiple)


def padded_rows(ids: Sequence[Sequence[int]], lang_ids: Sequence[int], rows: Sequence[int], batch_size: int,
                max_len: int, pad_id: int) -> dict:
    """The inputs of a fixed-shape batch of `rows`, padded with weight-0 rows up to batch_size: input_ids,
    attention_mask, langs int32 [B, W] (W = `pad_width` of the longest row, <= max_len; each row's language id
    on every slot, both halves of a pair); weights float32 [B] (1 for real rows)."""
    width = pad_width(max((len(ids[r]) for r in rows), default=1), max_len)
    input_ids, mask = pad_rows([ids[r] for r in rows], width, pad_id, batch_size)
    langs = np.zeros((batch_size, width), np.int32)
    langs[: len(rows)] = np.asarray([lang_ids[r] for r in rows], np.int32).reshape(-1, 1)
    weights = np.zeros((batch_size,), np.float32)
    weights[: len(rows)] = 1.0
    return {"input_ids": input_ids, "attention_mask": mask, "langs": langs, "weights": weights}


def make_batch(enc: Encoded, rows: Sequence[int], batch_size: int, max_len: int, pad_id: int, token_task: bool) -> dict:
    """Fixed-shape batch of `rows` (padded with weight-0 rows up to batch_size): `padded_rows` + labels (int32 [B],
    or [B, W] with IGNORE_INDEX off the labelled first sub-words)."""
    batch = padded_rows(enc.ids, enc.lang_ids, rows, batch_size, max_len, pad_id)
    batch_size, width = batch["input_ids"].shape
    labels = np.full((batch_size, width), IGNORE_INDEX, np.int32) if token_task else np.zeros((batch_size,), np.int32)
    for j, r in enumerate(rows):
        if token_task:
            labels[j, : len(enc.labels[r])] = enc.labels[r]
        else:
            labels[j] = enc.labels[r]
    return {**batch, "labels": labels}


def make_packed_batch(enc: Encoded, rows: Sequence[int], n_rows: int, width: int, segments: int, pad_id: int,
                      token_task: bool) -> dict:
    """The examples `rows` of `enc` packed several per row into a fixed [n_rows, width] batch
    (`xlm_jax.data.packing`: first-fit decreasing, at most `segments` examples a row).

    Returns int32 input_ids / attention_mask / langs / segment_ids [R, T] and example_starts [R, E]; labels int32
    [R, E] (sequence: one per packed example) or [R, T] (token: IGNORE_INDEX off the labelled sub-words);
    weights float32 [R, E] (sequence: 1 for a packed example) or [R] (token: 1 per row, the labels carry the
    rest); and `packed_at` int64 [len(rows), 2]: (row, slot) of each example and `start_at` [len(rows)] its first
    token, to read predictions back. Raises UserError when the examples need more than n_rows rows or one is
    longer than width."""
    seqs = [enc.ids[r] for r in rows]
    groups = packing.first_fit([len(x) for x in seqs], width, segments)
    packed = packing.pack(seqs, groups, width, segments, pad_id, n_rows)
    langs = np.zeros((n_rows, width), np.int32)
    packing.scatter_rows([np.full(len(x), enc.lang_ids[r], np.int32) for x, r in zip(seqs, rows)], langs, packed,
                         range(len(rows)))
    if token_task:
        labels = np.full((n_rows, width), IGNORE_INDEX, np.int32)
        packing.scatter_rows([np.asarray(enc.labels[r], np.int32) for r in rows], labels, packed, range(len(rows)))
        weights = np.ones((n_rows,), np.float32)
    else:
        labels = np.zeros((n_rows, segments), np.int32)
        for j, r in enumerate(rows):
            labels[tuple(packed["slot_of"][j])] = enc.labels[r]
        weights = packed["example_valid"]
    return {"input_ids": packed["input_ids"], "attention_mask": packed["attention_mask"], "langs": langs,
            "segment_ids": packed["segment_ids"], "example_starts": packed["example_starts"], "labels": labels,
            "weights": weights, "packed_at": packed["slot_of"], "start_at": packed["start_of"]}


def packed_rows_needed(enc: Encoded, steps: Iterable[Sequence[int]], width: int, segments: int) -> int:
    """The most packed rows any of `steps` (lists of example indices) needs: the static row count of a run."""
    return max((len(packing.first_fit([len(enc.ids[r]) for r in rows], width, segments)) for rows in steps),
               default=1)


def word_predictions(token_preds: np.ndarray, starts: Sequence[int], n_words: int, labels: Sequence[str]) -> list[str]:
    """Word-level tags from sub-word predictions (read at each word's first sub-word); cut words get 'O'."""
    tags = [labels[int(token_preds[s])] for s in starts]
    return tags + ["O"] * (n_words - len(tags))
