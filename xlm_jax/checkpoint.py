"""Our checkpoint format: an orbax `CheckpointManager` directory.

    CKPT/<step>/params         the model parameters (orbax PyTree, plain arrays, no logical boxes)
    CKPT/<step>/model_config   the `ModelConfig` as JSON, so that every step directory is self-contained
    CKPT/<step>/...            training adds its own items (optimizer state, RNG, data position)

`convert` writes step 0; training writes `RUN_DIR/checkpoints/<step>`. `resolve` accepts any of: a run
directory, a checkpoints directory (its latest complete step), or one step directory.

Test hook: with the environment variable XLM_JAX_TEST_SAVE_DELAY_S=<seconds> set, every JSON item that training
saves through `json_save` (its `train_meta`) waits that long inside orbax's background write, after the step's
temporary directory exists and before it is renamed into place. tests/test_train.py uses it to kill -9 a run while a
save is certainly in flight. It changes nothing else and is never meant to be set outside tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from xlm_jax.config import ModelConfig, from_dict, to_dict
from xlm_jax.errors import UserError

PARAMS = "params"
MODEL_CONFIG = "model_config"
SAVE_DELAY_ENV = "XLM_JAX_TEST_SAVE_DELAY_S"  # test hook, see the module docstring


class _DelayedJsonHandler(ocp.JsonCheckpointHandler):
    """orbax's JSON handler, sleeping first inside the (background) write: the test hook's in-flight window."""

    async def _save_fn(self, x, directory):
        await asyncio.sleep(float(os.environ.get(SAVE_DELAY_ENV) or 0))
        await super()._save_fn(x, directory)


@ocp.args.register_with_handler(_DelayedJsonHandler, for_save=True)
@dataclasses.dataclass
class _DelayedJsonSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(_DelayedJsonHandler, for_restore=True)
@dataclasses.dataclass
class _DelayedJsonRestore(ocp.args.CheckpointArgs):  # orbax wants both directions registered; unused
    item: Any = None


def json_save(item: Any) -> ocp.args.CheckpointArgs:
    """`ocp.args.JsonSave(item)`, or under the test hook XLM_JAX_TEST_SAVE_DELAY_S the same write made slow."""
    return _DelayedJsonSave(item) if os.environ.get(SAVE_DELAY_ENV) else ocp.args.JsonSave(item)


def manager(directory: str | Path, *, max_to_keep: int | None = None, async_save: bool = False,
            item_names: tuple[str, ...] | None = None, **options: Any) -> ocp.CheckpointManager:
    opts = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True, **options
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=opts, item_names=item_names)


def _is_step_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit() and (path / PARAMS).is_dir()


def resolve(path: str | Path) -> tuple[Path, int]:
    """-> (manager directory, step) for a run directory, a checkpoints directory or a step directory."""
    p = Path(path).absolute()  # orbax refuses relative paths
    if not p.exists():
        raise UserError(f"{p}: no such checkpoint or run directory")
    if _is_step_dir(p):
        return p.parent, int(p.name)
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    steps = sorted(int(c.name) for c in p.iterdir() if _is_step_dir(c)) if p.is_dir() else []
    if not steps:
        hint = ""
        if (p / "config.json").exists():
            hint = f"; it looks like a Hugging Face model: run `python -m xlm_jax.convert {p} OUT` first"
        raise UserError(f"{path}: no complete xlm_jax checkpoint found (expected <step>/{PARAMS} inside){hint}")
    return p, steps[-1]


def save_params(directory: str | Path, params: Any, config: ModelConfig, step: int = 0) -> Path:
    """Synchronously writes params + model config as `directory/<step>` (used by convert)."""
    params = jax.tree_util.tree_map(np.asarray, params)
    with manager(directory) as mngr:
        mngr.save(step, args=ocp.args.Composite(
            **{PARAMS: ocp.args.StandardSave(params), MODEL_CONFIG: ocp.args.JsonSave(to_dict(config))}
        ))
        mngr.wait_until_finished()
    return Path(directory) / str(step)


def load_model_config(path: str | Path) -> ModelConfig:
    directory, step = resolve(path)
    with open(directory / str(step) / MODEL_CONFIG / "metadata") as f:
        return from_dict(json.load(f))


@contextlib.contextmanager
def _quiet_absl():
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def restore_params(path: str | Path, target: Any | None = None) -> tuple[Any, ModelConfig]:
    """-> (params as NumPy arrays, or laid out like `target` when given (e.g. sharded abstract arrays), config)."""
    directory, step = resolve(path)
    config = load_model_config(directory / str(step))
    item = directory / str(step) / PARAMS
    if target is None:
        # Host NumPy arrays, whatever device layout (or process count) the checkpoint was saved with.
        with ocp.PyTreeCheckpointer() as ckptr, _quiet_absl():
            meta = ckptr.metadata(item)  # warns that a manager-level metadata file is absent: it is not needed
            tree = getattr(meta, "item_metadata", meta)
            tree = getattr(tree, "tree", tree)
            as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            return ckptr.restore(item, restore_args=as_numpy), config
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(item, target), config
