"""The encoder–decoder (models/decoder.py), its decoding (models/decoding.py), MLM initialisation and its name
mappings (models/hf_seq2seq.py): tiny random models, CPU, float32."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from xlm_jax.core.errors import UserError
from xlm_jax.models import hf_seq2seq
from xlm_jax.models.config import (
    EncoderDecoderConfig, encoder_decoder_config, encoder_decoder_from_dict, encoder_decoder_to_dict, get_model_config,
)
from xlm_jax.models.decoder import EncoderDecoder, init_from_mlm, init_params
from xlm_jax.models.decoding import beam_search, greedy_decode, start_token
from xlm_jax.models.xlm import XLMForMaskedLM
from xlm_jax.models.xlm import init_params as init_mlm_params
from xlm_jax.training import checkpoint

LANGS = ("de", "en", "fr")
SMALL = dict(vocab_size=40, hidden_size=32, num_heads=4, intermediate_size=128, max_positions=32, dropout=0.0,
             attention_dropout=0.0)


def _model_config(family: str, **kw):
    name = {"xlm": "xlm_tiny", "xlmr": "xlmr_tiny", "xlmr_xl": "xlmr_xl_tiny"}[family]
    return get_model_config(name, **{**SMALL, "n_langs": 3, "langs": LANGS, **kw})


def _perturbed(params, seed=0, scale=0.05):
    """Random init leaves LayerNorms at (1, 0) and biases at 0: perturb everything so that a mix-up shows."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def _setup(family: str, decoder_layers: int = 2, **kw):
    cfg = encoder_decoder_config(_model_config(family, **kw), decoder_layers)
    model = EncoderDecoder(cfg)
    return cfg, model, _perturbed(nn.unbox(init_params(model, jax.random.key(0))))


def _batch(cfg: EncoderDecoderConfig, batch=3, src_len=7, tgt_len=6, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(5, cfg.encoder.vocab_size, (batch, src_len))
    src_mask = np.ones_like(src)
    src_mask[1, 4:] = 0
    src[1, 4:] = cfg.encoder.pad_token_id
    tgt = rng.integers(5, cfg.decoder.vocab_size, (batch, tgt_len))
    tgt[:, 0] = start_token(cfg.decoder)
    tgt_mask = np.ones_like(tgt)
    tgt_mask[2, 3:] = 0
    tgt[2, 3:] = cfg.decoder.pad_token_id
    src_langs = np.zeros_like(src)
    tgt_langs = np.broadcast_to(np.array([[2], [1], [2]])[:batch], tgt.shape).copy()
    return tuple(jnp.asarray(a, jnp.int32) for a in (src, src_mask, src_langs, tgt, tgt_mask, tgt_langs))


# ------------------------------------------------------------------------------------------ model and cache


@pytest.mark.parametrize("family, variant", [
    ("xlm", {}), ("xlmr", {"remat_policy": "full"}), ("xlmr_xl", {"scan_layers": False}),
])
def test_incremental_decoding_equals_full_causal_forward(family, variant):
    cfg, model, params = _setup(family, **variant)
    src, src_mask, src_langs, tgt, tgt_mask, tgt_langs = _batch(cfg)
    v = {"params": params}
    full = model.apply(v, src, src_mask, src_langs, tgt, tgt_mask, tgt_langs)
    assert full.shape == (3, 6, cfg.decoder.vocab_size)
    memory = model.apply(v, src, src_mask, src_langs, method=EncoderDecoder.encode)
    cache = model.apply(v, memory, src_mask, 8, method=EncoderDecoder.init_cache)
    # Two tokens at once, then one at a time: the cache takes any number of new tokens.
    first, cache = model.apply(v, tgt[:, :2], tgt_langs[:, :2], cache, method=EncoderDecoder.decode_step)
    steps = [first]
    for t in range(2, 6):
        logits, cache = model.apply(v, tgt[:, t:t + 1], tgt_langs[:, t:t + 1], cache,
                                    method=EncoderDecoder.decode_step)
        steps.append(logits)
    incremental = jnp.concatenate(steps, axis=1)
    assert int(cache["index"]) == 6
    real = np.asarray(tgt_mask, bool)  # padded target slots are not decoded one by one
    np.testing.assert_allclose(np.asarray(incremental)[real], np.asarray(full)[real], atol=1e-5)


def test_training_forward_with_dropout_and_remat():
    cfg, model, params = _setup("xlm", dropout=0.1, attention_dropout=0.1)
    src, src_mask, src_langs, tgt, tgt_mask, tgt_langs = _batch(cfg)
    picks = jnp.asarray([[1, 2], [3, 4], [1, 2]], jnp.int32)

    def loss(p, m, deterministic, rng=jax.random.key(0)):
        logits = m.apply({"params": p}, src, src_mask, src_langs, tgt, tgt_mask, tgt_langs, picks, deterministic,
                         method=EncoderDecoder.logits_at, rngs={"dropout": rng})
        return jax.nn.logsumexp(logits, axis=-1).mean()

    remat = EncoderDecoder(encoder_decoder_config(cfg.encoder.replace(remat_policy="full"), 2))
    for a, b in zip(jax.tree_util.tree_leaves(jax.grad(loss)(params, model, True)),
                    jax.tree_util.tree_leaves(jax.grad(loss)(params, remat, True))):
        np.testing.assert_allclose(a, b, atol=1e-5)
    noisy = jax.grad(loss)(params, remat, False)
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(noisy))
    assert loss(params, model, False) != loss(params, model, False, jax.random.key(1))


def test_logits_at_gathers_before_the_projection():
    cfg, model, params = _setup("xlmr")
    batch = _batch(cfg)
    full = model.apply({"params": params}, *batch)
    picks = jnp.asarray([[0, 5], [2, 3], [1, 1]], jnp.int32)
    at = model.apply({"params": params}, *batch, picks, method=EncoderDecoder.logits_at)
    np.testing.assert_allclose(at, jnp.take_along_axis(full, picks[..., None], axis=1), atol=1e-6)


def test_target_language_changes_the_xlmr_decoder():
    cfg, model, params = _setup("xlmr")
    assert cfg.decoder.type_vocab_size == 3 and cfg.target_langs == 3
    src, src_mask, src_langs, tgt, tgt_mask, tgt_langs = _batch(cfg)
    a = model.apply({"params": params}, src, src_mask, src_langs, tgt, tgt_mask, tgt_langs)
    b = model.apply({"params": params}, src, src_mask, src_langs, tgt, tgt_mask, jnp.zeros_like(tgt_langs))
    assert float(jnp.abs(a - b).max()) > 1e-3


def test_config_round_trip():
    cfg = encoder_decoder_config(_model_config("xlmr"), 3)
    assert encoder_decoder_from_dict(encoder_decoder_to_dict(cfg)) == cfg
    with pytest.raises(UserError, match="decoder.num_layer"):
        encoder_decoder_from_dict({"encoder": {}, "decoder": {"num_layer": 2}})
    with pytest.raises(UserError, match="missing decoder"):
        encoder_decoder_from_dict({"encoder": {}})


def test_an_encoder_decoder_checkpoint_round_trips(tmp_path):
    """The MT checkpoint format: `save_params` with an encoder–decoder config, read back by `restore_params`."""
    cfg, _, params = _setup("xlm")
    checkpoint.save_params(tmp_path / "mt", params, cfg)
    restored, restored_cfg = checkpoint.restore_params(tmp_path / "mt")
    assert restored_cfg == cfg and checkpoint.load_model_config(tmp_path / "mt") == cfg
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(restored)):
        np.testing.assert_array_equal(np.asarray(a), b, err_msg=jax.tree_util.keystr(path))


def test_config_refuses_mismatched_hidden_sizes():
    with pytest.raises(UserError, match="hidden_size"):
        EncoderDecoderConfig(_model_config("xlm"), _model_config("xlm", hidden_size=64))
    with pytest.raises(UserError, match="decoder_layers"):
        encoder_decoder_config(_model_config("xlm"), 0)


# ---------------------------------------------------------------------------------------------- decoding


def _decoding_setup():
    """A 1-layer XLM decoder whose EOS grows likelier with the position (a ramp along the EOS embedding added to
    the position table), so that rows end at once, midway or at max_len."""
    cfg, model, params = _setup("xlm", decoder_layers=1)
    emb = params["decoder"]["embeddings"]
    words, positions = emb["word_embeddings"]["embedding"], emb["position_embeddings"]["embedding"]
    toward_eos = words[cfg.decoder.eos_token_id] / jnp.linalg.norm(words[cfg.decoder.eos_token_id])
    emb["position_embeddings"]["embedding"] = positions + 0.3 * jnp.arange(len(positions))[:, None] * toward_eos
    src, src_mask, src_langs, *_ = _batch(cfg, batch=3)
    return cfg, model, params, (src, src_mask, src_langs, jnp.asarray([2, 0, 1], jnp.int32))


class _Hypotheses:
    """facebookresearch/XLM `BeamHypotheses`, verbatim in behaviour."""

    def __init__(self, n_hyp, max_len, length_penalty, early_stopping):
        self.max_len, self.length_penalty, self.early_stopping = max_len - 1, length_penalty, early_stopping
        self.n_hyp, self.hyp, self.worst_score = n_hyp, [], 1e9

    def add(self, hyp, sum_logprobs):
        score = sum_logprobs / len(hyp) ** self.length_penalty
        if len(self.hyp) < self.n_hyp or score > self.worst_score:
            self.hyp.append((score, hyp))
            if len(self.hyp) > self.n_hyp:
                sorted_scores = sorted([(s, idx) for idx, (s, _) in enumerate(self.hyp)])
                del self.hyp[sorted_scores[0][1]]
                self.worst_score = sorted_scores[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs):
        if len(self.hyp) < self.n_hyp:
            return False
        if self.early_stopping:
            return True
        return self.worst_score >= best_sum_logprobs / self.max_len ** self.length_penalty


def _xlm_generate_beam(logprobs_fn, bs, beam, max_len, start, eos, pad, length_penalty, early_stopping):
    """facebookresearch/XLM `TransformerModel.generate_beam`'s search loop, driven by full forwards."""
    generated = np.full((bs * beam, max_len), pad)
    generated[:, 0] = start
    hyps = [_Hypotheses(beam, max_len, length_penalty, early_stopping) for _ in range(bs)]
    beam_scores = np.zeros((bs, beam), np.float32)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.reshape(-1)
    done = [False] * bs
    cur_len = 1
    while cur_len < max_len:
        scores = logprobs_fn(generated)[:, cur_len - 1]
        n_words = scores.shape[-1]
        totals = (scores + beam_scores[:, None]).reshape(bs, beam * n_words)
        next_words = np.argsort(-totals, axis=1, kind="stable")[:, :2 * beam]
        next_scores = np.take_along_axis(totals, next_words, 1)
        next_batch_beam = []
        for sent_id in range(bs):
            done[sent_id] = done[sent_id] or hyps[sent_id].is_done(next_scores[sent_id].max())
            if done[sent_id]:
                next_batch_beam.extend([(0, pad, 0)] * beam)
                continue
            next_sent_beam = []
            for idx, value in zip(next_words[sent_id], next_scores[sent_id]):
                beam_id, word_id = idx // n_words, idx % n_words
                if word_id == eos or cur_len + 1 == max_len:
                    hyps[sent_id].add(generated[sent_id * beam + beam_id, :cur_len].copy(), float(value))
                else:
                    next_sent_beam.append((value, word_id, sent_id * beam + beam_id))
                if len(next_sent_beam) == beam:
                    break
            if len(next_sent_beam) == 0:
                next_sent_beam = [(0, pad, 0)] * beam
            next_batch_beam.extend(next_sent_beam)
        beam_scores = np.array([x[0] for x in next_batch_beam], np.float32)
        generated = generated[[x[2] for x in next_batch_beam]]
        generated[:, cur_len] = [x[1] for x in next_batch_beam]
        cur_len += 1
        if all(done):
            break
    return [sorted(h.hyp, key=lambda x: -x[0]) for h in hyps]


def test_beam_one_equals_greedy():
    cfg, model, params, (src, src_mask, src_langs, tgt_langs) = _decoding_setup()
    tokens, lengths = greedy_decode(model, params, src, src_mask, src_langs, tgt_langs, max_len=12)
    out = beam_search(model, params, src, src_mask, src_langs, tgt_langs, max_len=12, beam=1, early_stopping=True)
    np.testing.assert_array_equal(out.tokens, tokens)
    np.testing.assert_array_equal(out.lengths, lengths)
    assert sorted(np.asarray(lengths).tolist()) == [2, 9, 12], "rows end at once, midway and at max_len"
    eos, pad = cfg.decoder.eos_token_id, cfg.decoder.pad_token_id
    for row, n in zip(np.asarray(tokens), np.asarray(lengths)):
        assert row[0] == start_token(cfg.decoder) and row[n - 1] == eos and (row[n:] == pad).all()


@pytest.mark.parametrize("length_penalty, early_stopping", [(1.0, False), (0.5, True)])
def test_beam_search_matches_xlm(length_penalty, early_stopping):
    cfg, model, params, (src, src_mask, src_langs, tgt_langs) = _decoding_setup()
    beam, max_len = 3, 9
    eos, pad = cfg.decoder.eos_token_id, cfg.decoder.pad_token_id
    out = beam_search(model, params, src, src_mask, src_langs, tgt_langs, max_len=max_len, beam=beam,
                      length_penalty=length_penalty, early_stopping=early_stopping)
    rep = lambda a: jnp.repeat(a, beam, axis=0)  # noqa: E731
    forward = jax.jit(lambda tgt: jax.nn.log_softmax(model.apply(
        {"params": params}, rep(src), rep(src_mask), rep(src_langs), tgt, jnp.ones_like(tgt),
        jnp.broadcast_to(rep(tgt_langs)[:, None], tgt.shape)), axis=-1))
    reference = _xlm_generate_beam(lambda g: np.asarray(forward(jnp.asarray(g, jnp.int32))), 3, beam, max_len,
                                   start_token(cfg.decoder), eos, pad, length_penalty, early_stopping)
    assert len({n for hyps in reference for _, h in hyps for n in [len(h)]}) > 2, "EOS at several lengths"
    for b, hyps in enumerate(reference):
        scores = np.asarray(out.hyp_scores[b])
        assert (np.diff(scores) <= 0).all(), "hypotheses sorted best first"
        np.testing.assert_allclose(scores, [s for s, _ in hyps], rtol=1e-5)
        for k, (_, hyp) in enumerate(hyps):
            n = len(hyp) + 1
            assert int(out.hyp_lengths[b, k]) == n
            np.testing.assert_array_equal(out.hyp_tokens[b, k, :n], list(hyp) + [eos])
            assert (np.asarray(out.hyp_tokens[b, k, n:]) == pad).all()
        np.testing.assert_array_equal(out.tokens[b], out.hyp_tokens[b, 0])


def test_decoding_refuses_bad_settings():
    cfg, model, params, (src, src_mask, src_langs, tgt_langs) = _decoding_setup()
    args = (model, params, src, src_mask, src_langs, tgt_langs)
    with pytest.raises(UserError, match="beam"):
        beam_search(*args, max_len=8, beam=0)
    with pytest.raises(UserError, match="length_penalty"):
        beam_search(*args, max_len=8, beam=2, length_penalty="1")
    with pytest.raises(UserError, match="length_penalty"):
        beam_search(*args, max_len=8, beam=2, length_penalty=float("nan"))
    with pytest.raises(UserError, match="max_len"):
        greedy_decode(*args, max_len=1)
    with pytest.raises(UserError, match="max_len"):
        greedy_decode(*args, max_len=cfg.decoder.max_positions + 1)


# ------------------------------------------------------------------------------------- MLM initialisation


def _leaves(tree, prefix=()):
    return {prefix + tuple(str(getattr(k, "key", k)) for k in path): v
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.mark.parametrize("family", ["xlm", "xlmr"])
def test_mlm_initialisation_copies_exactly_the_shared_tensors(family):
    cfg = encoder_decoder_config(_model_config(family))
    mlm = _perturbed(nn.unbox(init_mlm_params(XLMForMaskedLM(cfg.encoder), jax.random.key(1))), seed=1)
    fresh = init_params(EncoderDecoder(cfg), jax.random.key(2))
    params = init_from_mlm(mlm, fresh)
    assert isinstance(params["decoder"]["layers"]["cross_attention"]["query"]["kernel"], nn.Partitioned)
    ours, theirs, new = _leaves(nn.unbox(params)), _leaves(mlm), _leaves(nn.unbox(fresh))
    decoder_only = 0
    for path, value in ours.items():
        if path[0] == "encoder":
            np.testing.assert_array_equal(value, theirs[path], err_msg=str(path))
        elif "cross_attention" in path or "cross_attention_norm" in path:
            np.testing.assert_array_equal(value, new[path], err_msg=str(path))
            decoder_only += 1
        else:
            source = ("lm_head",) + path[2:] if path[1] == "lm_head" else ("encoder",) + path[1:]
            want = theirs[source]
            if path[-2] == "token_type_embeddings":  # XLM-R: every target language starts as the MLM's row
                want = np.broadcast_to(want, value.shape)
            np.testing.assert_array_equal(value, want, err_msg=str(path))
    assert decoder_only == 10  # XLM: encoder_attn.i.{q,k,v,out}_lin.{weight,bias} + layer_norm15.i.{weight,bias}
    # Encoder only: the decoder keeps its fresh initialisation.
    encoder_only = _leaves(nn.unbox(init_from_mlm(mlm, fresh, decoder=False)))
    for path, value in encoder_only.items():
        np.testing.assert_array_equal(value, theirs[path] if path[0] == "encoder" else new[path])


def test_mlm_initialisation_refuses_a_shape_mismatch():
    cfg = encoder_decoder_config(_model_config("xlm"))
    fresh = init_params(EncoderDecoder(cfg), jax.random.key(2))
    wider = nn.unbox(init_mlm_params(XLMForMaskedLM(cfg.encoder.replace(vocab_size=41)), jax.random.key(1)))
    with pytest.raises(UserError, match=r"encoder/embeddings/word_embeddings/embedding .*\(41, 32\).*\(40, 32\)"):
        init_from_mlm(wider, fresh)
    deeper = encoder_decoder_config(_model_config("xlm"), decoder_layers=3)
    mlm = nn.unbox(init_mlm_params(XLMForMaskedLM(cfg.encoder), jax.random.key(1)))
    layer_count = r"tensor decoder/layers/attention/\w+/\w+ has shape \(2, [\d, ]+\) in the MLM but \(3, "
    with pytest.raises(UserError, match=layer_count):
        init_from_mlm(mlm, init_params(EncoderDecoder(deeper), jax.random.key(2)))
    init_from_mlm(mlm, init_params(EncoderDecoder(deeper), jax.random.key(2)), decoder=False)  # encoder only: fine


# ----------------------------------------------------------------------------------------- name mappings


def _shapes(model):
    return jax.tree_util.tree_map(lambda x: x.shape, nn.unbox(init_params(model, jax.random.key(0))))


def test_xlm_mt_state_dict_round_trip():
    cfg, model, params = _setup("xlm")
    state = hf_seq2seq.params_to_xlm_mt(params, cfg)
    assert {"encoder_attn.1.q_lin.weight", "layer_norm15.0.bias", "attentions.0.out_lin.weight",
            "lang_embeddings.weight", "pred_layer.proj.bias"} <= set(state["decoder"])
    assert not any(k.startswith(("encoder_attn", "layer_norm15")) for k in state["encoder"])
    assert state["decoder"]["encoder_attn.0.k_lin.weight"].shape == (32, 32)
    back = hf_seq2seq.xlm_mt_to_params(state, cfg, _shapes(model), "mt.pth")
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, jax.tree_util.tree_map(np.asarray, params))
    again = hf_seq2seq.params_to_xlm_mt(back, cfg, state["encoder"]["pred_layer.proj.bias"])
    for side in ("encoder", "decoder"):
        assert again[side].keys() == state[side].keys()
        for key in state[side]:
            np.testing.assert_array_equal(again[side][key], state[side][key], err_msg=key)
    module_prefixed = {side: {f"module.{k}": v for k, v in s.items()} for side, s in state.items()}
    jax.tree_util.tree_map(np.testing.assert_array_equal, hf_seq2seq.xlm_mt_to_params(
        module_prefixed, cfg, _shapes(model), "mt.pth"), back)
    del state["decoder"]["layer_norm15.1.weight"]
    with pytest.raises(UserError, match="layer_norm15.1.weight"):
        hf_seq2seq.xlm_mt_to_params(state, cfg, _shapes(model), "mt.pth")


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_parity_with_transformers_encoder_decoder():
    common = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=34, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    encoder = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(**common, type_vocab_size=1))
    decoder = transformers.XLMRobertaForCausalLM(transformers.XLMRobertaConfig(
        **{**common, "num_hidden_layers": 3}, type_vocab_size=3, is_decoder=True, add_cross_attention=True))
    hf = transformers.EncoderDecoderModel(encoder=encoder, decoder=decoder)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in hf.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    hf = hf.eval()
    cfg = hf_seq2seq.hf_seq2seq_config_to_config(hf.config.to_dict(), "hf")
    assert (cfg.decoder.num_layers, cfg.decoder.type_vocab_size, cfg.encoder.max_positions) == (3, 3, 32)
    model = EncoderDecoder(cfg)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = hf_seq2seq.hf_seq2seq_to_params(state, cfg, _shapes(model), "hf")

    src, src_mask, src_langs, tgt, tgt_mask, tgt_langs = _batch(cfg)
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(np.asarray(src)), attention_mask=torch.tensor(np.asarray(src_mask)),
                  decoder_input_ids=torch.tensor(np.asarray(tgt)),
                  decoder_attention_mask=torch.tensor(np.asarray(tgt_mask)),
                  decoder_token_type_ids=torch.tensor(np.asarray(tgt_langs))).logits.numpy()
    got = np.asarray(model.apply({"params": params}, src, src_mask, src_langs, tgt, tgt_mask, tgt_langs))
    real = np.asarray(tgt_mask, bool)
    np.testing.assert_allclose(got[real], want[real], atol=1e-4)

    # Back to HF: every tensor HF has (but the encoder's unused pooler) comes back exactly.
    exported = hf_seq2seq.params_to_hf_seq2seq(params, cfg)
    expected = {k for k in state if not k.startswith("encoder.pooler.")}
    assert set(exported) == expected
    for key in expected:
        np.testing.assert_array_equal(exported[key], state[key], err_msg=key)
    hf_cfg = hf_seq2seq.hf_seq2seq_config(cfg)
    assert hf_cfg["decoder"]["type_vocab_size"] == 3 and hf_cfg["decoder"]["add_cross_attention"]


def test_top_k_by_argmax_equals_lax_top_k():
    """Beam search's candidate selection (k argmax rounds, fast on XLA's CPU backend) is lax.top_k exactly:
    values, indices, ties (lower index first) and rows with -inf entries."""
    from xlm_jax.models.decoding import _top_k

    rng = np.random.default_rng(0)
    for trial in range(20):
        x = rng.integers(-3, 3, (3, 12)).astype(np.float32)  # many ties
        if trial % 4 == 0:
            x[:, :9] = -np.inf
        k = int(rng.integers(1, 7))
        want, got = jax.lax.top_k(jnp.asarray(x), k), _top_k(jnp.asarray(x), k)
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


def test_top_k_by_blocks_equals_lax_top_k():
    """The block path of `_top_k` (the best blocks by their maxima, then rounds over them) is lax.top_k exactly,
    with ties across and inside blocks, -inf entries and a last block padded."""
    from xlm_jax.models.decoding import _top_k

    rng = np.random.default_rng(1)
    for trial in range(30):
        n, k = int(rng.integers(9, 300)), int(rng.integers(1, 9))
        block = int(rng.integers(1, n // (k + 1) + 1))
        x = rng.integers(-4, 4, (3, n)).astype(np.float32)
        if trial % 3 == 0:
            x[:, : n // 2] = -np.inf
        assert -(-n // block) > k, "the block path runs"
        want, got = jax.lax.top_k(jnp.asarray(x), k), _top_k(jnp.asarray(x), k, block=block)
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))


def test_beam_search_candidates_by_blocks_equal_lax_top_k(monkeypatch):
    """Beam search gives the same hypotheses whether its candidates come from the block path of `_top_k` or from
    lax.top_k (the search as it was first written), on a model with tied words (equal logits every step) and EOS
    midway."""
    from xlm_jax.models import decoding

    cfg, model, params, (src, src_mask, src_langs, tgt_langs) = _decoding_setup()
    words = params["decoder"]["embeddings"]["word_embeddings"]["embedding"]
    params["decoder"]["embeddings"]["word_embeddings"]["embedding"] = words.at[38].set(words[39]).at[14].set(words[15])
    bias = params["decoder"]["lm_head"]["bias"]
    params["decoder"]["lm_head"]["bias"] = bias.at[38].set(bias[39]).at[14].set(bias[15])
    original = decoding._top_k
    outputs = []
    for top_k in (functools.partial(original, block=4), jax.lax.top_k):
        monkeypatch.setattr(decoding, "_top_k", top_k)
        jax.clear_caches()
        outputs.append(beam_search(model, params, src, src_mask, src_langs, tgt_langs, max_len=10, beam=3))
    for new, old in zip(*outputs):
        np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
    ended = np.asarray(outputs[0].hyp_lengths)
    assert ((ended > 2) & (ended < 10)).any(), "EOS midway"
    assert np.isin(np.asarray(outputs[0].hyp_tokens), [14, 15, 38, 39]).any(), "tied words are written"
