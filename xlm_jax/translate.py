"""Translate text with an encoder–decoder:

    python -m xlm_jax.translate CKPT --src-lang en --tgt-lang fr [--beam N] [--length-penalty X] [--max-len N]
                                [--batch-size N] [--tokenizer T.model] < in.txt > out.txt

CKPT: anything `xlm_jax.load` reads that holds an encoder–decoder: an MT training run (`python -m
xlm_jax.train_mt`'s OUT, its latest checkpoint) or one of its checkpoints, a `convert` output, a Hugging Face
`EncoderDecoderModel` directory or an original XLM MT `.pth` (the last without a tokenizer: convert it with
`python -m xlm_jax.convert X.pth OUT --bpe-codes CODES`, which writes its Moses + BPE tokenizer into OUT, or give
--tokenizer such a directory). An XLM tokenizer encodes with the source language's Moses rules and detokenizes with
the target language's.
Line i of stdout translates line i of stdin (UTF-8); an empty (or all-blank) line stays an empty line. A line
longer than the encoder's positions is truncated, with one `warning:` line on stderr saying how many were.
--beam 1 (default) is greedy decoding, more is XLM's beam search with --length-penalty (score
`sum_logprob / length ** lp`, default 1); --max-len caps a translation's tokens, start and end included
(default: 1.5 x source length + 10 per batch, rounded up to a power of two).

Bad input (an unreadable checkpoint, a masked LM instead of an encoder–decoder, a language the model lacks, a
beam below 1, a length penalty that is not a number, a max length too small for the delimiters or above the
model's positions, stdin that is not UTF-8) is one `error:` line on stderr and exit 2, with nothing written to
stdout: everything is checked before the input is read, and the output is written once all lines are translated.

This module is the command only; the library is `xlm_jax.workflows.translate` (also behind `LoadedModel.translate`).
"""

from __future__ import annotations

import sys
import time
import warnings

from xlm_jax.api import load
from xlm_jax.core.errors import ArgumentParser, UserError, exit_on_user_error, positive_int
from xlm_jax.workflows.translate import check_translation


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--length-penalty {text!r}: must be a number (e.g. 1.0)") from None


def _read_stdin() -> list[str]:
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"stdin: not UTF-8 text (byte {e.start}: {e.reason})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the newline that ends the last line
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.translate",
                            description="Translate stdin line by line with an encoder-decoder checkpoint.")
    parser.add_argument("checkpoint", help="an MT checkpoint (train_mt output, convert output, HF "
                                           "EncoderDecoderModel directory, XLM MT .pth)")
    parser.add_argument("--src-lang", required=True, help="language of the input lines")
    parser.add_argument("--tgt-lang", required=True, help="language to translate into")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1: greedy decoding)")
    parser.add_argument("--length-penalty", default="1.0",
                        help="beam search: score = sum_logprob / length ** this (default 1.0)")
    parser.add_argument("--max-len", type=int, default=None,
                        help="tokens per translation, start and end included (default: from the source length)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="sentences per batch (default 32)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer to use instead of the checkpoint's own (a "
                        "SentencePiece model, a tokenizer.json, or an XLM tokenizer directory: vocab.json + merges.txt)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        length_penalty = _number(args.length_penalty)
        model = load(args.checkpoint, tokenizer=args.tokenizer)
        model.check_translate("python -m xlm_jax.translate")
        check_translation(model.config, args.src_lang, args.tgt_lang, args.beam, length_penalty, args.max_len,
                          args.batch_size)
        lines = _read_stdin()
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = model.translate(lines, src_lang=args.src_lang, tgt_lang=args.tgt_lang, beam=args.beam,
                                  length_penalty=length_penalty, max_len=args.max_len,
                                  batch_size=args.batch_size)  # no lines: [] (nothing written)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    sys.stdout.write("".join(line + "\n" for line in out))
    sys.stdout.flush()
    done = sum(1 for line in lines if line.strip())
    print(f"{len(lines)} lines: {done} translated, {len(lines) - done} empty (kept empty) "
          f"{args.src_lang}->{args.tgt_lang} in {time.perf_counter() - start:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
