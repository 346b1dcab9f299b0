"""Embeddings per second on the CPU: `xlm_jax.load(dir).embed` against `SentenceTransformer(dir).encode`
(PyTorch) on the same sentence-transformers directory and the same variable-length texts, with the same threads,
alternating the two sides in one process (issue 23, item 7, first half). Figures: docs/benchmarks.md
("Sentence embeddings: xlm_jax vs sentence-transformers").

    python experiments/embed_vs_torch.py [--sentences 512] [--batch 32] [--repeats 5] [--threads 1]
                                         [--models small,medium] [--out docs/results/embed_vs_torch.json]

Model: for each shape of SHAPES, a random `transformers.XLMRobertaModel` (weights perturbed so every tensor
matters) with the gettext SentencePiece tokenizer (the cached default `~/.cache/xlm_jax/tokenizers/gettext-*.model`,
else one trained on the sampled texts), saved by sentence-transformers as Transformer (max_seq_length 128) +
Pooling("mean") + Normalize: the multilingual paraphrase / e5 layout. Both sides load that directory.

Texts: real multilingual gettext messages (the default corpus `~/.cache/xlm_jax/gettext`, built with
`xlm_jax.data.gettext.build_gettext_corpus` when absent): `--sentences` lines sampled (seed 0) from mono/{LANGS}.txt,
so lengths vary (a few to over 128 pieces).

Timing: one untimed call of each side first (ours compiles its shapes there; its time is reported as
first_call_s), then `--repeats` rounds of [ours, theirs], each the whole list in one call with batch_size =
`--batch`. Ratios are per round (theirs' seconds / ours': above 1 means xlm_jax is faster); medians are reported.
Both frameworks share the process: while one runs, the other is idle. `--threads N` pins the process to N CPUs
(XLA sizes its thread pool from the affinity mask) and sets torch's thread count to N.

First calls: `first_call_s` is each side's first call in the process (ours compiles its shapes there). After
all rounds, `fresh_first_call_s` times a new session's first call, from `load` to the vectors, on the same texts:
`no_cache` (ours recompiles every shape), then with JAX's persistent compilation cache switched on
(`jax.experimental.compilation_cache.set_cache_dir`, min compile time 0): `cache_filled` (the session that
compiles and writes it) and `cache_hit` (the next one, which reads the compiled shapes back).

Where the time goes (ours, after the rounds, same texts): tokenization alone (`tokenizer.batch_encode`, theirs:
`SentenceTransformer.preprocess`), the pooled forward on already-tokenized rows (`pool_ids`), and the padded
positions each side computes (ours: power-of-two widths and row counts; theirs: each batch padded to its longest
row) against the real tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LANGS = ("en", "de", "fr", "es", "ru", "ja", "zh", "ar", "hi", "pt", "it", "pl", "tr", "ko", "uk", "vi")
SHAPES = {  # transformers.XLMRobertaConfig fields
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "medium": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=2048),
}
MAX_SEQ_LENGTH = 128


def cache_dir() -> Path:
    return Path(os.environ.get("XLM_JAX_CACHE") or Path.home() / ".cache" / "xlm_jax")


def gettext_corpus(tmp: Path) -> Path:
    d = cache_dir() / "gettext"
    if (d / "mono").is_dir():
        return d
    from xlm_jax.data.gettext import build_gettext_corpus

    build_gettext_corpus(tmp / "gettext")
    return tmp / "gettext"


def sample_texts(corpus: Path, n: int, rng: random.Random) -> list[str]:
    lines = []
    for lang in LANGS:
        f = corpus / "mono" / f"{lang}.txt"
        if f.is_file():
            lines += [x for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
    return rng.sample(lines, min(n, len(lines)))


def spm_model(tmp: Path, texts: list[str]) -> Path:
    found = sorted((cache_dir() / "tokenizers").glob("gettext-*.model"))
    if found:
        return found[0]
    from xlm_jax.data.tokenizer import train_tokenizer

    (tmp / "spm.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    train_tokenizer([str(tmp / "spm.txt")], 4000, str(tmp / "spm.model"))
    return tmp / "spm.model"


def build_st_dir(d: Path, shape: dict, spm: Path) -> Path:
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer, models

    (d / "src").mkdir(parents=True)
    shutil.copy(spm, d / "src" / "sentencepiece.bpe.model")
    tok = transformers.XLMRobertaTokenizer.from_pretrained(str(d / "src"))
    torch.manual_seed(0)
    cfg = transformers.XLMRobertaConfig(vocab_size=len(tok), max_position_embeddings=MAX_SEQ_LENGTH + 2,
                                        type_vocab_size=1, layer_norm_eps=1e-5, **shape)
    model = transformers.XLMRobertaModel(cfg, add_pooling_layer=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    model.save_pretrained(d / "hf")
    tok.save_pretrained(d / "hf")
    st = SentenceTransformer(modules=[models.Transformer(str(d / "hf"), max_seq_length=MAX_SEQ_LENGTH),
                                      models.Pooling(shape["hidden_size"], "mean"), models.Normalize()])
    st.save(str(d / "st"))
    return d / "st"


def median(xs):
    return float(statistics.median(xs))


def padded_positions(lengths: list[int], batch: int, ours: bool, chars: list[int]) -> int:
    """Positions a side computes for rows of `lengths` pieces in batches of `batch`: ours sorts by pieces and pads
    each batch to `xlm_jax.api.bucket` widths and row counts, theirs (`encode`) sorts by characters (`chars`,
    longest first) and pads each batch to its longest row."""
    from xlm_jax.api import MIN_WIDTH, bucket

    order = sorted(lengths) if ours else [n for _, n in sorted(zip(chars, lengths), key=lambda x: -x[0])]
    total = 0
    for s in range(0, len(order), batch):
        chunk = order[s:s + batch]
        if ours:
            total += bucket(max(chunk), MIN_WIDTH, MAX_SEQ_LENGTH + 2) * bucket(len(chunk), 1, batch)
        else:
            total += max(chunk) * len(chunk)
    return total


def bench_embed(st_dir: Path, texts: list[str], args) -> dict:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    import xlm_jax

    ours = xlm_jax.load(st_dir)
    ours.batch_size = args.batch
    theirs = SentenceTransformer(str(st_dir), device="cpu")
    t0 = time.perf_counter()
    a = ours.embed(texts)
    first_jax = time.perf_counter() - t0
    t0 = time.perf_counter()
    b = theirs.encode(texts, batch_size=args.batch, convert_to_numpy=True)
    first_torch = time.perf_counter() - t0
    jax_s, torch_s, ratios = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours.embed(texts)
        jax_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        theirs.encode(texts, batch_size=args.batch, convert_to_numpy=True)
        torch_s.append(time.perf_counter() - t0)
        ratios.append(torch_s[-1] / jax_s[-1])

    # Where the time goes (ours): tokenization, then the pooled forward on the tokenized rows.
    t0 = time.perf_counter()
    enc = ours.tokenizer.batch_encode(texts, MAX_SEQ_LENGTH)
    tok_jax = time.perf_counter() - t0
    rows = [r[:int(m.sum())].tolist() for r, m in zip(enc["input_ids"], enc["attention_mask"])]
    t0 = time.perf_counter()
    ours.pool_ids(rows, ours.config.num_layers - 1, "mean")
    forward_jax = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs.preprocess(texts)
    tok_torch = time.perf_counter() - t0
    lengths, chars = [len(r) for r in rows], [len(t) for t in texts]
    n = len(texts)
    return {"texts": n, "real_tokens": sum(lengths),
            "padded_positions": {"jax": padded_positions(lengths, args.batch, True, chars),
                                 "torch": padded_positions(lengths, args.batch, False, chars)},
            "jax_texts_per_s": n / median(jax_s), "torch_texts_per_s": n / median(torch_s),
            "jax_over_torch": median(ratios), "ratios": [round(r, 3) for r in ratios],
            "jax_s": [round(x, 4) for x in jax_s], "torch_s": [round(x, 4) for x in torch_s],
            "first_call_s": {"jax": round(first_jax, 3), "torch": round(first_torch, 3)},
            "jax_parts_s": {"tokenize": round(tok_jax, 4), "pool_ids": round(forward_jax, 4)},
            "torch_tokenize_s": round(tok_torch, 4),
            "max_abs_diff": float(np.abs(a - b).max()), "compiled_shapes": ours.compiled_shapes()}


def bench_first_calls(st_dir: Path, texts: list[str], args) -> dict:
    """Seconds of the first call of a freshly loaded model (a new notebook session: ours compiles its shapes,
    theirs warms up), from `load` to the vectors."""
    from sentence_transformers import SentenceTransformer

    import xlm_jax

    t0 = time.perf_counter()
    ours = xlm_jax.load(st_dir)
    ours.batch_size = args.batch
    ours.embed(texts)
    jax_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    SentenceTransformer(str(st_dir), device="cpu").encode(texts, batch_size=args.batch, convert_to_numpy=True)
    return {"jax": round(jax_s, 3), "torch": round(time.perf_counter() - t0, 3)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32, help="texts per batch, both sides")
    parser.add_argument("--repeats", type=int, default=5, help="alternating rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=None, help="CPUs (and torch threads) for both sides")
    parser.add_argument("--models", default="small,medium", help=f"shapes of {', '.join(SHAPES)}")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",")]
    for n in names:
        if n not in SHAPES:
            parser.error(f"--models: unknown shape {n!r} (valid: {', '.join(SHAPES)})")
    if args.threads:  # before jax starts: XLA sizes its CPU thread pool from the affinity mask
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
    import jax
    import sentence_transformers
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python experiments/embed_vs_torch.py " + " ".join(sys.argv[1:] if argv is None else argv)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    result = {"command": command, "uptime_before": uptime,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                         f"{len(os.sched_getaffinity(0))} used",
              "versions": {"python": platform.python_version(), "jax": jax.__version__, "torch": torch.__version__,
                           "sentence_transformers": sentence_transformers.__version__},
              "threads": args.threads, "torch_threads": torch.get_num_threads(), "batch": args.batch, "rows": []}
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        texts = sample_texts(gettext_corpus(tmp), args.sentences, rng)
        spm = spm_model(tmp, texts)
        result["tokenizer"] = spm.name
        for name in names:
            st_dir = build_st_dir(tmp / name, SHAPES[name], spm)
            row = {"shape": name, **SHAPES[name], "embed": bench_embed(st_dir, texts, args), "dir": st_dir}
            result["rows"].append(row)
            e = row["embed"]
            print(f"{name}: jax {e['jax_texts_per_s']:.1f} texts/s, torch {e['torch_texts_per_s']:.1f} "
                  f"(jax/torch {e['jax_over_torch']:.2f}x, per round {e['ratios']}; max |diff| "
                  f"{e['max_abs_diff']:.1e}); jax parts {e['jax_parts_s']}, torch tokenize {e['torch_tokenize_s']}; "
                  f"padded {e['padded_positions']} for {e['real_tokens']} real; first call {e['first_call_s']}",
                  flush=True)
        # A new session's first call: without a persistent compilation cache (ours compiles every shape again),
        # then with JAX's (jax.experimental.compilation_cache): the session that fills it, and the next one.
        for row in result["rows"]:
            row["fresh_first_call_s"] = {"no_cache": bench_first_calls(row["dir"], texts, args)}
        from jax.experimental.compilation_cache import compilation_cache

        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        compilation_cache.set_cache_dir(str(tmp / "jax_cache"))
        compilation_cache.reset_cache()
        for row in result["rows"]:
            first = row["fresh_first_call_s"]
            first["cache_filled"] = bench_first_calls(row["dir"], texts, args)
            first["cache_hit"] = bench_first_calls(row["dir"], texts, args)
            print(f"{row['shape']}: first call of a new session {first}", flush=True)
            del row["dir"]
    result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
