"""Evaluation workflows: a fine-tuned checkpoint on task data (per-language tables, any `Task`), and zero-shot
sentence retrieval, Tatoeba and BUCC (`xlm_jax.tasks.mining`) on mean-pooled layer states, and ranked retrieval
on a BEIR / MTEB directory (`run_beir`: nDCG@10, MRR@10, Recall@k, MAP by `xlm_jax.tasks.retrieval_metrics`).
The command is `python -m xlm_jax.evaluate` (its docstring describes the protocols)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xlm_jax.core import outputs
from xlm_jax.core.errors import UserError, check_range
from xlm_jax.core.textfiles import open_text
from xlm_jax.data import packing
from xlm_jax.data.tokenizer import check_max_len, truncate_pair
from xlm_jax.models.config import ModelConfig, require_encoder
from xlm_jax.tasks import InputProtocol, Task, check_layout_max_len, mining, read_all, results_table  # noqa: F401
from xlm_jax.tasks.retrieval_metrics import evaluate_rankings, read_beir
from xlm_jax.training.sharding import MeshConfig, batch_sharding, batch_size_multiple, make_mesh
from xlm_jax.workflows.loading import TASK_FILE, TaskInfo, find_task_checkpoint, layer_index, load_task_model
from xlm_jax.workflows.tokenizer_check import checkpoint_tokenizer, open_tokenizer


# ----------------------------------------------------------------------------------------- predictions


def make_predict_fn(model: nn.Module, mesh: Mesh, params_shardings: Any, logits: bool = False) -> Callable:
    """-> predict(params, batch) -> argmax labels int32 ([B] or [B, T]), or with `logits` the head's float32
    logits (QA: [B, T, 2]); jitted with the run's shardings, output replicated."""

    def predict(params, batch):
        out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"], None, batch["langs"],
                          segment_ids=batch.get("segment_ids"), example_starts=batch.get("example_starts"))
        return out if logits else jnp.argmax(out, axis=-1).astype(jnp.int32)

    replicated = NamedSharding(mesh, PartitionSpec())
    jitted = jax.jit(predict, in_shardings=(params_shardings, batch_sharding(mesh)), out_shardings=replicated)

    def run(params, batch):
        # No mesh or logical-rules context: parameters and batches are placed by the explicit shardings.
        keys = ("input_ids", "attention_mask", "langs", "segment_ids", "example_starts")  # the last two: packed
        return jitted(params, {k: batch[k] for k in keys if k in batch})

    return run


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _row_outputs(result: np.ndarray, j: int, length: int, per_token: bool = True) -> np.ndarray:
    """Row j of a padded batch's outputs: a scalar ([B] outputs), its first `length` positions, or (not
    `per_token`: a sentence embedding [B, D]) the whole row."""
    return result[j] if result.ndim == 1 or not per_token else result[j, :length]


def predict_all(task: Task, predict: Callable, params: Any, feats, batch_size: int, max_len: int,
                pad_id: int) -> list:
    """The outputs (argmax labels, or logits for `task.logits`) of every row of `feats`: rows sorted by length
    into `task.batch`es, returned in the original order (per-token outputs cut to the row's length)."""
    order = sorted(range(len(feats.ids)), key=lambda r: len(feats.ids[r]))
    out: list = [None] * len(order)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        result = np.asarray(predict(params, task.batch(feats, rows, batch_size, max_len, pad_id)))
        for j, r in enumerate(rows):
            out[r] = _row_outputs(result, j, len(feats.ids[r]), task.kind != "embedding")
    return out


def predict_packed(task: Task, predict: Callable, params: Any, feats, max_rows: int, width: int, segments: int,
                   pad_id: int, multiple: int = 1) -> list:
    """The outputs of every row of `feats` from `task.packed_batch`es of n_rows x width tokens (first-fit
    decreasing over all examples, then n_rows rows a batch; n_rows = max_rows or fewer when fewer are filled, a
    multiple of `multiple`): the same per-example outputs as `predict_all`."""
    lengths = [len(x) for x in feats.ids]
    groups = packing.first_fit(lengths, width, segments)
    n_rows = _round_up(max(1, min(max_rows, len(groups))), multiple)
    out: list = [None] * len(lengths)
    for first in range(0, len(groups), n_rows):
        members = [i for g in groups[first:first + n_rows] for i in g]
        batch = task.packed_batch(feats, members, n_rows, width, segments, pad_id)
        preds = np.asarray(predict(params, batch))
        for j, i in enumerate(members):
            r, slot = batch["packed_at"][j]
            t = batch["start_at"][j]
            out[i] = preds[r, t:t + lengths[i]] if task.token_level else preds[r, slot]
    return out


def evaluate_features(task: Task, examples: Sequence, feats, labels: Sequence[str], options: dict, predict: Callable,
                      params: Any, batch_size: int, max_len: int, pad_id: int, multiple: int = 1, *,
                      pack: bool = False, pack_segments: int = 8, pack_len: int = 0) -> tuple[dict, list]:
    """-> ({lang: scores}, per-example predictions) of `examples` (encoded as `feats`) under `params`. With
    `pack` (tasks that pack), rows are packed several per row of pack_len (0: max_len) tokens, at most
    pack_segments a row, batch_size rows a batch; the scores are the same as unpacked
    (tests/test_packing.py). Raises UserError for pack_segments < 1 or pack_len < max_len."""
    # Never wider than the data: a huge batch_size must not allocate rows of padding.
    batch_size = _round_up(min(batch_size, max(1, len(feats))), multiple)
    if pack and task.packed_batch is not None:
        width = pack_len or max_len
        packing.check_packing(width, pack_segments, max_len, "pack_len", "pack_segments",
                              f"an input of max_len={max_len}")
        outs = predict_packed(task, predict, params, feats, batch_size, width, pack_segments, pad_id, multiple)
    else:
        outs = predict_all(task, predict, params, feats, batch_size, max_len, pad_id)
    preds = task.predictions(examples, feats, outs, labels, options)
    return task.score(examples, feats, preds, labels), preds


def evaluate_examples(model, params, config: ModelConfig, info: TaskInfo, tokenizer, examples: Sequence, mesh: Mesh,
                      params_shardings: Any, batch_size: int = 64, predict: Callable | None = None, *,
                      pack: bool = True, pack_segments: int = 8, pack_len: int = 0) -> tuple[dict, Any, list]:
    """-> ({lang: scores}, features, predictions): `examples` checked against `info`'s labels, encoded by its
    task (`Task.features`) and scored (`evaluate_features`; packed when `pack` and the task packs)."""
    task = info.spec
    check_range("batch_size", batch_size, 1, integer=True)
    task.check_labels(examples, info.labels)
    feats = task.features(examples, tokenizer, InputProtocol.from_config(config), info.labels, info.max_len,
                          info.options)
    predict = predict or make_predict_fn(model, mesh, params_shardings, logits=task.logits)
    scores, preds = evaluate_features(task, examples, feats, info.labels, info.options, predict, params, batch_size,
                                      info.max_len, config.pad_token_id, batch_size_multiple(mesh), pack=pack,
                                      pack_segments=pack_segments, pack_len=pack_len)
    return scores, feats, preds


# ------------------------------------------------------------------------------------------- retrieval


def embed_sentences(model, tokenizer, lines: Sequence[str], lang: str | None = None, layer: int = -1,
                    max_len: int = 128, batch_size: int = 32) -> np.ndarray:
    """Mean-pooled layer states over each sentence's real tokens: [N, D] float32.

    `model` is an `xlm_jax.load(...)` result; `layer` counts from 1 (first layer) or from the top when negative.
    XLM models with language embeddings get `lang`'s id on every token."""
    config: ModelConfig = model.config
    index = layer_index(layer, config.num_layers, "--layer")
    check_range("batch_size", batch_size, 1, integer=True)
    protocol = InputProtocol.from_config(config)
    check_max_len(max_len, protocol.n_specials(False), False)
    max_len = min(max_len, config.max_positions)
    lang_id = protocol.lang_id(lang) if (lang and protocol.use_langs) else 0
    if protocol.use_langs and not lang:
        raise UserError(f"this XLM model has language embeddings ({', '.join(config.langs)}): pass --src-lang / --tgt-lang")
    pieces = tokenizer.encode_batch_pieces_ids(list(lines))
    ids = [protocol.frame(truncate_pair(p.tolist(), None, max_len - 2)[0], None) for p in pieces]
    # The batching (length buckets) and pooling are the notebook API's: `LoadedModel.embed` is the same numbers.
    return model.pool_ids(ids, index, "mean", [lang_id] * len(ids), batch_size)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def retrieval_scores(src: np.ndarray, tgt: np.ndarray) -> dict:
    """P@1 both ways for aligned embeddings (row i of src translates row i of tgt)."""
    sim = cosine_matrix(src, tgt)
    gold = np.arange(len(src))
    return {
        "src_to_tgt_p@1": float(np.mean(sim.argmax(1) == gold)),
        "tgt_to_src_p@1": float(np.mean(sim.argmax(0) == gold)),
        "n": int(len(src)),
    }


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 retrieval file; UserError naming the file (and line) when it is missing, binary or not
    UTF-8 (`xlm_jax.core.textfiles.read_text`)."""
    with open_text(path, "retrieval file") as f:
        return [line.rstrip("\n") for line in f]


def load_embedder(checkpoint: str, tokenizer_path: str | None, load: Callable):
    """-> (model, tokenizer) for retrieval, from `load(path, tokenizer=tokenizer_path)` (`xlm_jax.load`, which
    the `evaluate` command passes in: this layer does not import the notebook API): a pretraining run, a
    checkpoint, or a fine-tuning run directory (its best checkpoint). `tokenizer_path` None: the checkpoint's own.
    UserError when the tokenizer does not fit the model (`check_tokenizer_fits`, as `load` checks it) or when
    none is given and the checkpoint has none."""
    if (Path(checkpoint) / "best" / TASK_FILE).is_file():  # a fine-tuning run directory: its best checkpoint
        checkpoint = str(Path(checkpoint) / "best")
    model = load(checkpoint, tokenizer=tokenizer_path or None)
    require_encoder(model.config, checkpoint, "embedding (retrieval, mining, negatives)")
    if model.tokenizer is None:
        raise UserError(f"{checkpoint} has no tokenizer ({model.tokenizer_note}): pass --tokenizer PATH (a "
                        "SentencePiece .model or a tokenizer.json)")
    return model, model.tokenizer


def _check_embed_args(max_len: int, batch_size: int) -> None:
    # Ranges first (before any file or checkpoint is read); a text needs 2 special tokens in either layout.
    check_layout_max_len(max_len, "xlmr", False)
    check_range("batch_size", batch_size, 1, integer=True)


def run_retrieval(checkpoint: str, tokenizer_path: str, src_file: str, tgt_file: str, src_lang: str | None = None,
                  tgt_lang: str | None = None, layer: int = -1, max_len: int = 128, batch_size: int = 32, *,
                  load: Callable) -> dict:
    """Retrieval P@1 both ways between two line-aligned files (`load`: see `load_embedder`)."""
    _check_embed_args(max_len, batch_size)
    src, tgt = read_lines(src_file), read_lines(tgt_file)
    if len(src) != len(tgt):
        raise UserError(f"{src_file} has {len(src)} lines but {tgt_file} has {len(tgt)}: they must be line-aligned")
    if not src:
        raise UserError(f"{src_file} is empty")
    model, tokenizer = load_embedder(checkpoint, tokenizer_path, load)
    a = embed_sentences(model, tokenizer, src, src_lang, layer, max_len, batch_size)
    b = embed_sentences(model, tokenizer, tgt, tgt_lang, layer, max_len, batch_size)
    out = retrieval_scores(a, b)
    return {"src_file": str(src_file), "tgt_file": str(tgt_file), "src_lang": src_lang, "tgt_lang": tgt_lang,
            "layer": layer, **out}


BEIR_K = (1, 10, 100)  # the cut-offs computed; the ranking is the top max(BEIR_K) documents of each query
BEIR_METRICS = (("ndcg@10", "nDCG@10"), ("mrr@10", "MRR@10"), ("recall@1", "R@1"), ("recall@10", "R@10"),
                ("recall@100", "R@100"), ("map", "MAP@100"))


def _prompt_name(model, names: Sequence[str]) -> str | None:
    """The first of `names` among a sentence-transformers model's prompts (as MTEB picks "query" for queries and
    "passage" / "document" for the corpus), else None (its default prompt)."""
    prompts = model.sentence.prompts if getattr(model, "sentence", None) is not None else {}
    return next((n for n in names if n in prompts), None)


def embed_texts(model, tokenizer, texts: Sequence[str], lang: str | None, prompt: str | None,
                prompt_names: Sequence[str], layer: int, max_len: int, batch_size: int) -> np.ndarray:
    """[N, D] float32 embeddings for retrieval. A sentence-transformers model (`model.sentence`) with its own
    tokenizer embeds as `SentenceTransformer.encode` does (its pooling, max_seq_length, prompts: `prompt` if
    given, else the first of `prompt_names` it has); any other model gives `embed_sentences` of
    prompt + text (mean of layer `layer`'s states). `lang` labels the texts; it reaches the model only when the
    model has language embeddings (XLM), on both paths, so one command line serves every family."""
    if getattr(model, "sentence", None) is not None and tokenizer is model.tokenizer:
        model.batch_size = batch_size
        name = None if prompt is not None else _prompt_name(model, prompt_names)
        lang = lang if model.config.has_lang_embeddings else None
        return model.embed(list(texts), layer, lang=lang, normalize=True, prompt=prompt, prompt_name=name)
    return embed_sentences(model, tokenizer, [(prompt or "") + t for t in texts], lang, layer, max_len, batch_size)


def beir_table(result: dict) -> str:
    """The markdown table of a `run_beir` result (metrics x 100, two decimals)."""
    head = ["split", "queries", "documents"] + [label for _, label in BEIR_METRICS]
    row = [result["split"], str(result["queries"]), str(result["documents"])] + [
        f"{100 * result[key]:.2f}" for key, _ in BEIR_METRICS]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |"])


def run_beir(checkpoint: str, tokenizer_path: str | None, data_dir: str, split: str = "test",
             query_lang: str | None = None, corpus_lang: str | None = None, layer: int = -1, max_len: int = 128,
             batch_size: int = 32, backend: str = "auto", query_prompt: str | None = None,
             corpus_prompt: str | None = None, out: str | None = None, force: bool = False, *,
             load: Callable) -> tuple[str, dict]:
    """Dense retrieval on a BEIR / MTEB directory (`corpus.jsonl`, `queries.jsonl`, `qrels/{split}.tsv`; read and
    checked by `xlm_jax.tasks.retrieval_metrics.read_beir` before the model is loaded) -> (markdown table,
    result dict). Queries (with qrels) and documents ("title text") are embedded by `embed_texts` (queries in
    query_lang, documents in corpus_lang: cross-lingual retrieval is the same run with another language on each
    side), each query's top 100 documents found by exact cosine nearest neighbours (`mining.knn`: faiss when
    installed, else blocked NumPy), and scored as BEIR / pytrec_eval do: nDCG@10, MRR@10, Recall@1/10/100, MAP
    (over the top-100 ranking, BEIR's `map` of a top-100 run). `out` (JSON; new, or replaced with `force`) is
    written only when everything succeeded. Raises UserError for bad ranges, a bad --out, and what read_beir
    refuses (file, line, value)."""
    _check_embed_args(max_len, batch_size)
    _check_out(out, force)
    if not Path(data_dir).is_dir():
        raise UserError(f"{data_dir}: no such directory (expected a BEIR directory: corpus.jsonl, queries.jsonl, "
                        "qrels/{split}.tsv)")
    data = read_beir(data_dir, split)
    query_ids, query_texts = data.evaluated_queries()
    if not query_ids:
        raise UserError(f"{data_dir}: no query of queries.jsonl has judgements in qrels/{split}.tsv")
    doc_ids, doc_texts = data.doc_texts()
    model, tokenizer = load_embedder(checkpoint, tokenizer_path, load)
    common = dict(layer=layer, max_len=max_len, batch_size=batch_size)
    q = embed_texts(model, tokenizer, query_texts, query_lang, query_prompt, ("query",), **common)
    d = embed_texts(model, tokenizer, doc_texts, corpus_lang, corpus_prompt, ("passage", "document"), **common)
    _, top = mining.knn(q, d, max(BEIR_K), backend=backend)
    rankings = {qid: [doc_ids[j] for j in row] for qid, row in zip(query_ids, top)}
    metrics = evaluate_rankings(rankings, data.qrels, BEIR_K)
    result = {"task": "beir", "data": str(data_dir), "split": split, "checkpoint": str(checkpoint), "layer": layer,
              "query_lang": query_lang, "corpus_lang": corpus_lang, "queries": metrics["queries"],
              "documents": len(doc_ids), **{key: metrics[key] for key, _ in BEIR_METRICS}}
    return beir_table(result), _finish(result, out)


def _model_lang(model, lang: str) -> str | None:
    """The language id to embed with: the code itself (2-letter for Tatoeba's 3-letter files) for models with
    language embeddings, else None."""
    return mining.ISO3_TO_2.get(lang, lang) if model.config.has_lang_embeddings else None


def _check_out(out: str | None, force: bool) -> None:
    if out:
        outputs.check_file_output(out, force=force)


def _finish(result: dict, out: str | None) -> dict:
    if out:
        outputs.write_json(Path(out), result)
    return result


def run_tatoeba(checkpoint: str, tokenizer_path: str, data_dir: str, langs: Sequence[str] | None = None,
                layer: int = -1, max_len: int = 128, batch_size: int = 32, backend: str = "auto",
                out: str | None = None, force: bool = False, *, load: Callable) -> dict:
    """Tatoeba accuracy per language (XTREME: xx → en nearest neighbour by cosine of mean-pooled layer states)
    from the released files `tatoeba.{xxx}-eng.{xxx|eng}` in data_dir (`xlm_jax.tasks.mining`); langs: 2- or
    3-letter codes, default every pair found. All files are read and checked before the model is loaded; `out`
    (a JSON file: new, or replaced with `force`) is written only when everything succeeded."""
    _check_embed_args(max_len, batch_size)
    _check_out(out, force)
    if not Path(data_dir).is_dir():
        raise UserError(f"{data_dir}: no such directory (expected the Tatoeba files tatoeba.{{xxx}}-eng.{{xxx|eng}})")
    langs = list(langs or mining.tatoeba_langs(data_dir))
    if not langs:
        raise UserError(f"{data_dir}: no tatoeba.{{xxx}}-eng.{{xxx}} files")
    data = {lang: mining.read_tatoeba(data_dir, lang) for lang in langs}
    model, tokenizer = load_embedder(checkpoint, tokenizer_path, load)
    per = {}
    for lang, (xx, en) in data.items():
        a = embed_sentences(model, tokenizer, xx, _model_lang(model, mining.tatoeba_code(lang)), layer, max_len, batch_size)
        b = embed_sentences(model, tokenizer, en, _model_lang(model, "en"), layer, max_len, batch_size)
        per[lang] = mining.tatoeba_accuracy(a, b, backend)
    result = {"task": "tatoeba", "checkpoint": str(checkpoint), "layer": layer, "langs": per,
              "average_accuracy": float(np.mean([r["accuracy"] for r in per.values()]))}
    return _finish(result, out)


def run_bucc(checkpoint: str, tokenizer_path: str, data_dir: str, langs: Sequence[str] | None = None,
             tune_split: str = "sample", test_split: str = "test", k: int = 4, layer: int = -1, max_len: int = 128,
             batch_size: int = 32, backend: str = "auto", out: str | None = None, force: bool = False, *,
             load: Callable) -> dict:
    """BUCC 2018 bitext mining per language (`xlm_jax.tasks.mining`): ratio-margin candidates over k neighbours both
    ways, the F1-maximising threshold chosen on `tune_split` and applied to `test_split`; precision / recall /
    F1 on the test split's gold pairs. Files `{xx}-en.{split}.{xx|en|gold}` in data_dir (or data_dir/{xx}-en/);
    langs default to every xx with a tuning gold file. All files are read and checked (ids, duplicates, gold ids
    present) before the model is loaded; `out` (JSON) is written only when everything succeeded."""
    _check_embed_args(max_len, batch_size)
    check_range("k", k, 1, integer=True)
    _check_out(out, force)
    if tune_split == test_split:
        raise UserError(f"--tune-split and --test-split are both {tune_split!r}: the threshold must be chosen on "
                        "another split than the one it is scored on")
    if not Path(data_dir).is_dir():
        raise UserError(f"{data_dir}: no such directory (expected BUCC files {{xx}}-en.{{split}}.{{xx|en|gold}})")
    langs = list(langs or mining.bucc_langs(data_dir, tune_split))
    if not langs:
        raise UserError(f"{data_dir}: no BUCC gold files {{xx}}-en.{tune_split}.gold")
    data = {lang: (mining.read_bucc(data_dir, lang, tune_split), mining.read_bucc(data_dir, lang, test_split))
            for lang in langs}
    model, tokenizer = load_embedder(checkpoint, tokenizer_path, load)
    per = {}
    for lang, splits in data.items():
        mined = []
        for split in splits:
            xx = embed_sentences(model, tokenizer, split.xx_sentences, _model_lang(model, lang), layer, max_len, batch_size)
            en = embed_sentences(model, tokenizer, split.en_sentences, _model_lang(model, "en"), layer, max_len, batch_size)
            mined.append((split, mining.mine_split(split, xx, en, k, backend)))
        per[lang] = mining.bucc_scores(*mined)
    result = {"task": "bucc", "checkpoint": str(checkpoint), "layer": layer, "k": k, "margin": "ratio",
              "tune_split": tune_split, "test_split": test_split, "langs": per,
              "average_f1": float(np.mean([r["f1"] for r in per.values()]))}
    return _finish(result, out)


def _is_evaluate_output(directory: Path) -> bool:
    # Written before output markers: results only (a fine-tuning run also has its config).
    return (directory / "results.json").is_file() and not (directory / "finetune_config.json").is_file()


def run_task_eval(checkpoint: str, tokenizer_path: str | None, data: Sequence[str], out: str | None = None,
                  batch_size: int = 64, split_name: str = "test", force: bool = False) -> tuple[str, dict]:
    """-> (markdown table, results dict) of a fine-tuned checkpoint on `data` (its task reads, encodes and
    scores them) with `tokenizer_path` (None: the checkpoint's own; another is refused with UserError when it does
    not fit the model: `check_tokenizer_fits`, as `xlm_jax.load` checks it). `out`, when given, must be new, empty or an earlier `evaluate` output (else UserError, unless
    `force`: then results.md / results.json (and a task's predictions.json) are written into it, other files
    kept)."""
    check_range("batch_size", batch_size, 1, integer=True)
    if out:
        outputs.check_dir(out, "evaluate", force=force, legacy=_is_evaluate_output)
    _, info = find_task_checkpoint(checkpoint)  # its task says how to read the data: read (and check) it first
    task = info.spec
    examples = read_all(task, data, "evaluation", owner="this checkpoint's task")
    if not examples:
        raise UserError(f"no examples in {', '.join(data)}")
    model, params, config, info = load_task_model(checkpoint)
    found = checkpoint_tokenizer(checkpoint)
    tokenizer = open_tokenizer(tokenizer_path or None, found, config, f"evaluate task --checkpoint {checkpoint}")
    if tokenizer is None:
        raise UserError(f"{checkpoint} has no tokenizer ({found.note}): pass --tokenizer PATH (the SentencePiece "
                        ".model or tokenizer.json it was fine-tuned with)")
    mesh = make_mesh(MeshConfig())
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings = jax.tree.map(lambda _: replicated, params)
    params = jax.device_put(params, shardings)
    scores, feats, predictions = evaluate_examples(model, params, config, info, tokenizer, examples, mesh, shardings,
                                                   batch_size)
    markdown, table = task.table({split_name: scores})
    table.update(task=info.task, checkpoint=str(checkpoint), max_len=info.max_len,
                 **task.report.eval_record(feats, info.options))
    if out:
        out_dir = outputs.claim_dir(out, "evaluate", force=force, legacy=_is_evaluate_output)
        outputs.atomic_write_text(out_dir / "results.md", markdown + "\n")
        outputs.atomic_write_text(out_dir / "results.json", json.dumps(table, indent=2))
        if task.prediction_file is not None:
            outputs.atomic_write_text(out_dir / "predictions.json",
                                      json.dumps({split_name: task.prediction_file(examples, predictions)}, indent=1,
                                                 ensure_ascii=False))
    return markdown, table
