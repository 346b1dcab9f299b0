"""experiments/accelerator/run.sh --dry-run: the accelerator measurement end to end on CPU (tiny shapes, both
frameworks, packed and padded rows, the ModernBERT family, the packed-attention check), so that the real run on a
lent GPU is known to work before a device appears. ~2 minutes on a quiet 2-core machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "experiments" / "accelerator"))

from measure import PART_FIELDS, ROW_FIELDS  # noqa: E402


@pytest.mark.slow
def test_dry_run_writes_every_field(tmp_path):
    out = tmp_path / "out"
    # A generous budget: on a loaded CI machine no part may be skipped for time (the real run's budget is 450 s).
    proc = subprocess.run([str(REPO / "experiments" / "accelerator" / "run.sh"), "--dry-run", "--budget", "1500",
                           "--out", str(out)], capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    for part in ("attention", "xlmr_base/packed", "xlmr_large/padded", "mmbert_base/packed"):
        assert f"[{part}] budget: ~" in proc.stdout  # each part's time budget is printed
    report = json.loads((out / "accelerator.json").read_text())
    assert report["dry_run"] and report["machine"]["backend"] == "cpu"
    assert [p["name"] for p in report["parts"]] == ["attention", "xlmr_base/packed", "xlmr_large/padded",
                                                    "mmbert_base/packed"]
    for p in report["parts"]:
        assert set(PART_FIELDS) <= set(p) and p["status"] == "ok", p
    rows = report["results"]
    assert {(r["model"], r["layout"], r["side"]) for r in rows} == {
        ("xlmr_base", "packed", "jax"), ("xlmr_base", "packed", "torch_masked"), ("xlmr_large", "padded", "jax"),
        ("xlmr_large", "padded", "torch_masked"), ("mmbert_base", "packed", "jax")}
    for r in rows:
        assert set(ROW_FIELDS) <= set(r), r
        assert r["error"] is None and r["tokens_per_s_per_device"] > 0 and r["tflops_per_s"] > 0, r
        assert r["real_tokens_per_s"] <= r["tokens_per_s_per_device"] and r["peak_memory_mib"] > 0
        assert r["compile_s"] is not None and r["step_ms"] > 0 and r["attention_path"]
        assert r["mfu"] is None  # a CPU has no bf16 peak in the table
    # Same weights, same batch: xlm_jax and HF compute the same loss on packed rows (4-D mask, position ids) too.
    for model in ("xlmr_base", "xlmr_large"):
        a, b = (next(r["eval_loss_same_weights"] for r in rows if r["model"] == model and r["side"] == side)
                for side in ("jax", "torch_masked"))
        assert a == pytest.approx(b, abs=1e-3)
    check = report["attention_check"]["impls"]["auto"]
    assert check["ok"] and check["max_abs_diff"] <= 1e-4 < check["crossing_diff"]
    assert check["kernel"].startswith("xla") and check["train_kernel"].startswith("xla")
    md = (out / "accelerator.md").read_text()
    assert "| xlmr_base | packed | jax |" in md and "| mmbert_base | packed | jax |" in md
    assert "Packed attention vs each example alone" in md and (out / "logs.txt").exists()
