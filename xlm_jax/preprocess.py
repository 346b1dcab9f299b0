"""`python -m xlm_jax.preprocess CORPUS --tokenizer T.model --out DIR`: tokenize a corpus once into memory-mapped
arrays (the library: `xlm_jax.data.preprocess`)."""

from __future__ import annotations

import sys

from xlm_jax.core.errors import ArgumentParser, exit_on_user_error, fraction, positive_int
from xlm_jax.data.preprocess import format_summary, preprocess_corpus

def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.preprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus_dir")
    parser.add_argument("--tokenizer", required=True, help="SentencePiece PATH.model")
    parser.add_argument("--out", required=True,
                        help="output directory: new, empty, or an earlier output of preprocess (replaced)")
    parser.add_argument("--max-len", type=positive_int, default=256, help="pieces per sentence, without specials")
    parser.add_argument("--too-long", choices=("truncate", "drop"), default="truncate")
    parser.add_argument("--workers", type=positive_int, default=None, help="processes (default: all cores)")
    parser.add_argument("--valid-fraction", type=fraction, default=0.0, help="held out from a flat corpus")
    parser.add_argument("--test-fraction", type=fraction, default=0.0, help="held out from a flat corpus")
    parser.add_argument("--langs", nargs="+")
    parser.add_argument("--lowercase-and-strip-accents", action="store_true", help="XLM-style normalisation")
    parser.add_argument("--force", action="store_true",
                        help="replace --out even if it holds files preprocess did not write (they are deleted)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        manifest = preprocess_corpus(
            args.corpus_dir, args.tokenizer, args.out, args.max_len, args.workers, args.valid_fraction,
            args.test_fraction, args.langs, args.too_long, args.lowercase_and_strip_accents, progress=True,
            log=lambda msg: print(msg, file=sys.stderr), force=args.force,
        )
    print(format_summary(manifest))
    print(f"{args.out}: {len(manifest['langs'])} languages, vocab {manifest['tokenizer']['vocab_size']}")


if __name__ == "__main__":
    main()
