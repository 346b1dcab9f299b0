"""Cross-lingual fine-tuning: XNLI, PAWS-X, generic classification, NER and extractive QA (`xlm_jax.tasks.qa`), with
per-language results.

    python -m xlm_jax.finetune configs/finetune_xnli.yaml init=CKPT [tokenizer=T.model] out=runs/xnli [key=value …]
    python -m xlm_jax.finetune --help-config      # every key, its default and type

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

This module is the command (arguments -> `xlm_jax.workflows.finetune.finetune`); the workflow lives there, the
tasks in `xlm_jax.tasks`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xlm_jax.core.errors import ArgumentParser, NonFiniteError, exit_on_user_error
from xlm_jax.training.settings import describe_dataclass
from xlm_jax.training.signals import Stopped
from xlm_jax.workflows.finetune import FINETUNE_CONFIG, FinetuneConfig, RunResult, finetune, load_config  # noqa: F401


def describe() -> str:
    """Every fine-tuning key with its default, type and meaning (--help-config)."""
    return "\n".join(describe_dataclass(FinetuneConfig()))


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.finetune", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", nargs="?", help="YAML config (configs/finetune_*.yaml)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides")
    parser.add_argument("--help-config", action="store_true", help="print every config key with its default and type")
    parser.add_argument("--force", action="store_true",
                        help="write into out= even if it holds files fine-tuning did not write (its best/, logs and "
                             "results are replaced, other files kept)")
    args = parser.parse_intermixed_args(argv)  # flags (--force) may come between key=value overrides
    if args.help_config:
        print(describe())
        return
    config_path, overrides = args.config, list(args.overrides)
    if config_path and "=" in config_path and not Path(config_path).exists():
        config_path, overrides = None, [config_path] + overrides
    with exit_on_user_error():
        cfg = load_config(config_path, overrides)
        try:
            result = finetune(cfg, force=args.force)
        except NonFiniteError as err:
            print(f"error: {err}; fine-tuning stopped. The last good checkpoint is {err.last_good or 'none'} "
                  "(nothing later was saved). Lower lr, raise warmup_ratio or check the data.", file=sys.stderr)
            sys.exit(3)
        except Stopped as err:  # SIGINT / SIGTERM in the loop: the state is saved and named (stdout)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:  # Ctrl-C outside the loop (reading the data, building the model)
            print("SIGINT: stopped before the first step; nothing was saved", file=sys.stderr)
            sys.exit(130)
    print(result.markdown)
    print(f"best step {result.best_step}; results in {cfg.out}/results.md and results.json")


if __name__ == "__main__":
    main()
