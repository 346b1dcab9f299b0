"""XLM-R's successor in the same pipeline, on real text: a tiny ModernBERT-family model (RoPE, GeGLU, pre-LN, global
attention every 3rd layer and a sliding window elsewhere) against a tiny XLM-R-family model with the same parameter
count, the same tokens and the same steps, pretrained with MLM on the system's gettext catalogs.

    python experiments/successors_gettext.py WORK_DIR [--langs de fr es] [--steps 150] [--vocab 2000]

Steps (each skipped when its output exists, so a re-run resumes):
1. corpus, tokenizer, preprocessing as experiments/zero_shot_gettext.py (5 % of the translation groups held out);
2. pretrain both with python -m xlm_jax.train (MLM only, same batch, seq_len, steps, lr, seed): XLM-R-family
   `model.base=xlmr_tiny` with 3 layers of hidden 128; ModernBERT-family `model.base=modernbert_tiny` with 3 layers
   of hidden 128 (layer 0 global, layers 1-2 a 16-token window; rows of 64 tokens) and the GeGLU width that gives
   the same parameter count (the XLM-R model's position table counts against it);
3. held-out MLM loss: the trainer's "valid" evaluation at the last step (the same held-out batches for both);
4. retrieval P@1 en -> X / X -> en on up to 300 distinct held-out pairs per language (mean-pooled last layer);
5. zero-shot topic classification (zero_shot_gettext's rule-labelled 3 classes): fine-tuned on English only, tested
   on the held-out translations.
Results: WORK_DIR/results.json and results.md (also printed). One seed: differences of a point or two are noise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zero_shot_gettext import balanced, decoded_pairs, distinct, prepare_text, run, topic, write_results  # noqa: E402


def n_params(base: str, **overrides) -> int:
    """Parameter count of the masked LM of `base` with `overrides` (shapes only, nothing is initialised)."""
    import jax

    from xlm_jax.models import families
    from xlm_jax.models.config import get_model_config

    cfg = get_model_config(base, **overrides)
    model = families.masked_lm(cfg)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.ones((1, 8), jax.numpy.int32)))
    return sum(int(x.size) for x in jax.tree.leaves(shapes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("--langs", nargs="+", default=["de", "fr", "es"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--finetune-steps", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=300)
    args = parser.parse_args()
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    py = sys.executable

    corpus, tok_path, pre = prepare_text(work, args.langs, args.vocab, log)

    from xlm_jax.data.tokenizer import Tokenizer

    tok = Tokenizer.load(tok_path)
    vocab = len(tok)
    # The same shape for both, and the ModernBERT GeGLU width (3 matrices of D x I) that matches the parameter count.
    shape = dict(hidden_size=128, num_layers=3, num_heads=4, vocab_size=vocab)
    xlmr = dict(shape, intermediate_size=512)
    target = n_params("xlmr_tiny", **xlmr)
    # The count is affine in the width I: solve from two widths.
    p0, p1 = (n_params("modernbert_tiny", **shape, intermediate_size=i) for i in (256, 512))
    width = round(256 + (target - p0) * 256 / (p1 - p0))
    modern = dict(shape, intermediate_size=width, local_window=16)
    models = {"xlmr": ("xlmr_tiny", xlmr), "modernbert": ("modernbert_tiny", modern)}
    counts = {name: n_params(base, **over) for name, (base, over) in models.items()}
    print(f"parameters: {counts}", flush=True)

    for name, (base, over) in models.items():
        run_dir = work / f"pretrain_{name}"
        if not (run_dir / "checkpoints" / str(args.steps)).is_dir():
            fields = [f"model.{k}={v}" for k, v in over.items() if k != "vocab_size"]
            run([py, "-m", "xlm_jax.train", f"run_dir={run_dir}", f"data.dir={pre}", "data.objectives={mlm: 1.0}",
                 f"model.base={base}", *fields, f"train.steps={args.steps}", "train.batch_size=32",
                 "train.seq_len=64", f"train.eval_every={args.steps}", "train.eval_batches=20", "train.progress=false",
                 "optimizer.lr=1e-3", "optimizer.warmup_steps=30", f"checkpoint.every={args.steps}",
                 "checkpoint.async_save=false", "seed=0"], log)

    from xlm_jax.api import load
    from xlm_jax.data.corpus import PreprocessedCorpus
    from xlm_jax.evaluate import embed_sentences, retrieval_scores
    from xlm_jax.training.metrics import read_metrics

    valid_pairs = {tuple(p) for p in PreprocessedCorpus(pre).para_pairs("valid")}
    langs = [lang for lang in args.langs if tuple(sorted(("en", lang))) in valid_pairs]
    held_out = {lang: distinct(decoded_pairs(pre, tok, "valid", lang))[:args.pairs] for lang in langs}
    results: dict = {"parameters": counts, "shapes": {k: v[1] for k, v in models.items()}, "steps": args.steps,
                     "finetune_steps": args.finetune_steps, "seeds": 1, "langs": langs,
                     "held_out_pairs": {lang: len(p) for lang, p in held_out.items()},
                     "valid_mlm": {}, "retrieval": {}, "zero_shot": {}}
    for name in models:
        run_dir = work / f"pretrain_{name}"
        valid = [r for r in read_metrics(run_dir) if r.get("kind") == "valid"]
        results["valid_mlm"][name] = valid[-1]["loss"] if valid else None
        model = load(run_dir)
        results["retrieval"][name] = {}
        for lang, pairs in held_out.items():
            en = embed_sentences(model, tok, [p[0] for p in pairs], layer=-1)
            x = embed_sentences(model, tok, [p[1] for p in pairs], layer=-1)
            results["retrieval"][name][lang] = retrieval_scores(en, x)

    data = work / "topic"
    data.mkdir(exist_ok=True)
    train_rows = []
    for lang in langs:
        train_rows += [{"text": en, "label": topic(en), "lang": "en"}
                       for en, _ in decoded_pairs(pre, tok, "train", lang)]
    train_rows = balanced(list({r["text"]: r for r in train_rows}.values()), 0, 400)
    test_rows = [{"text": x, "label": topic(en), "lang": lang} for lang, pairs in held_out.items() for en, x in pairs]
    (data / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train_rows))
    (data / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test_rows))
    labels = [r["label"] for r in test_rows]
    results["majority_class"] = max(labels.count(label) for label in set(labels)) / len(labels)
    for name in models:
        out = work / f"topic_{name}"
        if not (out / "results.json").is_file():
            run([py, "-m", "xlm_jax.finetune", "task=classification", f"init={work / f'pretrain_{name}'}",
                 f"tokenizer={tok_path}", f"out={out}", f"train=[{data / 'train.jsonl'}]",
                 f"test=[{data / 'test.jsonl'}]", "lr=3e-4", f"max_steps={args.finetune_steps}", "batch_size=32",
                 "max_len=64", "log_every=40", "dropout=0.1"], log)
        results["zero_shot"][name] = json.loads((out / "results.json").read_text())["splits"]["test"]

    lines = ["| model | parameters | held-out MLM loss | retrieval P@1 (avg en→X, X→en) | "
             "zero-shot topic accuracy (avg over " + ", ".join(langs) + ") |", "|---|---|---|---|---|"]
    for name in models:
        per = results["retrieval"][name]
        p1 = sum(per[x]["src_to_tgt_p@1"] + per[x]["tgt_to_src_p@1"] for x in langs) / (2 * len(langs))
        zs = results["zero_shot"][name]["per_lang"]
        acc = sum(zs[x]["score"] for x in langs if x in zs) / len(langs)
        loss = results["valid_mlm"][name]
        lines.append(f"| {name} | {counts[name]:,} | {loss:.3f} | {p1:.3f} | {100 * acc:.1f} |" if loss is not None
                     else f"| {name} | {counts[name]:,} | – | {p1:.3f} | {100 * acc:.1f} |")
    lines.append(f"| always the majority class | | | | {100 * results['majority_class']:.1f} |")
    markdown = "\n".join(lines)
    write_results(work, markdown, results)


if __name__ == "__main__":
    main()
