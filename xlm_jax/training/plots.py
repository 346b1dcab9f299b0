"""Training curves of a run, drawn from RUN_DIR/metrics.jsonl (`plot_run`): for `python -m xlm_jax.plot` and for
the end of a pretraining run (RUN_DIR/metrics.png).

Four panels: training loss (total and per objective), accuracy per objective, validation loss per language,
throughput (tokens/s, global and per device).
"""

from __future__ import annotations

from pathlib import Path

from xlm_jax.core.errors import UserError
from xlm_jax.core.outputs import check_file_output, write_file
from xlm_jax.training.metrics import read_metrics

DEFAULT_NAME = "metrics.png"


def plot_run(run_dir: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Draws RUN_DIR/metrics.jsonl into `out` (default RUN_DIR/metrics.png, the run's own plot, redrawn each
    time); returns its path. An existing `out` other than the default is a UserError unless `force`."""
    if out is not None and Path(out).absolute() != (Path(run_dir) / DEFAULT_NAME).absolute():
        check_file_output(out, force=force)
    import matplotlib  # deferred: matplotlib is heavy, and only a finished run or the plot command draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if out is not None:
        formats = plt.gcf().canvas.get_supported_filetypes()
        plt.close("all")
        if Path(out).suffix.lstrip(".").lower() not in formats:
            raise UserError(f"--out {out}: the file name must end in an image format matplotlib writes "
                            f"({', '.join('.' + f for f in sorted(formats))})")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"{run_dir}: has no metrics.jsonl (is it a pretraining run directory?)")
    records = read_metrics(run_dir)
    train = [r for r in records if r.get("kind", "train") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    if not train:
        raise UserError(f"{run_dir}/metrics.jsonl has no training records to plot")
    objectives = sorted({k.split("/")[0] for r in train for k in r if k.endswith("/loss") and k.count("/") == 1})

    def series(rows, key):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0, 0]
    ax.plot(*series(train, "loss"), label="total (weighted sum)", color="black")
    for obj in objectives:
        ax.plot(*series(train, f"{obj}/loss"), label=obj)
    ax.set_title("training loss")
    ax.set_xlabel("step")
    ax.legend()
    ax = axes[0, 1]
    for obj in objectives:
        ax.plot(*series(train, f"{obj}/accuracy"), label=obj)
    ax.set_title("masked-token accuracy")
    ax.set_xlabel("step")
    if objectives:
        ax.legend()
    ax = axes[1, 0]
    if valid:
        langs = sorted({k.split("/", 1)[1] for r in valid for k in r if k.startswith("loss/")})
        for lang in langs:
            ax.plot(*series(valid, f"loss/{lang}"), marker="o", lw=0.8, label=lang)
        ax.plot(*series(valid, "loss"), color="black", lw=2, marker="o", label="mean")
        ax.legend(fontsize=6, ncol=2)
    ax.set_title("validation MLM loss per language")
    ax.set_xlabel("step")
    ax = axes[1, 1]
    ax.plot(*series(train, "tokens_per_s"), label="global")
    ax.plot(*series(train, "tokens_per_s_per_device"), label="per device")
    ax.set_title("throughput (tokens/s)")
    ax.set_xlabel("step")
    ax.legend()
    fig.suptitle(str(run_dir))
    fig.tight_layout()
    out = Path(out) if out else run_dir / DEFAULT_NAME
    try:
        return write_file(out, lambda tmp: fig.savefig(tmp, dpi=100))  # savefig picks the format from the suffix
    finally:
        plt.close(fig)
