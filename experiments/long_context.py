"""Long context on the CPU: peak memory and step time of a ModernBERT-family training step at 512 ... 8192 tokens,
all-global attention against the 1-in-3 global / local-128 layout, and one attention layer alone (dense vs
blocked sliding window).

    python experiments/long_context.py [--lengths 512,1024,2048,4096,8192] [--reps 2] [--max-seconds 60]
                                       [--out docs/results/long_context.json]

Model: `modernbert_tiny` widened to a CPU size (hidden 128, 3 layers, 2 heads of 64, GeGLU 192, vocabulary 1000,
8192 positions); layouts (a) `global_attn_every_n=1` (every layer global) and (b) `global_attn_every_n=3`,
`local_window=128` (layer 0 global, layers 1 and 2 in a 128-token window, mmBERT's pattern). One row of T tokens,
15 % of them predicted; the step is loss + gradient (MLM head at the predicted positions only) + an SGD update,
jitted. The attention-alone rows time `layers.attend` (dense, T x T scores) against `layers.local_attend`
(blocks of 64 queries against 192 keys) forward + backward at the same T, 2 heads of 64.

Peak memory is XLA's compiled memory analysis (`temp_size_in_bytes`: the buffers the program allocates besides its
arguments and outputs), deterministic and free of the allocator's noise; the step time is the median of --reps
calls after the compiling one. A length whose previous size took longer than --max-seconds per call is skipped
(recorded as such), so the script stays within a few minutes on a shared machine. Not a CI test. The figures and
what they show: docs/long_context.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from xlm_jax.models import families, layers  # noqa: E402
from xlm_jax.models.config import get_model_config  # noqa: E402
from xlm_jax.models.xlm import init_params  # noqa: E402

MASK_PROB = 0.15


def model_config(every_n: int):
    return get_model_config("modernbert_tiny", hidden_size=128, num_layers=3, num_heads=2, intermediate_size=192,
                            max_positions=8192, local_window=128, global_attn_every_n=every_n)


def train_step(cfg):
    model = families.masked_lm(cfg)

    def loss_fn(params, ids, predict, targets):
        logits = model.apply({"params": params}, ids, jnp.ones_like(ids), None, None, predict,
                             method=model.logits_at)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        return -jnp.take_along_axis(logp, targets[..., None], -1).mean()

    def step(params, ids, predict, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, ids, predict, targets)
        return jax.tree.map(lambda p, g: p - 1e-3 * g, params, grads), loss

    return model, jax.jit(step, donate_argnums=0)


def attention_step(kind: str):
    half = 64

    def loss(q, k, v):
        if kind == "dense":
            mask = layers.window_mask(q.shape[1], q.shape[1])  # all True: global
            out = layers._softmax_attend(q, k, v, mask, 0.0, None)
        else:
            groups = jnp.ones(q.shape[:2], jnp.int32)
            out = layers.local_attend(q, k, v, groups, groups, half)
        return (out.astype(jnp.float32) ** 2).mean()

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def measure(fn, args, reps: int, fresh_args=None) -> dict:
    compiled = fn.lower(*args).compile()
    mem = compiled.memory_analysis()
    times = []
    for i in range(reps + 1):
        call_args = fresh_args() if fresh_args is not None else args
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*call_args))
        if i:  # the first call pays the allocator's warm-up
            times.append(time.perf_counter() - t0)
    return {"temp_mib": mem.temp_size_in_bytes / 2**20,
            "args_out_mib": (mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**20,
            "step_s": statistics.median(times)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",")]
    load_start = os.getloadavg()
    rows, skipped = [], []
    slow: set[str] = set()
    for length in lengths:
        n_pred = int(np.ceil(MASK_PROB * length))
        rng = np.random.default_rng(length)
        ids = jnp.asarray(rng.integers(5, 1000, (1, length)), jnp.int32)
        predict = jnp.asarray(np.sort(rng.choice(length, (1, n_pred), replace=False)), jnp.int32)
        targets = jnp.asarray(rng.integers(5, 1000, (1, n_pred)), jnp.int32)
        for name, every_n in (("all-global", 1), ("1-in-3 global / local-128", 3)):
            if name in slow:
                skipped.append({"what": f"step {name}", "tokens": length})
                continue
            cfg = model_config(every_n)
            model, step = train_step(cfg)
            params0 = init_params(model, jax.random.key(0))
            fresh = lambda: (jax.tree.map(jnp.copy, params0), ids, predict, targets)  # noqa: E731 (donated)
            row = {"what": f"step {name}", "tokens": length, **measure(step, fresh(), args.reps, fresh)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            slow |= {name} if row["step_s"] > args.max_seconds else set()
        q = jnp.asarray(rng.standard_normal((1, length, 2, 64)), jnp.float32)
        for kind in ("dense", "local"):
            if f"attn {kind}" in slow:
                skipped.append({"what": f"attention {kind}", "tokens": length})
                continue
            row = {"what": f"attention {kind}", "tokens": length, **measure(attention_step(kind), (q, q, q), args.reps)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            slow |= {f"attn {kind}"} if row["step_s"] > args.max_seconds else set()
    doc = {"rows": rows, "skipped": skipped, "jax": jax.__version__, "machine": platform.machine(),
           "cpus": os.cpu_count(), "load_start": load_start, "load": os.getloadavg()}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"skipped": skipped, "load": doc["load"]}))


if __name__ == "__main__":
    main()
