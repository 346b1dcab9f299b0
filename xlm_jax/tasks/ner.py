"""Token classification (NER): CoNLL / WikiANN BIO files, first-sub-word labels, word predictions, entity F1.

Task `ner`: one BIO tag per word — CoNLL / WikiANN (`token label` per line; XTREME's WikiANN prefixes tokens with
their language, `en:Paris`), tfds `wikiann`. Each word is encoded on its own and its label goes on its first
sub-word (`encode_token_examples`); the head is `XLMForTokenClassification`, the loss the mean cross-entropy over
labelled first sub-words, the metric seqeval's entity-level F1 (conlleval-compatible default mode).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import _check_texts, check_max_len
from xlm_jax.tasks.base import (IGNORE_INDEX, Encoded, InputProtocol, Task, _check_fields, _open, _text,
                                check_not_empty, packed, task_loss)

WIKIANN_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")


@dataclasses.dataclass(frozen=True)
class TokenExample:
    words: tuple[str, ...]
    labels: tuple[str, ...]
    lang: str
    where: str = ""


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


def read(path: Path, lang: str | None = None, purpose: str = "training") -> list[TokenExample]:
    """`Task.read`: `read_conll`; UserError for a file with no sentence."""
    return check_not_empty(read_conll(path, lang), path, "ner")


def check_labels(examples: Sequence[TokenExample], labels: Sequence[str]) -> None:
    """UserError naming the file and line of the first token whose label is not in `labels`."""
    valid = set(labels)
    for ex in examples:
        # `where` is the sentence's first line; sentences have no blank lines inside, so token i is on start + i.
        path, _, start = ex.where.rpartition(":")
        for i, label in enumerate(ex.labels):
            if label not in valid:
                where = f"{path}:{int(start) + i}" if start.isdigit() else ex.where
                raise UserError(f"{where}: label {label!r} is not in the label set {{{', '.join(labels)}}}")


def tfds_wikiann_example(record: dict, lang: str, tag_names: Sequence[str] = WIKIANN_LABELS) -> TokenExample:
    """tfds `wikiann/{lang}`: tokens, tags (ClassLabel over WIKIANN_LABELS), langs, spans."""
    words = tuple(_text(t) for t in record["tokens"])
    tags = tuple(tag_names[int(t)] for t in record["tags"])
    return TokenExample(words, tags, lang, "tfds:wikiann")


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


def encode(examples, tokenizer, protocol: InputProtocol, labels: Sequence[str], max_len: int, options: dict,
           train: bool = False) -> Encoded:
    """`Task.features`: `encode_token_examples`."""
    return encode_token_examples(examples, tokenizer, protocol, labels, max_len)


def word_predictions(token_preds: np.ndarray, starts: Sequence[int], n_words: int, labels: Sequence[str]) -> list[str]:
    """Word-level tags from sub-word predictions (read at each word's first sub-word); cut words get 'O'."""
    tags = [labels[int(token_preds[s])] for s in starts]
    return tags + ["O"] * (n_words - len(tags))


def check_word_lists(sentences) -> None:
    """The notebook API's `predict_tokens` input: a non-empty list of sentences, each a list (or tuple) of words
    (str, valid Unicode). UserError naming the first bad sentence otherwise (a bare str: split it first)."""
    if not isinstance(sentences, list | tuple) or not sentences:
        raise UserError(f"sentences={sentences!r:.60}: give a non-empty list of sentences, each a list of words, "
                        "e.g. [['Angela', 'Merkel', 'visited', 'Paris']]")
    for i, words in enumerate(sentences):
        if isinstance(words, str) or not isinstance(words, list | tuple) or not all(isinstance(w, str) for w in words):
            hint = (" (a str: split it into words, e.g. text.split(), and wrap the sentence in a list)"
                    if isinstance(words, str) else "")
            raise UserError(f"sentences[{i}]={words!r:.60} must be a list of words (str){hint}")
        if words:
            _check_texts(list(words), f"sentences[{i}]")  # each word valid text (no lone surrogates)


def predictions(examples, enc: Encoded, outputs: list, labels: Sequence[str], options: dict) -> list[list[str]]:
    """`Task.predictions`: every sentence's word tags (outputs: argmax per token)."""
    return [word_predictions(outputs[r], enc.word_starts[r], enc.n_words[r], labels) for r in range(len(outputs))]


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level precision / recall / F1 (seqeval, conlleval-compatible default mode)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    return {"score": float(f1_score(gold, pred, zero_division=0)),
            "precision": float(precision_score(gold, pred, zero_division=0)),
            "recall": float(recall_score(gold, pred, zero_division=0))}


def f1_by_lang(examples: Sequence[TokenExample], enc: Encoded, preds: Sequence[list[str]], labels) -> dict:
    """{lang: {"score": entity F1, "precision", "recall", "n": sentences}}."""
    by_lang: dict[str, list[int]] = {}
    for i, lang in enumerate(enc.langs):
        by_lang.setdefault(lang, []).append(i)
    return {lang: {"n": len(rows), **entity_scores([list(examples[r].labels) for r in rows],
                                                    [preds[r] for r in rows])}
            for lang, rows in by_lang.items()}


NER = Task("ner", "token", False, (), "f1", read=read, formats=("conll",),
           loss=lambda model: task_loss(model, True), check_labels=check_labels, features=encode, packed_batch=packed(True), token_level=True,
           predictions=predictions, score=f1_by_lang,
           text_method=("predict_tokens(list of word lists)", "one label per word"))
