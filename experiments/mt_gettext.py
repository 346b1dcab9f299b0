"""Machine translation on this machine's gettext catalogs (issue #21 item 9; write-up in docs/translation.md,
"Results on this machine"): random init vs MLM init of encoder and decoder vs encoder-only init, supervised
en->fr (full and low-resource) and en->de, and a reduced unsupervised (denoising + back-translation) en<->fr run.

    python experiments/mt_gettext.py /tmp/mt_exp [--steps 60] [--low-steps N] [--unmt-steps N] [--en-de-steps N]
        [--mlm-steps 150] [--low 3000] [--groups en-fr,low,en-de,unmt] [--inits random,mlm,encoder]
        [--eval-every N] [--tokens-per-batch 2048] [--lr 1e-3] [--warmup 20] [--jobs 1] [--no-train]
        [--json docs/results/mt_gettext.json]

Reduced sizes (the default model of `configs/default.yaml`: 128-d, 2 layers; sentences up to 32 pieces; a few
thousand iterations on 2 CPU cores: the run recorded in docs/translation.md took two hours); the numbers show the
direction of the differences, not XLM's results. --groups / --inits pick the runs of stage 4 (a re-run with a larger
--steps continues a finished run from its last checkpoint: the inverse-sqrt schedule does not depend on the total);
--eval-every records a learning curve of held-out BLEU / chrF++ (and checkpoints as often, so an interrupted run
resumes there); --jobs runs that many train_mt processes side by side; --no-train only reports (a run stopped early
reports its last validation and "stopped_at"). Stages (each skipped when its output is there, so a re-run
resumes; every command is printed and recorded):

1. corpus:  WORK/corpus/{train,valid}/para/en-{fr,de}.*: gettext pairs split by whole catalogs (domain names,
            crc32(domain) % 5 == 0 held out for every language), and any training pair whose English is also in
            a held-out catalog removed, so that repeated UI strings cannot leak into the held-out pairs;
2. mlm:     python -m xlm_jax.train configs/default.yaml (MLM only, no TLM: no aligned pairs seen) for
            --mlm-steps steps on WORK/mlm_corpus/mono/{en,fr,de}.txt: the sides of the *training* pairs only (no
            sentence of a held-out catalog, in any language), one language per file, its own 8k SentencePiece
            vocabulary: the pretrained encoder;
3. random:  a checkpoint of the same shape with fresh random weights (so every variant has the same model);
4. runs:    python -m xlm_jax.train_mt with the same data, seed and iterations: en-fr supervised x {random, mlm,
            encoder}; en-fr low-resource (--low pairs) x {random, mlm}; en-de supervised x {random, mlm};
            UNMT en<->fr (objectives.ae=[en,fr] objectives.bt=[en-fr-en,fr-en-fr], data.mono_split: the English
            side of half the pairs and the French side of the other half; 500 held-out pairs for selection)
            x {random, mlm}.
Results: WORK/results.json (also --json) and a Markdown table: the last validation BLEU / chrF++ / tokenized
BLEU of each run, the copy-the-source row, the first and last logged training losses (for UNMT AE and BT), and
("curve") every validation's [iteration, BLEU, chrF++].

The runs share one persistent XLA compilation cache (WORK/xla_cache): the variants have the same shapes, so
only the first run of each shape pays for compilation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LANGS = ("fr", "de")
GROUPS = ("en-fr", "low", "en-de", "unmt")  # --groups: which runs of stage 4


def run(cmd: list[str], env: dict, log: list[dict]) -> None:
    shown = " ".join(cmd).replace(sys.executable, "python")
    print(f"$ {shown}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
    log.append({"command": shown, "wall_s": round(time.perf_counter() - t0, 1)})
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"failed ({proc.returncode}): {shown}")


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def finished(run_dir: Path, steps: int) -> bool:
    return any(r.get("step") == steps and r.get("kind") == "train" for r in records(run_dir))


def build_corpus(out: Path) -> dict:
    """Stage 1 (see the module docstring). Returns pairs per language and split."""
    from xlm_jax.data.gettext import DEFAULT_EXCLUDE_DOMAINS, DEFAULT_LOCALE_DIRS, _read_catalog, find_catalogs

    stats_path = out / "stats.json"
    if stats_path.is_file():
        return json.loads(stats_path.read_text())
    stats = {}
    for lang in LANGS:
        split: dict[str, dict[str, str]] = {"train": {}, "valid": {}}
        for cat in find_catalogs(list(DEFAULT_LOCALE_DIRS), [lang], exclude_domains=list(DEFAULT_EXCLUDE_DOMAINS)):
            _, pairs, _ = _read_catalog(cat)
            side = "valid" if zlib.crc32(cat.domain.encode()) % 5 == 0 else "train"
            for en, x in pairs:
                split[side].setdefault(en, x)
        held = set(split["valid"])
        split["train"] = {en: x for en, x in split["train"].items() if en not in held}
        for name, pairs in split.items():
            d = out / name / "para"
            d.mkdir(parents=True, exist_ok=True)
            l1, l2 = sorted(("en", lang))
            (d / f"{l1}-{l2}.en").write_text("".join(en + "\n" for en in pairs), encoding="utf-8")
            (d / f"{l1}-{l2}.{lang}").write_text("".join(x + "\n" for x in pairs.values()), encoding="utf-8")
            stats.setdefault(lang, {})[name] = len(pairs)
    stats_path.write_text(json.dumps(stats, indent=1))
    return stats


def build_mlm_corpus(corpus: Path, out: Path) -> None:
    """Stage 2's text: each language's side of the training pairs, deduplicated, minus every English sentence of a
    held-out split (an English source held out for fr may sit in a training catalog of de)."""
    if (out / "mono").is_dir():
        return

    def read(split: str, lang: str, side: str) -> list[str]:
        l1, l2 = sorted(("en", lang))
        return (corpus / split / "para" / f"{l1}-{l2}.{side}").read_text(encoding="utf-8").splitlines()

    held = {x for lang in LANGS for x in read("valid", lang, "en")}
    sides: dict[str, dict[str, None]] = {}
    for lang in LANGS:
        for side in ("en", lang):
            lines = read("train", lang, side)
            sides.setdefault(side, {}).update(dict.fromkeys(x for x in lines if x.strip() and x not in held))
    tmp = out.with_name(out.name + ".tmp")
    (tmp / "mono").mkdir(parents=True, exist_ok=True)
    for lang, lines in sides.items():
        (tmp / "mono" / f"{lang}.txt").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    tmp.rename(out)


def random_checkpoint(mlm: Path, out: Path, seed: int) -> None:
    """Stage 3: fresh weights in the MLM's shape (xlm_jax.models.xlm.init_params)."""
    import flax.linen as nn
    import jax

    from xlm_jax.models.xlm import XLMForMaskedLM, init_params
    from xlm_jax.training.checkpoint import restore_params, save_params

    _, cfg = restore_params(mlm)
    params = nn.unbox(init_params(XLMForMaskedLM(cfg), jax.random.key(seed)))
    save_params(out, params, cfg)


def main(argv: list[str] | None = None) -> None:
    from xlm_jax.core.errors import ArgumentParser

    ap = ArgumentParser(prog="experiments/mt_gettext.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--steps", type=int, default=60, help="iterations of every train_mt run")
    ap.add_argument("--low-steps", type=int, default=0, help="iterations of the low-resource runs (0: --steps)")
    ap.add_argument("--unmt-steps", type=int, default=0, help="iterations of the UNMT runs (0: --steps)")
    ap.add_argument("--en-de-steps", type=int, default=0, help="iterations of the en-de runs (0: --steps)")
    ap.add_argument("--mlm-steps", type=int, default=150)
    ap.add_argument("--low", type=int, default=3000, help="training pairs of the low-resource variant")
    ap.add_argument("--groups", default=",".join(GROUPS),
                    help=f"comma-separated groups of runs to train and report, of {', '.join(GROUPS)}")
    ap.add_argument("--inits", default="random,mlm,encoder",
                    help="comma-separated initialisations to run within the groups, of random, mlm, encoder")
    ap.add_argument("--no-train", action="store_true",
                    help="train nothing: report what WORK/runs holds (a run stopped early reports its last validation)")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="iterations between validations (the learning curve of held-out BLEU / chrF++); 0: at the end")
    ap.add_argument("--tokens-per-batch", type=int, default=2048, help="train_mt's data.tokens_per_batch")
    ap.add_argument("--lr", type=float, default=1e-3, help="train_mt's peak learning rate (inverse-sqrt schedule)")
    ap.add_argument("--warmup", type=int, default=20, help="train_mt's warm-up updates (UNMT: twice as many)")
    ap.add_argument("--jobs", type=int, default=1, help="train_mt runs at once (separate processes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    bad = [g for g in groups if g not in GROUPS]
    if bad or not groups:
        ap.error(f"--groups={args.groups!r}: valid groups are {', '.join(GROUPS)} (comma-separated)")
    inits_wanted = [i.strip() for i in args.inits.split(",") if i.strip()]
    if not inits_wanted or any(i not in ("random", "mlm", "encoder") for i in inits_wanted):
        ap.error(f"--inits={args.inits!r}: valid are random, mlm, encoder (comma-separated)")
    for name in ("steps", "mlm_steps", "low", "tokens_per_batch", "warmup", "jobs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be a positive integer")
    for name in ("low_steps", "unmt_steps", "en_de_steps"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be 0 (as --steps) or a positive integer")
    if args.eval_every < 0:
        ap.error(f"--eval-every={args.eval_every}: must be 0 (validate at the end) or a positive integer")
    if args.tokens_per_batch < 32:
        ap.error(f"--tokens-per-batch={args.tokens_per_batch}: must be at least 32 (the longest sentence, 32 pieces)")
    if not 0 < args.lr < 1:
        ap.error(f"--lr={args.lr}: must be in (0, 1)")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": str(work / "xla_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    log: list[dict] = []
    t0 = time.perf_counter()
    corpus = work / "corpus"
    stats = build_corpus(corpus)
    print(f"corpus (pairs by split, catalogs held out whole): {stats}", flush=True)

    mlm = work / "mlm"
    build_mlm_corpus(corpus, work / "mlm_corpus")
    if not finished(mlm, args.mlm_steps):
        run([sys.executable, "-m", "xlm_jax.train", "configs/default.yaml", f"run_dir={mlm}",
             f"data.corpus={work / 'mlm_corpus'}", f"data.cache_dir={work / 'mlm_cache'}",
             f"train.steps={args.mlm_steps}", "data.objectives.tlm=0", "train.progress=false", "model.dropout=0.1",
             f"optimizer.warmup_steps={min(200, args.mlm_steps // 10 or 1)}", f"checkpoint.every={args.mlm_steps}",
             f"train.eval_every={args.mlm_steps}"], env, log)
    rand = work / "random_init"
    if not rand.exists():
        random_checkpoint(mlm / "checkpoints", rand, args.seed)
    tok = mlm / "tokenizer.model"

    common = [f"data.corpus={corpus}", f"data.tokenizer={tok}", "data.max_len=32", "data.width_bucket=16",
              f"data.tokens_per_batch={args.tokens_per_batch}", f"seed={args.seed}", "train.progress=false",
              f"optimizer.lr={args.lr}", "model.dropout=0.1"]

    def iterations(steps: int) -> list[str]:
        every = min(args.eval_every or steps, steps)
        return [f"train.steps={steps}", f"train.eval_every={every}", f"train.log_every={max(1, steps // 6)}",
                f"checkpoint.every={every}"]

    inits = {"random": ["model.init=mlm", f"model.init_from={rand}"],  # fresh weights, the same shape
             "mlm": ["model.init=mlm", f"model.init_from={mlm / 'checkpoints'}"],
             "encoder": ["model.init=encoder", f"model.init_from={mlm / 'checkpoints'}"]}
    sup = ["data.valid_sentences=500", f"optimizer.warmup_steps={args.warmup}"]
    unmt_steps = args.unmt_steps or args.steps
    plan = {"en-fr": [(f"en-fr/{i}", ["objectives.mt=[en-fr]", *sup], i, args.steps)
                      for i in ("random", "mlm", "encoder")],
            "low": [(f"en-fr low {args.low}/{i}", ["objectives.mt=[en-fr]", f"data.max_pairs={args.low}", *sup], i,
                     args.low_steps or args.steps) for i in ("random", "mlm")],
            "en-de": [(f"en-de/{i}", ["objectives.mt=[en-de]", *sup], i, args.en_de_steps or args.steps)
                      for i in ("random", "mlm")],
            "unmt": [(f"unmt en-fr/{i}", ["objectives.mt=[]", "objectives.ae=[en,fr]",
                                          "objectives.bt=[en-fr-en,fr-en-fr]", "data.mono_split=true",
                                          "train.valid_direction=en-fr", "data.valid_sentences=500",
                                          f"optimizer.warmup_steps={2 * args.warmup}"], i, unmt_steps)
                     for i in ("random", "mlm")]}
    runs = [(name, extra, init, steps, work / "runs" / name.replace(" ", "_").replace("/", "__"))
            for g in GROUPS if g in groups for name, extra, init, steps in plan[g] if init in inits_wanted]
    todo = [[sys.executable, "-m", "xlm_jax.train_mt", *common, *iterations(steps), *inits[init], *extra,
             f"run_dir={run_dir}"] for name, extra, init, steps, run_dir in runs if not finished(run_dir, steps)]
    if args.no_train:
        todo = []
    with ThreadPoolExecutor(args.jobs) as pool:  # train_mt runs side by side (each a subprocess)
        list(pool.map(lambda cmd: run(cmd, env, log), todo))
    results = []
    for name, extra, init, steps, run_dir in runs:
        recs = records(run_dir)
        valids, train = [r for r in recs if r["kind"] == "valid"], [r for r in recs if r["kind"] == "train"]
        if not valids or not train:
            print(f"{name}: nothing to report in {run_dir}", flush=True)
            continue
        valid = valids[-1]
        row = {"run": name, "init": init, **{m: round(valid[m], 2) for m in ("bleu", "chrf++", "bleu_tok")},
               **{f"copy/{m}": round(valid[f"copy/{m}"], 2) for m in ("bleu", "chrf++")},
               "sentences": valid["sentences"], "signature": valid["signature"], "iterations": steps,
               "stopped_at": None if finished(run_dir, steps) else train[-1]["step"]}
        for key in sorted(k for k in train[-1] if k.endswith("/nll")):
            row[key] = [round(train[0][key], 3), round(train[-1][key], 3)]  # first and last logged
        row["curve"] = [[r["step"], round(r["bleu"], 2), round(r["chrf++"], 2)] for r in recs if r["kind"] == "valid"]
        row["elapsed_s"] = round(train[-1]["elapsed_s"], 1)
        results.append(row)
        print(json.dumps(row), flush=True)
    out = {"stats": stats, "steps": args.steps, "mlm_steps": args.mlm_steps, "seed": args.seed,
           "options": {k: str(v) for k, v in vars(args).items() if k not in ("work", "json")}, "results": results,
           "commands": log, "wall_s": round(time.perf_counter() - t0, 1)}
    (work / "results.json").write_text(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    print("\n| run | BLEU | chrF++ | tok. BLEU | copy BLEU / chrF++ | losses (first -> last) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        losses = ", ".join(f"{k[:-4]} {v[0]} -> {v[1]}" for k, v in r.items() if k.endswith("/nll"))
        print(f"| {r['run']} | {r['bleu']} | {r['chrf++']} | {r['bleu_tok']} | {r['copy/bleu']} / {r['copy/chrf++']} "
              f"| {losses} |")
    print(f"\n{out['wall_s']} s")


if __name__ == "__main__":
    main()
