"""Merging checkpoints into one (`python -m xlm_jax.merge`): read each with `workflows.convert.load_any` (anything
`convert` reads, our own outputs included), check that they can be merged, merge their parameters
(`xlm_jax.training.merging`: weighted average or TIES) and write our checkpoint format with the tokenizer copy.

Checks, all before anything is written (UserError, one line): at least two checkpoints; a known method; --density
in (0, 1] and --scale > 0 (TIES only), --base required by TIES and refused by averaging; one weight per
checkpoint; every checkpoint (and the base) of the same architecture (the model config's architecture fields,
then parameter names and shapes) and vocabulary (vocabulary size, and the same tokenizer file contents where
both sides carry one); the same task head (task and labels) where there is one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from xlm_jax.core import outputs
from xlm_jax.core.errors import UserError, check_choice, check_range
from xlm_jax.data.tokenizer import file_sha256
from xlm_jax.models.config import NON_ARCHITECTURE, ModelConfig, require_encoder, to_dict
from xlm_jax.training import checkpoint
from xlm_jax.training.merging import METHODS, average, ties
from xlm_jax.workflows.convert import load_any
from xlm_jax.workflows.loading import TASK_FILE, fine_tuned_checkpoint

MERGE_RECORD = "merge.json"  # what was merged, how: written next to the checkpoint


def _architecture(cfg: ModelConfig) -> dict:
    return {k: v for k, v in to_dict(cfg).items() if k not in NON_ARCHITECTURE}


def check_options(checkpoints: Sequence[str], method: str, density: float | None, base: str | None,
                  weights: Sequence[float] | None, scale: float | None) -> None:
    """The command line's values alone (nothing read yet); UserError naming the flag, the value and what is valid."""
    check_choice("--method", method, METHODS)
    if len(checkpoints) < 2:
        raise UserError(f"{len(checkpoints)} checkpoint(s) given: merging needs at least two (python -m xlm_jax.merge "
                        "OUT CKPT1 CKPT2 ...)")
    if method == "ties":
        if base is None:
            raise UserError("--method ties needs --base CKPT: the checkpoint the task vectors are taken from "
                            "(the model the merged ones were trained on from)")
        check_range("--density", 0.2 if density is None else density, 0, 1, low_open=True)
        check_range("--scale", 1.0 if scale is None else scale, 0, low_open=True)
    else:
        given = [flag for flag, value in (("--base", base), ("--density", density), ("--scale", scale))
                 if value is not None]
        if given:
            raise UserError(f"{given[0]} is for --method ties; --method average takes none of --base / --density / "
                            "--scale")
    if weights is not None:
        if len(weights) != len(checkpoints):
            raise UserError(f"--weights: {len(weights)} values for {len(checkpoints)} checkpoints; give one weight "
                            "per checkpoint")
        for i, w in enumerate(weights):
            check_range(f"--weights[{i}]", w, 0, low_open=True)


def _tokenizer_hashes(files: Sequence[str]) -> set[str]:
    return {file_sha256(f) for f in files}


def merge(out: str | Path, checkpoints: Sequence[str], *, method: str = "average", density: float | None = None,
          base: str | None = None, weights: Sequence[float] | None = None, scale: float | None = None,
          force: bool = False) -> str:
    """Merges `checkpoints` into `out` (our format: `out/0/{params,model_config}`, the first checkpoint's tokenizer
    files, its task.json when it has a head, merge.json); returns the line the command prints. Raises UserError
    (see the module docstring) before writing anything."""
    check_options(checkpoints, method, density, base, weights, scale)
    outputs.check_dir(out, "merge", force=force)
    for src in [*checkpoints, *([base] if base else [])]:
        outputs.check_overlap(out, src)
    loaded = [load_any(c) for c in checkpoints]
    base_loaded = load_any(base) if base is not None else None
    for c, (_, cfg, _) in zip([*checkpoints, *([base] if base else [])], [*loaded, *([base_loaded] if base else [])]):
        require_encoder(cfg, c, "merge")
    # A fine-tuning output's task.json travels (a head's task and labels; a contrastive model's pooling, length and
    # prefixes, which it has without a head): the same on every side, or refused.
    tasks = [info.task or fine_tuned_checkpoint(c)[1] for c, (_, _, info) in zip(checkpoints, loaded)]
    first_params, first_cfg, first_info = loaded[0]
    named = [(c, p, cfg, info, t) for c, (p, cfg, info), t in zip(checkpoints, loaded, tasks)]
    if base_loaded is not None:
        named.append((f"--base {base}", *base_loaded, base_loaded[2].task or fine_tuned_checkpoint(base)[1]))
    arch = _architecture(first_cfg)
    first_tok = _tokenizer_hashes(first_info.tokenizer_files)
    first_task = tasks[0]
    for name, params, cfg, info, task in named[1:]:
        if cfg.vocab_size != first_cfg.vocab_size:
            raise UserError(f"{name}: a vocabulary of {cfg.vocab_size} ids, but {checkpoints[0]} has "
                            f"{first_cfg.vocab_size}: only models of one vocabulary can be merged")
        theirs = _architecture(cfg)
        diff = [k for k in arch if arch[k] != theirs.get(k)]
        if diff:
            raise UserError(f"{name}: another architecture than {checkpoints[0]} (model.{diff[0]}: "
                            f"{theirs.get(diff[0])!r} vs {arch[diff[0]]!r}): only models of one architecture can be "
                            "merged")
        tok = _tokenizer_hashes(info.tokenizer_files)
        if first_tok and tok and not first_tok & tok:
            raise UserError(f"{name}: its tokenizer ({', '.join(Path(f).name for f in info.tokenizer_files)}) differs "
                            f"from {checkpoints[0]}'s: the same ids would mean other pieces, so they cannot be merged")
        if set(params) != set(first_params):
            raise UserError(f"{name}: parts {sorted(params)}, but {checkpoints[0]} has {sorted(first_params)} (an "
                            "LM head or a task head on one side only): only models of one architecture can be merged")
        if (task is None) != (first_task is None) or (task is not None and (
                task.task, task.labels, task.max_len, task.options) != (
                first_task.task, first_task.labels, first_task.max_len, first_task.options)):
            raise UserError(f"{name}: task {task.task if task else None} {list(task.labels) if task else ''} (its "
                            "task.json: labels, length, pooling, prefixes) differs from "
                            f"{checkpoints[0]}'s ({first_task.task if first_task else None})")
    trees = [p for p, _, _ in loaded]
    if method == "ties":
        merged = ties(base_loaded[0], trees, density=0.2 if density is None else density,
                      scale=1.0 if scale is None else scale, weights=weights)
    else:
        merged = average(trees, weights)
    record = {"method": method, "checkpoints": [str(c) for c in checkpoints], "base": base,
              "weights": list(weights) if weights is not None else None,
              **({"density": 0.2 if density is None else density, "scale": 1.0 if scale is None else scale}
                 if method == "ties" else {})}

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        for f in first_info.tokenizer_files:
            shutil.copy2(f, tmp / Path(f).name)
        checkpoint.save_params(tmp, merged, first_cfg, step=0)
        if first_task is not None:
            (tmp / TASK_FILE).write_text(first_task.to_json())
        (tmp / MERGE_RECORD).write_text(json.dumps(record, indent=2) + "\n")

    outputs.write_atomically(out, write, "merge")
    how = f"TIES (density {record['density']:g}, scale {record['scale']:g}, base {base})" if method == "ties" \
        else "averaging"
    return f"merged {len(checkpoints)} checkpoints by {how} -> {out} ({first_info.architecture})"
