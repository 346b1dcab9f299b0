"""Greedy and beam-search decoding of an `EncoderDecoder`, batched and jit-compiled, with the KV cache.

Both follow facebookresearch/XLM (`TransformerModel.generate` / `generate_beam`):
- a target starts with the start token (XLM: `</s>`, which doubles as BOS; XLM-R: `<s>`) and every decoder
  position carries the target language;
- greedy: the argmax word each step; a finished row (EOS written) gets padding after; at `max_len` an
  unfinished row's last slot becomes EOS (its last word is dropped, as XLM does);
- beam search: the top 2·beam (beam, word) candidates per sentence each step, in score order: a candidate
  ending in EOS (or any candidate at the last step) becomes a finished hypothesis of length `cur_len` (its
  prefix, start token included, EOS excluded) scored `sum_logprob / cur_len ** length_penalty`; the first
  `beam` other candidates continue. A sentence keeps its `beam` best hypotheses; at the start of a step it is
  done (and ignores the step) when it has `beam` of them and either `early_stopping` or the step's best
  candidate cannot beat the worst (`worst >= best_sum_logprob / (max_len - 1) ** length_penalty`); decoding stops
  when every sentence is done.
  The output is each sentence's best hypothesis followed by EOS, padding after.
`max_len` counts every slot (start token and EOS included) and is static: each distinct value (and input shape)
compiles once, so callers bucket it (e.g. powers of two). Lengths returned include both delimiters (XLM's
`gen_len`).
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp

from xlm_jax.core.errors import UserError, check_range
from xlm_jax.models.config import ModelConfig
from xlm_jax.models.decoder import EncoderDecoder, reorder_cache

Array = jax.Array

_NEG = -1e9  # XLM's score of the initially inactive beams


def start_token(config: ModelConfig) -> int:
    """The decoder's first token: XLM sentences are `</s> w1 ... wn </s>` (EOS doubles as BOS); XLM-R ones
    `<s> w1 ... wn </s>` (Hugging Face's `decoder_start_token_id` = `<s>` for XLM-R encoder-decoders)."""
    return config.eos_token_id if config.family == "xlm" else config.bos_token_id


def check_decoding(config: ModelConfig, max_len, beam=1, length_penalty=1.0) -> None:
    """UserError unless beam is an integer >= 1, length_penalty a finite number and 2 <= max_len <= the decoder's
    positions (start token and EOS need two slots)."""
    check_range("beam", beam, 1, integer=True)
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real):
        raise UserError(f"length_penalty={length_penalty!r}: must be a number")
    check_range("length_penalty", length_penalty)
    check_range("max_len", max_len, 2, integer=True)
    if max_len > config.max_positions:
        raise UserError(f"max_len={max_len}: must be at most the decoder's {config.max_positions} positions")


def _prepare(model: EncoderDecoder, params: dict, src, src_mask, src_langs, tgt_langs, max_len: int, repeat: int):
    variables = {"params": params}
    memory = model.apply(variables, src, src_mask, src_langs, method=EncoderDecoder.encode)
    if repeat > 1:  # beam search: rows b * beam + k
        memory, src_mask = jnp.repeat(memory, repeat, axis=0), jnp.repeat(src_mask, repeat, axis=0)
        tgt_langs = jnp.repeat(tgt_langs, repeat, axis=0)
    cache = model.apply(variables, memory, src_mask, max_len, method=EncoderDecoder.init_cache)
    step = lambda tokens, cache: model.apply(  # noqa: E731
        variables, tokens, tgt_langs[:, None], cache, method=EncoderDecoder.decode_step)
    return cache, step


@functools.partial(jax.jit, static_argnames=("model", "max_len"))
def _greedy(model, params, src, src_mask, src_langs, tgt_langs, max_len):
    cfg = model.config.decoder
    batch = src.shape[0]
    eos, pad = cfg.eos_token_id, cfg.pad_token_id
    cache, step = _prepare(model, params, src, src_mask, src_langs, tgt_langs, max_len, 1)
    tokens = jnp.full((batch, max_len), pad, jnp.int32).at[:, 0].set(start_token(cfg))
    state = (tokens, jnp.ones(batch, jnp.int32), jnp.ones(batch, bool), cache, jnp.int32(1))

    def cond(state):
        return (state[4] < max_len) & state[2].any()

    def body(state):
        tokens, lengths, unfinished, cache, cur = state
        previous = jax.lax.dynamic_slice_in_dim(tokens, cur - 1, 1, axis=1)
        logits, cache = step(previous, cache)
        word = jnp.argmax(logits[:, 0], axis=-1).astype(jnp.int32)
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, jnp.where(unfinished, word, pad)[:, None], cur, axis=1)
        lengths = lengths + unfinished
        return tokens, lengths, unfinished & (word != eos), cache, cur + 1

    tokens, lengths, unfinished, _, _ = jax.lax.while_loop(cond, body, state)
    # A row still unfinished has run to max_len: its last slot becomes EOS.
    tokens = tokens.at[:, -1].set(jnp.where(unfinished, eos, tokens[:, -1]))
    return tokens, lengths


def greedy_decode(model: EncoderDecoder, params: dict, src: Array, src_mask: Array, src_langs: Array | None,
                  tgt_langs: Array, *, max_len: int) -> tuple[Array, Array]:
    """Greedy translation of a batch (XLM `generate`, no sampling).

    src, src_mask, src_langs: int [B, S] (src_langs may be None for models without language embeddings);
    tgt_langs: int [B], each row's target language. Returns tokens int32 [B, max_len] (`start w1 ... wn EOS`,
    padding after) and lengths int32 [B] (delimiters included). Raises UserError for a bad max_len."""
    check_decoding(model.config.decoder, max_len)
    return _greedy(model, params, src, src_mask, src_langs, jnp.asarray(tgt_langs, jnp.int32), max_len)


class BeamOutput(NamedTuple):
    """Beam-search results; hypotheses sorted best first by XLM's score."""

    tokens: Array  # int32 [B, max_len]: the best hypothesis, `start w1 ... wn EOS`, padding after
    lengths: Array  # int32 [B]: its length, delimiters included
    hyp_tokens: Array  # int32 [B, beam, max_len]: every kept hypothesis, same layout
    hyp_lengths: Array  # int32 [B, beam]
    hyp_scores: Array  # float32 [B, beam]: sum_logprob / (length without EOS) ** length_penalty


def _top_k_by_rounds(x: Array, k: int) -> tuple[Array, Array]:
    """`_top_k` by k rounds over the whole of x, each two plain reductions (the largest value, then the lowest index
    holding it), which XLA's CPU backend vectorises, unlike the (value, index) pair reduction of `jnp.argmax`."""
    n = x.shape[-1]
    positions = jnp.arange(n, dtype=jnp.int32)
    work = jnp.where(x == -jnp.inf, jnp.finfo(x.dtype).min, x)  # so that a picked entry (-inf) is never re-picked
    values, indices = [], []
    for _ in range(k):
        index = jnp.where(work == work.max(axis=-1, keepdims=True), positions, n).min(axis=-1)
        values.append(jnp.take_along_axis(x, index[:, None], axis=-1)[:, 0])
        indices.append(index)
        work = jnp.where(positions == index[:, None], -jnp.inf, work)
    return jnp.stack(values, -1), jnp.stack(indices, -1)


def _top_k(x: Array, k: int, block: int = 128) -> tuple[Array, Array]:
    """`jax.lax.top_k(x, k)` over the last axis of x float [B, N] (k <= N): the same values and indices, int32
    [B, k] (largest first, the lower index first among equal values; -inf entries rank as the dtype's lowest finite
    value, which log-probabilities never reach).

    One pass over x: split into blocks of `block` entries, the k best blocks by their maximum (ties: lower block
    first) hold the k best entries (each entry outside them is beaten by the k block maxima, ties included), then
    `_top_k_by_rounds` over those k * block entries. Inside the beam-search loop XLA's CPU backend ran `top_k`,
    and k `argmax` rounds over [B, beam x vocab], many times slower than this (docs/translation.md)."""
    batch, n = x.shape
    n_blocks = -(-n // block)
    if n_blocks <= k:
        return _top_k_by_rounds(x, k)
    blocks = jnp.pad(x, ((0, 0), (0, n_blocks * block - n)), constant_values=-jnp.inf).reshape(batch, n_blocks, block)
    block_max = jnp.where(blocks == -jnp.inf, jnp.finfo(x.dtype).min, blocks).max(axis=-1)
    # In index order, so that a lower position among the candidates is a lower index of x.
    top_blocks = jnp.sort(_top_k_by_rounds(block_max, k)[1], axis=-1)
    candidates = jnp.take_along_axis(blocks, top_blocks[..., None], axis=1).reshape(batch, k * block)
    values, position = _top_k_by_rounds(candidates, k)
    return values, jnp.take_along_axis(top_blocks, position // block, axis=-1) * block + position % block


@functools.partial(jax.jit, static_argnames=("model", "max_len", "beam", "length_penalty", "early_stopping"))
def _beam_search(model, params, src, src_mask, src_langs, tgt_langs, max_len, beam, length_penalty, early_stopping):
    cfg = model.config.decoder
    batch, k, vocab = src.shape[0], beam, cfg.vocab_size
    eos, pad = cfg.eos_token_id, cfg.pad_token_id
    cache, step = _prepare(model, params, src, src_mask, src_langs, tgt_langs, max_len, k)
    positions = jnp.arange(max_len, dtype=jnp.int32)
    state = dict(
        tokens=jnp.full((batch, k, max_len), pad, jnp.int32).at[:, :, 0].set(start_token(cfg)),
        scores=jnp.zeros((batch, k), jnp.float32).at[:, 1:].set(_NEG),
        hyp_tokens=jnp.full((batch, k, max_len), pad, jnp.int32),
        hyp_lengths=jnp.zeros((batch, k), jnp.int32),
        hyp_scores=jnp.full((batch, k), -jnp.inf, jnp.float32),
        hyp_count=jnp.zeros(batch, jnp.int32),
        done=jnp.zeros(batch, bool),
        cache=cache,
        cur=jnp.int32(1),
    )

    def cond(s):
        return (s["cur"] < max_len) & ~s["done"].all()

    def body(s):
        """One step at slot `cur`. State (K = beam): tokens int32 [B, K, max_len] (the live beams, padding from
        `cur` on), scores float32 [B, K] (their sum_logprob), hyp_tokens / hyp_lengths / hyp_scores [B, K, max_len]
        / [B, K] / [B, K] (the kept hypotheses, best first), hyp_count int32 [B], done bool [B], the decoder cache
        (rows b * K + k); every row's previous token is decoded, the 2K best (beam, word) candidates per sentence
        are picked (`_top_k` over [B, K x vocab]), finishing ones become hypotheses and the first K live ones the
        next beams, whose cache rows are gathered."""
        cur, done = s["cur"], s["done"]
        previous = jax.lax.dynamic_index_in_dim(s["tokens"], cur - 1, axis=2).reshape(batch * k, 1)
        logits, cache = step(previous, s["cache"])
        logprobs = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32), axis=-1).reshape(batch, k, vocab)
        totals = (logprobs + s["scores"][..., None]).reshape(batch, k * vocab)
        cand_scores, cand = _top_k(totals, 2 * k)  # [B, 2K], best first
        cand_beam, cand_word = cand // vocab, (cand % vocab).astype(jnp.int32)
        # XLM first asks whether the sentence is done, given its hypotheses so far and this step's best candidate;
        # a done sentence ignores the step.
        full = s["hyp_count"] >= k
        if not early_stopping:
            best = cand_scores[:, 0] / float(max_len - 1) ** length_penalty  # XLM: max_len - 1, no BOS
            full = full & (s["hyp_scores"][:, -1] >= best)
        done = done | full
        finishing = (cand_word == eos) | (cur + 1 == max_len)
        live = ~finishing
        # XLM walks the candidates best first until `beam` live ones are taken: a finishing candidate counts
        # only if fewer than `beam` live ones come before it.
        live_before = jnp.cumsum(live, axis=1) - live
        added = finishing & (live_before < k) & ~done[:, None]
        length = cur.astype(jnp.float32)
        new_scores = jnp.where(added, cand_scores / length**length_penalty, -jnp.inf)
        prefixes = jnp.take_along_axis(s["tokens"], cand_beam[..., None], axis=1)  # slots >= cur are padding
        all_scores = jnp.concatenate([s["hyp_scores"], new_scores], axis=1)
        # Keeping the best `beam` of old and new is what XLM's insert-then-drop-the-worst amounts to; top_k
        # prefers the earlier entry on ties, as XLM keeps an old hypothesis against an equal new one.
        hyp_scores, keep = jax.lax.top_k(all_scores, k)
        hyp_tokens = jnp.take_along_axis(jnp.concatenate([s["hyp_tokens"], prefixes], axis=1), keep[..., None], 1)
        hyp_lengths = jnp.take_along_axis(
            jnp.concatenate([s["hyp_lengths"], jnp.full_like(new_scores, cur, dtype=jnp.int32)], axis=1), keep, 1)
        hyp_count = jnp.minimum(s["hyp_count"] + added.sum(axis=1), k)
        # The first `beam` live candidates continue (a done sentence continues with padding, as in XLM).
        rank = jnp.where(live, jnp.cumsum(live, axis=1) - 1, 2 * k + jnp.arange(2 * k))
        chosen = jnp.argsort(rank, axis=1)[:, :k]
        next_scores = jnp.where(done[:, None], 0.0, jnp.take_along_axis(cand_scores, chosen, 1))
        next_beam = jnp.where(done[:, None], 0, jnp.take_along_axis(cand_beam, chosen, 1))
        next_word = jnp.where(done[:, None], pad, jnp.take_along_axis(cand_word, chosen, 1))
        tokens = jnp.take_along_axis(s["tokens"], next_beam[..., None], axis=1)
        tokens = jnp.where(positions == cur, next_word[..., None], tokens)
        rows = (jnp.arange(batch)[:, None] * k + next_beam).reshape(-1)
        return dict(tokens=tokens, scores=next_scores, hyp_tokens=hyp_tokens, hyp_lengths=hyp_lengths,
                    hyp_scores=hyp_scores, hyp_count=hyp_count, done=done,
                    cache=reorder_cache(cache, rows), cur=cur + 1)

    s = jax.lax.while_loop(cond, body, state)
    # Every sentence ends with `beam` hypotheses: done ones have them, and the last step finishes all candidates.
    hyp_tokens = jnp.where(positions == s["hyp_lengths"][..., None], eos, s["hyp_tokens"])
    hyp_lengths = s["hyp_lengths"] + 1
    return BeamOutput(hyp_tokens[:, 0], hyp_lengths[:, 0], hyp_tokens, hyp_lengths, s["hyp_scores"])


def beam_search(model: EncoderDecoder, params: dict, src: Array, src_mask: Array, src_langs: Array | None,
                tgt_langs: Array, *, max_len: int, beam: int, length_penalty: float = 1.0,
                early_stopping: bool = False) -> BeamOutput:
    """XLM's beam search (`generate_beam`; defaults as XLM's `--length_penalty 1 --early_stopping false`).

    Inputs as `greedy_decode`. Returns a `BeamOutput`. Raises UserError unless beam >= 1, length_penalty is a
    number and max_len fits the delimiters and the decoder's positions. Beam 1 with early stopping is greedy."""
    check_decoding(model.config.decoder, max_len, beam, length_penalty)
    return _beam_search(model, params, src, src_mask, src_langs, jnp.asarray(tgt_langs, jnp.int32), max_len,
                        beam, float(length_penalty), bool(early_stopping))
