"""The sharded train step: meshes and two processes give the single-device losses, gradient accumulation equals
one big batch, metrics are consistent, analytic FLOPs.

JAX fixes its device count per process, so the multi-device runs happen in subprocesses
(tests/multiprocess_worker.py), all started at once: one with 8 simulated CPU devices runs the single-device
reference and the meshes (data=8), (data=2, fsdp=2, tensor=2); two more form a 2-process job over
loopback (4 CPU devices each, gloo collectives), each feeding its own half of the rows.
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from xlm_jax.models.config import get_model_config
from xlm_jax.training.optim import OptimizerConfig, make_schedule
from xlm_jax.core.errors import UserError
from xlm_jax.training.flops import (Work, batch_work, mfu, model_flops_per_token, padding_share, peak_flops,
                                   peak_flops_per_device, real_token_count, throughput)
from xlm_jax.training.step import make_train_step

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multiprocess_worker.py"
TIMEOUT_S = 420


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("step")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    # LLVM optimisation of the tiny CPU programs costs more than running them; every run uses the same flags.
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    port = _free_port()
    commands = {
        "meshes": [sys.executable, str(WORKER), "meshes", str(tmp / "meshes.json")],
        "process0": [sys.executable, str(WORKER), "process", str(port), "0", str(tmp / "process0.json")],
        "process1": [sys.executable, str(WORKER), "process", str(port), "1", str(tmp / "process1.json")],
    }
    procs = {name: subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name, cmd in commands.items()}
    out = {}
    for name, proc in procs.items():
        try:
            log, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in procs.values():
                p.kill()
            pytest.fail(f"{name} worker did not finish in {TIMEOUT_S}s")
        result = tmp / f"{name}.json"
        out[name] = json.loads(result.read_text()) if proc.returncode == 0 and result.exists() else None
        out[f"{name}_log"] = log[-4000:]
    return out


def _result(runs, name):
    if runs[name] is None:
        pytest.fail(f"{name} worker failed:\n{runs[name + '_log']}")
    return runs[name]


def _assert_same_history(got, want, tol=1e-4):
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want)):
        assert g.keys() == w.keys()
        for key in w:
            np.testing.assert_allclose(g[key], w[key], rtol=tol, atol=tol, err_msg=f"step {step} {key}")


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["data8", "2x2x2"])  # why no fsdp8: multiprocess_worker.py
def test_meshes_match_one_device(runs, mesh):
    results = _result(runs, "meshes")
    single = results["single"]["history"]
    assert len(single) == 3 and single[0]["loss"] != single[2]["loss"]  # it trains
    _assert_same_history(results[mesh]["history"], single)


@pytest.mark.slow
def test_two_processes_match_one_process(runs):
    single = _result(runs, "meshes")["single"]["history"]
    for name in ("process0", "process1"):
        _assert_same_history(_result(runs, name)["history"], single)


@pytest.mark.slow
def test_params_and_moments_are_sharded_by_the_rules(runs):
    specs = _result(runs, "meshes")["2x2x2"]["specs"]
    assert specs == {
        "query_kernel": "P(None, 'fsdp', 'tensor', None)",  # [layers, embed, heads, kv]
        "word_embedding": "P('tensor', 'fsdp')",  # [vocab, embed]
        "wo_kernel": "P(None, 'tensor', 'fsdp')",  # [layers, mlp, embed]
        "position_embedding": "P(None, 'fsdp')",  # [pos, embed]
        "adam_mu_query": "P(None, 'fsdp', 'tensor', None)",  # moments follow their parameter
    }
    assert _result(runs, "process0")["specs"] == specs
    assert _result(runs, "meshes")["abstract_query_spec"] == specs["query_kernel"]


@pytest.mark.slow
def test_gradient_accumulation_equals_big_batch(runs):
    acc = _result(runs, "meshes")["grad_accum"]
    # SGD(lr=1): the parameter change is the gradient, so equal params mean equal gradients.
    assert acc["max_param_diff"] <= 1e-5 * max(1.0, acc["max_param"])
    _assert_same_history(acc["accum"], acc["big"], tol=1e-5)


@pytest.mark.slow
def test_metrics_are_consistent(runs):
    history = _result(runs, "meshes")["single"]["history"]
    schedule = make_schedule(OptimizerConfig(lr=1e-3, warmup_steps=2, weight_decay=0.01, clip_norm=1.0), 10)
    for k, m in enumerate(history):
        assert math.isclose(m["lr"], float(schedule(k)), rel_tol=1e-6, abs_tol=1e-12)
        assert math.isclose(m["loss"], m["mlm/loss"] + 0.5 * m["tlm/loss"], rel_tol=1e-6)
        for obj in ("mlm", "tlm"):
            # 8 rows x 6 predictions, 3 of row 0 padded; rows grouped by row % 3 (row 0 in group 0).
            assert m[f"{obj}/tokens"] == 45.0 and m[f"{obj}/group_count"] == [15.0, 18.0, 12.0]
            assert math.isclose(sum(m[f"{obj}/group_loss_sum"]) / 45.0, m[f"{obj}/loss"], rel_tol=1e-5)
            assert 0.0 <= m[f"{obj}/accuracy"] <= 1.0 and 8 * 16 <= m[f"{obj}/input_tokens"] <= 8 * 32
            assert abs(m[f"{obj}/loss"] - math.log(1000)) < 0.5  # untrained: near uniform over the vocabulary
        assert m["grad_norm"] > 0


@pytest.mark.slow
def test_eval_step_sums(runs):
    ev = _result(runs, "meshes")["eval"]
    assert ev["count"] == 45.0 and ev["group_count"] == [15.0, 18.0, 12.0]
    assert math.isclose(sum(ev["group_loss_sum"]), ev["loss_sum"], rel_tol=1e-5)
    assert abs(ev["loss_sum"] / ev["count"] - math.log(1000)) < 0.5


@pytest.mark.slow
def test_bf16_compute_keeps_float32_state_and_loss(runs):
    result = _result(runs, "meshes")
    bf16 = result["bf16"]
    assert bf16["dtypes"] == ["float32", "int32"] and bf16["metric_dtypes"] == ["float32"]
    # Same initial parameters and batch as the float32 run's first step; bf16 matmuls move the loss only a little.
    assert abs(bf16["loss"] - result["single"]["history"][0]["loss"]) < 0.05


def test_batch_rows_must_divide_the_mesh_and_micro_batches():
    import jax

    from xlm_jax.core.errors import UserError
    from xlm_jax.training.optim import make_optimizer
    from xlm_jax.training.sharding import MeshConfig, make_mesh

    mesh = make_mesh(MeshConfig(), jax.devices()[:1])
    step = make_train_step(get_model_config("xlmr_tiny"), make_optimizer(OptimizerConfig(), 2000), mesh, None,
                           {"mlm": 1.0, "clm": 0.0}, {"mlm": 1}, grad_accum=3)
    with pytest.raises(UserError, match="not divisible by data x fsdp x grad_accum = 3"):
        step(None, {"mlm": {"input_ids": np.zeros((8, 16), np.int32)}}, None)
    with pytest.raises(UserError, match="lacks objective 'mlm'"):
        step(None, {"tlm": {}}, None)
    with pytest.raises(UserError, match="n_groups lacks"):
        make_train_step(get_model_config("xlmr_tiny"), None, mesh, None, {"tlm": 1.0}, {"mlm": 1})


def test_flops_formula_on_a_hand_computed_config():
    cfg = get_model_config("xlmr_tiny")  # D=64, F=128, L=2, V=1000, dense LM-head transform
    dense = 6 * 2 * (4 * 64 * 64 + 2 * 64 * 128)  # 393,216
    attention = 12 * 2 * 32 * 64  # 49,152
    head = 6 * 0.15 * (64 * 1000 + 64 * 64)  # 61,286.4
    assert dense + attention + head == pytest.approx(503_654.4)
    assert model_flops_per_token(cfg, 32, 0.15) == pytest.approx(503_654.4)
    no_transform = cfg.replace(lm_head_transform=False)
    assert model_flops_per_token(no_transform, 32, 1.0) == pytest.approx(dense + attention + 6 * 64 * 1000)
    # The dense term is 6 x the layers' matmul parameters (biases excluded).
    base = get_model_config("xlmr_base")
    per_layer_matrices = 4 * 768 * 768 + 2 * 768 * 3072
    assert model_flops_per_token(base, 512, 0.0) == pytest.approx(6 * 12 * per_layer_matrices + 12 * 12 * 512 * 768)


def test_peak_flops_and_mfu():
    dev = lambda kind, platform="gpu": SimpleNamespace(device_kind=kind, platform=platform)  # noqa: E731
    assert peak_flops_per_device(dev("NVIDIA H100 80GB HBM3")) == 989e12
    assert peak_flops_per_device(dev("NVIDIA H100 PCIe")) == 756e12
    assert peak_flops_per_device(dev("NVIDIA H200")) == 989e12
    assert peak_flops_per_device(dev("NVIDIA A100-SXM4-80GB")) == 312e12
    assert peak_flops_per_device(dev("TPU v4", "tpu")) == 275e12
    assert peak_flops_per_device(dev("TPU v5 lite", "tpu")) == 197e12
    assert peak_flops_per_device(dev("TPU v5p", "tpu")) == 459e12
    assert peak_flops_per_device(dev("TPU v6 lite", "tpu")) == 918e12
    assert peak_flops_per_device(dev("cpu", "cpu")) is None
    assert peak_flops([dev("NVIDIA H100 80GB HBM3")] * 2) == 2 * 989e12
    assert peak_flops([dev("NVIDIA H100 80GB HBM3"), dev("cpu", "cpu")]) is None
    assert mfu(1e6, 1e8, peak_flops([dev("NVIDIA H100 80GB HBM3")] * 2)) == pytest.approx(1e14 / (2 * 989e12))
    assert mfu(1e6, 1e8, peak_flops([dev("cpu", "cpu")])) is None


def test_peak_flops_override_from_the_environment(monkeypatch):
    """$XLM_JAX_PEAK_FLOPS declares the peak of a device missing from the table (or a CPU); a bad value is a
    UserError naming the variable and the value."""
    cpu, h100 = SimpleNamespace(device_kind="cpu", platform="cpu"), SimpleNamespace(device_kind="H100", platform="gpu")
    monkeypatch.setenv("XLM_JAX_PEAK_FLOPS", "2.5e12")
    assert peak_flops_per_device(cpu) == peak_flops_per_device(h100) == 2.5e12
    assert peak_flops([cpu, cpu]) == 5e12
    monkeypatch.setenv("XLM_JAX_PEAK_FLOPS", " ")
    assert peak_flops_per_device(cpu) is None
    for bad in ("fast", "0", "-1e12", "nan", "inf", "1e12x"):
        monkeypatch.setenv("XLM_JAX_PEAK_FLOPS", bad)
        with pytest.raises(UserError, match=r"XLM_JAX_PEAK_FLOPS='.*': expected a finite positive number") as err:
            peak_flops_per_device(cpu)
        assert repr(bad) in str(err.value)


def _batches(rng: np.random.Generator, vocab: int) -> dict:
    """Host batches of three objectives with different shapes: MLM full rows, TLM rows with padding and empty
    prediction slots, CLM rows with padding."""
    def rows(b, t, real, preds=None):
        mask = (np.arange(t)[None, :] < np.asarray(real)[:, None]).astype(np.int32)
        out = {"input_ids": np.where(mask > 0, rng.integers(4, vocab - 1, (b, t)), 1).astype(np.int32),
               "attention_mask": mask}
        if preds is not None:
            weights = (np.arange(preds.shape[1])[None, :] < preds[:, :1]).astype(np.float32)
            out.update(mlm_positions=np.zeros(weights.shape, np.int32), mlm_targets=np.zeros(weights.shape, np.int32),
                       mlm_weights=weights)
        return out

    return {
        "mlm": rows(4, 32, [32] * 4, np.full((4, 5), 5)),
        "tlm": rows(6, 48, [48, 30, 12, 9, 40, 20], np.array([[8]] * 2 + [[2]] * 4) * np.ones((6, 8), int)),
        "clm": rows(2, 16, [16, 7]),
    }


def test_batch_work_credits_each_objective_its_shape_and_predictions():
    cfg = get_model_config("xlmr_tiny")
    batch = _batches(np.random.default_rng(0), cfg.vocab_size)
    work = batch_work(cfg, batch)
    # By hand: (rows, length, predicted tokens, real tokens) per objective.
    shapes = {"mlm": (4, 32, 4 * 5, 4 * 32), "tlm": (6, 48, 2 * 8 + 4 * 2, 48 + 30 + 12 + 9 + 40 + 20),
              "clm": (2, 16, 15 + 6, 16 + 7)}
    flops = sum(b * t * model_flops_per_token(cfg, t, p / (b * t)) for b, t, p, _ in shapes.values())
    assert work.tokens == 4 * 32 + 6 * 48 + 2 * 16
    assert work.real_tokens == sum(r for *_, r in shapes.values())
    assert work.predicted == sum(p for _, _, p, _ in shapes.values())
    assert work.flops == pytest.approx(flops, rel=1e-12)
    assert work.flops_per_token == pytest.approx(flops / work.tokens, rel=1e-12)
    # Work adds up over steps; an empty one has no FLOPs per token.
    assert (work + work).flops == pytest.approx(2 * flops) and (work + work).tokens == 2 * work.tokens
    assert Work().flops_per_token is None
    # The predicted fraction, not the fill of the prediction slots (the bench's old mistake: weights.size).
    slots = batch_work(cfg, {"mlm": batch["mlm"]})
    assert slots.flops_per_token == pytest.approx(model_flops_per_token(cfg, 32, 20 / 128))


def test_throughput_derives_every_rate_from_one_work_and_time():
    work = Work(tokens=4096.0, real_tokens=3000.0, predicted=600.0, flops=4096 * 7.5e7)
    rates = throughput(work, 2.0, 4, 1e13)
    assert rates["tokens_per_s"] == 2048.0 and rates["tokens_per_s_per_device"] == 512.0
    assert rates["real_tokens_per_s"] == 1500.0
    assert rates["flops_per_token"] == 7.5e7
    assert rates["tflops_per_s"] == pytest.approx(2048.0 * 7.5e7 / 1e12)
    assert rates["tflops_per_s_per_device"] == pytest.approx(rates["tflops_per_s"] / 4)
    assert rates["mfu"] == pytest.approx(rates["tflops_per_s"] * 1e12 / 1e13)
    assert throughput(work, 2.0, 4, None)["mfu"] is None
    # Nothing timed (an interval holding only the compilation step): no figure rather than a false zero.
    assert set(throughput(Work(), 0.5, 1, 1e13).values()) == {None}
    assert set(throughput(work, 0.0, 1, 1e13).values()) == {None}


def test_clm_step_loss_is_the_causal_next_token_loss_and_falls():
    """CLM through `make_train_step`: the step's clm/loss equals a reference computed without the causal mask
    (position t of a prefix run on tokens 0..t alone predicts token t + 1), and training on one batch lowers it."""
    import jax
    import jax.numpy as jnp

    from xlm_jax.models.xlm import XLMForMaskedLM
    from xlm_jax.training.optim import make_optimizer
    from xlm_jax.training.sharding import MeshConfig, global_batch, make_mesh
    from xlm_jax.training.step import init_state

    cfg = get_model_config("xlmr_tiny", dropout=0.0, attention_dropout=0.0)
    rng = np.random.default_rng(0)
    ids = rng.integers(4, cfg.vocab_size - 1, size=(2, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    ids[mask == 0] = cfg.pad_token_id
    batch = {"input_ids": ids, "attention_mask": mask, "positions": np.tile(np.arange(12, dtype=np.int32), (2, 1)),
             "langs": np.zeros_like(ids), "example_lang": np.zeros(2, np.int32)}

    mesh = make_mesh(MeshConfig(), jax.devices()[:1])
    optimizer = make_optimizer(OptimizerConfig(lr=1e-2, schedule="constant", warmup_steps=0, weight_decay=0.0), 100)
    state, shardings = init_state(cfg, optimizer, mesh, jax.random.key(0))
    # At init attention and output are near uniform (every loss ~ log V, whatever a position sees): sharpen both
    # (the tied embeddings scale the logits; the embedding LayerNorm undoes it on the input side).
    params = jax.tree.map(np.array, jax.device_get(state["params"]))
    params["encoder"]["layers"]["attention"]["query"]["kernel"] *= 30.0
    params["encoder"]["embeddings"]["word_embeddings"]["embedding"] *= 30.0
    state = {**state, "params": jax.device_put(params, shardings["params"])}
    # Row (r, t) holds tokens 0..t of row r alone, the rest padding that no position attends to.
    pairs = [(row, t) for row in range(2) for t in range(int(mask[row].sum()) - 1)]
    prefixes = np.full((len(pairs), 12), cfg.pad_token_id, np.int32)
    for k, (row, t) in enumerate(pairs):
        prefixes[k, :t + 1] = ids[row, :t + 1]
    forward = jax.jit(lambda p, x: XLMForMaskedLM(cfg).apply({"params": p}, x, (x != cfg.pad_token_id).astype(jnp.int32),
                                                             method=XLMForMaskedLM.mlm_logits))

    def reference(params) -> float:  # mean over the 11 + 7 real next tokens
        logits = np.asarray(forward(params, prefixes), np.float64)
        return float(np.mean([np.log(np.exp(logits[k, t] - logits[k, t].max()).sum()) + logits[k, t].max()
                              - logits[k, t, ids[row, t + 1]] for k, (row, t) in enumerate(pairs)]))

    step = make_train_step(cfg, optimizer, mesh, shardings, {"clm": 1.0}, {"clm": 1})
    expected = reference(params)  # the step reports the loss of the parameters it starts from
    losses = []
    for _ in range(10):
        state, metrics = step(state, global_batch(mesh, {"clm": batch}), jax.random.key(1))
        losses.append(float(metrics["clm/loss"]))
        assert float(metrics["clm/tokens"]) == 18.0 and float(metrics["loss"]) == losses[-1]
    # Measured: 17.16613 vs the reference 17.16612; a non-causal loss gives 17.185, an unshifted one far more.
    assert losses[0] == pytest.approx(expected, rel=1e-5)
    assert losses[-1] < 0.1 * losses[0], losses  # one batch of 18 predictions is memorised


def _linear_loss():
    """A StepLoss of a linear classifier (params {"w": [D, C]}), dropout-like noise from the rng: the factory's
    contract without a model."""
    import jax
    import jax.numpy as jnp

    from xlm_jax.training.step import StepLoss

    def fn(params, batch, rng, count):
        x = batch["x"] * (1.0 + 0.1 * jax.random.normal(rng, batch["x"].shape))
        logits = x @ params["w"]
        nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, batch["y"][:, None], -1)[:, 0]
        sums = {"loss_sum": (nll * batch["weights"]).sum(), "count": batch["weights"].sum()}
        return sums["loss_sum"] / count, sums

    return StepLoss(fn, totals=lambda b: jnp.maximum(b["weights"].sum(), 1.0),
                    metrics=lambda s: {"loss": s["loss_sum"] / jnp.maximum(s["count"], 1.0), "count": s["count"]})


def _linear_setup(grad_accum, optimizer=None, schedule=None):
    import jax
    import optax

    from xlm_jax.training.sharding import MeshConfig, make_mesh
    from xlm_jax.training.step import make_step

    mesh = make_mesh(MeshConfig(), jax.devices()[:1])
    optimizer = optimizer or optax.sgd(1.0)
    params = {"w": np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)}
    state = {"params": params, "opt_state": optimizer.init(params), "step": np.zeros((), np.int32)}
    shardings = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), state)
    state = jax.device_put(state, shardings)
    return make_step(_linear_loss(), optimizer, mesh, shardings, grad_accum=grad_accum, schedule=schedule), state


def _linear_batch(rows=12):
    rng = np.random.default_rng(1)
    weights = np.ones(rows, np.float32)
    weights[-3:] = 0  # padding rows: no part of the loss
    return {"x": rng.normal(size=(rows, 5)).astype(np.float32), "y": rng.integers(0, 3, rows).astype(np.int32),
            "weights": weights}


def test_step_factory_accumulates_any_loss_like_one_big_batch():
    """make_step with a loss that is not a pretraining objective: grad_accum 3 and 4 give the big batch's update
    (SGD(lr=1): the parameter change is the gradient), metrics and summed counts; rng noise is on, so the
    micro-batches' keys differ but the normalisation by the whole batch's count is what makes them add up."""
    import jax

    batch = _linear_batch()
    results = {}
    for accum in (1, 3, 4):
        step, state = _linear_setup(accum)
        state, metrics = step(state, batch, jax.random.key(0))
        results[accum] = (np.asarray(state["params"]["w"]), {k: float(v) for k, v in metrics.items()})
        assert int(state["step"]) == 1 and metrics["count"] == 9.0
        assert np.isnan(metrics["lr"])  # plain sgd injects no rate and no schedule was given
        assert metrics["grad_norm"] > 0
    # Noise keys differ per micro-batch, so the values differ slightly; without noise they would be equal: the
    # loss is within the noise of the big batch's, and the updates point the same way.
    for accum in (3, 4):
        w, m = results[accum]
        assert abs(m["loss"] - results[1][1]["loss"]) < 0.2
        cos = np.sum(w * results[1][0]) / np.linalg.norm(w) / np.linalg.norm(results[1][0])
        assert cos > 0.99


def test_step_factory_without_noise_is_exactly_the_big_batch_and_reports_the_schedule():
    import jax
    import optax

    from xlm_jax.training.sharding import MeshConfig, make_mesh
    from xlm_jax.training.step import StepLoss, make_step

    base = _linear_loss()
    quiet = StepLoss(lambda p, b, rng, c: _noiseless(p, b, c), base.totals, base.metrics)
    schedule = optax.linear_schedule(0.5, 0.0, 10)
    out = {}
    for accum in (1, 3):
        _, state = _linear_setup(accum)
        mesh = make_mesh(MeshConfig(), jax.devices()[:1])
        shardings = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), state)
        step = make_step(quiet, optax.sgd(1.0), mesh, shardings, grad_accum=accum, schedule=schedule)
        for _ in range(2):
            state, metrics = step(state, _linear_batch(), jax.random.key(0))
        out[accum] = (np.asarray(state["params"]["w"]), float(metrics["loss"]), float(metrics["lr"]))
        assert float(metrics["lr"]) == pytest.approx(float(schedule(1)))
    np.testing.assert_allclose(out[3][0], out[1][0], rtol=1e-5, atol=1e-6)
    assert out[3][1] == pytest.approx(out[1][1], rel=1e-5)


def _noiseless(params, batch, count):
    import jax
    import jax.numpy as jnp

    logits = batch["x"] @ params["w"]
    nll = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, batch["y"][:, None], -1)[:, 0]
    sums = {"loss_sum": (nll * batch["weights"]).sum(), "count": batch["weights"].sum()}
    return sums["loss_sum"] / count, sums


@pytest.mark.parametrize("accum, rows, words", [
    (5, 12, "weights batch of 12 rows is not divisible by data x fsdp x grad_accum = 5"),
    (1, 12, None),
    (0, 12, "grad_accum=0: must be >= 1"),
    (-2, 12, "grad_accum=-2: must be >= 1"),
])
def test_step_factory_checks_rows_and_grad_accum(accum, rows, words):
    import jax

    if accum < 1:
        with pytest.raises(UserError, match=words):
            _linear_setup(accum)
        return
    step, state = _linear_setup(accum)
    if words is None:
        step(state, _linear_batch(rows), jax.random.key(0))
    else:
        with pytest.raises(UserError, match=words):
            step(state, _linear_batch(rows), jax.random.key(0))


def test_real_tokens_and_padding_share_count_packed_and_padded_rows():
    ids = np.array([[5, 6, 7, 1], [5, 1, 1, 1]])
    padded = {"input_ids": ids, "attention_mask": (ids != 1).astype(np.int32)}
    packed = {"input_ids": ids, "segment_ids": np.array([[1, 1, 2, 0], [1, 0, 0, 0]]),
              "attention_mask": np.array([[1, 1, 2, 0], [1, 0, 0, 0]])}
    assert real_token_count(padded, pad_id=1) == 4.0
    assert real_token_count(packed, pad_id=1) == 4.0
    assert real_token_count({"input_ids": ids}, pad_id=1) == 4.0  # neither mask: the non-pad ids
    cfg = get_model_config("xlmr_tiny")
    work = batch_work(cfg, {"mlm": {**padded, "mlm_weights": np.ones((2, 1), np.float32)}})
    assert (work.tokens, work.real_tokens) == (8.0, 4.0)
    rates = throughput(work, 2.0, 1, None)
    assert rates["real_tokens_per_s"] == 2.0 and rates["tokens_per_s"] == 4.0
    assert padding_share(work) == 0.5 and padding_share(Work(tokens=8.0, real_tokens=8.0)) == 0.0
    assert padding_share(Work()) is None


def test_progress_bar_shows_real_tokens_and_padding():
    from xlm_jax.pretrain.loop import progress_figures

    figures = progress_figures({"loss": 2.5, "tokens_per_s": 4000.0, "real_tokens_per_s": 2500.0,
                                "padding_share": 0.375}, n_devices=2)
    assert figures == {"loss": "2.500", "tok_s": "4.00k", "tok_s_dev": "2.00k", "real_tok_s": "2.50k", "pad": "38%"}
    untimed = progress_figures({"loss": 2.5, "tokens_per_s": None, "real_tokens_per_s": None, "padding_share": None}, 1)
    assert untimed["tok_s"] == "0" and "pad" not in untimed
