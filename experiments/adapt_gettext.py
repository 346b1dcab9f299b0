"""Language adaptation on real text: the embedded default model (15 gettext languages + English) continued on
Georgian (`ka`, a script its vocabulary lacks), with and without vocabulary extension, training all parameters
or the embeddings only (issue #12 part 6; write-up in docs/adaptation.md, "Results on this machine's text").

    XLM_JAX_CACHE=/tmp/adapt/cache python experiments/adapt_gettext.py /tmp/adapt [--steps 200] [--base-steps 500]
                                                                       [--add 2000] [--json docs/results/adapt_gettext.json]

Every stage runs one of the project's commands (printed, and recorded in the JSON) and is skipped when its
output is already there, so a re-run resumes:

1. base:      python -m xlm_jax.train configs/default.yaml run_dir=WORK/base  (the embedded default);
2. corpus:    WORK/corpus, a raw corpus (mono/*.txt, para/*) of the default's 16 languages and their en-X pairs
              from the gettext corpus, plus Georgian: mono/ka.txt and para/en-ka.*, minus 500 en-ka pairs kept
              aside for retrieval (their Georgian side is in no training text; WORK/retrieval/{en,ka}.txt);
3. extend:    python -m xlm_jax.tokenizer extend --new-characters-only (Georgian pieces only, so that the base
              languages' segmentation is unchanged), with its report (pieces per sentence, <unk> counts);
4. before:    the project's held-out MLM evaluation (xlm_jax.pretrain.loop.evaluate: fixed masking noise, every valid
              window, per language) of the base model on all 17 languages, once with the base tokenizer and once
              with the extended one (the model's new rows initialised by xlm_jax.models.vocab_extension.extend_embeddings). The
              evaluation runs through the train CLI: `train.steps=1` with a warm-up from lr 0, so that the one
              update is exactly zero (its logged lr is checked to be 0) and the step-1 evaluation is the model's;
5. adapt:     4 runs of --steps steps each, from WORK/base: MLM on Georgian + TLM on en-ka, with
              train.trainable = all | embeddings, with the base tokenizer | the extended one;
6. after:     the evaluation of 4 on each adapted model;
Also: how much probability the extended base model puts on the added ids at masked positions of base-language
text (`new_id_mass`, WORK/new_id_mass.json).
7. retrieval: python -m xlm_jax.evaluate retrieval on the 500 en-ka pairs of 2 (en = src, ka = tgt; mean of the
              last layer's states, cosine), for the base and each variant.

Results: WORK/results.json (also copied to --json) and a Markdown table printed at the end. One seed (--seed,
default 0), a tiny model, a few hundred steps: read the differences, not the absolute values.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NEW = "ka"
N_RETRIEVAL = 500
VARIANTS = [(tok, trainable) for tok in ("base", "extended") for trainable in ("all", "embeddings")]


def run(cmd: list[str], log: list[dict], env: dict, work: Path, done: bool = False, keep: str = "") -> str:
    """Run one project command (echoed) unless `done` (its output is there). Every command is recorded in `log`,
    in order, with the wall time of its last execution (WORK/commands.jsonl keeps them across re-runs); a
    failure stops the script. `keep`: also save its printed output (stdout + stderr) as WORK/logs/KEEP.log."""
    shown = " ".join(cmd).replace(sys.executable, "python")
    times = work / "commands.jsonl"
    if done:
        seen = [json.loads(x) for x in times.read_text().splitlines()] if times.is_file() else []
        log.append({"command": shown, "wall_s": next((r["wall_s"] for r in reversed(seen) if r["command"] == shown),
                                                      None)})
        return ""
    print(f"$ {shown}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
    log.append({"command": shown, "wall_s": round(time.perf_counter() - t0, 1)})
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"failed ({proc.returncode}): {shown}")
    if keep:
        (work / "logs").mkdir(exist_ok=True)
        (work / "logs" / f"{keep}.log").write_text(proc.stdout + proc.stderr)
    with times.open("a") as f:
        f.write(json.dumps(log[-1]) + "\n")
    return proc.stdout


def finished(run_dir: Path, steps: int) -> bool:
    """A train run whose metrics reached `steps` (then running it again would only say so)."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return False
    return any(json.loads(line).get("step") == steps for line in metrics.read_text().splitlines() if line.strip())


def valid_record(run_dir: Path) -> dict:
    """The last held-out evaluation of a run's metrics.jsonl."""
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in records if r.get("kind") == "valid"][-1]


def build_corpus(gettext: Path, out: Path, base_langs: list[str], seed: int) -> None:
    """WORK/corpus: symlinks to the base languages' files, Georgian copied minus the retrieval pairs."""
    if (out / "done").is_file():
        return
    if out.exists():
        shutil.rmtree(out)
    (out / "mono").mkdir(parents=True)
    (out / "para").mkdir()
    for lang in base_langs + ["en"]:
        (out / "mono" / f"{lang}.txt").symlink_to(gettext / "mono" / f"{lang}.txt")
    for lang in base_langs:
        l1, l2 = sorted([lang, "en"])
        for side in (l1, l2):
            (out / "para" / f"{l1}-{l2}.{side}").symlink_to(gettext / "para" / f"{l1}-{l2}.{side}")
    l1, l2 = sorted([NEW, "en"])
    en = (gettext / "para" / f"{l1}-{l2}.en").read_text(encoding="utf-8").split("\n")[:-1]
    ka = (gettext / "para" / f"{l1}-{l2}.{NEW}").read_text(encoding="utf-8").split("\n")[:-1]
    # Retrieval pairs: distinct on both sides, and no other pair shares either side (each query has one answer).
    count_en, count_ka = {}, {}
    for a, b in zip(en, ka):
        count_en[a] = count_en.get(a, 0) + 1
        count_ka[b] = count_ka.get(b, 0) + 1
    unique = [i for i, (a, b) in enumerate(zip(en, ka)) if count_en[a] == 1 and count_ka[b] == 1 and len(a) > 20]
    test = sorted(random.Random(seed).sample(unique, N_RETRIEVAL))
    test_ka = {ka[i] for i in test}
    (out.parent / "retrieval").mkdir(exist_ok=True)
    (out.parent / "retrieval" / "en.txt").write_text("".join(en[i] + "\n" for i in test), encoding="utf-8")
    (out.parent / "retrieval" / f"{NEW}.txt").write_text("".join(ka[i] + "\n" for i in test), encoding="utf-8")
    keep = [i for i in range(len(en)) if ka[i] not in test_ka]
    (out / "para" / f"{l1}-{l2}.en").write_text("".join(en[i] + "\n" for i in keep), encoding="utf-8")
    (out / "para" / f"{l1}-{l2}.{NEW}").write_text("".join(ka[i] + "\n" for i in keep), encoding="utf-8")
    mono = (gettext / "mono" / f"{NEW}.txt").read_text(encoding="utf-8").split("\n")
    (out / "mono" / f"{NEW}.txt").write_text("\n".join(x for x in mono if x not in test_ka), encoding="utf-8")
    (out / "done").write_text("")


def new_id_mass(model_dir: Path, corpus: Path, n_base: int, langs=("en", "de", "ja"), n: int = 64) -> dict:
    """A diagnostic of the extended base model (its resized rows, before any update): at one masked position in
    each of the first `n` sentences (<= 30 pieces) of each language, the mean probability on the added ids
    (n_base .. V-2), on `▁`, and how often `▁` is the argmax. `LoadedModel.mlm_logits`; seeded masking."""
    import numpy as np

    import xlm_jax

    m = xlm_jax.load(model_dir)
    tok, space = m.tokenizer, m.tokenizer.sp.piece_to_id("\u2581") + 1
    out = {}
    for lang in langs:
        lines = [x for x in (corpus / "mono" / f"{lang}.txt").read_text(encoding="utf-8").split("\n") if x][:n]
        ids = [[0] + tok.encode(x)[:30] + [2] for x in lines]
        x = np.full((len(ids), max(map(len, ids))), 1, np.int32)
        rng, pos = np.random.default_rng(0), []
        for i, s in enumerate(ids):
            x[i, :len(s)] = s
            j = int(rng.integers(1, len(s) - 1))
            pos.append((i, j))
            x[i, j] = m.config.mask_token_id
        logits = np.asarray(m.mlm_logits(x, (x != 1).astype(np.int32)), np.float64)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[lang] = {"new_ids_mass": float(np.mean([p[i, j, n_base:m.config.vocab_size - 1].sum() for i, j in pos])),
                     "space_prob": float(np.mean([p[i, j, space] for i, j in pos])),
                     "space_is_argmax": float(np.mean([p[i, j].argmax() == space for i, j in pos]))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("work", type=Path)
    p.add_argument("--steps", type=int, default=200, help="training steps of each adaptation run")
    p.add_argument("--base-steps", type=int, default=500, help="steps of the base model (the default's 500)")
    p.add_argument("--add", type=int, default=2000, help="pieces for tokenizer extend --add")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also copy results.json here")
    args = p.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.setdefault("XLM_JAX_CACHE", str(work / "cache"))
    py, log = sys.executable, []
    train = [py, "-m", "xlm_jax.train", "configs/default.yaml", f"seed={args.seed}", "train.progress=false"]

    # 1. the embedded default model
    base = work / "base"
    run(train + [f"run_dir={base}", f"train.steps={args.base_steps}"], log, env, work,
        done=finished(base, args.base_steps))
    gettext = Path(env["XLM_JAX_CACHE"]) / "gettext"
    stats = json.loads((gettext / "stats.json").read_text())["languages"]
    by_pairs = sorted(stats, key=lambda lang: (-stats[lang]["pairs"], lang))
    base_langs = sorted(by_pairs[:15])  # configs/default.yaml: data.max_langs=15, plus en
    assert NEW not in base_langs

    # 2. the corpus
    corpus = work / "corpus"
    build_corpus(gettext, corpus, base_langs, args.seed)
    all_langs = sorted(base_langs + ["en", NEW])

    # 3. the extended tokenizer
    base_tok = base / "tokenizer.model"
    ext_tok = work / f"{NEW}_ext{args.add}.model"
    report = work / f"{NEW}_ext{args.add}.json"
    run([py, "-m", "xlm_jax.tokenizer", "extend", "--quiet", "--base", str(base_tok),
         "--input", str(corpus / "mono" / f"{NEW}.txt"), "--add", str(args.add), "--new-characters-only",
         "--output", str(ext_tok), "--seed", str(args.seed), "--report", str(report),
         "--check-input"] + [str(corpus / "mono" / f"{lang}.txt") for lang in ("en", "de", "ru", "ja")],
        log, env, work, done=report.is_file())
    toks = {"base": [], "extended": [f"data.tokenizer={ext_tok}"]}

    common = [f"data.corpus={corpus}", "train.eval_batches=0"]

    def evaluate(name: str, init: Path, tok: str) -> dict:
        """Held-out MLM loss / ppl / accuracy per language of `init`, through the train CLI (see the docstring)."""
        out = work / "eval" / name
        run(train + [f"run_dir={out}", f"model.init_from={init}", "train.steps=1", "train.log_every=1",
                     "optimizer.schedule=constant", "optimizer.warmup_steps=10", "optimizer.warmup_init_lr=0.0",
                     "data.objectives={mlm: 1.0}", f"data.mono_langs=[{', '.join(all_langs)}]",
                     "checkpoint.keep_best=false"] + common + toks[tok], log, env, work, done=finished(out, 1))
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        lr = [r["lr"] for r in records if r.get("kind") == "train"]
        assert lr == [0.0], f"{out}: the evaluation step must not move the parameters (lr {lr})"
        return valid_record(out)

    def retrieval(init: Path) -> dict:
        out = work / "retrieval" / f"{init.name}.json"
        printed = run([py, "-m", "xlm_jax.evaluate", "retrieval", "--checkpoint", str(init),
                       "--tokenizer", str(init / "tokenizer.model"),
                       "--src-file", str(work / "retrieval" / "en.txt"),
                       "--tgt-file", str(work / "retrieval" / f"{NEW}.txt"), "--src-lang", "en",
                       "--tgt-lang", NEW], log, env, work, done=out.is_file())
        if printed:
            out.write_text(printed[printed.index("{"):])
        return json.loads(out.read_text())

    # 4. before
    before = {tok: evaluate(f"before_{tok}", base, tok) for tok in toks}
    results = {"before": {"base_model": {tok: before[tok] for tok in toks}, "retrieval": retrieval(base)}}

    # 5. / 6. / 7. adapt, after, retrieval
    runs = {}
    for tok, trainable in VARIANTS:
        name = f"{NEW}_{tok}_{trainable}"
        out = work / name
        run(train + [f"run_dir={out}", f"model.init_from={base}", f"train.steps={args.steps}",
                     f"train.trainable={trainable}", f"optimizer.lr={args.lr}",
                     f"data.mono_langs=[{NEW}]", f"data.para_pairs=[en-{NEW}]", f"train.eval_langs=[{NEW}]",
                     f"train.eval_every={args.steps}", f"checkpoint.every={args.steps}"] + common + toks[tok],
            log, env, work, done=finished(out, args.steps), keep=name)
        printed = (work / "logs" / f"{name}.log").read_text().splitlines()
        runs[name] = {"tokenizer": tok, "trainable": trainable, "after": evaluate(f"after_{name}", out, tok),
                      "retrieval": retrieval(out), "adapt_valid": valid_record(out),
                      "log": [x for x in printed if x.startswith(("trainable", "init", "model:", "loss:"))]}
    results["runs"] = runs
    mass = work / "new_id_mass.json"
    if not mass.is_file():
        mass.write_text(json.dumps({tok: new_id_mass(work / "eval" / f"before_{tok}", corpus,
                                                     json.loads(report.read_text())["mask_id"][0])
                                    for tok in toks}, indent=1))
    results["new_id_mass"] = json.loads(mass.read_text())
    ext = json.loads(report.read_text())
    ext["pieces"] = ext["pieces"][:50]  # (the first 50 of the added pieces; all of them are in WORK)
    results["extension_report"] = ext
    results["settings"] = {"steps": args.steps, "base_steps": args.base_steps, "add": args.add, "lr": args.lr,
                           "seed": args.seed, "base_langs": base_langs + ["en"], "new_lang": NEW,
                           "retrieval_pairs": N_RETRIEVAL}
    results["commands"] = log
    text = json.dumps(results, indent=1, sort_keys=True)
    (work / "results.json").write_text(text + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(table(results))


def table(results: dict) -> str:
    """The Markdown table of docs/adaptation.md: held-out MLM perplexity (per masked piece) of Georgian, of the
    16 base languages (exp of the mean loss) and of English; masked-piece accuracy of Georgian; retrieval P@1."""
    base_langs = results["settings"]["base_langs"]
    lines = ["| model | tokenizer | trainable | ka ppl | ka acc | 16 base langs ppl | en ppl | en->ka P@1 | ka->en P@1 |",
             "|---|---|---|---|---|---|---|---|---|"]

    def row(name: str, tok: str, trainable: str, v: dict, r: dict | None) -> None:
        mean = math.exp(sum(v[f"loss/{x}"] for x in base_langs) / len(base_langs))
        p = (f"{r['src_to_tgt_p@1']:.3f} | {r['tgt_to_src_p@1']:.3f}") if r else "- | -"
        lines.append(f"| {name} | {tok} | {trainable} | {v[f'ppl/{NEW}']:.1f} | {v[f'accuracy/{NEW}']:.3f} | "
                     f"{mean:.1f} | {v['ppl/en']:.1f} | {p} |")

    for tok, v in results["before"]["base_model"].items():
        row("base (before)", tok, "-", v, results["before"]["retrieval"] if tok == "base" else None)
    for name, r in results["runs"].items():
        row(f"adapted ({results['settings']['steps']} steps)", r["tokenizer"], r["trainable"], r["after"],
            r["retrieval"])
    return "\n".join(lines)


if __name__ == "__main__":
    main()
