"""Extractive QA end to end on small hand-made SQuAD-format files in five languages (en, de, fr, es, zh).

    python experiments/qa_tiny.py WORK_DIR [--steps 60] [--seed 0]

No QA data set is on this machine, so this builds one with a rule a model can learn: each context is a run of
filler words (whitespace-separated in en/de/fr/es, written without spaces in zh) holding the word for "file" and
the phrase for "error message"; the question asks for one of them ("where file?" / "where error message?") and
the answer is that word or phrase at its character offset. Some contexts are long enough to need several windows
(max_len 48, doc_stride 16). Steps:
1. an 80-piece SentencePiece model on the five languages' words and a random `xlmr_tiny` checkpoint (no
   pretraining: nothing ties the languages together, so zero-shot transfer is not expected);
2. `python -m xlm_jax.finetune configs/finetune_mlqa.yaml` on the English train file only (zero-shot), valid on
   English, test on every language, with the tiny-model overrides below;
3. `python -m xlm_jax.evaluate task` on the best checkpoint.
Both run in this process through their `main`. Results: WORK_DIR/results.json (also printed).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# filler words x 5, then "file", "error", "message", "where"
WORDS = {
    "en": ("the cat dog house open", "file", "error", "message", "where"),
    "de": ("die katze hund haus öffnen", "datei", "fehler", "meldung", "wo"),
    "fr": ("le chat chien maison ouvrir", "fichier", "erreur", "message", "où"),
    "es": ("el gato perro casa abrir", "archivo", "error", "mensaje", "dónde"),
    "zh": ("猫 狗 房子 打开 窗口", "文件", "错误", "消息", "哪里"),
}


def squad_file(path: Path, lang: str, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    fillers, file_w, error_w, message_w, where_w = WORDS[lang]
    fillers = fillers.split()
    sep = "" if lang == "zh" else " "
    error_phrase = f"{error_w}{sep}{message_w}"
    paragraphs = []
    for i in range(n):
        words = [rng.choice(fillers) for _ in range(40 if i % 5 == 0 else rng.randint(3, 10))]
        for item in rng.sample([file_w, error_phrase], 2):
            words.insert(rng.randrange(len(words) + 1), item)
        context = sep.join(words) + ("。" if lang == "zh" else ".")
        asked = file_w if i % 2 else error_phrase
        start = len(sep.join(words[: words.index(asked)])) + (len(sep) if words.index(asked) else 0)
        assert context[start:start + len(asked)] == asked
        paragraphs.append({"context": context, "qas": [{"id": f"{lang}-{i}", "question": f"{where_w} {asked}?",
                                                        "answers": [{"text": asked, "answer_start": start}]}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": lang, "paragraphs": paragraphs}]},
                               ensure_ascii=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)

    import flax.linen as nn
    import jax

    from xlm_jax import evaluate, finetune
    from xlm_jax.training.checkpoint import save_params
    from xlm_jax.models.config import get_model_config
    from xlm_jax.models.xlm import XLMForMaskedLM, init_params
    from xlm_jax.data.tokenizer import train_tokenizer

    corpus = work / "words.txt"
    rng = random.Random(args.seed)
    corpus.write_text("\n".join(" ".join(rng.choice(" ".join(w).split()) for _ in range(8))
                                for w in WORDS.values() for _ in range(200)) + "\n")
    if not (work / "t.model").exists():
        train_tokenizer([str(corpus)], 80, str(work / "t.model"))
    if not (work / "xlmr_tiny").exists():
        cfg = get_model_config("xlmr_tiny")
        save_params(work / "xlmr_tiny", nn.unbox(init_params(XLMForMaskedLM(cfg), jax.random.key(args.seed))), cfg)
    files = {"train": squad_file(work / "train.en.json", "en", 96, args.seed + 1)}
    for k, lang in enumerate(WORDS):
        files[lang] = squad_file(work / f"test.{lang}.json", lang, 40, args.seed + 10 + k)
    run_dir = work / f"run_{args.steps}"
    overrides = [f"init={work / 'xlmr_tiny'}", f"tokenizer={work / 't.model'}", f"out={run_dir}",
                 f"train=[en:{files['train']}]", f"valid=[en:{files['en']}]",
                 "test=[" + ",".join(f"{lang}:{files[lang]}" for lang in WORDS) + "]",
                 "max_len=48", "doc_stride=16", "max_query_len=12", "batch_size=16", "lr=2e-3", "dropout=0",
                 "dtype=float32", f"max_steps={args.steps}", f"eval_every={args.steps // 2}", "log_every=10",
                 f"seed={args.seed}"]
    finetune.main([str(ROOT / "configs" / "finetune_mlqa.yaml"), *overrides])
    evaluate.main(["task", "--checkpoint", str(run_dir), "--tokenizer", str(work / "t.model"), "--data",
                   *(f"{lang}:{files[lang]}" for lang in WORDS)])
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    table = json.loads((run_dir / "results.json").read_text())
    result = {"command": " ".join(["python experiments/qa_tiny.py", str(work), "--steps", str(args.steps)]),
              "losses": {r["step"]: round(r["loss"], 4) for r in log if "loss" in r},
              "test": {lang: {k: round(100 * v[k], 1) for k in ("exact_match", "f1")} | {"n": v["n"]}
                       for lang, v in table["splits"]["test"]["per_lang"].items()},
              "train_windows": table["train_windows"], "train_windows_without_answer":
                  table["train_windows_without_answer"], "best_step": table["best_step"]}
    (work / "results.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
