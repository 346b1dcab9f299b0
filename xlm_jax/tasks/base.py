"""What every fine-tuning task shares: the `Task` protocol the workflows dispatch on, the input protocols of the
model families, unpadded encodings and their (padded or packed) batches, data-file helpers, the head-loss
builder and the per-language results table.

Input protocols (`InputProtocol.frame`), following the original fine-tuning code:
- XLM-R: `<s> A </s>` and `<s> A </s></s> B </s>`; langs are ignored by the model;
- ModernBERT / mmBERT, EuroBERT: BERT's `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]` with the model's own
  bos / eos ids (`[CLS]` / `[SEP]` of ModernBERT, `<bos>` / `<eos>` of Gemma 2 and Llama 3 vocabularies), the
  layout ModernBERT's tokenizer.json writes;
- XLM:   `</s> A </s>` and `</s> A </s> B </s>` (XLM's XNLI code), and *every* token — both halves — carries
  the id of the language being evaluated (index in `ModelConfig.langs`), as the original fine-tuning did.

Which language an example belongs to: a per-row field wins (XNLI's `language` column, JSONL `lang`, WikiANN's
`en:` token prefix), then a `LANG:` prefix on the file name given in the config (`de:data/de/test.tsv`),
then the file's own name or directory where a format has one, then "en".
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.core.textfiles import open_text
from xlm_jax.data import packing
from xlm_jax.data.tokenizer import check_max_len, min_max_len, pad_rows
from xlm_jax.training.step import StepLoss
from xlm_jax.models import families
from xlm_jax.models.config import ROPE_FAMILIES

IGNORE_INDEX = -100  # token-classification label of positions that do not count (later sub-words, specials, pads)

csv.field_size_limit(sys.maxsize)


# ------------------------------------------------------------------------------------------- the protocol


def _no_check(*args) -> None:
    return None


def _no_options(cfg) -> dict:
    return {}


@dataclasses.dataclass(frozen=True)
class Report:
    """How a task words its fine-tuning and evaluation: `note(feats, split, max_len, options)` a line about cut
    inputs (or None), `describe(feats, labels)` -> (text before the protocol, text after the step count) of the
    summary line, `finetune_record(feats by split, labels, options)` and `eval_record(feats, options)` the
    task's keys in results.json, `history_entry(scores)` one language's validation history entry,
    `acc_label` / `score_label` the words of the progress lines."""

    note: Callable[[Any, str, int, dict], str | None]
    describe: Callable[[Any, Sequence[str]], tuple[str, str]]
    finetune_record: Callable[[dict, Sequence[str], dict], dict]
    eval_record: Callable[[Any, dict], dict]
    history_entry: Callable[[dict], Any] = lambda scores: scores["score"]
    acc_label: str = "acc"
    score_label: str = ""


def encoded_note(what: str) -> Callable[[Any, str, int, dict], str | None]:
    """`Report.note` of an `Encoded` task: training `what` (inputs, words) or split inputs cut to max_len."""

    def note(enc, split, max_len, options):
        if not enc.truncated:
            return None
        noun = what if split == "train" else "inputs"
        return f"note: {enc.truncated} {'training' if split == 'train' else split} {noun} did not fit in max_len={max_len} and were truncated"

    return note


def encoded_report(what: str) -> Report:
    """The `Report` of classification and NER."""
    return Report(
        note=encoded_note(what), describe=lambda feats, labels: ("", f", labels {list(labels)}"),
        finetune_record=lambda feats, labels, options: {
            "truncated": {split: f.truncated for split, f in feats.items()},
            "labels": list(labels)},
        eval_record=lambda enc, options: {"truncated": enc.truncated})


@dataclasses.dataclass(frozen=True)
class Task:
    """One fine-tuning task: what fine-tuning (`xlm_jax.workflows.finetune`), evaluation
    (`xlm_jax.workflows.evaluate`) and the notebook API (`xlm_jax.api`) dispatch on. Adding a task is one module
    that builds a `Task` and one line in `xlm_jax.tasks.TASKS`.

    Description: `kind` "sequence" (one label per example), "token" (one per word) or "span" (answer start /
    end); `pair` sentence-pair input; `labels` the fixed label set (empty: from the config or the training
    files); `metric` "accuracy", "f1" (seqeval entity-level) or "em_f1" (SQuAD / MLQA exact match and token F1).

    Behaviour (callables):
    - `read(path, lang, purpose)` -> the examples of one file (`lang`: its `LANG:` prefix or None; `purpose`
      "training" / "evaluation" words messages); `check_labels(examples, labels)` UserError for a label
      outside the set;
    - `options(cfg)` the task's settings saved in task.json (`TaskInfo.options`);
      `check_max_len(max_len, family, options)` UserError unless a row of max_len tokens fits the input layout;
    - `head(config, n_labels)` the head module (initialised alone), `model(config, n_labels)` encoder + head (both
      default to the config's model family's modules for `kind`: `xlm_jax.models.families`),
      `loss(model)` the `StepLoss` of `xlm_jax.training.step.make_step`;
    - `features(examples, tokenizer, protocol, labels, max_len, options, train)` -> model rows (`Encoded` or the
      task's own; `len()` rows, `.ids`); `batch(feats, rows, batch_size, max_len, pad_id)` a fixed-shape batch,
      `packed_batch(feats, rows, n_rows, width, segments, pad_id)` a packed one (None: the task is not packed),
      `token_level` whether labels / predictions are per token;
    - `logits` whether predictions need the head's logits (else its argmax); `predictions(examples, feats,
      outputs, labels, options)` -> one prediction per example from the per-row outputs; `score(examples,
      feats, predictions, labels)` -> {lang: {"score", "n", ...}}; `table(results, first_lang)` -> (markdown,
      JSON table) of {split: {lang: scores}}; `prediction_file(examples, predictions)` what goes into
      predictions.json (None: none is written);
    - `report` how fine-tuning and evaluation word it (`Report`);
    - `text_method` the notebook API's method for this head and what it answers; `noun` what an example is called
      in messages; `with_options(options)` the task bound to its options (see `configured`); `formats` the known file formats (`FILE_FORMATS`) `read` accepts: a file that is plainly one of
      another task's is refused by `check_file_format` before it is read, naming what it looks like."""

    name: str
    kind: str
    pair: bool
    labels: tuple[str, ...]
    metric: str
    read: Callable[..., list] = dataclasses.field(default=None, repr=False, compare=False)
    head: Callable[[Any, int], nn.Module] = dataclasses.field(default=None, repr=False, compare=False)
    model: Callable[[Any, int], nn.Module] = dataclasses.field(default=None, repr=False, compare=False)
    loss: Callable[[nn.Module], StepLoss] = dataclasses.field(default=None, repr=False, compare=False)
    check_labels: Callable[[Sequence, Sequence[str]], None] = dataclasses.field(default=_no_check, repr=False,
                                                                                compare=False)
    options: Callable[[Any], dict] = dataclasses.field(default=_no_options, repr=False, compare=False)
    check_max_len: Callable[[int, str, dict], None] = dataclasses.field(default=None, repr=False, compare=False)
    features: Callable[..., Any] = dataclasses.field(default=None, repr=False, compare=False)
    batch: Callable[..., dict] = dataclasses.field(default=None, repr=False, compare=False)
    packed_batch: Callable[..., dict] | None = dataclasses.field(default=None, repr=False, compare=False)
    token_level: bool = False
    logits: bool = False
    predictions: Callable[..., list] = dataclasses.field(default=None, repr=False, compare=False)
    score: Callable[..., dict] = dataclasses.field(default=None, repr=False, compare=False)
    table: Callable[..., tuple[str, dict]] = dataclasses.field(default=None, repr=False, compare=False)
    prediction_file: Callable[[Sequence, Sequence], dict] | None = dataclasses.field(default=None, repr=False,
                                                                                      compare=False)
    report: Report | None = dataclasses.field(default=None, repr=False, compare=False)
    text_method: tuple[str, str] = ("predict(texts)", "one label per text")
    noun: str = "examples"
    formats: tuple[str, ...] = ()  # keys of FILE_FORMATS this task's `read` accepts (a file of another: refused)
    # A task whose model / loss depend on its options (contrastive: pooling, temperature) returns itself bound to
    # them; fine-tuning and loading apply it to `options(cfg)` / task.json's options (None: nothing to bind).
    with_options: Callable[[dict], "Task"] | None = dataclasses.field(default=None, repr=False, compare=False)

    def configured(self, options: dict) -> "Task":
        """This task bound to `options` (`with_options`), or itself."""
        return self if self.with_options is None else self.with_options(options)

    def __post_init__(self):
        # The encoding tasks' defaults (classification, NER): Encoded rows, padded or packed batches.
        token = self.token_level
        defaults = {
            # The model family (config.family) picks the modules: xlm_jax.models.families.
            "head": lambda config, n_labels: families.task_head(config, self.kind, n_labels),
            "model": lambda config, n_labels: families.task_model(config, self.kind, n_labels),
            "check_max_len": lambda max_len, family, options: check_layout_max_len(max_len, family, self.pair),
            "batch": lambda feats, rows, batch_size, max_len, pad_id: make_batch(feats, rows, batch_size, max_len,
                                                                                 pad_id, token),
            "table": lambda results, first_lang="en": results_table(results, self.metric, first_lang),
            "report": encoded_report("words" if token else "inputs"),
        }
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)


def packed(token_level: bool) -> Callable[..., dict]:
    """`Task.packed_batch` of an `Encoded` task: `make_packed_batch`."""
    return lambda feats, rows, n_rows, width, segments, pad_id: make_packed_batch(feats, rows, n_rows, width,
                                                                                  segments, pad_id, token_level)


TaskSpec = Task  # the former name


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



def _dir_lang(path: Path) -> str | None:
    """The language a file's directory names (PAWS-X's `x-final/de/`): a two-letter code, optionally with a region
    or script subtag (`pt_BR`, `zh-CN`, `sr-Latn`); None for any other name (`my_data`, `tr_old`, `nu_neg`)."""
    name = path.parent.name
    return name if re.fullmatch(r"[a-z]{2}(?:[-_](?:[A-Z]{2}|[A-Z][a-z]{3}))?", name) else None


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



def _text(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


# The data-file formats the tasks read, by key: (what a message calls it, the task that reads it). Tasks list the
# keys they accept in `Task.formats`; `sniff_formats` recognises each from the start of a file.
FILE_FORMATS: dict[str, tuple[str, str]] = {
    "squad_json": ("SQuAD-format JSON (SQuAD / XQuAD / MLQA / TyDi QA)", "qa"),
    "xnli_tsv": ("XNLI 1.0 TSV (gold_label, sentence1, sentence2 columns)", "xnli"),
    "xnli_mt_tsv": ("XNLI-MT TSV (premise, hypo, label)", "xnli"),
    "mnli_jsonl": ("MultiNLI JSONL (gold_label, sentence1, sentence2)", "xnli"),
    "pawsx_tsv": ("PAWS-X TSV (id, sentence1, sentence2, label)", "pawsx"),
    "classification_tsv": ("classification TSV / CSV (text, label columns)", "classification"),
    "classification_jsonl": ("classification JSONL (text, label fields)", "classification"),
    "conll": ("CoNLL / WikiANN (token ... BIO-tag per line)", "ner"),
}
_BIO = re.compile(r"O|[BIES]-\S+")
_SNIFF_BYTES = 1 << 16


def sniff_formats(path: Path) -> set[str]:
    """The `FILE_FORMATS` keys whose signature the start of the file at `path` shows (empty: none, or the file is
    unreadable, which its reader then reports): a JSON object with "data" and "paragraphs" (SQuAD), a first JSON
    line with the fields of MultiNLI or classification JSONL, a first line naming a TSV format's columns, or first
    token lines that each end in a BIO tag (CoNLL). Never raises."""
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES).decode("utf-8", errors="replace").lstrip("\ufeff")
    except OSError:
        return set()
    found: set[str] = set()
    lines = [line for line in head.splitlines() if line.strip()][:8]
    if not lines:
        return found
    if head.lstrip().startswith("{"):
        if re.search(r'"data"\s*:', head) and re.search(r'"paragraphs"\s*:', head):
            found.add("squad_json")
        try:
            first = json.loads(lines[0])
        except ValueError:
            first = None
        if isinstance(first, dict):
            if {"gold_label", "sentence1", "sentence2"} <= first.keys():
                found.add("mnli_jsonl")
            if {"text", "label"} <= first.keys():
                found.add("classification_jsonl")
        return found
    header = _cells(lines[0])
    if {"gold_label", "sentence1", "sentence2"} <= set(header):
        found.add("xnli_tsv")
    if tuple(header) == ("premise", "hypo", "label"):
        found.add("xnli_mt_tsv")
    if header[:4] == ["id", "sentence1", "sentence2", "label"]:
        found.add("pawsx_tsv")
    if {"text", "label"} <= set(header) or {"text", "label"} <= set(next(csv.reader(lines[:1]), [])):
        found.add("classification_tsv")
    tokens = [line.split() for line in lines if not line.startswith("-DOCSTART-")]
    if tokens and all(len(t) >= 2 and _BIO.fullmatch(t[-1]) for t in tokens[:-1] or tokens):
        found.add("conll")  # the last line of the head may be cut: it does not count when there are others
    return found


def check_file_format(task: Task, path: Path, owner: str = "") -> None:
    """UserError when the file at `path` is plainly in a known format that `task` does not read (a SQuAD JSON
    given to a classifier, a classification TSV given to NER), naming the format, the task that reads it and the
    formats `task` reads. `owner` words whose task it is ("this checkpoint's task"; default "task=")."""
    if not task.formats:
        return
    found = sniff_formats(path)
    if not found or found & set(task.formats):
        return
    key = next(k for k in FILE_FORMATS if k in found)
    what, reader = FILE_FORMATS[key]
    reads = " or ".join(FILE_FORMATS[k][0] for k in task.formats)
    whose = f"{owner} {task.name}" if owner else f"task={task.name}"
    raise UserError(f"{path}: this looks like a {what} file (for task {reader}); {whose} reads {reads}")


def read_all(task: Task, specs: Sequence[str], purpose: str = "training", owner: str = "") -> list:
    """The examples of several `LANG:PATH` / `PATH` files (`task.read` each, after `check_file_format`)."""
    out: list = []
    for spec in specs:
        lang, path = split_lang_prefix(spec)
        check_file_format(task, path, owner)
        out += task.read(path, lang, purpose)
    return out


def check_not_empty(examples: list, path: Path, task_name: str) -> list:
    if not examples:
        raise UserError(f"{path}: no examples in this {task_name} file (empty, only a header, or no row with a label)")
    return examples


def resolve_labels(task: Task, configured: Sequence[str], train: Sequence) -> tuple[str, ...]:
    """The label set: the task's fixed one, else the config's, else every label seen in training (sorted; for
    NER "O" first so that a model predicting nothing predicts the outside tag)."""
    if task.labels:
        return task.labels
    if configured:
        return tuple(configured)
    seen: set[str] = set()
    for ex in train:
        seen.update(ex.labels if hasattr(ex, "labels") else (ex.label,))  # token examples: one label per word
    labels = sorted(seen)
    if "O" in seen:
        labels = ["O"] + [x for x in labels if x != "O"]
    if len(labels) < 2:
        # One class cannot be learned, and usually means the file is not in this task's format (a JSONL read as
        # CoNLL yields one "label" per line ending) or was filtered to one label.
        raise UserError(f"the {task.name} training data has {len(labels)} label(s) {list(labels)}: a classifier needs "
                        f"at least 2; check that the files are in the {task.name} format, or set labels=")
    return tuple(labels)


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
        if self.family in ROPE_FAMILIES:  # BERT's layout, as ModernBERT's tokenizer.json: [CLS] a [SEP] [b [SEP]]
            return [self.bos_id, *a, self.eos_id] + ([*b, self.eos_id] if b is not None else [])
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
    if family == "xlm" or family in ROPE_FAMILIES:
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


    def __len__(self) -> int:
        return len(self.ids)


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



# ------------------------------------------------------------------------------------------ loss, tables


def task_sums(logits: jax.Array, batch: dict, token_task: bool) -> dict:
    """Cross-entropy sums over real rows (sequence task: logits [B, C], batch["weights"] [B]) or labelled first
    sub-words (token task: logits [B, T, C], labels [B, T], IGNORE_INDEX elsewhere): {"loss_sum", "correct",
    "count"}, float32 scalars."""
    logits = logits.astype(jnp.float32)
    labels = batch["labels"]
    weights = task_weights(batch, token_task)
    safe = jnp.maximum(labels, 0)
    nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, safe[..., None], -1)[..., 0]
    correct = ((jnp.argmax(logits, -1) == labels) * weights).sum()
    return {"loss_sum": (nll * weights).sum(), "correct": correct, "count": weights.sum()}


def head_loss(model: nn.Module, sums_fn: Callable[[jax.Array, dict], dict], weights_fn: Callable[[dict], jax.Array]
              ) -> StepLoss:
    """A task head's loss for `xlm_jax.training.step.make_step`: `sums_fn(logits, batch)` -> {"loss_sum", "correct",
    "count"} (float32 scalars), divided by the whole batch's count (`weights_fn(batch).sum()`, at least 1), dropout
    on. Metrics: loss, accuracy, count (float32). Classification, NER (`task_loss`) and QA (`xlm_jax.tasks.qa`) use it."""

    def fn(params, batch, rng, count):
        logits = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], None, batch["langs"],
                             deterministic=False, rngs={"dropout": rng}, segment_ids=batch.get("segment_ids"),
                             example_starts=batch.get("example_starts"))  # packed batches (tasks.make_packed_batch)
        sums = sums_fn(logits, batch)
        return sums["loss_sum"] / count, sums

    def totals(batch):
        return jnp.maximum(weights_fn(batch).sum(), 1.0)

    def metrics(sums):
        count = jnp.maximum(sums["count"], 1.0)
        return {"loss": sums["loss_sum"] / count, "accuracy": sums["correct"] / count, "count": sums["count"]}

    return StepLoss(fn, totals, metrics)


def lang_order(langs, first: str | None = "en") -> list[str]:
    langs = sorted(set(langs))
    return ([first] if first in langs else []) + [x for x in langs if x != first]


def results_table(results: dict[str, dict[str, dict]], metric: str, first_lang: str | None = "en") -> tuple[str, dict]:
    """Markdown table (one row per split, one column per language, average last) and its JSON form.

    `results` is {split: {lang: {"score", "n", ...}}}; scores are shown in percent."""
    langs = lang_order({lang for per in results.values() for lang in per}, first_lang)
    lines = [f"| {metric} | " + " | ".join(langs) + " | avg |", "|---" * (len(langs) + 2) + "|"]
    table: dict[str, Any] = {"metric": metric, "langs": langs, "splits": {}}
    for split, per in results.items():
        scores = [per[lang]["score"] for lang in langs if lang in per]
        avg = float(np.mean(scores)) if scores else float("nan")
        cells = [f"{100 * per[lang]['score']:.1f}" if lang in per else "–" for lang in langs]
        lines.append(f"| {split} | " + " | ".join(cells) + f" | {100 * avg:.1f} |")
        table["splits"][split] = {"per_lang": {lang: per[lang] for lang in langs if lang in per}, "avg": avg}
    return "\n".join(lines), table


def task_weights(batch: dict, token_task: bool) -> jax.Array:
    """Which predictions count: [B] real rows (sequence task), [B, T] labelled first sub-words (token task)."""
    if token_task:
        return (batch["labels"] != IGNORE_INDEX) * batch["weights"][:, None]
    return batch["weights"]


def task_loss(model: nn.Module, token_task: bool) -> StepLoss:
    """The classification / NER loss: mean cross-entropy over the whole batch's real rows (sequence) or labelled
    first sub-words (token)."""
    return head_loss(model, lambda logits, batch: task_sums(logits, batch, token_task),
                     lambda batch: task_weights(batch, token_task))


