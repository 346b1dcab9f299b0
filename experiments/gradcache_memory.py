"""Peak memory and time of the contrastive fine-tuning step with GradCache (contrastive.grad_cache_chunk) against the
uncached step, on a CPU-sized model.

    python experiments/gradcache_memory.py [--batch 64] [--chunks 8 16 32] [--len 64] [--hidden 256] [--layers 4]
                                           [--steps 5] [--negatives 1]

Memory: XLA's `memory_analysis()` of the compiled step (the same `make_step` fine-tuning jits: model, loss, AdamW
update), deterministic for a given program and backend: `temp` is the scratch memory the step needs beyond its
inputs and outputs (activations kept for the backward pass, gradients), which GradCache bounds by the chunk.
Time: the median of --steps steps of each variant after a compiling step, the variants alternating step by step
so that the machine's load falls on all of them alike. Prints a markdown table (docs/finetune.md, "Sentence embeddings").
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from xlm_jax.models.config import get_model_config  # noqa: E402
from xlm_jax.tasks.contrastive import ContrastiveConfig  # noqa: E402
from xlm_jax.tasks.embedding import PairFeatures, SentenceEmbedder, make_batch, step_loss  # noqa: E402
from xlm_jax.training.sharding import MeshConfig, make_mesh  # noqa: E402
from xlm_jax.training.step import make_step  # noqa: E402
from xlm_jax.workflows import finetune as F  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--len", type=int, default=64, help="tokens per text (every text this long)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--negatives", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args(argv)

    config = dataclasses.replace(get_model_config("xlmr_tiny"), vocab_size=args.vocab, hidden_size=args.hidden,
                                 num_layers=args.layers, num_heads=max(1, args.hidden // 64),
                                 intermediate_size=4 * args.hidden, max_positions=args.len + 2, dropout=0.1,
                                 attention_dropout=0.0)
    model = SentenceEmbedder(config, "mean", True)
    rng = np.random.default_rng(0)
    n, k = args.batch, args.negatives

    def text():
        return [0] + rng.integers(4, args.vocab, size=args.len - 2).tolist() + [2]

    feats = PairFeatures([text() for _ in range(n)], [text() for _ in range(n)], [[text() for _ in range(k)]
                                                                                  for _ in range(n)],
                         [0] * n, [0] * n, 0, k)
    batch = make_batch(feats, range(n), n, args.len, 1)
    mesh = make_mesh(MeshConfig(1, 1, 1))
    cfg = F.FinetuneConfig(task="contrastive", batch_size=n, max_steps=10)
    from xlm_jax.models.xlm import init_params  # noqa: E402
    import flax.linen as nn  # noqa: E402

    params = jax.tree.map(np.asarray, nn.unbox(init_params(model, jax.random.key(0))))
    optimizer = F.build_optimizer(cfg, params, config, 10)
    variants = {"uncached": 0, **{f"chunk {c}": c for c in args.chunks}}
    steps, states, rows = {}, {}, {}
    for name, chunk in variants.items():
        state, shardings = F.setup_state(params, model, optimizer, mesh)
        step = make_step(step_loss(model, ContrastiveConfig(grad_cache_chunk=chunk)), optimizer, mesh, shardings)
        with jax.set_mesh(mesh):
            compiled = step.jitted.lower(state, batch, jax.random.key(1)).compile()
        mem = compiled.memory_analysis()
        rows[name] = {"temp": mem.temp_size_in_bytes, "args": mem.argument_size_in_bytes,
                      "out": mem.output_size_in_bytes, "times": []}
        state, _ = step(state, batch, jax.random.key(1))  # compiles (again: the jit cache is per function)
        jax.block_until_ready(state)
        steps[name], states[name] = step, state
    for _ in range(args.steps):
        for name in variants:
            t0 = time.perf_counter()
            states[name], metrics = steps[name](states[name], batch, jax.random.key(1))
            jax.block_until_ready(metrics)
            rows[name]["times"].append(time.perf_counter() - t0)
    base = rows["uncached"]
    n_params = sum(x.size for x in jax.tree.leaves(params))
    print(f"model: {args.layers} layers, hidden {args.hidden}, vocab {args.vocab} ({n_params / 1e6:.1f} M parameters); "
          f"batch {n} pairs + {k} hard negative(s) each, {args.len} tokens per text; backend {jax.default_backend()}")
    print("| step | XLA temp memory (MiB) | vs uncached | step time (s, median) | vs uncached |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        t, t0 = statistics.median(r["times"]), statistics.median(base["times"])
        print(f"| {name} | {r['temp'] / 2**20:.1f} | {r['temp'] / base['temp']:.2f} | {t:.3f} | {t / t0:.2f} |")
    print(f"(arguments {base['args'] / 2**20:.1f} MiB: parameters, optimizer state, batch; the same for every variant)")


if __name__ == "__main__":
    main()
