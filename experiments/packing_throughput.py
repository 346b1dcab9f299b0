"""Packed vs padded throughput on CPU, alternated within one process so that the ratios compare like with like.

    XLM_JAX_CACHE=/tmp/cache python experiments/packing_throughput.py --steps 5 --repeats 4 \
        --out docs/results/packing_throughput.json

1. TLM on the embedded default (configs/default.yaml: the gettext corpus, its model, 32 x 64 TLM rows): the real
   pretraining train step (`xlm_jax.training.step.make_train_step`, TLM objective only) on `data.pack=false` batches and
   on `data.pack=true` batches of the same steps. Reports the padding share of each and the real (non-pad)
   tokens/s; the figure of merit is the ratio of real tokens/s.
2. Fine-tuning examples/s on XNLI-shaped sentence pairs (premise / hypothesis lengths drawn to resemble XNLI's
   English dev set in XLM-R SentencePiece pieces: lognormal, medians ~26 and ~13 pieces, capped by max_len=128),
   the same default-sized encoder with a 3-way head: the fine-tuning train step (`xlm_jax.finetune`) on padded
   batches (`tasks.make_batch`: 32 rows padded to the batch's longest, a multiple of 16) vs packed ones
   (`tasks.make_packed_batch`: the same 32 examples packed into rows of 128).

Each timed block is `--steps` steps after a warm-up (compilation) step; the blocks of the two sides alternate
`--repeats` times (A B, B A, ...) and the medians are reported. The machine this was written on is shared (2 cores, several
users), so absolute numbers are noisy; the ratios within one run are what to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from xlm_jax import tasks as T
from xlm_jax.data.packing import padding_share


def _time_steps(step, state, batches, rng):
    t0 = time.perf_counter()
    for b in batches:
        state, metrics = step(state, b, rng)
    jax.block_until_ready(metrics)
    return state, time.perf_counter() - t0


def _abba(batches: dict, repeat: int) -> list:
    """The sides in A B, then B A order on alternate repeats, so that a drift of the machine favours neither."""
    items = list(batches.items())
    return items if repeat % 2 == 0 else items[::-1]


def tlm_measure(args, log) -> dict:
    from xlm_jax.pretrain import data as pretrain_data
    from xlm_jax.data.batches import BatchSource
    from xlm_jax.data.corpus import PreprocessedCorpus
    from xlm_jax.training.optim import make_optimizer
    from xlm_jax.training.sharding import make_mesh
    from xlm_jax.training.step import init_state, make_train_step
    from xlm_jax.pretrain.config import load_config

    cfg = load_config(args.config, ["data.objectives={tlm: 1.0}"])
    corpus = PreprocessedCorpus(pretrain_data.prepare_data(cfg, log))
    sides = {}
    for pack in (False, True):
        c = load_config(args.config, ["data.objectives={tlm: 1.0}", f"data.pack={str(pack).lower()}"])
        data_cfg = pretrain_data.make_data_config(c, corpus)
        sides["packed" if pack else "padded"] = BatchSource(corpus, data_cfg)
    model_cfg = pretrain_data.make_model_config(cfg, corpus, pretrain_data.make_data_config(cfg, corpus))
    mesh = make_mesh(cfg.mesh)
    optimizer = make_optimizer(cfg.optimizer, 1000)
    n_groups = {"tlm": len(sides["padded"].cfg.para_pairs)}
    state, shardings = init_state(model_cfg, optimizer, mesh, jax.random.key(0))
    step = make_train_step(model_cfg, optimizer, mesh, shardings, {"tlm": 1.0}, n_groups)
    rng = jax.random.key(1)
    n = args.steps
    batches = {name: [src.batch(s) for s in range(1 + n * args.repeats)] for name, src in sides.items()}
    out = {}
    for name, bs in batches.items():
        masks = np.stack([b["tlm"]["attention_mask"] for b in bs])
        out[name] = {"padding_share": padding_share(masks), "rows": int(masks.shape[1]), "row_len": int(masks.shape[2]),
                     "real_tokens_per_step": float(masks.sum() / len(bs)),
                     "pairs_per_step": float(np.mean([b["tlm"].get("segment_ids", b["tlm"]["attention_mask"]
                                                                   ).max(1).sum() for b in bs])),
                     "seconds": []}
        state, _ = _time_steps(step, state, bs[:1], rng)  # compile
    for r in range(args.repeats):
        for name, bs in _abba(batches, r):
            block = bs[1 + r * n: 1 + (r + 1) * n]
            state, dt = _time_steps(step, state, block, rng)
            out[name]["seconds"].append(dt / n)
            log(f"tlm {name} repeat {r}: {dt / n * 1e3:.1f} ms/step")
    for name, o in out.items():
        o["median_step_s"] = statistics.median(o["seconds"])
        o["real_tokens_per_s"] = o["real_tokens_per_step"] / o["median_step_s"]
        o["slot_tokens_per_s"] = o["rows"] * o["row_len"] / o["median_step_s"]
        o["pairs_per_s"] = o["pairs_per_step"] / o["median_step_s"]
    out["real_tokens_per_s_ratio"] = out["packed"]["real_tokens_per_s"] / out["padded"]["real_tokens_per_s"]
    out["model"] = {k: getattr(model_cfg, k) for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                                                       "vocab_size")}
    return out


def xnli_shaped(rng, n: int, max_len: int) -> T.Encoded:
    premise = np.clip(rng.lognormal(np.log(26), 0.45, n).astype(int), 3, None)
    hypothesis = np.clip(rng.lognormal(np.log(13), 0.4, n).astype(int), 2, None)
    ids, truncated = [], 0
    for a, b in zip(premise, hypothesis):
        while a + b + 4 > max_len:  # longest-first truncation, as tasks.truncate_pair
            truncated += 1
            a, b = (a - 1, b) if a >= b else (a, b - 1)
        ids.append([0] + list(rng.integers(4, 8000, a)) + [2, 2] + list(rng.integers(4, 8000, b)) + [2])
    return T.Encoded(ids=ids, labels=list(rng.integers(0, 3, n)), langs=["en"] * n, lang_ids=[0] * n,
                     truncated=truncated)


def finetune_measure(args, log) -> dict:
    import flax.linen as nn

    from xlm_jax.workflows import finetune as F
    from xlm_jax.models.config import get_model_config
    from xlm_jax.workflows.loading import task_model
    from xlm_jax.training.sharding import MeshConfig, make_mesh
    from xlm_jax.training.step import make_step

    model_cfg = get_model_config("xlmr_tiny", hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512,
                                 vocab_size=8002, max_positions=args.max_len + 2, dropout=0.1, attention_dropout=0.1)
    spec = T.get_task("xnli")
    model = task_model(model_cfg, spec, 3)
    ids0 = np.zeros((1, 8), np.int32)
    params = nn.unbox(model.init(jax.random.key(0), ids0, np.ones_like(ids0), None, ids0)["params"])
    mesh = make_mesh(MeshConfig(-1, 1, 1))
    fcfg = F.FinetuneConfig(max_len=args.max_len, batch_size=args.ft_batch)
    rng = np.random.default_rng(0)
    n_steps = 1 + args.steps * args.repeats
    enc = xnli_shaped(rng, args.ft_batch * n_steps, args.max_len)
    plan = F.step_rows(len(enc.ids), args.ft_batch, 0, n_steps)
    rows = T.packed_rows_needed(enc, plan, args.max_len, fcfg.pack_segments)
    batches = {
        "padded": [T.make_batch(enc, r, args.ft_batch, args.max_len, 1, False) for r in plan],
        "packed": [{k: v for k, v in T.make_packed_batch(enc, r, rows, args.max_len, fcfg.pack_segments, 1, False
                                                         ).items() if k not in ("packed_at", "start_at")}
                   for r in plan],
    }
    opt = F.build_optimizer(fcfg, params, model_cfg, 1000)
    out = {}
    state, shardings = F.setup_state(params, model, opt, mesh)
    step = make_step(F.task_loss(model, False), opt, mesh, shardings)  # the fine-tuning step itself
    key = jax.random.key(1)
    for name, bs in batches.items():
        masks = [b["attention_mask"] for b in bs]
        out[name] = {"padding_share": float(np.mean([padding_share(m) for m in masks])),
                     "rows": int(masks[0].shape[0]), "widths": sorted({int(m.shape[1]) for m in masks}),
                     "seconds": []}
        for width in out[name]["widths"]:  # compile every shape first
            state, _ = _time_steps(step, state, [next(b for b in bs if b["input_ids"].shape[1] == width)], key)
    for r in range(args.repeats):
        for name, bs in _abba(batches, r):
            state, dt = _time_steps(step, state, bs[1 + r * args.steps: 1 + (r + 1) * args.steps], key)
            out[name]["seconds"].append(dt / args.steps)
            log(f"finetune {name} repeat {r}: {dt / args.steps * 1e3:.1f} ms/step")
    for name in ("padded", "packed"):
        o = out[name]
        o["median_step_s"] = statistics.median(o["seconds"])
        o["examples_per_s"] = args.ft_batch / o["median_step_s"]
    out["examples_per_s_ratio"] = out["packed"]["examples_per_s"] / out["padded"]["examples_per_s"]
    out["mean_example_tokens"] = float(np.mean([len(x) for x in enc.ids]))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--steps", type=int, default=5, help="steps per timed block")
    p.add_argument("--repeats", type=int, default=4, help="alternations of the packed and padded blocks")
    p.add_argument("--max-len", type=int, default=128, help="fine-tuning max_len (XNLI configs: 128)")
    p.add_argument("--ft-batch", type=int, default=32)
    p.add_argument("--skip", choices=["tlm", "finetune"], default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    log = lambda msg: print(msg, flush=True)
    result = {"command": "python experiments/packing_throughput.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "out"),
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "note": "shared CPU machine: absolute numbers are noisy; compare the ratios (measured within one run)"}
    if args.skip != "tlm":
        result["tlm"] = tlm_measure(args, log)
        t = result["tlm"]
        log(f"TLM padding share {t['padded']['padding_share']:.1%} -> {t['packed']['padding_share']:.1%}; real "
            f"tokens/s {t['padded']['real_tokens_per_s']:.0f} -> {t['packed']['real_tokens_per_s']:.0f} "
            f"({t['real_tokens_per_s_ratio']:.2f}x)")
    if args.skip != "finetune":
        result["finetune"] = finetune_measure(args, log)
        f = result["finetune"]
        log(f"fine-tuning (XNLI-shaped) padding share {f['padded']['padding_share']:.1%} -> "
            f"{f['packed']['padding_share']:.1%}; examples/s {f['padded']['examples_per_s']:.1f} -> "
            f"{f['packed']['examples_per_s']:.1f} ({f['examples_per_s_ratio']:.2f}x)")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
