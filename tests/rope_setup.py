"""Tiny ModernBERT / EuroBERT checkpoints as published ones look: a random transformers model saved with
`save_pretrained` next to a `tokenizer.json` (a word-level `tokenizers` tokenizer whose ids are the model's
vocabulary, special tokens where the model's config puts them). Built here, never downloaded; shared by
tests/test_rope_interop.py and tests/test_rope_downstream.py (tests/ is on the path, as for rope_parity)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer as Backend
from tokenizers import models, pre_tokenizers, processors

import rope_parity as rp
import tiny_setup

VOCAB, LABELS = 120, 3
# Words of the tiny vocabulary (after the 5 special ids): enough for sentences in the tests.
_MORE = ("the a of and to in is it that was for on are with as he she they we you this be at by not or have from "
         "but what all were when there can an your which their said if do will each about how up out them then "
         "many some so these would other into has more her two like him see time could no make than first been "
         "its who now people my made over did down only way find use may water long little very after words "
         "called just where most know der die und das ist ein la le les et est une un")
WORDS = tuple(dict.fromkeys([w for ws in tiny_setup.WORDS.values() for w in ws] + _MORE.split()))

FAMILIES = {
    # special tokens in id order 0..4 and how transformers' tokenizer names them
    "modernbert": (("[PAD]", "[SEP]", "[CLS]", "[UNK]", "[MASK]"),
                   dict(pad_token="[PAD]", sep_token="[SEP]", cls_token="[CLS]", unk_token="[UNK]",
                        mask_token="[MASK]")),
    # Llama 3 style: no unknown token named (the model's unk is its eos), eos doubles as padding.
    "eurobert": (("<|begin_of_text|>", "<|end_of_text|>", "<|reserved_0|>", "<unk>", "<|mask|>"),
                 dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>", pad_token="<|end_of_text|>",
                      mask_token="<|mask|>")),
}
HEADS = {"mlm": "ForMaskedLM", "sequence": "ForSequenceClassification", "token": "ForTokenClassification",
         "span": "ForQuestionAnswering"}
PREFIX = {"modernbert": "ModernBert", "eurobert": "EuroBert"}


def tokenizer(out: Path, family: str, vocab: int = VOCAB) -> Path:
    """A word-level tokenizer.json (+ tokenizer_config.json) of `vocab` ids in `out` with `family`'s specials and
    row framing: [CLS] A [SEP] (B [SEP]) for ModernBERT, <|begin_of_text|> A <|end_of_text|> for EuroBERT."""
    specials, names = FAMILIES[family]
    words = list(WORDS) + [f"w{i}" for i in range(vocab)]
    table = {t: i for i, t in enumerate(list(specials) + words[:vocab - len(specials)])}
    unk = "[UNK]" if family == "modernbert" else "<unk>"
    tok = Backend(models.WordLevel(table, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos, eos = specials[2 if family == "modernbert" else 0], specials[1]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} $B:1 {eos}:1",
        special_tokens=[(bos, table[bos]), (eos, table[eos])])
    tok.add_special_tokens([s for s in specials if s != "<unk>"])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **names).save_pretrained(str(out))
    return out


def hf_config(family: str, num_labels: int = LABELS, **kw):
    """ModernBERT: 4 layers, global every 3rd, a window of 8; EuroBERT: 4 query over 2 key / value heads. Special
    ids as `tokenizer` puts them."""
    if family == "modernbert":
        base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                    layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
                    local_attention=8, max_position_embeddings=128, pad_token_id=0, eos_token_id=1, sep_token_id=1,
                    bos_token_id=2, cls_token_id=2, unk_token_id=3, mask_token_id=4, classifier_pooling="mean",
                    num_labels=num_labels,
                    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
        return transformers.ModernBertConfig(**{**base, **kw})
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, pad_token_id=1, bos_token_id=0, eos_token_id=1,
                mask_token_id=4, classifier_pooling="late", num_labels=num_labels,
                rope_parameters={"rope_type": "default", "rope_theta": 250000.0})
    return transformers.EuroBertConfig(**{**base, **kw})


def hf_class(family: str, head: str):
    return getattr(transformers, PREFIX[family] + HEADS[head])


def saved_model(out: Path, family: str, head: str = "mlm", seed: int = 0, **kw) -> torch.nn.Module:
    """A random `family` model with `head` saved (save_pretrained + tokenizer) in `out`; returns it (eval, eager)."""
    config = hf_config(family, num_labels=2 if head == "span" else LABELS, **kw)
    torch.manual_seed(seed)
    model = rp.randomize(hf_class(family, head)(config), seed)
    model.save_pretrained(str(out))
    tokenizer(out, family)
    model.config._attn_implementation = "eager"
    return model


def batch(family: str, lengths=(19, 11), seed: int = 1):
    """A padded batch (ids, mask) of real word ids (past the specials), padded with the family's pad id."""
    return rp.padded_batch(np.random.default_rng(seed), VOCAB, list(lengths), 0 if family == "modernbert" else 1)
