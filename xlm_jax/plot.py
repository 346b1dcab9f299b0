"""Training curves of a run: `python -m xlm_jax.plot RUN_DIR [--out FILE.png]` (default RUN_DIR/metrics.png).

RUN_DIR/metrics.png is the run's own plot and is redrawn; an existing --out file is replaced only with --force.

Four panels from RUN_DIR/metrics.jsonl: training loss (total and per objective), accuracy per objective,
validation loss per language, throughput (tokens/s, global and per device).
"""

from __future__ import annotations


from xlm_jax.core.errors import ArgumentParser, exit_on_user_error
from xlm_jax.training.plots import DEFAULT_NAME, plot_run  # noqa: F401 - the library, re-exported for callers


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="PNG path (default RUN_DIR/metrics.png); an existing file needs --force")
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        path = plot_run(args.run_dir, args.out, args.force)
    print(path)


if __name__ == "__main__":
    main()
