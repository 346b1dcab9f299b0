"""Machine-translation training: `python -m xlm_jax.train_mt [CONFIG.yaml] [key=value ...]`.

Trains an encoder–decoder (`xlm_jax.models.decoder.EncoderDecoder`) XLM's way: supervised MT on parallel data
(objectives.mt=[en-fr]), denoising auto-encoding (objectives.ae=[en,fr]) and online back-translation
(objectives.bt=[en-fr-en,fr-en-fr]), each its own update with an XLM lambda schedule; initialised at random,
from an MLM checkpoint (encoder and decoder: model.init=mlm model.init_from=CKPT) or the encoder only
(model.init=encoder). With no arguments: a tiny en->fr model on this machine's gettext pairs, a few minutes on a CPU.

    python -m xlm_jax.train_mt configs/mt_gettext_tiny.yaml
    python -m xlm_jax.train_mt configs/mt_gettext_tiny.yaml model.init=mlm model.init_from=runs/default
    python -m xlm_jax.train_mt objectives.mt=[] objectives.ae=[en,fr] objectives.bt=[en-fr-en,fr-en-fr] \
        data.mono_split=true run_dir=runs/unmt
    python -m xlm_jax.train_mt --help-config

Re-running the same command resumes from the latest checkpoint exactly. RUN_DIR: config.yaml, tokenizer.model,
metrics.jsonl, tb/, checkpoints/<iteration>/, best/<iteration>/ (best validation train.metric); the params are
{"encoder", "decoder"} with an EncoderDecoderConfig (`xlm_jax.training.checkpoint.restore_params`).

Exit codes: 0 done; 2 bad input (one `error:` line, nothing written); 3 NaN / inf; 130 / 143 after SIGINT / SIGTERM
and a checkpoint. The workflow is `xlm_jax.mt.loop.train_mt`.
"""

from __future__ import annotations

import argparse
import sys

from xlm_jax.core import outputs
from xlm_jax.core.errors import ArgumentParser, exit_on_user_error
from xlm_jax.mt.config import describe, load_mt_config
from xlm_jax.mt.loop import train_mt
from xlm_jax.training.settings import split_config_args

EXIT_USER_ERROR = 2


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.train_mt", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", metavar="CONFIG.yaml | key=value")
    parser.add_argument("--help-config", action="store_true", help="print every config key with its default")
    parser.add_argument("--force", action="store_true", help="use run_dir even if it holds files train_mt did not "
                                                             "write")
    args = parser.parse_intermixed_args(argv)
    if args.help_config:
        print(describe())
        return
    with exit_on_user_error(EXIT_USER_ERROR):
        cfg = load_mt_config(*split_config_args(args.args))
        try:
            code = train_mt(cfg, force=args.force)
        except OSError as err:
            raise outputs.as_user_error(err, cfg.run_dir) from err
    sys.exit(code)


if __name__ == "__main__":
    main()
