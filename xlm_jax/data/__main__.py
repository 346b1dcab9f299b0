"""Data tools: `python -m xlm_jax.data bench DIR ...` (batch throughput) and `synth OUT ...` (a synthetic
preprocessed directory for benchmarks).

    python -m xlm_jax.data synth /tmp/synth --langs 10 --tokens 2000000 --para-pairs 3
    python -m xlm_jax.data bench /tmp/synth --seq-len 256 --batch-size 64 --steps 200 --objective mlm

synth's OUT must be new, empty or an earlier synth output (which is replaced); another directory is refused
unless --force (`xlm_jax.core.outputs`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from xlm_jax.core import outputs
from xlm_jax.data.batches import MIN_SEQ_LEN, BatchSource, DataConfig
from xlm_jax.data.corpus import PreprocessedCorpus
from xlm_jax.core.errors import (ArgumentParser, UserError, arg_range, check_range, exit_on_user_error, nonnegative_int,
                            positive_int)


def _zipf_sentences(rng: np.random.Generator, n_tokens: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Zipf-distributed ids 4..V-2 (so sample_alpha has rare words to favour), sentence lengths 5..60."""
    ids = 4 + (rng.zipf(1.2, size=n_tokens) - 1) % (vocab_size - 5)
    lengths = rng.integers(5, 61, size=n_tokens // 5)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    offsets = offsets[offsets <= n_tokens]
    return ids[: offsets[-1]].astype(np.int32), offsets.astype(np.int64)


MIN_SYNTH_TOKENS = 1000  # enough for at least one sentence (5..60 tokens) per language and per pair side
MIN_SYNTH_VOCAB = 6  # 4 specials, <mask> and one word


def _is_synthetic(directory: Path) -> bool:
    """A synth output written before output markers existed: its manifest says so."""
    manifest = directory / "manifest.json"
    return manifest.is_file() and str(json.loads(manifest.read_text()).get("source_hash", "")).startswith("synthetic-")


def write_synthetic(out: Path, n_langs: int, n_tokens: int, n_pairs: int, vocab_size: int, seed: int) -> None:
    """Fills the directory `out` (the CLI stages it: `xlm_jax.core.outputs.write_atomically`)."""
    check_range("--langs", n_langs, 1, integer=True)
    check_range("--tokens", n_tokens, MIN_SYNTH_TOKENS, integer=True)
    check_range("--para-pairs", n_pairs, 0, integer=True)
    if n_pairs > n_langs - 1:
        raise UserError(f"--para-pairs={n_pairs}: at most --langs - 1 = {n_langs - 1} (each pair joins two "
                        "neighbouring languages)")
    check_range("--vocab-size", vocab_size, MIN_SYNTH_VOCAB, integer=True)
    check_range("--seed", seed, 0, integer=True)
    rng = np.random.default_rng(seed)
    langs = [f"l{i:02d}" for i in range(n_langs)]
    train: dict = {"mono": {}, "para": {}}
    for lang in langs:
        ids, offsets = _zipf_sentences(rng, n_tokens, vocab_size)
        (out / "train" / "mono").mkdir(parents=True, exist_ok=True)
        np.save(out / "train" / "mono" / f"{lang}.ids.npy", ids)
        np.save(out / "train" / "mono" / f"{lang}.offsets.npy", offsets)
        train["mono"][lang] = {"sentences": len(offsets) - 1, "tokens": len(ids), "dropped": 0, "truncated": 0}
    for l1, l2 in zip(langs[:n_pairs], langs[1 : n_pairs + 1]):
        (out / "train" / "para").mkdir(parents=True, exist_ok=True)
        first = _zipf_sentences(rng, n_tokens // 4, vocab_size)
        n = len(first[1]) - 1
        lengths = rng.integers(5, 61, size=n)
        second = (4 + (rng.zipf(1.2, int(lengths.sum())) - 1) % (vocab_size - 5)).astype(np.int32)
        for lang, (ids, offsets) in ((l1, first), (l2, (second, np.concatenate([[0], np.cumsum(lengths)])))):
            np.save(out / "train" / "para" / f"{l1}-{l2}.{lang}.ids.npy", ids)
            np.save(out / "train" / "para" / f"{l1}-{l2}.{lang}.offsets.npy", offsets.astype(np.int64))
        train["para"][f"{l1}-{l2}"] = {"sentences": n, "tokens": {l1: len(first[0]), l2: len(second)}}
    manifest = {
        "format": 1,
        "tokenizer": {"path": "synthetic", "sha256": "", "vocab_size": vocab_size, "mask_id": vocab_size - 1,
                      "pad_id": 1, "bos_id": 0, "eos_id": 2, "unk_id": 3},
        "splits": {"train": train},
        "langs": langs,
        "max_len": 100,
        "source_hash": f"synthetic-{seed}",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


def bench(args: argparse.Namespace) -> dict:
    corpus = PreprocessedCorpus(args.dir)
    objectives = {args.objective: 1.0}
    mono = tuple(args.langs.split(",")) if args.langs else tuple(corpus.mono_langs("train"))
    pairs = tuple(corpus.para_pairs("train")) if args.objective == "tlm" else ()
    cfg = DataConfig(
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        objectives=objectives,
        mono_langs=mono if args.objective != "tlm" else (),
        para_pairs=pairs,
        sample_alpha=args.sample_alpha,
        mask_count="ceil" if args.sample_alpha else "stochastic",
        tlm_seq_len=args.tlm_seq_len,
        tlm_batching="tokens" if args.tlm_tokens_per_batch else "fixed",
        tlm_tokens_per_batch=args.tlm_tokens_per_batch,
    )
    source = BatchSource(corpus, cfg)
    t0 = time.perf_counter()
    source.batch(0)  # lazy per-language indices, token counts for sample_alpha
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = real = 0
    for step in range(1, args.steps + 1):
        batch = source.batch(step)[args.objective]
        tokens += batch["input_ids"].size
        real += int(batch["attention_mask"].sum())
    elapsed = time.perf_counter() - t0
    return {
        "objective": args.objective,
        "seq_len": args.seq_len,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "sample_alpha": args.sample_alpha,
        "setup_s": round(setup, 3),
        "ms_per_batch": round(1000 * elapsed / args.steps, 3),
        "tokens_per_s": round(tokens / elapsed),
        "real_tokens_per_s": round(real / elapsed),  # excludes TLM padding
    }


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="batch throughput (tokens/s, single process) from a preprocessed directory")
    b.add_argument("dir")
    b.add_argument("--seq-len", type=arg_range(MIN_SEQ_LEN), default=256)
    b.add_argument("--batch-size", type=positive_int, default=64)
    b.add_argument("--steps", type=positive_int, default=200)
    b.add_argument("--objective", choices=("mlm", "clm", "tlm"), default="mlm")
    b.add_argument("--langs", default="", help="comma-separated mono languages (default: all in train)")
    b.add_argument("--sample-alpha", type=arg_range(0, integer=False), default=0.0)
    b.add_argument("--tlm-seq-len", type=arg_range(MIN_SEQ_LEN, also={0: "--seq-len"}), default=0,
                   help="TLM row length (0: --seq-len)")
    b.add_argument("--tlm-tokens-per-batch", type=nonnegative_int, default=0,
                   help="token-budget TLM batches (0: fixed shape)")
    s = sub.add_parser("synth", help="write a synthetic preprocessed directory (Zipf ids)")
    s.add_argument("out")
    s.add_argument("--langs", type=positive_int, default=10)
    s.add_argument("--tokens", type=arg_range(MIN_SYNTH_TOKENS), default=2_000_000, help="tokens per language")
    s.add_argument("--para-pairs", type=nonnegative_int, default=3, help="at most --langs - 1")
    s.add_argument("--vocab-size", type=arg_range(MIN_SYNTH_VOCAB), default=32_000)
    s.add_argument("--seed", type=nonnegative_int, default=0)
    s.add_argument("--force", action="store_true",
                   help="replace OUT even if it holds files synth did not write (they are deleted)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.command == "bench":
            print(json.dumps(bench(args)))
        else:
            out = outputs.check_dir(args.out, "data.synth", force=args.force, legacy=_is_synthetic)
            outputs.write_atomically(out, lambda tmp: write_synthetic(tmp, args.langs, args.tokens, args.para_pairs,
                                                                      args.vocab_size, args.seed), "data.synth")
            print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
