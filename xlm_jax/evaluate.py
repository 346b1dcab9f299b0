"""Evaluation of fine-tuned checkpoints (per-language tables) and zero-shot sentence retrieval.

    python -m xlm_jax.evaluate task --checkpoint RUN_DIR --tokenizer T.model --data FILE… [--out DIR]
    python -m xlm_jax.evaluate retrieval --checkpoint CKPT --tokenizer T.model --src-file A --tgt-file B
                                         [--src-lang en --tgt-lang fr] [--layer K] [--max-len 128]

`task` rebuilds the model from a fine-tuning run's best checkpoint (`RUN_DIR/best`, whose `task.json` names the
task and its labels) and prints the per-language table (accuracy, or seqeval entity-level F1 for NER), writing
`results.md` / `results.json` to --out when given (a new or empty directory, or an earlier --out of evaluate;
anything else needs --force). Data files take an optional `LANG:` prefix (see
`xlm_jax.tasks.common`).

    python -m xlm_jax.evaluate tatoeba --checkpoint CKPT --tokenizer T.model --data DIR [--langs de fr …]
    python -m xlm_jax.evaluate bucc --checkpoint CKPT --tokenizer T.model --data DIR [--langs de fr …] [--k 4]
                                    [--tune-split sample] [--test-split test]

`tatoeba` and `bucc` read the released layouts and score as XTREME does (`xlm_jax.tasks.mining`): Tatoeba accuracy
(xx → en nearest neighbour) and BUCC 2018 mining P / R / F1 with ratio-margin scoring; they print JSON and
write it to --out when given (a new file; --force replaces one).

`retrieval` embeds two line-aligned files (line i of A translates line i of B) as the mean of layer K's states
over the real tokens (XTREME's protocol; K counts layers from 1, negative from the top, default the last),
retrieves each sentence's nearest neighbour on the other side by cosine similarity, and prints JSON with
P@1 in both directions. Any xlm_jax checkpoint works: pretrained (MLM / TLM) or fine-tuned.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from xlm_jax.tasks import mining
from xlm_jax.core import outputs
from xlm_jax.tasks import common as T
from xlm_jax.training.checkpoint import resolve, restore_params
from xlm_jax.models.config import ModelConfig
from xlm_jax.data import packing
from xlm_jax.core.errors import ArgumentParser, UserError, arg_range, check_range, exit_on_user_error, positive_int
from xlm_jax.models.xlm import XLMForQuestionAnswering, XLMForSequenceClassification, XLMForTokenClassification
from xlm_jax.training.sharding import MeshConfig, batch_sharding, batch_size_multiple, make_mesh
from xlm_jax.core.textfiles import open_text, read_text
from xlm_jax.data.tokenizer import check_max_len, truncate_pair

TASK_FILE = "task.json"


# ------------------------------------------------------------------------------------------ task models


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What `evaluate` needs to rebuild a head: saved as `task.json` next to the best checkpoint."""

    task: str
    labels: tuple[str, ...]
    max_len: int
    options: dict = dataclasses.field(default_factory=dict, hash=False)  # task settings (qa: windows, decoding)

    @property
    def spec(self) -> T.TaskSpec:
        return T.get_task(self.task)

    def to_json(self) -> str:
        return json.dumps({"format": 1, "task": self.task, "labels": list(self.labels), "max_len": self.max_len,
                           "kind": self.spec.kind, "pair": self.spec.pair, "metric": self.spec.metric,
                           **({"options": self.options} if self.options else {})}, indent=2)

    @classmethod
    def read(cls, path: Path) -> "TaskInfo":
        try:
            d = json.loads(read_text(path, "task file"))
            return cls(str(d["task"]), tuple(map(str, d["labels"])), int(d["max_len"]), dict(d.get("options", {})))
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path}: damaged ({type(err).__name__}: {err}); it is written by `python -m "
                            "xlm_jax.finetune` next to the best checkpoint: re-run the fine-tuning") from None


def task_model(config: ModelConfig, spec: T.TaskSpec, num_labels: int) -> nn.Module:
    if spec.kind == "span":
        return XLMForQuestionAnswering(config, 2)
    cls = XLMForTokenClassification if spec.kind == "token" else XLMForSequenceClassification
    return cls(config, num_labels)


def find_task_checkpoint(path: str | Path) -> tuple[Path, TaskInfo]:
    """A fine-tuning run directory, its `best` directory or a step inside it -> (checkpoint dir, task info)."""
    p = Path(path)
    if (p / "best").is_dir():
        p = p / "best"
    for candidate in (p, p.parent):
        if (candidate / TASK_FILE).is_file():
            return p, TaskInfo.read(candidate / TASK_FILE)
    resolve(p)  # a clear error when there is no checkpoint at all
    raise UserError(
        f"{path}: no {TASK_FILE} found; this is not a fine-tuned checkpoint (fine-tune it with "
        "`python -m xlm_jax.finetune CONFIG.yaml init=...`; for retrieval use `evaluate retrieval`)"
    )


def load_task_model(path: str | Path) -> tuple[nn.Module, Any, ModelConfig, TaskInfo]:
    ckpt, info = find_task_checkpoint(path)
    params, config = restore_params(ckpt)
    if "classifier" not in params:
        raise UserError(f"{ckpt}: the checkpoint has no classifier head although {TASK_FILE} names task {info.task!r}")
    config = config.replace(dropout=0.0, attention_dropout=0.0)
    return task_model(config, info.spec, len(info.labels)), params, config, info


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


def predict_all(predict: Callable, params: Any, enc: T.Encoded, batch_size: int, max_len: int, pad_id: int,
                token_task: bool) -> list:
    """Predictions for every row of `enc` (rows sorted by length into batches, returned in the original order)."""
    order = sorted(range(len(enc.ids)), key=lambda r: len(enc.ids[r]))
    out: list = [None] * len(order)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        batch = T.make_batch(enc, rows, batch_size, max_len, pad_id, token_task)
        preds = np.asarray(predict(params, batch))
        for j, r in enumerate(rows):
            out[r] = preds[j]
    return out


def predict_packed(predict: Callable, params: Any, enc: T.Encoded, max_rows: int, width: int, segments: int,
                   pad_id: int, token_task: bool, multiple: int = 1) -> list:
    """Predictions for every row of `enc` from packed batches of n_rows x width tokens (first-fit decreasing
    over all examples, then n_rows rows a batch; n_rows = max_rows or fewer when fewer are filled, a multiple of
    `multiple`): the same per-example predictions as `predict_all`."""
    lengths = [len(x) for x in enc.ids]
    groups = packing.first_fit(lengths, width, segments)
    n_rows = _round_up(max(1, min(max_rows, len(groups))), multiple)
    out: list = [None] * len(lengths)
    for first in range(0, len(groups), n_rows):
        members = [i for g in groups[first:first + n_rows] for i in g]
        batch = T.make_packed_batch(enc, members, n_rows, width, segments, pad_id, token_task)
        preds = np.asarray(predict(params, batch))
        for j, i in enumerate(members):
            r, slot = batch["packed_at"][j]
            t = batch["start_at"][j]
            out[i] = preds[r, t:t + lengths[i]] if token_task else preds[r, slot]
    return out


def score_by_lang(spec: T.TaskSpec, enc: T.Encoded, examples: Sequence, preds: list, labels: Sequence[str]) -> dict:
    """{lang: {"score": accuracy or entity F1, "n": examples, (NER) "precision", "recall"}}."""
    by_lang: dict[str, list[int]] = {}
    for i, lang in enumerate(enc.langs):
        by_lang.setdefault(lang, []).append(i)
    out = {}
    for lang, rows in by_lang.items():
        if spec.kind == "token":
            gold = [list(examples[r].labels) for r in rows]
            pred = [T.word_predictions(preds[r], enc.word_starts[r], enc.n_words[r], labels) for r in rows]
            out[lang] = {"n": len(rows), **entity_scores(gold, pred)}
        else:
            correct = sum(int(preds[r]) == enc.labels[r] for r in rows)
            out[lang] = {"n": len(rows), "score": correct / len(rows)}
    return out


def entity_scores(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level precision / recall / F1 (seqeval, conlleval-compatible default mode)."""
    from seqeval.metrics import f1_score, precision_score, recall_score

    return {"score": float(f1_score(gold, pred, zero_division=0)),
            "precision": float(precision_score(gold, pred, zero_division=0)),
            "recall": float(recall_score(gold, pred, zero_division=0))}


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


def evaluate_examples(model, params, config: ModelConfig, info: TaskInfo, tokenizer, examples: Sequence, mesh: Mesh,
                      params_shardings: Any, batch_size: int = 64, predict: Callable | None = None, *,
                      pack: bool = True, pack_segments: int = 8, pack_len: int = 0) -> tuple[dict, int]:
    """-> ({lang: scores}, number of truncated inputs). With `pack`, the examples are packed several per row of
    pack_len (0: info.max_len) tokens, at most pack_segments a row, batch_size rows a batch; the scores are the
    same as unpacked (tests/test_packing.py). Raises UserError for pack_segments < 1 or pack_len < max_len."""
    spec = info.spec
    check_range("batch_size", batch_size, 1, integer=True)
    T.check_labels(examples, info.labels)
    protocol = T.InputProtocol.from_config(config)
    encode = T.encode_token_examples if spec.kind == "token" else T.encode_sequence_examples
    enc = encode(examples, tokenizer, protocol, info.labels, info.max_len)
    predict = predict or make_predict_fn(model, mesh, params_shardings)
    # Never wider than the data: a huge batch_size must not allocate rows of padding.
    batch_size = _round_up(min(batch_size, max(1, len(examples))), batch_size_multiple(mesh))
    if pack:
        width = pack_len or info.max_len
        packing.check_packing(width, pack_segments, info.max_len, "pack_len", "pack_segments",
                              f"an input of max_len={info.max_len}")
        preds = predict_packed(predict, params, enc, batch_size, width, pack_segments, config.pad_token_id,
                               spec.kind == "token", batch_size_multiple(mesh))
    else:
        preds = predict_all(predict, params, enc, batch_size, info.max_len, config.pad_token_id, spec.kind == "token")
    return score_by_lang(spec, enc, examples, preds, info.labels), enc.truncated


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# ------------------------------------------------------------------------------------------- retrieval


def embed_sentences(model, tokenizer, lines: Sequence[str], lang: str | None = None, layer: int = -1,
                    max_len: int = 128, batch_size: int = 32) -> np.ndarray:
    """Mean-pooled layer states over each sentence's real tokens: [N, D] float32.

    `model` is an `xlm_jax.load(...)` result; `layer` counts from 1 (first layer) or from the top when negative.
    XLM models with language embeddings get `lang`'s id on every token."""
    from xlm_jax.api import layer_index

    config: ModelConfig = model.config
    index = layer_index(layer, config.num_layers, "--layer")
    check_range("batch_size", batch_size, 1, integer=True)
    protocol = T.InputProtocol.from_config(config)
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


def load_embedder(checkpoint: str, tokenizer_path: str):
    """-> (xlm_jax.load model, Tokenizer) for retrieval: a pretraining run, a checkpoint, or a fine-tuning run
    directory (its best checkpoint). UserError when the tokenizer has more ids than the model's vocabulary."""
    from xlm_jax.api import load
    from xlm_jax.data.tokenizer import Tokenizer

    if (Path(checkpoint) / "best" / TASK_FILE).is_file():  # a fine-tuning run directory: its best checkpoint
        checkpoint = str(Path(checkpoint) / "best")
    model = load(checkpoint, tokenizer=False)  # --tokenizer is the one to use, whatever lies beside the checkpoint
    tokenizer = Tokenizer.load(tokenizer_path)
    if len(tokenizer) > model.config.vocab_size:
        raise UserError(f"tokenizer {tokenizer_path} has {len(tokenizer)} ids but the model's vocabulary has "
                        f"{model.config.vocab_size}: they do not belong together")
    return model, tokenizer


def _check_embed_args(max_len: int, batch_size: int) -> None:
    # Ranges first (before any file or checkpoint is read); a text needs 2 special tokens in either layout.
    T.check_layout_max_len(max_len, "xlmr", False)
    check_range("batch_size", batch_size, 1, integer=True)


def run_retrieval(checkpoint: str, tokenizer_path: str, src_file: str, tgt_file: str, src_lang: str | None = None,
                  tgt_lang: str | None = None, layer: int = -1, max_len: int = 128, batch_size: int = 32) -> dict:
    _check_embed_args(max_len, batch_size)
    src, tgt = read_lines(src_file), read_lines(tgt_file)
    if len(src) != len(tgt):
        raise UserError(f"{src_file} has {len(src)} lines but {tgt_file} has {len(tgt)}: they must be line-aligned")
    if not src:
        raise UserError(f"{src_file} is empty")
    model, tokenizer = load_embedder(checkpoint, tokenizer_path)
    a = embed_sentences(model, tokenizer, src, src_lang, layer, max_len, batch_size)
    b = embed_sentences(model, tokenizer, tgt, tgt_lang, layer, max_len, batch_size)
    out = retrieval_scores(a, b)
    return {"src_file": str(src_file), "tgt_file": str(tgt_file), "src_lang": src_lang, "tgt_lang": tgt_lang,
            "layer": layer, **out}


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
                out: str | None = None, force: bool = False) -> dict:
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
    model, tokenizer = load_embedder(checkpoint, tokenizer_path)
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
             batch_size: int = 32, backend: str = "auto", out: str | None = None, force: bool = False) -> dict:
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
    model, tokenizer = load_embedder(checkpoint, tokenizer_path)
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


# ------------------------------------------------------------------------------------------------- CLI


def _is_evaluate_output(directory: Path) -> bool:
    # Written before output markers: results only (a fine-tuning run also has its config).
    return (directory / "results.json").is_file() and not (directory / "finetune_config.json").is_file()


def run_task_eval(checkpoint: str, tokenizer_path: str, data: Sequence[str], out: str | None = None,
                  batch_size: int = 64, split_name: str = "test", force: bool = False) -> tuple[str, dict]:
    """-> (markdown table, results dict). `out`, when given, must be new, empty or an earlier `evaluate` output
    (else UserError, unless `force`: then results.md / results.json are written into it, other files kept)."""
    from xlm_jax.data.tokenizer import Tokenizer

    check_range("batch_size", batch_size, 1, integer=True)
    if out:
        outputs.check_dir(out, "evaluate", force=force, legacy=_is_evaluate_output)
    _, info = find_task_checkpoint(checkpoint)  # its task says how to read the data: read (and check) it first
    if info.spec.kind == "span":  # extractive QA: SQuAD-format files, EM / F1 (xlm_jax.tasks.qa)
        from xlm_jax.tasks.qa import evaluate_checkpoint

        return evaluate_checkpoint(checkpoint, tokenizer_path, data, out, batch_size, split_name, force)
    examples = T.read_files(info.spec, data)
    if not examples:
        raise UserError(f"no examples in {', '.join(data)}")
    tokenizer = Tokenizer.load(tokenizer_path)
    model, params, config, info = load_task_model(checkpoint)
    mesh = make_mesh(MeshConfig())
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings = jax.tree.map(lambda _: replicated, params)
    params = jax.device_put(params, shardings)
    scores, truncated = evaluate_examples(model, params, config, info, tokenizer, examples, mesh, shardings, batch_size)
    markdown, table = results_table({split_name: scores}, info.spec.metric)
    table.update(task=info.task, checkpoint=str(checkpoint), truncated=truncated)
    if out:
        out_dir = outputs.claim_dir(out, "evaluate", force=force, legacy=_is_evaluate_output)
        outputs.atomic_write_text(out_dir / "results.md", markdown + "\n")
        outputs.atomic_write_text(out_dir / "results.json", json.dumps(table, indent=2))
    return markdown, table


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.evaluate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("task", help="evaluate a fine-tuned checkpoint on task data, per language")
    t.add_argument("--checkpoint", required=True, help="fine-tuning run directory (or its best/ directory)")
    t.add_argument("--tokenizer", required=True)
    t.add_argument("--data", nargs="+", required=True, help="data files, optionally LANG:PATH")
    t.add_argument("--out", default=None, help="directory for results.md / results.json: new, empty, or an "
                   "earlier --out of evaluate")
    t.add_argument("--force", action="store_true", help="write into --out even if it holds files evaluate did not "
                   "write (results.md / results.json are replaced, other files kept)")
    t.add_argument("--batch-size", type=positive_int, default=64)
    r = sub.add_parser("retrieval", help="sentence retrieval P@1 on line-aligned files (Tatoeba / BUCC style)")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--tokenizer", required=True)
    r.add_argument("--src-file", required=True)
    r.add_argument("--tgt-file", required=True)
    r.add_argument("--src-lang", default=None)
    r.add_argument("--tgt-lang", default=None)
    r.add_argument("--layer", type=int, default=-1, help="layer to pool (1..L, negative from the top; default -1)")
    r.add_argument("--max-len", type=arg_range(T.min_len("xlmr", False)), default=128,
                   help="tokens per sentence, specials included (capped at the model's positions)")
    r.add_argument("--batch-size", type=positive_int, default=32)
    for name, help_ in (("tatoeba", "Tatoeba accuracy (xx -> en, cosine) from tatoeba.{xxx}-eng.{xxx|eng} files"),
                        ("bucc", "BUCC 2018 bitext-mining precision / recall / F1 (ratio margin, threshold tuned on "
                                 "--tune-split)")):
        m = sub.add_parser(name, help=help_)
        m.add_argument("--checkpoint", required=True, help="pretraining run, checkpoint, or fine-tuning run")
        m.add_argument("--tokenizer", required=True)
        m.add_argument("--data", required=True, help="directory of the released files")
        m.add_argument("--langs", nargs="+", default=None, help="default: every language found in --data")
        m.add_argument("--layer", type=int, default=-1, help="layer to pool (1..L, negative from the top; default -1)")
        m.add_argument("--max-len", type=arg_range(T.min_len("xlmr", False)), default=128)
        m.add_argument("--batch-size", type=positive_int, default=32)
        m.add_argument("--backend", choices=("auto", "faiss", "numpy"), default="auto",
                       help="nearest neighbours: faiss if installed (auto), or blocked NumPy products")
        m.add_argument("--out", default=None, help="also write the JSON result to this file (must be new)")
        m.add_argument("--force", action="store_true", help="replace an existing --out file")
        if name == "bucc":
            m.add_argument("--k", type=positive_int, default=4, help="neighbours in the margin (default 4)")
            m.add_argument("--tune-split", default="sample", help="split whose gold pairs choose the threshold")
            m.add_argument("--test-split", default="test", help="split scored with that threshold (BUCC 2018's "
                           "released gold: sample and training; XTREME reports training)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.command in ("tatoeba", "bucc"):
            common = dict(langs=args.langs, layer=args.layer, max_len=args.max_len, batch_size=args.batch_size,
                          backend=args.backend, out=args.out, force=args.force)
            if args.command == "tatoeba":
                result = run_tatoeba(args.checkpoint, args.tokenizer, args.data, **common)
            else:
                result = run_bucc(args.checkpoint, args.tokenizer, args.data, tune_split=args.tune_split,
                                  test_split=args.test_split, k=args.k, **common)
            print(json.dumps(result, indent=2))
        elif args.command == "retrieval":
            result = run_retrieval(args.checkpoint, args.tokenizer, args.src_file, args.tgt_file, args.src_lang,
                                   args.tgt_lang, args.layer, args.max_len, args.batch_size)
            print(json.dumps(result, indent=2))
        else:
            markdown, table = run_task_eval(args.checkpoint, args.tokenizer, args.data, args.out, args.batch_size,
                                            force=args.force)
            if table["truncated"]:
                print(f"note: {table['truncated']} inputs were longer than max_len={table.get('max_len', '')} and were truncated",
                      file=sys.stderr)
            print(markdown)


if __name__ == "__main__":
    main()
