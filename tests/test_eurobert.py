"""EuroBERT (xlm_jax.models.eurobert, hf_eurobert) against transformers 5's modeling_eurobert: tiny random models
with grouped-query attention, padded batches and packed rows, every head HF has, the HF round trip, the config
mapping and validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlm_jax.core.errors import UserError
from xlm_jax.models import families, hf_eurobert
from xlm_jax.models.config import get_model_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import rope_parity as rp  # noqa: E402  (tests/rope_parity.py)

PAD, VOCAB, LABELS = 1, 120, 3
HEADS = {"mlm": "ForMaskedLM", "sequence": "ForSequenceClassification", "token": "ForTokenClassification"}


def hf_config(pooling: str = "late", **kw):
    """4 query heads over 2 key / value heads, RoPE theta 250k, untied LM projection (as released)."""
    base = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=PAD, bos_token_id=0, eos_token_id=PAD,
        mask_token_id=4, classifier_pooling=pooling, num_labels=LABELS,
        rope_parameters={"rope_type": "default", "rope_theta": 250000.0},
    )
    config = transformers.EuroBertConfig(**{**base, **kw})
    config._attn_implementation = "eager"
    return config


def our_model(cfg, head: str):
    return families.masked_lm(cfg) if head == "mlm" else families.task_model(cfg, head, LABELS)


def _call(ours, params, head, ids, mask, **kw):
    return rp.ours(ours, params, ids, mask, method=ours.mlm_logits if head == "mlm" else None, **kw)


@pytest.mark.parametrize("head,pooling", [("mlm", "late"), ("sequence", "late"), ("sequence", "bos"),
                                          ("sequence", "mean"), ("token", "late")])
def test_logits_equal_transformers_padded_and_packed(head, pooling):
    config = hf_config(pooling)
    torch.manual_seed(0)
    model = rp.randomize(getattr(transformers, f"EuroBert{HEADS[head]}")(config))
    cfg, _ = hf_eurobert.hf_config_to_model_config(config.to_dict(), "test")
    ours = our_model(cfg, head)
    params = hf_eurobert.hf_to_params(rp.state_of(model), cfg, f"EuroBert{HEADS[head]}", rp.shapes_of(ours), "test")
    params = jax.tree_util.tree_map(jnp.asarray, params)
    per_token = head != "sequence"
    rng = np.random.default_rng(1)
    ids, mask = rp.padded_batch(rng, VOCAB, [16, 11], PAD)
    rp.assert_padded_equal(_call(ours, params, head, ids, mask), rp.hf_logits(model, ids, mask), mask, per_token)

    examples = [rng.integers(5, VOCAB, 7), rng.integers(5, VOCAB, 10)]
    pids, pmask, segments, starts = rp.pack(examples, 20, PAD)
    kw = {"segment_ids": segments} | ({"example_starts": starts} if head == "sequence" else {})
    got = _call(ours, params, head, pids, pmask, **kw)
    for e, ex in enumerate(examples):
        want = rp.hf_logits(model, ex[None])
        if head == "sequence":
            np.testing.assert_allclose(got[0, e], want[0], atol=rp.TOL, rtol=rp.TOL)
        else:
            at = starts[0, e]
            np.testing.assert_allclose(got[0, at:at + len(ex)], want[0], atol=rp.TOL, rtol=rp.TOL)


@pytest.mark.parametrize("head,tied", [("mlm", False), ("mlm", True), ("sequence", False), ("token", False)])
def test_round_trip_through_the_hf_class(head, tied):
    """Our random params -> HF state dict -> strict load into the HF class -> the same logits as ours."""
    config = hf_config("late", tie_word_embeddings=tied)
    cfg, _ = hf_eurobert.hf_config_to_model_config(config.to_dict(), "test")
    assert cfg.tie_word_embeddings == tied
    ours = our_model(cfg, head)
    params = rp.random_params(ours, 3)
    arch = hf_eurobert.default_architecture(cfg, head)
    state = hf_eurobert.params_to_hf(params, cfg, arch)
    model = getattr(transformers, arch)(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    ids, mask = rp.padded_batch(np.random.default_rng(4), VOCAB, [14, 9], PAD)
    got = _call(ours, jax.tree_util.tree_map(jnp.asarray, params), head, ids, mask)
    rp.assert_padded_equal(got, rp.hf_logits(model, ids, mask), mask, head != "sequence")
    back = hf_eurobert.hf_to_params(state, cfg, arch, rp.shapes_of(ours), "test")
    flat_back = dict(jax.tree_util.tree_leaves_with_path(back))
    for path, value in jax.tree_util.tree_leaves_with_path(params):
        np.testing.assert_array_equal(flat_back[path], value)


def test_span_head_packed_rows_equal_each_example_alone():
    """transformers has no EuroBERT QA class: our linear span head, packed vs alone, and no HF architecture."""
    cfg = get_model_config("eurobert_tiny")
    ours = families.task_model(cfg, "span", 2)
    params = rp.random_params(ours, 0)
    rng = np.random.default_rng(5)
    examples = [rng.integers(5, 1000, 6), rng.integers(5, 1000, 9)]
    pids, pmask, segments, starts = rp.pack(examples, 18, cfg.pad_token_id)
    got = rp.ours(ours, params, pids, pmask, segment_ids=segments)
    assert got.shape == (1, 18, 2)
    for e, ex in enumerate(examples):
        alone = rp.ours(ours, params, ex[None], np.ones((1, len(ex)), np.int64))
        at = starts[0, e]
        np.testing.assert_allclose(got[0, at:at + len(ex)], alone[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="span"):
        hf_eurobert.default_architecture(cfg, "span")


def test_hf_config_round_trip():
    cfg = get_model_config("eurobert_210m")
    hf = hf_eurobert.model_config_to_hf_config(cfg, "EuroBertForMaskedLM")
    loaded = transformers.EuroBertConfig(**{k: v for k, v in hf.items() if k != "architectures"})
    assert loaded.num_key_value_heads == 12 and loaded.rope_parameters["rope_theta"] == 250000.0
    assert not loaded.tie_word_embeddings
    back, arch = hf_eurobert.hf_config_to_model_config(hf, "test")
    assert arch == "EuroBertForMaskedLM" and back == cfg
    # The released config.json (remote-code era keys: rope_theta, clf_pooling absent) reads to the named config.
    released = {"architectures": ["EuroBertForMaskedLM"], "model_type": "eurobert", "attention_bias": False,
                "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": 128001, "pad_token_id": 128001,
                "mask_token_id": 128002, "hidden_act": "silu", "hidden_size": 768, "initializer_range": 0.02,
                "intermediate_size": 3072, "max_position_embeddings": 8192, "num_attention_heads": 12,
                "num_hidden_layers": 12, "num_key_value_heads": 12, "rms_norm_eps": 1e-05, "rope_scaling": None,
                "rope_theta": 250000, "tie_word_embeddings": False, "vocab_size": 128256}
    assert hf_eurobert.hf_config_to_model_config(released, "test")[0] == cfg


def test_hf_config_refuses_what_it_cannot_represent():
    hf = hf_eurobert.model_config_to_hf_config(get_model_config("eurobert_tiny"), "EuroBertForMaskedLM")
    for change, word in ((dict(attention_bias=True), "bias"), (dict(rope_scaling={"rope_type": "linear"}), "RoPE"),
                         (dict(head_dim=8), "head_dim")):
        with pytest.raises(UserError, match=word):
            hf_eurobert.hf_config_to_model_config({**hf, **change}, "test")


@pytest.mark.parametrize("change,field", [
    (dict(num_kv_heads=3), "model.num_kv_heads"),
    (dict(num_kv_heads=8), "model.num_kv_heads"),
    (dict(rope_theta=0.0), "model.rope_theta"),
    (dict(global_attn_every_n=2), "model.global_attn_every_n"),
])
def test_config_validation_names_the_field(change, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        get_model_config("eurobert_tiny", **change)


def test_published_size():
    n = get_model_config("eurobert_210m").num_params()
    # 210M = embeddings + layers; the untied LM projection (another 98.5M) is counted with the embeddings.
    assert n["non_embedding"] + n["embeddings"] // 2 == pytest.approx(210e6, rel=0.01)


def test_hf_families_registry():
    from xlm_jax.models import hf_families, hf_modernbert

    assert hf_families.module_for("eurobert") is hf_eurobert and hf_families.module_for("xlmr") is None
    assert hf_families.module_for_hf({"model_type": "modernbert"}) is hf_modernbert
    for module in hf_families.MODULES.values():
        for name in ("ARCHITECTURES", "TIED_KEYS", "table", "hf_to_params", "params_to_hf", "expected_hf_shapes",
                     "default_architecture", "hf_config_to_model_config", "model_config_to_hf_config"):
            assert hasattr(module, name), (module.__name__, name)
