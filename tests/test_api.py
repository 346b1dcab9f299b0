"""The notebook API refuses what the model cannot represent (issue #10, kind 3): every entry point that takes ids
(`LoadedModel.hidden_states`, `.layer_states`, `.mlm_logits`, `evaluate.embed_sentences`) raises UserError
naming the value and the valid range, before anything is compiled; inputs on the boundary still work and are
finite."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py

import xlm_jax
from xlm_jax.api import LoadedModel
from xlm_jax.config import get_model_config
from xlm_jax.errors import UserError
from xlm_jax.model import XLMForMaskedLM, init_params

POSITIONS = 64  # as a converted HF model with max_position_embeddings=66 (XLM-R keeps 2 rows for padding)
METHODS = ("hidden_states", "layer_states", "mlm_logits")


def _model(name: str) -> LoadedModel:
    cfg = get_model_config(name, max_positions=POSITIONS)
    # Jitted: one compilation is faster than initialising op by op.
    return LoadedModel(cfg, nn.unbox(jax.jit(lambda key: init_params(XLMForMaskedLM(cfg), key))(jax.random.key(0))))


@pytest.fixture(scope="module")
def models():
    """xlmr: pad-aware positions, no language embeddings; xlm: every slot a position, 3 languages."""
    return {"xlmr": _model("xlmr_tiny"), "xlm": _model("xlm_tiny")}


def _ids(m: LoadedModel, rows: int = 2, length: int = 6) -> np.ndarray:
    ids = np.full((rows, length), 7, np.int64)
    ids[:, 0] = m.config.bos_token_id
    return ids


def _refused(call, *words: str) -> str:
    with pytest.raises(UserError) as err:
        call()
    message = str(err.value)
    for word in words:
        assert word in message, (word, message)
    return message


def _finite(x) -> bool:
    return bool(np.isfinite(np.asarray(x, np.float32)).all())


# ----------------------------------------------------------------------------------------- token ids

@pytest.mark.parametrize("family", ["xlmr", "xlm"])
def test_ids_outside_the_vocabulary_are_refused(models, family):
    m = models[family]
    vocab = m.config.vocab_size
    for method in METHODS:
        for bad in (vocab, vocab + 12345, -1, -vocab, 2**32 + 7):
            ids = _ids(m)
            ids[1, 3] = bad  # 2**32 + 7 would wrap to 7 if it were cast to int32 before the check
            _refused(lambda: getattr(m, method)(ids), f"input_ids[1, 3] = {bad}", f"[0, {vocab - 1}]",
                     f"vocab_size {vocab}")
    ids = _ids(m)
    ids[0, 1:] = vocab - 1
    ids[1, 1:] = 0
    assert _finite(m.hidden_states(ids)) and _finite(m.mlm_logits(ids))


def test_refused_before_anything_is_compiled(models):
    m = LoadedModel(models["xlmr"].config, models["xlmr"].params)
    ids = _ids(m)
    ids[0, 2] = m.config.vocab_size
    for method in METHODS:
        _refused(lambda: getattr(m, method)(ids), "input_ids[0, 2]")
    assert "_forward" not in m.__dict__ and "_logits" not in m.__dict__  # the jitted functions were never built


# ----------------------------------------------------------------------------------------- positions

def test_xlmr_positions_count_real_tokens(models):
    m = models["xlmr"]
    for method in METHODS:
        for length in (POSITIONS + 1, POSITIONS + 40):
            _refused(lambda: getattr(m, method)(_ids(m, 2, length)), f"has {length} real tokens",
                     f"{POSITIONS} positions", "max_positions", f"max_len={POSITIONS}")
        mask = np.ones((1, POSITIONS + 10), np.int32)
        mask[0, 3] = 0
        _refused(lambda: getattr(m, method)(_ids(m, 1, POSITIONS + 10), mask), f"has {POSITIONS + 9} real tokens")
    # Padding takes no position in XLM-R (fairseq / HF count only real tokens): 64 real + 10 pads is fine.
    ids = np.full((2, POSITIONS + 10), m.config.pad_token_id)
    ids[0, :POSITIONS] = 7
    ids[1, :3] = 7
    assert _finite(m.hidden_states(ids)) and _finite(m.mlm_logits(ids[:, :POSITIONS]))


def test_xlm_positions_count_every_slot(models):
    m = models["xlm"]
    ids = np.full((1, POSITIONS + 1), m.config.pad_token_id)
    ids[0, :5] = 7
    for method in METHODS:
        for bad in (_ids(m, 1, POSITIONS + 1), ids):  # XLM numbers padding slots too
            _refused(lambda: getattr(m, method)(bad), f"length {POSITIONS + 1}", f"{POSITIONS} positions",
                     "max_positions")
    assert _finite(m.hidden_states(_ids(m, 2, POSITIONS))) and _finite(m.mlm_logits(_ids(m, 2, POSITIONS)))


# ------------------------------------------------------------------------------------------------ langs

def test_langs_out_of_range_or_misshapen(models):
    m = models["xlm"]
    ids = _ids(m)
    for bad in (3, 7, -1):
        langs = np.zeros_like(ids)
        langs[1, 4] = bad
        _refused(lambda: m.hidden_states(ids, langs=langs), f"langs[1, 4] = {bad}", "[0, 2]", "de=0, en=1, fr=2")
    _refused(lambda: m.hidden_states(ids, langs=np.zeros((2, 5), int)), "langs has shape (2, 5)", "(2, 6)")
    _refused(lambda: m.hidden_states(ids, langs="en"), "langs", "integer", "config.langs")
    _refused(lambda: m.hidden_states(ids, langs=np.zeros(ids.shape)), "langs", "float64")
    assert _finite(m.mlm_logits(ids, langs=np.full(ids.shape, 2)))
    assert _finite(m.hidden_states(ids))  # langs are optional, as in HF's XLMModel


def test_langs_for_a_model_without_language_embeddings(models):
    m = models["xlmr"]
    ids = _ids(m)
    for langs in (np.zeros_like(ids), np.full(ids.shape, 5)):
        _refused(lambda: m.hidden_states(ids, langs=langs), "langs given", "no language embeddings", "leave langs out")


# --------------------------------------------------------------------------------- shapes and dtypes

@pytest.mark.parametrize("family", ["xlmr", "xlm"])
def test_shapes_and_dtypes(models, family):
    m = models[family]
    ids = _ids(m)
    cases = [
        (lambda: m.hidden_states(ids.astype(np.float32)), ("input_ids", "integer", "float32")),
        (lambda: m.hidden_states("Open the file"), ("input_ids", "text", "Tokenizer")),
        (lambda: m.hidden_states(ids > 3), ("input_ids", "integer", "bool")),
        (lambda: m.hidden_states([[0, 5, 6], [0, 5]]), ("input_ids", "different lengths", "pad")),
        (lambda: m.hidden_states(ids[None]), ("input_ids", "[batch, length]", "(1, 2, 6)")),
        (lambda: m.hidden_states(5), ("input_ids", "shape ()")),
        (lambda: m.hidden_states(None), ("input_ids is None",)),
        (lambda: m.hidden_states(np.zeros((0, 6), int)), ("input_ids is empty", "(0, 6)")),
        (lambda: m.layer_states(np.zeros((2, 0), int)), ("input_ids is empty", "(2, 0)")),
        (lambda: m.mlm_logits([]), ("input_ids is empty",)),
        (lambda: m.hidden_states(ids, np.ones((2, 5), int)), ("attention_mask has shape (2, 5)", "(2, 6)")),
        (lambda: m.hidden_states(ids, np.ones((1, 6), int)), ("attention_mask has shape (1, 6)",)),
        (lambda: m.hidden_states(ids, np.full(ids.shape, 2)), ("attention_mask[0, 0] = 2", "1", "0")),
        (lambda: m.hidden_states(ids, -np.ones(ids.shape, int)), ("attention_mask[0, 0] = -1",)),
        (lambda: m.hidden_states(ids, np.ones(ids.shape)), ("attention_mask", "integer", "float64")),
    ]
    for call, words in cases:
        _refused(call, *words)
    # Accepted: one [length] row, nested lists, any integer dtype, a bool mask.
    one = np.asarray(m.hidden_states(ids[0]))
    assert one.shape == (1, 6, m.config.hidden_size) and _finite(one)
    np.testing.assert_allclose(np.asarray(m.hidden_states(ids.tolist())),
                               np.asarray(m.hidden_states(ids.astype(np.uint16))))
    np.testing.assert_allclose(np.asarray(m.hidden_states(ids, np.ones(ids.shape, bool))),
                               np.asarray(m.hidden_states(ids, np.ones(ids.shape, np.int8))))


# ----------------------------------------------------------------------------- checkpoints without an LM head

def test_mlm_logits_on_a_fine_tuned_classifier(models):
    # What xlm_jax.finetune saves and xlm_jax.load returns: params {"encoder", "classifier"}.
    base = models["xlmr"]
    head = {"out_proj": {"kernel": np.zeros((base.config.hidden_size, 3), np.float32), "bias": np.zeros(3, np.float32)}}
    m = LoadedModel(base.config, {"encoder": base.params["encoder"], "classifier": head})
    ids = _ids(m)
    _refused(lambda: m.mlm_logits(ids), "no masked-LM head", "classifier", "encoder", "hidden_states",
             "layer_states", "xlm_jax.evaluate")
    assert _finite(m.hidden_states(ids))


def test_converted_hf_sequence_classifier(tmp_path):
    """The issue's own examples: a converted XLMRobertaForSequenceClassification with 64 positions."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    hf_cfg = transformers.XLMRobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=37, max_position_embeddings=66, num_labels=3)
    transformers.XLMRobertaForSequenceClassification(hf_cfg).save_pretrained(tmp_path / "hf")
    m = xlm_jax.load(tmp_path / "hf")
    assert m.config.max_positions == POSITIONS
    _refused(lambda: m.mlm_logits(_ids(m)), "no masked-LM head", "encoder only", "hidden_states", "layer_states")
    _refused(lambda: m.hidden_states(_ids(m, 1, 65)), "65 real tokens", "64 positions")
    _refused(lambda: m.hidden_states(np.full((1, 4), 99)), "input_ids[0, 0] = 99", "[0, 98]")
    ids = _ids(m, 1, POSITIONS)
    ids[0, -1] = 98
    assert _finite(m.hidden_states(ids))


# ------------------------------------------------------------------------------------ embed_sentences

def test_embed_sentences_inputs(models, tmp_path):
    from xlm_jax.evaluate import embed_sentences
    from xlm_jax.tokenizer import Tokenizer

    tok = Tokenizer.load(tiny_setup.make_tokenizer(tmp_path))
    m = models["xlmr"]
    for max_len in (0, 1, 2):
        _refused(lambda: embed_sentences(m, tok, ["the cat"], max_len=max_len), f"max_len={max_len}", ">= 3")
    _refused(lambda: embed_sentences(m, tok, ["the cat", None]), "texts[1]", "str")
    out = embed_sentences(m, tok, ["the cat " * 50, "die katze", "<mask>"], max_len=3)
    assert out.shape == (3, m.config.hidden_size) and np.isfinite(out).all()
    # A tokenizer with more ids than the model: its top ids cannot be embedded.
    small = LoadedModel(m.config.replace(vocab_size=40), None)
    _refused(lambda: small.hidden_states([tok.encode("<mask>")]), f"= {tok.mask_id}", "[0, 39]")
