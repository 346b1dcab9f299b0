"""Training metrics on disk: `RUN_DIR/metrics.jsonl` (one JSON object per record) and TensorBoard events.

Records carry `step` and `kind` ("train" or "valid"); every other key is a number (or null, e.g. `mfu` on
CPU). On resume the file is cut back to the checkpoint's step, so the file of a resumed run equals that of a
run never interrupted. TensorBoard events go to `RUN_DIR/tb` through tensorboardX (no TensorFlow, no PyTorch).

Throughput keys of "train" records, over the interval's timed steps (null when it held only the compilation
step), from `xlm_jax.training.flops.throughput` (docs/benchmarks.md, "Which figure is which"):
`tokens_per_s` (every input position of the padded [B, T] batches, TLM padding included), `real_tokens_per_s`
(attention_mask > 0 only), `tokens_per_s_per_device`, `flops_per_token` (analytic training FLOPs per padded
position; the LM head credited at the predicted tokens), `tflops_per_s` (= tokens_per_s * flops_per_token / 1e12),
`tflops_per_s_per_device`, `mfu` (= tflops_per_s / summed peak; null unless the device's peak is known or
declared in $XLM_JAX_PEAK_FLOPS), `elapsed_s` (wall time since the command started).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    # Damaged bytes (a disk error, a line cut by a kill -9 in mid-write) lose their record, not the file.
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def _clean(value: Any) -> Any:
    """JSON has no NaN / inf: they are written as null (the trainer reports them separately)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextlib.contextmanager
def _torch_not_imported():
    """Makes `import torch` fail inside the block, unless this process has imported torch already.

    tensorboardX imports torch at import time whenever it is installed (to accept torch tensors; the [test] extras
    install it): seconds and hundreds of MB for nothing, since we log Python floats, and against the promise
    that the core never imports PyTorch. tensorboardX falls back to NumPy when the import fails."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # the import system raises ImportError for a None entry
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


class MetricsWriter:
    """Appends records to metrics.jsonl and TensorBoard. Only process 0 creates one (`enabled=False` elsewhere)."""

    def __init__(self, run_dir: str | Path, resume_step: int = 0, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self._tb = None
        if not enabled:
            return
        kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= resume_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)
        self._file = open(self.path, "a")
        try:
            with _torch_not_imported():
                from tensorboardX import SummaryWriter

            # purge_step drops events past the checkpoint that a killed run had already written.
            self._tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:  # TensorBoard is optional; metrics.jsonl is the record of truth
            self._tb = None

    def write(self, step: int, kind: str, values: dict[str, Any]) -> dict[str, Any]:
        record = {"step": int(step), "kind": kind, **{k: _clean(v) for k, v in values.items()}}
        if not self.enabled:
            return record
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            prefix = "" if kind == "train" else f"{kind}/"
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{prefix}{key}", value, int(step))
        return record

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._tb is not None:
            try:
                self._tb.close()
            except OSError:
                # A full disk: the events cannot be flushed now, and tensorboardX would retry (and print a
                # traceback) in its atexit hook. Give them up; the caller reports the error in one line.
                for file_writer in (getattr(self._tb, "all_writers", None) or {}).values():
                    file_writer.event_writer._closed = True
                raise
