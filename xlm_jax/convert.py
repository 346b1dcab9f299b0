"""Checkpoint interop: `python -m xlm_jax.convert SRC DST [--to orbax|hf] [--architecture ARCH]`.

SRC: an xlm_jax (orbax) checkpoint, a Hugging Face directory, a fairseq XLM-R `model.pt` or an original XLM `.pth`
(detected in that order); a fine-tuning output directory means its best checkpoint (OUT/best), whose task head
goes to Hugging Face as `...ForSequenceClassification` / `...ForTokenClassification` / `...ForQuestionAnswering`
with its labels (`id2label`), and to orbax with its task.json. `--to orbax` (default unless SRC is ours) writes `DST/0/{params,model_config}`; `--to hf`
writes `DST/config.json` + `DST/model.safetensors` for transformers; the tokenizer files found next to SRC come
along. DST is written to a temporary sibling directory and renamed into place. Bad input (flags, an unreadable or
refused source, a DST holding other files without --force) prints one `error:` line and exits 2.

This module is the command only; the library (the format readers, `load_any`, `export_hf`, `convert`, the pickle
allow-list) is `xlm_jax.workflows.convert`.
"""

from __future__ import annotations

from xlm_jax.core.errors import ArgumentParser, exit_on_user_error, positive_int
from xlm_jax.models import hf_mapping
from xlm_jax.workflows.convert import convert


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m xlm_jax.convert",
        description="Convert between Hugging Face, fairseq XLM-R, original XLM and xlm_jax (orbax) checkpoints.",
    )
    parser.add_argument("src", help="HF directory, fairseq model.pt, XLM .pth, or an xlm_jax checkpoint")
    parser.add_argument("dst", help="output directory: new, empty, or an earlier output of convert (replaced)")
    parser.add_argument("--to", choices=("orbax", "hf"), help="output format (default: orbax, or hf if SRC is ours)")
    parser.add_argument("--architecture", choices=hf_mapping.HF_ARCHITECTURES,
                        help="HF architecture to write (default: the source's; a bare ...Model drops the LM or task head, "
                             "saying so)")
    parser.add_argument("--force", action="store_true",
                        help="replace DST even if it holds files convert did not write (they are deleted)")
    parser.add_argument("--vocab-size", type=positive_int, help="refuse a checkpoint whose vocabulary has another size")
    parser.add_argument("--num-heads", type=positive_int, help="attention heads, for checkpoints that do not record them")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        line = convert(args.src, args.dst, to=args.to, architecture=args.architecture, force=args.force,
                       vocab_size=args.vocab_size, num_heads=args.num_heads)
    print(line)


if __name__ == "__main__":
    main()
