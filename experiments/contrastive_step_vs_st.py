"""The contrastive fine-tuning step (task=contrastive) against the same loss in sentence-transformers (PyTorch), on the
same random-weight XLM-R, the same token ids and the same optimiser, in one alternating run.

    python experiments/contrastive_step_vs_st.py [--batch 64] [--chunk 16] [--hidden 256] [--layers 4]
                                                 [--len 64] [--negatives 1] [--steps 3] [--out FILE.json]

Ours: `make_step(xlm_jax.tasks.embedding.step_loss(...))`, the step `python -m xlm_jax.finetune task=contrastive`
jits (mean pooling, temperature 0.05 = scale 20, hard negatives as extra columns), with optax.adamw; and the same
with `contrastive.grad_cache_chunk=--chunk` (GradCache). Theirs: `SentenceTransformer([Transformer, Pooling(mean)])`
with `MultipleNegativesRankingLoss(scale=20)` (and `CachedMultipleNegativesRankingLoss(mini_batch_size=--chunk)`),
loss.backward() and torch.optim.AdamW (same lr, betas, eps, weight decay): what `SentenceTransformerTrainer` runs
per step, without its data loader. The model is an HF `XLMRobertaModel` with random weights saved on the spot and
loaded by both (ours through `xlm_jax.workflows.convert.load_any`), dropout 0 so that the first step's losses
must agree (printed: a check that it is the same loss on the same vectors). Texts: random token ids, lengths
uniform in [8, --len], every column padded to the batch's one width (as our batch is), passed to both as
input_ids / attention_mask (no tokenizer in the timing).

Time: after one warm-up (compiling) step each, --steps rounds, each round one step of every variant in turn, so
the machine's load falls on all alike; the median per variant and pairs per second. Device: the CPU (both use
every core: XLA's thread pool, torch's intra-op threads).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

from xlm_jax.tasks.contrastive import ContrastiveConfig  # noqa: E402
from xlm_jax.tasks.embedding import PairFeatures, SentenceEmbedder, make_batch, step_loss  # noqa: E402
from xlm_jax.training.sharding import MeshConfig, make_mesh  # noqa: E402
from xlm_jax.training.step import make_step  # noqa: E402
from xlm_jax.workflows import finetune as F  # noqa: E402
from xlm_jax.workflows.convert import load_any  # noqa: E402

LR, WD, BETAS, EPS = 2e-5, 0.01, (0.9, 0.999), 1e-8


def build_hf(directory: Path, vocab: int, hidden: int, layers: int, max_len: int) -> None:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.XLMRobertaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                        num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                                        max_position_embeddings=max_len + 2, type_vocab_size=1, layer_norm_eps=1e-5,
                                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    transformers.XLMRobertaModel(cfg, add_pooling_layer=False).save_pretrained(directory)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--len", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--negatives", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from sentence_transformers import SentenceTransformer, losses, models

    tmp = Path(tempfile.mkdtemp(prefix="ctr_vs_st_"))
    build_hf(tmp / "hf", args.vocab, args.hidden, args.layers, args.len)

    # The same batch for both: [B, W] anchor / positive ids, [B·K, W] hard negatives.
    rng = np.random.default_rng(0)
    n, k = args.batch, args.negatives

    def text():
        return [0] + rng.integers(4, args.vocab, size=int(rng.integers(6, args.len - 1))).tolist() + [2]

    feats = PairFeatures([text() for _ in range(n)], [text() for _ in range(n)],
                         [[text() for _ in range(k)] for _ in range(n)], [0] * n, [0] * n, 0, k)
    batch = make_batch(feats, range(n), n, args.len, 1)
    columns = ["anchor", "positive"] + (["negative"] if k else [])
    torch_features = [{"input_ids": torch.as_tensor(batch[f"{c}_ids"], dtype=torch.long),
                       "attention_mask": torch.as_tensor(batch[f"{c}_mask"], dtype=torch.long)} for c in columns]

    # Ours.
    params, config, _ = load_any(tmp / "hf")
    config = dataclasses.replace(config, dropout=0.0, attention_dropout=0.0)
    model = SentenceEmbedder(config, "mean", False)
    params = {"encoder": params["encoder"]}
    mesh = make_mesh(MeshConfig(1, 1, 1))
    optimizer = optax.adamw(LR, b1=BETAS[0], b2=BETAS[1], eps=EPS, weight_decay=WD)
    ours = {}
    for name, chunk in (("xlm_jax", 0), (f"xlm_jax GradCache {args.chunk}", args.chunk)):
        state, shardings = F.setup_state(jax.tree.map(np.array, params), model, optimizer, mesh)
        step = make_step(step_loss(model, ContrastiveConfig(temperature=0.05, grad_cache_chunk=chunk)), optimizer,
                         mesh, shardings)
        ours[name] = [step, state]

    def run_ours(name):
        step, state = ours[name]
        state, metrics = step(state, batch, jax.random.key(1))
        ours[name][1] = state
        return float(jax.block_until_ready(metrics)["loss"])

    # Theirs.
    theirs = {}
    for name, cached in (("sentence-transformers MNRL", False),
                         (f"sentence-transformers CachedMNRL {args.chunk}", True)):
        st = SentenceTransformer(modules=[models.Transformer(str(tmp / "hf"), max_seq_length=args.len),
                                          models.Pooling(args.hidden, "mean")], device="cpu")
        st.train()
        loss = (losses.CachedMultipleNegativesRankingLoss(st, scale=20.0, mini_batch_size=args.chunk) if cached
                else losses.MultipleNegativesRankingLoss(st, scale=20.0))
        opt = torch.optim.AdamW(st.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
        theirs[name] = (loss, opt)

    def run_theirs(name):
        loss, opt = theirs[name]
        opt.zero_grad()
        value = loss([{k: v.clone() for k, v in f.items()} for f in torch_features], None)
        value.backward()
        opt.step()
        return float(value.detach())

    variants = {**{name: run_ours for name in ours}, **{name: run_theirs for name in theirs}}
    first_loss = {name: fn(name) for name, fn in variants.items()}  # warm-up (compiles ours) at the same weights
    times = {name: [] for name in variants}
    for _ in range(args.steps):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn(name)
            times[name].append(time.perf_counter() - t0)

    n_params = sum(x.size for x in jax.tree.leaves(params))
    head = (f"model: XLM-R {args.layers} layers x {args.hidden}, vocab {args.vocab} ({n_params / 1e6:.1f} M "
            f"parameters), dropout 0; batch {n} pairs + {k} hard negative(s) each, width {batch['anchor_ids'].shape[1]} "
            f"tokens, lengths 8..{args.len}; AdamW lr {LR}; {args.steps} alternating rounds; torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), jax {jax.__version__} ({jax.default_backend()})")
    print(head)
    base = statistics.median(times["sentence-transformers MNRL"])
    print("| step | first-step loss | step time (s, median) | pairs/s | time vs sentence-transformers MNRL |")
    print("|---|---|---|---|---|")
    rows = {}
    for name in variants:
        t = statistics.median(times[name])
        rows[name] = {"first_loss": first_loss[name], "median_s": t, "times": times[name], "pairs_per_s": n / t}
        print(f"| {name} | {first_loss[name]:.5f} | {t:.3f} | {n / t:.1f} | {t / base:.2f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"setup": head, "args": vars(args), "rows": rows,
                                              "host": platform.node(), "cpus": os.cpu_count()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
