"""Cross-lingual fine-tuning: XNLI, PAWS-X, generic classification, NER and extractive QA (`xlm_jax.tasks.qa`), with
per-language results.

    python -m xlm_jax.finetune configs/finetune_xnli.yaml init=CKPT [tokenizer=T.model] out=runs/xnli [key=value …]
    python -m xlm_jax.finetune --help-config      # every key, its default and type

Protocols, model selection, optimisation, outputs, stop / resume: `xlm_jax.workflows.finetune` (and
docs/finetune.md).

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
