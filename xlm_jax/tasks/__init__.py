"""Fine-tuning tasks, one module per family behind the `Task` protocol (`xlm_jax.tasks.base.Task`), and their
registry: `get_task(name)`.

    xnli, pawsx, classification   `xlm_jax.tasks.classification`   (sequence labels, accuracy)
    ner                           `xlm_jax.tasks.ner`              (BIO tags per word, entity F1)
    qa                            `xlm_jax.tasks.qa`               (answer spans, EM / F1)
    contrastive                   `xlm_jax.tasks.embedding`        (sentence embeddings, retrieval P@1)

Sentence retrieval and bitext mining (Tatoeba, BUCC) are `xlm_jax.tasks.mining`; tfds readers
`xlm_jax.tasks.tfds`. Adding a task: one module building a `Task`, one line in `TASKS`. This package also
re-exports the names fine-tuning, evaluation and the tests use (`from xlm_jax import tasks as T`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from xlm_jax.core.errors import UserError
from xlm_jax.tasks.base import (FILE_FORMATS, IGNORE_INDEX, Encoded, InputProtocol, Task, TaskSpec, check_layout_max_len,
                                check_file_format, make_batch, make_packed_batch, min_len, n_specials, packed_rows_needed, pad_width,
                                padded_rows, read_all, resolve_labels, results_table, sniff_formats, split_lang_prefix)
from xlm_jax.tasks.classification import (CLASSIFICATION, PAWSX, PAWSX_LABELS, XNLI, XNLI_COLUMNS, XNLI_LABELS,
                                          XNLI_MT_COLUMNS, Example, encode_sequence_examples, tfds_pawsx_example,
                                          tfds_xnli_examples)
from xlm_jax.tasks.ner import NER, WIKIANN_LABELS, TokenExample, encode_token_examples, entity_scores, \
    tfds_wikiann_example, word_predictions
from xlm_jax.tasks.qa import QA
from xlm_jax.tasks.embedding import CONTRASTIVE
from xlm_jax.tasks.tfds import TFDS_TASKS, load_tfds, tfds_pair_sentences

__all__ = [
    "CLASSIFICATION", "CONTRASTIVE", "FILE_FORMATS", "IGNORE_INDEX", "NER", "PAWSX", "PAWSX_LABELS", "QA", "TASKS", "TFDS_TASKS", "WIKIANN_LABELS",
    "XNLI", "XNLI_COLUMNS", "XNLI_LABELS", "XNLI_MT_COLUMNS", "Encoded", "Example", "InputProtocol", "Task",
    "TaskSpec", "TokenExample", "check_file_format", "check_labels", "check_layout_max_len", "encode_sequence_examples",
    "encode_token_examples", "entity_scores", "get_task", "load_tfds", "make_batch", "make_packed_batch", "min_len",
    "n_specials", "packed_rows_needed", "pad_width", "padded_rows", "read_all", "read_file", "read_files",
    "resolve_labels", "results_table", "sniff_formats", "split_lang_prefix", "tfds_pair_sentences", "tfds_pawsx_example",
    "tfds_wikiann_example", "tfds_xnli_examples", "word_predictions",
]

TASKS: dict[str, Task] = {task.name: task for task in (XNLI, PAWSX, CLASSIFICATION, NER, QA, CONTRASTIVE)}


def get_task(name: str) -> Task:
    """The registered task `name`; UserError listing the known ones otherwise."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def read_file(task: Task, spec: str) -> list:
    """The examples of one data file (`LANG:PATH` or `PATH`), read by `task.read`. Raises UserError naming the
    file (and the line) when it is missing, not UTF-8 text, malformed for its format, or holds no example."""
    lang, path = split_lang_prefix(spec)
    check_file_format(task, Path(path))
    return task.read(Path(path), lang)


def read_files(task: Task, specs: Sequence[str], purpose: str = "training") -> list:
    return read_all(task, specs, purpose)


def check_labels(examples: Sequence, labels: Sequence[str]) -> None:
    """UserError for the first example (or token) whose label is not in `labels` (classification or NER)."""
    from_task = NER if any(isinstance(ex, TokenExample) for ex in examples) else CLASSIFICATION
    from_task.check_labels(examples, labels)
