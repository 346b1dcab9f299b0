"""The tokenizer of original facebookresearch/XLM checkpoints: Moses (sacremoses) + fastBPE codes + XLM's dictionary,
with the interface of `xlm_jax.data.tokenizer.Tokenizer` (`TokenizerLike`).

XLM prepares text with `tools/tokenize.sh` (Moses `replace-unicode-punctuation.perl`, `normalize-punctuation.perl
-l LANG`, `remove-non-printing-char.perl`, `tokenizer.perl -no-escape -l LANG`), for most released models then
`tools/lowercase_and_remove_accent.py`, then fastBPE `applybpe` with the model's `codes` (lines `a b count`; `</w>`
ends a word) writing `@@ ` after a non-final piece; the ids are the checkpoint's dictionary (`dico_word2id`): `<s>`=0,
`</s>`=1, `<pad>`=2, `<unk>`=3, `<special0>`…`<special9>`=4…13 (`<special1>`, 5, is the mask), words from 14.

The files are those of transformers' `XLMTokenizer` (what the Hub's XLM models ship), so that
`XLMTokenizer.from_pretrained(DIR)` reads the same directory:
- `vocab.json`: the dictionary rewritten as transformers' conversion script does (`convert_xlm_original_pytorch_
  checkpoint_to_pytorch.rewrite_dict_keys`): a non-final piece `abc@@` -> `abc`, a final one `abc` -> `abc</w>`,
  the special tokens as they are, each at its dictionary id;
- `merges.txt`: the codes file as it is (XLMTokenizer reads the first two fields of each line);
- `tokenizer_config.json`: `tokenizer_class` "XLMTokenizer", `do_lowercase_and_remove_accent`, `lang2id` / `id2lang`
  and the special tokens.
`python -m xlm_jax.convert X.pth OUT --bpe-codes codes` writes them (`write_xlm_tokenizer`).

Encoding, as `XLMTokenizer._tokenize` does for every language but zh / ja / th: sacremoses' `MosesPunctNormalizer`
(unicode punctuation replaced first, control characters removed last), Sennrich's Romanian normalisation for `ro`,
`MosesTokenizer(lang).tokenize(escape=False)`, then XLM's lowercasing / accent stripping when the model uses it; the
BPE is the `tokenizers` library's BPE model (end-of-word suffix `</w>`) over the codes' merges, giving the pieces
XLMTokenizer's Python BPE gives (tests/test_xlm_bpe.py compares ids on gettext text). A piece the dictionary lacks
(a character or an intermediate merge the training data never kept) is `<unk>`, as in XLMTokenizer. Special-token
strings written in the text (`<s>`, `</s>`, `<special1>`, ...) map to their ids, as in transformers. Chinese,
Japanese and Thai need word segmenters (Stanford / KyTea / PyThaiNLP in XLM) that xlm_jax does not run: refused.

The language decides Moses' rules: a tokenizer has one (`lang`, default the first of the model's languages, else
"en"); `for_language(code)` gives the same tokenizer for another one (the translator encodes with the source
language and decodes with the target one). Decoding joins the pieces (`@@ ` removed), then `MosesDetokenizer(lang)`;
lowercased text stays lowercase.

Rows are framed as XLM frames them: `</s> A </s>`, pair `</s> A </s> B </s>` (`tasks.InputProtocol` for the XLM family).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE

from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import (_check_text, _check_texts, batch_encode, check_id, check_id_row, file_sha256,
                                    strip_accents_lower)

VOCAB_JSON, MERGES_TXT, CONFIG_JSON = "vocab.json", "merges.txt", "tokenizer_config.json"
TOKENIZER_CLASS = "XLMTokenizer"
END_OF_WORD, CONTINUATION = "</w>", "@@"
# XLM's dictionary: its first 14 words (src/data/dictionary.py: BOS_WORD, EOS_WORD, PAD_WORD, UNK_WORD, SPECIAL_WORD % i)
BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_WORDS = tuple(f"<special{i}>" for i in range(10))
XLM_SPECIALS = (BOS, EOS, PAD, UNK, *SPECIAL_WORDS)
MASK = SPECIAL_WORDS[1]  # XLM's MASK_WORD
_SPECIAL_TOKENS = re.compile("(" + "|".join(re.escape(t) for t in XLM_SPECIALS) + ")")
SEGMENTED_LANGS = ("zh", "ja", "th")  # XLMTokenizer runs a word segmenter for these, not Moses
MIN_KNOWN_MERGES = 0.5  # below this share of merge results in the dictionary, codes and dictionary do not belong together


def read_codes(path: str | Path) -> list[tuple[str, str]]:
    """The merges of a fastBPE codes file (lines `a b count`; transformers' merges.txt `a b` is read too), in rank
    order. Raises UserError naming the file and the first bad line when it is missing, empty, not UTF-8 text, or a
    line is not two symbols and an optional integer count."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"BPE codes {path} does not exist; give the fastBPE codes file of the model (lines "
                        "'a b count', e.g. codes_xnli_15 next to the .pth)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"BPE codes {path} cannot be read as UTF-8 text ({type(err).__name__}: {err})") from None
    merges = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or (n == 1 and line.startswith("#version")):  # transformers' merges.txt may carry a header
            continue
        if len(fields) not in (2, 3) or (len(fields) == 3 and not fields[2].isdigit()):
            raise UserError(f"BPE codes {path} line {n}: {line[:60]!r} is not 'a b count' (two symbols and an "
                            "integer count, as fastBPE learnbpe writes them): not a codes file")
        merges.append((fields[0], fields[1]))
    if not merges:
        raise UserError(f"BPE codes {path} holds no merges (lines 'a b count'): not a codes file")
    return merges


def dico_vocab(id2word: Sequence[str], source: str) -> dict[str, int]:
    """XLM's dictionary (word of each id, `dico_id2word`) -> XLMTokenizer's vocab.json: `abc@@` -> `abc`, `abc` ->
    `abc</w>`, special tokens unchanged. Raises UserError naming `source` when the first 14 words are not XLM's
    special tokens or two words map to one entry."""
    head = tuple(id2word[:len(XLM_SPECIALS)])
    if head != XLM_SPECIALS:
        bad = next(i for i, (a, b) in enumerate(zip(head + ("",) * 14, XLM_SPECIALS)) if a != b)
        got = id2word[bad] if bad < len(id2word) else "nothing"
        raise UserError(f"{source}: dictionary id {bad} is {got!r}, but XLM's dictionary starts with "
                        f"{', '.join(XLM_SPECIALS[:5])}, … <special9> at ids 0–13: not an XLM dictionary")
    vocab = {w: i for i, w in enumerate(XLM_SPECIALS)}
    for i, word in enumerate(id2word[len(XLM_SPECIALS):], len(XLM_SPECIALS)):
        piece = word[:-len(CONTINUATION)] if word.endswith(CONTINUATION) and len(word) > 2 else word + END_OF_WORD
        if piece in vocab:
            raise UserError(f"{source}: dictionary words {id2word[vocab[piece]]!r} (id {vocab[piece]}) and {word!r} "
                            f"(id {i}) are the same BPE piece")
        vocab[piece] = i
    return vocab


def check_codes_fit(merges: list[tuple[str, str]], vocab: dict[str, int], codes: str, source: str) -> None:
    """Refuses codes that do not belong to the dictionary: fewer than half of the merge results are dictionary
    pieces (final or not). Some may be missing legitimately (a merge that later merges always absorb), a codes file
    of another model misses nearly all. Raises UserError naming both files and examples."""
    results = [a + b for a, b in merges]
    known = [r in vocab or r.removesuffix(END_OF_WORD) in vocab or r + END_OF_WORD in vocab for r in results]
    if sum(known) < MIN_KNOWN_MERGES * len(results):
        missing = [r.replace(END_OF_WORD, "") for r, k in zip(results, known) if not k][:3]
        raise UserError(f"BPE codes {codes}: {len(results) - sum(known)} of its {len(results)} merges make pieces "
                        f"that the dictionary of {source} lacks (e.g. {', '.join(map(repr, missing))}): they do not "
                        "belong together; give the codes file the model was trained with")


def lowercased_dico(id2word: Sequence[str]) -> bool:
    """Whether a dictionary was built from lowercased, accent-stripped text (XLM's lowercase_and_remove_accent.py):
    no word changes under that normalisation. True for the XNLI-15 / en / enfr models, False for XLM-17 / XLM-100."""
    return all(strip_accents_lower(w) == w for w in id2word[len(XLM_SPECIALS):])


def write_xlm_tokenizer(out: str | Path, codes: str | Path, id2word: Sequence[str], langs: Sequence[str],
                        lowercase: bool, source: str) -> None:
    """Writes vocab.json, merges.txt (the codes file) and tokenizer_config.json into the directory `out` (see the
    module docstring). Raises UserError (before writing) for a codes file that does not parse or does not belong to
    the dictionary, and for a dictionary that is not XLM's."""
    merges = read_codes(codes)
    vocab = dico_vocab(id2word, source)
    check_codes_fit(merges, vocab, str(codes), source)
    out = Path(out)
    (out / VOCAB_JSON).write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / MERGES_TXT).write_bytes(Path(codes).read_bytes())
    config = {"tokenizer_class": TOKENIZER_CLASS, "do_lowercase_and_remove_accent": bool(lowercase),
              "lang2id": {lang: i for i, lang in enumerate(langs)} or None,
              "id2lang": {str(i): lang for i, lang in enumerate(langs)} or None,
              "bos_token": BOS, "eos_token": EOS, "sep_token": EOS, "cls_token": EOS, "pad_token": PAD,
              "unk_token": UNK, "mask_token": MASK, "additional_special_tokens": list(SPECIAL_WORDS)}
    (out / CONFIG_JSON).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def is_xlm_tokenizer_dir(directory: str | Path) -> bool:
    """Whether `directory` holds XLMTokenizer files: vocab.json + merges.txt + a tokenizer_config.json naming the class
    (or, naming none, holding XLMTokenizer's `do_lowercase_and_remove_accent`)."""
    d = Path(directory)
    if not ((d / VOCAB_JSON).is_file() and (d / MERGES_TXT).is_file() and (d / CONFIG_JSON).is_file()):
        return False
    try:
        config = json.loads((d / CONFIG_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    # The Hub's older XLM directories name no class; do_lowercase_and_remove_accent is XLMTokenizer's own setting.
    return isinstance(config, dict) and (config.get("tokenizer_class") == TOKENIZER_CLASS or (
        "tokenizer_class" not in config and "do_lowercase_and_remove_accent" in config))


def romanian_preprocessing(text: str) -> str:
    """Sennrich's WMT16 normalise-romanian.py + remove-diacritics.py, which XLM's en-ro data and XLMTokenizer apply."""
    for a, b in (("\u015e", "\u0218"), ("\u015f", "\u0219"), ("\u0162", "\u021a"), ("\u0163", "\u021b"),
                 ("\u0218", "S"), ("\u0219", "s"), ("\u021a", "T"), ("\u021b", "t"), ("\u0102", "A"), ("\u0103", "a"),
                 ("\u00c2", "A"), ("\u00e2", "a"), ("\u00ce", "I"), ("\u00ee", "i")):
        text = text.replace(a, b)
    return text


@dataclasses.dataclass
class XLMBPETokenizer:
    """XLM's Moses + BPE tokenizer over XLMTokenizer's files (see the module docstring); build it with `load`."""

    backend: Backend  # tokenizers BPE over the merges; ids >= n_words are pieces outside the dictionary (<unk>)
    path: str  # the vocab.json
    sha256: str  # of the vocab.json
    n_words: int  # dictionary size: the model's vocabulary
    pieces: tuple[str, ...]  # vocab.json's piece of each id ("abc" non-final, "abc</w>" final)
    langs: tuple[str, ...]  # lang2id's codes, in id order
    lang: str = "en"  # Moses' language for encode / decode
    lowercase_and_strip_accents: bool = False
    _moses: dict = dataclasses.field(default_factory=dict, repr=False)  # sacremoses objects per (kind, lang)

    @classmethod
    def load(cls, path, lang: str | None = None) -> "XLMBPETokenizer":
        """A directory holding vocab.json, merges.txt and tokenizer_config.json (tokenizer_class XLMTokenizer), or
        its vocab.json. Raises UserError when a file is missing or does not parse, the vocabulary is not XLM's
        (special tokens at ids 0–13, ids 0..n-1 each used once), or a merge's symbols are not BPE pieces."""
        p = Path(path)
        d = p if p.is_dir() else p.parent
        for name in (VOCAB_JSON, MERGES_TXT, CONFIG_JSON):
            if not (d / name).is_file():
                raise UserError(f"{d} has no {name}: an XLM tokenizer is vocab.json + merges.txt (the fastBPE codes) + "
                                "tokenizer_config.json, as `python -m xlm_jax.convert X.pth OUT --bpe-codes codes` "
                                "writes them")
        try:
            vocab = json.loads((d / VOCAB_JSON).read_text(encoding="utf-8"))
            config = json.loads((d / CONFIG_JSON).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise UserError(f"{d}: cannot read the XLM tokenizer's JSON files ({type(err).__name__}: {err})") from None
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise UserError(f"{d / VOCAB_JSON}: not a JSON object of piece -> id")
        pieces = [""] * len(vocab)
        for piece, i in vocab.items():
            if piece.endswith(END_OF_WORD) and piece[:-len(END_OF_WORD)] in SPECIAL_WORDS:
                piece = piece[:-len(END_OF_WORD)]  # transformers' conversion script writes "<special0></w>"
            if not 0 <= i < len(vocab) or pieces[i]:
                raise UserError(f"{d / VOCAB_JSON}: id {i} ({piece!r}) is out of [0, {len(vocab) - 1}] or used twice")
            pieces[i] = piece
        if tuple(pieces[:len(XLM_SPECIALS)]) != XLM_SPECIALS:
            raise UserError(f"{d / VOCAB_JSON}: ids 0–13 are not XLM's special tokens ({', '.join(XLM_SPECIALS[:4])}, "
                            "<special0> … <special9>)")
        merges = read_codes(d / MERGES_TXT)
        # The BPE model needs every symbol a merge uses or makes; those outside the dictionary get ids past it.
        full = dict(vocab)
        for a, b in merges:
            for sym in (a, b, a + b):
                full.setdefault(sym, len(full))
        try:
            backend = Backend(BPE(full, merges, unk_token=UNK, end_of_word_suffix=END_OF_WORD))
        except Exception as err:  # the Rust library raises a bare Exception
            raise UserError(f"{d / MERGES_TXT}: the tokenizers library refuses these merges: {err}") from None
        langs = config.get("id2lang") or {}
        codes = tuple(langs[k] for k in sorted(langs, key=int)) if isinstance(langs, dict) else ()
        tok = cls(backend, str(d / VOCAB_JSON), file_sha256(d / VOCAB_JSON), len(vocab), tuple(pieces), codes,
                  lowercase_and_strip_accents=bool(config.get("do_lowercase_and_remove_accent", True)))
        if lang is not None:
            return tok.for_language(lang)
        # Default: English when the model has it, else its first language that Moses handles.
        usable = [c for c in codes if c not in SEGMENTED_LANGS]
        tok.lang = "en" if "en" in codes or not usable else usable[0]
        return tok

    def for_language(self, lang: str) -> "XLMBPETokenizer":
        """This tokenizer with Moses' rules for `lang` (an ISO code). Raises UserError for a code that is not a
        str, one outside the model's languages (when the files list them), and zh / ja / th (see the module
        docstring)."""
        if not isinstance(lang, str) or not lang:
            raise UserError(f"lang={lang!r:.40}: give a language code" + (f" (one of {', '.join(self.langs)})"
                                                                            if self.langs else ""))
        if lang in SEGMENTED_LANGS:
            raise UserError(f"lang={lang!r}: XLM segments {lang} text with an external word segmenter (Stanford "
                            "segmenter, KyTea, PyThaiNLP) that xlm_jax does not run; tokenize it yourself")
        if self.langs and lang not in self.langs:
            raise UserError(f"lang={lang!r}: not a language of this XLM tokenizer ({self.path}); valid: "
                            f"{', '.join(self.langs)}")
        return self if lang == self.lang else dataclasses.replace(self, lang=lang)

    def __len__(self) -> int:
        return self.n_words

    bos_id = property(lambda self: 0)
    eos_id = property(lambda self: 1)
    pad_id = property(lambda self: 2)
    unk_id = property(lambda self: 3)
    mask_id = property(lambda self: XLM_SPECIALS.index(MASK))

    def _get(self, kind: str):
        import sacremoses

        key = (kind, self.lang)
        if key not in self._moses:
            self._moses[key] = {
                # XLMTokenizer's moses_pipeline: replace-unicode-punctuation, normalize-punctuation, remove-non-printing
                "norm": lambda: sacremoses.MosesPunctNormalizer(self.lang, pre_replace_unicode_punct=True,
                                                                post_remove_control_chars=True),
                "tok": lambda: sacremoses.MosesTokenizer(self.lang),
                "detok": lambda: sacremoses.MosesDetokenizer(self.lang),
            }[kind]()
        return self._moses[key]

    def words(self, text: str) -> list[str]:
        """The Moses words of `text` (normalised, tokenized, lowercased and accent-stripped when the model is), which
        BPE splits into pieces."""
        text = self._get("norm").normalize(text)
        if self.lang == "ro":
            text = romanian_preprocessing(text)
        words = self._get("tok").tokenize(text, return_str=False, escape=False)
        return [strip_accents_lower(w) for w in words] if self.lowercase_and_strip_accents else words

    def normalize(self, text: str) -> str:
        """The text the BPE sees: its Moses words joined by spaces."""
        return " ".join(self.words(text))

    def _ids(self, words_of_texts: list[list[str]]) -> list[np.ndarray]:
        out = []
        for enc in self.backend.encode_batch([w or ["."] for w in words_of_texts], is_pretokenized=True,
                                             add_special_tokens=False):
            ids = np.asarray(enc.ids, np.int32)
            ids[ids >= self.n_words] = self.unk_id
            out.append(ids)
        return [ids if w else ids[:0] for ids, w in zip(out, words_of_texts)]

    def encode_pieces_ids(self, text: str, special_tokens: bool = True) -> list[int]:
        """Dictionary ids of the pieces of `text` (no framing); special-token strings in the text map to their ids
        unless `special_tokens=False`. Raises UserError when `text` is not a str."""
        return self.encode_batch_pieces_ids([_check_text(text, "text")], special_tokens)[0].tolist()

    def encode_batch_pieces_ids(self, texts: Sequence[str], special_tokens: bool = True) -> list[np.ndarray]:
        """encode_pieces_ids over many texts, as int32 arrays [pieces]. Raises UserError when `texts` is a str or
        holds anything but str."""
        texts = _check_texts(texts, "texts", allow_empty=True)
        if not special_tokens:
            return self._ids([self.words(t) for t in texts])
        out = []
        for text in texts:
            parts = _SPECIAL_TOKENS.split(text)
            segments = self._ids([self.words(seg) for seg in parts[::2]])
            row = []
            for k, part in enumerate(parts):
                row.append(np.asarray([XLM_SPECIALS.index(part)], np.int32) if k % 2 else segments[k // 2])
            out.append(np.concatenate(row).astype(np.int32))
        return out

    def encode(self, text: str) -> list[int]:
        """`</s> text </s>` as dictionary ids (XLM's framing; no truncation)."""
        return self.frame(self.encode_pieces_ids(text))

    def encode_pair(self, a: str, b: str) -> list[int]:
        """`</s> a </s> b </s>` as dictionary ids (no truncation)."""
        return self.frame(self.encode_pieces_ids(a), self.encode_pieces_ids(b))

    def frame(self, a: Sequence[int], b: Sequence[int] | None = None) -> list[int]:
        """XLM's rows: `</s> a </s>`, or `</s> a </s> b </s>` when b is given."""
        eos = self.eos_id
        return [eos, *a, eos] + ([*b, eos] if b is not None else [])

    def n_specials(self, pair: bool) -> int:
        """Special tokens `frame` adds: 2 around one text, 3 around a pair."""
        return 3 if pair else 2

    def decode(self, ids: Sequence[int]) -> str:
        """Text of one row of ids in [0, len(self)): special tokens skipped (`<unk>` kept as "<unk>"), BPE joined
        (XLM's `@@ ` removal), then Moses-detokenized for `lang`. Raises UserError for anything but one row of ids."""
        row = check_id_row(ids, len(self), self.path)
        pieces = [self.pieces[i] for i in map(int, row) if i >= len(XLM_SPECIALS) or i == self.unk_id]
        words = "".join(p if p != UNK else UNK + END_OF_WORD for p in pieces).replace(END_OF_WORD, " ").split()
        return self._get("detok").detokenize(words, return_str=True, unescape=False)

    def id_to_piece(self, i: int) -> str:
        """The dictionary word of id `i`, as XLM writes it (`abc@@` non-final, `abc` final, `<special1>`). Raises
        UserError for an id outside [0, len(self))."""
        piece = self.pieces[check_id(i, len(self), self.path)]
        if int(i) < len(XLM_SPECIALS):
            return piece
        return piece[:-len(END_OF_WORD)] if piece.endswith(END_OF_WORD) else piece + CONTINUATION

    def batch_encode(self, texts, max_len: int, pad_to: int | None = None) -> dict:
        """Padded batch as `Tokenizer.batch_encode` (XLM framing, longest-first truncation, `<pad>`=2)."""
        return batch_encode(self, texts, max_len, pad_to)

    def encode_with_offsets(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Not available: Moses rewrites the text (punctuation, escapes, lowercasing), so pieces have no exact
        character spans. Raises UserError (span tasks — QA, NER on raw text — need another tokenizer)."""
        raise UserError(f"{self.path}: XLM's Moses + BPE tokenizer gives no character offsets (Moses rewrites the "
                        "text); tasks that need spans cannot use it")

