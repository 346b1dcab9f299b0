"""The converter against the tensor lists of released checkpoints (tests/fixtures/released_checkpoints.json):
Hugging Face xlm-roberta-base, fairseq xlmr.base model.pt and the original XLM mlm_tlm_xnli15_1024.pth.

The other conversion tests build their fairseq / XLM files from tiny models under the names the converter expects;
here the names and shapes are those of the published files. Every tensor of a file must be mapped to one of our
parameters or be on the short list of tensors knowingly left out, and every parameter of our model must be filled
with the right shape. The tensors are zero-stride NumPy views of the real shapes (no memory), run through the
converter's own renaming and config derivation (`convert._fairseq` / `convert._xlm`, `hf_mapping`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from xlm_jax.workflows import convert
from xlm_jax.models import hf_mapping

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "released_checkpoints.json").read_text())
ZERO = np.zeros((), np.float32)

# Tensors a file carries that our model has no use for, and why.
KNOWINGLY_LEFT_OUT = {
    "roberta.pooler.dense.weight": "HF's pooler: not part of the MLM; ours has none (a fine-tuning head is new)",
    "roberta.pooler.dense.bias": "HF's pooler",
    "lm_head.decoder.weight": "HF's tied copy of roberta.embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "HF's tied copy of lm_head.bias",
    "roberta.embeddings.position_ids": "HF buffer (arange), not a parameter",
    "decoder.lm_head.weight": "fairseq's output projection, tied to embed_tokens (the converter checks they are equal)",
    "pred_layer.proj.weight": "XLM's output projection, tied to embeddings.weight (the converter checks it)",
}
ARCHITECTURE = {  # (layers, hidden, heads, FFN, vocab, max_positions) of each released model
    "xlm-roberta-base": (12, 768, 12, 3072, 250002, 512),
    "xlmr.base": (12, 768, 12, 3072, 250002, 512),
    "mlm_tlm_xnli15_1024": (12, 1024, 8, 4096, 95000, 512),
}


def _state(entry: dict) -> dict[str, np.ndarray]:
    # The fairseq / XLM readers compare the tied output projection with the embeddings: one shared view per shape
    # keeps that comparison of equal (all-zero) tensors true, as in the real files.
    return {key: np.broadcast_to(ZERO, tuple(shape)) for key, shape in entry["tensors"].items()}


def _source_names(name: str, entry: dict, state: dict) -> dict[str, list[str]]:
    """File tensor -> the HF names the converter turns it into ([] when it drops it)."""
    if entry["format"] == "hf":
        return {k: [k] for k in state}
    if entry["format"] == "xlm":
        return {k: [hf_mapping.xlm_pth_hf_name(k)] for k in state}
    prefix = hf_mapping.fairseq_prefix(state)
    out = {}
    for k in state:
        single = hf_mapping.fairseq_hf_name(k, prefix, pre_layer_norm=False)
        out[k] = [single] if single is not None else hf_mapping.fairseq_in_proj_names(k, prefix)
    return out


@pytest.mark.parametrize("name", sorted(ARCHITECTURE))
def test_released_checkpoint_is_mapped_completely(name):
    entry = FIXTURE[name]
    state = _state(entry)
    if entry["format"] == "hf":
        hf_cfg, hf_state = entry["config"], state
    elif entry["format"] == "fairseq":
        hf_cfg, hf_state, _ = convert._fairseq({"model": state, "args": argparse.Namespace(**entry["args"])}, name, None)
    else:
        params = dict(entry["params"], id2lang={int(k): v for k, v in entry["params"]["id2lang"].items()})
        hf_cfg, hf_state, _ = convert._xlm({"model": state, "params": argparse.Namespace(**params)}, name, None)
    cfg, arch = hf_mapping.hf_config_to_model_config(hf_cfg, name)
    assert arch in ("XLMRobertaForMaskedLM", "XLMWithLMHeadModel")
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.vocab_size,
            cfg.max_positions) == ARCHITECTURE[name]
    if entry["format"] == "xlm":
        assert cfg.langs == tuple("ar bg de el en es fr hi ru sw th tr ur vi zh".split()) and cfg.n_langs == 15

    # Every parameter of our model is filled, with the right shape: hf_to_params walks exactly `table_for`.
    shapes = convert.param_shapes(cfg)
    ours = {tuple(str(k.key) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(
        shapes, is_leaf=lambda x: isinstance(x, tuple))[0]}
    table = hf_mapping.table_for(cfg, arch)
    assert {e.ours for e in table} == ours
    expected = hf_mapping.expected_hf_shapes(cfg, arch, shapes)
    assert sorted(set(expected) - set(hf_state)) == []
    assert {k: tuple(hf_state[k].shape) for k in expected} == expected

    # Every tensor of the file is used, or knowingly left out.
    names = _source_names(name, entry, state)
    dropped = sorted(k for k, hf in names.items() if not hf or not set(hf) <= set(expected))
    assert set(dropped) <= set(KNOWINGLY_LEFT_OUT), [k for k in dropped if k not in KNOWINGLY_LEFT_OUT]
    assert {h for k, hf in names.items() if k not in dropped for h in hf} | {
        "roberta.embeddings.token_type_embeddings.weight"} >= set(expected)  # fairseq: the zero row is added


def test_fused_attention_projection_is_split_query_key_value():
    """fairseq's in_proj_weight [3D, D] holds query, key, value in that order (MultiheadAttention's upgrade)."""
    d = 4
    fused = np.arange(3 * d * d, dtype=np.float32).reshape(3 * d, d)
    bias = np.arange(3 * d, dtype=np.float32)
    e = "decoder.sentence_encoder."
    state = {f"{e}embed_tokens.weight": np.zeros((7, d), np.float32),
             f"{e}layers.0.self_attn.in_proj_weight": fused, f"{e}layers.0.self_attn.in_proj_bias": bias}
    out = hf_mapping.fairseq_to_hf_keys(state, False, "model.pt")
    for i, part in enumerate(("query", "key", "value")):
        np.testing.assert_array_equal(out[f"roberta.encoder.layer.0.attention.self.{part}.weight"], fused[i * d:(i + 1) * d])
        np.testing.assert_array_equal(out[f"roberta.encoder.layer.0.attention.self.{part}.bias"], bias[i * d:(i + 1) * d])
    state[f"{e}layers.0.self_attn.in_proj_bias"] = np.zeros(10, np.float32)
    with pytest.raises(hf_mapping.UserError, match=r"in_proj_bias has shape \(10,\).*divisible by 3"):
        hf_mapping.fairseq_to_hf_keys(state, False, "model.pt")
