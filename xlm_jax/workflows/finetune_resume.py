"""Stopping and resuming fine-tuning (`xlm_jax.workflows.finetune`) as pretraining does (`xlm_jax.pretrain.loop`).

On SIGINT / SIGTERM (`xlm_jax.training.signals.StopSignals`) the loop finishes the step in hand and writes

    OUT/resume/<step>/params        the parameters (encoder and head)
    OUT/resume/<step>/opt_state     the optimizer state
    OUT/resume/<step>/model_config  the model configuration
    OUT/resume/<step>/train_meta    the step and the model selection so far: best score, its step, evaluations
                                    without improvement, the validation history, whether patience stopped the run

through orbax (`xlm_jax.training.saving`: a temporary directory renamed into place when complete), names it in
one line and ends with 128 + signum (130 / 143); a second signal ends the process at once, saving nothing. The
selected parameters themselves are already in OUT/best (written at each improvement). `resume/` is removed when
the run finishes: a finished output holds only what it always held.

A re-run on OUT (`plan`), with the config recorded in OUT/finetune_config.json:
- OUT/resume/<step> exists: the run resumes from it. Only the keys in `MAY_CHANGE` may differ from the recorded
  config (each change is noted); any other change is refused (UserError naming the keys) before anything is read,
  since the steps already taken belong to the recorded config.
- OUT holds the results of the same config (results.json) and nothing to resume: the run is complete; nothing is
  trained again (the stored results are returned).
- otherwise the fine-tuning starts from step 0 (a note names the keys that changed from a finished run's).

Resuming reaches the result of an uninterrupted run: the examples of step k are a function of (seed, k) alone
(`step_rows`), the dropout key of step k is `fold_in(key, k)` (`xlm_jax.training.step.make_step`), and the
optimizer state, the step counter and the selection come back as they were saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

import jax

from xlm_jax.core.errors import UserError
from xlm_jax.models.config import ModelConfig
from xlm_jax.training import checkpoint, saving
from xlm_jax.training.signals import StopSignals
from xlm_jax.training.step import state_shardings

RESUME_DIR = "resume"  # OUT/resume/<step>: the state of a stopped run
RESULT_FILES = ("results.json", "results.md", "predictions.json")  # written when a run finishes
LOG_FILE = "log.jsonl"
# Keys that change how the run is watched or laid out, not which steps it takes: a resumed run may change them.
MAY_CHANGE = ("out", "log_every", "eval_batch_size", "mesh_data", "mesh_fsdp", "mesh_tensor")


def config_record(cfg: Any) -> dict:
    """The fine-tuning config as recorded in OUT/finetune_config.json (JSON values: tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _changes(old: dict, new: dict, keys) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in keys if old.get(k) != new[k]]


def resume_step(out: Path) -> int | None:
    """The step of the state a stopped run left in OUT/resume, or None."""
    directory = out / RESUME_DIR
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.is_dir() else []
    return max(steps) if steps else None


def plan(cfg: Any, out: Path, record_name: str, log: Callable[[str], None]) -> str:
    """What a run of `cfg` does with OUT: "resume", "complete" or "fresh" (see the module). Raises UserError when
    OUT holds a stopped run of another config. Reads only OUT's small files: call it before any data is read."""
    record = out / record_name
    if not record.is_file():
        return "fresh"
    try:
        old = json.loads(record.read_text())
    except (OSError, ValueError):
        old = None
    new = config_record(cfg)
    step = resume_step(out)
    if step is not None:
        if not isinstance(old, dict):
            raise UserError(f"cannot resume {out}: its {record_name} is unreadable, so the stopped run's config is "
                            f"unknown; delete {out / RESUME_DIR} to fine-tune from step 0, or choose another out=")
        refused = _changes(old, new, [k for k in new if k not in MAY_CHANGE])
        if refused:
            raise UserError(
                f"cannot resume {out} (stopped after step {step}): the config differs from the stopped run's ("
                + "; ".join(refused) + "). Re-run with the same values to resume it, delete "
                f"{out / RESUME_DIR} to fine-tune from step 0 with the new ones, or choose another out=")
        noted = _changes(old, new, [k for k in MAY_CHANGE if k != "out" and k in new])
        if noted:
            log("config changed since the stopped run: " + "; ".join(noted))
        return "resume"
    if not (out / RESULT_FILES[0]).is_file():
        return "fresh"
    changed = _changes(old, new, [k for k in new if k != "out"]) if isinstance(old, dict) else ["(unreadable)"]
    if not changed:
        return "complete"
    log(f"{out} holds a finished fine-tuning of another config (" + "; ".join(changed) + "): fine-tuning again "
        "from step 0; its results are replaced")
    return "fresh"


def start_fresh(out: Path) -> None:
    """Before a run from step 0 on an earlier output: its results go, so that results.json in OUT always belongs
    to the recorded config (a finished run is recognised by it)."""
    for name in RESULT_FILES:
        (out / name).unlink(missing_ok=True)


def finished(out: Path) -> None:
    """After the results are written: the stopped run's state is no longer needed."""
    shutil.rmtree(out / RESUME_DIR, ignore_errors=True)


def stored_results(out: Path) -> tuple[dict, str]:
    """A complete run's results.json and results.md. Raises UserError when they cannot be read."""
    try:
        table = json.loads((out / RESULT_FILES[0]).read_text())
        markdown = (out / RESULT_FILES[1]).read_text().rstrip("\n")
    except (OSError, ValueError) as err:
        raise UserError(f"{out}: its results cannot be read ({err}); delete {out / RESULT_FILES[0]} to fine-tune "
                        "again") from None
    return table, markdown


def keep_log(out: Path, step: int) -> None:
    """OUT/log.jsonl as it was after `step`: records of later steps (a run killed after its last save) go, so
    that a resumed run's log equals an uninterrupted one's (elapsed times aside). Step 0: a new, empty log."""
    path = out / LOG_FILE
    if not step or not path.is_file():
        path.write_text("")
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut off by a kill
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line + "\n")
    path.write_text("".join(kept))


def selection_meta(history: list, best_score: float, best_step: int, bad: int, stopped_early: bool) -> dict:
    """The loop's selection state as JSON (no best score yet: None)."""
    return {"history": history, "best_score": best_score if math.isfinite(best_score) else None,
            "best_step": best_step, "bad": bad, "stopped_early": stopped_early}


def save(out: Path, step: int, state: dict, config: ModelConfig, meta: dict) -> Path:
    """Writes the train state {params, opt_state} of `step` and `meta` (`selection_meta`) as OUT/resume/<step>
    (synchronously; the previous one is then deleted) -> that directory. A full disk or a read-only directory is
    a UserError; what was there stays intact."""
    with checkpoint.manager(out / RESUME_DIR, max_to_keep=1) as mngr:
        saving.save_checkpoint(mngr, step, state, config, {"step": step, **meta})
        saving.wait_for_saves(mngr)
    return out / RESUME_DIR / str(step)


def restore(out: Path, config: ModelConfig, model: Any, optimizer: Any, mesh: Any) -> tuple[dict, dict, dict]:
    """The state saved in OUT/resume for `model` / `optimizer` on `mesh` -> (state, its shardings, meta): the
    selection meta (`selection_meta`, "step") plus "best_params" (NumPy, from OUT/best) when a best step was
    recorded. Raises DamagedCheckpoint / UserError naming what to delete when it cannot be used."""
    directory = out / RESUME_DIR
    step = resume_step(out)
    advice = f"delete {directory} to fine-tune from step 0, or choose another out="
    abstract, shardings = state_shardings(model, optimizer, mesh)
    mngr = checkpoint.manager(directory)
    try:
        try:
            saving.verify_resume(mngr, directory, step)
        except checkpoint.DamagedCheckpoint as err:
            raise checkpoint.DamagedCheckpoint(err.step_dir, err.what, advice) from None
        saving.check_compatible(directory / str(step), config, abstract["params"])
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
        state, meta = saving.restore_state(mngr, step, target, shardings)
    finally:
        mngr.close()
    if meta.get("best_step"):
        best = out / "best"
        best_dir, best_step = checkpoint.resolve(best) if best.is_dir() else (None, None)
        if best_step != meta["best_step"]:
            raise UserError(f"cannot resume {out}: the stopped run selected step {meta['best_step']}, but {best} "
                            f"holds {best_step if best_step is not None else 'no checkpoint'}; {advice}")
        meta["best_params"], _ = checkpoint.restore_params(best)
    meta["best_score"] = -math.inf if meta.get("best_score") is None else meta["best_score"]
    return state, shardings, meta


def signals() -> Any:
    """`StopSignals()` around the loop, or, off the main thread (where Python cannot install signal handlers: a
    run started from a worker thread), a context giving None: no signal handling, as before."""
    return StopSignals() if threading.current_thread() is threading.main_thread() else contextlib.nullcontext()
