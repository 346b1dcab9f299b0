"""The notebook API: `m = xlm_jax.load(path)` carries the checkpoint's tokenizer (and, fine-tuned, its task head);
`m.fill_mask(texts)`, `m.embed(texts)`, `m.similarity(a, b)`, `m.retrieve(queries, candidates, k)`,
`m.predict(texts)`, `m.predict_tokens(word_lists)`, `m.answer(question, context)` answer in words;
`m.hidden_states(ids)`, `m.layer_states(ids)`, `m.mlm_logits(ids)` take token ids. See docs/notebook.md.

One concern in one module (over 500 lines on purpose): the `LoadedModel` class whose methods are the notebook API,
and `load`. What a task's method needs (reading, features, decoding) lives in its `xlm_jax.tasks` module."""

from __future__ import annotations

import dataclasses
import functools
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from xlm_jax.core.errors import UserError, check_choice, check_range
from xlm_jax.data.hf_tokenizer import HFTokenizer
from xlm_jax.data.xlm_bpe import XLMBPETokenizer
from xlm_jax.data.tokenizer import Tokenizer, _check_texts, encode_by_language, pad_rows
from xlm_jax.models import families
from xlm_jax.models.config import EncoderDecoderConfig, ModelConfig
from xlm_jax.models.sentence_transformers import SentenceEmbeddingConfig, prompt_length, read_sentence_transformers
from xlm_jax.tasks import Example, InputProtocol, TokenExample, encode_sequence_examples, encode_token_examples, \
    n_specials, ner, qa, word_predictions
from xlm_jax.tasks.contrastive import pool as pool_states
from xlm_jax.tasks.embedding import sentence_config as embedding_sentence_config
from xlm_jax.training.checkpoint import resolve, restore_params
from xlm_jax.workflows.convert import load_any
from xlm_jax.workflows.evaluate import cosine_matrix
from xlm_jax.workflows.save_model import save_model
from xlm_jax.workflows.tokenizer_check import Found, checkpoint_tokenizer, open_tokenizer
from xlm_jax.workflows.translate import Translator, not_a_translation_model
from xlm_jax.workflows.loading import (FINETUNE_CONFIG, TASK_FILE, is_task_checkpoint,  # noqa: F401
                                       layer_index, load_task_model, task_model)


def _host_int_array(x, name: str) -> np.ndarray:
    """`x` as a NumPy integer array [batch, length] ([length] is one row); a bool attention_mask is read as 0 / 1."""
    if x is None:
        raise UserError(f"{name} is None: give an integer array [batch, length]")
    try:
        a = np.asarray(x)
    except ValueError:  # nested lists of different lengths
        raise UserError(f"{name} must be a rectangular array [batch, length] of integers, but its rows have "
                        "different lengths: pad them, e.g. with Tokenizer.batch_encode") from None
    if a.size == 0:
        a = a.astype(np.int32)  # `[]` comes out as float64: let the caller say that it is empty
    if a.dtype.kind in "US":
        hint = ("language ids are indices into the model's config.langs" if name == "langs" else
                "encode text first with Tokenizer.encode or Tokenizer.batch_encode")
        raise UserError(f"{name} must be an integer array, got text ({a.dtype}): {hint}")
    if a.dtype == bool and name == "attention_mask":
        a = a.astype(np.int32)
    if not np.issubdtype(a.dtype, np.integer):
        raise UserError(f"{name} must be an integer array [batch, length], got dtype {a.dtype} (shape {a.shape})")
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise UserError(f"{name} must be [batch, length] (or [length] for one row), got shape {a.shape}")
    return a


def _first_bad(bad: np.ndarray, values: np.ndarray, name: str) -> str:
    row, col = (int(i) for i in np.argwhere(bad)[0])
    more = f" ({int(bad.sum())} values in all)" if bad.sum() > 1 else ""
    return f"{name}[{row}, {col}] = {int(values[row, col])}{more}"


def check_inputs(config: ModelConfig, input_ids, attention_mask=None, langs=None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Host-side check of one batch against what `config` can represent -> int32 (ids, mask, langs or None).

    A value outside the embedding tables would be read as NaN (or wrap around) inside the jitted forward, so
    everything is refused here with a UserError naming the value and the valid range: ids in [0, vocab_size),
    at most max_positions tokens per row (XLM-R counts the real tokens, attention_mask 1; XLM counts every
    slot), an attention_mask of 0 / 1 and langs in [0, n_langs) of the input's shape, and langs only for a
    model with language embeddings. A row without real tokens is allowed (its states are finite but
    meaningless)."""
    ids = _host_int_array(input_ids, "input_ids")
    if ids.size == 0:
        raise UserError(f"input_ids is empty (shape {ids.shape}): give at least one row of at least one token")
    vocab = config.vocab_size
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        raise UserError(f"{_first_bad(bad, ids, 'input_ids')} is not a token id of this model: ids must be in "
                        f"[0, {vocab - 1}] (vocab_size {vocab}); was the text encoded with this model's tokenizer?")
    if attention_mask is None:
        mask = (ids != config.pad_token_id).astype(np.int32)
    else:
        mask = _host_int_array(attention_mask, "attention_mask")
        if mask.shape != ids.shape:
            raise UserError(f"attention_mask has shape {mask.shape} but input_ids has {ids.shape}: they must match")
        bad = (mask != 0) & (mask != 1)
        if bad.any():
            raise UserError(f"{_first_bad(bad, mask, 'attention_mask')}: attention_mask must be 1 (real token) or "
                            "0 (padding)")
    limit = config.max_positions
    if config.family == "xlmr":
        # XLM-R numbers only the real tokens (fairseq / HF make_positions), so padding does not use positions.
        lengths = mask.sum(axis=1)
        if lengths.max() > limit:
            row = int(lengths.argmax())
            raise UserError(f"input_ids row {row} has {int(lengths[row])} real tokens (attention_mask 1) but the model "
                            f"has {limit} positions (max_positions): give at most {limit} tokens per row, e.g. "
                            f"Tokenizer.batch_encode(texts, max_len={limit})")
    elif ids.shape[1] > limit:
        raise UserError(f"input_ids has length {ids.shape[1]} but this XLM model has {limit} positions "
                        f"(max_positions; every slot, padding included, takes one): give rows of at most {limit}")
    lang_ids = None
    if langs is not None:
        if not config.has_lang_embeddings:
            raise UserError(f"langs given, but this {config.family} model has no language embeddings "
                            f"(use_lang_emb={config.use_lang_emb}, n_langs={config.n_langs}): leave langs out")
        lang_ids = _host_int_array(langs, "langs")
        if lang_ids.shape != ids.shape:
            raise UserError(f"langs has shape {lang_ids.shape} but input_ids has {ids.shape}: they must match "
                            "(one language id per token)")
        bad = (lang_ids < 0) | (lang_ids >= config.n_langs)
        if bad.any():
            names = f" ({', '.join(f'{c}={i}' for i, c in enumerate(config.langs))})" if config.langs else ""
            raise UserError(f"{_first_bad(bad, lang_ids, 'langs')} is not a language id of this model: langs must "
                            f"be in [0, {config.n_langs - 1}]{names}")
        lang_ids = lang_ids.astype(np.int32)
    return ids.astype(np.int32), mask.astype(np.int32), lang_ids


# ------------------------------------------------------------------------------------------ text helpers

class Fill(NamedTuple):
    """One candidate for one `<mask>`: the SentencePiece `piece` ("▁file"), the detokenised `token` ("file"),
    the model's `probability` (softmax over the whole output vocabulary, float) and the token `id`."""

    piece: str
    token: str
    probability: float
    id: int


class Answer(NamedTuple):
    """An extractive-QA answer: the best span's `text` (== context[start:end], character offsets into the
    context given), its `score` (start logit + end logit, float) and the `n_best` list of candidate spans
    (`xlm_jax.tasks.qa.Span(text, start, end, score)`, best first; its first entry is this answer)."""

    text: str
    start: int
    end: int
    score: float
    n_best: list


class Prediction(NamedTuple):
    """A sequence-classification answer: the most probable `label`, its `probability`, and every label's
    probability (`probabilities`, label -> float, in the checkpoint's label order)."""

    label: str
    probability: float
    probabilities: dict


POOLINGS = ("mean", "cls")
_PACKAGE_DIR = str(Path(__file__).resolve().parent)
MIN_WIDTH = 16  # the narrowest batch: shorter rows are padded to it (one shape for every short text)


def _warn_caller(message: str) -> None:
    """A UserWarning attributed to the caller's line (the first frame outside xlm_jax), wherever it came in."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def bucket(n: int, low: int, high: int) -> int:
    """`n` rounded up to a power of two, at least `low` and at most `high`: batch widths and row counts are
    drawn from a handful of sizes, so a notebook loop compiles each shape once (not once per call)."""
    return max(1, min(high, max(low, 1 << max(0, n - 1).bit_length())))


def _as_list(items, where: str, pairs: bool = False, allow_empty: bool = False) -> tuple[list, bool]:
    """-> (a list of texts (or pairs), whether one text was given rather than a list). UserError for an empty
    list (unless `allow_empty`) or an item that is not a str (or a (str, str) pair when `pairs`)."""
    single = isinstance(items, str) or (pairs and isinstance(items, tuple) and len(items) == 2
                                        and all(isinstance(t, str) for t in items))
    return _check_texts([items] if single else items, where, pairs=pairs, allow_empty=allow_empty), single


# ------------------------------------------------------------------------------------------------ model

@dataclasses.dataclass(repr=False)
class LoadedModel:
    """A checkpoint ready for inference: `config`, `params`, the matching `tokenizer` (or None), and for a
    fine-tuned checkpoint its `task` (task name, labels; `xlm_jax.workflows.loading.TaskInfo`).

    Text methods (need a tokenizer): `fill_mask`, `embed`, `similarity`, `retrieve`, and for a fine-tuned
    checkpoint `predict` / `predict_tokens` (classification heads) or `answer` (extractive QA). They take a str or
    a non-empty list of str (`predict`: also (str, str) pairs; `answer`: questions and contexts); an XLM model
    with language embeddings needs `lang=` (a code of `config.langs`, or one per text). Texts longer than the
    model's positions (`config.max_positions` tokens, specials included) are truncated with a `UserWarning`
    saying how many were cut (the same rule everywhere: single texts keep their first pieces, pairs lose pieces
    from the longer side first, words that do not fit are labelled "O", QA questions keep max_query_len pieces).
    Texts are batched by length: rows are padded to a power-of-two width (at least 16, at most max_positions)
    and batches hold a power-of-two number of rows (at most `batch_size`, default 32), so a notebook loop
    compiles a handful of shapes once and never again for a shape it has seen.

    Array methods (`hidden_states`, `layer_states`, `mlm_logits`) take `input_ids` [batch, length] (a [length]
    array is one row), optional `attention_mask` [batch, length] of 0 / 1 (default: input_ids != pad id) and, for
    XLM models with language embeddings, optional `langs` [batch, length] language ids (indices into
    `config.langs`). Any integer dtype (and bool for the mask), NumPy / JAX arrays or nested lists. Inputs the
    model cannot represent raise UserError before anything runs (`check_inputs`): ids outside [0, vocab_size),
    more than max_positions tokens in a row, an empty batch, mismatched shapes, non-integer dtypes, langs outside
    [0, n_langs) or langs for a model without language embeddings."""

    config: ModelConfig
    params: Any
    tokenizer: Any = None  # xlm_jax.data.tokenizer.Tokenizer
    task: Any = None  # xlm_jax.workflows.loading.TaskInfo of a fine-tuned checkpoint
    source: str = ""
    tokenizer_note: str = ""  # why there is no tokenizer, for the error of a text method
    batch_size: int = 32
    # A sentence-transformers directory's pooling, normalisation, max length and prompts (what `embed` uses).
    sentence: SentenceEmbeddingConfig | None = None

    def __post_init__(self):
        # A translation model (EncoderDecoderConfig) answers `translate` only; its model is built by the Translator.
        # Otherwise the family's masked LM (XLM / XLM-R, ModernBERT, EuroBERT).
        self.model = None if self.is_translation else families.masked_lm(self.config)

    @property
    def is_translation(self) -> bool:
        """Whether this is an encoder-decoder (machine translation: `translate`) rather than an encoder."""
        return isinstance(self.config, EncoderDecoderConfig)

    def __repr__(self) -> str:
        c = self.config
        tok = (f"tokenizer {self.tokenizer.path} ({len(self.tokenizer)} ids)" if self.tokenizer is not None
               else "no tokenizer")
        if self.is_translation:
            e, d = c.encoder, c.decoder
            return (f"LoadedModel(translation {e.family}, encoder {e.num_layers} + decoder {d.num_layers} layers, "
                    f"hidden {e.hidden_size}, vocab {e.vocab_size}, langs {list(d.langs) or '-'}, {tok})")
        task = f", task {self.task.task} {list(self.task.labels)}" if self.task is not None else ""
        return (f"LoadedModel({c.family}, {c.num_layers} layers, hidden {c.hidden_size}, vocab {c.vocab_size}, "
                f"langs {list(c.langs) or '-'}, {tok}{task})")

    # ------------------------------------------------------------------------------ jitted functions

    @functools.cached_property
    def _forward(self):
        def forward(params, ids, mask, langs, layer_states: bool):
            out = self.model.apply({"params": params}, ids, mask, None, langs, output_all_layers=layer_states)
            return out

        return jax.jit(forward, static_argnums=4)

    @functools.cached_property
    def _logits(self):
        def logits(params, ids, mask, langs):
            return self.model.apply({"params": params}, ids, mask, None, langs, method=type(self.model).mlm_logits)

        return jax.jit(logits)

    @functools.cached_property
    def _pooled(self):
        last = self.config.num_layers - 1

        def pooled(params, ids, mask, langs, index: int, pooling, skip_first: int = 0):
            if index == last:  # the final LayerNorm of pre-LN models belongs to the last layer
                states = self.model.apply({"params": params}, ids, mask, None, langs)
            else:
                _, every = self.model.apply({"params": params}, ids, mask, None, langs, output_all_layers=True)
                states = every[index]
            # sentence-transformers' Pooling: "mean" over the real tokens, "cls" the first one, ...
            return pool_states(states, mask, pooling, skip_first=skip_first)

        return jax.jit(pooled, static_argnums=(4, 5, 6))

    @functools.cached_property
    def _mask_probs(self):
        def probs(params, ids, mask, langs, positions):
            logits = self.model.apply({"params": params}, ids, mask, None, langs, positions,
                                      method=type(self.model).logits_at)
            return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

        return jax.jit(probs)

    @functools.cached_property
    def _task_probs(self):
        module = task_model(self.config, self.task.spec, len(self.task.labels))

        def probs(params, ids, mask, langs):
            return jax.nn.softmax(module.apply({"params": params}, ids, mask, None, langs), axis=-1)

        return jax.jit(probs)

    @functools.cached_property
    def _span_logits(self):
        module = task_model(self.config, self.task.spec, len(self.task.labels))

        def logits(params, ids, mask, langs):  # [B, T, 2] (start, end), as qa.make_logits_fn
            return module.apply({"params": params}, ids, mask, None, langs).astype(jnp.float32)

        return jax.jit(logits)

    def save(self, directory, format: str = "xlm_jax", force: bool = False) -> Path:
        """Writes this model, with its tokenizer (and a fine-tuned model's task head and labels), to `directory`
        -> its Path. format="xlm_jax": our checkpoint layout, as `python -m xlm_jax.convert --to orbax` writes it;
        format="hf": a Hugging Face directory (config.json, model.safetensors, sentencepiece.bpe.model or
        tokenizer.json) that transformers' AutoModel / AutoTokenizer read. `xlm_jax.load(directory)` gives the
        same outputs back. `directory` must be new, empty or an earlier `save` / `convert` output (another
        non-empty directory only with force=True); it is written beside and renamed into place, so a failure
        leaves what was there unchanged; format="hf" of a fine-tuned model writes transformers' class with its head
        and `id2label` (`xlm_jax.workflows.save_model`). Raises UserError for a bad format or directory."""
        return save_model(directory, self.params, self.config, self.tokenizer, self.task, format, force)

    def compiled_shapes(self) -> int:
        """How many input shapes the text methods' jitted functions have compiled so far (all of them
        together): a second call with texts of the same lengths adds none."""
        return sum(self.__dict__[name]._cache_size() for name in ("_pooled", "_mask_probs", "_task_probs",
                                                                   "_span_logits") if name in self.__dict__)

    # ---------------------------------------------------------------------------------- array methods

    def _inputs(self, input_ids, attention_mask, langs):
        return tuple(None if x is None else jnp.asarray(x)
                     for x in check_inputs(self.config, input_ids, attention_mask, langs))

    def hidden_states(self, input_ids, attention_mask=None, langs=None) -> jax.Array:
        """Last-layer states, [batch, length, hidden] in the config's dtype."""
        self._need_encoder("hidden_states")
        inputs = self._inputs(input_ids, attention_mask, langs)  # checked before the jitted function is built
        return self._forward(self.params, *inputs, False)

    def layer_states(self, input_ids, attention_mask=None, langs=None) -> jax.Array:
        """Every layer's output, [layers, batch, length, hidden] (the last equals `hidden_states`)."""
        self._need_encoder("layer_states")
        inputs = self._inputs(input_ids, attention_mask, langs)
        last, states = self._forward(self.params, *inputs, True)
        return states.at[-1].set(last)

    def mlm_logits(self, input_ids, attention_mask=None, langs=None) -> jax.Array:
        """Masked-LM logits at every position, [batch, length, vocab]. Raises UserError for a checkpoint without
        an LM head (a fine-tuned classifier, a converted encoder or ...ForSequenceClassification)."""
        self._need_encoder("mlm_logits")
        self._need_lm_head("mlm_logits")
        inputs = self._inputs(input_ids, attention_mask, langs)
        return self._logits(self.params, *inputs)

    def _need_encoder(self, method: str) -> None:
        if self.is_translation:
            raise UserError(f"{method}: this is a translation model (an encoder-decoder, {self.source or 'in memory'})"
                            "; its method is translate(texts, src_lang=..., tgt_lang=...). The encoder methods "
                            "(hidden_states, embed, fill_mask, ...) need a masked LM or a fine-tuned encoder")

    def _need_lm_head(self, method: str) -> None:
        if "lm_head" not in self.params:
            has = ("an encoder and a fine-tuned classifier head (xlm_jax.finetune)" if "classifier" in self.params
                   else "an encoder only")
            rest = ("; for the classifier's answers use " + self._task_method()) if "classifier" in self.params \
                else ""
            raise UserError(f"this checkpoint has no masked-LM head (lm_head): it holds {has} (parameters: "
                            f"{', '.join(sorted(self.params))}). {method} needs one; use hidden_states, layer_states "
                            f"or embed for the encoder's states{rest}")

    # ----------------------------------------------------------------------------------- text plumbing

    def _need_tokenizer(self, method: str):
        if self.tokenizer is None:
            why = f" ({self.tokenizer_note})" if self.tokenizer_note else ""
            raise UserError(f"{method} needs a tokenizer, but this model has none{why}: load it with "
                            "xlm_jax.load(path, tokenizer='PATH/sentencepiece.bpe.model'), or use the array methods "
                            "(hidden_states, layer_states, mlm_logits) on token ids")
        return self.tokenizer

    def _langs(self, lang, n: int, what: str = "lang") -> list[str]:
        """One language code per text ("" for a model without language embeddings); UserError for a lang the
        model lacks, a missing one, or a list of the wrong length."""
        cfg = self.config
        if not cfg.has_lang_embeddings:
            if lang is not None:
                raise UserError(f"{what}={lang!r} given, but this {cfg.family} model has no language embeddings "
                                f"(use_lang_emb={cfg.use_lang_emb}, n_langs={cfg.n_langs}): leave {what} out")
            return [""] * n
        valid = ", ".join(cfg.langs) if cfg.langs else f"ids 0..{cfg.n_langs - 1} (config.langs is empty)"
        if lang is None:
            raise UserError(f"this XLM model has language embeddings: pass {what}= one of {valid} (or a list, one "
                            "per text)")
        langs = [lang] * n if isinstance(lang, str) else list(lang) if isinstance(lang, list | tuple) else None
        if langs is None or len(langs) != n:
            raise UserError(f"{what}={lang!r:.60}: give one language code (one of {valid}) or a list of {n}, one per "
                            "text")
        for i, code in enumerate(langs):
            if not isinstance(code, str) or code not in cfg.langs:
                where = what if isinstance(lang, str) else f"{what}[{i}]"
                raise UserError(f"{where}={code!r}: not a language of this model; valid: {valid}")
        return langs

    def _warn_truncated(self, cut: int, n: int, what: str = "texts") -> None:
        if cut:
            _warn_caller(f"{cut} of {n} {what} were longer than the model's {self.config.max_positions} positions "
                         "(special tokens included) and were truncated")

    def _encode(self, items: list, langs: list[str]):
        """Texts or pairs -> `tasks.Encoded` rows framed for this model's family, truncated (with a warning) to
        max_positions; the same encoder fine-tuning and `evaluate task` use."""
        examples = [Example(x, None, "", lang) if isinstance(x, str) else Example(x[0], x[1], "", lang)
                    for x, lang in zip(items, langs)]
        protocol = InputProtocol.from_config(self.config)
        enc = encode_sequence_examples(examples, self.tokenizer, protocol, (), self.config.max_positions)
        self._warn_truncated(enc.truncated, len(items))
        return enc

    def _batched(self, rows: list[list[int]], lang_ids: list[int], call, batch_size: int | None = None) -> list:
        """Runs `call(ids, mask, langs, chunk)` on length-sorted, bucket-shaped batches of `rows` -> one result
        per row, in the rows' order. Filler rows (all padding but one real token, so that nothing divides by
        zero) fill a batch up to its bucket and are dropped."""
        batch_size = check_range("batch_size", self.batch_size if batch_size is None else batch_size, 1, integer=True)

        cfg = self.config
        order = sorted(range(len(rows)), key=lambda r: len(rows[r]))
        out: list = [None] * len(rows)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            width = bucket(max(len(rows[r]) for r in chunk), MIN_WIDTH, cfg.max_positions)
            n_rows = bucket(len(chunk), 1, batch_size)
            ids, mask = pad_rows([rows[r] for r in chunk], width, cfg.pad_token_id, n_rows)
            mask[len(chunk):, 0] = 1
            langs = None
            if cfg.has_lang_embeddings:
                langs = np.zeros((n_rows, width), np.int32)
                langs[: len(chunk)] = np.asarray([lang_ids[r] for r in chunk], np.int32)[:, None]
            result = np.asarray(call(ids, mask, langs, chunk))
            for j, r in enumerate(chunk):
                out[r] = result[j]
        return out

    # ------------------------------------------------------------------------------------ translation

    def check_translate(self, method: str = "translate") -> None:
        """UserError unless this is an encoder-decoder with a tokenizer (an MLM says what to run first)."""
        if not self.is_translation:
            what = ("a fine-tuned encoder with a task head" if self.task is not None else
                    "a masked LM (an encoder)" if "lm_head" in self.params else "an encoder")
            raise not_a_translation_model(self.source or "this model", what)
        self._need_tokenizer(method)

    @functools.cached_property
    def _translator(self) -> Translator:
        return Translator(self.config, self.params, self.tokenizer)

    def translate(self, texts, src_lang: str | None = None, tgt_lang: str | None = None, beam: int = 1,
                  length_penalty: float = 1.0, max_len: int | None = None, batch_size: int | None = None,
                  early_stopping: bool = False) -> str | list[str]:
        """Translations of `texts` (a str, or a list of str: one translation each, in order; [] gives []; an empty
        or all-blank text gives "") from `src_lang` into `tgt_lang` (codes of `config.decoder.langs`), with an
        encoder-decoder checkpoint (MT training's output, a converted HF EncoderDecoderModel or XLM MT .pth).

        beam=1: greedy decoding; beam > 1: XLM's beam search, hypotheses scored `sum_logprob / length **
        length_penalty` (`early_stopping` as XLM's flag); max_len: tokens per translation, start and end included
        (None: `1.5 * source length + 10`, rounded up to a power of two). Texts longer than the encoder's
        positions are truncated with a UserWarning. Texts are batched by length in power-of-two shapes (at most
        `batch_size` rows, default the model's), each shape compiled once (`xlm_jax.workflows.translate`).
        Raises UserError for a checkpoint that is not an encoder-decoder (naming the MT training command), a
        missing tokenizer, a language the model lacks, beam < 1, a length_penalty that is not a number, a
        max_len below 3 or above the decoder's positions."""
        self.check_translate()
        items, single = _as_list(texts, "translate(texts)", allow_empty=True)
        out, cut = self._translator.translate(items, src_lang, tgt_lang, beam=beam, length_penalty=length_penalty,
                                              max_len=max_len, batch_size=batch_size or self.batch_size,
                                              early_stopping=early_stopping)
        if cut:
            _warn_caller(f"{cut} of {len(items)} texts were longer than the encoder's "
                         f"{self.config.encoder.max_positions} positions (special tokens included) and were truncated")
        return out[0] if single else out

    # ------------------------------------------------------------------------------------ text methods

    def pool_ids(self, rows: list[list[int]], layer_index: int, pooling: str | tuple[str, ...] = "mean",
                 lang_ids: list[int] | None = None, batch_size: int | None = None, skip_first: int = 0) -> np.ndarray:
        """Pooled states of framed id rows (each at most max_positions ids): float32 [N, hidden] ([N, modes ·
        hidden] for a tuple of modes). `layer_index` is 0-based; `pooling` a mode of sentence-transformers'
        Pooling (`xlm_jax.tasks.contrastive.pool`): "mean" averages the real tokens (XTREME's retrieval
        protocol), "cls" takes the first token; `skip_first` positions (a prompt's tokens) are left out. The
        batching behind `embed` and `xlm_jax.evaluate.embed_sentences` (`batch_size` defaults to the model's)."""
        self._need_encoder("pool_ids")
        if not rows:
            return np.zeros((0, self.config.hidden_size), np.float32)
        lang_ids = lang_ids if lang_ids is not None else [0] * len(rows)

        def call(ids, mask, langs, _):
            return self._pooled(self.params, jnp.asarray(ids), jnp.asarray(mask),
                                None if langs is None else jnp.asarray(langs), layer_index, pooling, skip_first)

        return np.stack(self._batched(rows, lang_ids, call, batch_size)).astype(np.float32)

    def embed(self, texts, layer: int = -1, pooling: str | None = None, normalize: bool | None = None, lang=None,
              *, prompt: str | None = None, prompt_name: str | None = None) -> np.ndarray:
        """Sentence embeddings: float32 NumPy [N, hidden] (a single str counts as a list of one).

        `layer` counts from 1 (first layer) or from the top when negative (default -1, the last); `pooling`
        "mean" averages the states of the real tokens (specials included, padding not: XTREME's protocol, as
        `evaluate retrieval`), "cls" takes the first token's state (`<s>`; unpooled, not trained for anything
        unless fine-tuned); `normalize` scales each row to unit L2 norm. `prompt` is prepended to every text
        (e5's "query: "); `prompt_name` picks one of a sentence-transformers directory's prompts.

        Defaults: mean pooling, normalised, no prompt, texts cut to the model's positions (with a warning) --
        except for a sentence-transformers directory (`xlm_jax.load` of one sets `self.sentence`), where they
        are the directory's: its pooling mode, Normalize module, max_seq_length (longer texts cut silently, as
        `SentenceTransformer.encode` cuts them), default prompt, lower-casing and include_prompt, so that the
        vectors equal `SentenceTransformer(dir).encode(texts, prompt_name=..., prompt=...)`.

        Raises UserError for an empty list, items that are not str, an unknown pooling, a layer outside
        1..L / -1..-L, a bad / missing lang, both prompt and prompt_name, a prompt that is not a str, or a
        prompt_name the model does not have (naming its prompts)."""
        self._need_encoder("embed")
        tok = self._need_tokenizer("embed")
        items, _ = _as_list(texts, "texts")
        if pooling is not None:
            check_choice("pooling", pooling, POOLINGS)
        index = layer_index(layer, self.config.num_layers)
        langs = self._langs(lang, len(items))
        text_prompt = self._prompt(prompt, prompt_name)
        st = self.sentence
        if st is None:
            enc = self._encode([text_prompt + t for t in items], langs)
            out = self.pool_ids(enc.ids, index, pooling or "mean", enc.lang_ids)
            normalize = True if normalize is None else normalize
        else:
            # As sentence-transformers' encode: prompt + text, lower-cased when the directory says so, cut to
            # max_seq_length (capped at the model's positions); a left-out prompt is skipped by the pooling.
            text_prompt = text_prompt.lower() if st.do_lower_case else text_prompt
            prepared = [text_prompt + (t.lower() if st.do_lower_case else t) for t in items]
            limit = min(st.max_seq_length or self.config.max_positions, self.config.max_positions)
            batch = tok.batch_encode(prepared, limit)
            rows = [r[:int(m.sum())].tolist() for r, m in zip(batch["input_ids"], batch["attention_mask"])]
            skip = 0 if st.include_prompt else prompt_length(tok, text_prompt)
            out = self.pool_ids(rows, index, pooling or st.pooling, None, skip_first=skip)
            normalize = st.normalize if normalize is None else normalize
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _prompt(self, prompt, prompt_name) -> str:
        """The text to prepend: `prompt`, the sentence-transformers prompt `prompt_name`, or the directory's
        default prompt ("" when there is none)."""
        if prompt is not None and prompt_name is not None:
            raise UserError(f"prompt={prompt!r:.40} and prompt_name={prompt_name!r}: give one of them")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise UserError(f"prompt={prompt!r:.40}: expected a str to prepend to every text, e.g. 'query: '")
            return prompt
        if self.sentence is None:
            if prompt_name is not None:
                raise UserError(f"prompt_name={prompt_name!r}: this model has no named prompts (only a "
                                "sentence-transformers directory has them); pass the text itself, prompt='query: '")
            return ""
        return self.sentence.prompt(prompt_name)

    def similarity(self, texts_a, texts_b, layer: int = -1, pooling: str | None = None, lang=None,
                   lang_b=None) -> np.ndarray:
        """Cosine similarity of every text of `texts_a` with every text of `texts_b`: float32 [len(a), len(b)],
        from `embed` (`lang_b` defaults to `lang`). Raises what `embed` raises."""
        self._need_encoder("similarity")
        lang_b = lang if lang_b is None else lang_b
        a = self.embed(texts_a, layer, pooling, lang=lang)
        b = self.embed(texts_b, layer, pooling, lang=lang_b)
        return cosine_matrix(a, b).astype(np.float32)

    def retrieve(self, queries, candidates, k: int = 1, layer: int = -1, pooling: str | None = None, lang=None,
                 lang_b=None) -> tuple[np.ndarray, np.ndarray]:
        """The `k` candidates most similar to each query (cosine of `embed`s): (indices int64 [Q, k] into
        `candidates`, scores float32 [Q, k]), best first. Raises UserError for k outside 1..len(candidates) and
        what `embed` raises."""
        self._need_encoder("retrieve")
        n = len(candidates) if isinstance(candidates, list | tuple) else 1
        if not isinstance(k, int | np.integer) or isinstance(k, bool) or not 1 <= k <= max(1, n):
            raise UserError(f"k={k!r}: must be an integer in [1, {max(1, n)}] (the number of candidates)")
        sim = self.similarity(queries, candidates, layer, pooling, lang, lang_b)
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        return top, np.take_along_axis(sim, top, axis=1)

    def _candidate_ids(self) -> np.ndarray:
        """Ids fill_mask may answer: the tokenizer's pieces, without specials or the model's spare rows."""
        tok, cfg = self.tokenizer, self.config
        specials = {tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id, cfg.bos_token_id,
                    cfg.pad_token_id, cfg.eos_token_id, cfg.unk_token_id}
        return np.asarray([i for i in range(min(len(tok), cfg.vocab_size)) if i not in specials], np.int64)

    def fill_mask(self, texts, top_k: int = 5, lang=None) -> list:
        """The model's top-k guesses for every `<mask>` of every text (specials and the model's spare rows
        excluded; probabilities are the softmax over the whole vocabulary).

        -> for one str: a list with one entry per `<mask>` (in text order), each a list of `top_k` `Fill`
        (piece, token, probability, id), most probable first; for a list of str: a list of those, one per text.
        Raises UserError for a text without `<mask>`, a `<mask>` cut off by truncation, top_k outside
        1..(number of candidate pieces), a checkpoint without an LM head, and what `embed` raises."""
        self._need_encoder("fill_mask")
        tok = self._need_tokenizer("fill_mask")
        self._need_lm_head("fill_mask")
        items, single = _as_list(texts, "texts")
        candidates = self._candidate_ids()
        if not isinstance(top_k, int | np.integer) or isinstance(top_k, bool) or not 1 <= top_k <= len(candidates):
            raise UserError(f"top_k={top_k!r}: must be an integer in [1, {len(candidates)}] (the pieces this model "
                            "can fill in: the tokenizer's ids without the special tokens)")
        langs = self._langs(lang, len(items))
        budget = self.config.max_positions - n_specials(self.config.family, False)  # pieces a row keeps
        for i, pieces in enumerate(encode_by_language(tok, items, langs)):
            where = "text" if single else f"texts[{i}]"
            masks = np.flatnonzero(pieces == tok.mask_id)
            if not len(masks):
                raise UserError(f"{where}={items[i]!r:.80} has no <mask>: write <mask> where the model should fill "
                                "in a piece, e.g. 'Open the <mask>.'")
            if masks[-1] >= budget:
                raise UserError(f"{where}: its <mask> at piece {int(masks[-1]) + 1} lies beyond the model's "
                                f"{self.config.max_positions} positions ({budget} pieces and the special tokens), "
                                "where truncation would cut it off: shorten the text or move the <mask> forward")
        enc = self._encode(items, langs)  # (checked first: no truncation warning before an error)
        n_masks = [int(np.sum(np.asarray(r) == tok.mask_id)) for r in enc.ids]

        def call(ids, mask, langs, chunk):
            width = bucket(max(n_masks[r] for r in chunk), 1, ids.shape[1])
            positions = np.zeros((ids.shape[0], width), np.int32)
            for j, r in enumerate(chunk):
                positions[j, : n_masks[r]] = np.flatnonzero(np.asarray(enc.ids[r]) == tok.mask_id)
            probs = self._mask_probs(self.params, jnp.asarray(ids), jnp.asarray(mask),
                                     None if langs is None else jnp.asarray(langs), jnp.asarray(positions))
            return np.asarray(probs)[:, :, candidates]  # [rows, masks, candidates]

        per_row = self._batched(enc.ids, enc.lang_ids, call)
        out = []
        for r, probs in enumerate(per_row):
            fills = []
            for p in probs[: n_masks[r]]:
                best = np.argsort(-p, kind="stable")[:top_k]
                fills.append([Fill(tok.id_to_piece(int(candidates[b])), tok.decode([int(candidates[b])]),
                                   float(p[b]), int(candidates[b])) for b in best])
            out.append(fills)
        return out[0] if single else out

    def _task_method(self) -> str:
        """The text method that fits this checkpoint's task head."""
        if self.task is None:  # a classifier head without task.json (a converted HF classifier)
            return "predict / predict_tokens / answer"
        return self.task.spec.text_method[0]

    def _need_task(self, method: str, kind: str):
        if self.task is None:
            has = ", ".join(sorted(self.params)) if isinstance(self.params, dict) else "?"
            how = "task=qa " if kind == "span" else ""
            raise UserError(f"{method} needs a fine-tuned checkpoint with a task head, but this one has none "
                            f"(parameters: {has}): load a fine-tuning output directory (python -m xlm_jax.finetune "
                            f"... {how}out=DIR; xlm_jax.load(DIR))")
        if self.task.spec.kind != kind:
            other, what = self.task.spec.text_method
            labels = f", labels {', '.join(self.task.labels)}" if self.task.spec.kind != "span" else ""
            raise UserError(f"{method} does not fit this checkpoint: its head is task {self.task.task!r} "
                            f"({what}{labels}); use {other}")
        return self._need_tokenizer(method)

    def predict(self, texts, lang=None) -> Prediction | list[Prediction]:
        """A fine-tuned sequence classifier's answer: one `Prediction` (label, probability, probabilities) for a
        str or a (str, str) pair, a list of them for a list. Pair tasks (xnli, pawsx) take (premise,
        hypothesis) pairs, single-text tasks take str. Raises UserError for a checkpoint without a sequence
        head, the wrong kind of item, and what `embed` raises."""
        self._need_encoder("predict")
        self._need_task("predict", "sequence")
        items, single = _as_list(texts, "texts", pairs=True)
        pair = self.task.spec.pair
        for i, x in enumerate(items):
            if isinstance(x, str) == pair:
                want = "(premise, hypothesis) pairs of str" if pair else "single str texts, not pairs"
                where = "texts" if single else f"texts[{i}]"
                raise UserError(f"{where}={x!r:.80}: task {self.task.task!r} takes {want}")
        langs = self._langs(lang, len(items))
        enc = self._encode(items, langs)

        def call(ids, mask, langs, _):
            return self._task_probs(self.params, jnp.asarray(ids), jnp.asarray(mask),
                                    None if langs is None else jnp.asarray(langs))

        labels = self.task.labels
        out = []
        for probs in self._batched(enc.ids, enc.lang_ids, call):
            best = int(np.argmax(probs))
            out.append(Prediction(labels[best], float(probs[best]), {l: float(p) for l, p in zip(labels, probs)}))
        return out[0] if single else out

    def predict_tokens(self, sentences, lang=None) -> list[list[str]]:
        """A fine-tuned token classifier's (NER) labels: `sentences` is a list of sentences, each a list of words
        (str); -> one label per word, read at the word's first sub-word (as fine-tuning trained it:
        `xlm_jax.tasks.ner.encode_token_examples`). Words beyond the model's positions are labelled "O" (with a
        warning). Raises UserError for a checkpoint without a token head, an empty list, a sentence that is not
        a list of str (a bare str: split it first), and a bad / missing lang."""
        self._need_encoder("predict_tokens")
        tok = self._need_task("predict_tokens", "token")
        ner.check_word_lists(sentences)
        langs = self._langs(lang, len(sentences))
        examples = [TokenExample(tuple(w), ("",) * len(w), code) for w, code in zip(sentences, langs)]
        protocol = InputProtocol.from_config(self.config)
        enc = encode_token_examples(examples, tok, protocol, self.task.labels, self.config.max_positions)
        self._warn_truncated(enc.truncated, len(sentences), "sentences")

        def call(ids, mask, langs, _):
            probs = self._task_probs(self.params, jnp.asarray(ids), jnp.asarray(mask),
                                     None if langs is None else jnp.asarray(langs))
            return np.asarray(probs).argmax(-1)

        preds = self._batched(enc.ids, enc.lang_ids, call)
        return [word_predictions(p, enc.word_starts[r], enc.n_words[r], self.task.labels)
                for r, p in enumerate(preds)]

    def answer(self, question, context=None, n_best: int = 1, max_answer_length: int | None = None,
               lang=None) -> Answer | list[Answer]:
        """Extractive QA with a fine-tuned `task: qa` checkpoint: the span of `context` that answers `question`.

        Forms: `answer(question, context)` -> one `Answer`; `answer([q1, q2], [c1, c2])` (one context per
        question), `answer([q1, q2], context)` (one context for all) or `answer([(q1, c1), (q2, c2)])` -> a list.
        `Answer(text, start, end, score, n_best)`: text == context[start:end] (characters), score = start logit +
        end logit (float), n_best = up to `n_best` candidate `qa.Span`s, best first (fewer when fewer spans
        exist). The windows and the decoding are `xlm_jax.tasks.qa`'s, with the checkpoint's task.json options
        (max_len, doc_stride, max_query_len, and its n_best best starts / ends per window), so the answer is the
        one `python -m xlm_jax.evaluate task` writes to predictions.json. A context longer than one window is
        covered by several; a question longer than max_query_len pieces is cut to them, with a UserWarning (as
        evaluate cuts it). `max_answer_length` (pieces) defaults to the checkpoint's (30).

        Raises UserError for a checkpoint without a QA head (naming the method that fits), an empty / blank /
        non-str question or context, lists of different lengths, n_best or max_answer_length not an integer
        >= 1, and a bad / missing lang."""
        self._need_encoder("answer")
        tok = self._need_task("answer", "span")
        items, single = qa.question_items(question, context)
        if not isinstance(n_best, int | np.integer) or isinstance(n_best, bool) or n_best < 1:
            raise UserError(f"n_best={n_best!r}: must be an integer >= 1 (how many candidate answers to list)")
        opts = qa.task_options(self.task.options)
        if max_answer_length is None:
            max_answer_length = opts["max_answer_length"]
        elif (not isinstance(max_answer_length, int | np.integer) or isinstance(max_answer_length, bool)
              or max_answer_length < 1):
            raise UserError(f"max_answer_length={max_answer_length!r}: must be an integer >= 1 (the longest answer, "
                            f"in pieces; this checkpoint's default is {opts['max_answer_length']})")
        langs = self._langs(lang, len(items))
        examples = [qa.QAExample(str(i), q, c, (), code, "question" + at)
                    for i, ((at, q, c), code) in enumerate(zip(items, langs))]
        feats = qa.make_features(examples, tok, InputProtocol.from_config(self.config), self.task.max_len,
                                 opts["doc_stride"], opts["max_query_len"])
        if feats.questions_cut:
            _warn_caller(f"{feats.questions_cut} of {len(items)} questions were longer than this checkpoint's "
                         f"max_query_len={opts['max_query_len']} pieces and were cut to them (as fine-tuning and "
                         "evaluate task cut them)")

        def call(ids, mask, langs, _):
            return self._span_logits(self.params, jnp.asarray(ids), jnp.asarray(mask),
                                     None if langs is None else jnp.asarray(langs))

        logits = self._batched(feats.ids, feats.lang_ids, call)
        out = []
        for spans in qa.decode_n_best(examples, feats, logits, opts["n_best"], max_answer_length, int(n_best)):
            best = spans[0] if spans else qa.Span("", 0, 0, float("-inf"))  # no valid span: nothing to answer
            out.append(Answer(best.text, best.start, best.end, best.score, spans))
        return out[0] if single else out



# ------------------------------------------------------------------------------------------------ loading

TOKENIZER_NAMES = ("tokenizer.model", "sentencepiece.bpe.model", "tokenizer.json")  # ours, XLM-R's, Hugging Face's
XLM_NO_TOKENIZER = ("an original XLM checkpoint: its text is tokenized with Moses and its fastBPE codes, which "
                    "come with the tokenizer when it is converted: `python -m xlm_jax.convert X.pth OUT --bpe-codes "
                    "CODES`, then xlm_jax.load(OUT)")


def _load_tokenizer(tokenizer, config: ModelConfig, found: Found | None = None, where: str = "load"):
    """`tokenizer` (a path, a Tokenizer / HFTokenizer; None: the checkpoint's own, `found`) checked against the
    model (`xlm_jax.workflows.tokenizer_check.open_tokenizer`)."""
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer | HFTokenizer | XLMBPETokenizer | str | Path):
        raise UserError(f"tokenizer={tokenizer!r:.60}: give the path of a SentencePiece model or a Hugging Face "
                        "tokenizer.json (str or Path), or an xlm_jax.Tokenizer")
    return open_tokenizer(tokenizer, found or Found(None), config, where)


def load(path: str | Path, tokenizer=None) -> LoadedModel:
    """Loads any checkpoint xlm_jax writes or reads, with its tokenizer when it has one:

    - a pretraining run directory (its latest checkpoint), a checkpoints directory, one step directory or the
      run's best/ (tokenizer: RUN/tokenizer.model);
    - a fine-tuning output directory, its best/ or a step in it: the best checkpoint with its task head and
      labels (`m.task`; tokenizer: the copy in the output, else the one finetune_config.json records);
    - a `python -m xlm_jax.convert` output or `LoadedModel.save` directory (tokenizer: the one in it);
    - a sentence-transformers directory (modules.json: Transformer → Pooling → (Normalize), as multilingual-e5 /
      BGE-M3 are published): its transformer with `m.sentence` (`SentenceEmbeddingConfig`: pooling,
      normalisation, max_seq_length, prompts), which `m.embed` follows; a pooling mode or module xlm_jax does
      not support is refused, naming it;
    - a Hugging Face directory (tokenizer: its sentencepiece.bpe.model, else its tokenizer.json, as
      transformers 5 saves it), a fairseq XLM-R model.pt (tokenizer: sentencepiece.bpe.model beside it), or an
      original XLM .pth (no tokenizer: XLM uses Moses + fastBPE, which `convert --bpe-codes` turns into one; the
      array methods work on ids), converted in memory by `xlm_jax.workflows.convert.load_any`;
    - a `convert` output of an XLM .pth with its BPE codes (tokenizer: its vocab.json + merges.txt, XLM's Moses +
      BPE, `xlm_jax.data.xlm_bpe`).

    `tokenizer` (a SentencePiece model or tokenizer.json path, a Tokenizer or HFTokenizer) replaces the one
    found; `tokenizer=False` carries none (for a checkpoint whose tokenizer file is broken, when only the array
    methods are wanted). Raises UserError when `path` is not a non-empty path or names nothing readable, when
    the tokenizer cannot be read, or when it does not fit the model (more ids than the model's vocabulary, or
    special tokens at other ids: `xlm_jax.data.tokenizer.check_tokenizer_fits`, naming both); warns
    (UserWarning) when the checkpoint recorded its tokenizer's sha256 and the given one's differs."""
    if not isinstance(path, str | Path) or not str(path).strip():
        raise UserError(f"load(path): path must be a non-empty str or pathlib.Path of a checkpoint, got "
                        f"{type(path).__name__} {path!r:.60}")
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file or directory (give a run directory, a fine-tuning output, a convert "
                        "output, a Hugging Face directory, a fairseq model.pt or an XLM .pth)")
    task, note = None, ""
    sentence = read_sentence_transformers(p) if (p / "modules.json").is_file() else None
    if is_task_checkpoint(p):
        _, params, config, task = load_task_model(p)
        if task.spec.kind == "embedding" and not config.has_lang_embeddings:
            # A contrastive fine-tuning output embeds with its trained pooling, length and prefixes.
            sentence = embedding_sentence_config(task.options, task.max_len)
    else:
        try:
            resolve(p)
        except UserError:
            params, config, info = load_any(p / sentence.transformer_path if sentence else p)
            if sentence and sentence.embedding_dimension not in (None, config.hidden_size):
                raise UserError(f"{p}: its pooling config says embedding dimension {sentence.embedding_dimension} "
                                f"but the transformer's hidden size is {config.hidden_size}")
            task = info.task  # a fine-tuned Hugging Face model (...ForSequenceClassification, ...): its head's task
            if info.kind == "xlm":
                note = XLM_NO_TOKENIZER
        else:
            params, config = restore_params(p)
    found = Found(None, "", note) if note else checkpoint_tokenizer(p / sentence.transformer_path if sentence else p)
    tok = None
    if tokenizer is False:
        note = "loaded with tokenizer=False"
    else:
        # An encoder-decoder's tokenizer serves both sides: it is checked against the encoder.
        tok_config = config.encoder if isinstance(config, EncoderDecoderConfig) else config
        tok = _load_tokenizer(tokenizer, tok_config, found, f"load({path})")
        note = "" if tok is not None else (note or found.note)
    return LoadedModel(config, jax.tree_util.tree_map(jnp.asarray, params), tok, task, str(path), note,
                       sentence=sentence)
