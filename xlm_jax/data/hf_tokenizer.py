"""A Hugging Face `tokenizer.json` tokenizer with the interface of `xlm_jax.data.tokenizer.Tokenizer`
(`TokenizerLike`), run by the `tokenizers` library.

Checkpoints saved by transformers 5 (XLM-R included: XLMRobertaTokenizer now saves only tokenizer.json +
tokenizer_config.json) and the ModernBERT / mmBERT (Gemma 2 vocabulary) and EuroBERT (Llama 3 vocabulary) ones
ship a tokenizer.json instead of a SentencePiece `.model`. `HFTokenizer.load(DIR or DIR/tokenizer.json)` gives
the ids `transformers.AutoTokenizer.from_pretrained(DIR)` gives, by doing what transformers 5's
`TokenizersBackend` (PreTrainedTokenizerFast) does with the same files:

- the pipeline (normaliser, pre-tokeniser, model, added tokens) is the tokenizer.json's;
- the special tokens are named by tokenizer_config.json, or by special_tokens_map.json when tokenizer_config.json
  has no `added_tokens_decoder` (transformers' precedence); a named token or an `added_tokens_decoder` entry the
  tokenizer.json lacks is added, as transformers adds it;
- the row layout comes from the tokenizer.json's post-processor (TemplateProcessing, RobertaProcessing,
  BertProcessing, ByteLevel or a Sequence of them): `<s> A </s></s> B </s>` for XLM-R, `[CLS] A [SEP] B [SEP]`
  for BERT / ModernBERT, `<|begin_of_text|> A` for Llama 3; no special tokens without a post-processor.
  tokenizer_config.json's `add_bos_token` / `add_eos_token` are ignored, as transformers 5 ignores them whenever
  a tokenizer.json exists (its `_from_pretrained` drops them);
- `split_special_tokens: true` in tokenizer_config.json makes special-token strings in the text stay text.

Where this can differ from AutoTokenizer: transformers classes with their own `__init__` (XLMRobertaTokenizer,
LlamaTokenizer, GemmaTokenizer, …; tokenizer_config.json's `tokenizer_class`) rebuild the normaliser and
pre-tokeniser from code and keep only the file's vocabulary and post-processor; for a tokenizer.json those
classes wrote (what checkpoints ship) that is the same pipeline — tests/test_hf_tokenizer.py checks it for
XLMRobertaTokenizer — but a hand-edited file can differ. token_type_ids are not produced (XLM-R, ModernBERT and
EuroBERT do not use them).

Differences from the SentencePiece `Tokenizer`, by design: `bos_id` / `eos_id` fall back to the cls / sep token
when the configuration names no bos / eos (BERT-style tokenizers open rows with [CLS]); a special id is None when
the tokenizer has no such token (byte-level BPEs have no <unk>); `decode` skips every special token, as
transformers' `decode(ids, skip_special_tokens=True)`; `lowercase_and_strip_accents` is refused (a tokenizer.json
carries its own normaliser); `sha256` is the tokenizer.json's alone (what `sha256sum` and the Hub's LFS pointer
give), not the configuration files'.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import _check_text, _check_texts, batch_encode, check_id, check_id_row, file_sha256

TOKENIZER_JSON = "tokenizer.json"
CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
SPECIAL_NAMES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")  # transformers' SPECIAL_TOKENS_ATTRIBUTES
# A layout is the row for one text (or a pair): special ids, and "A" / "B" where the pieces go.
Layout = tuple[int | str, ...]
_PROBE = ("Hello world 1", "zweite Zeile")


def is_hf_tokenizer_json(data) -> bool:
    """Whether parsed JSON is a `tokenizers` serialization (not, e.g., xlm_jax training's tokenizer record)."""
    return isinstance(data, dict) and isinstance(data.get("model"), dict)


def read_json(path: Path, what: str):
    """Parsed JSON of `path`; UserError naming `what` when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{path} cannot be read as {what} ({type(err).__name__}: {err})") from None


def _content(value) -> str | None:
    """A special token as written in tokenizer_config.json: "<s>", {"content": "<s>", ...} or null."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def read_config(directory: Path) -> dict:
    """tokenizer_config.json, with special_tokens_map.json's values over it when the config has no
    `added_tokens_decoder` (transformers 5's `from_pretrained` precedence); {} when neither exists."""
    config, config_path = {}, directory / CONFIG_FILES[0]
    if config_path.is_file():
        config = read_json(config_path, "a tokenizer configuration")
        if not isinstance(config, dict):
            raise UserError(f"{config_path} holds {type(config).__name__}, not a JSON object of tokenizer settings")
    map_path = directory / CONFIG_FILES[1]
    if "added_tokens_decoder" not in config and map_path.is_file():
        special = read_json(map_path, "a special tokens map")
        if not isinstance(special, dict):
            raise UserError(f"{map_path} holds {type(special).__name__}, not a JSON object of special tokens")
        config = {**config, **special}
    return config


def _layouts(proc: dict | None, where: Path) -> tuple[Layout, Layout]:
    """(single, pair) row layouts of a serialized post-processor."""
    if proc is None:
        return ("A",), ("A", "B")
    kind = proc.get("type")
    if kind == "TemplateProcessing":
        ids = {name: list(spec["ids"]) for name, spec in proc.get("special_tokens", {}).items()}

        def convert(template) -> Layout:
            out: list[int | str] = []
            for item in template:
                if "Sequence" in item:
                    out.append(item["Sequence"]["id"])
                else:
                    out.extend(ids[item["SpecialToken"]["id"]])
            return tuple(out)

        return convert(proc["single"]), convert(proc["pair"])
    if kind in ("RobertaProcessing", "BertProcessing"):
        cls, sep = proc["cls"][1], proc["sep"][1]
        middle = (sep, sep) if kind == "RobertaProcessing" else (sep,)
        return (cls, "A", sep), (cls, "A", *middle, "B", sep)
    if kind == "ByteLevel":  # offsets only
        return ("A",), ("A", "B")
    if kind == "Sequence":
        found = [_layouts(p, where) for p in proc.get("processors", [])]
        framing = [lay for lay in found if lay != (("A",), ("A", "B"))]
        if len(framing) > 1:
            raise UserError(f"{where}: its post-processor is a Sequence with several processors that add special "
                            "tokens, which xlm_jax does not read; give a tokenizer.json with one of them")
        return framing[0] if framing else (("A",), ("A", "B"))
    raise UserError(f"{where}: its post-processor {kind!r} is not one xlm_jax reads (TemplateProcessing, "
                    "RobertaProcessing, BertProcessing, ByteLevel, Sequence)")


@dataclass
class HFTokenizer:
    """A tokenizer.json with its configuration (see the module docstring); build it with `HFTokenizer.load`."""

    backend: Backend  # tokenizers.Tokenizer, post-processor and added tokens as transformers sets them
    path: str  # the tokenizer.json
    sha256: str  # of the tokenizer.json
    special_tokens: dict[str, str | None]  # bos, eos, unk, sep, pad, cls, mask -> token string (None: none named)
    single: Layout
    pair: Layout
    tokenizer_class: str = ""  # tokenizer_config.json's, for messages
    lowercase_and_strip_accents: bool = False  # always False: the tokenizer.json normalises
    _literal: Backend | None = field(default=None, repr=False)  # a copy that keeps special-token strings as text

    @classmethod
    def load(cls, path, lowercase_and_strip_accents: bool = False) -> "HFTokenizer":
        """A tokenizer.json file, or a directory holding one (with its tokenizer_config.json /
        special_tokens_map.json, when present, beside it).

        Raises UserError when the path is missing, is not a `tokenizers` serialization (a run directory's
        tokenizer.json is training's record of its tokenizer, not one), cannot be read by the `tokenizers`
        library, has a post-processor other than TemplateProcessing / RobertaProcessing / BertProcessing /
        ByteLevel (or frames text otherwise than the library itself does); and for lowercase_and_strip_accents=True."""
        p = Path(path)
        if p.is_dir():
            if not (p / TOKENIZER_JSON).is_file():
                raise UserError(f"{path} is a directory without a {TOKENIZER_JSON}; give a Hugging Face tokenizer "
                                "directory or its tokenizer.json file")
            p = p / TOKENIZER_JSON
        if not p.is_file():
            raise UserError(f"tokenizer {path} does not exist; give a Hugging Face tokenizer.json (or the directory "
                            "holding it)")
        if lowercase_and_strip_accents:
            raise UserError(f"{p}: lowercase_and_strip_accents applies to SentencePiece models only; a tokenizer.json "
                            "carries its own normaliser")
        data = read_json(p, "a Hugging Face tokenizer.json")
        if not is_hf_tokenizer_json(data):
            if isinstance(data, dict) and {"sha256", "path"} <= data.keys():
                raise UserError(f"{p} is xlm_jax training's record of its tokenizer (sha256, path), not a Hugging "
                                "Face tokenizer: give the tokenizer.model beside it")
            raise UserError(f"{p} is not a Hugging Face tokenizer.json (no \"model\" section); give the "
                            "tokenizer.json that transformers' save_pretrained or the tokenizers library writes")
        try:
            backend = Backend.from_file(str(p))
        except Exception as err:  # the Rust library raises a bare Exception for any malformed field
            raise UserError(f"{p} cannot be read by the tokenizers library: {err}") from None
        backend.no_truncation()  # batch_encode truncates and pads itself
        backend.no_padding()
        config = read_config(p.parent)
        names = {name: _content(config.get(f"{name}_token")) for name in SPECIAL_NAMES}
        _add_configured_tokens(backend, config, names)
        if config.get("split_special_tokens"):
            backend.encode_special_tokens = True
        single, pair = _layouts(data.get("post_processor"), p)
        tok = cls(backend, str(p), file_sha256(p), names, single, pair, str(config.get("tokenizer_class", "")))
        tok._check_layout()
        return tok

    def _check_layout(self) -> None:
        """The layouts read from the post-processor must be what the tokenizers library itself adds."""
        a, b = (self.backend.encode(t, add_special_tokens=False).ids for t in _PROBE)
        if (self.backend.encode(_PROBE[0]).ids != self.frame(a)
                or self.backend.encode(*_PROBE).ids != self.frame(a, b)):
            raise UserError(f"{self.path}: its post-processor frames text differently than xlm_jax reads it "
                            f"(single {self.single}, pair {self.pair}); this tokenizer.json is not supported")

    def _id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.backend.token_to_id(token)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    bos_id = property(lambda self: self._id("bos") if self.special_tokens.get("bos") else self._id("cls"))
    eos_id = property(lambda self: self._id("eos") if self.special_tokens.get("eos") else self._id("sep"))
    pad_id = property(lambda self: self._id("pad"))
    unk_id = property(lambda self: self._id("unk"))
    mask_id = property(lambda self: self._id("mask"))
    cls_id = property(lambda self: self._id("cls"))
    sep_id = property(lambda self: self._id("sep"))

    def normalize(self, text: str) -> str:
        """The text as given: the tokenizer.json's normaliser runs inside encoding (and keeps offsets)."""
        return text

    def _literal_backend(self) -> Backend:
        """The backend with special-token strings kept as text (tokenizers' encode_special_tokens)."""
        if self._literal is None:
            data = json.loads(self.backend.to_str())
            if data["model"].get("type") == "Unigram":
                # A Unigram vocabulary converted from SentencePiece holds the specials as pieces with the best score
                # (0.0), so "</s>" written in the text would still come out as the id of </s>; SentencePiece never
                # outputs its control pieces. Scored far below any other path, they stay text here too.
                special = {t["content"] for t in data["added_tokens"] if t.get("special")}
                floor = min(score for _, score in data["model"]["vocab"]) if data["model"]["vocab"] else 0.0
                for entry in data["model"]["vocab"]:
                    if entry[0] in special:
                        entry[1] = 100 * min(floor, -1.0)
            self._literal = Backend.from_str(json.dumps(data))
            self._literal.encode_special_tokens = True
        return self._literal

    def encode_pieces_ids(self, text: str, special_tokens: bool = True) -> list[int]:
        """Ids of the pieces of `text`, without the row's special tokens; special tokens written in the text map
        to their ids unless `special_tokens=False`. Raises UserError when `text` is not a str."""
        return self.encode_batch_pieces_ids([_check_text(text, "text")], special_tokens)[0].tolist()

    def encode_batch_pieces_ids(self, texts: Sequence[str], special_tokens: bool = True) -> list[np.ndarray]:
        """encode_pieces_ids over many texts at once (one call into the library), as int32 arrays [pieces].
        Raises UserError when `texts` is a str or holds anything but str."""
        texts = _check_texts(texts, "texts", allow_empty=True)
        backend = self.backend if special_tokens else self._literal_backend()
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast (no offsets): tokenizers >= 0.21
        return [np.asarray(e.ids, np.int32) for e in encode(texts, add_special_tokens=False)]

    def frame(self, a: Sequence[int], b: Sequence[int] | None = None) -> list[int]:
        """Pieces framed as the post-processor frames them (`single`, or `pair` when b is given)."""
        out: list[int] = []
        for item in self.single if b is None else self.pair:
            out.extend(a if item == "A" else b if item == "B" else [item])
        return [int(i) for i in out]

    def n_specials(self, pair: bool) -> int:
        """Special tokens `frame` adds around one text (pair=False) or a pair."""
        return sum(1 for item in (self.pair if pair else self.single) if item not in ("A", "B"))

    def encode(self, text: str) -> list[int]:
        """One text framed as a model row (no truncation), as AutoTokenizer's `tok(text)["input_ids"]`."""
        return self.frame(self.encode_pieces_ids(text))

    def encode_pair(self, a: str, b: str) -> list[int]:
        """A pair framed as a model row (no truncation), as AutoTokenizer's `tok(a, b)["input_ids"]`."""
        pieces = self.encode_batch_pieces_ids([_check_text(a, "a"), _check_text(b, "b")])
        return self.frame(pieces[0].tolist(), pieces[1].tolist())

    def decode(self, ids: Sequence[int]) -> str:
        """Text of one row of ids in [0, len(self)), skipping every special token (transformers'
        `decode(ids, skip_special_tokens=True)`). Raises UserError for anything but one row of such ids."""
        return self.backend.decode(check_id_row(ids, len(self), self.path).tolist(), skip_special_tokens=True)

    def id_to_piece(self, i: int) -> str:
        """The vocabulary entry of id `i` (e.g. '▁Haus', 'Ġhouse', '[MASK]'). Raises UserError for an id outside
        [0, len(self)) or one the vocabulary leaves unused."""
        piece = self.backend.id_to_token(check_id(i, len(self), self.path))
        if piece is None:
            raise UserError(f"id {i} is unused in {self.path} (its vocabulary has no entry there)")
        return piece

    def batch_encode(self, texts, max_len: int, pad_to: int | None = None) -> dict:
        """Padded batch, as `Tokenizer.batch_encode`: int32 `input_ids` / `attention_mask` [B, L] and
        `num_truncated`; rows are framed by the post-processor, cut to max_len longest-first (transformers'
        Python rule, the same as the SentencePiece tokenizer's) and padded with pad_id. Raises UserError as
        `Tokenizer.batch_encode` does, and when rows need padding but the tokenizer has no pad token."""
        return batch_encode(self, texts, max_len, pad_to)

    def encode_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per text: (ids int32 [n], character spans int32 [n, 2] into the original text), the ids being
        `encode_pieces_ids(text, special_tokens=False)` and the spans the library's offsets (transformers'
        `return_offsets_mapping`), except that a piece starting where the next one starts gets an empty span
        (begin == end; see below). Raises UserError when `texts` is not a list of str."""
        texts = _check_texts(texts, "texts", allow_empty=True)
        out = []
        for enc in self._literal_backend().encode_batch(texts, add_special_tokens=False):
            spans = np.asarray(enc.offsets, np.int32).reshape(-1, 2)
            # A piece that starts where the next one starts has no character of its own (the "▁" a Metaspace
            # pre-tokeniser prepends, the first byte of a character that byte-level BPE splits): an empty span,
            # as SentencePiece gives a lone "▁", so that the first piece overlapping an answer is the real one.
            own_nothing = np.zeros(len(spans), bool)
            own_nothing[:-1] = spans[:-1, 0] == spans[1:, 0]
            spans[own_nothing, 1] = spans[own_nothing, 0]
            out.append((np.asarray(enc.ids, np.int32), spans))
        return out


def _add_configured_tokens(backend: Backend, config: dict, names: dict[str, str | None]) -> None:
    """Add what transformers adds at load: `added_tokens_decoder` entries and named / extra special tokens that
    the tokenizer.json does not hold yet (appended, as transformers appends them)."""
    present = {t.content for t in backend.get_added_tokens_decoder().values()}
    decoder = config.get("added_tokens_decoder") or {}
    for _, spec in sorted(decoder.items(), key=lambda kv: int(kv[0])) if isinstance(decoder, dict) else []:
        if isinstance(spec, dict) and _content(spec) and spec["content"] not in present:
            fields = {k: spec[k] for k in ("single_word", "lstrip", "rstrip", "normalized", "special") if k in spec}
            backend.add_tokens([AddedToken(spec["content"], **fields)])
            present.add(spec["content"])
    extra = []
    for key in ("extra_special_tokens", "additional_special_tokens"):
        if isinstance(config.get(key), list):
            extra += [_content(t) for t in config[key]]
    for token in [*names.values(), *extra]:
        if token and token not in present:
            backend.add_special_tokens([AddedToken(token, special=True, normalized=False)])
            present.add(token)

