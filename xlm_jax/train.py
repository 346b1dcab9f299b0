"""Pretraining: `python -m xlm_jax.train [CONFIG.yaml] [key=value ...]`.

With no arguments it runs the embedded default (configs/default.yaml = the `TrainConfig` defaults): a small
XLM-R-style model trained with MLM on 16 languages and TLM on their en-X pairs, from the gettext catalogs of
this machine (built, tokenized and preprocessed into the cache on first use), in a few minutes on a CPU.

    python -m xlm_jax.train                                   # the embedded default run -> runs/default
    python -m xlm_jax.train configs/xlmr_base.yaml data.dir=/data/cc100_pre mesh.fsdp=8
    python -m xlm_jax.train train.steps=200 run_dir=runs/short
    python -m xlm_jax.train --help-config                     # every key and its default

Re-running the same command on an existing run directory resumes from its latest complete checkpoint, and the
run continues exactly as if it had never stopped (batches and dropout keys are pure functions of seed and
step). RUN_DIR holds config.yaml (resolved), tokenizer.model, metrics.jsonl, tb/ (TensorBoard), checkpoints/<step>/
(params, model_config, opt_state, train_meta), best/ (keep-best), metrics.png.

Exit codes: 0 done (or stopped at train.stop_at); 2 bad input (config, data, mesh, checkpoint, no room to save);
3 the loss or parameters became NaN / inf (nothing saved after the last good checkpoint); 130 / 143 stopped by
SIGINT / SIGTERM after saving a checkpoint (a second signal stops at once, without one).

Multi-host: start one process per host with --coordinator HOST:PORT --num-processes N --process-id I (or
XLMJAX_COORDINATOR / XLMJAX_NUM_PROCESSES / XLMJAX_PROCESS_ID; automatic on TPU slices). Each process builds
only its own rows of every batch.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import yaml

from xlm_jax.pretrain import adapt
from xlm_jax.training import checkpoint as ckpt_lib
from xlm_jax.core import outputs
from xlm_jax.models.config import ModelConfig, to_dict as model_to_dict
from xlm_jax.data.batches import BatchSource, DataConfig
from xlm_jax.data.corpus import PreprocessedCorpus
from xlm_jax.core.errors import (ArgumentParser, NonFiniteError, UserError, exit_on_user_error, nonnegative_int,
                            positive_int)
from xlm_jax.training.metrics import MetricsWriter, read_metrics
from xlm_jax.training.step import all_finite, first_non_finite
from xlm_jax.pretrain.config import (TrainConfig, check_batch_split, check_positions, describe, flatten, load_config,
                                  to_dict, to_yaml)

EXIT_USER_ERROR, EXIT_NON_FINITE = 2, 3
# Fields of the model config that do not change what a checkpoint means (numerics, memory, regularisation).
NON_ARCHITECTURE = {"dtype", "param_dtype", "scan_layers", "remat_policy", "attention_impl", "dropout",
                    "attention_dropout"}
INIT_STREAM = 0x7FFFFFFF  # fold_in(key(seed), INIT_STREAM) initialises; step k's dropout uses fold_in(key(seed), k)


class Stopped(Exception):
    def __init__(self, signum: int):
        self.signum = signum


# ---- data ------------------------------------------------------------------------------------------------------


def cache_root(cfg: TrainConfig) -> Path:
    return Path(cfg.data.cache_dir or os.environ.get("XLM_JAX_CACHE") or Path.home() / ".cache" / "xlm_jax")


def prepare_data(cfg: TrainConfig, log, force: bool = False, tokenizer: Path | None = None) -> Path:
    """The preprocessed directory: `data.dir`, or `data.corpus` built / tokenized / preprocessed into the cache
    (each stage skipped when its output is already there, so a second run starts training at once). A cache
    location holding files the stage did not write is a UserError unless `force` (`xlm_jax.core.outputs`).
    `tokenizer`: a SentencePiece model to use instead of training one (`xlm_jax.pretrain.adapt.prepare`)."""
    d = cfg.data
    if d.dir:
        return Path(d.dir)
    from xlm_jax.data.preprocess import preprocess_corpus
    from xlm_jax.data.tokenizer import train_tokenizer

    cache = cache_root(cfg)
    if d.corpus == "gettext":
        from xlm_jax.data.gettext import build_gettext_corpus

        corpus = cache / "gettext"
        if not (corpus / "stats.json").is_file():
            log(f"building the gettext corpus from the system's translation catalogs -> {corpus} (once)")
            t0 = time.perf_counter()
            build_gettext_corpus(corpus, force=force)
            log(f"  done in {time.perf_counter() - t0:.0f} s")
        stats = json.loads((corpus / "stats.json").read_text())["languages"]
        by_pairs = sorted(stats, key=lambda lang: (-stats[lang]["pairs"], lang))
        langs = sorted(by_pairs[: d.max_langs] if d.max_langs else by_pairs) + ["en"]
        tag = f"gettext-{len(langs)}l"
    else:
        corpus = Path(d.corpus)
        if not corpus.is_dir():
            raise UserError(f"data.corpus={d.corpus!r}: not a directory (give a raw corpus, 'gettext', or data.dir)")
        langs = None
        tag = f"{corpus.name}-{hashlib.sha256(str(corpus.resolve()).encode()).hexdigest()[:8]}"
    if tokenizer is not None:  # a given SentencePiece model (data.tokenizer, or the init checkpoint's own)
        from xlm_jax.data.tokenizer import file_sha256

        tag += f"-tok{file_sha256(tokenizer)[:12]}"
    else:
        tag += f"-v{d.vocab_size}"
        tokenizer = cache / "tokenizers" / f"{tag}.model"
    if not tokenizer.is_file():
        inputs = [str(corpus / "mono" / f"{lang}.txt") for lang in langs] if langs else [str(corpus)]
        log(f"training a {d.vocab_size}-piece SentencePiece model on {d.tokenizer_sentences} sentences -> {tokenizer}")
        t0 = time.perf_counter()
        train_tokenizer(inputs, d.vocab_size, str(tokenizer), max_sentences=d.tokenizer_sentences, seed=0,
                        force=force)
        log(f"  done in {time.perf_counter() - t0:.0f} s")
    out = cache / "preprocessed" / f"{tag}-len{d.max_len}"
    t0 = time.perf_counter()
    manifest = preprocess_corpus(corpus, tokenizer, out, max_len=d.max_len, valid_fraction=d.valid_fraction,
                                 langs=langs, log=lambda msg: None, force=force)
    if time.perf_counter() - t0 > 1:
        log(f"preprocessed {len(manifest['langs'])} languages -> {out} in {time.perf_counter() - t0:.0f} s")
    return out


def make_data_config(cfg: TrainConfig, corpus: PreprocessedCorpus) -> DataConfig:
    d = cfg.data
    recipe = {f.name: getattr(d, f.name) for f in dataclasses.fields(DataConfig) if hasattr(d, f.name)
              and f.name not in ("mono_langs", "para_pairs", "objectives")}
    objectives = {k: float(v) for k, v in d.objectives.items()}
    stream = any(objectives.get(o, 0) > 0 for o in ("mlm", "clm"))
    mono = tuple(d.mono_langs) or (tuple(corpus.mono_langs("train")) if stream else ())
    pairs = tuple(d.para_pairs) or tuple("-".join(p) for p in corpus.para_pairs("train"))
    return DataConfig(
        **recipe, seq_len=cfg.train.seq_len, batch_size=cfg.train.batch_size, objectives=objectives,
        mono_langs=mono, para_pairs=pairs if objectives.get("tlm", 0) > 0 else (), seed=cfg.seed,
    )


def make_model_config(cfg: TrainConfig, corpus: PreprocessedCorpus, data_cfg: DataConfig) -> ModelConfig:
    """The base model with the data's vocabulary, special ids and language list (the user's model.* win)."""
    tok = corpus.manifest["tokenizer"]
    model_cfg = cfg.model.resolve(
        vocab_size=int(tok["vocab_size"]), bos_token_id=int(tok["bos_id"]), pad_token_id=int(tok["pad_id"]),
        eos_token_id=int(tok["eos_id"]), unk_token_id=int(tok["unk_id"]), mask_token_id=int(tok["mask_id"]),
        langs=tuple(data_cfg.langs), n_langs=len(data_cfg.langs),
    )
    if model_cfg.vocab_size < int(tok["vocab_size"]):
        raise UserError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the data's vocabulary "
                        f"({tok['vocab_size']} ids, {corpus.dir}/manifest.json)")
    check_positions(max(data_cfg.seq_len, data_cfg.pair_len if "tlm" in data_cfg.enabled else 0), model_cfg)
    return model_cfg


def eval_languages(cfg: TrainConfig, corpus: PreprocessedCorpus, data_cfg: DataConfig) -> list[str]:
    """The languages of the held-out MLM evaluation: train.eval_langs, each checked against the data now (not
    at the first validation), or by default every MLM language with a valid split."""
    try:
        have = corpus.mono_langs("valid")
    except UserError:
        have = []
    if not cfg.train.eval_langs:
        return [lang for lang in have if lang in data_cfg.mono_langs] if "mlm" in data_cfg.enabled else []
    usable = [lang for lang in have if lang in data_cfg.langs]
    for lang in cfg.train.eval_langs:
        if lang not in usable:
            raise UserError(f"train.eval_langs: {lang!r} has no held-out (valid) text among the run's languages in "
                            f"{corpus.dir}; valid: {', '.join(usable) or 'none (set train.eval_langs=[])'}")
    return list(cfg.train.eval_langs)


def group_names(data_cfg: DataConfig) -> dict[str, list[str]]:
    """Names of the groups of each objective's `example_lang` (languages, or pairs for TLM)."""
    return {o: (["-".join(p) for p in data_cfg.para_pairs] if o == "tlm" else list(data_cfg.mono_langs))
            for o in data_cfg.enabled}


# ---- checkpoints -----------------------------------------------------------------------------------------------


def is_train_run(directory: Path) -> bool:
    """A run directory written before output markers existed: its resolved config says so."""
    config = directory / "config.yaml"
    return config.is_file() and config.read_text(errors="replace").startswith("# resolved config")


PARTIAL_SAVE = "*.orbax-checkpoint-tmp*"  # where orbax writes a step before renaming it to <step>
TOKENIZER_RECORD = "tokenizer.json"  # the run's tokenizer (sha256, path): resuming on other ids is refused


def save_checkpoint(mngr, step: int, state: dict, model_cfg: ModelConfig, meta: dict, with_opt: bool = True) -> None:
    """Starts an (async) save of step, after the previous one is complete; a full disk or read-only directory
    becomes a UserError, the checkpoints already there stay intact (orbax writes into a temporary directory and
    renames it when complete; a partial one is removed)."""
    items = {
        "params": ocp.args.StandardSave(state["params"]),
        "model_config": ocp.args.JsonSave(model_to_dict(model_cfg)),
        "train_meta": ckpt_lib.json_save(meta),  # slowed by the test hook XLM_JAX_TEST_SAVE_DELAY_S only
    }
    if with_opt:
        items["opt_state"] = ocp.args.StandardSave(state["opt_state"])
    wait_for_saves(mngr)  # a failure of the previous (async) save is reported as that step's
    try:
        mngr.save(step, args=ocp.args.Composite(**items))
    except Exception as err:  # noqa: BLE001 - orbax may wrap the OSError
        raise _write_error(mngr, step, err) from err


def _write_error(mngr, step: int | None, err: BaseException) -> BaseException:
    """A UserError naming the checkpoint, the OS error and the free space, after removing the partial save; `err`
    itself when it is not an OS error (a bug stays a traceback). tensorstore reports a full disk as a ValueError
    whose message carries the OS error code."""
    found = outputs.os_error_of(err)
    if found is None:
        return err
    directory = Path(mngr.directory)
    free = outputs.free_space(directory)  # before the partial save is removed: the room the save had
    removed = []
    if jax.process_index() == 0:
        for partial in sorted(directory.glob(PARTIAL_SAVE)):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial.name)
    # From the disk: the manager's list already forgets steps it meant to delete after the failed save.
    kept = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []
    return UserError(
        f"could not write the checkpoint of step {step} to {directory}: {found[1]} ({free} on that disk); "
        f"the checkpoints already there ({kept or 'none'}) are intact"
        + (f", the partial {', '.join(removed)} was removed" if removed else "")
        + ". Free some space (or fix permissions) and re-run the same command to resume.")


def wait_for_saves(mngr) -> None:
    """Blocks until the save in flight is complete; its failure becomes a UserError (see `_write_error`)."""
    pending = mngr.latest_step()  # the step in flight, if any (a failed one is dropped from the list)
    try:
        mngr.wait_until_finished()
    except Exception as err:  # noqa: BLE001
        raise _write_error(mngr, pending, err) from err


def check_saves(mngr) -> None:
    """Without blocking: raises like `wait_for_saves` if an async save has already failed, so that training
    stops at the next step instead of running on to the next checkpoint."""
    if not mngr.is_saving_in_progress():
        wait_for_saves(mngr)


class _QuietOrbaxErrors(logging.Filter):
    """orbax logs a failed background save with tracebacks from its threads; the run reports it as one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and "orbax" in record.pathname)


def _from_orbax(obj) -> bool:
    """Whether `obj` is a coroutine (or a task running one) of orbax's checkpoint writers."""
    coro = obj.get_coro() if hasattr(obj, "get_coro") else obj
    code = getattr(coro, "cr_code", None)
    return code is not None and "orbax" in code.co_filename


class _QuietAbandonedWrites(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "orbax" not in record.getMessage()


def _drop_callbacks_to_closed_loops() -> None:
    """tensorstore completes orbax's writes from its own threads with `loop.call_soon_threadsafe`; after a failed
    async save orbax has closed that loop, and each late completion raises 'RuntimeError: Event loop is closed',
    which tensorstore prints as a traceback (not through any hook). A closed loop runs nothing, so such a
    callback can only be dropped: drop it quietly. The run reports the failed save itself, in one line."""
    original = asyncio.BaseEventLoop.call_soon_threadsafe
    if getattr(original, "drops_closed", False):
        return

    def call_soon_threadsafe(self, callback, *args, context=None):
        if self.is_closed():
            return None
        return original(self, callback, *args, context=context)

    call_soon_threadsafe.drops_closed = True
    asyncio.BaseEventLoop.call_soon_threadsafe = call_soon_threadsafe


def _quiet_abandoned_writes() -> None:
    """A failed async save leaves orbax's tensorstore write tasks and coroutines behind, their event loop closed;
    when Python collects them (now, or at exit) they print tracebacks of the error the run has already reported
    in one line ('Task exception was never retrieved', 'Event loop is closed'). Hide those, and only those."""
    previous = sys.unraisablehook

    def hook(unraisable, from_orbax=_from_orbax) -> None:  # bound now: module globals are gone at exit
        if not from_orbax(unraisable.object):
            previous(unraisable)

    if not getattr(previous, "quiet_orbax", False):
        hook.quiet_orbax = True
        sys.unraisablehook = hook
        logging.getLogger("asyncio").addFilter(_QuietAbandonedWrites())
        warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
    _ABANDONED_WRITES["left"] = True
    gc.collect()


# Set once a failed save has left orbax's writes behind: the command line then ends without the interpreter's
# shutdown, where collecting them would print more of what the run already reported (the `__main__` block).
_ABANDONED_WRITES = {"left": False}


def check_same_tokenizer(run_dir: Path, corpus: PreprocessedCorpus) -> None:
    """Refuses to resume a run on data preprocessed with another tokenizer (the ids would mean other pieces).
    The run's tokenizer is RUN_DIR/tokenizer.json, or for runs from before that record, RUN_DIR/tokenizer.model."""
    from xlm_jax.data.tokenizer import file_sha256

    ours = corpus.manifest["tokenizer"]
    record, copy = run_dir / TOKENIZER_RECORD, run_dir / "tokenizer.model"
    if record.is_file():
        theirs = json.loads(record.read_text())
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


def check_compatible(step_dir: Path, model_cfg: ModelConfig, abstract_params: Any) -> None:
    """Refuses to resume from a checkpoint of another model: architecture fields, then tensor shapes."""
    saved_cfg = ckpt_lib.load_model_config(step_dir)
    ours, theirs = model_to_dict(model_cfg), model_to_dict(saved_cfg)
    diff = [f"model.{k}: checkpoint {theirs[k]!r}, config {ours[k]!r}" for k in sorted(ours)
            if k not in NON_ARCHITECTURE and ours[k] != theirs.get(k)]
    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata((step_dir / "params").absolute())  # orbax misreads relative paths
    saved = getattr(meta, "item_metadata", meta)
    flat_saved = {jax.tree_util.keystr(p): tuple(m.shape) for p, m in jax.tree_util.tree_flatten_with_path(
        saved, is_leaf=lambda m: hasattr(m, "shape"))[0]}
    flat_ours = {jax.tree_util.keystr(p): tuple(a.shape) for p, a in
                 jax.tree_util.tree_flatten_with_path(abstract_params)[0]}
    shapes = []
    for name in sorted(set(flat_saved) | set(flat_ours)):
        a, b = flat_saved.get(name), flat_ours.get(name)
        if a != b:
            shapes.append(f"tensor {name}: checkpoint {a or 'absent'}, config {b or 'absent'}")
    if shapes or diff:
        details = "; ".join(shapes[:3] + (["..."] if len(shapes) > 3 else []) + diff[:4])
        raise UserError(f"cannot resume from {step_dir}: it holds a different model ({details}). Use another "
                        "run_dir, or the checkpoint's model settings.")


def verify_resume(mngr, ckpt_dir: Path, step: int) -> None:
    """Reads the checkpoint to resume from before anything else; a damaged one is refused naming the step before
    it. It is not deleted here: it may be the only copy of the run, or evidence of a failing disk."""
    step_dir = ckpt_dir / str(step)
    try:
        ckpt_lib.verify_step(step_dir, (ckpt_lib.PARAMS, "opt_state"), ("train_meta",))
    except ckpt_lib.DamagedCheckpoint as err:
        raise ckpt_lib.DamagedCheckpoint(step_dir, err.what, _resume_advice(mngr, ckpt_dir, step)) from None


def _resume_advice(mngr, ckpt_dir: Path, step: int) -> str:
    earlier = [s for s in mngr.all_steps() if s < step]
    if earlier:
        return (f"to resume from the checkpoint before it (step {max(earlier)}, {ckpt_dir / str(max(earlier))}), "
                f"delete {ckpt_dir / str(step)}; or set run_dir= to another directory")
    return (f"it is the run's only checkpoint: delete {ckpt_dir / str(step)} to train from step 0, or set run_dir= "
            "to another directory")


def restore_state(mngr, step: int, abstract: dict, shardings: dict) -> tuple[dict, dict]:
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract["params"]),
            opt_state=ocp.args.StandardRestore(abstract["opt_state"]),
            train_meta=ocp.args.JsonRestore(),
        ))
    except Exception as err:  # noqa: BLE001 - damage `verify_resume` cannot see (orbax's own files)
        step_dir = Path(mngr.directory) / str(step)
        raise ckpt_lib.DamagedCheckpoint(step_dir, f"orbax cannot restore it ({ckpt_lib.short_error(err)})",
                                         _resume_advice(mngr, Path(mngr.directory), step)) from None
    state = {
        "params": restored["params"],
        "opt_state": restored["opt_state"],
        "step": jax.device_put(jnp.asarray(step, jnp.int32), shardings["step"]),
    }
    return state, dict(restored["train_meta"])


# ---- metrics ---------------------------------------------------------------------------------------------------


@jax.jit
def accumulate(sums: dict, first_bad: jax.Array, metrics: dict, step: jax.Array):
    """Running sums of the step metrics on device (no host sync per step) and the first step whose loss or
    gradient norm was not finite (-1 if none)."""
    return jax.tree.map(jnp.add, sums, metrics), first_non_finite(first_bad, metrics, step)


def summarize_interval(sums: dict, n_steps: int, last_lr: float, groups: dict[str, list[str]]) -> dict:
    out = {"loss": float(sums["loss"]) / n_steps, "lr": last_lr, "grad_norm": float(sums["grad_norm"]) / n_steps}
    for obj, names in groups.items():
        count = max(float(sums[f"{obj}/tokens"]), 1.0)
        out[f"{obj}/loss"] = float(sums[f"{obj}/loss"]) / n_steps
        out[f"{obj}/accuracy"] = float(sums[f"{obj}/accuracy"]) / n_steps
        out[f"{obj}/predicted_tokens"] = count / n_steps
        gl, gc = np.asarray(sums[f"{obj}/group_loss_sum"]), np.asarray(sums[f"{obj}/group_count"])
        for i, name in enumerate(names):
            if gc[i] > 0:
                out[f"{obj}/loss/{name}"] = float(gl[i] / gc[i])
    return out


def evaluate(eval_step, params, source: BatchSource, langs: list[str], mesh, batch_size: int,
             max_batches: int) -> dict[str, float]:
    """MLM loss, accuracy and perplexity per held-out language; `valid/loss` is the mean over languages."""
    from xlm_jax.training.sharding import global_batch

    out, losses = {}, []
    for lang in langs:
        totals = None
        for i, batch in enumerate(source.valid_batches(lang, split="valid", batch_size=batch_size)):
            if max_batches and i >= max_batches:
                break
            sums = eval_step(params, global_batch(mesh, batch))
            totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
        if totals is None:
            continue
        totals = jax.device_get(totals)
        count = max(float(totals["count"]), 1.0)
        loss = float(totals["loss_sum"]) / count
        out[f"loss/{lang}"] = loss
        out[f"ppl/{lang}"] = math.exp(min(loss, 50.0))
        out[f"accuracy/{lang}"] = float(totals["correct"]) / count
        losses.append(loss)
    if losses:
        out["loss"] = float(np.mean(losses))
        out["ppl"] = math.exp(min(out["loss"], 50.0))
    return out


# ---- the run ---------------------------------------------------------------------------------------------------


def _fmt(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


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

    def train_meta(self, step: int) -> dict:
        return {"step": step, "seed": self.cfg.seed, "data_position": step,
                "rng": f"dropout key of step k = fold_in(key({self.cfg.seed}), k)", **self.meta}


def train(cfg: TrainConfig, force: bool = False) -> int:
    """Runs (or resumes) the pretraining described by `cfg`; returns the process exit code.

    `cfg.run_dir` must be new, empty or an earlier run of train (resumed); another directory, or one that cannot
    be written, is a UserError before any work, unless `force` (train then writes into it, and into the data
    cache's directories, whatever they hold). A failed checkpoint write is a UserError; NaN / inf returns 3.

    Reads top to bottom: set-up (`setup_run`: data, model, mesh, state), the steps, then the loop
    (`train_loop`), whose edges (signals, logging, evaluation, checkpoints) are the functions below it."""
    from xlm_jax.training.step import make_eval_step, make_train_step

    run = setup_run(cfg, force)
    log_summary(run)
    train_step = make_train_step(run.model_cfg, run.optimizer, run.mesh, run.shardings, run.data_cfg.objectives,
                                 {o: len(g) for o, g in run.groups.items()}, cfg.train.grad_accum,
                                 schedule=run.schedule)
    eval_step = make_eval_step(run.model_cfg, run.mesh, run.shardings) if run.eval_langs else None
    exit_code = train_loop(run, train_step, eval_step)
    if run.lead and exit_code == 0:
        _finish(run.run_dir, run.wall_start, run.log)
    return exit_code


# ---- set-up ----------------------------------------------------------------------------------------------------


def setup_run(cfg: TrainConfig, force: bool) -> Run:
    """Checks the run directory, prepares the data, builds the model and mesh, and restores the latest checkpoint
    or initialises the state; writes config.yaml and the tokenizer record (process 0). Every check that can be
    made up front is made here, before the first step."""
    from tqdm import tqdm

    from xlm_jax.training.optim import make_optimizer, make_schedule
    from xlm_jax.training.sharding import make_mesh
    from xlm_jax.training.step import abstract_state, init_state, peak_flops_override

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
    source = BatchSource(corpus, data_cfg, jax.process_index(), jax.process_count())
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
    mngr = ckpt_lib.manager(ckpt_dir, max_to_keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save)
    best_mngr = ckpt_lib.manager(run_dir / "best", max_to_keep=1) if cfg.checkpoint.keep_best else None
    start = mngr.latest_step() or 0
    key = jax.random.key(cfg.seed)
    meta = {"best_valid_loss": None, "best_step": None}
    if start:
        check_same_tokenizer(run_dir, corpus)
        verify_resume(mngr, ckpt_dir, start)
        check_compatible(ckpt_dir / str(start), model_cfg, abstract["params"])
        state, saved_meta = restore_state(mngr, start, abstract, shardings)
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
              start=start, key=key, meta=meta, state=state, start_from=start_from, abstract_params=abstract_params)
    if lead:
        write_run_files(run)
    return run


def write_run_files(run: Run) -> None:
    """RUN_DIR/config.yaml (resolved: the data directory and the whole model config; on resume the changed keys
    are logged), RUN_DIR/tokenizer.model and the tokenizer record `check_same_tokenizer` reads."""
    cfg, run_dir, start, log = run.cfg, run.run_dir, run.start, run.log
    previous = run_dir / "config.yaml"
    if previous.is_file() and start:
        try:
            old = flatten(yaml.safe_load(previous.read_text(encoding="utf-8")) or {})
        except (yaml.YAMLError, ValueError, AttributeError, TypeError) as err:  # damaged: rewritten below
            old = {}
            log(f"note: {previous} was unreadable ({type(err).__name__}); it is written again")
        new = flatten(to_dict(cfg))
        changed = [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
        if changed and old:
            log("config changed since the last run: " + "; ".join(changed))
    resolved = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dir=str(run.data_dir)))
    model_section = {"base": cfg.model.base, **({"init_from": cfg.model.init_from} if cfg.model.init_from else {}),
                     **{k: v for k, v in model_to_dict(run.model_cfg).items()}}
    text = to_yaml(resolved)
    doc = yaml.safe_load(text)
    doc["model"] = model_section
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
    if not start or not (run_dir / TOKENIZER_RECORD).is_file():
        outputs.write_json(run_dir / TOKENIZER_RECORD, {"sha256": tok.get("sha256", ""),
                                                         "path": tok.get("path", ""), "data": str(run.data_dir)})


def log_summary(run: Run) -> None:
    """Devices, model, batch and steps of the run, before the first step."""
    from xlm_jax.training.sharding import batch_size_multiple

    cfg, data_cfg, model_cfg, mesh, log = run.cfg, run.data_cfg, run.model_cfg, run.mesh, run.log
    n_dev, n_local = jax.device_count(), jax.local_device_count()
    counts = model_cfg.num_params()
    seq_lens = {o: (data_cfg.pair_len if o == "tlm" else data_cfg.seq_len) for o in data_cfg.enabled}
    fixed_shapes = data_cfg.tlm_batching == "fixed"
    tokens_per_step = sum(cfg.train.batch_size * t for t in seq_lens.values())
    log(f"devices: {n_dev} x {jax.devices()[0].device_kind} ({jax.process_count()} process(es), {n_local} local); "
        f"mesh {dict(mesh.shape)}")
    log(f"model: {cfg.model.base or cfg.model.init_from} + {dict(cfg.model.overrides)}; vocab {model_cfg.vocab_size}, "
        f"{len(data_cfg.langs)} languages; params {_fmt(counts['total'])} = embeddings {_fmt(counts['embeddings'])}"
        f" + other {_fmt(counts['non_embedding'])}")
    per_obj = ", ".join(f"{o} {cfg.train.batch_size}x{t}" for o, t in seq_lens.items())
    log(f"batch per step: {per_obj} (global sequences x tokens) = {_fmt(tokens_per_step)} tokens"
        f"{'' if fixed_shapes else ' (TLM by token budget: varies)'}; per device {cfg.train.batch_size // max(1, batch_size_multiple(mesh))}"
        f" sequences = {_fmt(tokens_per_step / max(1, batch_size_multiple(mesh)))} tokens"
        f"{f'; grad_accum {cfg.train.grad_accum}' if cfg.train.grad_accum > 1 else ''}")
    for line in run.start_from.log_lines(run.start == 0) + [adapt.describe_trainable(cfg.train.trainable,
                                                                                     run.abstract_params)]:
        if line:
            log(line)
    log(f"steps: {run.steps} (from {run.start}{f', stopping at {run.stop_step}' if run.stop_step < run.steps else ''}); "
        f"data {run.data_dir}; run dir {run.run_dir}")


# ---- the loop --------------------------------------------------------------------------------------------------


def train_loop(run: Run, train_step, eval_step) -> int:
    """Steps start + 1 .. stop_step; -> the exit code (0, EXIT_NON_FINITE, or 128 + signal). Each step: the batch,
    the update, then the edges at the steps they are due: the log interval, evaluation, checkpoints, a signal."""
    from tqdm import tqdm

    from xlm_jax.training.sharding import global_batch

    cfg, log = run.cfg, run.log
    writer = MetricsWriter(run.run_dir, resume_step=run.start, enabled=run.lead)
    if run.start >= run.stop_step:
        log(f"the run is already at step {run.start} (train.steps={run.steps}, train.stop_at={cfg.train.stop_at}): "
            "nothing to train; raise train.steps to continue it")
    bar = tqdm(total=run.steps, initial=run.start, desc="train", unit="step", dynamic_ncols=True,
               disable=not (run.lead and cfg.train.progress), file=sys.stderr)
    interval = Interval(run, writer, bar)
    step = run.start
    exit_code = 0
    with StopSignals() as stop, QuietOrbaxErrors(run.run_dir) as quiet:
        quiet.closing = (writer.close, run.mngr.close, run.best_mngr.close if run.best_mngr is not None else None)
        try:
            for step in range(run.start + 1, run.stop_step + 1):
                host_batch = run.source.batch(step - 1)
                run.state, metrics = train_step(run.state, global_batch(run.mesh, host_batch), run.key)
                bar.update(1)
                interval.add(step, metrics, host_batch)
                if step % cfg.train.log_every == 0 or step == run.stop_step:
                    interval.write(step, metrics)
                # Evaluation depends on the step alone (never on where a time slice stopped), so that a resumed
                # run's metrics.jsonl equals an uninterrupted one's.
                if (cfg.train.eval_every and step % cfg.train.eval_every == 0) or step == run.steps:
                    run_eval(run, eval_step, writer, step)
                if not run.multi_process:  # (processes would see a failed save at different steps: they wait below)
                    check_saves(run.mngr)  # a failed async save stops the run now, not at the next checkpoint
                if step % cfg.checkpoint.every == 0 or step == run.stop_step:
                    checkpoint(run, step, interval.first_bad)
                if stop.signum is not None:
                    checkpoint(run, step, interval.first_bad)
                    raise Stopped(stop.signum)
            wait_for_saves(run.mngr)
        except NonFiniteError as err:
            bar.close()
            wait_for_saves(run.mngr)
            good = [s for s in run.mngr.all_steps() if s < err.step]
            print(f"error: {err}; training stopped. The last good checkpoint is "
                  f"{run.ckpt_dir / str(max(good)) if good else 'none'} (nothing later was saved). Lower "
                  "optimizer.lr, raise optimizer.warmup_steps or check the data, then re-run to resume from it.",
                  file=sys.stderr)
            exit_code = EXIT_NON_FINITE
        except Stopped as err:
            bar.close()
            wait_for_saves(run.mngr)
            name = signal.Signals(err.signum).name
            log(f"{name}: stopped after step {step}; checkpoint {run.ckpt_dir / str(step)} saved. "
                "Re-run the same command to resume.")
            exit_code = 128 + err.signum
        except OSError as err:  # metrics.jsonl / tb/ on a full disk
            raise outputs.as_user_error(err, run.run_dir, "could not write the run's files") from err
        finally:
            bar.close()
    return exit_code


# ---- the edges: signals, logging, evaluation, checkpoints --------------------------------------------------------


class StopSignals:
    """SIGINT / SIGTERM set `signum`: the loop saves a checkpoint after the current step and stops; a second
    signal ends the process at once (no checkpoint). The previous handlers come back on exit."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def _on_signal(self, signum, _frame):
        self.signum = signum
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def __enter__(self) -> StopSignals:
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class QuietOrbaxErrors:
    """Around the loop: the run reports a failed save itself, in one line, so orbax's own error logs (and, after a
    failure, its abandoned writes) stay quiet. On exit it closes `closing` (metrics writer, checkpoint managers):
    every one is closed; the first closing error is raised as a UserError unless another error is on its way."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.closing: tuple = ()
        self._filter = _QuietOrbaxErrors()

    def __enter__(self) -> QuietOrbaxErrors:
        _drop_callbacks_to_closed_loops()
        logging.getLogger("absl").addFilter(self._filter)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        failing = exc is not None  # an error is on its way out: report it, not a closing one
        closing_error = None
        for close in self.closing:
            try:
                if close is not None:
                    close()
            except Exception as err:  # noqa: BLE001 - the first error is reported; the others must still close
                closing_error = closing_error or err
        if failing:  # orbax's threads may still log the failed save: keep them quiet until the process ends
            _quiet_abandoned_writes()
        else:
            logging.getLogger("absl").removeFilter(self._filter)
        if not failing and closing_error is not None:
            raise outputs.as_user_error(closing_error, self.run_dir,
                                        "could not write the run's files") from closing_error


class Interval:
    """The metrics of the steps since the last log: running sums on device (no host sync per step), the first
    non-finite step, the work of the timed steps (counted on this process's host rows, summed over processes at
    the log); `write` turns them into one metrics.jsonl record and the progress bar's figures."""

    def __init__(self, run: Run, writer: MetricsWriter, bar):
        from xlm_jax.training.step import peak_flops

        self.run, self.writer, self.bar = run, writer, bar
        self.n_dev = jax.device_count()
        self.peak = peak_flops(jax.devices())
        self.first_bad = jnp.asarray(-1, jnp.int32)
        self._reset()

    def _reset(self) -> None:
        from xlm_jax.training.step import Work

        # `work`: the timed steps (throughput); `batches`: every step of the interval (the padding share, which
        # must not depend on where a run was resumed, i.e. on which step was the compilation one).
        self.sums, self.steps, self.work, self.batches = None, 0, Work(), Work()
        self.timer = time.perf_counter()

    def add(self, step: int, metrics: dict, host_batch: dict) -> None:
        from xlm_jax.training.step import Work, batch_work

        if self.sums is None:
            self.sums = jax.tree.map(jnp.zeros_like, metrics)
        self.sums, self.first_bad = accumulate(self.sums, self.first_bad, metrics, jnp.asarray(step, jnp.int32))
        self.steps += 1
        work = batch_work(self.run.model_cfg, host_batch)
        self.work, self.batches = self.work + work, self.batches + work
        if step == self.run.start + 1:
            # Time compilation apart so that the first interval's throughput is the steady state's.
            jax.block_until_ready(metrics["loss"])
            self.run.log(f"first step (compilation) took {time.perf_counter() - self.timer:.1f} s")
            self.work = Work()
            self.timer = time.perf_counter()

    def write(self, step: int, metrics: dict) -> None:
        from xlm_jax.training.step import padding_share, throughput

        finite_or_raise(self.first_bad)
        host = jax.device_get(self.sums)
        elapsed = max(time.perf_counter() - self.timer, 1e-9)
        values = summarize_interval(host, self.steps, float(metrics["lr"]), self.run.groups)
        # Throughput of the timed steps (none when the interval held only the compilation step).
        values.update(throughput(_all_processes(self.work), elapsed, self.n_dev, self.peak),
                      padding_share=padding_share(_all_processes(self.batches)),
                      elapsed_s=time.perf_counter() - self.run.wall_start)
        self.writer.write(step, "train", values)
        self.bar.set_postfix(progress_figures(values, self.n_dev))
        self._reset()


def progress_figures(values: dict, n_devices: int) -> dict[str, str]:
    """The progress bar's figures from a train record: loss, slot tokens/s (all and per device), real (non-pad)
    tokens/s and the padding share of the slots."""
    tps = values.get("tokens_per_s") or 0.0
    figures = {"loss": f"{values['loss']:.3f}", "tok_s": _fmt(tps), "tok_s_dev": _fmt(tps / n_devices),
               "real_tok_s": _fmt(values.get("real_tokens_per_s") or 0.0)}
    if values.get("padding_share") is not None:
        figures["pad"] = f"{values['padding_share']:.0%}"
    return figures


def finite_or_raise(first_bad) -> None:
    """NonFiniteError naming the first step whose loss or gradient norm was NaN / inf (`first_bad` >= 0)."""
    first = int(jax.device_get(first_bad))
    if first >= 0:
        raise NonFiniteError(first, "the loss or gradient norm is NaN / inf")


def checkpoint(run: Run, step: int, first_bad) -> None:
    """Saves step (async) unless it is saved already; never a state after a NaN / inf (NonFiniteError)."""
    finite_or_raise(first_bad)
    if not bool(all_finite(run.state["params"])):
        raise NonFiniteError(step, "the parameters contain NaN / inf")
    if step not in run.mngr.all_steps():
        save_checkpoint(run.mngr, step, run.state, run.model_cfg, run.train_meta(step))


def run_eval(run: Run, eval_step, writer: MetricsWriter, step: int) -> None:
    """The held-out MLM evaluation: a "valid" record, and with checkpoint.keep_best the best parameters saved."""
    if eval_step is None:
        return
    values = evaluate(eval_step, run.state["params"], run.source, run.eval_langs, run.mesh, run.cfg.train.batch_size,
                      run.cfg.train.eval_batches)
    if not values:
        return
    writer.write(step, "valid", values)
    run.log(f"step {step}: valid loss {values['loss']:.3f} (ppl {values['ppl']:.1f}) over {len(run.eval_langs)} "
            "languages")
    meta = run.meta
    if run.best_mngr is not None and math.isfinite(values["loss"]) and (
            meta["best_valid_loss"] is None or values["loss"] < meta["best_valid_loss"]):
        meta.update(best_valid_loss=values["loss"], best_step=step)
        save_checkpoint(run.best_mngr, step, run.state, run.model_cfg, run.train_meta(step), with_opt=False)


def _finish(run_dir: Path, wall_start: float, log) -> None:
    records = [r for r in read_metrics(run_dir) if r.get("kind") == "train" and r.get("loss") is not None]
    try:
        from xlm_jax.plot import plot_run

        png = plot_run(run_dir)
        log(f"plot: {png}")
    except Exception as err:  # noqa: BLE001 - a plot must never fail a finished run
        log(f"(could not draw the plot: {err})")
    if records:
        first, last = records[0], records[-1]
        tps = [r["tokens_per_s"] for r in records if r.get("tokens_per_s")]
        log(f"loss: {first['loss']:.3f} (step {first['step']}) -> {last['loss']:.3f} (step {last['step']}); "
            f"median throughput {_fmt(float(np.median(tps))) if tps else 'not measured'} tokens/s; "
            f"wall time {time.perf_counter() - wall_start:.0f} s; run dir {run_dir}")


def _all_processes(work):
    """`work` (a `step.Work` counted on this process's rows) summed over all processes: every process calls it
    at the same log steps. The sums travel as float32 (x64 is off): counts are exact below 2**24 per interval,
    beyond that rounded by at most 6e-8 relative, far below the timing noise."""
    if jax.process_count() == 1:
        return work
    from jax.experimental import multihost_utils

    from xlm_jax.training.step import Work

    gathered = multihost_utils.process_allgather(np.asarray(dataclasses.astuple(work), np.float32))
    return Work(*(float(x) for x in np.asarray(gathered).reshape(jax.process_count(), -1).sum(0)))


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m xlm_jax.train", description=__doc__.split("\n\n")[0],
        epilog="Keys: python -m xlm_jax.train --help-config", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value",
                        help="an optional YAML config, then overrides such as train.steps=100")
    parser.add_argument("--help-config", action="store_true", help="print every config key with its default")
    parser.add_argument("--force", action="store_true",
                        help="use run_dir even if it holds files train did not write (train's files there are "
                             "overwritten, its checkpoints resumed, others kept); the same for the data cache")
    parser.add_argument("--coordinator", help="HOST:PORT of process 0 (multi-host)")
    parser.add_argument("--num-processes", type=positive_int)
    parser.add_argument("--process-id", type=nonnegative_int)
    args = parser.parse_intermixed_args(argv)  # flags (--force) may come between key=value overrides
    if args.help_config:
        print(describe())
        return
    with exit_on_user_error(EXIT_USER_ERROR):
        configs = [a for a in args.args if "=" not in a]
        if len(configs) > 1:
            raise UserError(f"more than one config file given: {configs} (overrides look like key=value)")
        from xlm_jax.training.sharding import initialize_distributed

        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        cfg = load_config(configs[0] if configs else None, [a for a in args.args if "=" in a])
        try:
            code = train(cfg, force=args.force)
        except OSError as err:  # a full disk outside the training loop (config.yaml, the data cache, ...)
            raise outputs.as_user_error(err, cfg.run_dir) from err
    sys.exit(code)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as done:
        if _ABANDONED_WRITES["left"]:
            # The one error line is out; orbax's abandoned writes would print at interpreter shutdown. The
            # checkpoints on disk are complete or absent (orbax renames a step into place only when complete).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 1)
        raise
