"""One prepared accelerator measurement (issue 24): XLM-R base / large at seq 512, bf16 compute with fp32 master
weights, padded and packed rows, xlm_jax's real train step against HF PyTorch doing the same work, plus the
attention kernel that actually ran and a check that packed attention stays inside its segments on that backend.

    experiments/accelerator/run.sh                # on a GPU machine: < 8 minutes, writes $OUT (or --out)
    experiments/accelerator/run.sh --dry-run      # the same code path on CPU, tiny shapes (< ~2 minutes)

Parts, in order of priority, each with a time estimate; a part that would not fit in what is left of --budget is
skipped with a note (never left hanging: every worker call has the time left as its timeout):
1. preflight: what the machine has (jax backend and device kind, torch CUDA, versions). A missing package or no
   accelerator is one `error:` line naming what to carry (docs/benchmarks.md), exit 2, before anything else.
2. attention: for each `model.attention_impl` (auto, xla, cudnn on GPU) a packed row of three examples against
   each example alone in its own padded row (encoder outputs, on the device, the training compute dtype), the
   same row without segment ids as the control (attention crossing the segments), and the kernel found in the
   compiled HLO (a cuDNN fused-attention custom call, or XLA) for the forward and for a train-mode gradient.
3. train steps through the bench harness (`xlm_jax.bench.harness.run_config`: one worker process per side,
   alternated, medians): side `jax` (xlm_jax's train step, LM head at the masked positions) and `torch_masked`
   (HF XLMRobertaForMaskedLM, SDPA, bf16 autocast, its lm_head at the masked positions only), for xlmr_base and
   xlmr_large x packed / padded; then the ModernBERT-family step (mmbert_base, jax only) and XLM-R base with
   attention dropout 0 and attention_impl=cudnn (the only way cuDNN attention runs in training).
   Figures per side: tokens/s per device (B x T slots), real tokens/s, analytic TFLOP/s and MFU
   (`xlm_jax.training.flops`, against the device's dense bf16 peak), peak device memory, first-step (compile) time.

Writes accelerator.json (everything, raw timings included), accelerator.md (the tables) and logs.txt (the tail of
each worker's log) into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from xlm_jax.bench.harness import RunSettings, run_config  # noqa: E402  (after the repo is on the path)
from xlm_jax.bench.report import json_default  # noqa: E402
from xlm_jax.bench.workload import BenchConfig, versions  # noqa: E402
from xlm_jax.models.config import get_model_config  # noqa: E402

# Every row of the results table has these fields (None where a figure does not apply); tests check them.
ROW_FIELDS = ("part", "model", "layout", "side", "batch", "seq_len", "tokens_per_s_per_device", "real_tokens_per_s",
              "tflops_per_s", "mfu", "peak_memory_mib", "memory_kind", "compile_s", "step_ms", "attention_path",
              "eval_loss_same_weights", "error")
PART_FIELDS = ("name", "kind", "estimate_s", "status", "elapsed_s", "note")
CARRY_HINT = ("carry wheels as /work/.library/device/README.md says (docs/benchmarks.md 'Accelerator run' lists "
              "them), or run with --dry-run on CPU")


@dataclasses.dataclass(frozen=True)
class StepPart:
    """One train-step measurement: a bench configuration and the sides that run it."""

    name: str
    config: BenchConfig
    sides: tuple[str, ...]
    estimate_s: float


def step_parts(dry_run: bool) -> list[StepPart]:
    """The train-step parts in priority order. Real: seq 512, xlmr_base batch 32, xlmr_large batch 16 (the bench's
    GPU shapes), mmbert_base batch 32. Dry run: the same list on tiny models (seq 64, batch 4)."""
    if dry_run:
        small = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=300)
        models = {
            "xlmr_base": get_model_config("xlmr_tiny", **small),
            "xlmr_large": get_model_config("xlmr_tiny", **{**small, "num_layers": 2}),
            "mmbert_base": get_model_config("modernbert_tiny", num_layers=3, hidden_size=32, num_heads=2,
                                            intermediate_size=48, vocab_size=300),
        }
        batch = {"xlmr_base": 4, "xlmr_large": 4, "mmbert_base": 4}
        seq, est = 64, {"xlmr_base": 25, "xlmr_large": 25, "mmbert_base": 15}
    else:
        models = {name: get_model_config(name) for name in ("xlmr_base", "xlmr_large", "mmbert_base")}
        batch = {"xlmr_base": 32, "xlmr_large": 16, "mmbert_base": 32}
        seq, est = 512, {"xlmr_base": 70, "xlmr_large": 100, "mmbert_base": 50}

    def cfg(name: str, layout: str, **over) -> BenchConfig:
        model = models[name].replace(**over) if over else models[name]
        model = model.replace(max_positions=max(model.max_positions, seq + 2))  # XLM-R's 2-row position offset
        return BenchConfig(f"{name}_{layout}", model, batch[name], seq, (), layout)  # (names a log file)

    both = ("jax", "torch_masked")
    parts = [
        StepPart("xlmr_base/packed", cfg("xlmr_base", "packed"), both, est["xlmr_base"]),
        StepPart("xlmr_large/packed", cfg("xlmr_large", "packed"), both, est["xlmr_large"]),
        StepPart("xlmr_base/padded", cfg("xlmr_base", "padded"), both, est["xlmr_base"]),
        StepPart("xlmr_large/padded", cfg("xlmr_large", "padded"), both, est["xlmr_large"]),
        StepPart("mmbert_base/packed", cfg("mmbert_base", "packed"), ("jax",), est["mmbert_base"]),
    ]
    if dry_run:  # every code path once (both layouts, both models, both frameworks, the ModernBERT family)
        return [parts[0], parts[3], parts[4]]
    cudnn = cfg("xlmr_base", "packed", attention_dropout=0.0, attention_impl="cudnn")  # cuDNN exists on GPUs only
    parts.append(StepPart("xlmr_base/packed/cudnn", dataclasses.replace(cudnn, name="xlmr_base_packed_cudnn"), both,
                          est["xlmr_base"]))
    return parts


def attention_path(model) -> str:
    """Which attention code the train step runs for this config (xlm_jax.models.xlm.SelfAttention)."""
    if model.attention_dropout > 0:
        return "xla: explicit einsum + f32 softmax (attention dropout needs the probabilities)"
    return {"auto": "jax.nn.dot_product_attention (implementation=None: XLA)", "xla": "xla: explicit einsum",
            "cudnn": "jax.nn.dot_product_attention(implementation='cudnn')"}[model.attention_impl]


# ------------------------------------------------------------------------------------ subprocess checks


def preflight(dry_run: bool) -> dict[str, Any]:
    """What the machine has, from a child process (the parent never starts a JAX backend or CUDA, so the workers
    get the whole device). Raises SystemExit(2) with one `error:` line when the real run cannot go on."""
    code = (
        "import json, importlib\n"
        "out = {'missing': []}\n"
        "for m in ('jax', 'flax', 'optax', 'orbax.checkpoint', 'yaml', 'numpy', 'torch', 'transformers'):\n"
        "    try: importlib.import_module(m)\n"
        "    except Exception as e: out['missing'].append(f'{m} ({type(e).__name__}: {e})'[:200])\n"
        "try:\n"
        "    import jax; d = jax.devices()[0]\n"
        "    out.update(backend=jax.default_backend(), device_kind=d.device_kind, n_devices=jax.device_count())\n"
        "except Exception as e: out['jax_error'] = f'{type(e).__name__}: {e}'[:300]\n"
        "try:\n"
        "    import torch; out['torch_cuda'] = torch.cuda.is_available()\n"
        "    out['torch_device'] = torch.cuda.get_device_name() if out['torch_cuda'] else 'cpu'\n"
        "except Exception as e: out['torch_error'] = f'{type(e).__name__}: {e}'[:300]\n"
        "print('@@PRE ' + json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if dry_run:
        env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@PRE ")]
    if not lines:
        fail(f"the preflight child failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
    info = json.loads(lines[-1][len("@@PRE "):])
    if info["missing"]:
        fail(f"missing Python packages: {'; '.join(info['missing'])}; {CARRY_HINT}")
    if "jax_error" in info:
        fail(f"jax has no usable backend: {info['jax_error']}; {CARRY_HINT}")
    if not dry_run:
        if info["backend"] != "gpu":
            fail(f"jax's backend is {info['backend']!r} ({info['device_kind']}), not a GPU: this script measures "
                 f"CUDA GPUs (jax[cuda] and torch with CUDA); {CARRY_HINT}")
        if not info.get("torch_cuda"):
            fail(f"torch sees no CUDA device ({info.get('torch_error', 'cuda unavailable')}); {CARRY_HINT}")
    return info


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_attention_check(device: str, timeout: float, log_dir: Path) -> dict[str, Any]:
    """`attention_check` in a child process (its own JAX backend, freed when it exits)."""
    out = log_dir / "attention.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cuda" if device == "gpu" else "cpu"}
    with open(log_dir / "attention.log", "w") as log:
        try:
            proc = subprocess.run([sys.executable, __file__, "--attention-check", str(out), "--device", device],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode or not out.exists():
        return {"error": f"exit {proc.returncode}; see logs.txt (attention.log)"}
    return json.loads(out.read_text())


def attention_check(device: str) -> dict[str, Any]:
    """Packed attention against each example alone, per attention_impl, on this process's JAX backend.

    A row of three examples (segment ids 1, 2, 3, then padding) through the encoder, with segment ids, against
    each example alone at the start of its own padded row: max |difference| over each example's tokens
    (`max_abs_diff`). The control is the same packed row with a plain padding mask (attention crosses the
    segments: `crossing_diff`). `ok` when max_abs_diff <= tol (1e-4 float32, 5e-2 bfloat16) and below a tenth
    of the control. `kernel` / `train_kernel`: cuDNN if the compiled HLO of the forward / of a train-mode
    (dropout on) gradient holds a cuDNN fused-attention custom call, else XLA."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from xlm_jax.data.packing import pack
    from xlm_jax.models import families
    from xlm_jax.models.xlm import init_params
    from xlm_jax.training.objectives import mlm_loss

    gpu = device == "gpu"
    seq = 512 if gpu else 64
    dtype = "bfloat16" if gpu else "float32"
    tol = 5e-2 if gpu else 1e-4
    lengths = [seq * 2 // 5, seq * 3 // 10, seq // 5]
    impls = ["auto", "xla", "cudnn"] if gpu else ["auto"]  # (on CPU every implementation is XLA)
    rng = np.random.default_rng(0)
    out = {"backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind, "dtype": dtype,
           "seq_len": seq, "lengths": lengths, "tol": tol, "impls": {}}
    for impl in impls:
        entry: dict[str, Any] = {}
        out["impls"][impl] = entry
        try:
            cfg = get_model_config("xlmr_base", num_layers=2, vocab_size=1000, dtype=dtype, attention_impl=impl,
                                   max_positions=seq + 2)
            if not gpu:
                cfg = cfg.replace(hidden_size=64, num_heads=4, intermediate_size=128)
            model = families.masked_lm(cfg)
            params = nn.unbox(init_params(model, jax.random.key(0)))
            examples = [rng.integers(4, 999, size=n) for n in lengths]
            for e in examples:
                e[0], e[-1] = cfg.bos_token_id, cfg.eos_token_id
            packed = pack(examples, [[0, 1, 2]], seq, 3, cfg.pad_token_id)
            alone = np.full((3, seq), cfg.pad_token_id, np.int32)
            for i, e in enumerate(examples):
                alone[i, :len(e)] = e

            def encode(p, ids, attention, segment_ids):
                return model.apply({"params": p}, ids, attention, segment_ids=segment_ids)

            def encode_plain(p, ids, attention):
                return model.apply({"params": p}, ids, attention)

            fwd = jax.jit(encode)
            ids, att, seg = (jnp.asarray(packed[k]) for k in ("input_ids", "attention_mask", "segment_ids"))
            entry["kernel"] = kernel_of(fwd.lower(params, ids, att, seg).compile().as_text())
            h_packed = np.asarray(fwd(params, ids, att, seg), np.float32)[0]
            # One call without segment ids: row 0 the packed row (the control), rows 1-3 the examples alone.
            rows = np.concatenate([packed["input_ids"], alone])
            h_plain = np.asarray(jax.jit(encode_plain)(params, jnp.asarray(rows), jnp.asarray(
                (rows != cfg.pad_token_id).astype(np.int32))), np.float32)
            h_cross, h_alone = h_plain[0], h_plain[1:]
            diffs, cross = [], []
            for i, n in enumerate(lengths):
                start = int(packed["start_of"][i])
                diffs.append(float(np.abs(h_packed[start:start + n] - h_alone[i, :n]).max()))
                cross.append(float(np.abs(h_cross[start:start + n] - h_alone[i, :n]).max()))
            entry.update(max_abs_diff=max(diffs), per_example=diffs, crossing_diff=max(cross))
            entry["ok"] = bool(max(diffs) <= tol and max(diffs) < 0.1 * max(cross))
            # The train-mode gradient (dropout on, as the train step): which kernel its attention compiles to.
            batch = {"input_ids": ids, "attention_mask": att, "segment_ids": seg,
                     "mlm_positions": jnp.zeros((1, 4), jnp.int32) + 1, "mlm_targets": jnp.ones((1, 4), jnp.int32) + 4,
                     "mlm_weights": jnp.ones((1, 4), jnp.float32)}
            grad = jax.jit(jax.grad(lambda p, b, r: mlm_loss(model, p, b, r)[0]))
            entry["train_kernel"] = kernel_of(grad.lower(params, batch, jax.random.key(1)).compile().as_text())
            entry["train_path"] = attention_path(cfg)
        except Exception as e:  # recorded: an implementation this backend refuses is a finding, not a crash
            entry["error"] = f"{type(e).__name__}: {e}"[:500]
            entry["ok"] = False
    return out


def kernel_of(hlo: str) -> str:
    lowered = hlo.lower()
    if "cudnn" in lowered and "fmha" in lowered:
        return "cudnn fused attention (__cudnn$fmha custom call)"
    return "xla (no cuDNN attention in the compiled HLO)"


# ------------------------------------------------------------------------------------------- the run


def rows_of(part: StepPart, record: dict[str, Any], device: str) -> list[dict[str, Any]]:
    rows = []
    for side, e in record["frameworks"].items():
        mem = e.get("memory") or {}
        dev_peak = mem.get("device_peak_mb")
        step = e.get("train_step_s")
        first = e.get("first_step_s")
        work_real = record.get("real_tokens_per_step")
        rows.append({
            "part": part.name, "model": part.name.split("/")[0], "layout": part.config.layout, "side": side,
            "batch": part.config.batch, "seq_len": part.config.seq_len,
            "tokens_per_s_per_device": e.get("train_tokens_per_s"),
            "real_tokens_per_s": work_real / step if step and work_real else None,
            "tflops_per_s": e.get("model_tflops_per_s"), "mfu": e.get("mfu"),
            "peak_memory_mib": dev_peak if dev_peak is not None else mem.get("peak_rss_mb"),
            "memory_kind": "device peak" if dev_peak is not None else "host peak RSS",
            "compile_s": first - step if first and step else first, "step_ms": step * 1e3 if step else None,
            "attention_path": attention_path(part.config.model) if side == "jax" else "torch sdpa (bf16 autocast)"
            if device == "gpu" else "torch sdpa",
            "eval_loss_same_weights": e.get("eval_loss_same_weights"), "error": e.get("error"),
        })
    return rows


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [f"# Accelerator run ({'dry run, CPU' if report['dry_run'] else m.get('device_kind')})", "",
             f"`{report['command']}` — {report['started']}, jax {m.get('versions', {}).get('jax')} "
             f"({m.get('backend')}), torch {m.get('versions', {}).get('torch')} ({m.get('torch_device')}); "
             f"peak {fmt(report.get('peak_flops_per_device'), '.3g')} FLOP/s per device; budget "
             f"{report['budget_s']:.0f} s, used {report['elapsed_s']:.0f} s.", "",
             "| model | layout | side | B×T | tokens/s/device | real tokens/s | TFLOP/s | MFU | peak MiB | "
             "compile s | step ms | attention | eval loss |", "|" + "---|" * 13]
    for r in report["results"]:
        if r["error"] and r["tokens_per_s_per_device"] is None:
            lines.append(f"| {r['model']} | {r['layout']} | {r['side']} | {r['batch']}×{r['seq_len']} | error: "
                         f"{r['error'][:80]} |" + " |" * 8)
            continue
        lines.append(
            f"| {r['model']} | {r['layout']} | {r['side']} | {r['batch']}×{r['seq_len']} | "
            f"{fmt(r['tokens_per_s_per_device'], ',.0f')} | {fmt(r['real_tokens_per_s'], ',.0f')} | "
            f"{fmt(r['tflops_per_s'], '.1f')} | {fmt(r['mfu'], '.1%')} | {fmt(r['peak_memory_mib'], ',.0f')} | "
            f"{fmt(r['compile_s'], '.1f')} | {fmt(r['step_ms'], '.1f')} | {r['attention_path']} | "
            f"{fmt(r['eval_loss_same_weights'], '.4f')} |")
    att = report["attention_check"]
    lines += ["", f"Packed attention vs each example alone ({att.get('backend')}, {att.get('dtype')}, T="
              f"{att.get('seq_len')}, tolerance {att.get('tol')}):", "",
              "| attention_impl | kernel (forward) | kernel (train grad) | max abs diff | control (crossing) | ok |",
              "|---|---|---|---|---|---|"]
    if "error" in att:
        lines.append(f"| error: {att['error']} | | | | | |")
    for impl, e in att.get("impls", {}).items():
        if "error" in e:
            lines.append(f"| {impl} | error: {e['error'][:120]} | | | | no |")
        else:
            lines.append(f"| {impl} | {e['kernel']} | {e['train_kernel']} | {e['max_abs_diff']:.2e} | "
                         f"{e['crossing_diff']:.2e} | {'yes' if e['ok'] else 'NO'} |")
    lines += ["", "| part | estimate s | status | elapsed s | note |", "|---|---|---|---|---|"]
    for p in report["parts"]:
        lines.append(f"| {p['name']} | {p['estimate_s']:.0f} | {p['status']} | {fmt(p['elapsed_s'], '.0f')} | "
                     f"{p['note'] or ''} |")
    lines += ["", "tokens/s/device: B×T input slots per second (padding included, what the device computes); real "
              "tokens/s: padding excluded. TFLOP/s and MFU: analytic model FLOPs (xlm_jax.training.flops, the LM head "
              "credited at the masked positions) over the dense bf16 peak. compile s: first step minus the median "
              "step. jax: xlm_jax's train step; torch_masked: HF XLMRobertaForMaskedLM, SDPA, bf16 autocast, lm_head "
              "at the masked positions only (fused AdamW, the same weights: eval loss)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, a couple of steps: the same code path")
    p.add_argument("--out", default=None, help="output directory (default: $OUT, else experiments/accelerator/out)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 450; dry run 300)")
    p.add_argument("--attention-check", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="gpu", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.attention_check:
        Path(args.attention_check).write_text(json.dumps(attention_check(args.device), default=json_default))
        return 0
    t_start = time.perf_counter()
    budget = args.budget or (300.0 if args.dry_run else 450.0)
    device = "cpu" if args.dry_run else "gpu"
    out = Path(args.out or os.environ.get("OUT") or REPO / "experiments" / "accelerator" / "out")
    out.mkdir(parents=True, exist_ok=True)
    # JAX allocates on demand, so the JAX and PyTorch workers of a part share the device (both are alive at once).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    if args.dry_run:
        os.environ["JAX_PLATFORMS"] = "cpu"
    info = preflight(args.dry_run)
    info["versions"] = versions(("jax", "jaxlib", "flax", "optax", "torch", "transformers"))
    print(f"preflight: jax {info['versions']['jax']} on {info['backend']} ({info['device_kind']}), torch "
          f"{info['versions']['torch']} ({info.get('torch_device')}); budget {budget:.0f} s", flush=True)
    left = lambda: budget - (time.perf_counter() - t_start)  # noqa: E731
    report: dict[str, Any] = {
        "command": "experiments/accelerator/run.sh " + " ".join(sys.argv[1:] if argv is None else argv),
        "dry_run": args.dry_run, "budget_s": budget, "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": info, "parts": [], "results": [], "records": [], "attention_check": {},
    }
    def save() -> None:
        """Written after every part, so that a run stopped from outside still leaves what it measured."""
        report["elapsed_s"] = time.perf_counter() - t_start
        report.setdefault("peak_flops_per_device", None)
        (out / "accelerator.json").write_text(json.dumps(report, indent=2, default=json_default))
        (out / "accelerator.md").write_text(markdown(report))
        tails = []
        for f in sorted(logs.glob("*.log")):
            text = f.read_text(errors="replace")
            tails.append(f"==== {f.name} (last 4000 characters)\n{text[-4000:]}")
        (out / "logs.txt").write_text("\n".join(tails) + "\n")

    with tempfile.TemporaryDirectory(prefix="xlm_jax_accel_") as tmp:
        logs = Path(tmp)
        estimate = 20.0 if args.dry_run else 45.0
        part = {"name": "attention", "kind": "attention check", "estimate_s": estimate, "status": "ok",
                "elapsed_s": None, "note": None}
        report["parts"].append(part)
        print(f"[attention] budget: ~{estimate:.0f} s of {left():.0f} s left", flush=True)
        t0 = time.perf_counter()
        report["attention_check"] = run_attention_check(device, left(), logs)
        part["elapsed_s"] = time.perf_counter() - t0
        if "error" in report["attention_check"]:
            part["status"], part["note"] = "error", report["attention_check"]["error"]
        else:
            bad = [i for i, e in report["attention_check"]["impls"].items() if not e.get("ok")]
            part["note"] = f"not ok: {', '.join(bad)}" if bad else "every impl stays inside its segments"
        print(f"[attention] {part['note']} ({part['elapsed_s']:.0f} s)", flush=True)
        save()
        steps, repeats, warmup = (2, 1, 1) if args.dry_run else (5, 3, 2)
        for sp in step_parts(args.dry_run):
            part = {"name": sp.name, "kind": "train step", "estimate_s": sp.estimate_s, "status": "ok",
                    "elapsed_s": None, "note": None}
            report["parts"].append(part)
            remaining = left()
            print(f"[{sp.name}] budget: ~{sp.estimate_s:.0f} s of {remaining:.0f} s left", flush=True)
            if sp.estimate_s > remaining:
                part["status"], part["note"] = "skipped", f"needs ~{sp.estimate_s:.0f} s, {remaining:.0f} s left"
                print(f"[{sp.name}] skipped: {part['note']}", flush=True)
                continue
            settings = RunSettings(steps=steps, repeats=repeats, warmup=warmup, device=device, threads=1 if
                                   args.dry_run else min(8, len(os.sched_getaffinity(0))), torch_compile=False,
                                   breakdown=False, sides=sp.sides,
                                   timeout=max(min(remaining, 3 * sp.estimate_s), 10.0))  # per worker call
            t0 = time.perf_counter()
            try:
                record = run_config(sp.config, settings, logs, log=lambda msg: print(msg, flush=True))
            except Exception as e:  # noted; the next part still runs
                part["status"], part["note"] = "error", f"{type(e).__name__}: {e}"[:300]
                part["elapsed_s"] = time.perf_counter() - t0
                save()
                continue
            part["elapsed_s"] = time.perf_counter() - t0
            report["peak_flops_per_device"] = record.get("peak_flops_per_device") or report.get(
                "peak_flops_per_device")
            report["records"].append(record)
            rows = rows_of(sp, record, device)
            report["results"] += rows
            errors = [f"{r['side']}: {r['error']}" for r in rows if r["error"]]
            if errors:
                part["status"], part["note"] = "error", "; ".join(errors)[:300]
            print(f"[{sp.name}] done in {part['elapsed_s']:.0f} s: " + ", ".join(
                f"{r['side']} {fmt(r['tokens_per_s_per_device'], ',.0f')} tok/s MFU {fmt(r['mfu'], '.1%')}"
                for r in rows), flush=True)
            save()
        save()
    print(markdown(report))
    print(f"wrote {out / 'accelerator.json'}, {out / 'accelerator.md'} and {out / 'logs.txt'} "
          f"in {report['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
