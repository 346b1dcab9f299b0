"""Subprocess worker for tests/test_step.py (JAX's device count is fixed per process, hence subprocesses).

    python tests/multiprocess_worker.py meshes OUT.json            8 simulated CPU devices: one device vs meshes
    python tests/multiprocess_worker.py process PORT ID OUT.json    one of two processes (4 CPU devices each)

Both write a JSON dict of per-step metrics that the test compares.
"""

from __future__ import annotations

import json
import sys
import time

import jax

MODE = sys.argv[1]
jax.config.update("jax_num_cpu_devices", 8 if MODE == "meshes" else 4)

import numpy as np  # noqa: E402
import optax  # noqa: E402

from xlm_jax.models.config import get_model_config  # noqa: E402
from xlm_jax.training.optim import OptimizerConfig, make_optimizer  # noqa: E402
from xlm_jax.training.sharding import MeshConfig, global_batch, make_mesh  # noqa: E402
from xlm_jax.training.step import abstract_state, init_state, make_eval_step, make_train_step  # noqa: E402

SEQ, ROWS, PREDS, STEPS, GROUPS = 32, 8, 6, 3, 3
MODEL = get_model_config("xlmr_tiny")
OBJECTIVES = {"mlm": 1.0, "tlm": 0.5}
OPT_CFG = OptimizerConfig(lr=1e-3, warmup_steps=2, weight_decay=0.01, clip_norm=1.0)


def synthetic_batch(step: int, objective: str) -> dict[str, np.ndarray]:
    """Global rows of one objective's batch, in the batch-field format of xlm_jax.data.batches."""
    rng = np.random.default_rng([step, 0 if objective == "mlm" else 1])
    ids = rng.integers(4, MODEL.vocab_size - 1, (ROWS, SEQ)).astype(np.int32)
    lengths = rng.integers(SEQ // 2, SEQ + 1, ROWS)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask > 0, ids, 1).astype(np.int32)
    positions = np.arange(SEQ, dtype=np.int32)[None, :] * mask
    if objective == "tlm":  # positions restart at the second half, as TLM rows do
        half = lengths[:, None] // 2
        positions = np.where(np.arange(SEQ)[None, :] >= half, np.arange(SEQ)[None, :] - half, positions) * mask
    pred = np.stack([rng.choice(int(n), PREDS, replace=False) for n in lengths]).astype(np.int32)
    weights = np.ones((ROWS, PREDS), np.float32)
    weights[0, PREDS // 2:] = 0  # padding of the fixed-size prediction array
    targets = np.take_along_axis(ids, pred, axis=1)
    ids = ids.copy()
    np.put_along_axis(ids, pred, MODEL.mask_id, axis=1)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "positions": positions.astype(np.int32),
        "langs": np.zeros((ROWS, SEQ), np.int32),
        "mlm_positions": pred,
        "mlm_targets": targets.astype(np.int32),
        "mlm_weights": weights,
        "example_lang": (np.arange(ROWS) % GROUPS).astype(np.int32),
    }


def local_rows(batch: dict, process: int, count: int) -> dict:
    per = ROWS // count
    return {k: v[process * per:(process + 1) * per] for k, v in batch.items()}


def to_list(x) -> list | float:
    x = np.asarray(jax.device_get(x))
    return x.tolist()


def run(mesh, *, process: int = 0, count: int = 1, grad_accum: int = 1, optimizer=None, steps: int = STEPS):
    optimizer = optimizer or make_optimizer(OPT_CFG, total_steps=10)
    state, shardings = init_state(MODEL, optimizer, mesh, jax.random.key(0))
    specs = {
        "query_kernel": str(state["params"]["encoder"]["layers"]["attention"]["query"]["kernel"].sharding.spec),
        "word_embedding": str(state["params"]["encoder"]["embeddings"]["word_embeddings"]["embedding"].sharding.spec),
        "wo_kernel": str(state["params"]["encoder"]["layers"]["mlp"]["wo"]["kernel"].sharding.spec),
        "position_embedding": str(
            state["params"]["encoder"]["embeddings"]["position_embeddings"]["embedding"].sharding.spec),
    }
    adam = [s for s in jax.tree.leaves(state["opt_state"], is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    if adam:
        specs["adam_mu_query"] = str(adam[0].mu["encoder"]["layers"]["attention"]["query"]["kernel"].sharding.spec)
    step = make_train_step(MODEL, optimizer, mesh, shardings, OBJECTIVES, {"mlm": GROUPS, "tlm": GROUPS},
                           grad_accum=grad_accum)
    history = []
    started = time.perf_counter()
    for k in range(steps):
        local = {name: local_rows(synthetic_batch(k, name), process, count) for name in OBJECTIVES}
        state, metrics = step(state, global_batch(mesh, local), jax.random.key(42))
        history.append({name: to_list(v) for name, v in metrics.items()})
    params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)) if x.is_fully_addressable else None,
                          state["params"])
    print(f"{mesh.shape}: {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    return {"history": history, "specs": specs, "step": int(state["step"])}, params, shardings


def meshes(out: str) -> None:
    results = {}
    one = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    results["single"], _, shardings = run(one)
    # No (fsdp=8) mesh: its path (parameters and moments sharded over "fsdp", rows over ("data", "fsdp"), norms
    # replicated) is the one (2, 2, 2) takes with fsdp=2, checked against one device here and over two processes;
    # tests/test_sharding.py checks the rules on fsdp=8 meshes. (data=8) stays: it is the default mesh.
    for name, cfg in {"data8": MeshConfig(data=8), "2x2x2": MeshConfig(data=2, fsdp=2, tensor=2)}.items():
        results[name], _, _ = run(make_mesh(cfg))
    # Gradient accumulation = one big batch: with SGD(lr=1) the parameter change *is* the gradient. No dropout,
    # since micro-batches draw their own dropout keys.
    global MODEL
    MODEL = MODEL.replace(dropout=0.0, attention_dropout=0.0)
    sgd = optax.sgd(1.0)
    big, big_params, _ = run(one, optimizer=sgd, steps=1)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    accum, accum_params, _ = run(mesh, optimizer=sgd, steps=1, grad_accum=2)
    diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), big_params, accum_params)
    scale = jax.tree.map(lambda a: float(np.max(np.abs(a))), big_params)
    results["grad_accum"] = {"big": big["history"], "accum": accum["history"],
                             "max_param_diff": max(jax.tree.leaves(diff)), "max_param": max(jax.tree.leaves(scale))}
    # Eval step and the orbax restore target.
    eval_step = make_eval_step(MODEL, one, shardings, n_groups=GROUPS)
    state, _ = init_state(MODEL, sgd, one, jax.random.key(0))
    sums = eval_step(state["params"], global_batch(one, synthetic_batch(0, "mlm")))
    results["eval"] = {k: to_list(v) for k, v in sums.items()}
    # Mixed precision: bf16 compute, float32 parameters, optimizer state and losses.
    bf16 = MODEL.replace(dtype="bfloat16")
    adam = make_optimizer(OPT_CFG, total_steps=10)
    state, shardings = init_state(bf16, adam, one, jax.random.key(0))
    step = make_train_step(bf16, adam, one, shardings, OBJECTIVES, {"mlm": GROUPS, "tlm": GROUPS})
    state, metrics = step(state, global_batch(one, {n: synthetic_batch(0, n) for n in OBJECTIVES}), jax.random.key(1))
    results["bf16"] = {
        "loss": float(metrics["loss"]),
        "dtypes": sorted({str(x.dtype) for x in jax.tree.leaves(state)}),
        "metric_dtypes": sorted({str(x.dtype) for x in jax.tree.leaves(metrics)}),
    }
    abstract, _ = abstract_state(MODEL, sgd, mesh)
    results["abstract_query_spec"] = str(
        abstract["params"]["encoder"]["layers"]["attention"]["query"]["kernel"].sharding.spec)
    with open(out, "w") as f:
        json.dump(results, f)


def process(port: int, index: int, out: str) -> None:
    from xlm_jax.training.sharding import initialize_distributed

    initialize_distributed(f"127.0.0.1:{port}", 2, index, initialization_timeout=60)
    assert jax.process_count() == 2 and jax.device_count() == 8, (jax.process_count(), jax.device_count())
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    result, _, _ = run(mesh, process=index, count=2)
    with open(out, "w") as f:
        json.dump(result, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    if MODE == "meshes":
        meshes(sys.argv[2])
    else:
        process(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
