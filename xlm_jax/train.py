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

The workflow lives in `xlm_jax.pretrain` (config, data, setup, loop, adapt); this module is its command line:
the arguments, the distributed initialisation, then `xlm_jax.pretrain.loop.train` (re-exported here as `train`).

Multi-host: start one process per host with --coordinator HOST:PORT --num-processes N --process-id I (or
XLMJAX_COORDINATOR / XLMJAX_NUM_PROCESSES / XLMJAX_PROCESS_ID; automatic on TPU slices). Each process builds
only its own rows of every batch.
"""

from __future__ import annotations

import argparse
import os
import sys

from xlm_jax.core import outputs
from xlm_jax.core.errors import ArgumentParser, exit_on_user_error, nonnegative_int, positive_int
from xlm_jax.pretrain.config import describe, load_config
from xlm_jax.pretrain.loop import train  # `xlm_jax.train.train`: the workflow, re-exported
from xlm_jax.training.settings import split_config_args
from xlm_jax.training.saving import abandoned_writes_left
from xlm_jax.training.sharding import initialize_distributed

EXIT_USER_ERROR = 2


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
        config_path, overrides = split_config_args(args.args)
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        cfg = load_config(config_path, overrides)
        try:
            code = train(cfg, force=args.force)
        except OSError as err:  # a full disk outside the training loop (config.yaml, the data cache, ...)
            raise outputs.as_user_error(err, cfg.run_dir) from err
    sys.exit(code)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as done:
        if abandoned_writes_left():
            # The one error line is out; orbax's abandoned writes would print at interpreter shutdown. The
            # checkpoints on disk are complete or absent (orbax renames a step into place only when complete).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 1)
        raise
