"""Extractive question answering (SQuAD v1.1, MLQA, XQuAD): reading SQuAD-format JSON, question + context
windows, the span loss, n-best span decoding and EM / F1: the `Task` behind `task: qa` (its fine-tuning and evaluation run through
`xlm_jax.workflows`).

    python -m xlm_jax.finetune configs/finetune_mlqa.yaml init=CKPT tokenizer=T.model out=runs/mlqa \
        train=[en:squad/train-v1.1.json] valid=[mlqa/dev/dev-context-en-question-en.json] \
        test=[mlqa/test/test-context-de-question-de.json,...]
    python -m xlm_jax.evaluate task --checkpoint runs/mlqa --tokenizer T.model --data xquad/xquad.de.json

Files: `{"data": [{"paragraphs": [{"context": str, "qas": [{"id", "question", "answers": [{"text",
"answer_start"}]}]}]}]}` (SQuAD v1.1 and every MLQA / XQuAD file). A file's language: the `LANG:` prefix, else
MLQA's `…-context-LL-question-…` or XQuAD's `xquad.LL.json` file name, else English. Every question needs at
least one answer, and every answer must be the context's text at its `answer_start` (character offset): a file
that breaks this is refused, naming the file, the question id and the offset, before any training.

Features (BERT's / XTREME's run_squad protocol): the question (its first `max_query_len` pieces) and a window of
the context, framed like a sentence pair (`<s> Q </s></s> C </s>` for XLM-R, `</s> Q </s> C </s>` for XLM). A
context longer than one window is covered by windows whose starts are `doc_stride` pieces apart (the BERT /
XTREME meaning; Hugging Face's newer run_qa.py calls the *overlap* doc_stride); the step is capped at the window
so no context is skipped. The answer's character span becomes a token span through the SentencePiece pieces'
character offsets; a training window that does not hold the whole answer points start and end at position 0 (the
first token), as Hugging Face's run_qa.py does.

Head and loss: `model.SpanHead`, a linear layer to 2 logits per token (start, end); the loss is the mean of the
start and end cross-entropies over the real tokens of each row.

Decoding: for each question, over all its windows, the `n_best` highest start and end logits among the context
pieces give candidate spans (start <= end, at most `max_answer_length` pieces); the best start + end logit wins and
maps back to the original context substring (outer whitespace dropped). Scores: `xlm_jax.tasks.qa_metrics`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.core.textfiles import read_text
from xlm_jax.data.tokenizer import _check_text, check_max_len
from xlm_jax.tasks import qa_metrics
from xlm_jax.tasks.base import InputProtocol, Report, Task, head_loss, n_specials, padded_rows, split_lang_prefix
from xlm_jax.tasks.base import results_table as one_metric_table


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One question on one context; `answers` are (text, answer_start) with context[start:start+len(text)] == text."""

    qid: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]
    lang: str
    where: str = ""  # "file: question 'id'", for error messages
    metric: str = qa_metrics.SQUAD  # the dataset's official EM / F1 definition (`qa_metrics.metric_for_file`)


# ------------------------------------------------------------------------------------------------ files


def file_lang(path: Path) -> str | None:
    """The context language in MLQA's (`test-context-de-question-en.json`) or XQuAD's (`xquad.de.json`) names."""
    match = re.search(r"context-([a-z]{2,3}(?:[-_][A-Za-z]+)?)-question", path.name) or re.fullmatch(
        r"xquad\.([a-z]{2,3}(?:[-_][A-Za-z]+)?)\.json", path.name)
    return match.group(1) if match else None


def _need(obj: Any, key: str, kind: type, where: str, what: str) -> Any:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object ({what}), got {type(obj).__name__}")
    if key not in obj:
        raise UserError(f"{where}: missing field {key!r} ({what})")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        name = {str: "a string", list: "a list", int: "an integer"}[kind]
        raise UserError(f"{where}: field {key!r} is {json.dumps(value)[:40]}, expected {name}")
    return value


def read_squad(path: str | Path, default_lang: str | None = None, purpose: str = "training") -> list[QAExample]:
    """The questions of one SQuAD-format JSON file, in file order.

    Raises UserError naming the file (and the question id, or the JSON path of a malformed entry) when the file
    is missing or not UTF-8, is not valid JSON or not in the SQuAD layout, a paragraph's context is empty (a
    question-only example), a question is empty or has no answers (SQuAD 2.0's unanswerable questions are not
    supported: they cannot be trained on or scored under v1.1's metric), or an answer's text is empty or not
    found at its answer_start. `purpose` ("training", "evaluation") words the no-answer message."""
    path = Path(path)
    try:
        data = json.loads(read_text(path, "SQuAD file"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg}); a SQuAD-format file is one "
                        'JSON object {"data": [{"paragraphs": [{"context", "qas"}]}]}') from None
    lang = default_lang or file_lang(path) or "en"
    metric = qa_metrics.metric_for_file(path)
    if metric == qa_metrics.MLQA and lang not in qa_metrics.MLQA_LANGS:
        raise UserError(f"{path}: an MLQA file scored in language {lang!r}; MLQA's script normalises answers in "
                        f"its context languages {', '.join(qa_metrics.MLQA_LANGS)} only")
    articles = _need(data, "data", list, str(path), 'the top level of a SQuAD file, {"data": [...]}')
    out = []
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_need(article, "paragraphs", list, f"{path}: data[{a}]", "an article")):
            at = f"{path}: data[{a}].paragraphs[{p}]"
            context = _need(paragraph, "context", str, at, "a paragraph")
            for q, qa in enumerate(_need(paragraph, "qas", list, at, "a paragraph")):
                qa_at = f"{at}.qas[{q}]"
                if isinstance(qa, dict) and isinstance(qa.get("id"), (str, int)) and not isinstance(qa["id"], bool):
                    qid = str(qa["id"])
                else:
                    qid = str(_need(qa, "id", str, qa_at, "a question"))
                where = f"{path}: question {qid!r}"
                question = _need(qa, "question", str, where, "a question")
                if not context.strip():
                    raise UserError(f"{where}: the paragraph's context is empty (a question-only example); "
                                    "extractive QA needs the context that holds the answer")
                if not question.strip():
                    raise UserError(f"{where}: the question is empty")
                answers = _need(qa, "answers", list, where, "a question")
                if not answers or qa.get("is_impossible"):
                    use = "trained on" if purpose == "training" else "scored"
                    raise UserError(f"{where}: no answers; a question needs at least one to be {use} (SQuAD v1.1 "
                                    "format; SQuAD 2.0's unanswerable questions are not supported)")
                spans = []
                for k, answer in enumerate(answers):
                    text = _need(answer, "text", str, f"{where} answers[{k}]", "an answer")
                    start = _need(answer, "answer_start", int, f"{where} answers[{k}]", "an answer")
                    if not text.strip():
                        raise UserError(f"{where}: answers[{k}] has an empty text")
                    found = context[start:start + len(text)] if 0 <= start <= len(context) else None
                    if found != text:
                        seen = f"the context there reads {found!r}" if found is not None else \
                            f"the context has {len(context)} characters"
                        near = context.find(text)
                        hint = f"; the text occurs at offset {near}" if near >= 0 else "; the text is not in the context"
                        raise UserError(f"{where}: answer {text[:60]!r} is not at answer_start={start} ({seen}{hint})")
                    spans.append((text, start))
                out.append(QAExample(qid, question, context, tuple(spans), lang, where, metric))
    if not out:
        raise UserError(f"{path}: no questions in this SQuAD-format file")
    return out


def read_files(specs: Sequence[str], purpose: str = "training") -> list[QAExample]:
    """The questions of several `LANG:PATH` / `PATH` SQuAD-format files (see `read_squad`)."""
    out: list[QAExample] = []
    for spec in specs:
        lang, path = split_lang_prefix(spec)
        out += read_squad(path, lang, purpose)
    return out


# ---------------------------------------------------------------------------------------------- features


def encode_with_offsets(tokenizer, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per text: (ids int32 [n], character spans int32 [n, 2] into the *original* text): the tokenizer's own
    `encode_with_offsets` (SentencePiece piece offsets, or a tokenizer.json's offsets), special-token strings kept
    as text; a piece with an empty surface has an empty span (begin == end)."""
    return tokenizer.encode_with_offsets(list(texts))


@dataclasses.dataclass
class QAFeatures:
    """Model rows (one per question window) and what decoding needs to map them back.

    ids: framed rows (<= max_len); example: index of the row's question in the example list; context_start: row
    position of the window's first context piece; spans: [n, 2] character spans of the window's context pieces;
    start / end: training targets (row positions; 0 when the window does not hold the answer)."""

    ids: list[list[int]] = dataclasses.field(default_factory=list)
    lang_ids: list[int] = dataclasses.field(default_factory=list)
    example: list[int] = dataclasses.field(default_factory=list)
    context_start: list[int] = dataclasses.field(default_factory=list)
    spans: list[np.ndarray] = dataclasses.field(default_factory=list)
    start: list[int] = dataclasses.field(default_factory=list)
    end: list[int] = dataclasses.field(default_factory=list)
    questions_cut: int = 0  # questions longer than max_query_len pieces (their end was cut)
    answers_outside: int = 0  # training windows that do not hold the answer (target: position 0)

    def __len__(self) -> int:
        return len(self.ids)


def answer_token_span(spans: np.ndarray, start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last piece (indices into `spans`) overlapping the characters [start_char, end_char)."""
    hit = np.flatnonzero((spans[:, 1] > start_char) & (spans[:, 0] < end_char) & (spans[:, 1] > spans[:, 0]))
    return (int(hit[0]), int(hit[-1])) if hit.size else None


DEFAULT_OPTIONS = {"doc_stride": 128, "max_query_len": 64, "n_best": 20, "max_answer_length": 30}


def task_options(options: dict) -> dict:
    """A QA checkpoint's windowing / decoding options (task.json "options"), the defaults filled in."""
    return {**DEFAULT_OPTIONS, **options}


def check_qa_lengths(max_len: int, max_query_len: int, doc_stride: int, family: str) -> None:
    """UserError unless a row of max_len tokens holds the pair's specials, max_query_len question pieces (when
    > 0) and at least one context piece."""
    specials = n_specials(family, True)
    check_max_len(max_len, specials, True)
    if max_query_len and max_query_len + specials + 1 > max_len:
        raise UserError(f"max_query_len={max_query_len} leaves no room for the context in max_len={max_len} "
                        f"({specials} special tokens): use max_query_len <= {max_len - specials - 1} or a larger max_len")
    if doc_stride < 1:
        raise UserError(f"doc_stride={doc_stride}: must be >= 1 (context pieces between window starts)")


def make_features(examples: Sequence[QAExample], tokenizer, protocol: InputProtocol, max_len: int,
                  doc_stride: int = 128, max_query_len: int = 64, train: bool = False) -> QAFeatures:
    """Question + context windows for every example (see the module docstring). `train` adds the start / end
    targets from each example's first answer. Raises UserError when max_len cannot hold the specials, the
    (cut) question and one context piece — naming the question and max_len — before anything is encoded."""
    check_qa_lengths(max_len, max_query_len, doc_stride, protocol.family)
    specials = protocol.n_specials(True)
    questions = tokenizer.encode_batch_pieces_ids([ex.question for ex in examples], special_tokens=False)
    out = QAFeatures()
    for ex, q in zip(examples, questions):
        if max_query_len and len(q) > max_query_len:
            q, out.questions_cut = q[:max_query_len], out.questions_cut + 1
        if len(q) + specials + 1 > max_len:
            raise UserError(f"{ex.where}: the question has {len(q)} pieces; with {specials} special tokens and at "
                            f"least one context piece it needs max_len >= {len(q) + specials + 1} (max_len={max_len}); "
                            "raise max_len or set max_query_len to cut long questions")
    contexts = encode_with_offsets(tokenizer, [ex.context for ex in examples])
    for n, (ex, q, (ctx, spans)) in enumerate(zip(examples, questions, contexts)):
        q = q[:max_query_len].tolist() if max_query_len else q.tolist()
        budget = max_len - specials - len(q)
        offset = len(protocol.frame(q, [])) - 1  # the context starts where the empty pair's last special is
        target = None
        if train:
            text, start_char = ex.answers[0]
            target = answer_token_span(spans, start_char, start_char + len(text))
        lang_id = protocol.lang_id(ex.lang)
        begin = 0
        while True:
            stop = min(begin + budget, len(ctx))
            out.ids.append(protocol.frame(q, ctx[begin:stop].tolist()))
            out.lang_ids.append(lang_id)
            out.example.append(n)
            out.context_start.append(offset)
            out.spans.append(spans[begin:stop])
            if target is not None and begin <= target[0] and target[1] < stop:
                out.start.append(offset + target[0] - begin)
                out.end.append(offset + target[1] - begin)
            else:
                out.start.append(0)
                out.end.append(0)
                out.answers_outside += train
            if stop >= len(ctx):
                break
            begin += min(doc_stride, budget)
    return out


def make_batch(feats: QAFeatures, rows: Sequence[int], batch_size: int, max_len: int, pad_id: int) -> dict:
    """Fixed-shape batch of `rows`, padded with weight-0 rows to batch_size: input_ids, attention_mask, langs
    int32 [B, W] (W a multiple of 16, <= max_len); start_positions, end_positions int32 [B]; weights float32 [B]."""
    batch = padded_rows(feats.ids, feats.lang_ids, rows, batch_size, max_len, pad_id)
    start = np.zeros((batch_size,), np.int32)
    end = np.zeros((batch_size,), np.int32)
    start[: len(rows)] = [feats.start[r] for r in rows]
    end[: len(rows)] = [feats.end[r] for r in rows]
    return {**batch, "start_positions": start, "end_positions": end}


# -------------------------------------------------------------------------------------------- loss, decode


def span_sums(logits: jax.Array, batch: dict) -> dict:
    """logits [B, T, 2] (start, end) -> {"loss_sum", "correct", "count"} (float32 scalars) over real rows
    (batch["weights"]): each row's loss is (CE(start) + CE(end)) / 2, each a softmax over the row's real tokens
    (padding masked out); a row is correct when both ends are."""
    logits = jnp.where(batch["attention_mask"][..., None] > 0, logits.astype(jnp.float32), -1e9)
    weights = batch["weights"]

    def nll(x, target):
        return jax.nn.logsumexp(x, -1) - jnp.take_along_axis(x, target[:, None], -1)[:, 0]

    start, end = logits[..., 0], logits[..., 1]
    per_row = 0.5 * (nll(start, batch["start_positions"]) + nll(end, batch["end_positions"]))
    correct = ((jnp.argmax(start, -1) == batch["start_positions"]) & (jnp.argmax(end, -1) == batch["end_positions"]))
    return {"loss_sum": (per_row * weights).sum(), "correct": (correct * weights).sum(), "count": weights.sum()}


def span_loss(logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
    """logits [B, T, 2] -> (loss, metrics): loss = mean over real rows of (CE(start) + CE(end)) / 2, float32;
    "accuracy": both ends right."""
    sums = span_sums(logits, batch)
    count = jnp.maximum(sums["count"], 1.0)
    loss = sums["loss_sum"] / count
    return loss, {"loss": loss, "accuracy": sums["correct"] / count, "count": sums["count"]}


class Span(NamedTuple):
    """One candidate answer: `text` == context[start:end] (character offsets into the original context, outer
    whitespace dropped) and its `score`, the start logit + end logit (float; higher is better)."""

    text: str
    start: int
    end: int
    score: float


def decode_n_best(examples: Sequence[QAExample], feats: QAFeatures, logits: Sequence[np.ndarray], n_best: int = 20,
                  max_answer_length: int = 30, keep: int | None = None) -> list[list[Span]]:
    """Per example, its candidate answers (`Span`s), best first, at most `keep` (None: all); [] when no window
    has a valid span.

    logits: per feature row, float [row length (or more), 2]. Only context pieces with a non-empty span are
    candidates; among each window's n_best best starts and ends, pairs with start <= end and at most
    max_answer_length pieces are scored start + end logit over all windows of the example. A span found in
    several (overlapping) windows is listed once, with its best score; of equal scores the one found first (window,
    then start rank, then end rank) comes first, so the first entry is the first best span found."""
    found: list[dict] = [{} for _ in examples]  # (start char, end char) -> (score, when found, text)
    seen = 0
    for f, row_logits in enumerate(logits):
        n = len(feats.spans[f])
        spans = feats.spans[f]
        window = np.asarray(row_logits[feats.context_start[f]: feats.context_start[f] + n], np.float64)
        valid = spans[:, 1] > spans[:, 0]
        start_l = np.where(valid, window[:, 0], -np.inf)
        end_l = np.where(valid, window[:, 1], -np.inf)
        starts = np.argsort(-start_l, kind="stable")[:n_best]
        ends = np.argsort(-end_l, kind="stable")[:n_best]
        e = feats.example[f]
        context = examples[e].context
        for i in starts:
            if not valid[i]:
                continue
            for j in ends:
                if not valid[j] or j < i or j - i + 1 > max_answer_length:
                    continue
                score = float(start_l[i] + end_l[j])
                begin, stop = int(spans[i, 0]), int(spans[j, 1])
                raw = context[begin:stop]
                text = raw.strip()
                if text:  # the span without its outer whitespace
                    begin += len(raw) - len(raw.lstrip())
                    stop = begin + len(text)
                else:
                    stop = begin
                key = (begin, stop)
                if key not in found[e] or score > found[e][key][0]:
                    found[e][key] = (score, seen, text)
                seen += 1
    out = []
    for by_span in found:
        ranked = sorted(by_span.items(), key=lambda kv: (-kv[1][0], kv[1][1]))  # ties: the first found first
        out.append([Span(text, b, e, score) for (b, e), (score, _, text) in ranked[:keep]])
    return out


def decode_answers(examples: Sequence[QAExample], feats: QAFeatures, logits: Sequence[np.ndarray], n_best: int = 20,
                   max_answer_length: int = 30) -> list[str]:
    """The predicted answer of every example: a substring of its context ("" when no window has a valid span):
    the best of `decode_n_best`."""
    return [c[0].text if c else "" for c in decode_n_best(examples, feats, logits, n_best, max_answer_length, 1)]


def score(examples: Sequence[QAExample], predictions: Sequence[str]) -> dict[str, dict]:
    """{lang: {"exact_match", "f1", "score" (= f1), "n", "metric"}}: `qa_metrics` over each language's questions,
    each scored with its dataset's official definition (`QAExample.metric`)."""
    return qa_metrics.score_predictions(
        (pred, [text for text, _ in ex.answers], ex.lang, ex.metric) for ex, pred in zip(examples, predictions))


def results_table(results: dict[str, dict[str, dict]], first_lang: str | None = "en") -> tuple[str, dict]:
    """Markdown (an EM row and an F1 row per split, one column per language, average last) and its JSON form
    ({"metric": "f1", "langs", "splits": {split: {"per_lang", "avg" (F1), "avg_exact_match"}}})."""
    rows = {}
    for split, per in results.items():
        rows[f"{split} EM"] = {lang: {**v, "score": v["exact_match"]} for lang, v in per.items()}
        rows[f"{split} F1"] = per
    markdown, _ = one_metric_table(rows, "EM / F1", first_lang)
    _, table = one_metric_table(results, "f1", first_lang)
    for split, per in results.items():
        table["splits"][split]["avg_exact_match"] = float(np.mean([v["exact_match"] for v in per.values()]))
    return markdown, table


def predictions_by_lang(examples: Sequence[QAExample], predictions: Sequence[str]) -> dict[str, dict[str, str]]:
    """{lang: {question id: answer}}: per language the official scripts' prediction file (MLQA reuses ids
    across languages, so one flat mapping would mix them)."""
    out: dict[str, dict[str, str]] = {}
    for ex, pred in zip(examples, predictions):
        out.setdefault(ex.lang, {})[ex.qid] = pred
    return out


# ------------------------------------------------------------------------------------------------ task


def question_items(questions, contexts) -> tuple[list[tuple[str, str, str]], bool]:
    """The notebook API's `answer(question, context)` forms -> ([(where, question, context)], whether one
    question was given): a str with a context, lists (one context per question, or one str for all), or (question,
    context) pairs. UserError for a missing context, lists of different lengths, an item that is not a str,
    invalid Unicode, or an empty question / context."""

    def as_str_list(x, name, what):
        if isinstance(x, str | bytes | dict) or not isinstance(x, list | tuple):
            raise UserError(f"{name} must be {what}, got {type(x).__name__} {x!r:.60}")
        if not x:
            raise UserError(f"{name}={x!r} is empty: give at least one {name}")
        return list(x)

    if contexts is None:  # one (question, context) pair or a list of them
        single = isinstance(questions, tuple) and len(questions) == 2 and all(isinstance(t, str) for t in questions)
        if isinstance(questions, str):
            raise UserError(f"question={questions!r:.60} given without a context: answer(question, context), or "
                            "answer([(question, context), ...])")
        pairs = [questions] if single else as_str_list(questions, "question", "a str (with a context), or a "
                                                        "list of (question, context) pairs")
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, tuple | list) and len(pair) == 2):
                raise UserError(f"question[{i}]={pair!r:.60}: with no context given, each item must be a "
                                "(question, context) pair of str")
        items = [("" if single else f"[{i}]", q, c) for i, (q, c) in enumerate(pairs)]
    else:
        single = isinstance(questions, str)
        qs = [questions] if single else as_str_list(questions, "question", "a str or a list of str")
        if isinstance(contexts, str):
            cs = [contexts] * len(qs)  # one context for every question
        else:
            cs = as_str_list(contexts, "context", "a str or a list of str (one per question)")
            if len(cs) != len(qs):
                raise UserError(f"{len(qs)} questions but {len(cs)} contexts: give one context per question, "
                                "or one context (a str) for all of them")
        items = [("" if single else f"[{i}]", q, c) for i, (q, c) in enumerate(zip(qs, cs))]
    for at, q, c in items:
        for name, text in (("question", q), ("context", c)):
            _check_text(text, name + at)
            if not text.strip():
                raise UserError(f"{name}{at}={text!r:.40} is empty: extractive QA needs a question and a context "
                                "that holds the answer (non-blank text)")
    return items, single


def _read(path: Path, lang: str | None = None, purpose: str = "training") -> list[QAExample]:
    return read_squad(path, lang, purpose)


def _options(cfg) -> dict:
    return {"doc_stride": cfg.doc_stride, "max_query_len": cfg.max_query_len, "n_best": cfg.n_best,
            "max_answer_length": cfg.max_answer_length}


def _check_max_len(max_len: int, family: str, options: dict) -> None:
    opts = task_options(options)
    check_qa_lengths(max_len, opts["max_query_len"], opts["doc_stride"], family)


def _features(examples, tokenizer, protocol, labels, max_len: int, options: dict, train: bool = False) -> QAFeatures:
    opts = task_options(options)
    return make_features(examples, tokenizer, protocol, max_len, opts["doc_stride"], opts["max_query_len"], train)


def _predictions(examples, feats: QAFeatures, logits: list, labels, options: dict) -> list[str]:
    opts = task_options(options)
    return decode_answers(examples, feats, logits, opts["n_best"], opts["max_answer_length"])


def span_task_loss(model):
    """The span loss as a `StepLoss` (`base.head_loss` with `span_sums`)."""
    return head_loss(model, span_sums, lambda batch: batch["weights"])


def _note(feats: QAFeatures, split: str, max_len: int, options: dict) -> str | None:
    if split != "train" or not feats.questions_cut:
        return None
    return (f"note: {feats.questions_cut} training questions were longer than max_query_len="
            f"{task_options(options)['max_query_len']} pieces and were cut")


REPORT = Report(
    note=_note, describe=lambda feats, labels: (f"{len(feats)} windows, ", ""),
    finetune_record=lambda feats, labels, options: {
        **options, "questions_cut": {s: f.questions_cut for s, f in feats.items()},
        "train_windows": len(feats["train"]), "train_windows_without_answer": feats["train"].answers_outside},
    eval_record=lambda feats, options: {"truncated": 0, "questions_cut": feats.questions_cut,
                                        **task_options(options)},
    history_entry=lambda v: {"exact_match": v["exact_match"], "f1": v["f1"]}, acc_label="span acc",
    score_label=" F1")

QA = Task("qa", "span", True, ("start", "end"), "em_f1", read=_read, formats=("squad_json",), loss=span_task_loss, options=_options,
          check_max_len=_check_max_len, features=_features, batch=make_batch, packed_batch=None, token_level=True,
          logits=True, predictions=_predictions, score=lambda examples, feats, preds, labels: score(examples, preds),
          table=results_table, prediction_file=predictions_by_lang,
          text_method=("answer(question, context)", "extractive question answering: an answer span per question"),
          report=REPORT, noun="questions")
