"""Finding and loading fine-tuned checkpoints: what `xlm_jax.load` (the notebook API) and `python -m
xlm_jax.evaluate` share. A fine-tuning run writes its best parameters to `OUT/best/<step>` with `task.json`
(`TaskInfo`: task, labels, max_len, task options) and records its config, tokenizer included, in
`OUT/finetune_config.json`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.core.textfiles import read_text
from xlm_jax.models.config import ModelConfig
from xlm_jax.tasks import Task, get_task
from xlm_jax.training.checkpoint import resolve, restore_params

TASK_FILE = "task.json"
FINETUNE_CONFIG = "finetune_config.json"  # written by every fine-tuning run: marks its outputs, names its tokenizer


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What `evaluate` needs to rebuild a head: saved as `task.json` next to the best checkpoint."""

    task: str
    labels: tuple[str, ...]
    max_len: int
    options: dict = dataclasses.field(default_factory=dict, hash=False)  # task settings (qa: windows, decoding)

    @property
    def spec(self) -> Task:
        """The task, bound to the recorded options (`Task.configured`: the contrastive pooling and loss)."""
        return get_task(self.task).configured(self.options)

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


def task_model(config: ModelConfig, spec: Task, num_labels: int) -> nn.Module:
    """The encoder with `spec`'s head (`Task.model`)."""
    return spec.model(config, num_labels)


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
    if "classifier" not in params and info.spec.kind != "embedding":  # an embedding model has no head
        raise UserError(f"{ckpt}: the checkpoint has no classifier head although {TASK_FILE} names task {info.task!r}")
    config = config.replace(dropout=0.0, attention_dropout=0.0)
    return task_model(config, info.spec, len(info.labels)), params, config, info


def is_task_checkpoint(p: Path) -> bool:
    """Whether `p` is a fine-tuning output, its best/ or a step in it (a task.json next to it)."""
    return any((d / TASK_FILE).is_file() for d in (p / "best", p, p.parent))


def fine_tuned_checkpoint(path: str | Path) -> tuple[Path, TaskInfo | None]:
    """What `convert` and `finetune init=` read for a path: a fine-tuning output directory means its best
    checkpoint (`OUT/best`), as for `xlm_jax.load`; its best/ or a step in it, the same with its task; anything
    else is returned as given -> (checkpoint path, its TaskInfo or None). Raises UserError for a fine-tuning output
    that has no best checkpoint yet, naming the path that will hold it."""
    p = Path(path)
    if is_task_checkpoint(p):
        return find_task_checkpoint(p)
    if (p / FINETUNE_CONFIG).is_file():
        raise UserError(f"{path}: a fine-tuning output without a best checkpoint ({p / 'best'} does not exist: "
                        "fine-tuning writes it at its first validation, or at its end without valid data); give "
                        f"{p / 'best'} once it exists")
    return p, None


def finetune_tokenizer_record(path: Path) -> tuple[Path | None, str, str]:
    """The tokenizer of the fine-tuning output holding `path` (OUT, OUT/best or a step in it) -> (file or None,
    the sha256 OUT/finetune_config.json records ("" when none), why there is no file).

    The output's own copy (`tokenizer_copy`: its name relative to OUT, with `tokenizer_sha256`) is read first; outputs
    written before the copy record the path given at fine-tuning time, resolved against OUT, then as an absolute
    path or relative to the working directory."""
    for out in [path, *path.parents][:3]:
        record = out / FINETUNE_CONFIG
        if record.is_file():
            try:
                data = json.loads(record.read_text())
                recorded = data.get("tokenizer_copy") or data["tokenizer"]
                sha = str(data.get("tokenizer_sha256", "") or "")
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                return None, f"{record} cannot be read ({type(err).__name__}: {err})", ""
            source = str(data.get("tokenizer_source", "") or "")
            for candidate in (out / recorded, Path(recorded), *([Path(source)] if source else [])):
                if recorded and candidate.is_file():
                    return candidate.absolute(), "", sha
            return None, (f"the fine-tuning run used the tokenizer {source or recorded!r}, which no longer exists "
                          f"(and {out} holds no copy of it)"), sha
    return None, f"no {FINETUNE_CONFIG} found next to the checkpoint", ""


def finetune_tokenizer(path: Path) -> tuple[Path | None, str]:
    """`finetune_tokenizer_record` without the sha256 -> (file or None, why not)."""
    found, note, _ = finetune_tokenizer_record(path)
    return found, note


def layer_index(layer, num_layers: int, name: str = "layer") -> int:
    """`layer` (1..L from the bottom, -1..-L from the top; XTREME's convention) -> 0-based index; UserError
    otherwise (0 is not a layer: the embeddings are not offered)."""
    if (not isinstance(layer, int | np.integer) or isinstance(layer, bool)
            or not (1 <= layer <= num_layers or -num_layers <= layer <= -1)):
        raise UserError(f"{name}={layer!r}: the model has layers 1..{num_layers} (or -1..-{num_layers} from the top)")
    return int(layer) - 1 if layer > 0 else num_layers + int(layer)
