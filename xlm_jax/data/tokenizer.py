"""SentencePiece tokenizer with XLM-R's fairseq id layout: the class, its input checks, the one tokenizer /
model compatibility check, and training a model (one concern; the commands are `xlm_jax.tokenizer`).

Ids (the same for every vocabulary this project uses, ours or XLM-R's published `sentencepiece.bpe.model`):
`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, SentencePiece piece i → i + 1 (spm's own `<unk>`, id 0, → 3),
`<mask>` = len(spm) + 1, the last id; len(tokenizer) = len(spm) + 2. Single: `<s> A </s>`; pair:
`<s> A </s></s> B </s>`. This is what fairseq and Hugging Face's XLMRobertaTokenizer produce.

Special tokens written in the text (`"Open the <mask> now"`) are recognised as Hugging Face's XLMRobertaTokenizer
does: the literal strings `<s>`, `<pad>`, `</s>`, `<unk>` and `<mask>` (case-sensitive, matched in the raw text
before any normalisation) become their ids, and the text between them is encoded piece by piece as its own
sentence, so whitespace next to a special token disappears ("a <mask> b" == "a<mask>b"). One difference is kept:
transformers also turns look-alikes that NFKC normalises into a special string (full-width "＜mask＞") into the
special id, because its rebuilt Unigram model holds the specials as pieces; here they stay text, as in sentencepiece
and fairseq. Pretraining preprocessing (`xlm_jax.preprocess`) passes `special_tokens=False`: a literal "</s>" in a
crawled corpus stays text, as in fairseq's preprocessing.

`TokenizerLike` lists what the rest of xlm_jax may use of a tokenizer; `xlm_jax.data.hf_tokenizer.HFTokenizer`
(a Hugging Face tokenizer.json) provides the same, and `xlm_jax.data.tokenizer_files.load_tokenizer` picks the
right one for a path. `check_tokenizer_fits` is the one refusal of a tokenizer that is not a model's.

We train with spm ids `<unk>`=0, `<s>`=1, `</s>`=2 like the published model: spm ids 1 and 2 must be control
pieces that encoding never outputs, because i + 1 would otherwise collide with fairseq's `</s>` and `<unk>`.

    python -m xlm_jax.tokenizer train --input CORPUS_DIR_OR_FILES… --vocab-size N --output PATH.model
                                      [--model-type unigram|bpe] [--alpha 0.3] [--max-sentences M] [--force]

It writes PATH.model and PATH.vocab, and refuses to replace either unless --force.

    python -m xlm_jax.tokenizer extend --base T.model --input NEW_TEXT… --add N --output T2.model
                                       [--check-input BASE_TEXT…] [--report R.json] [--new-characters-only] [--force]

appends up to N pieces learned on NEW_TEXT to T.model, every existing piece keeping its id (`xlm_jax.data.vocab`).

Training sentences are sampled per language with p ∝ n^α (α = 0.3, as XLM-R did), so small languages get
pieces of their own. Prefer `unigram` (XLM-R's published model is a unigram model despite its file name):
Hugging Face's XLMRobertaTokenizer (transformers v5) always rebuilds a Unigram model from the pieces, so it
matches our ids exactly for unigram models but not for bpe ones, where our ids follow sentencepiece itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from xlm_jax.core.errors import (ArgumentParser, UserError, arg_range, check_range, exit_on_user_error, nonnegative_int,
                            positive_int)
from xlm_jax.core.textfiles import check_corpus_file
from xlm_jax.core.outputs import check_file_output

BOS_ID, PAD_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
FAIRSEQ_OFFSET = 1
# The strings Hugging Face's XLMRobertaTokenizer matches as added tokens (the mask id depends on the vocabulary).
_SPECIAL_TOKENS = re.compile("(<s>|<pad>|</s>|<unk>|<mask>)")
MIN_PIECES = 4  # SentencePiece's 3 reserved pieces (unk, bos, eos) and at least one more


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def strip_accents_lower(text: str) -> str:
    """XLM's normalisation: lowercase, then drop combining marks (Mn) after NFD decomposition."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")


class TokenizerLike(Protocol):
    """What the rest of xlm_jax needs from a tokenizer: `Tokenizer` (SentencePiece, fairseq ids) and
    `xlm_jax.data.hf_tokenizer.HFTokenizer` (a Hugging Face tokenizer.json) both provide it.

    Ids are model rows; `encode_pieces_ids` gives the pieces of one text without specials, `frame` adds the
    model's specials (`encode(t) == frame(encode_pieces_ids(t))`). A special id is None when the tokenizer has
    no such token (a byte-level BPE has no <unk>; a Llama-style one may have no <pad> or <mask>)."""

    path: str  # the file the ids come from (PATH.model or tokenizer.json)
    sha256: str  # of that file
    lowercase_and_strip_accents: bool

    def __len__(self) -> int: ...
    @property
    def bos_id(self) -> int | None: ...
    @property
    def pad_id(self) -> int | None: ...
    @property
    def eos_id(self) -> int | None: ...
    @property
    def unk_id(self) -> int | None: ...
    @property
    def mask_id(self) -> int | None: ...
    def normalize(self, text: str) -> str: ...
    def encode_pieces_ids(self, text: str, special_tokens: bool = True) -> list[int]: ...
    def encode_batch_pieces_ids(self, texts: Sequence[str], special_tokens: bool = True) -> list[np.ndarray]: ...
    def encode(self, text: str) -> list[int]: ...
    def encode_pair(self, a: str, b: str) -> list[int]: ...
    def frame(self, a: Sequence[int], b: Sequence[int] | None = None) -> list[int]: ...
    def n_specials(self, pair: bool) -> int: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def id_to_piece(self, i: int) -> str: ...
    def batch_encode(self, texts, max_len: int, pad_to: int | None = None) -> dict: ...
    def encode_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]: ...


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
        """Raises UserError when `path` is missing, a directory, empty or not a SentencePiece model (random
        bytes, a text file, a truncated model), or a model without the fairseq id layout's unk_id=0."""
        import sentencepiece as spm

        path = str(path)
        if Path(path).is_dir():
            raise UserError(f"tokenizer model {path} is a directory; give the SentencePiece PATH.model file")
        if not Path(path).is_file():
            raise UserError(f"tokenizer model {path} does not exist; train one with `python -m xlm_jax.tokenizer train`")
        if Path(path).stat().st_size == 0:
            raise UserError(f"{path} is empty, not a SentencePiece model")
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

    def _specials(self) -> dict[str, int]:
        return {"<s>": BOS_ID, "<pad>": PAD_ID, "</s>": EOS_ID, "<unk>": UNK_ID, "<mask>": self.mask_id}

    def encode_pieces_ids(self, text: str, special_tokens: bool = True) -> list[int]:
        """Fairseq ids of the pieces of `text`, without the framing `<s>` / `</s>`; special tokens written in the
        text map to their ids unless `special_tokens=False`. Raises UserError when `text` is not a str."""
        return self.encode_batch_pieces_ids([_check_text(text, "text")], special_tokens)[0].tolist()

    def encode_batch_pieces_ids(self, texts: Sequence[str], special_tokens: bool = True) -> list[np.ndarray]:
        """Like encode_pieces_ids over many texts at once (one C++ call), as int32 arrays [pieces] (an empty list
        gives an empty list). Raises UserError when `texts` is a str or holds anything but str."""
        texts = _check_texts(texts, "texts", allow_empty=True)
        if not special_tokens:
            return [self._fairseq_ids(ids) for ids in self.sp.encode([self.normalize(t) for t in texts])]
        # Split each text around the special tokens; every text segment is encoded as its own sentence, which
        # is what Hugging Face does (it matches added tokens first, then pre-tokenizes what lies between).
        parts = [_SPECIAL_TOKENS.split(t) if "<" in t else [t] for t in texts]
        segments = [self.normalize(seg) for split in parts for seg in split[::2]]
        encoded = iter(self.sp.encode(segments))
        specials, out = self._specials(), []
        for split in parts:
            if len(split) == 1:
                out.append(self._fairseq_ids(next(encoded)))
                continue
            row = []
            for k, seg in enumerate(split):
                row.append(np.asarray([specials[seg]], np.int32) if k % 2 else self._fairseq_ids(next(encoded)))
            out.append(np.concatenate(row))
        return out

    @staticmethod
    def _fairseq_ids(spm_ids: list[int]) -> np.ndarray:
        arr = np.asarray(spm_ids, dtype=np.int32) + FAIRSEQ_OFFSET
        arr[arr == FAIRSEQ_OFFSET] = UNK_ID
        return arr

    def encode(self, text: str) -> list[int]:
        """`<s> text </s>` as fairseq ids (no truncation; special tokens in the text map to their ids, as in
        Hugging Face). An empty string gives `[<s>, </s>]`. Raises UserError when `text` is not a str."""
        return [BOS_ID, *self.encode_pieces_ids(text), EOS_ID]

    def encode_pair(self, a: str, b: str) -> list[int]:
        """`<s> a </s></s> b </s>` as fairseq ids (no truncation). Raises UserError when a or b is not a str."""
        return [BOS_ID, *self.encode_pieces_ids(a), EOS_ID, EOS_ID, *self.encode_pieces_ids(b), EOS_ID]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of one row of `ids` (a sequence or 1-D array of integers in [0, len(self))), skipping `<s>`,
        `<pad>`, `</s>` and `<mask>` (`<unk>` decodes as spm's ' ⁇ '). Raises UserError for anything else."""
        row = check_id_row(ids, len(self), self.path)
        skip = (BOS_ID, PAD_ID, EOS_ID, self.mask_id)
        pieces = [0 if i == UNK_ID else i - FAIRSEQ_OFFSET for i in map(int, row) if i not in skip]
        return self.sp.decode(pieces)

    def frame(self, a: Sequence[int], b: Sequence[int] | None = None) -> list[int]:
        """Pieces framed as a model row: `<s> a </s>`, or `<s> a </s></s> b </s>` when b is given."""
        if b is None:
            return [BOS_ID, *a, EOS_ID]
        return [BOS_ID, *a, EOS_ID, EOS_ID, *b, EOS_ID]

    def n_specials(self, pair: bool) -> int:
        """Special tokens `frame` adds: 2 around one text, 4 around a pair."""
        return 4 if pair else 2

    def id_to_piece(self, i: int) -> str:
        """The piece (or special token) of fairseq id `i`, e.g. '▁Haus' or '<mask>'. Raises UserError for an id
        outside [0, len(self))."""
        check_id(i, len(self), self.path)
        names = {v: k for k, v in self._specials().items()}
        return names[int(i)] if int(i) in names else self.sp.id_to_piece(int(i) - FAIRSEQ_OFFSET)

    def encode_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text: (fairseq ids int32 [n], character spans int32 [n, 2] into the *original* text), from
        SentencePiece's piece offsets; the ids are `encode_pieces_ids(text, special_tokens=False)` (special-token
        strings stay text). A piece with an empty surface (a lone "▁" before the first character) has an empty
        span (begin == end). With lowercase_and_strip_accents, the normalisation is applied character by
        character so that every normalised character maps back to one original character (str.lower's context
        rules, the Greek final sigma, are not applied). Raises UserError when `texts` is not a list of str."""
        texts = _check_texts(texts, "texts", allow_empty=True)
        out = []
        normalized = [_normalized_with_map(t, self.lowercase_and_strip_accents) for t in texts]
        for (norm, index), proto in zip(normalized, _spm_protos(self.sp, [n for n, _ in normalized])):
            # Piece offsets are UTF-8 byte offsets: map bytes -> characters of the normalised text -> original text.
            lengths = [len(ch.encode("utf-8")) for ch in norm]
            byte_to_char = np.append(np.repeat(np.arange(len(norm)), lengths), len(norm))
            ids = self._fairseq_ids([p.id for p in proto.pieces])
            spans = np.zeros((len(ids), 2), np.int32)
            for i, p in enumerate(proto.pieces):
                b, e = byte_to_char[p.begin], byte_to_char[p.end]
                spans[i] = (index[b], index[e - 1] + 1) if e > b else (index[b], index[b])
            out.append((ids, spans))
        return out

    def batch_encode(
        self,
        texts: Sequence[str] | Sequence[tuple[str, str]],
        max_len: int,
        pad_to: int | None = None,
    ) -> dict:
        """Padded batch: int32 `input_ids` and `attention_mask` [B, L], and `num_truncated` (an int).

        `texts` is a non-empty list whose items are each a str (`<s> A </s>`) or a (str, str) pair
        (`<s> A </s></s> B </s>`). L = pad_to if given, else the longest row; no row is longer than max_len.
        Rows longer than max_len are cut: single texts keep their first max_len - 2 pieces; pairs lose pieces
        from the longer side first (Hugging Face's 'longest_first'), to fit max_len - 4.

        Raises UserError for an empty list, an item that is neither a str nor a pair of str, and a max_len
        too small to keep one piece of every sentence: at least 3 for single texts, 6 when there are pairs
        (`min_max_len`); pad_to must not be smaller than max_len.
        """
        return batch_encode(self, texts, max_len, pad_to)


def batch_encode(tok: "TokenizerLike", texts, max_len: int, pad_to: int | None = None) -> dict:
    """`TokenizerLike.batch_encode` for any tokenizer with `encode_pieces_ids`, `frame`, `n_specials` and a pad id:
    padded int32 `input_ids` / `attention_mask` [B, L] and `num_truncated` (see `Tokenizer.batch_encode`)."""
    texts = _check_texts(texts, "texts", pairs=True)
    pair = any(not isinstance(item, str) for item in texts)
    check_max_len(max_len, tok.n_specials(pair), pair)
    if pad_to is not None and (not _is_int(pad_to) or pad_to < max_len):
        raise UserError(f"pad_to={pad_to!r} must be an integer at least max_len={max_len}")
    rows, truncated = [], 0
    for item in texts:
        if isinstance(item, str):
            a, _, cut = truncate_pair(tok.encode_pieces_ids(item), None, max_len - tok.n_specials(False))
            rows.append(tok.frame(a))
        else:
            a, b = (tok.encode_pieces_ids(t) for t in item)
            a, b, cut = truncate_pair(a, b, max_len - tok.n_specials(True))
            rows.append(tok.frame(a, b))
        truncated += cut
    width = pad_to or max(len(r) for r in rows)
    if tok.pad_id is None and any(len(r) < width for r in rows):
        raise UserError(f"tokenizer {tok.path} has no pad token, so rows of different lengths cannot be batched: "
                        "encode the texts one by one, or use a tokenizer whose configuration names a pad_token")
    input_ids, attention_mask = pad_rows(rows, width, PAD_ID if tok.pad_id is None else tok.pad_id)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "num_truncated": truncated}


def for_language(tok: "TokenizerLike", lang: str) -> "TokenizerLike":
    """`tok` with the rules of language `lang` when its splitting depends on the language (XLM's Moses + BPE,
    `xlm_jax.data.xlm_bpe`: `for_language`), else `tok` itself; "" (a model without languages) keeps `tok`."""
    switch = getattr(tok, "for_language", None)
    return switch(lang) if switch is not None and lang else tok


def encode_by_language(tok: "TokenizerLike", texts: Sequence[str], langs: Sequence[str]) -> list[np.ndarray]:
    """`tok.encode_batch_pieces_ids(texts)` with each text split by the rules of its language (`for_language`):
    one call per language, results in the texts' order."""
    if getattr(tok, "for_language", None) is None or len(set(langs)) <= 1:
        return for_language(tok, langs[0] if len(langs) else "").encode_batch_pieces_ids(list(texts))
    out: list = [None] * len(texts)
    for lang in dict.fromkeys(langs):
        idx = [i for i, code in enumerate(langs) if code == lang]
        for i, ids in zip(idx, for_language(tok, lang).encode_batch_pieces_ids([texts[i] for i in idx])):
            out[i] = ids
    return out


def check_id_row(ids, n_ids: int, path: str) -> np.ndarray:
    """`ids` as one 1-D integer array with every id in [0, n_ids). Raises UserError otherwise (a 2-D batch, floats,
    strings, an id out of range), naming the first bad position and the tokenizer `path`."""
    try:
        row = np.asarray(ids)
    except ValueError:
        row = np.asarray(ids, dtype=object)
    if row.ndim != 1 or (row.size and row.dtype.kind not in "iu"):
        raise UserError(f"decode takes one row of integer ids, got {type(ids).__name__} of shape {row.shape} "
                        f"and dtype {row.dtype}" + ("; decode a batch row by row" if row.ndim == 2 else ""))
    bad = (row < 0) | (row >= n_ids) if row.size else row.astype(bool)
    if bad.any():
        i = int(np.argmax(bad))
        raise UserError(f"ids[{i}] = {int(row[i])} is not an id of this tokenizer: ids must be in "
                        f"[0, {n_ids - 1}] ({path} has {n_ids} ids; a model may have more rows)")
    return row


def check_id(i, n_ids: int, path: str) -> int:
    """`i` as an int in [0, n_ids); UserError otherwise."""
    if not _is_int(i) or not 0 <= i < n_ids:
        raise UserError(f"{i!r:.40} is not an id of this tokenizer: ids are integers in [0, {n_ids - 1}] ({path})")
    return int(i)


def _normalized_with_map(text: str, lowercase_and_strip_accents: bool) -> tuple[str, np.ndarray]:
    """The text the SentencePiece model sees and, for each of its characters (plus one past the end), the index of
    the original character it came from."""
    if not lowercase_and_strip_accents:
        return text, np.arange(len(text) + 1)
    pieces = [strip_accents_lower(ch) for ch in text]
    index = np.repeat(np.arange(len(text)), [len(p) for p in pieces])
    return "".join(pieces), np.append(index, len(text))


def _spm_protos(sp, texts: list[str]) -> list:
    try:  # sentencepiece >= 0.2.1: 'proto'; 0.2.0 only has 'immutable_proto' (same fields)
        return sp.encode(texts, out_type="proto")
    except (ValueError, TypeError):
        return sp.encode(texts, out_type="immutable_proto")


# Which special id a ModelConfig field holds, for the messages of check_tokenizer_fits.
_SPECIAL_FIELDS = {"bos": "bos_token_id", "pad": "pad_token_id", "eos": "eos_token_id", "unk": "unk_token_id",
                   "mask": "mask_token_id"}


def check_tokenizer_fits(tok: "TokenizerLike", vocab_size: int, where: str, *, bos_id: int | None = None,
                         pad_id: int | None = None, eos_id: int | None = None, unk_id: int | None = None,
                         mask_id: int | None = None, sha256: str | None = None, same_size: bool = False) -> None:
    """Refuses a tokenizer that does not belong to a model: the one check every place that pairs a tokenizer with
    a model (loading, conversion, fine-tuning, continued pretraining) shares, so that all refuse with the same words.

    `vocab_size` is the model's number of embedding rows; the special ids are the model's (ModelConfig's
    bos/pad/eos/unk_token_id and `mask_id`, the resolved mask row); None skips that comparison, and so does a
    tokenizer without such a token (a byte-level BPE has no <unk>). `same_size` also refuses a model with MORE
    rows than the tokenizer has ids (continued pretraining); otherwise spare rows are allowed.

    Raises UserError, in one message naming `where`, the tokenizer's path, both sizes and every differing id,
    when the tokenizer has more ids than the model has rows (or a different number, with `same_size`) or puts a
    special token at another id than the model. Warns (UserWarning) when `sha256` (the digest recorded with the
    model or its data) is given and differs from tok.sha256: the same ids may still come out, so it does not refuse.
    """
    too_big = len(tok) > vocab_size or (same_size and len(tok) != vocab_size)
    model_ids = {"bos": bos_id, "pad": pad_id, "eos": eos_id, "unk": unk_id, "mask": mask_id}
    differ = []
    for name, theirs in model_ids.items():
        ours = getattr(tok, f"{name}_id")
        if theirs is not None and ours is not None and int(ours) != int(theirs):
            differ.append(f"its {name} token is id {ours} but the model's is {theirs} (config.{_SPECIAL_FIELDS[name]})")
    if too_big or differ:
        rule = ("the model must have exactly the tokenizer's ids" if same_size else
                "a model may have more rows than its tokenizer has ids, never fewer")
        raise UserError(f"{where}: tokenizer {tok.path} has {len(tok)} ids {'but' if too_big else 'and'} the model's "
                        f"vocabulary has {vocab_size} (config.vocab_size)" + "".join(f"; {d}" for d in differ)
                        + f": they do not belong together ({rule}, and must put the special tokens at the same ids)")
    if sha256 and sha256 != tok.sha256:
        warnings.warn(f"{where}: tokenizer {tok.path} has sha256 {tok.sha256[:12]}… but {sha256[:12]}… was recorded "
                      "with the model: it is another file, which may split text differently than the model was "
                      "trained with", UserWarning, stacklevel=2)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_text(text, where: str) -> str:
    if not isinstance(text, str):
        raise UserError(f"{where} must be a str, got {type(text).__name__} {text!r:.60}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # SentencePiece would raise a bare TypeError
        raise UserError(f"{where} holds {text[err.start]!r} at character {err.start} ({text!r:.60}), a lone "
                        "surrogate: not valid Unicode text (a \\ud800-style escape in a JSON file?)") from None
    return text


def _check_texts(texts, where: str, pairs: bool = False, allow_empty: bool = False) -> list:
    """A list of str (or of (str, str) pairs when `pairs`); a bare str (and an empty list, unless `allow_empty`)
    is refused."""
    what = "a str or a (str, str) pair" if pairs else "a str"
    if isinstance(texts, str | bytes | dict) or not isinstance(texts, Iterable):
        raise UserError(f"{where} must be a list whose items are each {what}, got {type(texts).__name__} "
                        f"{texts!r:.60}" + (" (wrap one text in a list)" if isinstance(texts, str) else ""))
    texts = list(texts)
    if not texts and not allow_empty:
        raise UserError(f"{where} is empty: give at least one text")
    for i, item in enumerate(texts):
        if isinstance(item, str):
            _check_text(item, f"{where}[{i}]")
            continue
        if pairs and isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(t, str) for t in item):
            for t in item:
                _check_text(t, f"{where}[{i}]")
            continue
        raise UserError(f"{where}[{i}] must be {what}, got {type(item).__name__} {item!r:.60}")
    return texts


def min_max_len(n_specials: int, pair: bool) -> int:
    """Smallest usable max_len: the special tokens plus one piece of each sentence."""
    return n_specials + (2 if pair else 1)


def check_max_len(max_len, n_specials: int, pair: bool) -> None:
    """UserError unless max_len (ids per row, specials included) leaves room for one piece of every sentence."""
    minimum = min_max_len(n_specials, pair)
    if not _is_int(max_len):
        raise UserError(f"max_len={max_len!r} must be an integer >= {minimum} (ids per row, special tokens included)")
    if max_len < minimum:
        what = "a sentence pair" if pair else "a single sentence"
        raise UserError(f"max_len={max_len} is too small: {what} needs {n_specials} special tokens plus at least "
                        f"one piece of {'each sentence' if pair else 'text'}, so max_len must be >= {minimum}")


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


def truncate_pair(a: list[int], b: list[int] | None, budget: int) -> tuple[list[int], list[int] | None, bool]:
    """-> (a, b, whether anything was cut) with len(a) + len(b) <= budget (budget >= 0): a single text (b None)
    keeps its first `budget` pieces; a pair loses pieces from the longer side first, ties from b (transformers'
    Python 'longest_first'; its Rust tokenizers break an odd tie the other way, keeping one piece more of b)."""
    if budget < 0:
        raise ValueError(f"truncation budget {budget} < 0")  # callers check max_len first (check_max_len)
    if b is None:
        return (a[:budget], None, True) if len(a) > budget else (a, None, False)
    return truncate_longest_first(a, b, budget)


def truncate_longest_first(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int], bool]:
    excess = len(a) + len(b) - budget
    if excess <= 0:
        return a, b, False
    # Equivalent to removing one piece at a time from the longer side (ties: from b).
    la, lb = len(a), len(b)
    for _ in range(min(excess, la + lb)):
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
    """The non-blank lines of `files`, stripped; invalid UTF-8 decoded as U+FFFD (the raw-corpus policy of
    `xlm_jax.core.textfiles`)."""
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
    per-language sample counts.

    Raises UserError, before any training, for an existing PREFIX.model or PREFIX.vocab (unless `force`), for an
    input that is missing, empty, binary or mostly not UTF-8 (a few invalid lines are decoded as U+FFFD, see
    `xlm_jax.core.textfiles`), and for a vocabulary size the text cannot support."""
    import sentencepiece as spm
    from tqdm import tqdm

    if not output.endswith(".model"):
        raise UserError(f"--output {output} must end in .model (SentencePiece writes PREFIX.model and PREFIX.vocab)")
    vocab_output = output[: -len(".model")] + ".vocab"
    for path in (output, vocab_output):
        check_file_output(path, force=force)
    if model_type not in ("unigram", "bpe"):
        raise UserError(f"--model-type {model_type} is not one of unigram, bpe")
    check_range("--vocab-size", vocab_size, MIN_PIECES, integer=True)
    check_range("--alpha", alpha, 0, 1)
    if max_sentences is not None:
        check_range("--max-sentences", max_sentences, 1, integer=True)
    check_range("--seed", seed, 0, integer=True)
    sources = training_sources(inputs)
    for files in sources.values():  # before any reading: a binary or mostly non-UTF-8 file is refused by name
        for f in files:
            check_corpus_file(f)
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
