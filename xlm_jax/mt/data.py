"""MT data: the corpus read and tokenized once, then token-budget batches that are a pure function of
(seed, stream, iteration).

Corpus: the project's raw layout (`xlm_jax.data.corpus.scan_corpus`: para/{l1}-{l2}.{l1|l2}, line-aligned,
optionally under train/ valid/ split directories) or `gettext` (this machine's catalogs, built once into the
cache by `xlm_jax.data.gettext.build_gettext_corpus`, which writes that layout). A flat corpus's validation
pairs are picked by a hash of the first side's text (`heldout_split`), so a string and its repeats fall on the
same side. Monolingual text for denoising and back-translation = the sides of the training pairs (with
`data.mono_split`, L1 from the even-numbered pairs and L2 from the odd-numbered ones, so no sentence has its
translation in the other language's text: the UNMT setting).

Batches (XLM `--tokens_per_batch`, `--group_by_size`): sentences are grouped by padded width (a multiple of
`data.width_bucket`, delimiters included) and each width's rows are cut into batches of
R(w) = floor(tokens_per_batch / w) rows rounded down to a multiple of `rows_multiple` (mesh data x fsdp x
grad_accum); a width's last batch is filled with padding rows (masks 0: they predict nothing). So every batch
of width w has the same shape and a run compiles one program per width. The batch of iteration k is
`batches[perm_e[i]]` with (e, i) = divmod(k - 1, n_batches) and perm_e a permutation drawn from
`numpy.random.default_rng([seed, stream, e])`: a pure function of (seed, stream, k), which makes resume exact.
Training drops sentences longer than `data.max_len` tokens (XLM drops those over 100 BPE tokens).
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.data.corpus import heldout_split, read_lines, scan_corpus
from xlm_jax.data.gettext import build_gettext_corpus
from xlm_jax.data.noise import NoiseConfig, add_noise
from xlm_jax.data.tokenizer import train_tokenizer
from xlm_jax.data.tokenizer_files import load_tokenizer


def cache_root(cache_dir: str) -> Path:
    return Path(cache_dir or os.environ.get("XLM_JAX_CACHE") or Path.home() / ".cache" / "xlm_jax")


def corpus_dir(data_cfg, log: Callable[[str], None], force: bool = False) -> Path:
    """The raw corpus directory: `data.corpus`, or the gettext corpus built into the cache once."""
    if data_cfg.corpus != "gettext":
        path = Path(data_cfg.corpus)
        if not path.is_dir():
            raise UserError(f"data.corpus={data_cfg.corpus!r}: not a directory (give a raw corpus with "
                            "para/{l1}-{l2}.{l1} files, or gettext)")
        return path
    path = cache_root(data_cfg.cache_dir) / "gettext"
    if not (path / "stats.json").is_file():
        log(f"building the gettext corpus from the system's translation catalogs -> {path} (once)")
        build_gettext_corpus(path, force=force)
    return path


@dataclasses.dataclass
class TextData:
    """Training pairs (sorted language pair -> (l1 lines, l2 lines)) and validation pairs, as text."""

    train: dict[tuple[str, str], tuple[list[str], list[str]]]
    valid: dict[tuple[str, str], tuple[list[str], list[str]]]


def read_text_data(root: Path, langs: list[str], valid_fraction: float, max_pairs: int,
                   asked_by: str = "") -> TextData:
    """Reads every pair of `langs` under `root` (UserError for missing languages, naming `asked_by`, or sides with
    different line counts, from `scan_corpus`); empty lines are left out of both sides."""
    sources = [s for s in scan_corpus(root, langs, asked_by) if s.kind == "para"]
    if not sources:
        raise UserError(f"corpus {root} has no parallel files para/{{l1}}-{{l2}}.{{l1}} for the languages {langs}")
    train: dict = {}
    valid: dict = {}
    for src in sources:
        a, _ = read_lines(src.files[0])
        b, _ = read_lines(src.files[1])
        pairs = [(x.strip(), y.strip()) for x, y in zip(a, b) if x.strip() and y.strip()]
        if src.split in (None, "train"):
            if src.split is None:
                held = [p for p in pairs if heldout_split(p[0], valid_fraction, 0.0) == "valid"]
                pairs = [p for p in pairs if heldout_split(p[0], valid_fraction, 0.0) != "valid"]
                _extend(valid, src.langs, held)
            if max_pairs:
                pairs = pairs[:max_pairs]
            _extend(train, src.langs, pairs)
        elif src.split == "valid":
            _extend(valid, src.langs, pairs)
    return TextData(train, valid)


def _extend(store: dict, langs: tuple[str, ...], pairs: list[tuple[str, str]]) -> None:
    a, b = store.setdefault(tuple(langs), ([], []))
    a.extend(p[0] for p in pairs)
    b.extend(p[1] for p in pairs)


def mt_tokenizer(data_cfg, root: Path, langs: list[str], given: str | None, log, force: bool = False):
    """`data.tokenizer`, else `given` (the init checkpoint's), else a SentencePiece model trained on the
    corpus's pairs of `langs` into the cache (once)."""
    path = data_cfg.tokenizer or given
    if path:
        return load_tokenizer(path)
    cache = cache_root(data_cfg.cache_dir) / "tokenizers"
    tag = f"mt-{root.name}-{'-'.join(sorted(langs))}-v{data_cfg.vocab_size}"
    model = cache / f"{tag}.model"
    if not model.is_file():
        inputs = sorted(str(f) for s in scan_corpus(root, langs) if s.kind == "para" for f in s.files)
        log(f"training a {data_cfg.vocab_size}-piece SentencePiece model -> {model} (once)")
        cache.mkdir(parents=True, exist_ok=True)
        train_tokenizer(inputs, data_cfg.vocab_size, str(model), max_sentences=200_000, seed=0, force=force)
    return load_tokenizer(model)


def encode(tok, texts: list[str]) -> list[np.ndarray]:
    """Pieces of each text, without specials (int32 arrays)."""
    return [np.asarray(x, np.int32) for x in tok.encode_batch_pieces_ids(texts)] if texts else []


# ------------------------------------------------------------------------------------------ batching


def stream_id(kind: str, langs: tuple[str, ...]) -> int:
    """The random stream of one update kind (stable across runs and config orders)."""
    return zlib.crc32(f"{kind}:{'-'.join(langs)}".encode())


def bucket(width: int, multiple: int) -> int:
    return -(-width // multiple) * multiple


def rows_for(width: int, tokens_per_batch: int, rows_multiple: int) -> int:
    """Rows of a batch of padded width `width`: floor(budget / width), down to a multiple of rows_multiple (at
    least rows_multiple)."""
    return max(rows_multiple, (tokens_per_batch // width) // rows_multiple * rows_multiple)


@dataclasses.dataclass
class TokenBatches:
    """Length-grouped, token-budget batches over sentences (or pairs) of `widths` (delimiters included, before
    bucketing). `batches[i]` = (padded width, int64 indices with -1 for padding rows)."""

    batches: list[tuple[int, np.ndarray]]
    seed: int
    stream: int

    @classmethod
    def build(cls, widths: np.ndarray, tokens_per_batch: int, width_bucket: int, rows_multiple: int, seed: int,
              stream: int) -> "TokenBatches":
        widths = np.asarray(widths, np.int64)
        if widths.size == 0:
            raise UserError("no training sentences left (all empty or longer than data.max_len)")
        padded = np.array([bucket(int(w), width_bucket) for w in widths], np.int64)
        batches = []
        for w in sorted(set(padded.tolist())):
            idx = np.flatnonzero(padded == w)
            rows = rows_for(w, tokens_per_batch, rows_multiple)
            for start in range(0, len(idx), rows):
                chunk = idx[start:start + rows]
                batches.append((w, np.concatenate([chunk, -np.ones(rows - len(chunk), np.int64)])))
        return cls(batches, seed, stream)

    def at(self, k: int) -> tuple[int, np.ndarray]:
        """The batch of iteration k >= 1 (see the module docstring)."""
        epoch, pos = divmod(k - 1, len(self.batches))
        perm = np.random.default_rng([self.seed, self.stream, epoch]).permutation(len(self.batches))
        return self.batches[int(perm[pos])]


def pad_rows(sentences: list[np.ndarray], idx: np.ndarray, width: int, start: int, eos: int, pad: int,
             max_pieces: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`start w1 .. wn eos` rows int32 [R, width] and masks; rows with index -1 are padding (mask 0)."""
    ids = np.full((len(idx), width), pad, np.int32)
    mask = np.zeros((len(idx), width), np.int32)
    for r, i in enumerate(idx):
        if i < 0:
            continue
        words = sentences[i][: (max_pieces if max_pieces is not None else width - 2)]
        n = len(words) + 2
        ids[r, 0], ids[r, 1:n - 1], ids[r, n - 1] = start, words, eos
        mask[r, :n] = 1
    return ids, mask


def noisy(ids: np.ndarray, mask: np.ndarray, noise: NoiseConfig, pad: int, mask_id: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """XLM's denoising noise on the real rows (padding rows unchanged)."""
    real = mask.sum(1) >= 2
    out, out_mask = ids.copy(), mask.copy()
    if real.any():
        lengths = mask[real].sum(1)
        noised, new_len = add_noise(ids[real], lengths, noise, pad_id=pad, mask_id=mask_id, rng=rng)
        out[real] = noised
        out_mask[real] = (np.arange(ids.shape[1])[None, :] < new_len[:, None]).astype(np.int32)
    return out, out_mask


def update_batch(src, src_mask, src_lang: int, tgt, tgt_mask, tgt_lang: int, weight: float) -> dict[str, Any]:
    """The batch `xlm_jax.training.seq2seq.seq2seq_loss` reads."""
    rows = src.shape[0]
    return {"src": np.asarray(src, np.int32), "src_mask": np.asarray(src_mask, np.int32),
            "src_langs": np.full(src.shape, src_lang, np.int32), "tgt": np.asarray(tgt, np.int32),
            "tgt_mask": np.asarray(tgt_mask, np.int32), "tgt_langs": np.full(tgt.shape, tgt_lang, np.int32),
            "weight": np.full((rows,), weight, np.float32)}
