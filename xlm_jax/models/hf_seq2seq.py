"""Name mapping of the encoder–decoder (`xlm_jax.models.decoder.EncoderDecoder`) to and from two layouts:

- Hugging Face `EncoderDecoderModel` with an `XLMRobertaModel` encoder and an `XLMRobertaForCausalLM` decoder
  (`is_decoder=True, add_cross_attention=True`): `encoder.embeddings.*`, `encoder.encoder.layer.N.*`,
  `decoder.roberta.embeddings.*`, `decoder.roberta.encoder.layer.N.{attention,crossattention,intermediate,
  output}.*`, `decoder.lm_head.*`. The decoder's token-type table holds one row per target language (see
  `xlm_jax.models.decoder`); HF reads it from `decoder_token_type_ids`. The encoder's pooler is not used.
- the original XLM MT checkpoint (facebookresearch/XLM `TransformerModel` state dicts under `encoder` and
  `decoder`): XLM's MLM names plus, in the decoder, `encoder_attn.N.{q,k,v,out}_lin.*` and `layer_norm15.N.*`.
  The encoder's `pred_layer` (an MLM head XLM keeps on the MT encoder) has no place in our model: it is ignored
  on import and written tied to the encoder embeddings with the bias given (zeros by default) on export.

Both directions go through one table per side (as `hf_mapping`), so import and export cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from xlm_jax.core.errors import UserError
from xlm_jax.models.config import EncoderDecoderConfig, ModelConfig
# The table helpers of the single-model mapping; this module only adds the decoder's cross-attention rows.
from xlm_jax.models.hf_mapping import (
    _OUT, _QKV, Entry, _layer_entries, hf_config_to_model_config, model_config_to_hf_config, params_to_state,
    table_to_params, xlm_table, xlmr_table,
)
from xlm_jax.models.xlm import sinusoidal_table


def _to_decoder(entries: list[Entry], head_prefix: str = "") -> list[Entry]:
    """Entries of a single-model table moved under our `decoder` (the head into `decoder/lm_head`)."""
    out = []
    for e in entries:
        if e.ours[0] == "lm_head":
            out.append(dataclasses.replace(e, ours=("decoder",) + e.ours, hf=head_prefix + e.hf))
        else:
            out.append(dataclasses.replace(e, ours=("decoder",) + e.ours[1:]))
    return out


def _cross(prefix: str, names: dict[str, tuple[str, str]]) -> list[Entry]:
    return _to_decoder(_layer_entries(prefix, names))


def _check_hf(config: EncoderDecoderConfig) -> None:
    for side in ("encoder", "decoder"):
        cfg: ModelConfig = getattr(config, side)
        if cfg.family != "xlmr" or cfg.pre_layer_norm:
            raise UserError(f"{side}: the Hugging Face encoder-decoder layout is for post-LN XLM-R models "
                            f"(family xlmr), got family {cfg.family}{' pre-LN' if cfg.pre_layer_norm else ''}")


def hf_seq2seq_tables(config: EncoderDecoderConfig) -> tuple[list[Entry], list[Entry]]:
    """(encoder entries, decoder entries) between our params and HF `EncoderDecoderModel` keys."""
    _check_hf(config)
    encoder = xlmr_table(config.encoder, "encoder.", with_head=False)
    decoder = _to_decoder(xlmr_table(config.decoder, "decoder.roberta.", with_head=True), head_prefix="decoder.")
    decoder += _cross("decoder.roberta.encoder.layer.{i}.", {
        "cross_attention/query": ("crossattention.self.query", _QKV),
        "cross_attention/key": ("crossattention.self.key", _QKV),
        "cross_attention/value": ("crossattention.self.value", _QKV),
        "cross_attention/out": ("crossattention.output.dense", _OUT),
        "cross_attention_norm": ("crossattention.output.LayerNorm", "norm"),
    })
    return encoder, decoder


def hf_seq2seq_to_params(state: dict[str, np.ndarray], config: EncoderDecoderConfig, params_shapes: dict,
                         source: str) -> dict:
    """HF `EncoderDecoderModel` state dict -> our (unboxed) params; UserError for a missing tensor or a shape
    other than `params_shapes` (the `EncoderDecoder` parameter shapes) gives, naming the HF key."""
    encoder, decoder = hf_seq2seq_tables(config)
    params = table_to_params(state, encoder, config.encoder, params_shapes, source)
    return table_to_params(state, decoder, config.decoder, params_shapes, source, params)


def params_to_hf_seq2seq(params: dict, config: EncoderDecoderConfig) -> dict[str, np.ndarray]:
    """Our params -> HF `EncoderDecoderModel` state dict (the tied output projection written explicitly, as
    `save_pretrained` does; no encoder pooler)."""
    encoder, decoder = hf_seq2seq_tables(config)
    state = params_to_state(params, encoder, config.encoder) | params_to_state(params, decoder, config.decoder)
    state["decoder.lm_head.decoder.weight"] = state["decoder.roberta.embeddings.word_embeddings.weight"]
    state["decoder.lm_head.decoder.bias"] = state["decoder.lm_head.bias"]
    return state


def hf_seq2seq_config(config: EncoderDecoderConfig) -> dict[str, Any]:
    """HF `EncoderDecoderConfig.to_dict()`-style dict for our config."""
    _check_hf(config)
    decoder = model_config_to_hf_config(config.decoder, "XLMRobertaForCausalLM")
    decoder |= {"is_decoder": True, "add_cross_attention": True}
    return {
        "architectures": ["EncoderDecoderModel"],
        "model_type": "encoder-decoder",
        "is_encoder_decoder": True,
        "encoder": model_config_to_hf_config(config.encoder, "XLMRobertaModel"),
        "decoder": decoder,
        "decoder_start_token_id": config.decoder.bos_token_id,
        "pad_token_id": config.decoder.pad_token_id,
        "eos_token_id": config.decoder.eos_token_id,
        "tie_word_embeddings": False,
    }


def hf_seq2seq_config_to_config(hf: dict[str, Any], source: str) -> EncoderDecoderConfig:
    """HF encoder-decoder config dict -> our config (UserError for other model types or a decoder without
    cross-attention)."""
    if hf.get("model_type") != "encoder-decoder" or "encoder" not in hf or "decoder" not in hf:
        raise UserError(f"{source}: not an encoder-decoder config (model_type {hf.get('model_type')!r})")
    if not (hf["decoder"].get("is_decoder") and hf["decoder"].get("add_cross_attention")):
        raise UserError(f"{source}: the decoder needs is_decoder and add_cross_attention")
    encoder, _ = hf_config_to_model_config(hf["encoder"], f"{source} (encoder)")
    decoder, _ = hf_config_to_model_config(hf["decoder"], f"{source} (decoder)")
    return EncoderDecoderConfig(encoder, decoder)


# --------------------------------------------------------------------------------------- original XLM (MT)


def xlm_mt_tables(config: EncoderDecoderConfig) -> tuple[list[Entry], list[Entry]]:
    """(encoder entries, decoder entries) between our params and XLM's `encoder` / `decoder` state-dict keys."""
    for side in ("encoder", "decoder"):
        if getattr(config, side).family != "xlm":
            raise UserError(f"{side}: the original XLM MT layout is for family xlm, got {getattr(config, side).family}")
    encoder = xlm_table(config.encoder, "", with_head=False)
    decoder = _to_decoder(xlm_table(config.decoder, "", with_head=True))
    decoder += _cross("", {
        "cross_attention/query": ("encoder_attn.{i}.q_lin", _QKV),
        "cross_attention/key": ("encoder_attn.{i}.k_lin", _QKV),
        "cross_attention/value": ("encoder_attn.{i}.v_lin", _QKV),
        "cross_attention/out": ("encoder_attn.{i}.out_lin", _OUT),
        "cross_attention_norm": ("layer_norm15.{i}", "norm"),
    })
    return encoder, decoder


def _strip_module(state: dict[str, Any]) -> dict[str, Any]:
    return {k.removeprefix("module."): v for k, v in state.items()}


def xlm_mt_to_params(checkpoint: dict[str, dict[str, np.ndarray]], config: EncoderDecoderConfig,
                     params_shapes: dict, source: str) -> dict:
    """XLM MT checkpoint ({"encoder": state dict, "decoder": state dict}, names maybe `module.`-prefixed) -> our
    (unboxed) params. UserError for a missing side or tensor, or a shape mismatch (naming the XLM key)."""
    for side in ("encoder", "decoder"):
        if not isinstance(checkpoint.get(side), dict):
            raise UserError(f"{source}: no {side!r} state dict (an XLM MT checkpoint holds 'encoder' and 'decoder')")
    encoder, decoder = xlm_mt_tables(config)
    params = table_to_params(_strip_module(checkpoint["encoder"]), encoder, config.encoder, params_shapes,
                             f"{source} (encoder)")
    return table_to_params(_strip_module(checkpoint["decoder"]), decoder, config.decoder, params_shapes,
                           f"{source} (decoder)", params)


def params_to_xlm_mt(params: dict, config: EncoderDecoderConfig,
                     encoder_output_bias: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Our params -> {"encoder": ..., "decoder": ...} with XLM's names: tied `pred_layer.proj.weight` written on
    both sides, the encoder's `pred_layer.proj.bias` = `encoder_output_bias` (zeros when None), sinusoidal
    position tables written as XLM stores them."""
    encoder, decoder = xlm_mt_tables(config)
    out = {"encoder": params_to_state(params, encoder, config.encoder),
           "decoder": params_to_state(params, decoder, config.decoder)}
    for side, cfg in (("encoder", config.encoder), ("decoder", config.decoder)):
        state = out[side]
        if cfg.sinusoidal_positions:
            state["position_embeddings.weight"] = sinusoidal_table(cfg.num_position_rows, cfg.hidden_size)
        state["pred_layer.proj.weight"] = state["embeddings.weight"]
    bias = np.zeros(config.encoder.vocab_size, np.float32) if encoder_output_bias is None else encoder_output_bias
    out["encoder"]["pred_layer.proj.bias"] = np.asarray(bias, np.float32)
    return out
