"""Model properties that parity tests do not cover: scan vs unrolled, remat, bf16, axis names, heads, positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from xlm_jax.models.config import NAMED_CONFIGS, from_dict, get_model_config, to_dict
from xlm_jax.core.errors import UserError
from xlm_jax.models.xlm import (
    XLMForMaskedLM,
    XLMForSequenceClassification,
    XLMForTokenClassification,
    init_params,
    sinusoidal_table,
)

IDS = jnp.asarray([[0, 17, 18, 19, 20, 2, 1, 1], [0, 30, 31, 2, 1, 1, 1, 1]], jnp.int32)


def _hidden(cfg, params, ids=IDS, **kw):
    return XLMForMaskedLM(cfg).apply({"params": params}, ids, **kw)


@pytest.fixture(scope="module")
def tiny():
    cfg = get_model_config("xlmr_tiny")
    return cfg, nn.unbox(init_params(XLMForMaskedLM(cfg), jax.random.key(0)))


def test_unrolled_and_remat_match_scan(tiny):
    cfg, params = tiny
    ref = _hidden(cfg, params)
    for variant in (dict(scan_layers=False), dict(remat_policy="full"), dict(remat_policy="dots", scan_layers=False)):
        np.testing.assert_allclose(_hidden(cfg.replace(**variant), params), ref, atol=1e-5, err_msg=str(variant))
    grad = lambda c: jax.grad(lambda p: _hidden(c, p).sum())(params)
    for g, r in zip(jax.tree_util.tree_leaves(grad(cfg.replace(remat_policy="full"))), jax.tree_util.tree_leaves(grad(cfg))):
        np.testing.assert_allclose(g, r, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params(tiny):
    cfg, params = tiny
    bf = cfg.replace(dtype="bfloat16")
    boxed = init_params(XLMForMaskedLM(bf), jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(nn.unbox(boxed)))
    out = _hidden(bf, params)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), _hidden(cfg, params), atol=0.1)


@pytest.mark.parametrize("name", ["xlmr_tiny", "xlm_tiny", "xlmr_xl_tiny"])
def test_every_parameter_has_logical_axes(name):
    cfg = get_model_config(name)
    boxed = init_params(XLMForMaskedLM(cfg), jax.random.key(0))
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in leaves)
    layer_leaves = jax.tree_util.tree_leaves(boxed["encoder"]["layers"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(x.names[0] == "layers" and x.value.shape[0] == cfg.num_layers for x in layer_leaves)
    assert cfg.num_params()["total"] == sum(x.size for x in jax.tree_util.tree_leaves(nn.unbox(boxed)))


def test_xlmr_positions_skip_padding(tiny):
    """Left padding must not shift the positions of real tokens (pad-aware positions, as HF / fairseq)."""
    cfg, params = tiny
    right = jnp.asarray([[0, 17, 18, 2, 1, 1]], jnp.int32)
    left = jnp.asarray([[1, 1, 0, 17, 18, 2]], jnp.int32)
    a, b = _hidden(cfg, params, right), _hidden(cfg, params, left)
    np.testing.assert_allclose(a[:, :4], b[:, 2:], atol=1e-5)


def test_explicit_positions_restart_for_tlm(tiny):
    """TLM passes positions restarting at the target half; they must reach the position table."""
    cfg, params = tiny
    ids = jnp.asarray([[0, 17, 2, 2, 18, 2]], jnp.int32)
    default = _hidden(cfg, params, ids)
    restarted = _hidden(cfg, params, ids, positions=jnp.asarray([[0, 1, 2, 0, 1, 2]], jnp.int32))
    assert float(jnp.abs(default[:, 3:] - restarted[:, 3:]).max()) > 1e-3


def test_xlm_zeroes_padding_and_uses_language_embeddings():
    cfg = get_model_config("xlm_tiny")
    params = nn.unbox(init_params(XLMForMaskedLM(cfg), jax.random.key(0)))
    ids = jnp.asarray([[0, 17, 18, 1, 2, 2]], jnp.int32)  # XLM pad id is 2
    out = _hidden(cfg, params, ids, langs=jnp.zeros_like(ids))
    assert float(jnp.abs(out[0, 4:]).max()) == 0.0
    other = _hidden(cfg, params, ids, langs=jnp.full_like(ids, 2))
    assert float(jnp.abs(out[0, :4] - other[0, :4]).max()) > 1e-3


def test_sinusoidal_table_matches_xlm_formula():
    table = sinusoidal_table(5, 6)
    pos, j = 3, 4
    assert table[pos, j] == pytest.approx(np.sin(pos / 10000 ** (2 * (j // 2) / 6)), rel=1e-6)
    assert table[pos, j + 1] == pytest.approx(np.cos(pos / 10000 ** (2 * ((j + 1) // 2) / 6)), rel=1e-6)


@pytest.mark.parametrize("name", ["xlmr_tiny", "xlm_tiny"])
def test_heads(name):
    cfg = get_model_config(name)
    seq = XLMForSequenceClassification(cfg, num_labels=3)
    tok = XLMForTokenClassification(cfg, num_labels=5)
    seq_params = init_params(seq, jax.random.key(0))
    tok_params = init_params(tok, jax.random.key(0))
    # XLM: first token -> linear; XLM-R: dense -> tanh -> out_proj.
    assert set(seq_params["classifier"]) == ({"dense", "out_proj"} if cfg.family == "xlmr" else {"out_proj"})
    assert seq.apply({"params": nn.unbox(seq_params)}, IDS).shape == (2, 3)
    assert tok.apply({"params": nn.unbox(tok_params)}, IDS).shape == (2, 8, 5)
    # The encoder subtree is the same as the MLM model's, so a pretrained checkpoint initialises it.
    mlm = init_params(XLMForMaskedLM(cfg), jax.random.key(0))
    shapes = lambda t: jax.tree_util.tree_map(jnp.shape, nn.unbox(t))
    assert shapes(seq_params["encoder"]) == shapes(mlm["encoder"])


def test_named_configs_round_trip_and_reject_typos():
    for name, cfg in NAMED_CONFIGS.items():
        assert from_dict(to_dict(cfg)) == cfg, name
    assert get_model_config("xlmr_base").num_params()["total"] == pytest.approx(278e6, rel=0.01)
    assert get_model_config("xlmr_large").num_params()["total"] == pytest.approx(560e6, rel=0.01)
    with pytest.raises(UserError, match="did you mean model.hidden_size"):
        from_dict({"hiden_size": 3})
    with pytest.raises(UserError, match="xlmr_base"):
        get_model_config("xlmr_bsae")
    with pytest.raises(UserError, match="not divisible"):
        get_model_config("xlmr_tiny", num_heads=5)
