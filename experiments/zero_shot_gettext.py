"""Zero-shot cross-lingual transfer on real text: the system's gettext catalogs (English program messages and
their human translations).

    python experiments/zero_shot_gettext.py WORK_DIR [--langs de fr es it pt] [--steps 400] [--vocab 4000]

Steps (each skipped when its output exists, so a re-run resumes):
1. corpus:     xlm_jax.data.gettext.build_gettext_corpus (en <-> each of --langs);
2. tokenizer:  python -m xlm_jax.tokenizer train;   preprocess: python -m xlm_jax.preprocess (5 % of the
               translation groups held out as valid: no valid sentence is in any train split, which
               results.json records as heldout_sentences_in_train, counted by experiments/heldout_leak.py);
3. pretrain two tiny XLM-R-style models with python -m xlm_jax.train: MLM only, and MLM + TLM;
4. retrieval:  P@1 en -> X and X -> en on the first 500 held-out (valid) pairs per language with no repeated
               sentence (their sentences are in no train split, mono or pair), for both models;
5. zero-shot classification: a 3-class topic task labelled by a rule on the *English* side of each pair
   ("error": error / failed / cannot / unable / invalid; "file": file / folder / directory; "other"), classes
   balanced by down-sampling. Fine-tune on English sentences only, test on the held-out translations in every
   language (their label is their English source's label), with both pretrained models.
Results: WORK_DIR/results.json and results.md (also printed).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ERROR = re.compile(r"\b(error|errors|failed|fail|cannot|can't|unable|invalid)\b", re.I)
FILE = re.compile(r"\b(file|files|folder|folders|directory|directories)\b", re.I)


def topic(english: str) -> str:
    return "error" if ERROR.search(english) else "file" if FILE.search(english) else "other"


def run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), flush=True)
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def decoded_pairs(pre: Path, tok, split: str, lang: str) -> list[tuple[str, str]]:
    """(english, translation) text pairs of one split of the preprocessed corpus."""
    from xlm_jax.data.corpus import PreprocessedCorpus

    corpus = PreprocessedCorpus(pre)
    l1, l2 = sorted(("en", lang))
    a, b = corpus.para(split, l1, l2)
    en, x = (a, b) if l1 == "en" else (b, a)
    return [(tok.decode(en.sentence(i)), tok.decode(x.sentence(i))) for i in range(len(en))]


def distinct(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs whose English and whose translation were not in an earlier pair. A repeated sentence (pt_BR
    and pt_PT translate the same English; one translation serves several messages) has several right answers
    in retrieval, of which P@1 counts one; the groups of the held-out split keep such pairs together."""
    seen_en, seen_x, out = set(), set(), []
    for en, x in pairs:
        if en not in seen_en and x not in seen_x:
            seen_en.add(en)
            seen_x.add(x)
            out.append((en, x))
    return out


def balanced(rows: list[dict], seed: int, cap: int) -> list[dict]:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    n = min(min(len(v) for v in by.values()), cap)
    rng = random.Random(seed)
    out = [r for v in by.values() for r in rng.sample(v, n)]
    rng.shuffle(out)
    return out


def write_results(work: Path, markdown: str, results: dict) -> None:
    """WORK/results.md (the table, also printed) and WORK/results.json (every figure): the gettext experiments'
    common ending."""
    (work / "results.md").write_text(markdown + "\n")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(markdown)


def prepare_text(work: Path, langs: list[str], vocab: int, log: Path) -> tuple[Path, Path, Path]:
    """WORK/corpus (this machine's gettext catalogs), WORK/tokenizer.model (SentencePiece, `vocab` pieces) and
    WORK/preprocessed (max length 64, 5 % of the translation groups held out as valid) -> their three paths;
    each step skipped when its output is there."""
    py = sys.executable
    corpus = work / "corpus"
    if not (corpus / "stats.json").is_file():
        from xlm_jax.data.gettext import build_gettext_corpus

        build_gettext_corpus(corpus, langs=langs)
    tok_path = work / "tokenizer.model"
    if not tok_path.is_file():
        run([py, "-m", "xlm_jax.tokenizer", "train", "--input", str(corpus), "--vocab-size", str(vocab),
             "--output", str(tok_path), "--max-sentences", "100000", "--quiet"], log)
    pre = work / "preprocessed"
    if not (pre / "manifest.json").is_file():
        run([py, "-m", "xlm_jax.preprocess", str(corpus), "--tokenizer", str(tok_path), "--out", str(pre),
             "--max-len", "64", "--valid-fraction", "0.05"], log)
    return corpus, tok_path, pre


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work")
    parser.add_argument("--langs", nargs="+", default=["de", "fr", "es", "it", "pt"])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--finetune-steps", type=int, default=150)
    args = parser.parse_args()
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    py = sys.executable

    corpus, tok_path, pre = prepare_text(work, args.langs, args.vocab, log)

    models = {"mlm": "{mlm: 1.0}", "mlm+tlm": "{mlm: 1.0, tlm: 1.0}"}
    for name, objectives in models.items():
        run_dir = work / f"pretrain_{name.replace('+', '_')}"
        if not (run_dir / "checkpoints" / str(args.steps)).is_dir():  # an interrupted run resumes
            run([py, "-m", "xlm_jax.train", f"run_dir={run_dir}", f"data.dir={pre}", f"data.objectives={objectives}",
                 f"train.steps={args.steps}", "train.batch_size=32", "train.seq_len=64", "train.eval_every=0",
                 "train.progress=false", "model.hidden_size=128", "model.num_layers=2", "model.num_heads=4",
                 "model.intermediate_size=512", "optimizer.warmup_steps=40", f"checkpoint.every={args.steps}",
                 "checkpoint.async_save=false"], log)

    from xlm_jax.api import load
    from xlm_jax.evaluate import embed_sentences, retrieval_scores
    from xlm_jax.data.tokenizer import Tokenizer

    tok = Tokenizer.load(tok_path)
    from xlm_jax.data.corpus import PreprocessedCorpus

    valid_pairs = {tuple(p) for p in PreprocessedCorpus(pre).para_pairs("valid")}
    langs = [lang for lang in args.langs if tuple(sorted(("en", lang))) in valid_pairs]
    held_out = {lang: distinct(decoded_pairs(pre, tok, "valid", lang))[:500] for lang in langs}
    # The held-out pairs are only worth measuring if the model never trained on their sentences: count the
    # valid / test sentences whose ids are in a train split of their language (0 since the split by groups).
    from heldout_leak import count_leaks

    leaks = count_leaks(pre)
    print(f"held-out sentences in a train split: {leaks['in_train']} of {leaks['heldout']}", flush=True)
    results: dict = {"retrieval": {}, "zero_shot": {}, "steps": args.steps, "finetune_steps": args.finetune_steps,
                     "seeds": 1, "langs": langs, "held_out_pairs": {lang: len(p) for lang, p in held_out.items()},
                     "heldout_sentences": leaks["heldout"], "heldout_sentences_in_train": leaks["in_train"]}
    for name in models:
        run_dir = work / f"pretrain_{name.replace('+', '_')}"
        model = load(run_dir)
        results["retrieval"][name] = {}
        for lang, pairs in held_out.items():
            en = embed_sentences(model, tok, [p[0] for p in pairs], layer=-1)
            x = embed_sentences(model, tok, [p[1] for p in pairs], layer=-1)
            results["retrieval"][name][lang] = retrieval_scores(en, x)

    # Zero-shot topic classification: English train (train split), held-out translations as valid / test.
    data = work / "topic"
    data.mkdir(exist_ok=True)
    train_rows = []
    for lang in langs:
        train_rows += [{"text": en, "label": topic(en), "lang": "en"} for en, _ in decoded_pairs(pre, tok, "train", lang)]
    unique = {r["text"]: r for r in train_rows}
    train_rows = balanced(list(unique.values()), 0, 600)
    test_rows = [{"text": x, "label": topic(en), "lang": lang} for lang, pairs in held_out.items() for en, x in pairs]
    test_rows += [{"text": en, "label": topic(en), "lang": "en"} for en, _ in {p[0]: p for ps in held_out.values() for p in ps}.values()]
    (data / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train_rows))
    (data / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test_rows))
    # Training is balanced but the test sets are not ("other" is most of every language): always answering the
    # commonest label of a language is the baseline to beat, not 1/3.
    results["majority_class"] = {}
    for lang in ["en"] + langs:
        labels = [r["label"] for r in test_rows if r["lang"] == lang]
        results["majority_class"][lang] = max(labels.count(label) for label in set(labels)) / len(labels)
    for name in models:
        run_dir = work / f"pretrain_{name.replace('+', '_')}"
        out = work / f"topic_{name.replace('+', '_')}"
        run([py, "-m", "xlm_jax.finetune", "task=classification", f"init={run_dir}", f"tokenizer={tok_path}",
             f"out={out}", f"train=[{data / 'train.jsonl'}]", f"test=[{data / 'test.jsonl'}]", "lr=3e-4",
             f"max_steps={args.finetune_steps}", "batch_size=32", "max_len=64", "log_every=50", "dropout=0.1"], log)
        results["zero_shot"][name] = json.loads((out / "results.json").read_text())["splits"]["test"]

    lines = ["## Retrieval P@1 on held-out gettext pairs (en→X / X→en)", "",
             "| model | " + " | ".join(langs) + " | avg |", "|---" * (len(langs) + 2) + "|"]
    for name, per in results["retrieval"].items():
        cells = [f"{per[x]['src_to_tgt_p@1']:.2f} / {per[x]['tgt_to_src_p@1']:.2f}" for x in langs]
        avg = sum(per[x]["src_to_tgt_p@1"] + per[x]["tgt_to_src_p@1"] for x in langs) / (2 * len(langs))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg:.2f} |")
    lines += ["", "## Zero-shot topic classification accuracy (fine-tuned on English only)", ""]
    all_langs = ["en"] + langs
    lines += ["| model | " + " | ".join(all_langs) + " | avg | avg without en |", "|---" * (len(all_langs) + 3) + "|"]
    rows = {name: {x: split["per_lang"][x]["score"] for x in all_langs if x in split["per_lang"]}
            for name, split in results["zero_shot"].items()}
    rows["always the majority class"] = results["majority_class"]
    for name, per in rows.items():
        cells = [f"{100 * per[x]:.1f}" if x in per else "–" for x in all_langs]
        avg, avg_x = (sum(per[x] for x in xs) / len(xs) for xs in (all_langs, langs))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * avg:.1f} | {100 * avg_x:.1f} |")
    counts = {lab: sum(r["label"] == lab for r in train_rows) for lab in ("error", "file", "other")}
    lines += ["", f"Training examples per class: {counts} (balanced; the test sets are not: see the majority row)."]
    markdown = "\n".join(lines)
    write_results(work, markdown, results)


if __name__ == "__main__":
    main()
