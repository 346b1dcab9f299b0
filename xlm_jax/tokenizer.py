"""`python -m xlm_jax.tokenizer train|extend`: train a SentencePiece model with XLM-R's ids, or append pieces for new
text to one. The library lives in `xlm_jax.data.tokenizer` and `xlm_jax.data.vocab`."""

from __future__ import annotations

import time

from xlm_jax.core.errors import ArgumentParser, arg_range, exit_on_user_error, nonnegative_int, positive_int
from xlm_jax.data.tokenizer import MIN_PIECES, Tokenizer, train_tokenizer
from xlm_jax.data.vocab import extend_tokenizer, format_report

def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.tokenizer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a SentencePiece model on a multilingual corpus")
    train.add_argument("--input", nargs="+", required=True, help="corpus directories (mono/*.txt) or {lang}.txt files")
    train.add_argument("--vocab-size", type=arg_range(MIN_PIECES), required=True)
    train.add_argument("--output", required=True, help="PATH.model")
    train.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    train.add_argument("--alpha", type=arg_range(0, 1, integer=False), default=0.3, help="language sampling exponent (XLM-R: 0.3)")
    train.add_argument("--max-sentences", type=positive_int, default=None, help="sentences to sample in total (default: all)")
    train.add_argument("--seed", type=nonnegative_int, default=0)
    train.add_argument("--quiet", action="store_true", help="hide SentencePiece's own progress log")
    train.add_argument("--force", action="store_true", help="replace an existing PATH.model / PATH.vocab")
    extend = commands.add_parser("extend", help="append pieces learned on new text to a model (see xlm_jax.data.vocab)")
    extend.add_argument("--base", required=True, help="the SentencePiece PATH.model to extend")
    extend.add_argument("--input", nargs="+", action="extend", required=True, help="text of the new language(s)")
    extend.add_argument("--add", type=positive_int, required=True, help="pieces to append (at most)")
    extend.add_argument("--output", required=True, help="PATH.model (PATH.vocab is written beside it)")
    extend.add_argument("--check-input", nargs="+", action="extend", default=[],
                        help="base-language text files: report how their segmentation changed")
    extend.add_argument("--report", default=None, help="also write the report as JSON here")
    extend.add_argument("--new-characters-only", action="store_true",
                        help="add only pieces holding a character the base cannot represent (base text unchanged)")
    extend.add_argument("--seed", type=nonnegative_int, default=0)
    extend.add_argument("--quiet", action="store_true", help="hide SentencePiece's own progress log")
    extend.add_argument("--force", action="store_true", help="replace an existing output / report")
    args = parser.parse_args(argv)
    if args.command == "extend":
        with exit_on_user_error():
            result = extend_tokenizer(args.base, args.input, args.add, args.output, check_inputs=args.check_input,
                                      report=args.report, force=args.force, seed=args.seed, verbose=not args.quiet,
                                      new_characters_only=args.new_characters_only)
        print(format_report(result))
        print(f"wrote {args.output}" + (f" and {args.report}" if args.report else ""))
        return
    start = time.perf_counter()
    with exit_on_user_error():
        drawn = train_tokenizer(
            args.input, args.vocab_size, args.output, args.model_type, args.alpha, args.max_sentences, args.seed,
            verbose=not args.quiet, force=args.force,
        )
        tok = Tokenizer.load(args.output)
    print(f"{'lang':<8} {'sampled':>9}")
    for lang, n in sorted(drawn.items(), key=lambda kv: -kv[1]):
        print(f"{lang:<8} {n:>9}")
    print(f"wrote {args.output}: {len(tok)} ids (mask {tok.mask_id}), sha256 {tok.sha256[:12]}…, "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
