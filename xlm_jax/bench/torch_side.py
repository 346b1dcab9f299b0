"""The PyTorch side of the bench: transformers' XLMRobertaForMaskedLM (ModernBertForMaskedLM / EuroBertForMaskedLM
for those families: `workload.hf_architecture`) trained as the HF Trainer does (torch_eager,
torch_compile) or with its LM head at the masked positions only (torch_masked), in a worker process.

torch and transformers are imported only when a `TorchWorker` is built: importing this module loads neither.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from xlm_jax.bench.workload import (LR, TOTAL_STEPS, WARMUP_STEPS, hf_architecture, hf_labels, make_batch,
                                   per_sentence, rss_mb, spec_config, timed_loop, varlen_set, versions)
from xlm_jax.models import hf_families
from xlm_jax.models.config import from_dict
from xlm_jax.models.hf_mapping import model_config_to_hf_config


class TorchWorker:
    """transformers' XLMRobertaForMaskedLM trained the way the HF Trainer does it (eager or torch.compile)."""

    def __init__(self, spec: dict[str, Any]):
        # Deferred: torch is only for this worker (the core never imports it; tests/test_core_imports.py).
        import torch
        import transformers

        self.torch, self.spec = torch, spec
        torch.set_num_threads(spec["threads"])
        torch.manual_seed(spec["seed"])
        gpu = spec["device"] == "gpu"
        self.dev = torch.device("cuda" if gpu else "cpu")
        cfg = from_dict(spec["model"])
        arch, module = hf_architecture(cfg), hf_families.module_for(cfg.family)
        hf_cfg = (model_config_to_hf_config if module is None else module.model_config_to_hf_config)(cfg, arch)
        hf_cfg.pop("architectures")
        model_type = hf_cfg.pop("model_type")
        config = transformers.AutoConfig.for_model(model_type, **hf_cfg, attn_implementation="sdpa")
        t0 = time.perf_counter()
        self.model = getattr(transformers, arch)(config)
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
        np_batch = make_batch(spec_config(spec), spec["seed"])
        self.inputs = {
            "input_ids": torch.from_numpy(np_batch["input_ids"].astype(np.int64)).to(self.dev),
            "attention_mask": torch.from_numpy(np_batch["attention_mask"].astype(np.int64)).to(self.dev),
            "labels": torch.from_numpy(hf_labels(np_batch)).to(self.dev),
        }
        if "segment_ids" in np_batch and module is not None:
            raise ValueError(f"the packed layout has no PyTorch side for {arch} (its 4-D mask path is not tested "
                             "here); run --sides jax")
        if "segment_ids" in np_batch:
            # Packed rows: HF takes a ready 4-D boolean mask [B, 1, T, T] as is (True = may attend; block-diagonal,
            # as xlm_jax.models.xlm.segment_mask) and explicit position ids restarting per example (XLM-R's rows of
            # the position table: padding_idx + 1 + p, padding_idx on padding).
            seg = torch.from_numpy(np_batch["segment_ids"]).to(self.dev)
            self.inputs["attention_mask"] = (seg[:, :, None] == seg[:, None, :])[:, None]
            pad = cfg.pad_token_id
            rows = np.where(np_batch["attention_mask"] > 0, np_batch["positions"] + pad + 1, pad)
            self.inputs["position_ids"] = torch.from_numpy(rows.astype(np.int64)).to(self.dev)
        self.encoder_inputs = {k: v for k, v in self.inputs.items() if k != "labels"}
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
            skip = name.endswith("bias") or "norm" in name.lower() or "position_embeddings" in name
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
            hidden = model.base_model(**self.encoder_inputs).last_hidden_state
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, self.masked_index)
            logits = self._lm_head(model, hidden)
            return self.torch.nn.functional.cross_entropy(logits.float(), self.masked_targets)

    @staticmethod
    def _lm_head(model, hidden):
        # XLM-R and EuroBERT: lm_head; ModernBERT: head (dense -> act -> norm) then decoder.
        return model.lm_head(hidden) if hasattr(model, "lm_head") else model.decoder(model.head(hidden))

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
                "versions": versions(("torch", "transformers"))}

    def train(self, steps: int) -> dict[str, Any]:
        box = {}

        def one(i):
            box["loss"] = self._step()
            return box["loss"]

        per_step = timed_loop(one, steps, self._sync)
        return {"step_s": per_step, "loss": float(box["loss"])}

    def infer(self, steps: int) -> dict[str, Any]:
        torch = self.torch
        encoder = self.model.base_model
        encoder.eval()

        def one(_):
            with torch.inference_mode(), self.autocast():
                return encoder(**self.encoder_inputs).last_hidden_state

        t0 = time.perf_counter()
        one(0)
        self._sync()
        first = time.perf_counter() - t0
        per_step = timed_loop(one, steps, self._sync)
        encoder.train()
        return {"step_s": per_step, "first_step_s": first}

    def varlen(self, passes: int) -> dict[str, Any]:
        """`--varlen`: the padded batches of `workload.varlen_set` through the encoder (`base_model`: ModernBertModel
        / XLMRobertaModel, SDPA, inference mode), seconds per pass; on the first call also the first pass's time and
        the mean |h| over the real tokens (the JAX side's check figure)."""
        torch = self.torch
        if not hasattr(self, "_varlen"):
            data = varlen_set(spec_config(self.spec), self.spec["seed"])
            self._varlen = ([{k: torch.from_numpy(v.astype(np.int64)).to(self.dev) for k, v in b.items()}
                             for b in data["padded"]], data["padded_where"])
            self._varlen_first = True
        batches, where = self._varlen
        encoder = self.model.base_model
        encoder.eval()

        def one(_):
            with torch.inference_mode(), self.autocast():
                return [encoder(**b).last_hidden_state for b in batches]

        out: dict[str, Any] = {}
        if self._varlen_first:
            t0 = time.perf_counter()
            hidden = one(0)
            self._sync()
            out["first_padded_s"] = time.perf_counter() - t0
            hidden = [h.float().cpu().numpy() for h in hidden]
            out["mean_abs_hidden"] = float(np.mean(np.abs(np.concatenate(per_sentence(hidden, where)))))
            self._varlen_first = False
        out["padded_s"] = timed_loop(one, passes, self._sync)
        encoder.train()
        return out

    def memory(self) -> dict[str, Any]:
        out = rss_mb()
        if self.dev.type == "cuda":
            out["device_peak_mb"] = self.torch.cuda.max_memory_allocated() / 2**20
        return out

    def breakdown(self, steps: int) -> dict[str, Any]:
        def encoder(_):
            with self.autocast():
                return self.model.base_model(**self.encoder_inputs).last_hidden_state

        def forward_backward(_):
            loss = self._forward()
            loss.backward()
            self.opt.zero_grad(set_to_none=True)
            return loss

        def optimizer(_):
            self._optimizer()

        out = {
            "encoder_forward": timed_loop(encoder, steps, self._sync),
            "forward_loss": timed_loop(lambda _: self._forward(), steps, self._sync),
            "forward_backward": timed_loop(forward_backward, steps, self._sync),
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
