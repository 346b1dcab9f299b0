"""Translating text with an encoder–decoder: the library of `python -m xlm_jax.translate` and of
`xlm_jax.load(ckpt).translate(...)`.

`Translator(config, params, tokenizer)` checks the settings (`check_translation`), frames each text as the
encoder expects (XLM: `</s> w1 ... wn </s>`, XLM-R: `<s> w1 ... wn </s>`; `tasks.InputProtocol`), truncates a text
longer than the encoder's positions (counted, so the caller can warn), sorts the texts by length and decodes
them in batches (`models.decoding`: greedy, or beam search with XLM's length penalty). Empty (or all-blank) texts
are not decoded: their translation is "". Outputs come back in the input order.

Compiled shapes stay few: a batch's source width is a power of two (at least 16, at most the encoder's
positions), its row count a power of two (at most `batch_size`), and its decoding length `max_len` either the one
given or XLM's `1.5 * source length + 10` rounded up to a power of two (at most the decoder's positions). The
decoding functions are module-level `jax.jit`s keyed on the model config and these shapes, so a second batch or
call of a seen shape compiles nothing.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np

from xlm_jax.core.errors import UserError, check_range
from xlm_jax.data.tokenizer import for_language
from xlm_jax.models.config import EncoderDecoderConfig
from xlm_jax.models.decoder import EncoderDecoder
from xlm_jax.models.decoding import beam_search, check_decoding, greedy_decode
from xlm_jax.tasks import InputProtocol

MT_TRAIN_COMMAND = "python -m xlm_jax.train_mt"
MIN_WIDTH = 16  # the narrowest source batch (shorter rows are padded to it)
MIN_DECODE_LEN = 16  # the shortest default decoding length


def bucket(n: int, low: int, high: int) -> int:
    """`n` rounded up to a power of two, at least `low`, at most `high`."""
    return max(1, min(high, max(low, 1 << max(0, n - 1).bit_length())))


def not_a_translation_model(source: str, what: str = "a masked LM (an encoder)") -> UserError:
    """The error for a checkpoint without a decoder given to translate: says what to run first."""
    return UserError(f"{source}: {what}, not a translation model (an encoder-decoder); translate needs one: train "
                     f"it first with `{MT_TRAIN_COMMAND}` (it initialises the encoder and decoder from this "
                     "checkpoint), or give an MT checkpoint (train_mt's output, a converted Hugging Face "
                     "EncoderDecoderModel or an XLM MT .pth)")


def language_ids(config: EncoderDecoderConfig, src_lang: Any, tgt_lang: Any) -> tuple[int | None, int]:
    """-> (source language id for the encoder's language embeddings, or None when it has none; target language
    id: the decoder's language-embedding row (XLM) or token-type row (XLM-R)). Codes are those of
    `config.decoder.langs`. UserError for a code the model lacks (naming the valid ones), a code that is not a
    str, or a multilingual decoder whose config records no codes."""
    codes = tuple(config.decoder.langs)
    for flag, lang in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
        if not isinstance(lang, str) or not lang:
            raise UserError(f"{flag}={lang!r}: give a language code" + (f" (one of {', '.join(codes)})"
                                                                         if codes else ""))
    if not codes:
        if config.target_langs > 1:
            raise UserError(f"this model has {config.target_langs} target languages but its config records no "
                            "language codes (model.langs), so src_lang / tgt_lang cannot be mapped to them")
        return None, 0  # one target language: the codes are informational
    for flag, lang in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
        if lang not in codes:
            raise UserError(f"{flag}={lang!r}: not a language of this model; valid: {', '.join(codes)}")
    src_id = config.encoder.langs.index(src_lang) if config.encoder.has_lang_embeddings else None
    return src_id, codes.index(tgt_lang)


def check_translation(config: EncoderDecoderConfig, src_lang: Any, tgt_lang: Any, beam: Any = 1,
                      length_penalty: Any = 1.0, max_len: Any = None, batch_size: Any = 32) -> None:
    """Every setting of a translation, checked before anything runs: the languages (`language_ids`), beam an
    integer >= 1, length_penalty a finite number, max_len (None: per batch, from the source length) an integer
    from 3 (start token, one word, EOS) to the decoder's positions, batch_size an integer >= 1. Raises UserError."""
    language_ids(config, src_lang, tgt_lang)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real):
        raise UserError(f"length_penalty={length_penalty!r}: must be a number (XLM's score is "
                        "sum_logprob / length ** length_penalty)")
    if max_len is not None:
        check_range("max_len", max_len, 3, integer=True)
    check_decoding(config.decoder, max_len or 3, beam, length_penalty)
    check_range("batch_size", batch_size, 1, integer=True)


class Translator:
    """An encoder–decoder with its tokenizer, translating lists of texts (see the module docstring).

    `config`: EncoderDecoderConfig; `params`: {encoder, decoder} (device or host arrays); `tokenizer`: the
    model's tokenizer (`xlm_jax.data.tokenizer.TokenizerLike`: encode_batch_pieces_ids, decode), set to the source
    language to encode and to the target language to decode when its rules depend on it (XLM's Moses + BPE)."""

    def __init__(self, config: EncoderDecoderConfig, params: Any, tokenizer: Any):
        if not isinstance(config, EncoderDecoderConfig):
            raise not_a_translation_model("this checkpoint")
        self.config, self.params, self.tokenizer = config, params, tokenizer
        self.model = EncoderDecoder(config)
        self.protocol = InputProtocol.from_config(config.encoder)

    def _encode(self, texts: Sequence[str], src_lang: str) -> tuple[list[list[int]], int]:
        """Framed source rows (truncated to the encoder's positions) and how many were truncated."""
        limit = self.config.encoder.max_positions - 2
        pieces = for_language(self.tokenizer, src_lang).encode_batch_pieces_ids(list(texts), special_tokens=False)
        rows, cut = [], 0
        for p in pieces:
            p = [int(i) for i in p]
            if len(p) > limit:
                p, cut = p[:limit], cut + 1
            rows.append(self.protocol.frame(p, None))
        return rows, cut

    def translate(self, texts: Sequence[str], src_lang: str, tgt_lang: str, *, beam: int = 1,
                  length_penalty: float = 1.0, max_len: int | None = None, batch_size: int = 32,
                  early_stopping: bool = False) -> tuple[list[str], int]:
        """-> (one translation per text, in order; how many texts were truncated to the encoder's positions).

        texts: a list of str (an empty or all-blank text translates to ""); beam 1 is greedy decoding (XLM's
        `generate`), beam > 1 XLM's beam search with `length_penalty` and `early_stopping`; max_len: slots of a
        translation, start token and EOS included (None: `1.5 * source length + 10` per batch, rounded up to a
        power of two, at most the decoder's positions). Raises UserError for bad settings (`check_translation`)."""
        check_translation(self.config, src_lang, tgt_lang, beam, length_penalty, max_len, batch_size)
        src_id, tgt_id = language_ids(self.config, src_lang, tgt_lang)
        out = [""] * len(texts)
        todo = [i for i, t in enumerate(texts) if t.strip()]
        if not todo:
            return out, 0
        rows, cut = self._encode([texts[i] for i in todo], src_lang)
        target = for_language(self.tokenizer, tgt_lang)  # XLM's Moses detokenizes by the target language's rules
        enc, dec = self.config.encoder, self.config.decoder
        order = sorted(range(len(rows)), key=lambda r: len(rows[r]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            longest = max(len(rows[r]) for r in chunk)
            width = bucket(longest, MIN_WIDTH, enc.max_positions)
            n_rows = bucket(len(chunk), 1, batch_size)
            src = np.full((n_rows, width), enc.pad_token_id, np.int32)
            mask = np.zeros((n_rows, width), np.int32)
            for j in range(n_rows):  # filler rows repeat the first one (dropped below)
                row = rows[chunk[j] if j < len(chunk) else chunk[0]]
                src[j, :len(row)], mask[j, :len(row)] = row, 1
            src_langs = None if src_id is None else jnp.full((n_rows, width), src_id, jnp.int32)
            tgt_langs = jnp.full((n_rows,), tgt_id, jnp.int32)
            length = max_len or bucket(int(1.5 * longest + 10), MIN_DECODE_LEN, dec.max_positions)
            args = (self.model, self.params, jnp.asarray(src), jnp.asarray(mask), src_langs, tgt_langs)
            if beam == 1:
                tokens, lengths = greedy_decode(*args, max_len=length)
            else:
                result = beam_search(*args, max_len=length, beam=beam, length_penalty=float(length_penalty),
                                     early_stopping=early_stopping)
                tokens, lengths = result.tokens, result.lengths
            tokens, lengths = np.asarray(tokens), np.asarray(lengths)
            for j, r in enumerate(chunk):
                out[todo[r]] = target.decode(tokens[j, 1:max(1, lengths[j] - 1)].tolist())
        return out, cut
