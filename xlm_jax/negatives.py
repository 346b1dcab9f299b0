"""`python -m xlm_jax.negatives`: mine hard negatives for a pairs file with the model itself.

    python -m xlm_jax.negatives --checkpoint CKPT --pairs PAIRS.jsonl|.tsv [--corpus TEXTS.txt|corpus.jsonl]
                                --out OUT.jsonl|.tsv [--k 4] [--relative-margin 0.05] [--absolute-margin M]
                                [--query-prompt P --corpus-prompt P] [--backend auto|faiss|numpy] [--force]

Embeds every anchor and every candidate (the pairs' positives plus the --corpus texts) with CKPT (anything
`xlm_jax.load` reads: a sentence-transformers directory with its pooling, length and "query" / "passage"
prompts, a Hugging Face or xlm_jax checkpoint with mean pooling of --layer), finds each anchor's nearest
candidates by cosine (`xlm_jax.tasks.mining.knn`: faiss when installed), and keeps the k best that are neither
a positive of that anchor nor the anchor (exact or normalised duplicates) and that pass sentence-transformers'
`mine_hard_negatives` margins: dropped when score + absolute_margin > positive score, or score > positive score −
|positive score| · relative_margin (default 0.05, NV-Retriever's setting; 0 disables it). The rules:
`xlm_jax.tasks.negatives`. --out gets the pairs file with "negatives" filled (existing negatives replaced): JSONL
for .jsonl / .json, TSV (`anchor<TAB>positive<TAB>neg...`) for .tsv / .txt; a summary goes to stdout as JSON.

Bad input (a pairs row without a positive or with an empty text, k < 1, a margin out of range, an empty corpus,
an --out that exists without --force or is an input) is one `error:` line naming the file, line and value, exit
2, before the model is loaded; nothing is written.
"""

from __future__ import annotations

import functools
import json

from xlm_jax.api import load
from xlm_jax.core.errors import ArgumentParser, arg_range, exit_on_user_error, positive_int
from xlm_jax.tasks import min_len
from xlm_jax.workflows.negatives import run_mine_negatives

# The model is loaded with the notebook API (this layer's `xlm_jax.load`).
run = functools.partial(run_mine_negatives, load=load)


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m xlm_jax.negatives", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="any checkpoint xlm_jax.load reads (a sentence-transformers "
                   "directory embeds as SentenceTransformer.encode)")
    p.add_argument("--pairs", required=True, help="pairs file: JSONL {\"anchor\", \"positive\", \"negatives\"} or TSV "
                   "anchor<TAB>positive[<TAB>negative...]")
    p.add_argument("--corpus", default=None, help="extra candidates: one text per line, or a BEIR corpus.jsonl "
                   "(default: the pairs' positives only)")
    p.add_argument("--out", required=True, help="the pairs file with negatives: .jsonl / .json or .tsv / .txt (new, "
                   "or replaced with --force)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--k", type=arg_range(1), default=4, help="negatives per row (default 4)")
    p.add_argument("--relative-margin", type=arg_range(0, 1, integer=False), default=0.05,
                   help="drop candidates scoring above positive - |positive| * margin (default 0.05; 0: only those "
                   "above the positive)")
    p.add_argument("--absolute-margin", type=arg_range(0, 2, integer=False), default=None,
                   help="drop candidates scoring above positive - margin (default: not applied)")
    p.add_argument("--tokenizer", default=None, help="a SentencePiece .model or tokenizer.json (default: the "
                   "checkpoint's own)")
    p.add_argument("--query-prompt", default=None, help="text prepended to every anchor (default: a "
                   "sentence-transformers model's \"query\" prompt, if it has one)")
    p.add_argument("--corpus-prompt", default=None, help="text prepended to every candidate (default: its "
                   "\"passage\" or \"document\" prompt)")
    p.add_argument("--query-lang", default=None, help="language of the anchors (XLM models with language embeddings)")
    p.add_argument("--corpus-lang", default=None, help="language of the candidates")
    p.add_argument("--layer", type=int, default=-1, help="layer to pool (1..L, negative from the top; default -1)")
    p.add_argument("--max-len", type=arg_range(min_len("xlmr", False)), default=128,
                   help="tokens per text, specials included (a sentence-transformers directory uses its own)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--backend", choices=("auto", "faiss", "numpy"), default="auto",
                   help="nearest neighbours by faiss if installed (auto), or blocked NumPy products")
    args = p.parse_args(argv)
    with exit_on_user_error():
        summary = run(args.checkpoint, args.pairs, args.out, args.corpus, args.k, args.relative_margin,
                      args.absolute_margin, args.tokenizer, args.query_prompt, args.corpus_prompt, args.query_lang,
                      args.corpus_lang, args.layer, args.max_len, args.batch_size, args.backend, args.force)
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
