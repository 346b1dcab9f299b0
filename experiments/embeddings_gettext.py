"""Sentence embeddings on real text: contrastive fine-tuning (`python -m xlm_jax.finetune task=contrastive`) of a
tiny pretrained model on gettext translation pairs, scored on WHOLE CATALOGS (domains) it never saw.

    python experiments/embeddings_gettext.py WORK_DIR [--langs de fr] [--heldout-domains gnupg2 'dpkg*' shadow]
                                            [--steps 300] [--ct-steps 200] [--ct-lr 2e-4] [--ct-batch 64]
                                            [--vocab 4000] [--retrieval 500] [--gold-sample 150]
                                            [--gold-test 350] [--distractors 1.0] [--k 4] [--quick]

Steps (each skipped when its output exists, so a re-run resumes):
1. two gettext corpora (`xlm_jax.data.gettext.build_gettext_corpus`, en <-> each of --langs): WORK/corpus from
   every catalog EXCEPT --heldout-domains (and iso_*), WORK/corpus_heldout from those catalogs only;
2. tokenizer, preprocess, MLM-only pretraining and the initialisation (2 steps at lr 1e-9) on WORK/corpus only:
   the commands of experiments/bucc_gettext.py (`prepare`), with MLM + TLM left out;
3. held-out pairs: the distinct (english, translation) pairs of WORK/corpus_heldout whose English and whose
   translation occur nowhere in WORK/corpus (a message shared by a training catalog is dropped), shuffled; the
   first --retrieval of them per language in the BEIR layout (`WORK/retrieval/{xx}/`: queries = translations,
   corpus = their English, one relevant document per query) and BUCC 2018 files (`WORK/bucc/`, as
   bucc_gettext.py writes them: --gold-sample / --gold-test gold pairs, --distractors x as many unpaired
   sentences each side);
4. contrastive fine-tuning from the MLM model and from the initialisation on the TRAINING corpus' pairs only
   (`para:WORK/corpus/para/{pair}:train`, the translation the anchor, its English the positive, symmetric loss,
   in-batch negatives, mean pooling; `:valid` of the same catalogs selects the step);
5. `python -m xlm_jax.evaluate retrieval --data WORK/retrieval/{xx}` (xx -> en, cosine; P@1 = R@1 with one relevant
   document, nDCG@10) and `python -m xlm_jax.evaluate bucc` (ratio margin, threshold tuned on sample, F1 on
   test) for the initialisation, the MLM model and both contrastive models.
Results: WORK_DIR/results.json and results.md (also printed). `--quick` cuts every size (a smoke run).
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

from bucc_gettext import prepare, write_bucc  # noqa: E402  (same tokenizer, preprocess, pretraining, BUCC files)
from zero_shot_gettext import distinct, run, write_results  # noqa: E402

HELDOUT_DOMAINS = ["gnupg2", "dpkg*", "shadow"]  # crypto, packaging, user accounts: whole catalogs kept out
QUICK = {"steps": 60, "ct_steps": 40, "retrieval": 200, "gold_sample": 60, "gold_test": 120}


def read_pairs(corpus: Path, lang: str) -> list[tuple[str, str]]:
    """(english, translation) pairs of a gettext corpus directory, in file order."""
    from xlm_jax.data.gettext import para_name

    stem, _, _ = para_name("en", lang)
    en = (corpus / "para" / f"{stem}.en").read_text(encoding="utf-8").splitlines()
    xx = (corpus / "para" / f"{stem}.{lang}").read_text(encoding="utf-8").splitlines()
    assert len(en) == len(xx), (stem, len(en), len(xx))
    return list(zip(en, xx))


def heldout_pairs(work: Path, langs: list[str]) -> tuple[dict[str, list[tuple[str, str]]], dict]:
    """Per language, the shuffled distinct held-out-domain pairs with no sentence in the training corpus."""
    seen: set[str] = set()
    for lang in langs:
        for en, xx in read_pairs(work / "corpus", lang):
            seen.update((en, xx))
    out, counts = {}, {}
    for lang in langs:
        raw = read_pairs(work / "corpus_heldout", lang)
        fresh = [(en, xx) for en, xx in raw if en not in seen and xx not in seen]
        pairs = distinct(fresh)
        random.Random(0).shuffle(pairs)
        out[lang] = pairs
        counts[lang] = {"pairs": len(raw), "no_sentence_in_train": len(fresh), "distinct": len(pairs)}
    return out, counts


def write_beir(out: Path, lang: str, pairs: list[tuple[str, str]]) -> None:
    """BEIR layout: queries = the translations, corpus = the English sides, qrels: each query's own English."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, (en, _) in enumerate(pairs):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": en}, ensure_ascii=False) + "\n")
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for i, (_, xx) in enumerate(pairs):
            f.write(json.dumps({"_id": f"q{i}", "text": xx}, ensure_ascii=False) + "\n")
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                            + "".join(f"q{i}\td{i}\t1\n" for i in range(len(pairs))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("--langs", nargs="+", default=["de", "fr"])
    parser.add_argument("--heldout-domains", nargs="+", default=HELDOUT_DOMAINS)
    parser.add_argument("--steps", type=int, default=300, help="MLM pretraining steps")
    parser.add_argument("--ct-steps", type=int, default=200, help="contrastive fine-tuning steps")
    parser.add_argument("--ct-lr", type=float, default=2e-4)
    parser.add_argument("--ct-batch", type=int, default=64, help="pairs per step: the in-batch negative pool")
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--retrieval", type=int, default=500, help="held-out queries (and documents) per language")
    parser.add_argument("--gold-sample", type=int, default=150)
    parser.add_argument("--gold-test", type=int, default=350)
    parser.add_argument("--distractors", type=float, default=1.0)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="small sizes: " + str(QUICK))
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    py = sys.executable

    from xlm_jax.data.gettext import DEFAULT_EXCLUDE_DOMAINS, build_gettext_corpus, para_name

    if not (work / "corpus" / "stats.json").is_file():
        build_gettext_corpus(work / "corpus", langs=args.langs,
                             exclude_domains=[*DEFAULT_EXCLUDE_DOMAINS, *args.heldout_domains])
    if not (work / "corpus_heldout" / "stats.json").is_file():
        build_gettext_corpus(work / "corpus_heldout", langs=args.langs, domains=args.heldout_domains)
    tok_path, _ = prepare(work, args.langs, args.steps, args.vocab, models={"mlm": "{mlm: 1.0}"}, untrained=True)

    held, counts = heldout_pairs(work, args.langs)
    print("held-out pairs:", json.dumps(counts), flush=True)
    bucc = work / "bucc"
    bucc.mkdir(exist_ok=True)
    sizes = {}
    for lang in args.langs:
        write_beir(work / "retrieval" / lang, lang, held[lang][:args.retrieval])
        sizes[lang] = write_bucc(bucc, lang, held[lang], args.gold_sample, args.gold_test, args.distractors)

    # Contrastive fine-tuning on the training catalogs' pairs only.
    stems = [para_name("en", lang)[0] for lang in args.langs]
    train = "[" + ",".join(f"para:{work}/corpus/para/{s}:train" for s in stems) + "]"
    valid = "[" + ",".join(f"para:{work}/corpus/para/{s}:valid" for s in stems) + "]"
    inits = {"contrastive from untrained": "untrained", "contrastive from mlm": "mlm"}
    for name, init in inits.items():
        out = work / f"ct_{init}"
        if not (out / "results.json").is_file():
            run([py, "-m", "xlm_jax.finetune", "task=contrastive", f"init={work}/pretrain_{init}",
                 f"tokenizer={tok_path}", f"out={out}", f"train={train}", f"valid={valid}",
                 "protocol=translate_train_all", "max_len=64", f"batch_size={args.ct_batch}", "eval_batch_size=128",
                 f"max_steps={args.ct_steps}", f"eval_every={max(1, args.ct_steps // 2)}", "log_every=20",
                 f"lr={args.ct_lr}", "warmup_ratio=0.1", "contrastive.temperature=0.05",
                 "contrastive.symmetric=true", "contrastive.pooling=mean"], log)

    models = {"untrained (initialisation)": work / "pretrain_untrained", "mlm": work / "pretrain_mlm",
              **{name: work / f"ct_{init}" for name, init in inits.items()}}
    results: dict = {"langs": args.langs, "heldout_domains": args.heldout_domains, "steps": args.steps,
                     "ct_steps": args.ct_steps, "ct_lr": args.ct_lr, "ct_batch": args.ct_batch, "k": args.k,
                     "quick": args.quick, "heldout_pairs": counts, "bucc_sizes": sizes,
                     "retrieval_queries": {x: len(held[x][:args.retrieval]) for x in args.langs}, "seeds": 1,
                     "models": {}}
    evals = work / "evals"
    evals.mkdir(exist_ok=True)
    for name, ckpt in models.items():
        tag = ckpt.name
        res = {"retrieval": {}}
        for lang in args.langs:
            out = evals / f"retrieval_{tag}_{lang}.json"
            if not out.is_file():
                run([py, "-m", "xlm_jax.evaluate", "retrieval", "--checkpoint", str(ckpt), "--tokenizer",
                     str(tok_path), "--data", str(work / "retrieval" / lang), "--max-len", "64", "--out", str(out)],
                    log)  # no --query-lang: these XLM-R models have no language embeddings (a lang is refused)
            res["retrieval"][lang] = json.loads(out.read_text())
        out = evals / f"bucc_{tag}.json"
        if not out.is_file():
            run([py, "-m", "xlm_jax.evaluate", "bucc", "--checkpoint", str(ckpt), "--tokenizer", str(tok_path),
                 "--data", str(bucc), "--langs", *args.langs, "--k", str(args.k), "--max-len", "64",
                 "--out", str(out)], log)
        res["bucc"] = json.loads(out.read_text())
        results["models"][name] = res

    langs = args.langs
    head = (["model"] + [f"{x} P@1 / nDCG@10" for x in langs] + ["avg P@1", "avg nDCG@10"]
            + [f"{x} BUCC P / R / F1" for x in langs] + ["avg F1"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results["models"].items():
        ret, per = res["retrieval"], res["bucc"]["langs"]
        cells = [f"{100 * ret[x]['recall@1']:.1f} / {100 * ret[x]['ndcg@10']:.1f}" for x in langs]
        cells += [f"{100 * sum(ret[x]['recall@1'] for x in langs) / len(langs):.1f}",
                  f"{100 * sum(ret[x]['ndcg@10'] for x in langs) / len(langs):.1f}"]
        cells += [f"{100 * per[x]['precision']:.1f} / {100 * per[x]['recall']:.1f} / {100 * per[x]['f1']:.1f}"
                  for x in langs]
        cells.append(f"{100 * sum(per[x]['f1'] for x in langs) / len(langs):.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    write_results(work, markdown, results)


if __name__ == "__main__":
    main()
