"""The bench's harness: one long-lived worker process per side, JSON lines over pipes, and the parent's
alternation of the workers (`run_config`).

Protocol (`python -m xlm_jax.bench --worker`): the parent writes the worker's spec as one JSON line, then one
JSON command per line ({"cmd": name, "args": [...]}, "quit" to end); the worker answers each with one
`REPLY`-prefixed JSON line on stdout (anything else a library prints there is ignored), errors included, so a side
that fails is recorded and the run goes on without it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import queue
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from xlm_jax.bench.report import derive, new_record
from xlm_jax.bench.torch_side import TorchWorker
from xlm_jax.bench.workload import BenchConfig, rss_mb
from xlm_jax.models.config import to_dict

REPLY = "@@BENCH "  # worker replies are the stdout lines with this prefix; anything else a library prints is ignored


# ----------------------------------------------------------------------------------------------- workers


def make_worker(spec: dict[str, Any]) -> Any:
    """The worker of the side `spec["framework"]` names. A worker process imports only its own framework: the JAX
    side's module loads jax, and TorchWorker loads torch when it is built, so neither weighs on the other's
    measured memory peak."""
    if spec["framework"] == "jax":
        from xlm_jax.bench.jax_side import JaxWorker  # deferred: loads jax, which the PyTorch workers must not hold

        return JaxWorker(spec)
    return TorchWorker(spec)


def worker_main() -> None:
    """Protocol: one JSON command per stdin line; one `REPLY`-prefixed JSON line per command on stdout."""
    spec = json.loads(sys.stdin.readline())
    cpus = spec.get("cpus")
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)

    def reply(obj):
        sys.stdout.write(REPLY + json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        t0 = time.perf_counter()
        worker = make_worker(spec)
        reply({"ok": True, "setup_s": time.perf_counter() - t0, **rss_mb()})
    except Exception as e:  # reported to the parent, which records it and goes on without this side
        reply({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]})
        return
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            return
        try:
            reply(getattr(worker, cmd["cmd"])(*cmd.get("args", [])))
        except Exception as e:
            reply({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]})


class WorkerProcess:
    """The parent's handle on one worker: JSON lines over pipes, each call with a timeout."""

    def __init__(self, spec: dict[str, Any], env: dict[str, str], log_path: Path, timeout: float):
        self.name = spec["framework"]
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xlm_jax.bench", "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, text=True, env=env, bufsize=1,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        self.setup = self._wait(timeout)

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                self.lines.put(json.loads(line[len(REPLY):]))
        self.lines.put({"error": f"worker exited (code {self.proc.wait()}); see {self.log.name}"})

    def _wait(self, timeout: float) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            return {"error": f"timed out after {timeout:.0f} s"}

    def call(self, cmd: str, *args, timeout: float = 600.0) -> dict[str, Any]:
        if self.proc.poll() is not None:
            return {"error": f"worker exited (code {self.proc.returncode}); see {self.log.name}"}
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": list(args)}) + "\n")
        self.proc.stdin.flush()
        return self._wait(timeout)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------------------------------------ parent


@dataclasses.dataclass(frozen=True)
class RunSettings:
    steps: int
    repeats: int
    warmup: int
    device: str
    threads: int
    torch_compile: bool
    breakdown: bool
    sides: tuple[str, ...] = ("jax", "torch_eager", "torch_masked")  # in FRAMEWORKS' order; jax always first
    varlen: bool = False  # only the inference on variable-length batches (padded vs packed), no training
    seed: int = 0
    timeout: float = 900.0


def machine_info(threads: int) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "nproc": len(affinity) if affinity else os.cpu_count(), "cpu_count": os.cpu_count(), "cpu_model": model,
        "threads_per_side": threads, "platform": platform.platform(), "python": platform.python_version(),
        "numpy": np.__version__,
    }


_DEVICE_PROBE = """
import json
found = {}
try:
    import jax
    found["jax"] = sorted({f"{d.platform} ({d.device_kind})" for d in jax.devices()})
except Exception as e:  # a broken plugin is reported as what JAX found
    found["jax"] = [f"none ({type(e).__name__}: {e})"[:200]]
if NEED_TORCH:
    try:
        import torch
        found["torch"] = [f"cuda ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())] or ["cpu"]
    except Exception as e:
        found["torch"] = [f"none ({type(e).__name__}: {e})"[:200]]
print(json.dumps(found))
"""


def probe_devices(need_torch: bool, timeout: float = 120.0) -> dict[str, list[str]]:
    """The devices JAX (and, with `need_torch`, PyTorch) find on this machine, e.g. {"jax": ["cpu (cpu)"],
    "torch": ["cpu"]}: probed in a short child process with JAX_PLATFORMS unset, so that the parent never holds an
    accelerator (nor its preallocated memory) that the workers will need."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    code = _DEVICE_PROBE.replace("NEED_TORCH", str(bool(need_torch)))
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as e:
        return {"jax": [f"none (the device probe failed: {type(e).__name__})"]}


def missing_gpu(found: dict[str, list[str]]) -> list[str]:
    """The frameworks in `found` (from `probe_devices`) that have no GPU."""
    return [fw for fw, devices in found.items()
            if not any(d.startswith(("cuda", "gpu", "rocm")) for d in devices)]


def worker_env(framework: str, device: str, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    if framework == "jax":
        env["JAX_PLATFORMS"] = "cuda" if device == "gpu" else "cpu"
        flags = env.get("XLA_FLAGS", "")
        if device == "cpu" and "xla_cpu_multi_thread_eigen" not in flags:
            flags = (flags + " --xla_cpu_multi_thread_eigen=true").strip()
        env["XLA_FLAGS"] = flags
    else:
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_config(cfg: BenchConfig, settings: RunSettings, workdir: Path, log=print) -> dict[str, Any]:
    """Runs every side of one configuration; returns its JSON record."""
    cpus = sorted(os.sched_getaffinity(0))[: settings.threads] if hasattr(os, "sched_getaffinity") else None
    base = {
        "config": cfg.name, "model": to_dict(cfg.model), "batch": cfg.batch, "seq_len": cfg.seq_len,
        "layout": cfg.layout, "device": settings.device, "threads": settings.threads, "cpus": cpus, "seed": settings.seed,
        "max_steps": settings.steps * settings.repeats + settings.warmup + 1,
    }
    frameworks = list(settings.sides)
    weights = str(workdir / f"{cfg.name}_weights.npz")
    record = new_record(cfg, settings.seed, varlen=settings.varlen)
    workers: dict[str, WorkerProcess] = {}
    try:
        for fw in frameworks:
            spec = {**base, "framework": fw, "weights": weights if fw != "jax" else None}
            log(f"[{cfg.name}] starting {fw}")
            w = WorkerProcess(spec, worker_env(fw, settings.device, settings.threads),
                              workdir / f"{cfg.name}_{fw}.log", settings.timeout)
            entry = {"setup": w.setup, "error": w.setup.get("error")}
            record["frameworks"][fw] = entry
            if entry["error"]:
                log(f"[{cfg.name}] {fw} failed to start: {entry['error']}")
                w.close()
                continue
            workers[fw] = w
            check = w.call("export_weights", weights, timeout=settings.timeout) if fw == "jax" else \
                w.call("export_weights", "", timeout=settings.timeout)
            entry["eval_loss_same_weights"] = check.get("eval_loss")
            if settings.varlen:
                continue
            warm = w.call("warmup", settings.warmup, timeout=settings.timeout)
            entry["warmup"] = warm
            if warm.get("error"):
                entry["error"] = warm["error"]
                log(f"[{cfg.name}] {fw} warm-up failed: {warm['error']}")
                w.close()
                del workers[fw]
            else:
                log(f"[{cfg.name}] {fw} first step {warm['first_step_s']:.2f} s")

        (_run_varlen if settings.varlen else _run_training)(cfg.name, workers, record, settings, log)
    finally:
        for w in workers.values():
            w.close()
        Path(weights).unlink(missing_ok=True)
    derive(record)
    return record


def _run_training(name: str, workers: dict[str, WorkerProcess], record: dict[str, Any], settings: RunSettings,
                  log) -> None:
    """The training and inference timings: `train` then `infer` calls alternated between the workers over
    `repeats`, then memory and (with `settings.breakdown`) the per-part timings, raw into the record."""
    train: dict[str, list[float]] = {fw: [] for fw in workers}
    infer: dict[str, list[float]] = {fw: [] for fw in workers}
    names = list(workers)
    for r in range(settings.repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for fw in order:
            res = workers[fw].call("train", settings.steps, timeout=settings.timeout)
            if "step_s" in res:
                train[fw].append(res["step_s"])
                record["frameworks"][fw]["loss_last"] = res["loss"]
            else:
                record["frameworks"][fw]["error"] = res.get("error")
        log(f"[{name}] repeat {r + 1}/{settings.repeats}: " + ", ".join(
            f"{fw} {train[fw][-1] * 1e3:.1f} ms" for fw in order if train[fw]))
    for r in range(settings.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for fw in order:
            res = workers[fw].call("infer", settings.steps, timeout=settings.timeout)
            if "step_s" in res:
                infer[fw].append(res["step_s"])
                record["frameworks"][fw]["infer_first_step_s"] = res["first_step_s"]
    for fw, w in workers.items():
        record["frameworks"][fw]["memory"] = w.call("memory")
    if settings.breakdown:
        for fw in ("jax", "torch_eager", "torch_masked"):
            if fw in workers:
                log(f"[{name}] breakdown {fw}")
                record["frameworks"][fw]["breakdown_s"] = workers[fw].call(
                    "breakdown", settings.steps, timeout=settings.timeout)
    for fw in workers:
        entry = record["frameworks"][fw]
        entry["train_step_s_all"], entry["infer_step_s_all"] = train[fw], infer[fw]


def _run_varlen(name: str, workers: dict[str, WorkerProcess], record: dict[str, Any], settings: RunSettings,
                log) -> None:
    """`--varlen`: the workers' `varlen` passes (JAX: padded and packed; PyTorch: padded), alternated between the
    workers over `repeats`, `steps` passes each; raw seconds per pass into the record (`report.derive` takes the
    medians)."""
    names = list(workers)
    for r in range(settings.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for fw in order:
            res = workers[fw].call("varlen", settings.steps, timeout=settings.timeout)
            entry = record["frameworks"][fw]
            if res.get("error"):
                entry["error"] = res["error"]
                continue
            for key, value in res.items():
                if key in ("padded_s", "packed_s"):
                    entry.setdefault(f"varlen_{key}_all", []).append(value)
                else:
                    entry[f"varlen_{key}"] = value
        log(f"[{name}] varlen repeat {r + 1}/{settings.repeats}: " + ", ".join(
            f"{fw} {layout} {record['frameworks'][fw][f'varlen_{layout}_s_all'][-1]:.2f} s" for fw in order
            for layout in ("padded", "packed") if record["frameworks"][fw].get(f"varlen_{layout}_s_all")))
    for fw, w in workers.items():
        record["frameworks"][fw]["memory"] = w.call("memory")
