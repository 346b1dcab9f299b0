"""Checkpoint interop: `python -m xlm_jax.convert SRC DST [--to orbax|hf|sentence-transformers] [--architecture ARCH]`.

SRC: an xlm_jax (orbax) checkpoint, a Hugging Face directory, a fairseq XLM-R `model.pt` or an original XLM `.pth`
(detected in that order); a fine-tuning output directory means its best checkpoint (OUT/best), whose task head
goes to Hugging Face as `...ForSequenceClassification` / `...ForTokenClassification` / `...ForQuestionAnswering`
with its labels (`id2label`), and to orbax with its task.json. `--to orbax` (default unless SRC is ours) writes `DST/0/{params,model_config}`; `--to hf`
writes `DST/config.json` + `DST/model.safetensors` for transformers; the tokenizer files found next to SRC come
along. `--to sentence-transformers` writes the encoder with a pooling config (`--pooling mean|cls|...`,
`--normalize`, `--max-seq-length`; a sentence-transformers SRC, or a contrastive fine-tuning output, keeps its
own, prompts included; a --pooling that replaces SRC's is used with a `warning:` line on stderr naming both) that
`SentenceTransformer(DST)` loads with the vectors `xlm_jax.load(DST).embed` gives. DST is written to a temporary sibling directory and renamed into place. Bad input (flags, an unreadable or
refused source, a DST holding other files without --force) prints one `error:` line and exits 2.

Encoder-decoders (machine translation): an original XLM MT `.pth` (`encoder` / `decoder` state dicts, `params`,
`dico_*`), a Hugging Face `EncoderDecoderModel` directory (XLM-R encoder + `XLMRobertaForCausalLM` decoder with
cross-attention) or our MT checkpoint is read as one; `--to orbax` writes ours, `--to hf` an `EncoderDecoderModel`
(XLM-R family only: XLM's encoder-decoder has no transformers class, refused before anything is written).

An original XLM `.pth` (MLM or MT) gets its tokenizer when `--bpe-codes FILE` names its fastBPE codes, or a `codes` /
`codes_*` file lies next to it: DST then holds transformers' XLMTokenizer files (vocab.json from the checkpoint's
dictionary, merges.txt = the codes, tokenizer_config.json), which `xlm_jax.load(DST)` and `python -m
xlm_jax.translate DST` use (Moses + BPE, `xlm_jax.data.xlm_bpe`). Codes that do not parse or do not belong to the
dictionary are refused before anything is written.

This module is the command only; the library (the format readers, `load_any`, `export_hf`, `convert`, the pickle
allow-list) is `xlm_jax.workflows.convert`.
"""

from __future__ import annotations

import sys
import warnings

from xlm_jax.core.errors import ArgumentParser, UserError, exit_on_user_error, positive_int
from xlm_jax.models import hf_families, hf_mapping
from xlm_jax.models.sentence_transformers import POOLING_MODES
from xlm_jax.workflows.convert import ST_FORMAT, convert, convert_sentence_transformers


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m xlm_jax.convert",
        description="Convert between Hugging Face, fairseq XLM-R, original XLM and xlm_jax (orbax) checkpoints.",
    )
    parser.add_argument("src", help="HF directory, fairseq model.pt, XLM .pth, or an xlm_jax checkpoint")
    parser.add_argument("dst", help="output directory: new, empty, or an earlier output of convert (replaced)")
    parser.add_argument("--to", choices=("orbax", "hf", ST_FORMAT),
                        help="output format (default: orbax, or hf if SRC is ours)")
    parser.add_argument("--pooling", choices=POOLING_MODES, default=None,
                        help="--to sentence-transformers: pooling mode (default mean, or SRC's)")
    parser.add_argument("--normalize", action="store_true", default=None,
                        help="--to sentence-transformers: unit-length embeddings (a Normalize module)")
    parser.add_argument("--max-seq-length", type=positive_int, default=None,
                        help="--to sentence-transformers: tokens per input (default: SRC's, or the model's positions)")
    parser.add_argument("--architecture", choices=hf_mapping.HF_ARCHITECTURES + hf_families.architectures(),
                        help="HF architecture to write (default: the source's; a bare ...Model drops the LM or task head, "
                             "saying so)")
    parser.add_argument("--force", action="store_true",
                        help="replace DST even if it holds files convert did not write (they are deleted)")
    parser.add_argument("--vocab-size", type=positive_int, help="refuse a checkpoint whose vocabulary has another size")
    parser.add_argument("--num-heads", type=positive_int, help="attention heads, for checkpoints that do not record them")
    parser.add_argument("--bpe-codes", metavar="FILE", default=None,
                        help="original XLM .pth: its fastBPE codes file, written with the dictionary as the output's "
                             "tokenizer (default: codes or codes_* next to the .pth, when there is one)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.to == ST_FORMAT:
            if args.architecture:
                raise UserError("--architecture: a sentence-transformers model holds the bare encoder")
            if args.bpe_codes:
                raise UserError(f"--bpe-codes {args.bpe_codes}: is for --to orbax / hf (sentence-transformers does "
                                "not run XLM's Moses + BPE); convert the XLM .pth to orbax first")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                line = convert_sentence_transformers(args.src, args.dst, pooling=args.pooling,
                                                     normalize=args.normalize, max_seq_length=args.max_seq_length,
                                                     force=args.force, vocab_size=args.vocab_size,
                                                     num_heads=args.num_heads)
            for w in caught:  # ours (an overridden pooling) as one line; a library's as Python shows it
                if w.category is UserWarning:
                    print(f"warning: {w.message}", file=sys.stderr)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
            print(line)
            return
        if args.pooling or args.normalize or args.max_seq_length:
            raise UserError("--pooling / --normalize / --max-seq-length are for --to sentence-transformers")
        line = convert(args.src, args.dst, to=args.to, architecture=args.architecture, force=args.force,
                       vocab_size=args.vocab_size, num_heads=args.num_heads, bpe_codes=args.bpe_codes)
    print(line)


if __name__ == "__main__":
    main()
