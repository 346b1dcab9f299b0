"""`python -m xlm_jax.bench`: the same MLM training step in xlm_jax and in Hugging Face PyTorch, side by side.

What is compared, per configuration (model shape, vocabulary, sequence length, batch):
- jax: xlm_jax's real training step (`xlm_jax.training.step.make_train_step` with `xlm_jax.training.optim.make_optimizer`): dropout
  on, AdamW (betas 0.9/0.98, eps 1e-6, wd 0.01, linear warm-up/decay), global-norm clip 1.0, the LM head applied
  only at the P masked positions (no B x T x V logits), state donated.
- torch_eager: `transformers.XLMRobertaForMaskedLM` as users train it: logits at every position, loss with
  labels = -100 outside the masked positions, `torch.optim.AdamW(fused=True)` (the HF Trainer default on
  torch >= 2.8) with the same hyperparameters and decay mask, `clip_grad_norm_(1.0)`, a linear schedule, SDPA
  attention; bf16 autocast on GPU.
- torch_masked: the same HF model, weights, fused AdamW, clipping and schedule, but the LM head applied only at the
  masked positions, as fairseq and NVIDIA's BERT train: the encoder's hidden states are gathered at the P_real
  predicted positions of the batch (`index_select`), projected by the model's own `lm_head`, and the loss is the
  mean cross-entropy there (the same value as HF's labels = -100 loss). PyTorch doing the same work as jax.
- torch_compile: torch_eager with `torch.compile(model)` (skipped with --smoke / --torch-compile off; a compile
  failure is caught and reported).

The batch is the same for every side: full-length rows `<s> ... </s>` of uniform random ids, masked by
`xlm_jax.data.masking.mask_tokens` (15 %, 80/10/10). Both sides start from the same weights (the JAX
initialisation exported through `xlm_jax.models.hf_mapping`), and the eval-mode loss of both on that batch is reported
as a check that they compute the same function.

Method: each side runs in its own long-lived worker process (so host-RSS peaks do not mix), pinned to the same
CPU set with the same thread count (torch.set_num_threads(n); XLA sizes its pool from the affinity mask).
After warm-up the parent alternates the workers, `repeats` times `steps` steps each, and reports medians;
while one worker runs the other blocks on its pipe. Figures: tokens/s (B x T per step), step time, first-step
(compile / warm-up) time, peak memory (VmHWM of the worker on CPU; device peak on GPU), model TFLOP/s and MFU
from the analytic training FLOPs of the batch (`xlm_jax.training.step.batch_work` / `throughput`, as the trainer reports
them: the LM head credited at the ~15 % predicted positions, the same useful work credited to both sides; HF's
extra full-vocabulary logits are not credited; MFU needs a known or declared peak, $XLM_JAX_PEAK_FLOPS),
inference (forward-only encode) throughput, and a breakdown of where the time goes (forward, forward + backward,
optimizer, LM head + loss share, and on the JAX side the cost of computing HF-style full logits).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from xlm_jax.models.config import ModelConfig, from_dict, get_model_config, to_dict
from xlm_jax.data.masking import MaskConfig, mask_tokens, noise_width
from xlm_jax.core.errors import ArgumentParser, UserError, exit_on_user_error, positive_int, unknown_name

REPLY = "@@BENCH "  # worker replies are the stdout lines with this prefix; anything else a library prints is ignored
ARCH = "XLMRobertaForMaskedLM"
FRAMEWORKS = ("jax", "torch_eager", "torch_masked", "torch_compile")
TORCH_SIDES = FRAMEWORKS[1:]
LR, WARMUP_STEPS, TOTAL_STEPS = 1e-4, 10, 100_000  # the same linear schedule on both sides


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    name: str
    model: ModelConfig
    batch: int
    seq_len: int
    devices: tuple[str, ...]  # where this configuration is run by default

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.seq_len


def _cfg(name: str, model: ModelConfig, batch: int, seq_len: int, devices: tuple[str, ...]) -> BenchConfig:
    return BenchConfig(name, model.replace(max_positions=max(model.max_positions, seq_len)), batch, seq_len, devices)


CONFIGS: dict[str, BenchConfig] = {
    c.name: c
    for c in (
        # XLM-R shaped (full 250,002 vocabulary) but CPU sized: the LM head dominates, as in the real models.
        _cfg("cpu_xlmr", get_model_config("xlmr_base", num_layers=4, hidden_size=256, num_heads=4,
                                          intermediate_size=1024), 16, 128, ("cpu",)),
        _cfg("tiny", get_model_config("xlmr_tiny"), 16, 128, ("cpu", "gpu")),
        _cfg("xlmr_base", get_model_config("xlmr_base"), 32, 512, ("gpu",)),
        _cfg("xlmr_large", get_model_config("xlmr_large"), 16, 512, ("gpu",)),
        # Seconds-long CI check of the whole pipeline.
        _cfg("smoke", get_model_config("xlmr_tiny", num_layers=1, hidden_size=32, num_heads=2,
                                       intermediate_size=64, vocab_size=200), 2, 32, ()),
    )
}


# --------------------------------------------------------------------------------------------- the batch


def make_batch(cfg: BenchConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """One MLM batch in the data contract's layout: full rows `<s> w... </s>`, masked 15 % (80/10/10)."""
    m = cfg.model
    rng = np.random.default_rng(seed)
    b, t = cfg.batch, cfg.seq_len
    ids = rng.integers(4, m.mask_id, size=(b, t), dtype=np.int64)
    ids[:, 0], ids[:, -1] = m.bos_token_id, m.eos_token_id
    attention = np.ones((b, t), np.int32)
    mask_cfg = MaskConfig(vocab_size=m.vocab_size, mask_id=m.mask_id)
    masked = mask_tokens(ids, attention, rng.random((b, noise_width(t, mask_cfg.mask_prob))), mask_cfg)
    return {
        "input_ids": masked["input_ids"],
        "attention_mask": attention,
        "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy(),
        "langs": np.zeros((b, t), np.int32),
        "mlm_positions": masked["mlm_positions"],
        "mlm_targets": masked["mlm_targets"],
        "mlm_weights": masked["mlm_weights"],
        "example_lang": np.zeros((b,), np.int32),
    }


def hf_labels(batch: dict[str, np.ndarray]) -> np.ndarray:
    """HF's MLM labels: the target at predicted positions, -100 (ignored) everywhere else."""
    labels = np.full(batch["input_ids"].shape, -100, np.int64)
    rows, slots = np.nonzero(batch["mlm_weights"] > 0)
    labels[rows, batch["mlm_positions"][rows, slots]] = batch["mlm_targets"][rows, slots]
    return labels


# ----------------------------------------------------------------------------------------------- workers


def _rss_mb() -> dict[str, float]:
    """Current and peak resident memory of this process (VmRSS / VmHWM), in MiB."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    except OSError:
        import resource

        out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rss_mb": out.get("VmRSS", float("nan")), "peak_rss_mb": out.get("VmHWM", float("nan"))}


def _timed_loop(run_one, steps: int, sync) -> float:
    """Mean seconds per call over `steps` back-to-back calls, synchronised once at the end (as a training loop
    runs: JAX dispatches asynchronously, so per-step synchronisation would understate it)."""
    start = time.perf_counter()
    out = None
    for i in range(steps):
        out = run_one(i)
    sync(out)
    return (time.perf_counter() - start) / steps


class JaxWorker:
    """xlm_jax's real train step (T1's `make_train_step`) and a jitted forward-only encode."""

    def __init__(self, spec: dict[str, Any]):
        import jax
        import jax.numpy as jnp

        from xlm_jax.training import optim
        from xlm_jax.training import sharding
        from xlm_jax.training import step as step_lib
        from xlm_jax.models.xlm import XLMForMaskedLM

        self.jax, self.jnp, self.spec = jax, jnp, spec
        cfg = from_dict(spec["model"])
        if spec["device"] == "gpu":
            cfg = cfg.replace(dtype="bfloat16")  # params and optimizer state stay float32
        self.cfg = cfg
        device = jax.local_devices()[0]
        self.device = device
        self.mesh = sharding.make_mesh(sharding.MeshConfig(data=1), devices=[device])
        self.opt_cfg = optim.OptimizerConfig(lr=LR, warmup_steps=WARMUP_STEPS)
        self.tx = optim.make_optimizer(self.opt_cfg, TOTAL_STEPS)
        self.model = XLMForMaskedLM(cfg)
        batch = make_batch(_bench_config(spec), spec["seed"])
        self.np_batch = batch
        t0 = time.perf_counter()
        self.state, self.state_shardings = step_lib.init_state(cfg, self.tx, self.mesh, jax.random.key(spec["seed"]))
        jax.block_until_ready(self.state)
        self.init_s = time.perf_counter() - t0
        self.train_step = step_lib.make_train_step(cfg, self.tx, self.mesh, self.state_shardings, {"mlm": 1.0}, {"mlm": 1})
        self.batch = sharding.global_batch(self.mesh, {"mlm": batch})
        self.rngs = [jax.random.key(1000 + i) for i in range(spec["max_steps"])]
        self.peak_flops = step_lib.peak_flops([device])
        self.step_index = 0

    def _params(self):
        import flax.linen as nn

        return nn.unbox(self.state["params"])

    def export_weights(self, path: str) -> dict[str, Any]:
        from xlm_jax.training import step as step_lib
        from xlm_jax.models.hf_mapping import params_to_hf

        params = self.jax.device_get(self._params())
        np.savez(path, **params_to_hf(params, self.cfg, ARCH))
        # Through the project's eval step (mesh + logical rules): a bare eager `apply` before the first train step
        # made the later trace of the train step fail inside flax (kernel_init_wrap's sharding constraint).
        sums = step_lib.make_eval_step(self.cfg, self.mesh, self.state_shardings)(self.state["params"],
                                                                                 self.batch["mlm"])
        return {"eval_loss": float(sums["loss_sum"] / sums["count"])}

    def warmup(self, steps: int) -> dict[str, Any]:
        times, losses = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            self.state, metrics = self.train_step(self.state, self.batch, self.rngs[self.step_index % len(self.rngs)])
            self.jax.block_until_ready((self.state, metrics))
            times.append(time.perf_counter() - t0)
            losses.append(float(metrics["loss"]))
            self.step_index += 1
        return {"first_step_s": times[0], "warmup_times_s": times, "loss_first": losses[0], "init_s": self.init_s,
                "peak_flops": self.peak_flops,
                "device": str(self.device.device_kind), "versions": _versions(("jax", "jaxlib", "flax", "optax"))}

    def train(self, steps: int) -> dict[str, Any]:
        box: dict[str, Any] = {}

        def one(_):
            self.state, box["metrics"] = self.train_step(self.state, self.batch,
                                                         self.rngs[self.step_index % len(self.rngs)])
            self.step_index += 1
            return self.state

        per_step = _timed_loop(one, steps, self.jax.block_until_ready)
        return {"step_s": per_step, "loss": float(box["metrics"]["loss"])}

    def _encode_fn(self):
        if not hasattr(self, "_encode"):
            model = self.model

            def encode(params, ids, attention):
                return model.apply({"params": params}, ids, attention)

            self._encode = self.jax.jit(encode)
        return self._encode

    def infer(self, steps: int) -> dict[str, Any]:
        encode, params = self._encode_fn(), self._params()
        ids, attention = self.batch["mlm"]["input_ids"], self.batch["mlm"]["attention_mask"]
        t0 = time.perf_counter()
        self.jax.block_until_ready(encode(params, ids, attention))
        first = time.perf_counter() - t0
        per_step = _timed_loop(lambda _: encode(params, ids, attention), steps, self.jax.block_until_ready)
        return {"step_s": per_step, "first_step_s": first}

    def memory(self) -> dict[str, Any]:
        out = _rss_mb()
        if self.spec["device"] == "gpu":
            stats = self.device.memory_stats() or {}
            out["device_peak_mb"] = stats.get("peak_bytes_in_use", float("nan")) / 2**20
        return out

    def breakdown(self, steps: int) -> dict[str, Any]:
        """Seconds per call of the step's parts, each jitted on its own (so sums need not equal the fused step)."""
        jax, jnp = self.jax, self.jnp
        import optax

        from xlm_jax.training.objectives import cross_entropy, mlm_loss, summarize
        from xlm_jax.models.xlm import XLMForMaskedLM

        model, batch, params = self.model, self.batch["mlm"], self._params()
        key = jax.random.key(7)

        def full_logits_loss(p, b, rng):
            # HF's way: logits at every position, loss over the labelled ones.
            logits = model.apply({"params": p}, b["input_ids"], b["attention_mask"], b["positions"], b["langs"],
                                 deterministic=False, rngs={"dropout": rng}, method=XLMForMaskedLM.mlm_logits)
            labels = jnp.asarray(hf_labels(self.np_batch))
            weights = (labels >= 0).astype(jnp.float32)
            return summarize(cross_entropy(logits, jnp.maximum(labels, 0), weights))[0]

        def masked_loss(p, b, rng):
            return mlm_loss(model, p, b, rng)[0]

        def encoder(p, b, rng):
            return model.apply({"params": p}, b["input_ids"], b["attention_mask"], b["positions"], b["langs"],
                               deterministic=False, rngs={"dropout": rng})

        grads = jax.jit(jax.grad(masked_loss))(params, batch, key)
        opt_state = self.state["opt_state"]

        def update(g, s, p):
            updates, s = self.tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        parts = {
            "encoder_forward": (jax.jit(encoder), (params, batch, key)),
            "forward_loss": (jax.jit(masked_loss), (params, batch, key)),
            "forward_backward": (jax.jit(jax.value_and_grad(masked_loss)), (params, batch, key)),
            "optimizer_update": (jax.jit(update), (grads, opt_state, params)),
            "forward_backward_full_logits": (jax.jit(jax.value_and_grad(full_logits_loss)), (params, batch, key)),
        }
        out = {}
        for name, (fn, args) in parts.items():
            jax.block_until_ready(fn(*args))  # compile
            out[name] = _timed_loop(lambda _: fn(*args), steps, jax.block_until_ready)
        return out


class TorchWorker:
    """transformers' XLMRobertaForMaskedLM trained the way the HF Trainer does it (eager or torch.compile)."""

    def __init__(self, spec: dict[str, Any]):
        import torch
        import transformers

        from xlm_jax.models.hf_mapping import model_config_to_hf_config

        self.torch, self.spec = torch, spec
        torch.set_num_threads(spec["threads"])
        torch.manual_seed(spec["seed"])
        gpu = spec["device"] == "gpu"
        self.dev = torch.device("cuda" if gpu else "cpu")
        cfg = from_dict(spec["model"])
        hf_cfg = model_config_to_hf_config(cfg, ARCH)
        hf_cfg.pop("architectures")
        hf_cfg.pop("model_type")
        config = transformers.XLMRobertaConfig(**hf_cfg, attn_implementation="sdpa")
        t0 = time.perf_counter()
        self.model = transformers.XLMRobertaForMaskedLM(config)
        weights = spec.get("weights")
        if weights:
            with np.load(weights) as f:
                state = {k: torch.from_numpy(f[k]) for k in f.files}
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            self.load_report = {"missing": list(missing), "unexpected": list(unexpected)}
        else:
            self.load_report = None
        self.model.to(self.dev).train()
        self.init_s = time.perf_counter() - t0
        np_batch = make_batch(_bench_config(spec), spec["seed"])
        self.inputs = {
            "input_ids": torch.from_numpy(np_batch["input_ids"].astype(np.int64)).to(self.dev),
            "attention_mask": torch.from_numpy(np_batch["attention_mask"].astype(np.int64)).to(self.dev),
            "labels": torch.from_numpy(hf_labels(np_batch)).to(self.dev),
        }
        # torch_masked: the flat [B * T] indices of the predicted positions and their targets (fairseq's
        # `masked_tokens`); only these rows of the hidden states reach the LM head.
        rows, slots = np.nonzero(np_batch["mlm_weights"] > 0)
        flat = rows * np_batch["input_ids"].shape[1] + np_batch["mlm_positions"][rows, slots]
        self.masked_index = torch.from_numpy(flat.astype(np.int64)).to(self.dev)
        self.masked_targets = torch.from_numpy(np_batch["mlm_targets"][rows, slots].astype(np.int64)).to(self.dev)
        self.masked_head = spec["framework"] == "torch_masked"
        # The decay mask of xlm_jax.training.optim (no decay for biases, LayerNorm, position table), in HF names.
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            skip = name.endswith("bias") or "LayerNorm" in name or "position_embeddings" in name
            (no_decay if skip else decay).append(p)
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
            lr=LR, betas=(0.9, 0.98), eps=1e-6, fused=True,
        )
        self.sched = transformers.get_linear_schedule_with_warmup(self.opt, WARMUP_STEPS, TOTAL_STEPS)
        self.forward_model = torch.compile(self.model) if spec["framework"] == "torch_compile" else self.model
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if gpu else (
            lambda: torch.autocast("cpu", enabled=False))

    def _sync(self, _=None):
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()

    def _forward(self, model=None):
        model = model or self.forward_model
        with self.autocast():
            if not self.masked_head:
                return model(**self.inputs).loss
            hidden = model.roberta(input_ids=self.inputs["input_ids"],
                                   attention_mask=self.inputs["attention_mask"]).last_hidden_state
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, self.masked_index)
            logits = model.lm_head(hidden)
            return self.torch.nn.functional.cross_entropy(logits.float(), self.masked_targets)

    def _optimizer(self):
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)

    def _step(self, _=None):
        loss = self._forward()
        loss.backward()
        self._optimizer()
        return loss

    def export_weights(self, path: str) -> dict[str, Any]:
        self.model.eval()
        with self.torch.no_grad():
            loss = self._forward(self.model)
        self.model.train()
        return {"eval_loss": float(loss), "load_report": self.load_report}

    def warmup(self, steps: int) -> dict[str, Any]:
        times, losses = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = self._step()
            self._sync()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))
        device = self.torch.cuda.get_device_name() if self.dev.type == "cuda" else "cpu"
        return {"first_step_s": times[0], "warmup_times_s": times, "loss_first": losses[0], "init_s": self.init_s,
                "device": device, "threads": self.torch.get_num_threads(),
                "versions": _versions(("torch", "transformers"))}

    def train(self, steps: int) -> dict[str, Any]:
        box = {}

        def one(i):
            box["loss"] = self._step()
            return box["loss"]

        per_step = _timed_loop(one, steps, self._sync)
        return {"step_s": per_step, "loss": float(box["loss"])}

    def infer(self, steps: int) -> dict[str, Any]:
        torch = self.torch
        encoder = self.model.roberta
        ids, attention = self.inputs["input_ids"], self.inputs["attention_mask"]
        encoder.eval()

        def one(_):
            with torch.inference_mode(), self.autocast():
                return encoder(input_ids=ids, attention_mask=attention).last_hidden_state

        t0 = time.perf_counter()
        one(0)
        self._sync()
        first = time.perf_counter() - t0
        per_step = _timed_loop(one, steps, self._sync)
        encoder.train()
        return {"step_s": per_step, "first_step_s": first}

    def memory(self) -> dict[str, Any]:
        out = _rss_mb()
        if self.dev.type == "cuda":
            out["device_peak_mb"] = self.torch.cuda.max_memory_allocated() / 2**20
        return out

    def breakdown(self, steps: int) -> dict[str, Any]:
        ids, attention = self.inputs["input_ids"], self.inputs["attention_mask"]

        def encoder(_):
            with self.autocast():
                return self.model.roberta(input_ids=ids, attention_mask=attention).last_hidden_state

        def forward_backward(_):
            loss = self._forward()
            loss.backward()
            self.opt.zero_grad(set_to_none=True)
            return loss

        def optimizer(_):
            self._optimizer()

        out = {
            "encoder_forward": _timed_loop(encoder, steps, self._sync),
            "forward_loss": _timed_loop(lambda _: self._forward(), steps, self._sync),
            "forward_backward": _timed_loop(forward_backward, steps, self._sync),
        }
        # The optimizer alone: gradients from an untimed backward before each timed update.
        total = 0.0
        for _ in range(steps):
            self._forward().backward()
            self._sync()
            t0 = time.perf_counter()
            optimizer(None)
            self._sync()
            total += time.perf_counter() - t0
        out["optimizer_update"] = total / steps
        return out


def _bench_config(spec: dict[str, Any]) -> BenchConfig:
    return BenchConfig(spec["config"], from_dict(spec["model"]), spec["batch"], spec["seq_len"], ())


def _versions(names) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


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
        worker = JaxWorker(spec) if spec["framework"] == "jax" else TorchWorker(spec)
        reply({"ok": True, "setup_s": time.perf_counter() - t0, **_rss_mb()})
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


def _worker_env(framework: str, device: str, threads: int) -> dict[str, str]:
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


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def run_config(cfg: BenchConfig, settings: RunSettings, workdir: Path, log=print) -> dict[str, Any]:
    """Runs every side of one configuration; returns its JSON record."""
    cpus = sorted(os.sched_getaffinity(0))[: settings.threads] if hasattr(os, "sched_getaffinity") else None
    base = {
        "config": cfg.name, "model": to_dict(cfg.model), "batch": cfg.batch, "seq_len": cfg.seq_len,
        "device": settings.device, "threads": settings.threads, "cpus": cpus, "seed": settings.seed,
        "max_steps": settings.steps * settings.repeats + settings.warmup + 1,
    }
    frameworks = list(settings.sides)
    weights = str(workdir / f"{cfg.name}_weights.npz")
    record = new_record(cfg, settings.seed)
    workers: dict[str, WorkerProcess] = {}
    try:
        for fw in frameworks:
            spec = {**base, "framework": fw, "weights": weights if fw != "jax" else None}
            log(f"[{cfg.name}] starting {fw}")
            w = WorkerProcess(spec, _worker_env(fw, settings.device, settings.threads),
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
            warm = w.call("warmup", settings.warmup, timeout=settings.timeout)
            entry["warmup"] = warm
            if warm.get("error"):
                entry["error"] = warm["error"]
                log(f"[{cfg.name}] {fw} warm-up failed: {warm['error']}")
                w.close()
                del workers[fw]
            else:
                log(f"[{cfg.name}] {fw} first step {warm['first_step_s']:.2f} s")

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
            log(f"[{cfg.name}] repeat {r + 1}/{settings.repeats}: " + ", ".join(
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
                    log(f"[{cfg.name}] breakdown {fw}")
                    record["frameworks"][fw]["breakdown_s"] = workers[fw].call(
                        "breakdown", settings.steps, timeout=settings.timeout)
        for fw in workers:
            entry = record["frameworks"][fw]
            entry["train_step_s_all"], entry["infer_step_s_all"] = train[fw], infer[fw]
    finally:
        for w in workers.values():
            w.close()
        Path(weights).unlink(missing_ok=True)
    _derive(record)
    return record


def new_record(cfg: BenchConfig, seed: int) -> dict[str, Any]:
    """The JSON record of one configuration before any timing: shapes and the work of its batch (the same batch
    for every side), counted by `xlm_jax.training.step.batch_work` as the trainer counts its own."""
    from xlm_jax.training.step import batch_work

    work = batch_work(cfg.model, {"mlm": make_batch(cfg, seed)})
    return {"config": cfg.name, "model": to_dict(cfg.model), "batch": cfg.batch, "seq_len": cfg.seq_len,
            "tokens_per_step": cfg.tokens_per_step, "real_tokens_per_step": work.real_tokens,
            "predicted_tokens_per_step": work.predicted, "flops_per_step": work.flops,
            "flops_per_token": work.flops_per_token, "frameworks": {}}


def _derive(record: dict[str, Any]) -> None:
    """Medians, tokens/s, TFLOP/s, MFU and ratios from the raw timings (`xlm_jax.training.step.throughput`, the trainer's
    formulas: the same useful work is credited to every side, against the JAX worker's device peak)."""
    from xlm_jax.training.step import Work, throughput

    tokens = record["tokens_per_step"]
    work = Work(tokens=tokens, real_tokens=record["real_tokens_per_step"],
                predicted=record["predicted_tokens_per_step"], flops=record["flops_per_step"])
    fws = record["frameworks"]
    peak = fws.get("jax", {}).get("warmup", {}).get("peak_flops")
    record["peak_flops_per_device"] = peak
    for entry in fws.values():
        step = _median(entry.get("train_step_s_all", []))
        inf = _median(entry.get("infer_step_s_all", []))
        entry["train_step_s"] = step
        rates = throughput(work, step or 0.0, 1, peak)
        entry["train_tokens_per_s"] = rates["tokens_per_s"]
        entry["infer_step_s"] = inf
        entry["infer_tokens_per_s"] = tokens / inf if inf else None
        entry["first_step_s"] = entry.get("warmup", {}).get("first_step_s")
        entry["model_tflops_per_s"] = rates["tflops_per_s"]
        entry["mfu"] = rates["mfu"]
    ratios = {}
    jax_entry = fws.get("jax", {})
    for fw in TORCH_SIDES:
        other = fws.get(fw, {})
        for kind in ("train", "infer"):
            a, b = jax_entry.get(f"{kind}_tokens_per_s"), other.get(f"{kind}_tokens_per_s")
            ratios[f"{kind}_jax_over_{fw}"] = a / b if a and b else None
    record["ratio"] = ratios
    losses = {fw: e.get("eval_loss_same_weights") for fw, e in fws.items()}
    record["eval_loss_same_weights"] = losses


DESCRIPTIONS = {
    "jax": "xlm_jax train step: LM head at the P masked positions only, optax AdamW+clip, donated state, jit",
    "torch_eager": "HF XLMRobertaForMaskedLM: logits at all B*T positions, labels=-100 elsewhere, fused AdamW+clip, SDPA",
    "torch_masked": "the same HF model, fused AdamW+clip, SDPA, but its lm_head only at the predicted positions "
                    "(fairseq / NVIDIA)",
    "torch_compile": "as torch_eager with torch.compile(model)",
}


def _fmt(x, spec: str, scale: float = 1.0) -> str:
    return "-" if x is None else format(x * scale, spec)


def format_table(results: list[dict[str, Any]]) -> str:
    head = (f"{'config':<11} {'side':<14} {'train tok/s':>11} {'step ms':>9} {'first s':>8} {'peak MiB':>9} "
            f"{'TFLOP/s':>8} {'MFU':>6} {'infer tok/s':>12} {'eval loss':>9}")
    lines = [head, "-" * len(head)]
    for rec in results:
        for fw, e in rec["frameworks"].items():
            mem = e.get("memory", {})
            peak = mem.get("device_peak_mb", mem.get("peak_rss_mb"))
            if e.get("error") and not e.get("train_tokens_per_s"):
                lines.append(f"{rec['config']:<11} {fw:<14} error: {e['error'][:80]}")
                continue
            lines.append(
                f"{rec['config']:<11} {fw:<14} {_fmt(e['train_tokens_per_s'], ',.0f'):>11} "
                f"{_fmt(e['train_step_s'], '.1f', 1e3):>9} {_fmt(e['first_step_s'], '.2f'):>8} "
                f"{_fmt(peak, ',.0f'):>9} {_fmt(e['model_tflops_per_s'], '.3f'):>8} {_fmt(e['mfu'], '.1%'):>6} "
                f"{_fmt(e['infer_tokens_per_s'], ',.0f'):>12} {_fmt(e.get('eval_loss_same_weights'), '.4f'):>9}"
            )
        r = rec["ratio"]
        lines.append(f"{'':<11} ratio jax/torch_eager: train {_fmt(r.get('train_jax_over_torch_eager'), '.2f')}x, "
                     f"inference {_fmt(r.get('infer_jax_over_torch_eager'), '.2f')}x; jax/torch_masked (the same "
                     f"work): train {_fmt(r.get('train_jax_over_torch_masked'), '.2f')}x; jax/torch_compile: train "
                     f"{_fmt(r.get('train_jax_over_torch_compile'), '.2f')}x")
        for fw in ("jax", "torch_eager", "torch_masked"):
            b = rec["frameworks"].get(fw, {}).get("breakdown_s")
            if b and "error" not in b:
                step = rec["frameworks"][fw]["train_step_s"] or float("nan")
                parts = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in b.items())
                head_share = (b["forward_loss"] - b["encoder_forward"]) / b["forward_loss"]
                lines.append(f"{'':<11} breakdown {fw} (ms; step {step * 1e3:.1f}): {parts}; "
                             f"LM head + loss = {head_share:.0%} of the forward")
    lines.append("")
    lines += [f"{fw}: {d}" for fw, d in DESCRIPTIONS.items()]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(3.6 * len(results) + 1, 6.5), squeeze=False)
    colors = {"jax": "#1f77b4", "torch_eager": "#ff7f0e", "torch_masked": "#9467bd", "torch_compile": "#2ca02c"}
    for col, rec in enumerate(results):
        for row, kind in enumerate(("train", "infer")):
            ax = axes[row][col]
            names = [fw for fw in rec["frameworks"] if rec["frameworks"][fw].get(f"{kind}_tokens_per_s")]
            values = [rec["frameworks"][fw][f"{kind}_tokens_per_s"] for fw in names]
            bars = ax.bar(names, values, color=[colors[n] for n in names])
            ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
            ax.set_title(f"{rec['config']} — {'training step' if kind == 'train' else 'inference (encode)'}",
                         fontsize=9)
            ax.set_ylabel("tokens / s")
            ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("xlm_jax vs HF transformers: MLM tokens/s (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def parse_sides(text: str | None, torch_compile: str, smoke: bool) -> tuple[str, ...]:
    """The sides to run, in FRAMEWORKS' order. `text` None: jax, torch_eager, torch_masked, plus torch_compile when
    `torch_compile` is "on", or "auto" without `smoke`. Raises UserError for an unknown, repeated or empty name, a
    list without jax, or torch_compile listed with --torch-compile off."""
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
    return tuple(fw for fw in FRAMEWORKS if fw in names)


def _main(args: argparse.Namespace, argv: list[str]) -> int:
    from xlm_jax.core import outputs

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
    from xlm_jax.training.step import peak_flops_override

    peak_flops_override()  # a bad $XLM_JAX_PEAK_FLOPS stops here, before any worker starts
    sides = parse_sides(args.sides, args.torch_compile, args.smoke)
    settings = RunSettings(steps=steps, repeats=repeats, warmup=warmup, device=args.device, threads=threads,
                           torch_compile="torch_compile" in sides, breakdown=not (args.no_breakdown or args.smoke),
                           sides=sides)
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
        "versions": _versions(("jax", "jaxlib", "flax", "optax", "torch", "transformers")),
        "descriptions": DESCRIPTIONS, "results": results,
    }
    print(format_table(results))
    if out_dir:
        outputs.atomic_write_text(out_dir / "bench.json", json.dumps(report, indent=2, default=_json_default))
        plot(results, out_dir / "bench.png")
        print(f"wrote {out_dir / 'bench.json'} and {out_dir / 'bench.png'}")
    failed = [f"{r['config']}/{fw}" for r in results for fw in settings.sides if fw != "torch_compile"
              if not r["frameworks"].get(fw, {}).get("train_tokens_per_s")]
    if failed:
        print(f"error: no timing for {', '.join(failed)} (see the logs)", file=sys.stderr)
        return 1
    return 0


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


if __name__ == "__main__":
    sys.exit(main())
