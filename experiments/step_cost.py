"""Where the JAX train step's time goes, without a timer: XLA's cost analysis of the compiled step, and one lever.

    python experiments/step_cost.py --config cpu_xlmr                          # cost analysis of the step
    python experiments/step_cost.py --config cpu_xlmr --lever one_hot --repeats 7

The first form compiles `xlm_jax.training.step.make_train_step` (the bench's JAX side: optim.make_optimizer, MLM only) for
the bench configuration's batch and prints `compiled.cost_analysis()` (FLOPs, bytes accessed, transcendentals)
next to the analytic FLOPs of `flops.batch_work`. Note: XLA counts the body of the layer `scan` once, not
num_layers times. The static figures do not depend on the machine's load.

`--lever one_hot` times, alternating in one process, the LM head + cross-entropy forward + backward at the
bench's prediction slots [B, P] with the target logit gathered by `take_along_axis` (today's
`objectives.cross_entropy`, whose gradient is a scatter into a zero [B, P, V] buffer) or by a one-hot product
(its gradient elementwise), and prints both medians, XLA's bytes accessed of each, and whether the losses and
gradients agree.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from xlm_jax.bench.workload import CONFIGS, LR, TOTAL_STEPS, WARMUP_STEPS, BenchConfig, make_batch
from xlm_jax.training import optim
from xlm_jax.training import sharding
from xlm_jax.training import step as step_lib
from xlm_jax.training.flops import batch_work


def _cost(compiled) -> dict:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {k: cost.get(k) for k in ("flops", "bytes accessed", "transcendentals")}


def step_cost(cfg: BenchConfig) -> None:
    model = cfg.model
    mesh = sharding.make_mesh(sharding.MeshConfig(data=1), devices=jax.devices()[:1])
    tx = optim.make_optimizer(optim.OptimizerConfig(lr=LR, warmup_steps=WARMUP_STEPS), TOTAL_STEPS)
    abstract, shardings = step_lib.abstract_state(model, tx, mesh)
    train_step = step_lib.make_train_step(model, tx, mesh, shardings, {"mlm": 1.0}, {"mlm": 1})
    batch = {"mlm": make_batch(cfg, 0)}
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
    t0 = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = train_step.jitted.lower(abstract, shapes, jax.random.key(0)).compile()
    cost = _cost(compiled)
    work = batch_work(model, batch)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract["params"]))
    print(f"compiled in {time.perf_counter() - t0:.1f} s")
    print(f"XLA flops / step       {cost['flops']:.4g}")
    print(f"analytic flops / step  {work.flops:.4g} (ratio XLA / analytic {cost['flops'] / work.flops:.3f}; "
          f"XLA counts the scanned layer body once)")
    print(f"bytes accessed / step  {cost['bytes accessed'] / 1e9:.2f} GB")
    print(f"transcendentals / step {cost['transcendentals']:.4g}")
    print(f"parameters             {n_params / 1e6:.1f} M")


def lever_one_hot(cfg: BenchConfig, repeats: int) -> None:
    m = cfg.model
    batch = make_batch(cfg, 0)
    b, p = batch["mlm_targets"].shape
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(b, p, m.hidden_size)).astype(np.float32))
    table = jnp.asarray((rng.normal(size=(m.vocab_size, m.hidden_size)) * 0.02).astype(np.float32))
    targets, weights = jnp.asarray(batch["mlm_targets"]), jnp.asarray(batch["mlm_weights"], jnp.float32)

    def gathered(logits):
        return jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]

    def one_hot(logits):
        return jnp.sum(logits * jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype), -1)

    def make(target_logit):
        def loss(h, e):
            logits = jnp.einsum("bpd,vd->bpv", h, e)
            nll = (jax.nn.logsumexp(logits, -1) - target_logit(logits)) * weights
            correct = (jnp.argmax(logits, -1) == targets) * weights
            return nll.sum(), correct.sum()

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))

    fns = {"take_along_axis": make(gathered), "one_hot": make(one_hot)}
    out = {k: jax.block_until_ready(f(hidden, table)) for k, f in fns.items()}
    (la, _), ga = out["take_along_axis"]
    (lb, _), gb = out["one_hot"]
    diff = max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)))
    print(f"loss {float(la):.6f} vs {float(lb):.6f}; largest gradient difference {diff:.3g}")
    for k, f in fns.items():
        print(f"{k}: bytes accessed {_cost(f.lower(hidden, table).compile())['bytes accessed'] / 1e9:.2f} GB")
    times = {k: [] for k in fns}
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):  # alternate who goes first
            t0 = time.perf_counter()
            jax.block_until_ready(fns[k](hidden, table))
            times[k].append(time.perf_counter() - t0)
    for k, v in times.items():
        print(f"{k}: median {statistics.median(v):.3f} s over {repeats} calls ({', '.join(f'{x:.2f}' for x in v)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="cpu_xlmr", choices=sorted(CONFIGS))
    p.add_argument("--lever", choices=("one_hot",), default=None)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    cfg = CONFIGS[args.config]
    if args.lever == "one_hot":
        lever_one_hot(cfg, max(1, args.repeats))
    else:
        step_cost(cfg)


if __name__ == "__main__":
    main()
