"""Hard-negative mining with the model itself: read and check the pairs file, the corpus and the options, embed
anchors and candidates with any checkpoint `xlm_jax.load` reads, choose the negatives
(`xlm_jax.tasks.negatives.select_negatives`) and write the pairs file with them (a temporary sibling renamed
into place). The command is `python -m xlm_jax.negatives`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from xlm_jax.core import outputs
from xlm_jax.core.errors import UserError
from xlm_jax.tasks import negatives as N
from xlm_jax.workflows.evaluate import _check_embed_args, embed_texts, load_embedder

OUT_SUFFIXES = N.JSONL_SUFFIXES + N.TSV_SUFFIXES


def run_mine_negatives(checkpoint: str, pairs_path: str, out: str, corpus: str | None = None, k: int = 4,
                       relative_margin: float | None = N.DEFAULT_RELATIVE_MARGIN, absolute_margin: float | None = None,
                       tokenizer_path: str | None = None, query_prompt: str | None = None,
                       corpus_prompt: str | None = None, query_lang: str | None = None,
                       corpus_lang: str | None = None, layer: int = -1, max_len: int = 128, batch_size: int = 32,
                       backend: str = "auto", force: bool = False, *, load: Callable, log=sys.stderr) -> dict:
    """Mines `k` negatives for every row of `pairs_path` and writes the pairs file `out` (JSONL for .jsonl /
    .json, TSV for .tsv / .txt) -> a summary dict.

    Candidates: the pairs' positives plus the texts of `corpus` (a text file or BEIR corpus.jsonl; None: the
    positives only). Anchors are embedded with `query_prompt` (default: a sentence-transformers model's "query"
    prompt), candidates with `corpus_prompt` (default its "passage" / "document" prompt), as `evaluate retrieval`
    embeds queries and documents: a sentence-transformers directory as `SentenceTransformer.encode` does, any
    other checkpoint as the mean of layer `layer` (an XLM model with language embeddings needs `query_lang` /
    `corpus_lang`). Existing negatives of a row are replaced.

    Every check comes before the model is loaded and nothing is written on failure: UserError for k < 1, a margin
    out of range, a bad --out (exists without `force`, is the input, wrong suffix), and what `read_pairs` /
    `read_corpus_texts` refuse (file, line, value)."""
    N.check_options(k, relative_margin, absolute_margin)
    _check_embed_args(max_len, batch_size)
    out_path = Path(out)
    if out_path.suffix.lower() not in OUT_SUFFIXES:
        raise UserError(f"{out}: the output must end in .jsonl / .json (JSONL) or .tsv / .txt (TSV)")
    outputs.check_overlap(out_path, pairs_path, "pairs file")  # refused with --force too
    if corpus is not None:
        outputs.check_overlap(out_path, corpus, "corpus")
    outputs.check_file_output(out_path, force=force)
    pairs, _ = N.read_pairs(pairs_path)
    corpus_texts = N.read_corpus_texts(corpus) if corpus is not None else []
    candidates = N.candidate_texts(pairs, corpus_texts)
    out_fmt = N.pairs_format(out_path)
    model, tokenizer = load_embedder(checkpoint, tokenizer_path, load)
    common = dict(layer=layer, max_len=max_len, batch_size=batch_size)
    anchors = embed_texts(model, tokenizer, [p.anchor for p in pairs], query_lang, query_prompt, ("query",), **common)
    cand = embed_texts(model, tokenizer, candidates, corpus_lang, corpus_prompt, ("passage", "document"), **common)
    # The positives are candidates: their rows of the candidate embeddings (same prompt as every candidate).
    index = {t: i for i, t in enumerate(candidates)}
    positives = cand[[index[p.positive] for p in pairs]]
    negs, scores, stats = N.select_negatives(pairs, anchors, positives, candidates, cand, k, relative_margin,
                                             absolute_margin, backend=backend)
    text = N.format_pairs(pairs, negs, out_fmt, out_path)
    outputs.atomic_write_text(out_path, text)
    summary = {"pairs": len(pairs), "candidates": len(candidates), "k": k, "relative_margin": relative_margin,
               "absolute_margin": absolute_margin, "negatives": sum(len(x) for x in negs),
               "rows_short_of_k": stats.short_rows, "skipped_as_positive_or_anchor": stats.excluded_positive,
               "skipped_by_margin": stats.excluded_margin, "out": str(out_path)}
    if stats.short_rows:
        print(f"warning: {stats.short_rows} of {len(pairs)} rows have fewer than {k} negatives (the corpus has no "
              "more valid candidates for them; lower the margins or give a larger --corpus)", file=log)
    return summary
