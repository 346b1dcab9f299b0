"""`python -m xlm_jax.bench`: the same MLM training step in xlm_jax and in Hugging Face PyTorch, side by side.

The command: flags, checks of the input (before any worker starts), the run over the configurations, the table,
bench.json and bench.png. `--worker` (hidden) makes the process a worker of `xlm_jax.bench.harness`. What is
compared and how: the package's docstring (`xlm_jax/bench/__init__.py`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

from xlm_jax.bench.harness import RunSettings, machine_info, missing_gpu, probe_devices, run_config, worker_main
from xlm_jax.bench.report import SMOKE_NOTE, describe, format_table, format_varlen_table, json_default, plot
from xlm_jax.bench.workload import CONFIGS, FRAMEWORKS, versions
from xlm_jax.core import outputs
from xlm_jax.core.errors import ArgumentParser, UserError, exit_on_user_error, positive_int, unknown_name
from xlm_jax.training.flops import peak_flops_override


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m xlm_jax.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=None,
                   help=f"comma-separated, from {', '.join(CONFIGS)} (default: those for --device)")
    p.add_argument("--steps", type=positive_int, default=10, help="timed steps per repeat")
    p.add_argument("--repeats", type=positive_int, default=5, help="alternating repeats; medians are reported")
    p.add_argument("--warmup", type=positive_int, default=3, help="untimed steps after the first (compile) step")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--threads", type=positive_int, default=None, help="threads (and pinned CPUs) per side; default all")
    p.add_argument("--torch-compile", choices=("auto", "on", "off"), default="auto",
                   help="auto: on, except with --smoke")
    p.add_argument("--sides", default=None,
                   help=f"comma-separated, from {', '.join(FRAMEWORKS)}; jax is required (every ratio is against "
                   "it). Default: jax,torch_eager,torch_masked, and torch_compile unless --torch-compile off / --smoke")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-part timing")
    p.add_argument("--out", default=None, help="directory for bench.json, bench.png and logs/: new, empty, or an "
                   "earlier bench output")
    p.add_argument("--force", action="store_true", help="write into --out even if it holds files bench did not write "
                   "(files of the same names are replaced, others kept)")
    p.add_argument("--varlen", action="store_true",
                   help="instead of training: inference (encode) on one set of variable-length sentences, padded to "
                   "each batch's longest vs packed with segment ids (jax), padded (PyTorch); real tokens/s. Default "
                   "sides: jax,torch_eager")
    p.add_argument("--smoke", action="store_true", help="seconds-long check: smoke shapes, one step, no compile")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Returns 0, or 1 when a required side produced no timing; bad input (flags, configuration names, sides,
    $XLM_JAX_PEAK_FLOPS, --out) exits 2 with one `error:` line, before any worker starts."""
    args = parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    with exit_on_user_error():
        return _main(args, sys.argv[1:] if argv is None else argv)


def parse_sides(text: str | None, torch_compile: str, smoke: bool, varlen: bool = False) -> tuple[str, ...]:
    """The sides to run, in FRAMEWORKS' order. `text` None: jax, torch_eager, torch_masked, plus torch_compile when
    `torch_compile` is "on", or "auto" without `smoke`; with `varlen`, jax and torch_eager (the PyTorch sides
    share one encoder at inference). Raises UserError for an unknown, repeated or empty name, a list without jax,
    torch_compile listed with --torch-compile off, or, with `varlen`, any side but jax and torch_eager."""
    if varlen and torch_compile == "on":
        raise UserError("--torch-compile on: --varlen runs the uncompiled encoder (torch_eager's model); drop "
                        "--torch-compile, or run the training bench without --varlen")
    if text is None and varlen:
        return ("jax", "torch_eager")
    if text is None:
        compile_torch = torch_compile == "on" or (torch_compile == "auto" and not smoke)
        return ("jax", "torch_eager", "torch_masked") + (("torch_compile",) if compile_torch else ())
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise UserError(f"--sides={text!r}: an empty name; give a comma-separated list of {', '.join(FRAMEWORKS)}")
    for n in names:
        if n not in FRAMEWORKS:
            raise unknown_name("side", n, FRAMEWORKS, prefix="--sides=")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"--sides={text!r}: {', '.join(repeated)} listed more than once")
    if "jax" not in names:
        raise UserError(f"--sides={text!r}: must include jax (it exports the shared weights and every ratio is "
                        "jax / other)")
    if "torch_compile" in names and torch_compile == "off":
        raise UserError(f"--sides={text!r} lists torch_compile but --torch-compile off; drop one of them")
    if varlen and set(names) - {"jax", "torch_eager"}:
        extra = ", ".join(n for n in names if n not in ("jax", "torch_eager"))
        raise UserError(f"--sides={text!r} lists {extra} but --varlen runs the encoder without a head and "
                        "uncompiled, which is torch_eager's model; valid with --varlen: jax, torch_eager")
    return tuple(fw for fw in FRAMEWORKS if fw in names)


def check_gpu(sides: tuple[str, ...], found: dict[str, list[str]] | None = None) -> None:
    """Raises UserError, naming the devices found, when JAX (or PyTorch, for a torch side) sees no GPU: a
    `--device gpu` run must stop here, before any worker starts, not after every worker has failed."""
    found = found if found is not None else probe_devices(need_torch=any(s != "jax" for s in sides))
    missing = missing_gpu(found)
    if missing:
        seen = "; ".join(f"{fw} found {', '.join(devices)}" for fw, devices in found.items())
        raise UserError(f"--device gpu: no GPU for {' and '.join(missing)} on this machine ({seen}); "
                        "run with --device cpu, or on a machine with a CUDA GPU")


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = args.threads or available
    if not 1 <= threads <= available:
        raise UserError(f"--threads={threads}: must be between 1 and the {available} CPUs this process may use")
    if args.smoke:
        names = ["smoke"] if args.configs is None else [n.strip() for n in args.configs.split(",") if n.strip()]
        steps, repeats, warmup = 1, 1, 1
    else:
        names = ([n for n, c in CONFIGS.items() if args.device in c.devices] if args.configs is None
                 else [n.strip() for n in args.configs.split(",") if n.strip()])
        steps, repeats, warmup = args.steps, args.repeats, args.warmup
    if not names:
        raise UserError(f"--configs={args.configs!r}: no configuration named; valid: {', '.join(CONFIGS)}")
    for n in names:
        if n not in CONFIGS:
            raise unknown_name("configuration", n, CONFIGS, prefix="--configs=")
    if min(steps, repeats, warmup) < 1:
        raise UserError(f"--steps={steps}, --repeats={repeats}, --warmup={warmup}: each must be >= 1")
    peak_flops_override()  # a bad $XLM_JAX_PEAK_FLOPS stops here, before any worker starts
    sides = parse_sides(args.sides, args.torch_compile, args.smoke, args.varlen)
    settings = RunSettings(steps=steps, repeats=repeats, warmup=warmup, device=args.device, threads=threads,
                           torch_compile="torch_compile" in sides, breakdown=not (args.no_breakdown or args.smoke),
                           sides=sides, varlen=args.varlen)
    if args.device == "gpu":
        check_gpu(sides)
    out_dir = outputs.claim_dir(args.out, "bench", force=args.force, legacy="bench.json") if args.out else None
    results = []
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="xlm_jax_bench_") as tmp:
        workdir = out_dir / "logs" if out_dir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for n in names:
            results.append(run_config(CONFIGS[n], settings, workdir, log=lambda m: print(m, file=sys.stderr)))
    report = {
        "command": "python -m xlm_jax.bench " + " ".join(argv),
        "machine": {**machine_info(threads), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "settings": dataclasses.asdict(settings),
        "versions": versions(("jax", "jaxlib", "flax", "optax", "torch", "transformers")),
        "descriptions": describe(names, sides, varlen=args.varlen), "results": results,
        **({"note": SMOKE_NOTE} if args.smoke else {}),
    }
    print((format_varlen_table if args.varlen else format_table)(results, smoke=args.smoke))
    if out_dir:
        outputs.atomic_write_text(out_dir / "bench.json", json.dumps(report, indent=2, default=json_default))
        plot(results, out_dir / "bench.png", smoke=args.smoke)
        print(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.png'}")
    figure = "varlen_padded_tokens_per_s" if args.varlen else "train_tokens_per_s"
    failed = [f"{r['config']}/{fw}" for r in results for fw in settings.sides if fw != "torch_compile"
              if not r["frameworks"].get(fw, {}).get(figure)]
    if failed:
        print(f"error: no timing for {', '.join(failed)} (see the logs)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
