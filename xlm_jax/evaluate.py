"""Evaluation of fine-tuned checkpoints (per-language tables) and zero-shot sentence retrieval.

    python -m xlm_jax.evaluate task --checkpoint RUN_DIR [--tokenizer T.model] --data FILE… [--out DIR]
    python -m xlm_jax.evaluate retrieval --checkpoint CKPT [--tokenizer T.model] --src-file A --tgt-file B
                                         [--src-lang en --tgt-lang fr] [--layer K] [--max-len 128]

`task` rebuilds the model from a fine-tuning run's best checkpoint (`RUN_DIR/best`, whose `task.json` names the
task and its labels) and prints the per-language table (accuracy, or seqeval entity-level F1 for NER), writing
`results.md` / `results.json` to --out when given (a new or empty directory, or an earlier --out of evaluate;
anything else needs --force). Data files take an optional `LANG:` prefix (see
`xlm_jax.tasks.base`).

    python -m xlm_jax.evaluate tatoeba --checkpoint CKPT [--tokenizer T.model] --data DIR [--langs de fr …]
    python -m xlm_jax.evaluate bucc --checkpoint CKPT [--tokenizer T.model] --data DIR [--langs de fr …] [--k 4]
                                    [--tune-split sample] [--test-split test]

`tatoeba` and `bucc` read the released layouts and score as XTREME does (`xlm_jax.tasks.mining`): Tatoeba accuracy
(xx → en nearest neighbour) and BUCC 2018 mining P / R / F1 with ratio-margin scoring; they print JSON and
write it to --out when given (a new file; --force replaces one).

    python -m xlm_jax.evaluate retrieval --checkpoint CKPT [--tokenizer T.model] --data BEIR_DIR [--split test]
                                         [--query-lang X --corpus-lang en] [--query-prompt P --corpus-prompt P]
                                         [--backend auto|faiss|numpy] [--out FILE.json [--force]]

`retrieval` with --data reads a BEIR / MTEB directory (corpus.jsonl, queries.jsonl, qrels/{split}.tsv), embeds
queries and documents (a sentence-transformers directory as `SentenceTransformer.encode` does: its pooling, length
and "query" / "passage" prompts; any other checkpoint as below), ranks each query's top 100 documents by exact
cosine nearest neighbours (faiss when installed, else blocked NumPy) and prints a table of nDCG@10, MRR@10,
Recall@1/10/100 and MAP (pytrec_eval's definitions, `xlm_jax.tasks.retrieval_metrics`); --out writes the JSON.
Queries in one language and a corpus in another (--query-lang / --corpus-lang) is cross-lingual retrieval. A
qrels line naming an id absent from the corpus or queries (or any other bad line) is one `error:` line naming the
file, line and value, before the model is loaded and with nothing written. --tokenizer defaults to the one found
with the checkpoint.

`retrieval` with --src-file / --tgt-file embeds two line-aligned files (line i of A translates line i of B) as the mean of layer K's states
over the real tokens (XTREME's protocol; K counts layers from 1, negative from the top, default the last),
retrieves each sentence's nearest neighbour on the other side by cosine similarity, and prints JSON with
P@1 in both directions. Any xlm_jax checkpoint works: pretrained (MLM / TLM) or fine-tuned.

Every subcommand reads the checkpoint's own tokenizer (the copy its output holds) unless --tokenizer names another,
which is refused when its size or special ids do not fit the model (and warned about when the checkpoint recorded
another sha256): the same check `xlm_jax.load` makes.

This module is the command (arguments -> `xlm_jax.workflows.evaluate`); `retrieval`, `tatoeba` and `bucc`
load their model with the notebook API's `xlm_jax.load`.
"""

from __future__ import annotations

import functools
import json
import sys

from xlm_jax.api import load
from xlm_jax.core.errors import ArgumentParser, UserError, arg_range, exit_on_user_error, positive_int
from xlm_jax.tasks import min_len
from xlm_jax.workflows import evaluate as W
from xlm_jax.workflows.evaluate import cosine_matrix, embed_sentences, retrieval_scores, run_task_eval  # noqa: F401
from xlm_jax.workflows.loading import TASK_FILE, TaskInfo  # noqa: F401

TOKENIZER_HELP = ("a SentencePiece .model or tokenizer.json (default: the checkpoint's own); another is checked "
                  "against the model")

# The embedding workflows load their model with the notebook API (this layer's `xlm_jax.load`).
run_retrieval = functools.partial(W.run_retrieval, load=load)
run_tatoeba = functools.partial(W.run_tatoeba, load=load)
run_bucc = functools.partial(W.run_bucc, load=load)
run_beir = functools.partial(W.run_beir, load=load)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.evaluate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("task", help="evaluate a fine-tuned checkpoint on task data, per language")
    t.add_argument("--checkpoint", required=True, help="fine-tuning run directory (or its best/ directory)")
    t.add_argument("--tokenizer", default=None, help=TOKENIZER_HELP)
    t.add_argument("--data", nargs="+", required=True, help="data files, optionally LANG:PATH")
    t.add_argument("--out", default=None, help="directory for results.md / results.json: new, empty, or an "
                   "earlier --out of evaluate")
    t.add_argument("--force", action="store_true", help="write into --out even if it holds files evaluate did not "
                   "write (results.md / results.json are replaced, other files kept)")
    t.add_argument("--batch-size", type=positive_int, default=64)
    r = sub.add_parser("retrieval", help="ranked retrieval on a BEIR / MTEB directory (--data: nDCG@10, MRR@10, "
                       "Recall@k, MAP), or P@1 on line-aligned files (--src-file / --tgt-file)")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--tokenizer", default=None, help=TOKENIZER_HELP)
    r.add_argument("--data", default=None, help="BEIR / MTEB directory: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv")
    r.add_argument("--split", default="test", help="qrels split of --data (default test)")
    r.add_argument("--src-file", default=None, help="line-aligned mode: line i translates line i of --tgt-file")
    r.add_argument("--tgt-file", default=None)
    r.add_argument("--src-lang", "--query-lang", dest="src_lang", default=None,
                   help="language of --src-file (or of the queries of --data): recorded in the result, and fed to "
                   "the language embeddings of XLM models that have them")
    r.add_argument("--tgt-lang", "--corpus-lang", dest="tgt_lang", default=None,
                   help="language of --tgt-file (or of the corpus of --data)")
    r.add_argument("--query-prompt", default=None, help="--data: text prepended to every query (default: a "
                   "sentence-transformers model's \"query\" prompt, if it has one)")
    r.add_argument("--corpus-prompt", default=None, help="--data: text prepended to every document (default: its "
                   "\"passage\" or \"document\" prompt)")
    r.add_argument("--backend", choices=("auto", "faiss", "numpy"), default="auto",
                   help="--data: nearest neighbours by faiss if installed (auto), or blocked NumPy products")
    r.add_argument("--out", default=None, help="--data: also write the JSON result to this file (must be new)")
    r.add_argument("--force", action="store_true", help="replace an existing --out file")
    r.add_argument("--layer", type=int, default=-1, help="layer to pool (1..L, negative from the top; default -1)")
    r.add_argument("--max-len", type=arg_range(min_len("xlmr", False)), default=128,
                   help="tokens per sentence, specials included (capped at the model's positions)")
    r.add_argument("--batch-size", type=positive_int, default=32)
    for name, help_ in (("tatoeba", "Tatoeba accuracy (xx -> en, cosine) from tatoeba.{xxx}-eng.{xxx|eng} files"),
                        ("bucc", "BUCC 2018 bitext-mining precision / recall / F1 (ratio margin, threshold tuned on "
                                 "--tune-split)")):
        m = sub.add_parser(name, help=help_)
        m.add_argument("--checkpoint", required=True, help="pretraining run, checkpoint, or fine-tuning run")
        m.add_argument("--tokenizer", default=None, help=TOKENIZER_HELP)
        m.add_argument("--data", required=True, help="directory of the released files")
        m.add_argument("--langs", nargs="+", default=None, help="default: every language found in --data")
        m.add_argument("--layer", type=int, default=-1, help="layer to pool (1..L, negative from the top; default -1)")
        m.add_argument("--max-len", type=arg_range(min_len("xlmr", False)), default=128)
        m.add_argument("--batch-size", type=positive_int, default=32)
        m.add_argument("--backend", choices=("auto", "faiss", "numpy"), default="auto",
                       help="nearest neighbours: faiss if installed (auto), or blocked NumPy products")
        m.add_argument("--out", default=None, help="also write the JSON result to this file (must be new)")
        m.add_argument("--force", action="store_true", help="replace an existing --out file")
        if name == "bucc":
            m.add_argument("--k", type=positive_int, default=4, help="neighbours in the margin (default 4)")
            m.add_argument("--tune-split", default="sample", help="split whose gold pairs choose the threshold")
            m.add_argument("--test-split", default="test", help="split scored with that threshold (BUCC 2018's "
                           "released gold: sample and training; XTREME reports training)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.command in ("tatoeba", "bucc"):
            common = dict(langs=args.langs, layer=args.layer, max_len=args.max_len, batch_size=args.batch_size,
                          backend=args.backend, out=args.out, force=args.force)
            if args.command == "tatoeba":
                result = run_tatoeba(args.checkpoint, args.tokenizer, args.data, **common)
            else:
                result = run_bucc(args.checkpoint, args.tokenizer, args.data, tune_split=args.tune_split,
                                  test_split=args.test_split, k=args.k, **common)
            print(json.dumps(result, indent=2))
        elif args.command == "retrieval" and args.data is not None:
            if args.src_file or args.tgt_file:
                raise UserError("--data (a BEIR directory) and --src-file / --tgt-file (line-aligned files) are two "
                                "modes: give one")
            table, _ = run_beir(args.checkpoint, args.tokenizer, args.data, args.split, args.src_lang, args.tgt_lang,
                                args.layer, args.max_len, args.batch_size, args.backend, args.query_prompt,
                                args.corpus_prompt, args.out, args.force)
            print(table)
        elif args.command == "retrieval":
            if not (args.src_file and args.tgt_file):
                raise UserError("retrieval needs --data BEIR_DIR, or both --src-file and --tgt-file (line-aligned)")
            if args.out:
                raise UserError("--out is for --data (BEIR) retrieval; line-aligned retrieval prints its JSON")
            result = run_retrieval(args.checkpoint, args.tokenizer, args.src_file, args.tgt_file, args.src_lang,
                                   args.tgt_lang, args.layer, args.max_len, args.batch_size)
            print(json.dumps(result, indent=2))
        else:
            markdown, table = run_task_eval(args.checkpoint, args.tokenizer, args.data, args.out, args.batch_size,
                                            force=args.force)
            if table["truncated"]:
                print(f"note: {table['truncated']} inputs were longer than max_len={table['max_len']} and were truncated",
                      file=sys.stderr)
            print(markdown)


if __name__ == "__main__":
    main()
