"""SentencePiece tokenizer with XLM-R's fairseq id layout, and the command that trains one.

Ids (the same for every vocabulary this project uses, ours or XLM-R's published `sentencepiece.bpe.model`):
`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, SentencePiece piece i → i + 1 (spm's own `<unk>`, id 0, → 3),
`<mask>` = len(spm) + 1, the last id; len(tokenizer) = len(spm) + 2. Single: `<s> A </s>`; pair:
`<s> A </s></s> B </s>`. This is what fairseq and Hugging Face's XLMRobertaTokenizer produce.

We train with spm ids `<unk>`=0, `<s>`=1, `</s>`=2 like the published model: spm ids 1 and 2 must be control
pieces that encoding never outputs, because i + 1 would otherwise collide with fairseq's `</s>` and `<unk>`.

    python -m xlm_jax.tokenizer train --input CORPUS_DIR_OR_FILES… --vocab-size N --output PATH.model
                                      [--model-type unigram|bpe] [--alpha 0.3] [--max-sentences M] [--force]

It writes PATH.model and PATH.vocab, and refuses to replace either unless --force.

Training sentences are sampled per language with p ∝ n^α (α = 0.3, as XLM-R did), so small languages get
pieces of their own. Prefer `unigram` (XLM-R's published model is a unigram model despite its file name):
Hugging Face's XLMRobertaTokenizer (transformers v5) always rebuilds a Unigram model from the pieces, so it
matches our ids exactly for unigram models but not for bpe ones, where our ids follow sentencepiece itself.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from xlm_jax.errors import UserError, exit_on_user_error
from xlm_jax.outputs import check_file_output

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
FAIRSEQ_OFFSET = 1


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def strip_accents_lower(text: str) -> str:
    """XLM's normalisation: lowercase, then drop combining marks (Mn) after NFD decomposition."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


@dataclass
class Tokenizer:
    sp: object  # sentencepiece.SentencePieceProcessor
    path: str
    sha256: str
    lowercase_and_strip_accents: bool = False
    _len: int = field(init=False)

    def __post_init__(self) -> None:
        self._len = self.sp.get_piece_size() + FAIRSEQ_OFFSET + 1

    @classmethod
    def load(cls, path: str | os.PathLike, lowercase_and_strip_accents: bool = False) -> "Tokenizer":
        import sentencepiece as spm

        path = str(path)
        if not Path(path).is_file():
            raise UserError(f"tokenizer model {path} does not exist; train one with `python -m xlm_jax.tokenizer train`")
        sp = spm.SentencePieceProcessor()
        try:
            sp.Load(path)
        except (OSError, RuntimeError) as err:
            raise UserError(f"{path} is not a SentencePiece model ({err})") from None
        if sp.unk_id() != 0:
            raise UserError(
                f"{path}: SentencePiece <unk> has id {sp.unk_id()}; the fairseq id layout needs unk_id=0 "
                "(train with `python -m xlm_jax.tokenizer train`)"
            )
        return cls(sp, path, file_sha256(path), lowercase_and_strip_accents)

    def __len__(self) -> int:
        return self._len

    bos_id = property(lambda self: BOS_ID)
    pad_id = property(lambda self: PAD_ID)
    eos_id = property(lambda self: EOS_ID)
    unk_id = property(lambda self: UNK_ID)
    mask_id = property(lambda self: self._len - 1)

    def normalize(self, text: str) -> str:
        return strip_accents_lower(text) if self.lowercase_and_strip_accents else text

    def encode_pieces_ids(self, text: str) -> list[int]:
        """Fairseq ids of the pieces of `text`, without `<s>` / `</s>`."""
        return [i + FAIRSEQ_OFFSET if i else UNK_ID for i in self.sp.encode(self.normalize(text))]

    def encode_batch_pieces_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Like encode_pieces_ids over many texts at once (one C++ call), as int32 arrays."""
        out = []
        for ids in self.sp.encode([self.normalize(t) for t in texts]):
            arr = np.asarray(ids, dtype=np.int32) + FAIRSEQ_OFFSET
            arr[arr == FAIRSEQ_OFFSET] = UNK_ID
            out.append(arr)
        return out

    def encode(self, text: str) -> list[int]:
        return [BOS_ID, *self.encode_pieces_ids(text), EOS_ID]

    def encode_pair(self, a: str, b: str) -> list[int]:
        return [BOS_ID, *self.encode_pieces_ids(a), EOS_ID, EOS_ID, *self.encode_pieces_ids(b), EOS_ID]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, skipping `<s>`, `<pad>`, `</s>` and `<mask>` (`<unk>` decodes as spm's ' ⁇ ')."""
        skip = (BOS_ID, PAD_ID, EOS_ID, self.mask_id)
        pieces = [0 if i == UNK_ID else i - FAIRSEQ_OFFSET for i in map(int, ids) if i not in skip]
        return self.sp.decode(pieces)

    def batch_encode(
        self,
        texts: Sequence[str] | Sequence[tuple[str, str]],
        max_len: int,
        pad_to: int | None = None,
    ) -> dict:
        """Padded batch: int32 `input_ids` and `attention_mask` [B, L], and `num_truncated` (an int).

        L = pad_to if given, else the longest row. Rows longer than max_len are cut: single texts keep
        their first max_len - 2 pieces; pairs lose pieces from the longer side first (Hugging Face's
        'longest_first'), to fit max_len - 4.
        """
        if pad_to is not None and pad_to < max_len:
            raise UserError(f"pad_to={pad_to} is smaller than max_len={max_len}")
        rows, truncated = [], 0
        for item in texts:
            if isinstance(item, str):
                a, cut = self.encode_pieces_ids(item), False
                if len(a) > max_len - 2:
                    a, cut = a[: max_len - 2], True
                rows.append([BOS_ID, *a, EOS_ID])
            else:
                a, b = (self.encode_pieces_ids(t) for t in item)
                a, b, cut = truncate_longest_first(a, b, max_len - 4)
                rows.append([BOS_ID, *a, EOS_ID, EOS_ID, *b, EOS_ID])
            truncated += cut
        input_ids, attention_mask = pad_rows(rows, pad_to or max((len(r) for r in rows), default=0))
        return {"input_ids": input_ids, "attention_mask": attention_mask, "num_truncated": truncated}


def pad_rows(rows: Sequence[Sequence[int]], width: int, pad_id: int = PAD_ID,
             n_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """int32 `input_ids` and `attention_mask` [n_rows, width] (n_rows defaults to len(rows)); rows past
    len(rows) are all padding."""
    n_rows = len(rows) if n_rows is None else n_rows
    input_ids = np.full((n_rows, width), pad_id, dtype=np.int32)
    attention_mask = np.zeros((n_rows, width), dtype=np.int32)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return input_ids, attention_mask


def truncate_longest_first(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int], bool]:
    excess = len(a) + len(b) - budget
    if excess <= 0:
        return a, b, False
    # Equivalent to removing one piece at a time from the longer side (ties: from b).
    la, lb = len(a), len(b)
    for _ in range(excess):
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return a[:la], b[:lb], True


# ------------------------------------------------------------------------------------------- training


def training_sources(inputs: Sequence[str]) -> dict[str, list[Path]]:
    """--input values → {lang: files}: a corpus dir contributes its (train/)mono/*.txt, a file its stem."""
    sources: dict[str, list[Path]] = {}
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            mono = next((p for p in (path / "train" / "mono", path / "mono") if p.is_dir()), None)
            files = sorted(mono.glob("*.txt")) if mono else []
            if not files:
                raise UserError(
                    f"{path} is a directory without mono/*.txt or train/mono/*.txt files; give a corpus "
                    "directory (mono/{lang}.txt) or plain text files named {lang}.txt"
                )
        elif path.is_file():
            files = [path]
        else:
            raise UserError(f"--input {item} does not exist")
        for f in files:
            sources.setdefault(f.stem, []).append(f)
    return sources


def sampling_probs(counts: dict[str, int], alpha: float) -> dict[str, float]:
    """p_i ∝ (n_i / Σn)^α, renormalised (XLM-R's language sampling)."""
    total = sum(counts.values())
    weights = {lang: (n / total) ** alpha for lang, n in counts.items() if n > 0}
    z = sum(weights.values())
    return {lang: w / z for lang, w in weights.items()}


def sample_sentences(
    sentences: dict[str, list[str]], alpha: float, max_sentences: int | None, seed: int = 0
) -> tuple[list[str], dict[str, int]]:
    """Draw round(p_i · M) sentences of each language (M = max_sentences or all of them); a language with
    fewer sentences than its share repeats them, which is how α upweights it in the piece counts."""
    counts = {lang: len(s) for lang, s in sentences.items()}
    probs = sampling_probs(counts, alpha)
    budget = max_sentences or sum(counts.values())
    rng = np.random.default_rng(seed)
    chosen, drawn = [], {}
    for lang in sorted(probs):
        pool, want = sentences[lang], max(1, round(probs[lang] * budget))
        idx = np.concatenate(
            [rng.permutation(len(pool)) for _ in range(want // len(pool))] + [rng.choice(len(pool), want % len(pool), replace=False)]
        )
        chosen += [pool[i] for i in idx]
        drawn[lang] = len(idx)
    return chosen, drawn


def read_sentences(files: list[Path]) -> list[str]:
    lines = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as handle:
            lines += [line.strip() for line in handle if line.strip()]
    return lines


def train_tokenizer(
    inputs: Sequence[str],
    vocab_size: int,
    output: str,
    model_type: str = "unigram",
    alpha: float = 0.3,
    max_sentences: int | None = None,
    seed: int = 0,
    verbose: bool = False,
    force: bool = False,
) -> dict:
    """Train a SentencePiece model at `output` (must end in .model; PREFIX.vocab is written beside it); returns
    per-language sample counts. An existing PREFIX.model or PREFIX.vocab is a UserError unless `force`."""
    import sentencepiece as spm
    from tqdm import tqdm

    if not output.endswith(".model"):
        raise UserError(f"--output {output} must end in .model (SentencePiece writes PREFIX.model and PREFIX.vocab)")
    vocab_output = output[: -len(".model")] + ".vocab"
    for path in (output, vocab_output):
        check_file_output(path, force=force)
    if model_type not in ("unigram", "bpe"):
        raise UserError(f"--model-type {model_type} is not one of unigram, bpe")
    sources = training_sources(inputs)
    sentences = {lang: read_sentences(files) for lang, files in tqdm(sorted(sources.items()), desc="reading", disable=not verbose)}
    empty = [str(sources[lang][0]) for lang, s in sentences.items() if not s]
    if empty:
        raise UserError(f"no text in {', '.join(empty)}")
    chosen, drawn = sample_sentences(sentences, alpha, max_sentences, seed)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    # Beside the output, so that the final renames stay on one file system (os.replace cannot cross devices).
    with tempfile.TemporaryDirectory(prefix=f".{Path(output).name}.", dir=Path(output).parent) as tmp:
        sample = Path(tmp) / "sample.txt"
        sample.write_text("\n".join(chosen) + "\n", encoding="utf-8")
        prefix = Path(tmp) / "spm"
        try:
            spm.SentencePieceTrainer.train(
                input=str(sample),
                model_prefix=str(prefix),
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=0.9995,
                unk_id=0,
                bos_id=1,
                eos_id=2,
                pad_id=-1,
                num_threads=os.cpu_count() or 1,
                input_sentence_size=0,  # all of them: the sample above is the selection
                shuffle_input_sentence=True,
                minloglevel=0 if verbose else 2,
            )
        except RuntimeError as err:
            too_large = re.search(r"value <= (\d+)", str(err))
            too_small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(err))
            if too_large:
                raise UserError(
                    f"--vocab-size {vocab_size} is too large for the {len(chosen)} sentences sampled from "
                    f"{', '.join(inputs)} (at most {too_large.group(1)}); use a smaller vocabulary or more text"
                ) from None
            if too_small:
                raise UserError(
                    f"--vocab-size {vocab_size} is too small for the {too_small.group(1)} distinct characters of "
                    f"{', '.join(inputs)} (character_coverage 0.9995); use at least {int(too_small.group(1)) + 100}"
                ) from None
            raise UserError(f"SentencePiece training failed on {', '.join(inputs)}: {err}") from None
        os.replace(f"{prefix}.vocab", vocab_output)
        os.replace(f"{prefix}.model", output)  # last: a .model on disk always has its .vocab
    return drawn


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xlm_jax.tokenizer", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a SentencePiece model on a multilingual corpus")
    train.add_argument("--input", nargs="+", required=True, help="corpus directories (mono/*.txt) or {lang}.txt files")
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--output", required=True, help="PATH.model")
    train.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    train.add_argument("--alpha", type=float, default=0.3, help="language sampling exponent (XLM-R: 0.3)")
    train.add_argument("--max-sentences", type=int, default=None, help="sentences to sample in total (default: all)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quiet", action="store_true", help="hide SentencePiece's own progress log")
    train.add_argument("--force", action="store_true", help="replace an existing PATH.model / PATH.vocab")
    args = parser.parse_args(argv)
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
