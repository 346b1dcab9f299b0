"""The one place a model family is chosen: `ModelConfig.family` -> the Flax modules that implement it.

Every workflow builds its model through these functions, never by naming a class, so adding a family (a new
`models/<family>.py` with a masked-LM module and an encoder-with-head module of the same call signature as
`xlm_jax.models.xlm`'s) is one module plus one entry in `FAMILIES`.

A family's modules follow one interface (see `xlm_jax.models.xlm`):
- masked LM: `__call__(input_ids, attention_mask, positions, langs, *, deterministic, segment_ids, ...)` -> hidden
  [B, T, D]; `mlm_logits(...)` -> [B, T, V]; `logits_at(..., predict_positions [B, P])` -> [B, P, V]; its params
  hold `encoder` (and the LM head);
- task models: `(config, num_labels)` -> logits; params `{"encoder": ..., "classifier": ...}`;
- heads alone: `(config, num_labels)`, called on the encoder's hidden states (a fresh head for a pretrained
  encoder is initialised from them).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn

from xlm_jax.models import eurobert, modernbert, xlm
from xlm_jax.models.config import ModelConfig

HEADS = ("sequence", "token", "span")  # classification (XNLI, PAWS-X), token classification (NER), extractive QA


@dataclasses.dataclass(frozen=True)
class Family:
    """The modules of one model family: a masked LM, and per head kind the encoder-with-head class and the head."""

    masked_lm: Callable[[ModelConfig], nn.Module]
    task_models: dict[str, Callable[[ModelConfig, int], nn.Module]]
    heads: dict[str, Callable[[ModelConfig, int], nn.Module]]


# XLM and XLM-R (and XLM-R XL / XXL, pre-LN) share one implementation: `xlm_jax.models.xlm` reads the
# differences (positions, head shape, layer-norm placement) from the config.
_XLM = Family(
    masked_lm=xlm.XLMForMaskedLM,
    task_models={"sequence": xlm.XLMForSequenceClassification, "token": xlm.XLMForTokenClassification,
                 "span": xlm.XLMForQuestionAnswering},
    heads={"sequence": xlm.SequenceClassificationHead, "token": xlm.TokenClassificationHead, "span": xlm.SpanHead},
)

# ModernBERT / mmBERT: RoPE, GeGLU, alternating global / sliding-window attention (HF modeling_modernbert).
_MODERNBERT = Family(
    masked_lm=modernbert.ModernBertForMaskedLM,
    task_models={"sequence": modernbert.ModernBertForSequenceClassification,
                 "token": modernbert.ModernBertForTokenClassification,
                 "span": modernbert.ModernBertForQuestionAnswering},
    heads={"sequence": modernbert.SequenceHead, "token": modernbert.TokenHead, "span": modernbert.SpanHead},
)

# EuroBERT: Llama-style (RMSNorm, SwiGLU, grouped-query attention, RoPE; HF modeling_eurobert). Its span head is
# BERT's linear one: transformers has no EuroBERT question-answering class.
_EUROBERT = Family(
    masked_lm=eurobert.EuroBertForMaskedLM,
    task_models={"sequence": eurobert.EuroBertForSequenceClassification,
                 "token": eurobert.EuroBertForTokenClassification, "span": eurobert.EuroBertForQuestionAnswering},
    heads={"sequence": eurobert.SequenceHead, "token": eurobert.TokenHead, "span": eurobert.SpanHead},
)

FAMILIES: dict[str, Family] = {"xlm": _XLM, "xlmr": _XLM, "modernbert": _MODERNBERT, "eurobert": _EUROBERT}


def family(config: ModelConfig) -> Family:
    return FAMILIES[config.family]


def masked_lm(config: ModelConfig) -> nn.Module:
    """The family's masked-LM module (encoder + LM head) for `config`."""
    return family(config).masked_lm(config)


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise ValueError(f"head={head!r}: valid heads are {', '.join(HEADS)}")


def task_model(config: ModelConfig, head: str, num_labels: int) -> nn.Module:
    """The family's encoder + `head` ("sequence" [B, C], "token" [B, T, C] or "span" [B, T, 2]) module."""
    _check_head(head)
    return family(config).task_models[head](config, num_labels)


def task_head(config: ModelConfig, head: str, num_labels: int) -> nn.Module:
    """The family's `head` module alone: hidden states [B, T, D] -> logits (see `task_model`)."""
    _check_head(head)
    return family(config).heads[head](config, num_labels)
