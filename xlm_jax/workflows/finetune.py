"""The fine-tuning workflow behind `python -m xlm_jax.finetune`: one set-up and loop for every task
(`xlm_jax.tasks`: XNLI, PAWS-X, generic classification, NER, extractive QA), each task answering through its
`Task` (reading, labels, features, batches, head and loss, predictions, scores), with per-language results.

Protocols (`protocol=`):
- zero_shot (default): train on the `train_lang` (English) examples only, evaluate on every language present in
  the valid / test files (the XLM and XLM-R papers' "cross-lingual transfer");
- translate_train_all: train on every language's training examples (machine-translated train files).

Model selection: after every `eval_every` steps (default: once per epoch) the valid set is scored per language;
`select_on=avg` keeps the step with the best average over languages, `select_on=en` (any code) the best score on
that language. `patience=N` stops after N evaluations without improvement. The best parameters are written to
`OUT/best/<step>` (our orbax format, with `task.json`: task, labels, max_len) so that `python -m xlm_jax.evaluate
task --checkpoint OUT` rebuilds the head. At the end the best parameters are scored on valid and test and the
per-language table (average last) is printed and written to `OUT/results.md` and `OUT/results.json`. OUT must be
new, empty or an earlier fine-tuning output (a pretraining run directory is refused, unless --force).

Exit codes: 0 done; 2 bad input (config, data, OUT); 3 the loss, a gradient or the parameters became NaN / inf
(training stops; nothing is saved after the last good evaluation, whose checkpoint the error names); 130 / 143
stopped by SIGINT / SIGTERM after saving the state to OUT/resume/<step> (a second signal ends at once). Re-running
the same command resumes from it to the same result as an uninterrupted run; on a finished OUT it trains nothing
and shows the stored results (`xlm_jax.workflows.finetune_resume`).

Optimisation: AdamW with linear warm-up (`warmup_ratio` of the steps) and linear decay (`xlm_jax.training.optim`), a
separate head learning rate (`head_lr`), and layer-wise learning-rate decay (`layer_decay` < 1): layer l of L
(1 = bottom) updates with lr · decay^(L + 1 - l), the embeddings with lr · decay^(L + 1), the head with head_lr.
Because layers are stacked [L, ...], the decay is a per-row scale on the leading axis. It scales the *updates*
(after Adam), not the gradients: Adam divides out any constant gradient scale, so scaling gradients would leave
the learning rates unchanged.

The step is pretraining's (`xlm_jax.training.step.make_step`, with the task's loss, `Task.loss`): pure, jitted once per batch
width with explicit shardings on the same (data, fsdp, tensor) mesh as pretraining (`xlm_jax.training.sharding`), state
donated; clipping and the learning-rate scales are the optimizer's transforms.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xlm_jax.core import outputs
from xlm_jax.core.errors import NonFiniteError, UserError, check_choice, check_fields, check_range
from xlm_jax.data.packing import check_packing
from xlm_jax.data.tokenizer_files import load_tokenizer
from xlm_jax.models.config import ModelConfig, check_dtype, require_encoder
from xlm_jax.training.settings import MAX_SEED, check_batch_split, load_dataclass
from xlm_jax.tasks import (InputProtocol, Task, check_layout_max_len, get_task, packed_rows_needed, read_all,
                           resolve_labels)
from xlm_jax.tasks.base import task_loss  # noqa: F401  (the classification / NER loss, used by tests)
from xlm_jax.tasks.contrastive import ContrastiveConfig
from xlm_jax.training.checkpoint import restore_params, save_params
from xlm_jax.training.optim import OptimizerConfig, check_adamw, make_optimizer
from xlm_jax.training.sharding import MeshConfig, batch_size_multiple, check_mesh_sizes, make_mesh
from xlm_jax.training.signals import StopSignals, Stopped
from xlm_jax.training.step import abstract_boxed, all_finite, first_non_finite, make_step, state_shardings
from xlm_jax.workflows import finetune_resume
from xlm_jax.workflows.evaluate import evaluate_features, make_predict_fn
from xlm_jax.workflows.loading import FINETUNE_CONFIG, TASK_FILE, TaskInfo, fine_tuned_checkpoint, task_model
from xlm_jax.workflows.tokenizer_check import Found, check_fits, checkpoint_tokenizer, copy_tokenizer

PROTOCOLS = ("zero_shot", "translate_train_all")
INIT_HEADS = ("keep", "fresh")  # init_head=: reuse the checkpoint's task head when its labels match / a new head


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    task: str = "xnli"  # xnli | pawsx | classification | ner | qa | contrastive
    init: str = ""  # orbax checkpoint: ours, or converted (python -m xlm_jax.convert); a fine-tuning output: its best
    init_head: str = "keep"  # keep: reuse init's task head when its labels are this task's (else refuse) | fresh
    tokenizer: str = ""  # SentencePiece .model or tokenizer.json; "": the init checkpoint's own
    out: str = "runs/finetune"
    train: tuple[str, ...] = ()  # data files, optionally LANG:PATH
    valid: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # classification / ner: label set (default: every label in the train files)
    protocol: str = "zero_shot"  # zero_shot | translate_train_all
    train_lang: str = "en"  # zero_shot: the only training language
    select_on: str = "avg"  # avg | a language code: validation score used for model selection
    max_len: int = 128  # tokens per input, specials included (capped at the model's positions)
    # Packing (docs/data.md "Packing"): each step's batch_size examples (the same ones as unpacked) are packed
    # several per row of pack_len tokens, attention within each example; false: one example per padded row.
    pack: bool = True
    pack_len: int = 0  # packed row length; 0 = max_len (may exceed the model's positions: they restart per example)
    pack_segments: int = 8  # the most examples per packed row
    batch_size: int = 32
    eval_batch_size: int = 64
    epochs: float = 3.0
    max_steps: int = 0  # > 0 overrides epochs
    eval_every: int = 0  # steps between validations; 0 = once per epoch
    patience: int = 0  # evaluations without improvement before stopping; 0 = never stop early
    lr: float = 2e-5
    head_lr: float = 0.0  # 0 = lr
    layer_decay: float = 1.0  # layer-wise lr decay; 1 = off
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-6
    dropout: float = -1.0  # -1: the checkpoint's
    dtype: str = ""  # compute dtype override (bfloat16 on accelerators); "" = the checkpoint's
    seed: int = 0
    log_every: int = 50
    mesh_data: int = -1
    mesh_fsdp: int = 1
    mesh_tensor: int = 1
    # task qa only (xlm_jax.tasks.qa): context windows and span decoding, BERT / XTREME run_squad defaults
    doc_stride: int = 128  # context pieces between the starts of consecutive windows
    max_query_len: int = 64  # question pieces kept (0 = all; a longer question is then refused)
    n_best: int = 20  # best start / end logits per window tried as answer spans
    max_answer_length: int = 30  # longest answer, in pieces
    # task contrastive only (xlm_jax.tasks.embedding): loss, pooling, prefixes, GradCache (ContrastiveConfig)
    contrastive: ContrastiveConfig = dataclasses.field(default_factory=ContrastiveConfig)

    def __post_init__(self):
        """Every field's type and range, before any file is read (UserError naming the key, the value and what
        is valid); what depends on the data or the checkpoint (select_on, max_len against the model's input
        layout) is checked as soon as those are loaded, before training."""
        check_fields(self)
        spec = get_task(self.task)
        check_choice("protocol", self.protocol, PROTOCOLS)
        check_choice("init_head", self.init_head, INIT_HEADS)
        if self.labels and spec.labels:
            raise UserError(f"labels={list(self.labels)}: task {spec.name} has a fixed label set "
                            f"({', '.join(spec.labels)}); leave labels empty")
        if self.labels and (len(set(self.labels)) != len(self.labels) or len(self.labels) < 2):
            raise UserError(f"labels={list(self.labels)}: need at least 2 different labels, each listed once")
        for name in ("train_lang", "select_on", "out"):
            if not getattr(self, name).strip():
                raise UserError(f"{name}='': must not be empty")
        # The leaner (XLM) layout's minimum here; the checkpoint's own layout is checked once it is loaded.
        check_layout_max_len(self.max_len, "xlm", spec.pair)
        check_range("pack_segments", self.pack_segments, 1, integer=True)
        check_range("pack_len", self.pack_len, 0, integer=True, also={0: "max_len"})
        if self.pack and self.pack_len:
            check_packing(self.pack_len, self.pack_segments, self.max_len, "pack_len", "pack_segments",
                          f"an input of max_len={self.max_len}")
        for name in ("batch_size", "eval_batch_size", "log_every"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("epochs", self.epochs, 0, low_open=True)
        for name in ("max_steps", "eval_every", "patience"):
            check_range(name, getattr(self, name), 0, integer=True)
        check_adamw(self)
        check_range("head_lr", self.head_lr, 0)
        check_range("layer_decay", self.layer_decay, 0, 1, low_open=True)
        check_range("warmup_ratio", self.warmup_ratio, 0, 1, high_open=True)
        check_range("dropout", self.dropout, 0, 1, high_open=True, also={-1.0: "the checkpoint's"})
        if self.dtype:
            check_dtype("dtype", self.dtype)
        check_range("seed", self.seed, 0, MAX_SEED, integer=True)
        for name in ("doc_stride", "n_best", "max_answer_length"):
            check_range(name, getattr(self, name), 1, integer=True)
        check_range("max_query_len", self.max_query_len, 0, integer=True, also={0: "no limit"})
        if spec.kind == "embedding":
            self.contrastive.check_batch(self.batch_size)
        check_mesh_sizes({"mesh_data": self.mesh_data, "mesh_fsdp": self.mesh_fsdp, "mesh_tensor": self.mesh_tensor})
        if -1 not in (self.mesh_data, self.mesh_fsdp):  # else the device count decides, known at start-up
            check_batch_split(self.batch_size, self.mesh_data, self.mesh_fsdp, key="batch_size")


def load_config(path: str | None, overrides: Sequence[str] = ()) -> FinetuneConfig:
    """YAML file (flat mapping) + key=value overrides (values parsed as YAML: `train=[a.tsv,de:b.tsv]`), each
    value checked against the field's type by the pretraining config's loader."""
    return load_dataclass(FinetuneConfig(), path, overrides)


# ------------------------------------------------------------------------------------------ parameters


def init_from_checkpoint(path: str, spec: Task, labels: Sequence[str], rng, overrides: dict,
                         init_head: str = "keep") -> tuple[dict, ModelConfig, str]:
    """-> (params {"encoder", "classifier"} as NumPy, config, message). `path`: a checkpoint, or a fine-tuning
    output (its best checkpoint, `loading.fine_tuned_checkpoint`). The encoder comes from the checkpoint; its task
    head is kept (init_head="keep") only when its recorded labels (task.json) are `labels`, same names in the same
    order, for the same head kind, and its shapes fit; otherwise (no head, or init_head="fresh") a new head is
    initialised from `rng`. Raises UserError when the checkpoint's head has other labels and init_head="keep",
    naming both label lists and init_head=fresh."""
    path, old_task = fine_tuned_checkpoint(path)
    params, config = restore_params(path)
    config = require_encoder(config, str(path), "finetune init=")
    if "encoder" not in params:
        raise UserError(f"{path}: no 'encoder' parameters (top-level keys: {sorted(params)}); not an xlm_jax checkpoint")
    config = config.replace(**overrides) if overrides else config
    if spec.kind == "embedding":  # an embedding model is the encoder + pooling: no head to keep or initialise
        dropped = sorted(k for k in params if k != "encoder")
        return {"encoder": params["encoder"]}, config, ("the checkpoint's encoder" + (
            f" (left out: {', '.join(dropped)})" if dropped else "") + f"; {spec.name}: no task head")
    head = spec.head(config, len(labels))
    dummy = jnp.zeros((1, 4, config.hidden_size), jnp.float32)
    fresh = jax.tree.map(np.asarray, nn.unbox(head.init({"params": rng}, dummy, True)["params"]))
    old = params.get("classifier")
    if old is not None and init_head == "fresh":
        what = "has a task head" + (f" ({old_task.task}: {', '.join(old_task.labels)})" if old_task else "")
        message = f"the checkpoint {what}: init_head=fresh: initialised a new {spec.name} head with {len(labels)} labels"
        return {"encoder": params["encoder"], "classifier": fresh}, config, message
    if old is not None and old_task is not None and (old_task.labels != tuple(labels) or old_task.spec.kind != spec.kind):
        raise UserError(
            f"init={path}: its {old_task.task} head has labels [{', '.join(old_task.labels)}] but task {spec.name} here "
            f"has labels [{', '.join(labels)}]; a task head is reused only for the same labels in the same order "
            f"(and head kind): set init_head=fresh to start a new {spec.name} head on its encoder"
            + ("" if spec.labels or set(labels) != set(old_task.labels)
               else f", or labels=[{','.join(old_task.labels)}] to keep the checkpoint's order"))
    same = old is not None and jax.tree.structure(old) == jax.tree.structure(fresh) and all(
        a.shape == b.shape for a, b in zip(jax.tree.leaves(old), jax.tree.leaves(fresh)))
    if same:
        why = (f"its labels [{', '.join(old_task.labels)}] are this task's" if old_task is not None else
               "its labels are not recorded (no task.json); init_head=fresh starts a new one")
        return {"encoder": params["encoder"], "classifier": old}, config, f"kept the checkpoint's classifier head ({why})"
    if old is not None and old_task is None and init_head == "keep":
        raise UserError(f"init={path}: its task head (labels not recorded: no task.json) does not fit task {spec.name} "
                        f"with {len(labels)} labels; set init_head=fresh to start a new head on its encoder")
    what = "has no classifier head" if old is None else "has a classifier head of another shape"
    message = f"the checkpoint {what}: initialised a new {spec.name} head with {len(labels)} labels"
    return {"encoder": params["encoder"], "classifier": fresh}, config, message


def check_tree(params: Any, abstract: Any, path: str) -> None:
    """The checkpoint's encoder must match the architecture its own config describes."""
    got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(params)}
    want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(abstract)}
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))[:3]
        raise UserError(f"{path}: parameters do not match the model config (first differences: {diff})")


def lr_scales(params: Any, config: ModelConfig, layer_decay: float, head_scale: float) -> Any:
    """Per-leaf update scale: head_scale for the head, decay^(L+1-l) for layer l (a [L, 1, ...] array on the
    stacked axis), decay^(L+1) for the embeddings, decay for the final LayerNorm of pre-LN models."""
    n = config.num_layers
    layer_scale = layer_decay ** (n - np.arange(n, dtype=np.float32))  # bottom layer (index 0): decay^L

    def one(path, leaf):
        names = [str(getattr(k, "key", k)) for k in path]
        if names[0] == "classifier":
            return np.float32(head_scale)
        if "layers" in names:
            return layer_scale.reshape((n,) + (1,) * (leaf.ndim - 1))
        if "embeddings" in names:
            return np.float32(layer_decay ** (n + 1))
        return np.float32(layer_decay)  # final_norm sits on top of the last layer

    return jax.tree_util.tree_map_with_path(one, params)


def scale_updates(scales: Any) -> optax.GradientTransformation:
    """Multiplies each update leaf by a fixed (broadcastable) scale: per-layer and head learning rates."""

    def init(params):
        return optax.EmptyState()

    def update(updates, state, params=None):
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state

    return optax.GradientTransformation(init, update)


def build_optimizer(cfg: FinetuneConfig, params: Any, config: ModelConfig, total_steps: int) -> optax.GradientTransformation:
    warmup = int(cfg.warmup_ratio * total_steps)
    opt_cfg = OptimizerConfig(lr=cfg.lr, schedule="linear", warmup_steps=warmup, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                              weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm)
    base = make_optimizer(opt_cfg, max(total_steps, warmup + 1))
    head_scale = (cfg.head_lr / cfg.lr) if cfg.head_lr > 0 else 1.0
    if cfg.layer_decay == 1.0 and head_scale == 1.0:
        return base
    return optax.chain(base, scale_updates(lr_scales(params, config, cfg.layer_decay, head_scale)))


# ------------------------------------------------------------------------------------------------ step


def setup_state(params: Any, model: nn.Module, optimizer, mesh) -> tuple[dict, Any]:
    """Places params + fresh optimizer state on the mesh -> (state, state shardings)."""
    _, shardings = state_shardings(model, optimizer, mesh)
    params = jax.device_put(params, shardings["params"])
    with jax.set_mesh(mesh):
        opt_state = jax.jit(optimizer.init, out_shardings=shardings["opt_state"])(params)
    state = {"params": params, "opt_state": opt_state, "step": jax.device_put(jnp.zeros((), jnp.int32), shardings["step"])}
    return state, shardings


# ------------------------------------------------------------------------------------------------ loop


@dataclasses.dataclass
class RunResult:
    best_step: int
    best_score: float
    stopped_early: bool
    steps: int
    markdown: str
    table: dict
    history: list


def step_rows(n_examples: int, batch_size: int, seed: int, steps: int) -> list[np.ndarray]:
    """The training examples of each step (int64 [batch_size] each): epochs of a seeded permutation, chained
    (reshuffled when the current one runs out). Planned up front so that packing can size its rows."""
    order_rng = np.random.default_rng(seed)
    order = np.array([], np.int64)
    plan = []
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, order_rng.permutation(n_examples)])
        plan.append(order[:batch_size])
        order = order[batch_size:]
    return plan


def select_score(per_lang: dict, select_on: str) -> float:
    """The model-selection score of one validation: the average of {lang: {"score"}} (avg) or one language's.
    Raises UserError when that language has no valid data."""
    if select_on == "avg":
        return float(np.mean([v["score"] for v in per_lang.values()]))
    if select_on not in per_lang:
        raise UserError(f"select_on={select_on!r}: the valid data has languages {', '.join(sorted(per_lang))} (or use avg)")
    return float(per_lang[select_on]["score"])


def save_best(out: Path, params: Any, config: ModelConfig, info: TaskInfo, step: int) -> Path:
    """Replaces OUT/best with `params` as checkpoint `step` (our orbax format) plus task.json -> OUT/best."""
    best = out / "best"
    tmp = out / "best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_params(tmp, jax.device_get(params), config, step)
    (tmp / TASK_FILE).write_text(info.to_json())
    # Swap in one rename so a crash never leaves a run without a complete best checkpoint.
    old = out / "best.old"
    if best.exists():
        best.rename(old)
    tmp.rename(best)
    shutil.rmtree(old, ignore_errors=True)
    return best




def training_split(cfg: FinetuneConfig, train_all: list, noun: str = "examples") -> list:
    """The training examples the protocol uses: all of `train_all` (translate_train_all) or those in
    `cfg.train_lang` (zero_shot); anything with a `.lang`. Raises UserError naming the files and the languages
    they hold when none is left; `noun` ("examples", "questions") words it."""
    if cfg.protocol == "translate_train_all":
        return train_all
    train = [e for e in train_all if e.lang == cfg.train_lang]
    if not train:
        langs = sorted({e.lang for e in train_all})
        raise UserError(f"no {cfg.train_lang!r} training {noun} in {', '.join(cfg.train)} (languages: {langs}); "
                        "set train_lang=, a LANG: prefix, or protocol=translate_train_all")
    return train


def check_select_on(cfg: FinetuneConfig, valid: list, noun: str = "examples") -> None:
    """UserError unless `cfg.select_on` is avg or a language of the valid data (not checked without valid data:
    then the last step is the model)."""
    valid_langs = sorted({e.lang for e in valid})
    if valid and cfg.select_on != "avg" and cfg.select_on not in valid_langs:
        raise UserError(f"select_on={cfg.select_on!r}: no valid {noun} in that language; valid: avg, "
                        f"{', '.join(valid_langs)}")


def load_model(cfg: FinetuneConfig, spec: Task, labels: Sequence[str], tokenizer, log,
               check_max_len: Callable[[int, str], None], tokenizer_sha256: str = ""
               ) -> tuple[dict, ModelConfig, nn.Module, int]:
    """The checkpoint `cfg.init` with `spec`'s head (`init_from_checkpoint`, cfg.dropout / cfg.dtype applied)
    -> (params as NumPy, model config, task model, max_len); the head is initialised from cfg.seed. max_len is cfg.max_len capped at
    the model's positions, checked by `check_max_len(max_len, family)` against the checkpoint's input layout.
    Raises UserError when the checkpoint is not ours, does not match its own config, or does not fit the tokenizer
    (`check_tokenizer_fits`: fewer rows than the tokenizer's ids, special tokens at other ids; a sha256 other than
    `tokenizer_sha256`, the one the checkpoint recorded, only warns)."""
    overrides: dict[str, Any] = {}
    if cfg.dropout >= 0:
        overrides.update(dropout=cfg.dropout, attention_dropout=cfg.dropout)
    if cfg.dtype:
        overrides["dtype"] = cfg.dtype
    params, config, message = init_from_checkpoint(cfg.init, spec, labels, jax.random.key(cfg.seed), overrides,
                                                   cfg.init_head)
    log(message)
    check_fits(tokenizer, config, f"finetune init={cfg.init}", tokenizer_sha256)
    max_len = min(cfg.max_len, config.max_positions)
    check_max_len(max_len, config.family)
    model = task_model(config, spec, len(labels))
    check_tree(params, nn.unbox(abstract_boxed(model)), cfg.init)
    return params, config, model, max_len


def plan_steps(cfg: FinetuneConfig, n_train: int) -> tuple[Any, int, int, int]:
    """The mesh and the step counts for `n_train` training rows -> (mesh, data x fsdp multiple, total steps,
    steps between validations). Raises UserError when batch_size does not split over the mesh."""
    mesh = make_mesh(MeshConfig(cfg.mesh_data, cfg.mesh_fsdp, cfg.mesh_tensor))
    multiple = batch_size_multiple(mesh)
    if cfg.batch_size % multiple:
        raise UserError(f"batch_size={cfg.batch_size} is not divisible by mesh data x fsdp = {multiple}")
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    return mesh, multiple, total, cfg.eval_every or steps_per_epoch


def init_tokenizer(cfg: FinetuneConfig):
    """-> (the tokenizer to fine-tune with, what `init`'s checkpoint records of its own): `cfg.tokenizer`, else
    the copy the init checkpoint holds (a run directory's tokenizer.model, a fine-tuning output's copy, a
    converted or Hugging Face directory's tokenizer files). Raises UserError when neither exists or the file
    cannot be read; whether it fits the model is checked when the model is loaded (`load_model`)."""
    try:
        found = checkpoint_tokenizer(cfg.init)
    except UserError:  # init itself is refused with its own message when it is loaded
        if not cfg.tokenizer:
            raise
        found = Found(None)
    if cfg.tokenizer:
        return load_tokenizer(cfg.tokenizer), found
    if found.file is None:
        raise UserError(f"tokenizer= is required: init={cfg.init} holds no tokenizer ({found.note or 'none found'});"
                        " give the SentencePiece .model or tokenizer.json it was trained with")
    try:
        return load_tokenizer(found.file), found
    except UserError as err:
        raise UserError(f"{err} (found with init={cfg.init}; pass tokenizer=PATH to use another)") from None


def record_tokenizer(out: Path, tokenizer) -> None:
    """Copies the tokenizer into OUT (so that the output carries it, from any working directory) and records, in
    OUT/finetune_config.json, the copy's name relative to OUT (`tokenizer_copy`), its sha256 and the file it came
    from (`tokenizer_source`, absolute). The config's own `tokenizer` stays as given, so that a re-run of the same
    command is recognised as the same config (resume, complete)."""
    name = copy_tokenizer(tokenizer, out)
    record = json.loads((out / FINETUNE_CONFIG).read_text())
    record.update(tokenizer_copy=name, tokenizer_sha256=tokenizer.sha256,
                  tokenizer_source=str(Path(tokenizer.path).absolute()))
    outputs.atomic_write_text(out / FINETUNE_CONFIG, json.dumps(record, indent=2))


def claim_out(cfg: FinetuneConfig, out: Path, force: bool) -> None:
    """Claims OUT for fine-tuning (after every up-front check) and records the config in it."""
    outputs.claim_dir(out, "finetune", force=force, legacy=FINETUNE_CONFIG)
    (out / FINETUNE_CONFIG).write_text(json.dumps(dataclasses.asdict(cfg), indent=2))


@dataclasses.dataclass
class Selection:
    """What `train_and_select` returns: the selected parameters (placed with the run's parameter shardings),
    their step and validation score (-inf without valid data), the validation history, the steps run and
    whether patience stopped the run; `state` and `meta` (the train state after the last step and
    `finetune_resume.selection_meta`) let a signal during the final evaluation save it."""

    params: Any
    step: int
    score: float
    history: list
    steps: int
    stopped_early: bool
    state: Any = None
    meta: dict | None = None


def train_and_select(cfg: FinetuneConfig, out: Path, state: dict, train_step: Callable, batch: Callable[[int], dict],
                     evaluate_valid: Callable[[Any], dict] | None, total: int, eval_every: int, config: ModelConfig,
                     info: TaskInfo, params_shardings: Any, log=print,
                     lang_entry: Callable[[dict], Any] = lambda scores: scores["score"], acc_label: str = "acc",
                     score_label: str = "", stop: StopSignals | None = None, resume: dict | None = None) -> Selection:
    """The fine-tuning loop shared by every task: `total` steps of `train_step(state, batch(step), rng)` (step
    from 1), a line in OUT/log.jsonl every cfg.log_every steps, validation every `eval_every` steps and at the
    last: `evaluate_valid(params)` -> {lang: {"score", ...}} (None: no valid data), scored by `select_score`;
    each improvement is saved to OUT/best (`save_best`), cfg.patience evaluations without one stop the run.
    Without valid data the last step is the model. `lang_entry` turns one language's scores into its history
    entry; `acc_label` and `score_label` word the printed lines ("acc", "" -> "span acc", " F1").

    `resume` (`finetune_resume.restore`'s meta: "step", the selection, "best_params") continues a stopped run
    after its step; `state` is then the restored one. After each step, once `stop` has seen SIGINT / SIGTERM, the
    state and the selection are saved to OUT/resume/<step> (`finetune_resume.save`), one line names it, and
    `Stopped` is raised (the command exits 128 + signum).

    Raises NonFiniteError (before anything later is logged or saved) once the loss, a gradient norm or the
    parameters become NaN / inf; its `last_good` names the best checkpoint saved before (or None)."""
    resume = resume or {}
    start = int(resume.get("step", 0))
    history = list(resume.get("history", []))
    best_score, best_step = resume.get("best_score", -math.inf), int(resume.get("best_step") or 0)
    bad, stopped_early = int(resume.get("bad", 0)), bool(resume.get("stopped_early", False))
    best_params = resume.get("best_params")
    dropout_rng = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    first_bad = jnp.asarray(-1, jnp.int32)  # on device: the first step whose loss / gradient norm was NaN / inf

    def finite_or_raise(step: int) -> None:
        """Before anything is logged as good or saved: diverged training stops here, naming the last good model."""
        last_good = str(out / "best" / str(best_step)) if best_params is not None else None
        first = int(first_bad)
        if first >= 0:
            raise NonFiniteError(first, "the loss or gradient norm is NaN / inf", last_good)
        if not bool(all_finite(state["params"])):
            raise NonFiniteError(step, "the parameters contain NaN / inf", last_good)

    def meta() -> dict:
        return finetune_resume.selection_meta(history, best_score, best_step, bad, stopped_early)

    start_time = time.perf_counter()
    finetune_resume.keep_log(out, start)
    step = start
    with open(out / "log.jsonl", "a") as logfile:
        for step in range(start + 1, total + 1) if not stopped_early else ():
            state, metrics = train_step(state, batch(step), dropout_rng)
            first_bad = first_non_finite(first_bad, metrics, jnp.asarray(step, jnp.int32))
            if step % cfg.log_every == 0 or step == total:
                finite_or_raise(step)
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                record = {"step": step, **m, "elapsed_s": round(time.perf_counter() - start_time, 2)}
                logfile.write(json.dumps(record) + "\n")
                log(f"step {step}/{total} loss {m['loss']:.4f} {acc_label} {m['accuracy']:.3f} lr {m['lr']:.2e}")
            if evaluate_valid is not None and (step % eval_every == 0 or step == total):
                finite_or_raise(step)
                per_lang = evaluate_valid(state["params"])
                score = select_score(per_lang, cfg.select_on)
                history.append({"step": step, "score": score,
                                "per_lang": {k: lang_entry(v) for k, v in per_lang.items()}})
                logfile.write(json.dumps({"step": step, "valid": history[-1]}) + "\n")
                improved = score > best_score
                log(f"step {step}: valid {cfg.select_on}{score_label} {100 * score:.2f}" + (" (best)" if improved else ""))
                if improved:
                    best_score, best_step, bad = score, step, 0
                    best_params = jax.device_get(state["params"])
                    save_best(out, best_params, config, info, step)
                else:
                    bad += 1
                    if cfg.patience and bad >= cfg.patience:
                        stopped_early = True
                        log(f"early stop at step {step}: no improvement in {bad} evaluations (best step {best_step})")
                        break
            logfile.flush()
            if stop is not None and stop.signum is not None:
                finite_or_raise(step)
                stop_and_save(out, step, state, config, meta(), stop.signum, log)
    steps_done = step
    if best_params is None:  # no valid data: the last step is the model
        finite_or_raise(steps_done)
        best_params, best_step = jax.device_get(state["params"]), steps_done
        save_best(out, best_params, config, info, steps_done)
    return Selection(jax.device_put(best_params, params_shardings), best_step, best_score, history, steps_done,
                     stopped_early, state, meta())


def stop_and_save(out: Path, step: int, state: dict, config: ModelConfig, meta: dict, signum: int, log) -> None:
    """After SIGINT / SIGTERM: saves the state and selection of `step` to OUT/resume/<step>, says so in one line,
    and raises `Stopped(signum)`."""
    path = finetune_resume.save(out, step, state, config, meta)
    log(f"{Stopped(signum).name}: stopped after step {step}; checkpoint {path} saved. Re-run the same command to "
        "resume.")
    raise Stopped(signum)


def write_results(out: Path, cfg: FinetuneConfig, spec: Task, sel: Selection, train: list, results: dict,
                  to_table: Callable[[dict], tuple[str, dict]], **extra) -> RunResult:
    """Writes OUT/results.md and OUT/results.json: `to_table(results)` ({split: {lang: scores}} -> (markdown,
    table)) plus the run's record (task, protocol, selection, `extra`, history, training examples per language)
    -> the RunResult."""
    markdown, table = to_table(results) if results else ("(no valid / test data)", {})
    table.update(task=spec.name, protocol=cfg.protocol, select_on=cfg.select_on, best_step=sel.step, steps=sel.steps,
                 stopped_early=sel.stopped_early, **extra, history=sel.history,
                 train_examples={lang: sum(e.lang == lang for e in train) for lang in sorted({e.lang for e in train})})
    (out / "results.md").write_text(markdown + "\n")
    (out / "results.json").write_text(json.dumps(table, indent=2))
    return RunResult(sel.step, sel.score, sel.stopped_early, sel.steps, markdown, table, sel.history)


def completed_run(out: Path, log) -> RunResult:
    """The RunResult of a finished output (`finetune_resume.plan` said "complete"), from its results files."""
    table, markdown = finetune_resume.stored_results(out)
    history, best_step = table.get("history", []), table.get("best_step")
    best_score = next((h["score"] for h in history if h.get("step") == best_step), -math.inf)
    log(f"{out} is complete ({table.get('steps')} steps, best step {best_step}): nothing to train; its results are "
        f"in {out / 'results.md'} and results.json (to fine-tune again: choose another out=, or delete {out})")
    return RunResult(best_step, best_score, bool(table.get("stopped_early")), table.get("steps"), markdown, table,
                     history)


def finetune(cfg: FinetuneConfig, log=print, force: bool = False) -> RunResult:
    """Fine-tunes and evaluates as `cfg` says; returns the run's results (also written to `cfg.out`; a task with a
    `prediction_file` (qa) also writes OUT/predictions.json, per split and language).

    Raises UserError for bad input, before any training: among others when `cfg.out` is not new, empty or an
    earlier fine-tuning output (unless `force`: then the fine-tuning files are written into it, others kept), or
    cannot be written. Raises NonFiniteError when the loss, a gradient norm or the parameters become NaN / inf;
    nothing is saved after that step, and `.last_good` names the best checkpoint saved before it (or None).

    Stop and resume (`xlm_jax.workflows.finetune_resume`): on SIGINT / SIGTERM (main thread only) the state after
    the step in hand is saved to OUT/resume/<step> and `Stopped` is raised (`.exit_code` 130 / 143); the same
    config on the same OUT resumes from it to the result of an uninterrupted run (another config is a UserError),
    and on a finished OUT returns its stored results without training."""
    if not cfg.init:
        raise UserError("init= is required: an xlm_jax checkpoint (python -m xlm_jax.train, or python -m xlm_jax.convert)")
    if not cfg.train:
        raise UserError("train= is required: one or more data files (LANG:PATH to set their language)")
    task = get_task(cfg.task)
    task = task.configured(task.options(cfg))  # contrastive: its pooling and loss settings
    out = outputs.check_dir(cfg.out, "finetune", force=force, legacy=FINETUNE_CONFIG)
    todo = (finetune_resume.plan(cfg, out, FINETUNE_CONFIG, log)  # resume, complete or fresh (finetune_resume)
            if outputs.owner(out, {"finetune": FINETUNE_CONFIG}) == "finetune" else "fresh")
    if todo == "complete":
        return completed_run(out, log)
    tokenizer, found = init_tokenizer(cfg)
    options = task.options(cfg)
    task.check_max_len(cfg.max_len, "xlm", options)  # the leaner layout's minimum; the checkpoint's comes below

    train_all = read_all(task, cfg.train, "training")
    valid = read_all(task, cfg.valid, "evaluation")
    test = read_all(task, cfg.test, "evaluation")
    train = training_split(cfg, train_all, task.noun)
    labels = resolve_labels(task, cfg.labels, train)
    for examples in (train, valid, test):
        task.check_labels(examples, labels)
    check_select_on(cfg, valid, task.noun)
    params, config, model, max_len = load_model(
        cfg, task, labels, tokenizer, log, lambda max_len, family: task.check_max_len(max_len, family, options),
        found.sha256)
    info = TaskInfo(task.name, labels, max_len, options)

    protocol = InputProtocol.from_config(config)
    splits = {"train": train, "valid": valid, "test": test}
    feats = {split: task.features(examples, tokenizer, protocol, labels, max_len, options, split == "train")
             for split, examples in splits.items() if examples or split == "train"}
    train_feats = feats["train"]
    note = task.report.note(train_feats, "train", max_len, options)
    if note:
        log(note)

    mesh, multiple, total, eval_every = plan_steps(cfg, len(train_feats))
    plan = step_rows(len(train_feats), cfg.batch_size, cfg.seed, total)
    pack = cfg.pack and task.packed_batch is not None
    pack_len = cfg.pack_len or max_len
    if pack:  # one static row count for the run: the most rows any step's examples need, on the mesh
        pack_rows = packed_rows_needed(train_feats, plan, pack_len, cfg.pack_segments)
        pack_rows = -(-pack_rows // multiple) * multiple
    optimizer = build_optimizer(cfg, params, config, total)
    resumed = None
    if todo == "resume":  # the state of the stopped run, checked before anything is written
        state, shardings, resumed = finetune_resume.restore(out, config, model, optimizer, mesh)
        log(f"resuming from step {resumed['step']} ({out / finetune_resume.RESUME_DIR / str(resumed['step'])})")
    else:
        state, shardings = setup_state(params, model, optimizer, mesh)
    train_step = make_step(task.loss(model), optimizer, mesh, shardings)
    predict = make_predict_fn(model.clone(config=config.replace(dropout=0.0, attention_dropout=0.0)), mesh,
                              shardings["params"], logits=task.logits)

    claim_out(cfg, out, force)
    if todo == "fresh":
        finetune_resume.start_fresh(out)
    record_tokenizer(out, tokenizer)
    before, after = task.report.describe(train_feats, labels)
    log(f"{task.name}: {len(train)} training {task.noun} ({before}{cfg.protocol}), {len(valid)} valid, {len(test)} "
        f"test; {total} steps of {cfg.batch_size}{after}")
    if pack:
        log(f"packed: each step's {cfg.batch_size} examples in {pack_rows} rows of {pack_len} tokens (at most "
            f"{cfg.pack_segments} a row; pack=false: {cfg.batch_size} padded rows)")

    def batch(step: int) -> dict:
        rows = plan[step - 1]
        if not pack:
            return task.batch(train_feats, rows, cfg.batch_size, max_len, config.pad_token_id)
        packed = task.packed_batch(train_feats, rows, pack_rows, pack_len, cfg.pack_segments, config.pad_token_id)
        return {k: v for k, v in packed.items() if k not in ("packed_at", "start_at")}  # host-side only

    def evaluate(split: str, params) -> tuple[dict, list]:
        return evaluate_features(task, splits[split], feats[split], labels, options, predict, params,
                                 cfg.eval_batch_size, max_len, config.pad_token_id, multiple, pack=pack,
                                 pack_segments=cfg.pack_segments, pack_len=cfg.pack_len)

    report = task.report
    results, predictions = {}, {}
    with finetune_resume.signals() as stop:  # SIGINT / SIGTERM: save after the step in hand (finetune_resume)
        sel = train_and_select(cfg, out, state, train_step, batch,
                               (lambda p: evaluate("valid", p)[0]) if valid else None, total, eval_every, config,
                               info, shardings["params"], log, lang_entry=report.history_entry,
                               acc_label=report.acc_label, score_label=report.score_label, stop=stop, resume=resumed)
        for split in ("valid", "test"):
            if splits[split]:
                if stop is not None and stop.signum is not None:  # training is done: its final state is saved
                    stop_and_save(out, sel.steps, sel.state, config, sel.meta, stop.signum, log)
                results[split], preds = evaluate(split, sel.params)
                if task.prediction_file is not None:
                    predictions[split] = task.prediction_file(splits[split], preds)
        if stop is not None and stop.signum is not None:  # during the last scoring: stopped all the same
            stop_and_save(out, sel.steps, sel.state, config, sel.meta, stop.signum, log)
    run = write_results(out, cfg, task, sel, train, results, lambda r: task.table(r, cfg.train_lang),
                        **report.finetune_record(feats, labels, options))
    if task.prediction_file is not None:
        (out / "predictions.json").write_text(json.dumps(predictions, indent=1, ensure_ascii=False))
    finetune_resume.finished(out)
    for split in ("valid", "test"):
        note = report.note(feats[split], split, max_len, options) if split in feats else None
        if note:
            log(note)
    return run
