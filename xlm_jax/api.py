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


def _as_int_array(x, name: str) -> jax.Array | None:
    if x is None:
        return None
    a = np.asarray(x)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array [batch, length], got dtype {a.dtype} shape {a.shape}")
    return jnp.asarray(a, jnp.int32)


@dataclasses.dataclass
class LoadedModel:
    """A checkpoint ready for inference: `config`, `params`, and jitted forward functions."""

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
        ids = _as_int_array(input_ids, "input_ids")
        mask = _as_int_array(attention_mask, "attention_mask")
        if mask is None:
            mask = (ids != self.config.pad_token_id).astype(jnp.int32)
        langs = _as_int_array(langs, "langs")
        if langs is not None and langs.shape != ids.shape:
            raise ValueError(f"langs has shape {langs.shape}, input_ids {ids.shape}: they must match")
        return ids, mask, langs

    def hidden_states(self, input_ids, attention_mask=None, langs=None) -> jax.Array:
        """Last-layer states, [batch, length, hidden]."""
        return self._forward(self.params, *self._inputs(input_ids, attention_mask, langs), False)

    def layer_states(self, input_ids, attention_mask=None, langs=None) -> jax.Array:
        """Every layer's output, [layers, batch, length, hidden] (the last equals `hidden_states`)."""
        last, states = self._forward(self.params, *self._inputs(input_ids, attention_mask, langs), True)
        return states.at[-1].set(last)

    def mlm_logits(self, input_ids, attention_mask=None, langs=None) -> jax.Array:
        """Masked-LM logits at every position, [batch, length, vocab]."""
        return self._logits(self.params, *self._inputs(input_ids, attention_mask, langs))


def load(path: str | Path) -> LoadedModel:
    """Loads an xlm_jax checkpoint: a run directory (its latest checkpoint), a checkpoints directory written by
    `python -m xlm_jax.convert`, or one step directory. A Hugging Face directory, a fairseq XLM-R `model.pt` or
    an original XLM `.pth` is converted in memory (`xlm_jax.convert.load_any`)."""
    try:
        resolve(path)
    except UserError:
        from xlm_jax.convert import load_any

        params, config, _ = load_any(path)
    else:
        params, config = restore_params(path)
    return LoadedModel(config, jax.tree_util.tree_map(jnp.asarray, params))
