"""The JAX side of the bench: xlm_jax's real training step and a jitted forward-only encode, in a worker process.

Imported only by the JAX worker (`harness.make_worker`), so that jax stays out of the PyTorch workers' memory.
"""

from __future__ import annotations

import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from xlm_jax.bench.workload import (LR, TOTAL_STEPS, WARMUP_STEPS, hf_architecture, hf_labels, make_batch,
                                   per_sentence, rss_mb, spec_config, timed_loop, varlen_set, versions)
from xlm_jax.models import families, hf_families
from xlm_jax.models.config import from_dict
from xlm_jax.models.hf_mapping import params_to_hf
from xlm_jax.training import optim, sharding
from xlm_jax.training import step as step_lib
from xlm_jax.training.flops import peak_flops
from xlm_jax.training.objectives import cross_entropy, mlm_loss, summarize


class JaxWorker:
    """xlm_jax's real train step (T1's `make_train_step`) and a jitted forward-only encode."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        cfg = from_dict(spec["model"])
        if spec["device"] == "gpu":
            cfg = cfg.replace(dtype="bfloat16")  # params and optimizer state stay float32
        self.cfg = cfg
        device = jax.local_devices()[0]
        self.device = device
        self.mesh = sharding.make_mesh(sharding.MeshConfig(data=1), devices=[device])
        self.opt_cfg = optim.OptimizerConfig(lr=LR, warmup_steps=WARMUP_STEPS)
        self.tx = optim.make_optimizer(self.opt_cfg, TOTAL_STEPS)
        self.model = families.masked_lm(cfg)  # XLMForMaskedLM for the XLM families
        batch = make_batch(spec_config(spec), spec["seed"])
        self.np_batch = batch
        t0 = time.perf_counter()
        self.state, self.state_shardings = step_lib.init_state(cfg, self.tx, self.mesh, jax.random.key(spec["seed"]))
        jax.block_until_ready(self.state)
        self.init_s = time.perf_counter() - t0
        self.train_step = step_lib.make_train_step(cfg, self.tx, self.mesh, self.state_shardings, {"mlm": 1.0}, {"mlm": 1})
        self.batch = sharding.global_batch(self.mesh, {"mlm": batch})
        self.rngs = [jax.random.key(1000 + i) for i in range(spec["max_steps"])]
        self.peak_flops = peak_flops([device])
        self.step_index = 0

    def _params(self):
        return nn.unbox(self.state["params"])

    def export_weights(self, path: str) -> dict[str, Any]:
        if path:  # the PyTorch sides' masked LM (workload.hf_architecture) in transformers' names
            arch, module = hf_architecture(self.cfg), hf_families.module_for(self.cfg.family)
            to_hf = params_to_hf if module is None else module.params_to_hf
            np.savez(path, **to_hf(jax.device_get(self._params()), self.cfg, arch))
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
            jax.block_until_ready((self.state, metrics))
            times.append(time.perf_counter() - t0)
            losses.append(float(metrics["loss"]))
            self.step_index += 1
        return {"first_step_s": times[0], "warmup_times_s": times, "loss_first": losses[0], "init_s": self.init_s,
                "peak_flops": self.peak_flops,
                "device": str(self.device.device_kind), "versions": versions(("jax", "jaxlib", "flax", "optax"))}

    def train(self, steps: int) -> dict[str, Any]:
        box: dict[str, Any] = {}

        def one(_):
            self.state, box["metrics"] = self.train_step(self.state, self.batch,
                                                         self.rngs[self.step_index % len(self.rngs)])
            self.step_index += 1
            return self.state

        per_step = timed_loop(one, steps, jax.block_until_ready)
        return {"step_s": per_step, "loss": float(box["metrics"]["loss"])}

    def _encode_fn(self):
        if not hasattr(self, "_encode"):
            model = self.model

            def encode(params, ids, attention, segment_ids=None):
                return model.apply({"params": params}, ids, attention, segment_ids=segment_ids)

            self._encode = jax.jit(encode)
        return self._encode

    def infer(self, steps: int) -> dict[str, Any]:
        encode, params = self._encode_fn(), self._params()
        b = self.batch["mlm"]
        args = (params, b["input_ids"], b["attention_mask"], b.get("segment_ids"))
        t0 = time.perf_counter()
        jax.block_until_ready(encode(*args))
        first = time.perf_counter() - t0
        per_step = timed_loop(lambda _: encode(*args), steps, jax.block_until_ready)
        return {"step_s": per_step, "first_step_s": first}

    def varlen(self, passes: int) -> dict[str, Any]:
        """`--varlen`: seconds per pass over the whole `workload.varlen_set`, padded and packed (the model's packed
        path: segment ids, positions restarting per sentence, no attention across sentences), alternated (A B, then
        B A on the next call); the first call's first passes (one compile per padded shape) are reported apart.
        Also the largest |difference| between a sentence's hidden states in the two layouts, and their mean |h|
        over the real tokens of the padded batches (the PyTorch side reports the same figure)."""
        encode, params = self._encode_fn(), self._params()
        if not hasattr(self, "_varlen"):
            self._varlen = varlen_set(spec_config(self.spec), self.spec["seed"])
            self._varlen_calls = 0
        data = self._varlen
        args = {layout: [(params, jnp.asarray(b["input_ids"]), jnp.asarray(b["attention_mask"]),
                          jnp.asarray(b["segment_ids"]) if "segment_ids" in b else None) for b in data[layout]]
                for layout in ("padded", "packed")}
        out: dict[str, Any] = {}
        if not self._varlen_calls:
            hidden = {}
            for layout in ("padded", "packed"):
                t0 = time.perf_counter()
                hidden[layout] = [np.asarray(h, np.float32) for h in
                                  jax.block_until_ready([encode(*a) for a in args[layout]])]
                out[f"first_{layout}_s"] = time.perf_counter() - t0
            padded = per_sentence(hidden["padded"], data["padded_where"])
            packed = per_sentence(hidden["packed"], data["packed_where"])
            out["max_abs_diff_packed_padded"] = max(float(np.abs(a - b).max()) for a, b in zip(padded, packed))
            out["mean_abs_hidden"] = float(np.mean(np.abs(np.concatenate(padded))))
        order = ("padded", "packed") if self._varlen_calls % 2 == 0 else ("packed", "padded")
        self._varlen_calls += 1
        for layout in order:
            out[f"{layout}_s"] = timed_loop(lambda _: [encode(*a) for a in args[layout]], passes,
                                            jax.block_until_ready)
        return out

    def memory(self) -> dict[str, Any]:
        out = rss_mb()
        if self.spec["device"] == "gpu":
            stats = self.device.memory_stats() or {}
            out["device_peak_mb"] = stats.get("peak_bytes_in_use", float("nan")) / 2**20
        return out

    def breakdown(self, steps: int) -> dict[str, Any]:
        """Seconds per call of the step's parts, each jitted on its own (so sums need not equal the fused step)."""
        model, batch, params = self.model, self.batch["mlm"], self._params()
        key = jax.random.key(7)

        def full_logits_loss(p, b, rng):
            # HF's way: logits at every position, loss over the labelled ones.
            logits = model.apply({"params": p}, b["input_ids"], b["attention_mask"], b["positions"], b["langs"],
                                 deterministic=False, rngs={"dropout": rng}, segment_ids=b.get("segment_ids"),
                                 method="mlm_logits")
            labels = jnp.asarray(hf_labels(self.np_batch))
            weights = (labels >= 0).astype(jnp.float32)
            return summarize(cross_entropy(logits, jnp.maximum(labels, 0), weights))[0]

        def masked_loss(p, b, rng):
            return mlm_loss(model, p, b, rng)[0]

        def encoder(p, b, rng):
            return model.apply({"params": p}, b["input_ids"], b["attention_mask"], b["positions"], b["langs"],
                               deterministic=False, rngs={"dropout": rng}, segment_ids=b.get("segment_ids"))

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
            out[name] = timed_loop(lambda _: fn(*args), steps, jax.block_until_ready)
        return out
