"""Our checkpoint format: an orbax `CheckpointManager` directory.

    CKPT/<step>/params         the model parameters (orbax PyTree, plain arrays, no logical boxes)
    CKPT/<step>/model_config   the `ModelConfig` as JSON, so that every step directory is self-contained
    CKPT/<step>/...            training adds its own items (optimizer state, RNG, data position)

`convert` writes step 0; training writes `RUN_DIR/checkpoints/<step>`. `resolve` accepts any of: a run
directory, a checkpoints directory (its latest complete step), or one step directory.

A damaged step directory (an array file overwritten, truncated or deleted; a metadata file that is not JSON) is
found by `verify` before orbax restores it: orbax reads asynchronously and, when one read fails, reports raw
tensorstore errors (and stray "Event loop is closed" tracebacks from the reads still in flight), so every array
is first read here synchronously and a failure becomes a `DamagedCheckpoint` naming the step directory and what
in it is damaged.

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

from xlm_jax.models.config import EncoderDecoderConfig, ModelConfig, any_config_from_dict, any_config_to_dict
from xlm_jax.core.errors import UserError

PARAMS = "params"
MODEL_CONFIG = "model_config"


class _QuietMissingStepMetadata(logging.Filter):
    """orbax warns "Metadata file does not exist" whenever it reads a step directory without its optional
    `_CHECKPOINT_METADATA` file, which every resume, `restore_params` and `latest_step` may do: nothing is wrong
    (orbax goes on without it), so the warning is dropped; orbax's other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and str(record.msg).startswith("Metadata file does not exist")
                    and "orbax" in record.pathname)


logging.getLogger("absl").addFilter(_QuietMissingStepMetadata())
_ARRAY_TYPES = ("jax.Array", "np.ndarray")
_READ_BLOCK_ELEMENTS = 1 << 26  # arrays are verified in slices of at most this many elements (bounded memory)


class DamagedCheckpoint(UserError):
    """A step directory that exists but cannot be restored; `step_dir` and `what` (the damaged part) for callers
    that add their own advice (training names the previous checkpoint)."""

    def __init__(self, step_dir: Path, what: str, advice: str | None = None):
        self.step_dir, self.what = Path(step_dir), what
        advice = advice or ("use another checkpoint (a run keeps its last few steps under checkpoints/) or create "
                            "this one again")
        super().__init__(f"checkpoint {self.step_dir} is damaged: {what}; {advice}")


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
    text = os.environ.get(SAVE_DELAY_ENV)
    if not text:
        return ocp.args.JsonSave(item)
    try:  # checked here, in the main thread: inside orbax's background write it would be a thread's traceback
        delay = float(text)
    except ValueError:
        delay = -1.0
    if not 0 <= delay < float("inf"):
        raise UserError(f"{SAVE_DELAY_ENV}={text!r}: expected a number of seconds >= 0 (a test hook; unset it)")
    return _DelayedJsonSave(item)


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


def save_params(directory: str | Path, params: Any, config: ModelConfig | EncoderDecoderConfig, step: int = 0
                ) -> Path:
    """Synchronously writes params + model config as `directory/<step>` (used by convert). An encoder–decoder's
    params are `{"encoder": ..., "decoder": ...}` (`models.decoder.EncoderDecoder`) and its config is stored as
    `{"encoder": {...}, "decoder": {...}}`; `load_model_config` / `restore_params` give it back."""
    params = jax.tree_util.tree_map(np.asarray, params)
    with manager(directory) as mngr:
        mngr.save(step, args=ocp.args.Composite(
            **{PARAMS: ocp.args.StandardSave(params), MODEL_CONFIG: ocp.args.JsonSave(any_config_to_dict(config))}
        ))
        mngr.wait_until_finished()
    return Path(directory) / str(step)


def _read_json(step_dir: Path, path: Path) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise DamagedCheckpoint(step_dir, f"{path.relative_to(step_dir)} is missing") from None
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise DamagedCheckpoint(step_dir, f"{path.relative_to(step_dir)} is not valid JSON ({err})") from None


def load_model_config(path: str | Path) -> ModelConfig | EncoderDecoderConfig:
    directory, step = resolve(path)
    return _read_model_config(directory / str(step))


def _read_model_config(step_dir: Path) -> ModelConfig | EncoderDecoderConfig:
    raw = _read_json(step_dir, step_dir / MODEL_CONFIG / "metadata")
    try:
        if not isinstance(raw, dict):
            raise TypeError(f"a JSON {type(raw).__name__}, not an object")
        return any_config_from_dict(raw)
    except Exception as err:  # noqa: BLE001 - unknown keys (a UserError), malformed fields: not what we wrote
        raise DamagedCheckpoint(step_dir, f"{MODEL_CONFIG}/metadata is not a model configuration ({err})") from None


def short_error(err: BaseException) -> str:
    """A tensorstore error without its multi-kilobyte spec."""
    return str(err).split(" [tensorstore_spec=")[0].strip()[:300]


def verify_arrays(step_dir: Path, item: str) -> None:
    """Reads every array of the orbax PyTree item `step_dir/item` (e.g. params) synchronously; raises
    DamagedCheckpoint naming the array (and the reason) when one is missing or cannot be read and decoded."""
    import tensorstore as ts

    step_dir = Path(step_dir)
    item_dir = step_dir / item
    if not item_dir.is_dir():
        raise DamagedCheckpoint(step_dir, f"{item}/ is missing")
    meta = _read_json(step_dir, item_dir / "_METADATA")
    for sidecar in [item_dir / "_sharding", *sorted((item_dir / "array_metadatas").glob("*"))]:
        if sidecar.is_file():
            _read_json(step_dir, sidecar)
    try:
        names = [".".join(str(k["key"]) for k in entry["key_metadata"]) for entry in meta["tree_metadata"].values()
                 if entry["value_metadata"]["value_type"] in _ARRAY_TYPES]
    except (KeyError, TypeError, AttributeError) as err:
        raise DamagedCheckpoint(step_dir, f"{item}/_METADATA is not an orbax tree ({type(err).__name__}: {err})")
    base = {"driver": "file", "path": f"{item_dir.absolute()}/"}
    kvstore = {"driver": "ocdbt", "base": base} if (item_dir / "manifest.ocdbt").exists() else base
    try:
        keys = set(ts.KvStore.open(kvstore).result().list().result())
    except Exception as err:  # noqa: BLE001 - tensorstore's errors are ValueErrors of many kinds
        raise DamagedCheckpoint(step_dir, f"the index of {item}/ cannot be read ({short_error(err)})") from None
    for name in names:
        driver = next((d for d, key in (("zarr", ".zarray"), ("zarr3", "zarr.json"))
                       if f"{name}/{key}".encode() in keys), None)
        if driver is None:
            raise DamagedCheckpoint(step_dir, f"array {item}/{name} is missing")
        try:
            array = ts.open({"driver": driver, "kvstore": {**kvstore, "path": f"{name}/"}}, open=True).result()
            rows = max(1, _READ_BLOCK_ELEMENTS // max(1, int(np.prod(array.shape[1:]))))
            for start in range(0, array.shape[0], rows) if array.ndim else [None]:
                (array if start is None else array[start:min(start + rows, array.shape[0])]).read().result()
        except Exception as err:  # noqa: BLE001
            raise DamagedCheckpoint(step_dir, f"array {item}/{name} cannot be read ({short_error(err)})") from None


def verify_step(step_dir: str | Path, items: tuple[str, ...] = (PARAMS,), json_items: tuple[str, ...] = ()
                ) -> ModelConfig:
    """Checks one step directory before it is restored: its model configuration, every array of `items` and
    the JSON of `json_items`. Returns the model configuration; raises DamagedCheckpoint."""
    step_dir = Path(step_dir)
    config = _read_model_config(step_dir)
    for item in items:
        verify_arrays(step_dir, item)
    for item in json_items:
        _read_json(step_dir, step_dir / item / "metadata")
    return config


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
    """-> (params as NumPy arrays, or laid out like `target` when given (e.g. sharded abstract arrays), config).

    Raises UserError when there is no checkpoint at `path`, DamagedCheckpoint when it cannot be read."""
    directory, step = resolve(path)
    step_dir = directory / str(step)
    config = verify_step(step_dir)
    try:
        return _restore_params(step_dir / PARAMS, target), config
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - damage `verify` cannot see (orbax's own files)
        raise DamagedCheckpoint(step_dir, f"orbax cannot restore {PARAMS}/ ({short_error(err)})") from None


def _restore_params(item: Path, target: Any | None) -> Any:
    if target is None:
        # Host NumPy arrays, whatever device layout (or process count) the checkpoint was saved with.
        with ocp.PyTreeCheckpointer() as ckptr, _quiet_absl():
            meta = ckptr.metadata(item)  # warns that a manager-level metadata file is absent: it is not needed
            tree = getattr(meta, "item_metadata", meta)
            tree = getattr(tree, "tree", tree)
            as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            return ckptr.restore(item, restore_args=as_numpy)
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(item, target)
