"""The notebook API: `m = xlm_jax.load(path)`; `m.hidden_states(ids)`; `m.mlm_logits(ids)`."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xlm_jax.checkpoint import resolve, restore_params
from xlm_jax.config import ModelConfig
from xlm_jax.errors import UserError
from xlm_jax.model import XLMForMaskedLM


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


@dataclasses.dataclass
class LoadedModel:
    """A checkpoint ready for inference: `config`, `params`, and jitted forward functions.

    Every method takes `input_ids` [batch, length] (a [length] array is one row), optional `attention_mask`
    [batch, length] of 0 / 1 (default: input_ids != pad id) and, for XLM models with language embeddings,
    optional `langs` [batch, length] language ids (indices into `config.langs`). Any integer dtype (and bool
    for the mask), NumPy / JAX arrays or nested lists. Inputs the model cannot represent raise UserError
    before anything runs (`check_inputs`): ids outside [0, vocab_size), more than max_positions tokens in a
    row, an empty batch, mismatched shapes, non-integer dtypes, langs outside [0, n_langs) or langs for a
    model without language embeddings."""

    config: ModelConfig
    params: Any

    def __post_init__(self):
        self.model = XLMForMaskedLM(self.config)

    @functools.cached_property
    def _forward(self):
        def forward(params, ids, mask, langs, layer_states: bool):
            out = self.model.apply({"params": params}, ids, mask, None, langs, output_all_layers=layer_states)
            return out

        return jax.jit(forward, static_argnums=4)

    @functools.cached_property
    def _logits(self):
        def logits(params, ids, mask, langs):
            return self.model.apply({"params": params}, ids, mask, None, langs, method=XLMForMaskedLM.mlm_logits)

        return jax.jit(logits)

    def _inputs(self, input_ids, attention_mask, langs):
        return tuple(None if x is None else jnp.asarray(x)
                     for x in check_inputs(self.config, input_ids, attention_mask, langs))

    def hidden_states(self, input_ids, attention_mask=None, langs=None) -> jax.Array:
        """Last-layer states, [batch, length, hidden] in the config's dtype."""
        inputs = self._inputs(input_ids, attention_mask, langs)  # checked before the jitted function is built
        return self._forward(self.params, *inputs, False)

    def layer_states(self, input_ids, attention_mask=None, langs=None) -> jax.Array:
        """Every layer's output, [layers, batch, length, hidden] (the last equals `hidden_states`)."""
        inputs = self._inputs(input_ids, attention_mask, langs)
        last, states = self._forward(self.params, *inputs, True)
        return states.at[-1].set(last)

    def mlm_logits(self, input_ids, attention_mask=None, langs=None) -> jax.Array:
        """Masked-LM logits at every position, [batch, length, vocab]. Raises UserError for a checkpoint without
        an LM head (a fine-tuned classifier, a converted encoder or ...ForSequenceClassification)."""
        if "lm_head" not in self.params:
            has = ("an encoder and a fine-tuned classifier head (xlm_jax.finetune)" if "classifier" in self.params
                   else "an encoder only")
            rest = ("; for the classifier's predictions run `python -m xlm_jax.evaluate task --checkpoint ...`"
                    if "classifier" in self.params else "")
            raise UserError(f"this checkpoint has no masked-LM head (lm_head): it holds {has} (parameters: "
                            f"{', '.join(sorted(self.params))}). mlm_logits needs one; use hidden_states or "
                            f"layer_states for the encoder's states{rest}")
        inputs = self._inputs(input_ids, attention_mask, langs)
        return self._logits(self.params, *inputs)


def load(path: str | Path) -> LoadedModel:
    """Loads an xlm_jax checkpoint: a run directory (its latest checkpoint), a checkpoints directory written by
    `python -m xlm_jax.convert`, or one step directory. A Hugging Face directory, a fairseq XLM-R `model.pt` or
    an original XLM `.pth` is converted in memory (`xlm_jax.convert.load_any`).

    Raises UserError when `path` is not a non-empty path, or names nothing this function can read."""
    if not isinstance(path, str | Path) or not str(path).strip():
        raise UserError(f"load(path): path must be a non-empty str or pathlib.Path of a checkpoint, got "
                        f"{type(path).__name__} {path!r:.60}")
    try:
        resolve(path)
    except UserError:
        from xlm_jax.convert import load_any

        params, config, _ = load_any(path)
    else:
        params, config = restore_params(path)
    return LoadedModel(config, jax.tree_util.tree_map(jnp.asarray, params))
