"""The bench's figures: the JSON record of a configuration, the figures derived from its raw timings (medians,
tokens/s, TFLOP/s and MFU by `xlm_jax.training.flops`, ratios), the printed table and the plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from xlm_jax.bench.workload import CONFIGS, TORCH_SIDES, BenchConfig, hf_architecture, make_batch, varlen_set
from xlm_jax.models.config import to_dict
from xlm_jax.training.flops import Work, batch_work, throughput


def new_record(cfg: BenchConfig, seed: int, varlen: bool = False) -> dict[str, Any]:
    """The JSON record of one configuration before any timing: shapes and the work of its batch (the same batch
    for every side), counted by `xlm_jax.training.flops.batch_work` as the trainer counts its own; with `varlen`,
    also the sizes of `workload.varlen_set` (sentences, real tokens, slots and padding share of each layout)."""
    work = batch_work(cfg.model, {"mlm": make_batch(cfg, seed)})
    record = {"config": cfg.name, "model": to_dict(cfg.model), "batch": cfg.batch, "seq_len": cfg.seq_len,
              "layout": cfg.layout,
              "tokens_per_step": cfg.tokens_per_step, "real_tokens_per_step": work.real_tokens,
              "predicted_tokens_per_step": work.predicted, "flops_per_step": work.flops,
              "flops_per_token": work.flops_per_token, "frameworks": {}}
    if varlen:
        data = varlen_set(cfg, seed)
        record["varlen"] = {key: data[key] for key in ("sentences", "real_tokens", "padded_slots", "packed_slots")}
        for layout in VARLEN_LAYOUTS:
            record["varlen"][f"{layout}_batches"] = len(data[layout])
            record["varlen"][f"{layout}_padding_share"] = 1 - data["real_tokens"] / data[f"{layout}_slots"]
    return record


def derive(record: dict[str, Any]) -> None:
    """Medians, tokens/s, TFLOP/s, MFU and ratios from the raw timings (`xlm_jax.training.flops.throughput`, the
    trainer's formulas: the same useful work is credited to every side, against the JAX worker's device peak)."""
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
    if "varlen" in record:
        real = record["varlen"]["real_tokens"]
        for entry in fws.values():
            for layout in VARLEN_LAYOUTS:
                seconds = _median(entry.get(f"varlen_{layout}_s_all", []))
                entry[f"varlen_{layout}_s"] = seconds
                entry[f"varlen_{layout}_tokens_per_s"] = real / seconds if seconds else None  # real (non-pad) tokens
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


VARLEN_LAYOUTS = ("padded", "packed")


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def describe(configs: list[str], sides: tuple[str, ...], varlen: bool = False) -> dict[str, str]:
    """What each side of a run did, one line a side, naming the transformers classes of `configs` (the models
    the PyTorch sides built: XLMRobertaForMaskedLM, ModernBertForMaskedLM, ...; with `varlen`, their base models)."""
    masked = sorted({hf_architecture(CONFIGS[c].model) for c in configs if c in CONFIGS}) or ["XLMRobertaForMaskedLM"]
    if varlen:
        base = ", ".join(a.replace("ForMaskedLM", "Model") for a in masked)
        text = {"jax": "xlm_jax encoder, inference (no head), jit: each padded batch, then the packed rows with "
                       "segment ids; real (non-pad) tokens/s",
                "torch_eager": f"transformers {base}, inference_mode, SDPA, on the padded batches"}
    else:
        hf = ", ".join(masked)
        text = {"jax": "xlm_jax train step: LM head at the P masked positions only, optax AdamW+clip, donated "
                       "state, jit",
                "torch_eager": f"transformers {hf}: logits at all B*T positions, labels=-100 elsewhere, fused "
                               "AdamW+clip, SDPA",
                "torch_masked": "the same transformers model, fused AdamW+clip, SDPA, but its LM head only at the "
                                "predicted positions (fairseq / NVIDIA)",
                "torch_compile": "as torch_eager with torch.compile(model)"}
    return {fw: text[fw] for fw in sides if fw in text}


def _fmt(x, spec: str, scale: float = 1.0) -> str:
    return "-" if x is None else format(x * scale, spec)


SMOKE_NOTE = ("--smoke: a check that every side runs (tiny shapes, one timed step, no torch.compile), NOT a "
              "measurement; "
              "its speeds and ratios mean nothing")


def format_table(results: list[dict[str, Any]], smoke: bool = False) -> str:
    """The printed table; with `smoke`, a title line and a note at every ratio say the figures are no measurement."""
    width = max([11] + [len(r["config"]) for r in results])
    head = (f"{'config':<{width}} {'side':<14} {'train tok/s':>11} {'step ms':>9} {'first s':>8} {'peak MiB':>9} "
            f"{'TFLOP/s':>8} {'MFU':>6} {'infer tok/s':>12} {'eval loss':>9}")
    lines = ([f"SMOKE RUN: {SMOKE_NOTE}"] if smoke else []) + [head, "-" * len(head)]
    not_measured = " (smoke run: not a measurement)" if smoke else ""
    for rec in results:
        for fw, e in rec["frameworks"].items():
            mem = e.get("memory", {})
            peak = mem.get("device_peak_mb", mem.get("peak_rss_mb"))
            if e.get("error") and not e.get("train_tokens_per_s"):
                lines.append(f"{rec['config']:<{width}} {fw:<14} error: {e['error'][:80]}")
                continue
            lines.append(
                f"{rec['config']:<{width}} {fw:<14} {_fmt(e['train_tokens_per_s'], ',.0f'):>11} "
                f"{_fmt(e['train_step_s'], '.1f', 1e3):>9} {_fmt(e['first_step_s'], '.2f'):>8} "
                f"{_fmt(peak, ',.0f'):>9} {_fmt(e['model_tflops_per_s'], '.3f'):>8} {_fmt(e['mfu'], '.1%'):>6} "
                f"{_fmt(e['infer_tokens_per_s'], ',.0f'):>12} {_fmt(e.get('eval_loss_same_weights'), '.4f'):>9}"
            )
        r, ran = rec["ratio"], rec["frameworks"]
        parts = [f"jax/{fw}{' (the same work)' if fw == 'torch_masked' else ''}: train "
                 f"{_fmt(r.get(f'train_jax_over_{fw}'), '.2f')}x" for fw in TORCH_SIDES if fw in ran]
        parts += [f"inference jax/{fw}: {_fmt(r.get(f'infer_jax_over_{fw}'), '.2f')}x" for fw in TORCH_SIDES
                  if fw in ran and r.get(f"infer_jax_over_{fw}") is not None][:1]  # the PyTorch sides share an encoder
        if parts:
            lines.append(f"{'':<{width}} ratio " + "; ".join(parts) + not_measured)
        for fw in ("jax", "torch_eager", "torch_masked"):
            b = rec["frameworks"].get(fw, {}).get("breakdown_s")
            if b and "error" not in b:
                step = rec["frameworks"][fw]["train_step_s"] or float("nan")
                parts = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in b.items())
                head_share = (b["forward_loss"] - b["encoder_forward"]) / b["forward_loss"]
                lines.append(f"{'':<{width}} breakdown {fw} (ms; step {step * 1e3:.1f}): {parts}; "
                             f"LM head + loss = {head_share:.0%} of the forward")
    lines.append("")
    lines += [f"{fw}: {d}" for fw, d in describe([r["config"] for r in results], tuple(
        dict.fromkeys(fw for r in results for fw in r["frameworks"]))).items()]
    return "\n".join(lines)


def format_varlen_table(results: list[dict[str, Any]], smoke: bool = False) -> str:
    """The `--varlen` table: per configuration and side, real (non-pad) tokens/s of the padded and the packed
    passes, the first pass (compile) time, and the checks (packed vs padded hidden states; mean |h|)."""
    head = (f"{'config':<16} {'side':<12} {'layout':<7} {'real tok/s':>11} {'pass s':>8} {'first s':>8} "
            f"{'pad share':>9}")
    lines = ([f"SMOKE RUN: {SMOKE_NOTE}"] if smoke else []) + [head, "-" * len(head)]
    for rec in results:
        info = rec.get("varlen", {})
        for fw, e in rec["frameworks"].items():
            if e.get("error") and not e.get("varlen_padded_tokens_per_s"):
                lines.append(f"{rec['config']:<16} {fw:<12} error: {e['error'][:80]}")
                continue
            for layout in VARLEN_LAYOUTS:
                if e.get(f"varlen_{layout}_s") is None:
                    continue
                first = e.get(f"varlen_first_{layout}_s")
                lines.append(f"{rec['config']:<16} {fw:<12} {layout:<7} "
                             f"{_fmt(e[f'varlen_{layout}_tokens_per_s'], ',.0f'):>11} "
                             f"{_fmt(e[f'varlen_{layout}_s'], '.3f'):>8} {_fmt(first, '.2f'):>8} "
                             f"{_fmt(info.get(f'{layout}_padding_share'), '.1%'):>9}")
        jax_entry = rec["frameworks"].get("jax", {})
        checks = [f"{fw} {e['varlen_mean_abs_hidden']:.6f}" for fw, e in rec["frameworks"].items()
                  if e.get("varlen_mean_abs_hidden") is not None]
        lines.append(f"{'':<16} {info.get('sentences')} sentences, {info.get('real_tokens'):,} real tokens; jax "
                     f"packed vs padded max |diff| {_fmt(jax_entry.get('varlen_max_abs_diff_packed_padded'), '.1e')}; "
                     f"mean |h| " + ", ".join(checks))
    lines.append("")
    lines += [f"{fw}: {d}" for fw, d in describe([r["config"] for r in results], tuple(
        dict.fromkeys(fw for r in results for fw in r["frameworks"])), varlen=True).items()]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path, smoke: bool = False) -> None:
    """Bar charts of training and inference tokens/s, one column per configuration, written to `path` (PNG); with
    `smoke`, the title says the figures are no measurement."""
    import matplotlib  # a plotting backend is chosen before pyplot loads; the workers never need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(3.6 * len(results) + 1, 6.5), squeeze=False)
    colors = {"jax": "#1f77b4", "torch_eager": "#ff7f0e", "torch_masked": "#9467bd", "torch_compile": "#2ca02c"}
    titles = {"train": "training step", "infer": "inference (encode)", "varlen_padded": "varlen inference, padded",
              "varlen_packed": "varlen inference, packed"}
    for col, rec in enumerate(results):
        kinds = ("varlen_padded", "varlen_packed") if "varlen" in rec else ("train", "infer")
        for row, kind in enumerate(kinds):
            ax = axes[row][col]
            names = [fw for fw in rec["frameworks"] if rec["frameworks"][fw].get(f"{kind}_tokens_per_s")]
            values = [rec["frameworks"][fw][f"{kind}_tokens_per_s"] for fw in names]
            bars = ax.bar(names, values, color=[colors[n] for n in names])
            ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
            ax.set_title(f"{rec['config']} — {titles[kind]}", fontsize=9)
            ax.set_ylabel("real tokens / s" if "varlen" in rec else "tokens / s")
            ax.tick_params(axis="x", labelsize=8)
    varlen = any("varlen" in rec for rec in results)
    fig.suptitle(("xlm_jax vs HF transformers: encoder real tokens/s on variable-length sentences" if varlen else
                  "xlm_jax vs HF transformers: MLM tokens/s") + " (higher is better)"
                 + ("\nSMOKE RUN: not a measurement" if smoke else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def json_default(x):
    """`json.dumps(default=...)` for the report: NumPy scalars as numbers, anything else as its string."""
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)
