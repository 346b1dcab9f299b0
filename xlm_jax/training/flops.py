"""Analytic training FLOPs, throughput and MFU: the one set of formulas for every command that reports throughput
(the trainer's metrics.jsonl, `python -m xlm_jax.bench`'s JSON, the experiments).

`batch_work` counts what a host batch holds (`Work`: input positions, real tokens, predicted tokens, FLOPs from
`model_flops_per_token`); `throughput` turns counts and seconds into rates and MFU against `peak_flops(devices)`
(dense bf16 peaks from vendor datasheets, or $XLM_JAX_PEAK_FLOPS). MFU comes from analytic model FLOPs (6·N per
token plus attention, MaxText's convention), never from XLA's hardware counters.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

import numpy as np

from xlm_jax.models.config import ModelConfig
from xlm_jax.core.errors import UserError


def prediction_count(objective: str, batch: dict) -> Any:
    """Number of predicted tokens in an objective's batch (the denominator of its mean loss), a float32 scalar of
    the batch's own array type: host numpy arrays (`batch_work`) or jax arrays and tracers (the step's loss
    normaliser, `xlm_jax.training.step`). CLM predicts the next real token (`attention_mask[:, 1:] > 0`); MLM and
    TLM the slots with `mlm_weights > 0` (the weights summed)."""
    if objective == "clm":
        return (batch["attention_mask"][:, 1:] > 0).sum().astype(np.float32)
    return batch["mlm_weights"].astype(np.float32).sum()


def model_flops_per_token(model_cfg: ModelConfig, seq_len: int, predicted_fraction: float) -> float:
    """Training FLOPs per input position (forward + backward = 3 x forward, 2 FLOPs per multiply-add), analytic:

        6 * L * (4 D^2 + 2 D F)                     dense matmuls of the layers (Q, K, V, out; MLP in and out)
      + 12 * L * T * D                              attention scores and weighted sum, bidirectional (full T x T)
      + 6 * p * (D V + [D^2 if lm_head_transform])  LM head, only at the predicted fraction p of positions

    L layers, D hidden, F MLP width, T seq_len, V vocab. Embedding lookups, biases, LayerNorm, softmax and GELU
    are not counted (MaxText's convention), so MFU is slightly conservative. p is the batch's predicted tokens
    over its B x T input positions (`batch_work` computes it): ~ mask_prob for full MLM rows, less for padded TLM
    rows (padding holds no prediction), more with the "ceil" count rule on short rows, (T-1)/T for full CLM rows.
    Every position of the [B, T] arrays pays the layer terms, padding included, as it does on the device.
    """
    d, f, layers, v = model_cfg.hidden_size, model_cfg.intermediate_size, model_cfg.num_layers, model_cfg.vocab_size
    dense = 6 * layers * (4 * d * d + 2 * d * f)
    attention = 12 * layers * seq_len * d
    head = 6 * predicted_fraction * (d * v + (d * d if model_cfg.lm_head_transform else 0))
    return float(dense + attention + head)


@dataclasses.dataclass(frozen=True)
class Work:
    """What one or more train steps computed, counted on the host batch (float, summed with `+`).

    tokens: input positions of the padded [B, T] arrays (what the device computes); real_tokens: positions that
    hold a real token (`real_token_count`: padding excluded, packed rows included); predicted: predicted tokens (the losses' denominators); flops: analytic
    training FLOPs (`model_flops_per_token` over every position, the LM head at the predicted ones)."""

    tokens: float = 0.0
    real_tokens: float = 0.0
    predicted: float = 0.0
    flops: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    @property
    def flops_per_token(self) -> float | None:
        """FLOPs per input position (padding included); None for no tokens."""
        return self.flops / self.tokens if self.tokens else None


def real_token_count(batch: dict, pad_id: int) -> float:
    """Positions of one objective's [B, T] batch that hold a real token, padding excluded: `segment_ids > 0` for
    packed rows (several examples per row, 0 = padding), else `attention_mask > 0`, else `input_ids != pad_id`."""
    for key in ("segment_ids", "attention_mask"):
        if key in batch:
            return float((np.asarray(batch[key]) > 0).sum())
    return float((np.asarray(batch["input_ids"]) != pad_id).sum())


def batch_work(model_cfg: ModelConfig, batch: dict[str, dict]) -> Work:
    """The `Work` of one step's batch {objective: {"input_ids": [B, T], "attention_mask": [B, T], ...}} (host
    numpy arrays, any rows: a process counts its own). Objectives may differ in B and T (TLM rows, token-budget
    buckets); each is credited B * T * model_flops_per_token(cfg, T, predicted / (B * T))."""
    total = Work()
    for objective, b in batch.items():
        rows, seq_len = np.shape(b["input_ids"])
        tokens = rows * seq_len
        predicted = float(prediction_count(objective, b))
        real = real_token_count(b, model_cfg.pad_token_id)
        flops = tokens * model_flops_per_token(model_cfg, seq_len, predicted / tokens) if tokens else 0.0
        total = total + Work(float(tokens), real, predicted, flops)
    return total


def padding_share(work: Work) -> float | None:
    """The share of the input slots that held padding, 1 - real_tokens / tokens, in [0, 1]; None for no tokens.
    A property of the batches alone (no timing), so a resumed run reports the same figures as an unbroken one."""
    return 1.0 - work.real_tokens / work.tokens if work.tokens else None


PEAK_ENV = "XLM_JAX_PEAK_FLOPS"

# Dense bf16 peak FLOP/s per device (vendor datasheets, no sparsity).
_PEAK_BF16 = (
    (r"H100.*PCIe", 756e12),
    (r"H100|H200|GH200", 989e12),
    (r"A100", 312e12),
    (r"TPU v4", 275e12),
    (r"TPU v5 ?lite|TPU v5e", 197e12),
    (r"TPU v5p|TPU v5$", 459e12),
    (r"TPU v6 ?lite|TPU v6e|Trillium", 918e12),
)


def peak_flops_override() -> float | None:
    """The peak FLOP/s per device declared in $XLM_JAX_PEAK_FLOPS (for a device missing from the table, or a
    CPU), None when unset. Raises UserError unless it is a finite positive number."""
    text = os.environ.get(PEAK_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{PEAK_ENV}={text!r}: expected a finite positive number of FLOP/s per device, "
                        "e.g. 989e12 (dense bf16 of an H100 SXM), or unset it")
    return value


def peak_flops_per_device(device) -> float | None:
    """Peak dense bf16 FLOP/s of a device from its `device_kind` ($XLM_JAX_PEAK_FLOPS wins); None when unknown
    (CPU, other GPUs)."""
    override = peak_flops_override()
    if override is not None:
        return override
    if getattr(device, "platform", "") == "cpu":
        return None
    kind = getattr(device, "device_kind", "")
    for pattern, flops in _PEAK_BF16:
        if re.search(pattern, kind, flags=re.IGNORECASE):
            return flops
    return None


def peak_flops(devices) -> float | None:
    """Summed peak FLOP/s of `devices` (all devices of the run), or None if any peak is unknown."""
    peaks = [peak_flops_per_device(d) for d in devices]
    if not peaks or any(p is None for p in peaks):
        return None
    return float(sum(peaks))


def mfu(tokens_per_second: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over `peak` (`peak_flops(devices)`), None if unknown."""
    if not peak:
        return None
    return tokens_per_second * flops_per_token / peak


def throughput(work: Work, seconds: float, n_devices: int, peak: float | None) -> dict[str, float | None]:
    """Rates of `work` done in `seconds` on `n_devices` devices whose summed peak is `peak` (or None):

    tokens_per_s (input slots of the padded [B, T] arrays), tokens_per_s_per_device, real_tokens_per_s (padding
    excluded), flops_per_token (analytic, per slot), tflops_per_s = tokens_per_s * flops_per_token / 1e12,
    tflops_per_s_per_device, mfu = tflops_per_s * 1e12 / peak. All None when nothing was timed."""
    fpt = work.flops_per_token
    if not (seconds > 0 and fpt is not None):
        return dict.fromkeys(("tokens_per_s", "tokens_per_s_per_device", "real_tokens_per_s", "flops_per_token",
                              "tflops_per_s", "tflops_per_s_per_device", "mfu"))
    tps = work.tokens / seconds
    tflops = tps * fpt / 1e12
    return {
        "tokens_per_s": tps,
        "tokens_per_s_per_device": tps / n_devices,
        "real_tokens_per_s": work.real_tokens / seconds,
        "flops_per_token": fpt,
        "tflops_per_s": tflops,
        "tflops_per_s_per_device": tflops / n_devices,
        "mfu": mfu(tps, fpt, peak),
    }