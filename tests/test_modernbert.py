"""ModernBERT / mmBERT (xlm_jax.models.modernbert, hf_modernbert) against transformers 5's modeling_modernbert:
tiny random models, padded batches and packed rows, every head, the HF round trip, sliding-window attention, the
config mapping and validation."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlm_jax.core.errors import UserError
from xlm_jax.models import families, hf_modernbert, layers
from xlm_jax.models.config import from_dict, get_model_config, to_dict
from xlm_jax.models.xlm import init_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import rope_parity as rp  # noqa: E402  (tests/rope_parity.py)

PAD, VOCAB, LABELS = 0, 120, 3
HEADS = {"mlm": "ForMaskedLM", "sequence": "ForSequenceClassification", "token": "ForTokenClassification",
         "span": "ForQuestionAnswering"}


def hf_config(pooling: str = "mean", **kw):
    """4 layers, global every 3rd (layers 0 and 3), a window of 8 (|i - j| <= 4): rows of 24 tokens exceed it
    and take the blocked local path. Different RoPE thetas for global and local layers."""
    base = dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        layer_types=["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
        local_attention=8, max_position_embeddings=128, pad_token_id=PAD, bos_token_id=2, eos_token_id=1,
        cls_token_id=2, sep_token_id=1, classifier_pooling=pooling, num_labels=LABELS,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
    )
    config = transformers.ModernBertConfig(**{**base, **kw})
    config._attn_implementation = "eager"
    return config


def hf_model(head: str, config, seed: int = 0):
    torch.manual_seed(seed)
    return rp.randomize(getattr(transformers, f"ModernBert{HEADS[head]}")(config), seed)


def our_model(cfg, head: str):
    return families.masked_lm(cfg) if head == "mlm" else families.task_model(cfg, head, LABELS)


def mapped(head: str, pooling: str = "mean"):
    config = hf_config(pooling, num_labels=2 if head == "span" else LABELS)
    model = hf_model(head, config)
    cfg, _ = hf_modernbert.hf_config_to_model_config(config.to_dict(), "test")
    ours = our_model(cfg, head)
    arch = f"ModernBert{HEADS[head]}"
    params = hf_modernbert.hf_to_params(rp.state_of(model), cfg, arch, rp.shapes_of(ours), "test")
    return model, ours, jax.tree_util.tree_map(jnp.asarray, params), cfg


def _call(ours, params, head, ids, mask, **kw):
    method = ours.mlm_logits if head == "mlm" else None
    return rp.ours(ours, params, ids, mask, method=method, **kw)


@pytest.mark.parametrize("head,pooling", [("mlm", "mean"), ("sequence", "mean"), ("sequence", "cls"),
                                          ("token", "mean"), ("span", "mean")])
def test_logits_equal_transformers_padded_and_packed(head, pooling):
    model, ours, params, cfg = mapped(head, pooling)
    output = "span" if head == "span" else "logits"
    per_token = head != "sequence"
    rng = np.random.default_rng(1)
    ids, mask = rp.padded_batch(rng, VOCAB, [24, 17], PAD)
    rp.assert_padded_equal(_call(ours, params, head, ids, mask), rp.hf_logits(model, ids, mask, output), mask,
                           per_token)

    # Packed: two examples in one row, each compared with HF running it alone.
    examples = [rng.integers(5, VOCAB, 9), rng.integers(5, VOCAB, 14)]
    pids, pmask, segments, starts = rp.pack(examples, 26, PAD)
    kw = {"segment_ids": segments}
    if head == "sequence":
        kw["example_starts"] = starts
    got = _call(ours, params, head, pids, pmask, **kw)
    for e, ex in enumerate(examples):
        want = rp.hf_logits(model, ex[None], None, output)
        if head == "sequence":
            np.testing.assert_allclose(got[0, e], want[0], atol=rp.TOL, rtol=rp.TOL)
        else:
            at = starts[0, e]
            np.testing.assert_allclose(got[0, at:at + len(ex)], want[0], atol=rp.TOL, rtol=rp.TOL)


def test_logits_at_gathers_the_same_predictions():
    model, ours, params, _ = mapped("mlm")
    ids, mask = rp.padded_batch(np.random.default_rng(2), VOCAB, [20, 13], PAD)
    where = np.asarray([[0, 5, 19], [1, 2, 12]])
    got = ours.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask), None, None, jnp.asarray(where),
                     method=ours.logits_at)
    want = np.take_along_axis(rp.hf_logits(model, ids, mask), where[..., None], axis=1)
    np.testing.assert_allclose(np.asarray(got), want, atol=rp.TOL, rtol=rp.TOL)


@pytest.mark.parametrize("head", list(HEADS))
def test_round_trip_through_the_hf_class(head):
    """Our random params -> HF state dict -> strict load into the HF class -> the same logits as ours."""
    config = hf_config("mean", num_labels=2 if head == "span" else LABELS)
    cfg, _ = hf_modernbert.hf_config_to_model_config(config.to_dict(), "test")
    ours = our_model(cfg, head)
    params = rp.random_params(ours, 3)
    # Norms and biases off their initial values, so that a dropped tensor shows.
    arch = hf_modernbert.default_architecture(cfg, head)
    state = hf_modernbert.params_to_hf(params, cfg, arch)
    model = getattr(transformers, arch)(config).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    ids, mask = rp.padded_batch(np.random.default_rng(4), VOCAB, [24, 15], PAD)
    got = _call(ours, jax.tree_util.tree_map(jnp.asarray, params), head, ids, mask)
    want = rp.hf_logits(model, ids, mask, "span" if head == "span" else "logits")
    rp.assert_padded_equal(got, want, mask, head != "sequence")
    # And back: the HF state dict maps to the params we started from (layer 0's unused attention norm aside).
    back = hf_modernbert.hf_to_params(state, cfg, arch, rp.shapes_of(ours), "test")
    flat_back = dict(jax.tree_util.tree_leaves_with_path(back))
    for path, value in jax.tree_util.tree_leaves_with_path(params):
        want_value = value[1:] if "attention_norm" in jax.tree_util.keystr(path) else value
        got_value = flat_back[path][1:] if "attention_norm" in jax.tree_util.keystr(path) else flat_back[path]
        np.testing.assert_array_equal(got_value, want_value)


def test_bare_encoder_reads_a_file_with_a_head():
    model, _, _, cfg = mapped("sequence")
    encoder = families.masked_lm(cfg)
    shapes = {"encoder": rp.shapes_of(encoder)["encoder"]}
    params = hf_modernbert.hf_to_params(rp.state_of(model), cfg, "ModernBertModel", shapes, "test")
    assert set(params) == {"encoder"}


@pytest.mark.parametrize("length,half,groups", [(23, 4, "padding"), (40, 5, "segments"), (9, 2, "padding"),
                                                (17, 16, "segments")])
def test_blocked_local_attention_equals_the_masked_dense_form(length, half, groups):
    rng = np.random.default_rng(length)
    b, n, k, dh = 2, 4, 2, 8  # grouped key / value heads too
    q, kk, v = (jnp.asarray(rng.standard_normal((b, length, h, dh)), jnp.float32) for h in (n, k, k))
    if groups == "padding":
        real = np.ones((b, length), np.int32)
        real[1, length - 5:] = 0
        query_groups, key_groups = np.ones_like(real), real
        mask = (real > 0)[:, None, None, :]
    else:
        segments = np.zeros((b, length), np.int32)
        segments[:, : length // 3] = 1
        segments[:, length // 3: length - 2] = 2
        query_groups = key_groups = segments
        mask = (segments[:, :, None] == segments[:, None, :])[:, None]
    dense = layers._softmax_attend(q, kk, v, jnp.asarray(mask) & layers.window_mask(length, half), 0.0, None)
    blocked = layers.local_attend(q, kk, v, jnp.asarray(query_groups), jnp.asarray(key_groups), half)
    rows = np.asarray(query_groups if groups == "segments" else key_groups) > 0  # real queries
    np.testing.assert_allclose(np.asarray(blocked)[rows], np.asarray(dense)[rows], atol=1e-5, rtol=1e-5)


def test_blocked_local_attention_equals_jax_local_window_size():
    """The window convention against jax's own: `jax.nn.dot_product_attention(local_window_size=(h, h))` (on
    CPU the XLA path, a dense T x T mask; on GPU `implementation="cudnn"` takes left windows only, see
    docs/long_context.md) is |i - j| <= h, as `local_attend` with half_window h."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((1, 29, h, 8)), jnp.float32) for h in (4, 2, 2))
    ones = jnp.ones((1, 29), jnp.int32)
    want = jax.nn.dot_product_attention(q, k, v, local_window_size=(5, 5), implementation="xla")
    np.testing.assert_allclose(layers.local_attend(q, k, v, ones, ones, 5), want, atol=1e-5, rtol=1e-5)


def test_hf_config_round_trip():
    cfg = get_model_config("mmbert_small")
    hf = hf_modernbert.model_config_to_hf_config(cfg, "ModernBertForMaskedLM")
    loaded = transformers.ModernBertConfig(**{k: v for k, v in hf.items() if k != "architectures"})
    assert loaded.sliding_window == 64 and loaded.layer_types[:4] == ["full_attention", "sliding_attention",
                                                                        "sliding_attention", "full_attention"]
    assert loaded.rope_parameters["full_attention"]["rope_theta"] == 160000.0
    back, arch = hf_modernbert.hf_config_to_model_config(json.loads(json.dumps(hf)), "test")
    assert arch == "ModernBertForMaskedLM"
    assert back == cfg.replace(dropout=0.0, attention_dropout=0.0)
    # An older config.json (transformers 4.x keys only) reads the same.
    old = {k: v for k, v in hf.items() if k not in ("layer_types", "rope_parameters")}
    assert hf_modernbert.hf_config_to_model_config(old, "test")[0] == back


def test_hf_config_refuses_what_it_cannot_represent():
    hf = hf_modernbert.model_config_to_hf_config(get_model_config("modernbert_tiny"), "ModernBertForMaskedLM")
    for change, word in ((dict(norm_bias=True), "bias"), (dict(decoder_bias=False), "decoder_bias"),
                         (dict(layer_types=["full_attention", "full_attention", "sliding_attention",
                                            "full_attention"]), "layer_types")):
        with pytest.raises(UserError, match=word):
            hf_modernbert.hf_config_to_model_config({**hf, **change}, "test")


@pytest.mark.parametrize("change,field", [
    (dict(global_attn_every_n=0), "model.global_attn_every_n"),
    (dict(global_attn_every_n=5), "model.global_attn_every_n"),
    (dict(local_window=0), "model.local_window"),
    (dict(rope_theta=-1.0), "model.rope_theta"),
    (dict(local_rope_theta=0.0), "model.local_rope_theta"),
    (dict(num_kv_heads=3), "model.num_kv_heads"),
    (dict(classifier_pooling="late"), "model.classifier_pooling"),
])
def test_config_validation_names_the_field(change, field):
    with pytest.raises(UserError, match=field.replace(".", r"\.")):
        get_model_config("modernbert_tiny", **change)


def test_existing_configs_load_unchanged():
    """A config.json written before these fields existed loads to the same config; XLM families refuse them."""
    for name in ("xlmr_base", "xlm_tiny", "xlmr_xl_tiny"):
        cfg = get_model_config(name)
        old = {k: v for k, v in to_dict(cfg).items() if k not in (
            "num_kv_heads", "rope_theta", "local_rope_theta", "global_attn_every_n", "local_window", "use_bias",
            "tie_word_embeddings", "classifier_pooling")}
        assert from_dict(old) == cfg
    with pytest.raises(UserError, match=r"model\.use_bias"):
        get_model_config("xlmr_tiny", use_bias=False)


def test_published_sizes():
    assert get_model_config("modernbert_base").num_params()["total"] == pytest.approx(149e6, rel=0.01)
    mm = get_model_config("mmbert_base").num_params()
    assert mm["total"] == pytest.approx(307e6, rel=0.01) and mm["non_embedding"] == pytest.approx(110e6, rel=0.02)


def test_blocked_local_attention_memory_grows_linearly():
    """XLA's temporary buffers for local attention at 2T are about twice those at T (a T x T mask or score
    matrix would make them four times)."""

    def temp_bytes(length):
        q = jax.ShapeDtypeStruct((1, length, 4, 16), jnp.float32)
        g = jax.ShapeDtypeStruct((1, length), jnp.int32)
        compiled = jax.jit(lambda q, k, v, g: layers.local_attend(q, k, v, g, g, 16)).lower(q, q, q, g).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(512), temp_bytes(1024)
    assert large <= 2.2 * small, (small, large)


def test_local_layers_do_not_store_the_global_layers_scores():
    """A training step of the 1-in-3 global layout needs less temporary memory than all-global attention: the local
    layers keep no T x T buffer (lax.cond over the scanned layer index would otherwise keep both branches'
    residuals in every layer; docs/long_context.md)."""

    def temp_bytes(every_n):
        cfg = get_model_config("modernbert_tiny", hidden_size=16, num_layers=3, num_heads=2, intermediate_size=24,
                               vocab_size=40, max_positions=512, local_window=16, global_attn_every_n=every_n)
        model = families.masked_lm(cfg)
        params = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))

        def loss(p, ids):
            return model.apply({"params": p}, ids, method=model.mlm_logits).astype(jnp.float32).mean()

        ids = jax.ShapeDtypeStruct((1, 512), jnp.int32)
        return jax.jit(jax.grad(loss)).lower(params, ids).compile().memory_analysis().temp_size_in_bytes

    local, dense = temp_bytes(3), temp_bytes(1)
    assert local < 0.75 * dense, (local, dense)  # measured 0.60 (without jax.checkpoint on the branches: > 1)

