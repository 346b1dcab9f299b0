"""Which levers move xlm_jax's training step on CPU? Variants of the JAX side of `python -m xlm_jax.bench`.

    python experiments/bench_levers.py --config cpu_xlmr --steps 3 --repeats 3 --out /tmp/levers
    git archive HEAD~1 xlm_jax | tar -x -C /tmp/before     # a committed version of the package, to compare with
    python experiments/bench_levers.py --variants before,baseline --code before=/tmp/before --infer-steps 3

Each variant is one JAX worker process of `xlm_jax.bench` (the real train step of `xlm_jax.training.step`), differing by
ModelConfig overrides or XLA flags, or by the package itself: `--code NAME=DIR` adds a variant NAME whose worker
imports the version of `xlm_jax/` in DIR (e.g. `git archive`'s; DIR goes first on its PYTHONPATH); the workers are started once and then
alternated, so the medians compare like with like on a noisy machine. With `--infer-steps N` each repeat also
times N forward-only encodes (the bench's inference figure). (The HF-style full-logits head is measured by the bench's own breakdown.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from xlm_jax.bench.harness import WorkerProcess, worker_env
from xlm_jax.bench.workload import CONFIGS
from xlm_jax.models.config import to_dict

# name -> (model overrides, extra XLA flags, threads or None for all)
VARIANTS: dict[str, tuple[dict, str, int | None]] = {
    "baseline": ({}, "", None),
    "bf16_compute": ({"dtype": "bfloat16"}, "", None),
    "unrolled_layers": ({"scan_layers": False}, "", None),
    "remat_full": ({"remat_policy": "full"}, "", None),
    "eigen_single_thread": ({}, "--xla_cpu_multi_thread_eigen=false", None),
    "one_thread": ({}, "", 1),
    "attention_explicit": ({"attention_impl": "xla"}, "", None),
    "fast_math": ({}, "--xla_cpu_enable_fast_math=true", None),
    "no_ynn_fusions": ({}, "--xla_cpu_experimental_ynn_fusion_type=", None),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="cpu_xlmr", choices=sorted(CONFIGS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                   help="variant NAME: the xlm_jax/ in DIR instead of this checkout's (repeatable)")
    p.add_argument("--infer-steps", type=int, default=0, help="forward-only encodes timed per repeat (0: none)")
    args = p.parse_args()
    cfg = CONFIGS[args.config]
    code = dict(c.split("=", 1) for c in args.code)
    for name in code:
        VARIANTS[name] = ({}, "", None)
    cpus = sorted(os.sched_getaffinity(0))
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    workers: dict[str, WorkerProcess] = {}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            overrides, flags, threads = VARIANTS[name]
            threads = threads or len(cpus)
            spec = {
                "config": cfg.name, "model": to_dict(cfg.model.replace(**overrides)), "batch": cfg.batch,
                "seq_len": cfg.seq_len, "device": "cpu", "threads": threads, "cpus": cpus[:threads], "seed": 0,
                "max_steps": args.steps * args.repeats + 2, "framework": "jax", "weights": None,
            }
            env = worker_env("jax", "cpu", threads)
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags).strip()
            if name in code:
                env["PYTHONPATH"] = os.pathsep.join([str(Path(code[name]).resolve()), env.get("PYTHONPATH", "")])
            w = WorkerProcess(spec, env, Path(tmp) / f"{name}.log", 900)
            if w.setup.get("error"):
                results[name] = {"error": w.setup["error"]}
                continue
            warm = w.call("warmup", 2, timeout=900)
            results[name] = {"first_step_s": warm.get("first_step_s"), "step_s": [], "infer_s": [],
                             "error": warm.get("error")}
            print(f"{name}: first step {warm.get('first_step_s')}", file=sys.stderr)
            workers[name] = w
        for r in range(args.repeats):
            order = list(workers)[r % len(workers):] + list(workers)[: r % len(workers)]
            for name in order:
                res = workers[name].call("train", args.steps, timeout=900)
                if "step_s" in res:
                    results[name]["step_s"].append(res["step_s"])
                if args.infer_steps:
                    res = workers[name].call("infer", args.infer_steps, timeout=900)
                    if "step_s" in res:
                        results[name]["infer_s"].append(res["step_s"])
            print(f"repeat {r + 1}: " + ", ".join(f"{n} {results[n]['step_s'][-1] * 1e3:.0f} ms"
                                                  for n in order if results[n]["step_s"]), file=sys.stderr)
        for name, w in workers.items():
            results[name]["memory"] = w.call("memory")
            w.close()
    base = statistics.median(results["baseline"]["step_s"]) if results.get("baseline", {}).get("step_s") else None
    base_inf = (statistics.median(results["baseline"]["infer_s"])
                if results.get("baseline", {}).get("infer_s") else None)
    print(f"{'variant':<22} {'step ms':>9} {'tokens/s':>10} {'vs baseline':>11} {'peak MiB':>9} {'first s':>8} "
          f"{'encode ms':>9} {'enc tok/s':>10} {'vs baseline':>11}")
    for name, res in results.items():
        if not res.get("step_s"):
            print(f"{name:<22} error: {res.get('error')}")
            continue
        step = statistics.median(res["step_s"])
        res["step_s_median"], res["tokens_per_s"] = step, cfg.tokens_per_step / step
        speed = f"{base / step:.2f}x" if base else "-"
        print(f"{name:<22} {step * 1e3:>9.1f} {cfg.tokens_per_step / step:>10,.0f} {speed:>11} "
              f"{res['memory'].get('peak_rss_mb', 0):>9,.0f} {res['first_step_s']:>8.1f}", end="")
        if res["infer_s"]:
            inf = statistics.median(res["infer_s"])
            res["infer_s_median"], res["infer_tokens_per_s"] = inf, cfg.tokens_per_step / inf
            print(f" {inf * 1e3:>9.1f} {cfg.tokens_per_step / inf:>10,.0f} "
                  f"{f'{base_inf / inf:.2f}x' if base_inf else '-':>11}", end="")
        print()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "levers.json").write_text(json.dumps({"config": args.config, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
