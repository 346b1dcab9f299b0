"""The benchmark's smoke mode end to end: both frameworks run one step on tiny shapes and the JSON has every field."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xlm_jax import bench

ROOT = Path(__file__).resolve().parents[1]


def test_batch_and_hf_labels_describe_the_same_predictions():
    cfg = bench.CONFIGS["smoke"]
    batch = bench.make_batch(cfg, seed=3)
    labels = bench.hf_labels(batch)
    assert batch["input_ids"].shape == (cfg.batch, cfg.seq_len)
    assert (batch["input_ids"][:, 0] == 0).all() and (batch["input_ids"][:, -1] == 2).all()
    # Exactly the predicted positions carry a label, and it is the original token.
    n_pred = int(batch["mlm_weights"].sum())
    assert (labels >= 0).sum() == n_pred > 0
    rows, slots = np.nonzero(batch["mlm_weights"] > 0)
    np.testing.assert_array_equal(labels[rows, batch["mlm_positions"][rows, slots]], batch["mlm_targets"][rows, slots])
    np.testing.assert_array_equal(bench.make_batch(cfg, seed=3)["input_ids"], batch["input_ids"])


def test_named_configs_match_the_issue():
    c = bench.CONFIGS["cpu_xlmr"]
    m = c.model
    assert (m.vocab_size, m.num_layers, m.hidden_size, m.num_heads, m.intermediate_size) == (250002, 4, 256, 4, 1024)
    assert (c.seq_len, c.batch) == (128, 16)
    assert bench.CONFIGS["xlmr_base"].seq_len == bench.CONFIGS["xlmr_large"].seq_len == 512
    assert bench.CONFIGS["xlmr_base"].devices == ("gpu",)


def test_bad_config_name_exits_2(capsys):
    assert bench.main(["--configs", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_run_writes_json_for_both_frameworks(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "xlm_jax.bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").stat().st_size > 0
    assert report["machine"]["nproc"] >= 1 and report["settings"]["torch_compile"] is False
    (result,) = report["results"]
    assert result["config"] == "smoke" and result["tokens_per_step"] == 2 * 32
    for fw in ("jax", "torch_eager"):
        entry = result["frameworks"][fw]
        assert entry["error"] is None
        assert entry["train_tokens_per_s"] > 0 and entry["infer_tokens_per_s"] > 0
        assert entry["train_step_s"] > 0 and entry["first_step_s"] > 0
        assert entry["memory"]["peak_rss_mb"] > 0
        assert np.isfinite(entry["loss_last"])
    assert result["ratio"]["train_jax_over_torch_eager"] > 0
    assert result["ratio"]["infer_jax_over_torch_eager"] > 0
    # Same initial weights, same batch: the two implementations compute the same eval loss.
    losses = result["eval_loss_same_weights"]
    assert losses["jax"] == pytest.approx(losses["torch_eager"], abs=1e-4)
    assert result["flops_per_token"] > 0
    assert "smoke" in proc.stdout and "ratio jax/torch_eager" in proc.stdout


def test_breakdown_runs_for_both_sides_and_is_printed(tmp_path):
    """The per-part timing that docs/benchmarks.md quotes ("Where the time goes"): each worker's `breakdown` on the
    smoke shapes, in-process, then the table lines the parent prints from it."""
    torch = pytest.importorskip("torch")
    from xlm_jax.config import to_dict

    cfg = bench.CONFIGS["smoke"]
    base = {"config": cfg.name, "model": to_dict(cfg.model), "batch": cfg.batch, "seq_len": cfg.seq_len,
            "device": "cpu", "threads": torch.get_num_threads(), "cpus": None, "seed": 0, "max_steps": 8}
    weights = str(tmp_path / "w.npz")
    jax_worker = bench.JaxWorker({**base, "framework": "jax", "weights": None})
    jax_worker.export_weights(weights)  # both sides start from the same weights, as in a real run
    workers = {"jax": jax_worker, "torch_eager": bench.TorchWorker({**base, "framework": "torch_eager",
                                                                       "weights": weights})}
    record = {"config": cfg.name, "tokens_per_step": cfg.tokens_per_step, "frameworks": {}}
    parts = {"encoder_forward", "forward_loss", "forward_backward", "optimizer_update"}
    for fw, worker in workers.items():
        # Step timings are not what is tested here (the smoke test runs them): fixed values keep this test short.
        entry = {"train_step_s_all": [0.01], "infer_step_s_all": [0.01], "breakdown_s": worker.breakdown(2)}
        assert set(entry["breakdown_s"]) == parts | ({"forward_backward_full_logits"} if fw == "jax" else set())
        assert all(v > 0 for v in entry["breakdown_s"].values()), entry["breakdown_s"]
        record["frameworks"][fw] = entry
    bench._derive(record)
    table = bench.format_table([record])
    for fw in workers:
        line = next(x for x in table.splitlines() if f"breakdown {fw} (ms; step" in x)
        assert all(f"{part} " in line for part in parts) and "LM head + loss = " in line and "% of the forward" in line
