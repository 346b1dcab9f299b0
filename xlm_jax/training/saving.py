"""A training run's checkpoints through orbax's `CheckpointManager` (`xlm_jax.training.checkpoint.manager`), and
orbax's logging quirks around them.

- `save_checkpoint` / `wait_for_saves` / `check_saves`: async saves of a train state (`params`, `opt_state`,
  `model_config`, `train_meta`); a full disk or read-only directory becomes one `UserError` line, the partial save
  (`PARTIAL_SAVE`) is removed and the complete checkpoints stay intact.
- `verify_resume` / `check_compatible` / `restore_state`: resuming, with a damaged checkpoint or another model's
  refused before anything is restored.
- `QuietOrbaxErrors` (around a loop) and `quiet_abandoned_writes`: after a failed async save, orbax's threads
  and tensorstore's callbacks print tracebacks of the error the run already reported in one line; these hide
  those, and only those. `abandoned_writes_left()` tells a command's `__main__` to end without the interpreter's
  shutdown, where collecting the abandoned writes would print them again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from xlm_jax.core import outputs
from xlm_jax.core.errors import UserError
from xlm_jax.models.config import (NON_ARCHITECTURE, EncoderDecoderConfig, ModelConfig, any_config_to_dict,
                                   to_dict as model_to_dict)
from xlm_jax.training import checkpoint as ckpt_lib

PARTIAL_SAVE = "*.orbax-checkpoint-tmp*"  # where orbax writes a step before renaming it to <step>


def save_checkpoint(mngr, step: int, state: dict, model_cfg: ModelConfig | EncoderDecoderConfig, meta: dict,
                    with_opt: bool = True) -> None:
    """Starts an (async) save of step (an encoder's or an encoder–decoder's parameters, `model_cfg` stored as
    `model_config`), after the previous one is complete; a full disk or read-only directory
    becomes a UserError, the checkpoints already there stay intact (orbax writes into a temporary directory and
    renames it when complete; a partial one is removed)."""
    items = {
        "params": ocp.args.StandardSave(state["params"]),
        "model_config": ocp.args.JsonSave(any_config_to_dict(model_cfg)),
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


def quiet_abandoned_writes() -> None:
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
    """The train state {params, opt_state, step} of `step`, restored into `abstract`'s shardings, and its
    train_meta; DamagedCheckpoint when orbax cannot read it."""
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


def abandoned_writes_left() -> bool:
    """Whether a failed save has left orbax's writes behind (see `quiet_abandoned_writes`)."""
    return _ABANDONED_WRITES["left"]


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
            quiet_abandoned_writes()
        else:
            logging.getLogger("absl").removeFilter(self._filter)
        if not failing and closing_error is not None:
            raise outputs.as_user_error(closing_error, self.run_dir,
                                        "could not write the run's files") from closing_error
