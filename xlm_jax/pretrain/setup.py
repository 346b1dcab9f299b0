"""Pretraining's set-up: everything `xlm_jax.pretrain.loop.train` does before its first step, as one `Run`.

`setup_run` reads top to bottom: the run directory checked, the start checked (`xlm_jax.pretrain.adapt.prepare`:
model.init_from, data.tokenizer, train.trainable), the data prepared (`xlm_jax.pretrain.data`), the model and the
mesh built, then the state restored from the latest checkpoint (after the resume checks: same tokenizer, an
undamaged checkpoint of the same model) or initialised (from model.init_from, or at random), and the run's files
written (`write_run_files`: config.yaml, tokenizer.model and the tokenizer record `check_same_tokenizer` reads).
`log_summary` logs devices, model, batch and steps before the first step.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import jax
import yaml
from jax.experimental import multihost_utils
from tqdm import tqdm

from xlm_jax.core import outputs
from xlm_jax.core.errors import UserError
from xlm_jax.data.batches import BatchSource, DataConfig
from xlm_jax.data.corpus import PreprocessedCorpus
from xlm_jax.data.tokenizer import file_sha256
from xlm_jax.data.tokenizer_files import RUN_RECORD, read_run_record
from xlm_jax.models.config import ModelConfig, to_dict as model_to_dict
from xlm_jax.pretrain import adapt, phases
from xlm_jax.pretrain.config import TrainConfig, check_batch_split, flat_keys, to_dict, to_yaml
from xlm_jax.pretrain.data import eval_languages, group_names, make_data_config, make_model_config, prepare_data
from xlm_jax.training import checkpoint, saving
from xlm_jax.training.optim import make_optimizer, make_schedule
from xlm_jax.training.sharding import batch_size_multiple, make_mesh
from xlm_jax.training.flops import peak_flops_override
from xlm_jax.training.step import abstract_state, init_state

INIT_STREAM = 0x7FFFFFFF  # fold_in(key(seed), INIT_STREAM) initialises; step k's dropout uses fold_in(key(seed), k)
TOKENIZER_RECORD = RUN_RECORD  # tokenizer_record.json: the run's tokenizer (sha256, path); resuming on other ids is refused


@dataclasses.dataclass
class Run:
    """Everything `train` sets up before its first step: the data, the model, the mesh, the state (fresh or
    restored) and the checkpoint managers. The loop and its edges read it; `state` and `meta` change as it runs."""

    cfg: TrainConfig
    lead: bool  # process 0 (or the only one): writes the run's files and logs
    multi_process: bool
    log: Any
    wall_start: float
    run_dir: Path
    data_dir: Path
    corpus: PreprocessedCorpus
    data_cfg: DataConfig
    model_cfg: ModelConfig
    source: BatchSource
    groups: dict[str, list[str]]
    eval_langs: list[str]
    mesh: Any
    steps: int
    stop_step: int
    schedule: Any
    optimizer: Any
    shardings: Any
    ckpt_dir: Path
    mngr: Any
    best_mngr: Any
    start: int
    key: Any
    meta: dict
    state: dict
    start_from: Any  # adapt.prepare's answer: model.init_from, data.tokenizer
    abstract_params: Any
    phase_plan: phases.PhasePlan  # per phase: the batch recipe and the model configuration (one phase by default)

    def train_meta(self, step: int) -> dict:
        return {"step": step, "seed": self.cfg.seed, "data_position": step,
                "rng": f"dropout key of step k = fold_in(key({self.cfg.seed}), k)", **self.meta}


def setup_run(cfg: TrainConfig, force: bool) -> Run:
    """Checks the run directory, prepares the data, builds the model and mesh, and restores the latest checkpoint
    or initialises the state; writes config.yaml and the tokenizer record (process 0). Every check that can be
    made up front is made here, before the first step."""
    peak_flops_override()  # a bad $XLM_JAX_PEAK_FLOPS stops the run here, before data preparation

    wall_start = time.perf_counter()
    # Single process: leave the JAX backend uninitialised until the data is prepared, since the corpus and
    # preprocessing stages fork worker processes (fork after backend start-up can deadlock).
    multi_process = jax.distributed.is_initialized()
    lead = jax.process_index() == 0 if multi_process else True
    # Checked before the data preparation, which can take long: new, empty, or an earlier run (resumed).
    run_dir = outputs.check_dir(cfg.run_dir, "train", force=force, legacy=is_train_run)
    start_from = adapt.prepare(cfg, run_dir)  # model.init_from, data.tokenizer, train.trainable: checked now

    def log(msg: str) -> None:
        if lead:
            tqdm.write(msg, file=sys.stdout)

    # Data: prepared once per machine, process 0 first so that processes sharing a disk do not race.
    if multi_process and not lead:
        _barrier("xlm_jax_prepare")
    data_dir = prepare_data(cfg, log, force, start_from.tokenizer)
    if multi_process and lead:
        _barrier("xlm_jax_prepare")
    corpus = PreprocessedCorpus(data_dir)
    data_cfg = make_data_config(cfg, corpus)
    model_cfg = (adapt.model_config(start_from, cfg, corpus, data_cfg) if start_from.config is not None
                 else make_model_config(cfg, corpus, data_cfg))
    # Phases (phases.*): each one's batch recipe and model configuration; data_cfg's MLM languages become the union.
    phase_plan, data_cfg = phases.plan(cfg, corpus, data_cfg, model_cfg)
    source = phases.batch_source(phase_plan, corpus, data_cfg, jax.process_index(), jax.process_count())
    groups = group_names(data_cfg)
    eval_langs = eval_languages(cfg, corpus, data_cfg)

    # Mesh, optimizer, state shapes.
    mesh = make_mesh(cfg.mesh)
    check_batch_split(cfg.train.batch_size, mesh.shape["data"], mesh.shape["fsdp"], cfg.train.grad_accum)
    steps = cfg.train.steps
    stop_step = cfg.train.stop_at or steps
    schedule = make_schedule(cfg.optimizer, steps)
    optimizer = make_optimizer(cfg.optimizer, steps)
    abstract_params = adapt.abstract_params(model_cfg)
    optimizer = adapt.restrict_optimizer(optimizer, cfg.train.trainable, abstract_params)  # train.trainable
    abstract, shardings = abstract_state(model_cfg, optimizer, mesh)

    # Checkpoints: resume from the latest complete one if there is any.
    ckpt_dir = run_dir / "checkpoints"
    # A new run from model.init_from reads that checkpoint's arrays before the run directory is claimed, so that a
    # damaged or misfitting one is refused with nothing written (a resumed run never reads it again).
    fresh = not ckpt_dir.is_dir() or not any(ckpt_dir.iterdir())
    init_from_state = (adapt.init_state(start_from, optimizer, abstract, shardings)
                       if fresh and start_from.init_from is not None else None)
    if lead:
        outputs.claim_dir(run_dir, "train", force=force, legacy=is_train_run)
    mngr = checkpoint.manager(ckpt_dir, max_to_keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    best_mngr = checkpoint.manager(run_dir / "best", max_to_keep=1) if cfg.checkpoint.keep_best else None
    start = mngr.latest_step() or 0
    # The model configuration of the phase the latest checkpoint was trained in (the RoPE bases may change).
    model_cfg = phase_plan.model_cfgs[phase_plan.of_checkpoint(start)]
    key = jax.random.key(cfg.seed)
    meta = {"best_valid_loss": None, "best_step": None}
    if start:
        check_same_tokenizer(run_dir, corpus)
        saving.verify_resume(mngr, ckpt_dir, start)
        saving.check_compatible(ckpt_dir / str(start), model_cfg, abstract["params"])
        state, saved_meta = saving.restore_state(mngr, start, abstract, shardings)
        meta.update({k: saved_meta.get(k) for k in meta})
        log(f"resuming from step {start} ({ckpt_dir / str(start)})")
    elif start_from.init_from is not None:
        state = init_from_state if init_from_state is not None else adapt.init_state(start_from, optimizer, abstract,
                                                                                           shardings)
    else:
        state, _ = init_state(model_cfg, optimizer, mesh, jax.random.fold_in(key, INIT_STREAM))

    run = Run(cfg=cfg, lead=lead, multi_process=multi_process, log=log, wall_start=wall_start, run_dir=run_dir,
              data_dir=data_dir, corpus=corpus, data_cfg=data_cfg, model_cfg=model_cfg, source=source, groups=groups,
              eval_langs=eval_langs, mesh=mesh, steps=steps, stop_step=stop_step, schedule=schedule,
              optimizer=optimizer, shardings=shardings, ckpt_dir=ckpt_dir, mngr=mngr, best_mngr=best_mngr,
              start=start, key=key, meta=meta, state=state, start_from=start_from, abstract_params=abstract_params,
              phase_plan=phase_plan)
    if lead:
        write_run_files(run)
    return run


def write_run_files(run: Run) -> None:
    """RUN_DIR/config.yaml (resolved: the data directory and the whole model config; on resume the changed keys
    are logged, resolved value against resolved value, and a changed train.steps with what it does to the
    learning-rate schedule), RUN_DIR/tokenizer.model and the tokenizer record `check_same_tokenizer` reads."""
    cfg, run_dir, start, log = run.cfg, run.run_dir, run.start, run.log
    previous = run_dir / "config.yaml"
    doc = resolved_config(run)
    if previous.is_file() and start:
        try:
            old = flat_keys(yaml.safe_load(previous.read_text(encoding="utf-8")) or {})
        except (yaml.YAMLError, ValueError, AttributeError, TypeError) as err:  # damaged: rewritten below
            old = {}
            log(f"note: {previous} was unreadable ({type(err).__name__}); it is written again")
        changed = config_changes(old, flat_keys(doc))
        if changed:
            log("config changed since the last run: " + "; ".join(changed))
        note = steps_change_note(old.get("train.steps"), run.steps, start, cfg.optimizer)
        if note:
            log(note)
    previous.write_text(f"# resolved config; re-run: python -m xlm_jax.train {previous}\n"
                        + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120))
    # The run directory is self-contained for notebooks: xlm_jax.load(RUN_DIR) + RUN_DIR/tokenizer.model.
    # A fresh start takes the data's tokenizer; a resumed run keeps the one it was checked against.
    tokenizer_copy = run_dir / "tokenizer.model"
    tok = run.corpus.manifest["tokenizer"]
    # The tokenizer the run was given (data.tokenizer, init_from's own) is the one that exists now: cached data
    # prepared with the same model elsewhere may record a path that has since gone (same sha256, checked).
    source = run.start_from.tokenizer if run.start_from.tokenizer is not None else Path(tok["path"])
    if (not start or not tokenizer_copy.is_file()) and Path(source).is_file():
        shutil.copyfile(source, tokenizer_copy)
    if not start or read_run_record(run_dir) is None:
        outputs.write_json(run_dir / TOKENIZER_RECORD, {"sha256": tok.get("sha256", ""),
                                                         "path": tok.get("path", ""), "data": str(run.data_dir)})


def resolved_config(run: Run) -> dict:
    """What config.yaml holds: the config with data.dir resolved to the data directory used and the model section
    the whole resolved ModelConfig (with base and init_from)."""
    cfg = run.cfg
    resolved = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dir=str(run.data_dir)))
    doc = yaml.safe_load(to_yaml(resolved))
    doc["model"] = {"base": cfg.model.base, **({"init_from": cfg.model.init_from} if cfg.model.init_from else {}),
                    **model_to_dict(run.phase_plan.model_cfgs[0])}  # the first phase's (phases.* lists the changes)
    return yaml.safe_load(yaml.safe_dump(doc, sort_keys=False))  # as a later run reads it back: lists, not tuples


def config_changes(old: dict, new: dict) -> list[str]:
    """`key: old -> new` for each dotted key whose resolved value differs (both from `flat_keys` of a resolved
    config: an unset data.dir resolved to the same directory is no change); [] when `old` is empty (unreadable)."""
    if not old:
        return []
    return [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v]


def steps_change_note(old_steps: Any, new_steps: int, start: int, opt_cfg) -> str | None:
    """The log line of a resumed run whose train.steps changed (None when it did not): the learning-rate schedule
    is laid over train.steps, so a new total re-stretches its decay; the line names both totals and the learning
    rate at the resumed step under each."""
    if not isinstance(old_steps, int) or old_steps == new_steps or old_steps < 1:
        return None
    if opt_cfg.schedule not in ("linear", "polynomial", "cosine", "wsd"):
        effect = f"the {opt_cfg.schedule} learning-rate schedule does not depend on it"
    else:
        try:
            lr_old = f"{float(make_schedule(opt_cfg, old_steps)(start)):.3g}"
        except UserError:  # the old total no longer fits today's warm-up: name the new rate alone
            lr_old = "?"
        lr_new = float(make_schedule(opt_cfg, new_steps)(start))
        effect = (f"the {opt_cfg.schedule} learning-rate schedule is re-stretched to decay over {new_steps} steps "
                  f"instead of {old_steps}: at step {start} the learning rate goes from {lr_old} to {lr_new:.3g}")
    return f"note: train.steps changed from {old_steps} to {new_steps} since the last run; {effect}"


def log_summary(run: Run) -> None:
    """Devices, model, batch and steps of the run, before the first step."""
    cfg, data_cfg, model_cfg, mesh, log = run.cfg, run.data_cfg, run.model_cfg, run.mesh, run.log
    n_dev, n_local = jax.device_count(), jax.local_device_count()
    counts = model_cfg.num_params()
    seq_lens = {o: (data_cfg.pair_len if o == "tlm" else data_cfg.seq_len) for o in data_cfg.enabled}
    fixed_shapes = data_cfg.tlm_batching == "fixed"
    tokens_per_step = sum(cfg.train.batch_size * t for t in seq_lens.values())
    log(f"devices: {n_dev} x {jax.devices()[0].device_kind} ({jax.process_count()} process(es), {n_local} local); "
        f"mesh {dict(mesh.shape)}")
    log(f"model: {cfg.model.base or cfg.model.init_from} + {dict(cfg.model.overrides)}; vocab {model_cfg.vocab_size}, "
        f"{len(data_cfg.langs)} languages; params {fmt_count(counts['total'])} = embeddings {fmt_count(counts['embeddings'])}"
        f" + other {fmt_count(counts['non_embedding'])}")
    per_obj = ", ".join(f"{o} {cfg.train.batch_size}x{t}" for o, t in seq_lens.items())
    log(f"batch per step: {per_obj} (global sequences x tokens) = {fmt_count(tokens_per_step)} tokens"
        f"{'' if fixed_shapes else ' (TLM by token budget: varies)'}; per device {cfg.train.batch_size // max(1, batch_size_multiple(mesh))}"
        f" sequences = {fmt_count(tokens_per_step / max(1, batch_size_multiple(mesh)))} tokens"
        f"{f'; grad_accum {cfg.train.grad_accum}' if cfg.train.grad_accum > 1 else ''}")
    for line in run.start_from.log_lines(run.start == 0) + [adapt.describe_trainable(cfg.train.trainable,
                                                                                     run.abstract_params)]:
        if line:
            log(line)
    if len(run.phase_plan.starts) > 1:
        for line in run.phase_plan.describe():
            log(line)
    log(f"steps: {run.steps} (from {run.start}{f', stopping at {run.stop_step}' if run.stop_step < run.steps else ''}); "
        f"data {run.data_dir}; run dir {run.run_dir}")


# ---- helpers ---------------------------------------------------------------------------------------------------


def is_train_run(directory: Path) -> bool:
    """A run directory written before output markers existed: its resolved config says so."""
    config = directory / "config.yaml"
    return config.is_file() and config.read_text(errors="replace").startswith("# resolved config")


def check_same_tokenizer(run_dir: Path, corpus: PreprocessedCorpus) -> None:
    """Refuses to resume a run on data preprocessed with another tokenizer (the ids would mean other pieces).
    The run's tokenizer is RUN_DIR/tokenizer_record.json (RUN_DIR/tokenizer.json for runs written before it was
    renamed), or for runs from before that record, RUN_DIR/tokenizer.model."""
    ours = corpus.manifest["tokenizer"]
    copy = run_dir / "tokenizer.model"
    record = read_run_record(run_dir)
    if record is not None:
        theirs = record
    elif copy.is_file():
        theirs = {"sha256": file_sha256(copy), "path": str(copy)}
    else:
        return
    if ours.get("sha256") and theirs.get("sha256") and ours["sha256"] != theirs["sha256"]:
        raise UserError(
            f"cannot resume {run_dir}: it was trained with the tokenizer {theirs.get('path')} (sha256 "
            f"{theirs['sha256'][:12]}…), but {corpus.dir} was preprocessed with {ours.get('path')} (sha256 "
            f"{ours['sha256'][:12]}…), whose ids mean other pieces. Train on data preprocessed with the run's "
            f"tokenizer ({copy if copy.is_file() else theirs.get('path')}), or start a new run_dir.")


def fmt_count(n: float) -> str:
    """1234567 -> '1.23M' (G, M, k), for the log and the progress bar."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
