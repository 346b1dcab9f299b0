"""The benchmark's smoke mode end to end: both frameworks run one step on tiny shapes and the JSON has every field."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xlm_jax.bench.__main__ import main, parse_sides
from xlm_jax.bench.jax_side import JaxWorker
from xlm_jax.bench.report import derive, describe, format_table, format_varlen_table, new_record
from xlm_jax.bench.torch_side import TorchWorker
from xlm_jax.bench.workload import CONFIGS, BenchConfig, hf_labels, make_batch, per_sentence, varlen_set
from xlm_jax.core.errors import UserError
from xlm_jax.models.config import to_dict
from xlm_jax.training.flops import model_flops_per_token

ROOT = Path(__file__).resolve().parents[1]


def test_batch_and_hf_labels_describe_the_same_predictions():
    cfg = CONFIGS["smoke"]
    batch = make_batch(cfg, seed=3)
    labels = hf_labels(batch)
    assert batch["input_ids"].shape == (cfg.batch, cfg.seq_len)
    assert (batch["input_ids"][:, 0] == 0).all() and (batch["input_ids"][:, -1] == 2).all()
    # Exactly the predicted positions carry a label, and it is the original token.
    n_pred = int(batch["mlm_weights"].sum())
    assert (labels >= 0).sum() == n_pred > 0
    rows, slots = np.nonzero(batch["mlm_weights"] > 0)
    np.testing.assert_array_equal(labels[rows, batch["mlm_positions"][rows, slots]], batch["mlm_targets"][rows, slots])
    np.testing.assert_array_equal(make_batch(cfg, seed=3)["input_ids"], batch["input_ids"])


def test_named_configs_match_the_issue():
    c = CONFIGS["cpu_xlmr"]
    m = c.model
    assert (m.vocab_size, m.num_layers, m.hidden_size, m.num_heads, m.intermediate_size) == (250002, 4, 256, 4, 1024)
    assert (c.seq_len, c.batch) == (128, 16)
    assert CONFIGS["xlmr_base"].seq_len == CONFIGS["xlmr_large"].seq_len == 512
    assert CONFIGS["xlmr_base"].devices == ("gpu",)
    # --varlen's XLM-R comparison: cpu_mmbert's shape and MLP parameters (GELU 2 x D x 1152 = GeGLU 3 x D x 768).
    mm, xr = CONFIGS["cpu_mmbert"], CONFIGS["cpu_xlmr_mmshape"]
    assert (xr.model.family, mm.model.family) == ("xlmr", "modernbert") and xr.devices == ()
    assert [(c.model.num_layers, c.model.hidden_size, c.model.num_heads, c.batch, c.seq_len) for c in (mm, xr)] == \
        [(4, 256, 4, 4, 512)] * 2
    assert 2 * xr.model.intermediate_size == 3 * mm.model.intermediate_size


def _exit_code(argv) -> int:
    with pytest.raises(SystemExit) as done:
        main(argv)
    return done.value.code


def test_bad_config_name_exits_2(capsys):
    # Through errors.exit_on_user_error, like every command (bench printed its own line and returned 2 before).
    assert _exit_code(["--configs", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--sides", "torch_maskd"], ["unknown side --sides=torch_maskd", "did you mean --sides=torch_masked"]),
    (["--sides", "jax,pytorch"], ["unknown side --sides=pytorch", "valid: jax, torch_eager, torch_masked"]),
    (["--sides", "torch_eager,torch_masked"], ["must include jax"]),
    (["--sides", "jax,torch_masked,jax"], ["jax listed more than once"]),
    (["--sides", "jax,,torch_masked"], ["--sides='jax,,torch_masked'", "empty name"]),
    (["--sides", ""], ["--sides=''", "empty name"]),
    (["--sides", "jax,torch_compile", "--torch-compile", "off"], ["lists torch_compile but --torch-compile off"]),
    (["--configs", ","], ["--configs=','", "no configuration named", "cpu_xlmr"]),
    (["--configs", "cpu_xlm"], ["unknown configuration --configs=cpu_xlm", "did you mean --configs=cpu_xlmr"]),
    (["--smoke", "--configs", "smok"], ["did you mean --configs=smoke"]),
    (["--varlen", "--sides", "jax,torch_compile"], ["lists torch_compile but --varlen", "valid with --varlen"]),
    (["--varlen", "--sides", "jax,torch_masked"],
     ["lists torch_masked but --varlen", "valid with --varlen: jax, torch_eager"]),
    (["--varlen", "--torch-compile", "on"], ["--torch-compile on: --varlen runs the uncompiled encoder"]),
])
def test_bad_sides_and_configs_exit_2_with_one_line_before_any_worker(argv, words, capsys):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "starting" not in err, err
    for word in words:
        assert word in err, (word, err)


def test_sides_default_and_order():
    assert parse_sides(None, "auto", smoke=False) == ("jax", "torch_eager", "torch_masked", "torch_compile")
    assert parse_sides(None, "auto", smoke=True) == ("jax", "torch_eager", "torch_masked")
    assert parse_sides(None, "off", smoke=False) == ("jax", "torch_eager", "torch_masked")
    assert parse_sides(None, "on", smoke=True)[-1] == "torch_compile"
    assert parse_sides(" torch_masked , jax ", "off", smoke=False) == ("jax", "torch_masked")


def expected_flops_per_token(cfg: BenchConfig, seed: int = 0) -> float:
    """From the batch, independently of the bench: the head is credited at the predicted fraction of the B x T
    input positions (not at the filled fraction of the B x P prediction slots)."""
    weights = make_batch(cfg, seed)["mlm_weights"]
    return model_flops_per_token(cfg.model, cfg.seq_len, float(weights.sum()) / (cfg.batch * cfg.seq_len))


def test_model_tflops_and_mfu_follow_from_the_predicted_fraction():
    cfg = CONFIGS["cpu_xlmr"]
    record = new_record(cfg, seed=0)
    fpt = expected_flops_per_token(cfg)
    assert record["flops_per_token"] == pytest.approx(fpt, rel=1e-12)
    # ~15 % of the positions are predicted: 7.73e7 FLOPs per token on cpu_xlmr (3.84e8 with the slot fill).
    assert 0.14 < record["predicted_tokens_per_step"] / record["tokens_per_step"] < 0.16
    assert record["flops_per_token"] == pytest.approx(7.73e7, rel=1e-3)
    peak = 5e11
    record["frameworks"] = {
        "jax": {"warmup": {"peak_flops": peak, "first_step_s": 9.0}, "train_step_s_all": [4.0, 2.0, 3.0],
                "infer_step_s_all": [1.0, 2.0, 1.5]},
        "torch_eager": {"warmup": {"first_step_s": 9.0}, "train_step_s_all": [12.0, 10.0, 11.0],
                        "infer_step_s_all": [3.0]},
    }
    derive(record)
    for fw, step_s in (("jax", 3.0), ("torch_eager", 11.0)):
        entry = record["frameworks"][fw]
        assert entry["train_tokens_per_s"] == pytest.approx(cfg.batch * cfg.seq_len / step_s)
        assert entry["model_tflops_per_s"] == pytest.approx(entry["train_tokens_per_s"] * fpt / 1e12, rel=1e-12)
        assert entry["mfu"] == pytest.approx(entry["model_tflops_per_s"] * 1e12 / peak, rel=1e-12)
    assert record["ratio"]["train_jax_over_torch_eager"] == pytest.approx(11.0 / 3.0)
    assert record["ratio"]["infer_jax_over_torch_eager"] == pytest.approx(3.0 / 1.5)


@pytest.mark.parametrize("value", ["fast", "0", "-5e12", "nan"])
def test_bad_peak_flops_variable_exits_2_before_any_worker(value, capsys, monkeypatch):
    monkeypatch.setenv("XLM_JAX_PEAK_FLOPS", value)
    assert _exit_code(["--smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: XLM_JAX_PEAK_FLOPS=") and repr(value) in err and "positive" in err
    assert "starting" not in err


@pytest.mark.slow
def test_smoke_run_writes_json_for_both_frameworks(tmp_path):
    peak = 3e11  # a declared peak, so that the CPU run reports an MFU to check
    proc = subprocess.run(
        [sys.executable, "-m", "xlm_jax.bench", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "XLM_JAX_PEAK_FLOPS": str(peak)},
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
    # Throughput figures derived independently from the batch and the reported tokens/s.
    fpt = expected_flops_per_token(CONFIGS["smoke"], report["settings"]["seed"])
    assert result["flops_per_token"] == pytest.approx(fpt, rel=1e-9)
    assert result["peak_flops_per_device"] == peak
    for fw in ("jax", "torch_eager"):
        entry = result["frameworks"][fw]
        assert entry["train_tokens_per_s"] == pytest.approx(2 * 32 / entry["train_step_s"], rel=1e-9)
        assert entry["model_tflops_per_s"] == pytest.approx(entry["train_tokens_per_s"] * fpt / 1e12, rel=1e-9)
        assert entry["mfu"] == pytest.approx(entry["model_tflops_per_s"] * 1e12 / peak, rel=1e-9)
    assert "smoke" in proc.stdout and "ratio jax/torch_eager" in proc.stdout


def test_published_figures_come_from_the_committed_result():
    """README and docs/benchmarks.md quote docs/results/bench_cpu_xlmr.json, and that result's FLOPs are today's."""
    report = json.loads((ROOT / "docs" / "results" / "bench_cpu_xlmr.json").read_text())
    assert report["command"].startswith("python -m xlm_jax.bench --configs cpu_xlmr --steps 2 --repeats 3")
    (result,) = report["results"]
    assert result["flops_per_token"] == pytest.approx(expected_flops_per_token(CONFIGS["cpu_xlmr"]), rel=1e-9)
    ratio = result["ratio"]
    readme, docs = (ROOT / "README.md").read_text(), (ROOT / "docs" / "benchmarks.md").read_text()
    for key in ("train_jax_over_torch_eager", "infer_jax_over_torch_eager"):
        assert f"{ratio[key]:.1f}×" in readme, key
        assert f"{ratio[key]:.2f}×" in docs, key
    assert f"{ratio['train_jax_over_torch_masked']:.2f}×" in docs and f"{ratio['train_jax_over_torch_masked']:.1f}×" in readme
    for fw in ("jax", "torch_eager", "torch_masked", "torch_compile"):
        entry = result["frameworks"][fw]
        assert f"{entry['train_step_s']:.2f} s" in docs and f"{entry['model_tflops_per_s']:.4f}" in docs, fw
    assert f"{result['flops_per_token']:.2e}".replace("e+07", "e7") in docs


def test_torch_masked_is_the_same_function_and_step_as_torch_eager(tmp_path):
    """torch_masked projects only the predicted positions: from the same weights its eval loss, its first training
    losses (dropout off) and its gradients equal torch_eager's (HF's labels = -100 loss) and the JAX side's."""
    torch = pytest.importorskip("torch")
    cfg = CONFIGS["smoke"]
    model = cfg.model.replace(dropout=0.0, attention_dropout=0.0)
    base = {"config": cfg.name, "model": to_dict(model), "batch": cfg.batch, "seq_len": cfg.seq_len,
            "device": "cpu", "threads": 1, "cpus": None, "seed": 0, "max_steps": 8}
    weights = str(tmp_path / "w.npz")
    jax_loss = JaxWorker({**base, "framework": "jax", "weights": None}).export_weights(weights)["eval_loss"]
    workers = {fw: TorchWorker({**base, "framework": fw, "weights": weights})
               for fw in ("torch_eager", "torch_masked")}
    eager, masked = workers["torch_eager"], workers["torch_masked"]
    assert masked.masked_head and not eager.masked_head
    assert len(masked.masked_index) == int(make_batch(cfg, 0)["mlm_weights"].sum())
    losses = {fw: w.export_weights("")["eval_loss"] for fw, w in workers.items()}
    assert losses["torch_masked"] == pytest.approx(losses["torch_eager"], abs=1e-6)
    assert losses["torch_masked"] == pytest.approx(jax_loss, abs=1e-4)
    grads = {}
    for fw, w in workers.items():
        w._forward().backward()
        grads[fw] = {n: p.grad.clone() for n, p in w.model.named_parameters() if p.grad is not None}
        w.opt.zero_grad(set_to_none=True)
    assert grads["torch_eager"].keys() == grads["torch_masked"].keys()
    for name, g in grads["torch_eager"].items():
        torch.testing.assert_close(grads["torch_masked"][name], g, rtol=1e-4, atol=1e-6, msg=name)
    steps = {fw: [float(w._step()) for _ in range(2)] for fw, w in workers.items()}
    assert steps["torch_masked"] == pytest.approx(steps["torch_eager"], abs=1e-5)


def test_ratios_against_every_torch_side():
    record = new_record(CONFIGS["smoke"], seed=0)
    times = {"jax": 1.0, "torch_eager": 4.0, "torch_masked": 1.25, "torch_compile": 3.0}
    record["frameworks"] = {fw: {"train_step_s_all": [t], "infer_step_s_all": [t / 2]} for fw, t in times.items()}
    derive(record)
    r = record["ratio"]
    assert r["train_jax_over_torch_eager"] == pytest.approx(4.0)
    assert r["train_jax_over_torch_masked"] == pytest.approx(1.25)
    assert r["infer_jax_over_torch_masked"] == pytest.approx(1.25)
    assert r["train_jax_over_torch_compile"] == pytest.approx(3.0)
    table = format_table([record])
    assert "jax/torch_masked (the same work): train 1.25x" in table and "torch_masked: " in table


def test_breakdown_runs_for_both_sides_and_is_printed(tmp_path):
    """The per-part timing that docs/benchmarks.md quotes ("Where the time goes"): each worker's `breakdown` on the
    smoke shapes, in-process, then the table lines the parent prints from it."""
    torch = pytest.importorskip("torch")
    cfg = CONFIGS["smoke"]
    base = {"config": cfg.name, "model": to_dict(cfg.model), "batch": cfg.batch, "seq_len": cfg.seq_len,
            "device": "cpu", "threads": torch.get_num_threads(), "cpus": None, "seed": 0, "max_steps": 8}
    weights = str(tmp_path / "w.npz")
    jax_worker = JaxWorker({**base, "framework": "jax", "weights": None})
    jax_worker.export_weights(weights)  # both sides start from the same weights, as in a real run
    workers = {"jax": jax_worker, "torch_eager": TorchWorker({**base, "framework": "torch_eager",
                                                                       "weights": weights})}
    record = new_record(cfg, 0)
    parts = {"encoder_forward", "forward_loss", "forward_backward", "optimizer_update"}
    for fw, worker in workers.items():
        # Step timings are not what is tested here (the smoke test runs them): fixed values keep this test short.
        entry = {"train_step_s_all": [0.01], "infer_step_s_all": [0.01], "breakdown_s": worker.breakdown(2)}
        assert set(entry["breakdown_s"]) == parts | ({"forward_backward_full_logits"} if fw == "jax" else set())
        assert all(v > 0 for v in entry["breakdown_s"].values()), entry["breakdown_s"]
        record["frameworks"][fw] = entry
    derive(record)
    table = format_table([record])
    for fw in workers:
        line = next(x for x in table.splitlines() if f"breakdown {fw} (ms; step" in x)
        assert all(f"{part} " in line for part in parts) and "LM head + loss = " in line and "% of the forward" in line


@pytest.mark.parametrize("argv", [["--device", "gpu"], ["--device", "gpu", "--smoke"],
                                  ["--device", "gpu", "--configs", "tiny", "--sides", "jax"]])
def test_device_gpu_without_a_gpu_exits_2_naming_the_devices_before_any_worker(argv, capsys, monkeypatch, tmp_path):
    import xlm_jax.bench.__main__ as bench_main

    monkeypatch.setattr(bench_main, "probe_devices", lambda need_torch: {"jax": ["cpu (cpu)"], **(
        {"torch": ["cpu"]} if need_torch else {})})
    monkeypatch.setattr(bench_main, "run_config", lambda *a, **k: pytest.fail("a worker was started"))
    assert _exit_code(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device gpu: no GPU for jax") and err.count("\n") == 1, err
    assert "jax found cpu (cpu)" in err and "--device cpu" in err and "starting" not in err
    assert ("torch found cpu" in err) == ("--sides" not in argv)
    assert not (tmp_path / "out").exists()  # refused before --out is claimed


def test_check_gpu_accepts_gpus_and_names_the_side_without_one():
    from xlm_jax.bench.__main__ import check_gpu

    check_gpu(("jax", "torch_eager"), {"jax": ["cuda (NVIDIA H100)"], "torch": ["cuda (NVIDIA H100)"]})
    with pytest.raises(UserError, match=r"no GPU for torch .*torch found cpu"):
        check_gpu(("jax", "torch_eager"), {"jax": ["cuda (NVIDIA H100)"], "torch": ["cpu"]})
    with pytest.raises(UserError, match=r"no GPU for jax .*jax found none \(RuntimeError"):
        check_gpu(("jax",), {"jax": ["none (RuntimeError: no backend)"]})


@pytest.mark.slow
def test_device_gpu_probe_on_this_machine_in_a_subprocess():
    """The real probe (no monkeypatching): on a machine without a GPU the command refuses in seconds, exit 2."""
    from xlm_jax.bench.harness import missing_gpu, probe_devices

    found = probe_devices(need_torch=False)
    if not missing_gpu(found):
        pytest.skip(f"this machine has a GPU: {found}")
    proc = subprocess.run([sys.executable, "-m", "xlm_jax.bench", "--device", "gpu", "--sides", "jax"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --device gpu: no GPU"), proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_smoke_table_says_it_is_not_a_measurement():
    record = new_record(CONFIGS["smoke"], seed=0)
    record["frameworks"] = {fw: {"train_step_s_all": [t], "infer_step_s_all": [t]}
                            for fw, t in (("jax", 0.004), ("torch_eager", 1.0))}
    derive(record)
    smoke = format_table([record], smoke=True)
    assert smoke.splitlines()[0].startswith("SMOKE RUN:") and "NOT a measurement" in smoke.splitlines()[0]
    ratio_line = next(x for x in smoke.splitlines() if "ratio jax/torch_eager" in x)
    assert "250.00x" in ratio_line and ratio_line.endswith("(smoke run: not a measurement)")
    plain = format_table([record])
    assert "SMOKE" not in plain and "not a measurement" not in plain


# ------------------------------------------------------------------------- --varlen: padded vs packed inference


def test_varlen_set_holds_the_same_sentences_in_both_layouts():
    """Every sentence of the --varlen set sits whole in a padded batch (after it only padding) and in a packed row
    (its own segment, positions restarting); two configurations of the same shape draw the same lengths."""
    cfg = CONFIGS["smoke_modernbert"]
    data = varlen_set(cfg, seed=0)
    padded = per_sentence([b["input_ids"] for b in data["padded"]], data["padded_where"])
    packed = per_sentence([b["input_ids"] for b in data["packed"]], data["packed_where"])
    assert len(padded) == data["sentences"] == 32 * cfg.batch
    for a, b in zip(padded, packed):
        np.testing.assert_array_equal(a, b)
        assert a[0] == cfg.model.bos_token_id and a[-1] == cfg.model.eos_token_id
    assert data["real_tokens"] == sum(len(a) for a in padded)
    assert data["real_tokens"] == sum(int(b["attention_mask"].sum()) for layout in ("padded", "packed")
                                      for b in data[layout]) // 2
    for (k, r, t, n) in data["packed_where"]:
        seg = data["packed"][k]["segment_ids"][r]
        assert np.all(seg[t:t + n] == seg[t]) and (t == 0 or seg[t - 1] != seg[t])
    for b in data["padded"]:  # each batch as wide as its longest sentence
        assert b["attention_mask"][:, -1].any()
    assert all(b["input_ids"].shape == (cfg.batch, cfg.seq_len) for b in data["packed"])
    assert data["packed_slots"] < data["padded_slots"]
    other = varlen_set(CONFIGS["smoke"], seed=0)
    np.testing.assert_array_equal(other["padded_where"][:, 3], data["padded_where"][:, 3])


@pytest.mark.parametrize("name", ["smoke_modernbert", "smoke"])
def test_varlen_every_side_runs_and_packed_equals_padded(tmp_path, name):
    """`--varlen` on both families: the JAX worker's packed pass (segment ids) gives each sentence the hidden states
    of its padded pass to 1e-4 (the models' own packed-vs-alone parity: tests/test_modernbert.py
    test_logits_equal_transformers_padded_and_packed, tests/test_packing.py), and the PyTorch encoder on the padded
    batches gives the same mean |h| from the same weights; the table prints real tokens/s for every side."""
    pytest.importorskip("torch")
    cfg = CONFIGS[name]
    base = {"config": cfg.name, "model": to_dict(cfg.model), "batch": cfg.batch, "seq_len": cfg.seq_len,
            "device": "cpu", "threads": 1, "cpus": None, "seed": 0, "max_steps": 4}
    weights = str(tmp_path / "w.npz")
    jax_worker = JaxWorker({**base, "framework": "jax", "weights": None})
    jax_worker.export_weights(weights)
    torch_worker = TorchWorker({**base, "framework": "torch_eager", "weights": weights})
    record = new_record(cfg, 0, varlen=True)
    for fw, worker in (("jax", jax_worker), ("torch_eager", torch_worker)):
        res = worker.varlen(1)
        assert res["padded_s"] > 0 and ("packed_s" in res) == (fw == "jax")
        record["frameworks"][fw] = {f"varlen_{k}": v for k, v in res.items() if k not in ("padded_s", "packed_s")}
        record["frameworks"][fw] |= {f"varlen_{k}_all": [v] for k, v in res.items() if k in ("padded_s", "packed_s")}
    jax_entry, torch_entry = record["frameworks"]["jax"], record["frameworks"]["torch_eager"]
    assert jax_entry["varlen_max_abs_diff_packed_padded"] < 1e-4
    assert torch_entry["varlen_mean_abs_hidden"] == pytest.approx(jax_entry["varlen_mean_abs_hidden"], rel=1e-4)
    assert "packed_s" in jax_worker.varlen(1)  # a second call times again (B A order), without the first passes
    derive(record)
    table = format_varlen_table([record])
    for fw, layouts in (("jax", ("padded", "packed")), ("torch_eager", ("padded",))):
        for layout in layouts:
            assert record["frameworks"][fw][f"varlen_{layout}_tokens_per_s"] == pytest.approx(
                record["varlen"]["real_tokens"] / record["frameworks"][fw][f"varlen_{layout}_s"])
            assert any(line.split()[:3] == [name, fw, layout] for line in table.splitlines())
    assert "packed vs padded max |diff|" in table


def test_varlen_sides():
    assert parse_sides(None, "auto", smoke=False, varlen=True) == ("jax", "torch_eager")
    assert parse_sides("torch_eager,jax", "auto", smoke=False, varlen=True) == ("jax", "torch_eager")


def test_descriptions_name_the_models_each_side_ran():
    train = describe(["smoke_modernbert", "smoke"], ("jax", "torch_eager", "torch_masked"))
    assert set(train) == {"jax", "torch_eager", "torch_masked"}
    assert "ModernBertForMaskedLM" in train["torch_eager"] and "XLMRobertaForMaskedLM" in train["torch_eager"]
    varlen = describe(["smoke_modernbert"], ("jax", "torch_eager"), varlen=True)
    assert "inference" in varlen["jax"] and "ModernBertModel" in varlen["torch_eager"]
    assert "train" not in varlen["torch_eager"] and "ForMaskedLM" not in varlen["torch_eager"]
