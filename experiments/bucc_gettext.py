"""BUCC-style bitext mining on real text: the system's gettext catalogs (English program messages and their
human translations), hidden among distractor sentences.

    python experiments/bucc_gettext.py WORK_DIR [--langs de fr] [--steps 600] [--vocab 4000]
                                       [--gold-sample 150] [--gold-test 350] [--distractors 1.0] [--k 4]
                                       [--untrained] [--prepare-only]

Steps (each skipped when its output exists, so a re-run resumes):
1. corpus, tokenizer, preprocess (5 % of the translation groups held out as valid: no held-out sentence is in
   a train split) and two tiny XLM-R-style models pretrained with MLM only and with MLM + TLM: the same
   commands as experiments/zero_shot_gettext.py;
2. BUCC 2018 files per language from the HELD-OUT pairs only (`WORK/bucc/{xx}-en.{sample,test}.{xx|en|gold}`):
   distinct held-out pairs are cut into a sample split (--gold-sample gold pairs) and a test split
   (--gold-test); each side gets --distractors × gold extra held-out sentences whose translation is not in the
   other file (the English of one held-out pair, the translation of another), so most sentences have no
   partner; ids are shuffled;
3. `python -m xlm_jax.evaluate bucc` for both models (and, with --untrained, the initialisation):
   ratio-margin mining, threshold chosen on sample, P/R/F1
   on test.
Results: WORK_DIR/results.json and results.md (also printed).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from zero_shot_gettext import decoded_pairs, distinct, prepare_text, run, write_results  # noqa: E402  (same corpus and pretraining commands)

MODELS = {"mlm": "{mlm: 1.0}", "mlm+tlm": "{mlm: 1.0, tlm: 1.0}"}


def prepare(work: Path, langs: list[str], steps: int, vocab: int, models: dict[str, str] = MODELS,
            untrained: bool = False) -> tuple[Path, Path]:
    log = work / "commands.log"
    py = sys.executable
    _, tok_path, pre = prepare_text(work, langs, vocab, log)
    runs = [(name, objectives, steps) for name, objectives in models.items()]
    if untrained:  # 2 steps at a tiny learning rate: the initialisation's score, the floor to beat
        runs.append(("untrained", "{mlm: 1.0}", 2))
    for name, objectives, n_steps in runs:
        run_dir = work / f"pretrain_{name.replace('+', '_')}"
        if not (run_dir / "checkpoints" / str(n_steps)).is_dir():  # an interrupted run resumes
            run([py, "-m", "xlm_jax.train", f"run_dir={run_dir}", f"data.dir={pre}", f"data.objectives={objectives}",
                 f"train.steps={n_steps}", "train.batch_size=32", "train.seq_len=64", "train.eval_every=0",
                 "train.progress=false", "model.hidden_size=128", "model.num_layers=2", "model.num_heads=4",
                 "model.intermediate_size=512", f"optimizer.warmup_steps={min(40, n_steps - 1)}",
                 *(["optimizer.lr=1e-9"] if name == "untrained" else []), f"checkpoint.every={n_steps}",
                 "checkpoint.async_save=false"], log)
    return tok_path, pre


def write_bucc(out: Path, lang: str, pairs: list[tuple[str, str]], n_sample: int, n_test: int, distractors: float,
               seed: int = 0) -> dict:
    """BUCC 2018 layout for one language from distinct (english, translation) pairs -> sizes per split."""
    rng = random.Random(seed)
    pairs = list(pairs)
    rng.shuffle(pairs)
    sizes = {}
    start = 0
    for split, n_gold in (("sample", n_sample), ("test", n_test)):
        n_extra = int(round(distractors * n_gold))
        gold = pairs[start:start + n_gold]
        # Distractors: the English of some pairs, the translation of OTHER pairs: no partner in the other file.
        extra = pairs[start + n_gold:start + n_gold + 2 * n_extra]
        start += n_gold + 2 * n_extra
        if len(gold) < n_gold or len(extra) < 2 * n_extra:
            raise SystemExit(f"{lang}: only {len(pairs)} distinct held-out pairs, not enough for the {split} split")
        en_side = [(e, g) for g, (e, _) in enumerate(gold)] + [(e, None) for e, _ in extra[:n_extra]]
        x_side = [(x, g) for g, (_, x) in enumerate(gold)] + [(x, None) for _, x in extra[n_extra:]]
        rng.shuffle(en_side)
        rng.shuffle(x_side)
        en_ids = {g: f"en-{i:06d}" for i, (_, g) in enumerate(en_side) if g is not None}
        x_ids = {g: f"{lang}-{i:06d}" for i, (_, g) in enumerate(x_side) if g is not None}
        stem = out / f"{lang}-en.{split}"
        Path(f"{stem}.en").write_text("".join(f"en-{i:06d}\t{s}\n" for i, (s, _) in enumerate(en_side)), encoding="utf-8")
        Path(f"{stem}.{lang}").write_text("".join(f"{lang}-{i:06d}\t{s}\n" for i, (s, _) in enumerate(x_side)),
                                          encoding="utf-8")
        Path(f"{stem}.gold").write_text("".join(f"{x_ids[g]}\t{en_ids[g]}\n" for g in range(len(gold))), encoding="utf-8")
        sizes[split] = {"gold": len(gold), "en": len(en_side), lang: len(x_side)}
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("--langs", nargs="+", default=["de", "fr"])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--gold-sample", type=int, default=150)
    parser.add_argument("--gold-test", type=int, default=350)
    parser.add_argument("--distractors", type=float, default=1.0, help="distractor sentences per gold pair, each side")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--prepare-only", action="store_true", help="build the data and pretrain, then stop")
    parser.add_argument("--untrained", action="store_true", help="also score a model after 1 step (the floor)")
    args = parser.parse_args()
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    tok_path, pre = prepare(work, args.langs, args.steps, args.vocab, untrained=args.untrained)
    if args.prepare_only:
        return

    from xlm_jax.data.tokenizer import Tokenizer

    tok = Tokenizer.load(tok_path)
    bucc = work / "bucc"
    bucc.mkdir(exist_ok=True)
    sizes = {lang: write_bucc(bucc, lang, distinct(decoded_pairs(pre, tok, "valid", lang)), args.gold_sample,
                              args.gold_test, args.distractors) for lang in args.langs}
    models = [*MODELS, *(["untrained"] if args.untrained else [])]
    results: dict = {"steps": args.steps, "k": args.k, "langs": args.langs, "sizes": sizes, "seeds": 1, "bucc": {}}
    log = work / "commands.log"
    for name in models:
        run_dir = work / f"pretrain_{name.replace('+', '_')}"
        out = work / f"bucc_{name.replace('+', '_')}.json"
        run([sys.executable, "-m", "xlm_jax.evaluate", "bucc", "--checkpoint", str(run_dir), "--tokenizer",
             str(tok_path), "--data", str(bucc), "--langs", *args.langs, "--k", str(args.k), "--out", str(out),
             "--force"], log)
        results["bucc"][name] = json.loads(out.read_text())

    lines = ["| model | " + " | ".join(f"{x} P / R / F1" for x in args.langs) + " | avg F1 |",
             "|---" * (len(args.langs) + 2) + "|"]
    for name, res in results["bucc"].items():
        per = res["langs"]
        cells = [f"{100 * per[x]['precision']:.1f} / {100 * per[x]['recall']:.1f} / {100 * per[x]['f1']:.1f}"
                 for x in args.langs]
        avg = sum(per[x]["f1"] for x in args.langs) / len(args.langs)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * avg:.1f} |")
    markdown = "\n".join(lines)
    write_results(work, markdown, results)


if __name__ == "__main__":
    main()
