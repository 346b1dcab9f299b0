"""Peak memory and time of the MLM head's loss + gradient: whole-vocabulary logits vs vocabulary chunks.

    python experiments/lm_head_memory.py [--chunks 8192,32768] [--reps 3] [--out docs/results/lm_head_memory.json]

The `cpu_xlmr` shape (xlm_jax/bench.py: vocabulary 250,002, hidden 256, batch 16 x 128 tokens, 15 % masked, so
P = 16 x 20 = 320 predicted positions) and 8x that P. The function measured is the head's loss and its gradient
with respect to the (transformed) hidden states, the tied table and the bias, exactly as `mlm_loss` runs it:
`lm_head_chunk=0` (`cross_entropy` of `hidden @ table.T + bias`) or `chunked_softmax_cross_entropy`. The encoder
and the head transform are the same on both paths and left out.

Peak memory is XLA's compiled memory analysis (`temp_size_in_bytes`: the buffers the program allocates besides its
arguments and outputs), the honest figure on the CPU, where RSS mixes in the allocator and other programs. Times
are the median of `--reps` calls after a warm-up, the variants alternated call by call in one process, so that
the shared machine's noise falls on all of them alike. Not a CI test.
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

from xlm_jax.bench import CONFIGS  # noqa: E402
from xlm_jax.data.masking import num_predictions  # noqa: E402
from xlm_jax.training.objectives import chunked_softmax_cross_entropy, cross_entropy  # noqa: E402

MASK_PROB = 0.15


def loss_and_grad(chunk: int):
    def loss(hidden, table, bias, targets, weights):
        if chunk:
            nll, _ = chunked_softmax_cross_entropy(hidden, table, bias, targets, chunk)
            total = (nll * weights).sum()
        else:
            total = cross_entropy(hidden @ table.T + bias, targets, weights)["loss_sum"]
        return total / jnp.maximum(weights.sum(), 1.0)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", default="8192,32768")
    parser.add_argument("--multipliers", default="1,8", help="P = cpu_xlmr's predicted positions times these")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    bench = CONFIGS["cpu_xlmr"]
    vocab, dim = bench.model.vocab_size, bench.model.hidden_size
    base_p = bench.batch * num_predictions(bench.seq_len, MASK_PROB)
    variants = [0] + [int(c) for c in args.chunks.split(",")]
    rng = np.random.default_rng(0)
    table = jnp.asarray(rng.normal(size=(vocab, dim)) * 0.02, jnp.float32)
    bias = jnp.zeros((vocab,), jnp.float32)
    results = []
    for mult in (int(m) for m in args.multipliers.split(",")):
        p = base_p * mult
        hidden = jnp.asarray(rng.normal(size=(p, dim)), jnp.float32)
        targets = jnp.asarray(rng.integers(0, vocab, p), jnp.int32)
        weights = jnp.asarray(rng.random(p) < 0.95, jnp.float32)
        operands = (hidden, table, bias, targets, weights)
        compiled, outputs, rows = {}, {}, {}
        for chunk in variants:
            t0 = time.perf_counter()
            compiled[chunk] = loss_and_grad(chunk).lower(*operands).compile()
            mem = compiled[chunk].memory_analysis()
            outputs[chunk] = jax.block_until_ready(compiled[chunk](*operands))  # warm-up
            rows[chunk] = {"chunk": chunk, "P": p, "compile_and_first_call_s": time.perf_counter() - t0,
                           "temp_bytes": int(mem.temp_size_in_bytes),
                           "argument_bytes": int(mem.argument_size_in_bytes),
                           "output_bytes": int(mem.output_size_in_bytes), "times_s": []}
        for chunk in variants[1:]:  # the same loss and gradients (to float32 rounding)
            rows[chunk]["max_abs_diff_vs_full"] = max(
                float(jnp.abs(a - b).max()) for a, b in
                zip(jax.tree_util.tree_leaves(outputs[chunk]), jax.tree_util.tree_leaves(outputs[0])))
        for _ in range(args.reps):
            for chunk in variants:
                t0 = time.perf_counter()
                jax.block_until_ready(compiled[chunk](*operands))
                rows[chunk]["times_s"].append(time.perf_counter() - t0)
        for chunk in variants:
            row = rows[chunk]
            row["temp_vs_full"] = row["temp_bytes"] / rows[0]["temp_bytes"]
            row["median_s"] = statistics.median(row["times_s"])
            results.append(row)
            print(f"P={p:5d} chunk={chunk or 'full':>6}: temp {row['temp_bytes'] / 2**20:9.1f} MiB, "
                  f"median {row['median_s']:.3f} s {['%.3f' % t for t in row['times_s']]}", flush=True)
    report = {
        "command": "python experiments/lm_head_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "shape": {"vocab": vocab, "hidden": dim, "batch": bench.batch, "seq_len": bench.seq_len,
                  "mask_prob": MASK_PROB, "P_base": base_p},
        "jax": jax.__version__, "backend": jax.default_backend(), "cpus": os.cpu_count(),
        "machine": platform.machine(), "results": results,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
