"""Pretraining batches (MLM / CLM streams, TLM pairs) as pure functions of (seed, step, process).

Design (see docs/data.md):
- Every step carries one batch per enabled objective (`BatchSource.batch(step)` → {"mlm": {...}, "tlm": {...}});
  the objective weights are loss weights for the trainer. A jitted step then sees the same static shapes every
  step, unlike XLM's alternation of objectives.
- Each row of the global batch draws its language, start offset / sentence and masking noise from a keyed
  generator on (seed, step, objective, global row), so process p builds rows [p·B/P, (p+1)·B/P) alone and the
  union over processes equals the single-process batch bit for bit; resuming at step k needs no iterator state.
- Monolingual data is read as XLM's stream: `</s> s0 </s> s1 </s> …` treated as a cycle, each row a
  contiguous window at a uniformly random offset. With bos_per_sequence (XLM-R / fairseq: TokenBlockDataset of
  tokens_per_sample - 1 tokens + PrependTokenDataset(<s>)) the window is T - 1 tokens after `<s>`.
- TLM rows are `</s> src </s></s> tgt </s>` (layout "xlm") or `<s> src </s></s> tgt </s>` ("xlmr"); positions
  restart at 0 at the target half. Pairs with a side longer than tlm_max_len (tokens, no specials), an empty
  side, or more than T tokens in all are dropped, as XLM's remove_long_sentences / remove_empty_sentences.
- With `pack` and tlm_batching "fixed" (token-budget batching already groups pairs by length into buckets, and
  is never packed), a TLM row holds several pairs of one language pair back to back, each
  its own segment (`segment_ids` 1, 2, ...; 0 on padding; `xlm_jax.data.packing`): row r draws its pair and
  `pack_segments` candidate sentences from its keyed generator and places each candidate that still fits, in
  draw order. Attention stays within a pair, positions restart at each half as above; the padding share of the
  default gettext TLM rows drops from ~60 % to a few percent (docs/data.md). XLM samples one language pair per
  TLM batch; a packed row keeps one pair per row, so the per-pair metrics by `example_lang` still hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from xlm_jax.data.corpus import PreprocessedCorpus, TokenArray
from xlm_jax.data.masking import MaskConfig, check_masking, frequency_weights, mask_tokens, noise_width, num_predictions
from xlm_jax.data.sampling import choose, row_uniforms, sampling_probs
from xlm_jax.core.errors import UserError, check_choice, check_range, unknown_name

BOS_ID, PAD_ID, EOS_ID = 0, 1, 2
# Fixed per objective (not its position in the config) so enabling another objective leaves a batch unchanged.
OBJECTIVE_KEYS = {"mlm": 0, "clm": 1, "tlm": 2}
_VALID_KEY = 3
_DRAW_SAMPLE, _DRAW_MASK, _DRAW_STEP, _DRAW_PACK = 0, 1, 2, 3
TLM_LAYOUTS = ("xlmr", "xlm")
TLM_BATCHING = ("fixed", "tokens")
TLM_SPECIALS = 4  # first token, two separators, final </s>
MIN_SEQ_LEN = 8  # shortest MLM / TLM row


def _pair_tuple(pair: str | Sequence[str], key: str = "para pair") -> tuple[str, str]:
    parts = tuple(pair.split("-")) if isinstance(pair, str) else tuple(pair)
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise UserError(f"{key} {pair!r}: expected two different languages like 'en-fr'")
    return parts


def check_recipe(cfg, prefix: str = "") -> None:
    """The ranges and choices of the batch-recipe fields that DataConfig and the pretraining config's data
    section share (`prefix` "data." there): objective names and weights, sampling exponents, masking, TLM layout
    and batching. Raises UserError naming the key, the value and what is valid."""
    for name, weight in cfg.objectives.items():
        if name not in OBJECTIVE_KEYS:
            raise unknown_name("objective", str(name), OBJECTIVE_KEYS, prefix=f"{prefix}objectives.")
        check_range(f"{prefix}objectives.{name}", weight, 0)
    if not any(weight > 0 for weight in cfg.objectives.values()):
        raise UserError(f"{prefix}objectives={dict(cfg.objectives)}: at least one objective needs a weight > 0 "
                        f"(objectives: {', '.join(OBJECTIVE_KEYS)})")
    for i, pair in enumerate(cfg.para_pairs):
        _pair_tuple(pair, f"{prefix}para_pairs[{i}]")
    for name in ("lang_alpha_mono", "lang_alpha_para"):
        check_range(f"{prefix}{name}", getattr(cfg, name), 0, 1)
    check_range(f"{prefix}sample_alpha", cfg.sample_alpha, 0)
    check_masking(cfg.mask_prob, cfg.mask_replace, cfg.mask_random, cfg.mask_keep, cfg.mask_count, prefix, "mask_count")
    check_choice(f"{prefix}tlm_layout", cfg.tlm_layout, TLM_LAYOUTS)
    check_range(f"{prefix}tlm_max_len", cfg.tlm_max_len, 1, integer=True)
    check_range(f"{prefix}tlm_seq_len", cfg.tlm_seq_len, MIN_SEQ_LEN, integer=True, also={0: "the MLM row length"})
    check_choice(f"{prefix}tlm_batching", cfg.tlm_batching, TLM_BATCHING)
    check_range(f"{prefix}tlm_tokens_per_batch", cfg.tlm_tokens_per_batch, 0, integer=True)
    check_range(f"{prefix}tlm_bucket_multiple", cfg.tlm_bucket_multiple, 1, integer=True)
    check_range(f"{prefix}pack_segments", cfg.pack_segments, 1, integer=True)


def check_tlm_budget(cfg, pair_len: int, prefix: str = "") -> None:
    """Token-budget TLM batches must hold at least one row of the longest TLM length (`pair_len`)."""
    tlm_on = cfg.objectives.get("tlm", 0) > 0
    if tlm_on and cfg.tlm_batching == "tokens" and cfg.tlm_tokens_per_batch < pair_len:
        raise UserError(f"{prefix}tlm_tokens_per_batch={cfg.tlm_tokens_per_batch}: must be >= {pair_len} (the TLM "
                        "row length: tlm_seq_len, or else the MLM seq_len) when tlm_batching='tokens'")


@dataclass(frozen=True)
class DataConfig:
    seq_len: int = 256
    batch_size: int = 32  # global rows per objective per step (fixed-shape mode)
    objectives: Mapping[str, float] = field(default_factory=lambda: {"mlm": 1.0})
    mono_langs: tuple[str, ...] = ()
    para_pairs: tuple[tuple[str, str], ...] = ()
    langs: tuple[str, ...] = ()  # language-id order; default: sorted union of mono_langs and pair languages
    lang_alpha_mono: float = 0.7  # XLM 17/100 models: 0.7; XLM-R: 0.3
    lang_alpha_para: float = 0.7
    mask_prob: float = 0.15
    mask_replace: float = 0.8
    mask_random: float = 0.1
    mask_keep: float = 0.1
    mask_count: str = "stochastic"  # "stochastic" (fairseq) | "ceil" (XLM sample_alpha)
    sample_alpha: float = 0.0
    bos_per_sequence: bool = True  # stream rows start with <s> (XLM-R); False: pure XLM stream windows
    tlm_layout: str = "xlmr"
    tlm_max_len: int = 100
    tlm_seq_len: int = 0  # TLM row length; 0 → seq_len (2·tlm_max_len + 4 = 204 fits every kept pair)
    tlm_random_order: bool = True  # swap src/tgt per row with probability 1/2
    tlm_batching: str = "fixed"  # "fixed": [batch_size, seq_len]; "tokens": bucketed by tlm_tokens_per_batch
    tlm_tokens_per_batch: int = 0
    tlm_bucket_multiple: int = 32
    # Packing (TLM pairs; MLM/CLM stream rows are always full): on by default, since it removes most TLM padding
    # and packed rows give the same per-pair losses and gradients; False = the papers' one pair per padded row.
    pack: bool = True
    pack_segments: int = 8  # the most pairs per packed row (candidates drawn per row)
    split: str = "train"
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "objectives", dict(self.objectives))
        object.__setattr__(self, "mono_langs", tuple(self.mono_langs))
        object.__setattr__(self, "para_pairs", tuple(_pair_tuple(p) for p in self.para_pairs))
        check_recipe(self)
        check_range("seq_len", self.seq_len, MIN_SEQ_LEN, integer=True)
        check_range("batch_size", self.batch_size, 1, integer=True)
        if ({"mlm", "clm"} & set(self.enabled)) and not self.mono_langs:
            raise UserError("mono_langs is empty but an MLM/CLM objective is enabled")
        if "tlm" in self.enabled and not self.para_pairs:
            raise UserError("para_pairs is empty but the TLM objective is enabled")
        check_tlm_budget(self, self.pair_len)
        used = set(self.mono_langs) | {lang for pair in self.para_pairs for lang in pair}
        if self.langs:
            missing = sorted(used - set(self.langs))
            if missing:
                raise UserError(f"langs={list(self.langs)} lacks {missing} used by mono_langs / para_pairs")
        else:
            object.__setattr__(self, "langs", tuple(sorted(used)))

    @property
    def pair_len(self) -> int:
        """The longest TLM row (fixed mode: every TLM row's length)."""
        return self.tlm_seq_len or self.seq_len

    @property
    def enabled(self) -> list[str]:
        return [name for name in OBJECTIVE_KEYS if self.objectives.get(name, 0.0) > 0]

    def _mask_kwargs(self) -> dict:
        return dict(
            mask_prob=self.mask_prob,
            mask_replace=self.mask_replace,
            mask_random=self.mask_random,
            mask_keep=self.mask_keep,
            count_rule=self.mask_count,
        )

    def mask_config(self, vocab_size: int, mask_id: int) -> MaskConfig:
        return MaskConfig(vocab_size=vocab_size, mask_id=mask_id, **self._mask_kwargs())



@dataclass(frozen=True)
class _Stream:
    """A language's sentences as the cyclic stream `</s> s0 </s> s1 … </s> s_{n-1}` (length tokens + n)."""

    tokens: TokenArray
    separators: np.ndarray  # stream index of the </s> before sentence i: offsets[i] + i

    @classmethod
    def of(cls, tokens: TokenArray) -> _Stream:
        offsets = np.asarray(tokens.offsets, dtype=np.int64)
        if len(offsets) < 2:
            raise UserError("a language has no sentences")
        return cls(tokens, offsets[:-1] + np.arange(len(offsets) - 1, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.separators[-1]) + 1 + int(self.tokens.offsets[-1] - self.tokens.offsets[-2])

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Token ids at stream indices (any shape, 0 <= index < len)."""
        sentence = np.searchsorted(self.separators, index, side="right") - 1
        is_sep = self.separators[sentence] == index
        token_index = np.where(is_sep, 0, index - sentence - 1)
        return np.where(is_sep, EOS_ID, np.asarray(self.tokens.ids[token_index.ravel()]).reshape(index.shape))


class BatchSource:
    """Deterministic batches for one JAX process: `batch(step)` and `valid_batches(lang)`."""

    def __init__(self, corpus: PreprocessedCorpus, cfg: DataConfig, process_index: int = 0, process_count: int = 1):
        if not 0 <= process_index < process_count:
            raise UserError(f"process_index={process_index} must be in [0, process_count={process_count})")
        if cfg.batch_size % process_count:
            raise UserError(
                f"batch_size={cfg.batch_size} (global) is not divisible by the process count {process_count}"
            )
        self.corpus, self.cfg = corpus, cfg
        self.process_index, self.process_count = process_index, process_count
        tok = corpus.manifest["tokenizer"]
        self.mask_cfg = cfg.mask_config(int(tok["vocab_size"]), int(tok["mask_id"]))
        self.lang_ids = {lang: i for i, lang in enumerate(cfg.langs)}
        enabled = cfg.enabled
        if {"mlm", "clm"} & set(enabled):
            have = corpus.mono_langs(cfg.split)
            missing = [lang for lang in cfg.mono_langs if lang not in have]
            if missing:
                raise UserError(
                    f"{corpus.dir}: no monolingual {cfg.split!r} data for {missing}; available: {have}"
                )
        if "tlm" in enabled:
            have_pairs = {tuple(sorted(p)) for p in corpus.para_pairs(cfg.split)}
            missing = ["-".join(p) for p in cfg.para_pairs if tuple(sorted(p)) not in have_pairs]
            if missing:
                names = ["-".join(p) for p in sorted(have_pairs)]
                raise UserError(f"{corpus.dir}: no parallel {cfg.split!r} data for {missing}; available: {names}")

    # ---- shared pieces -------------------------------------------------------------------------------
    def _rows(self, global_batch: int) -> np.ndarray:
        local = global_batch // self.process_count
        return np.arange(self.process_index * local, (self.process_index + 1) * local, dtype=np.int64)

    @cached_property
    def _streams(self) -> list[_Stream]:
        return [_Stream.of(self.corpus.mono(self.cfg.split, lang)) for lang in self.cfg.mono_langs]

    @cached_property
    def mono_probs(self) -> np.ndarray:
        # XLM weighs stream languages by stream length (tokens) and pairs by sentence count.
        return sampling_probs([len(s) for s in self._streams], self.cfg.lang_alpha_mono)

    @cached_property
    def token_weights(self) -> np.ndarray | None:
        """sample_alpha weights from the token counts of the training mono (else para) data."""
        if self.cfg.sample_alpha == 0:
            return None
        counts = np.zeros(self.mask_cfg.vocab_size, dtype=np.int64)
        sources = [s.tokens for s in self._streams] if self.cfg.mono_langs else [
            side for pair in self._pairs for side in pair.sides
        ]
        for tokens in sources:
            counts += np.bincount(np.asarray(tokens.ids), minlength=self.mask_cfg.vocab_size)[: len(counts)]
        return frequency_weights(counts, self.cfg.sample_alpha, self.mask_cfg)

    def _mask(self, batch: dict, key: Sequence[int], rows: np.ndarray) -> dict:
        seq_len = batch["input_ids"].shape[1]
        noise = row_uniforms(key, rows, noise_width(seq_len, self.cfg.mask_prob))
        batch.update(mask_tokens(batch["input_ids"], batch["attention_mask"], noise, self.mask_cfg, self.token_weights))
        return batch

    def num_predictions(self, seq_len: int | None = None) -> int:
        return num_predictions(seq_len or self.cfg.seq_len, self.cfg.mask_prob)

    # ---- public API ------------------------------------------------------------------------------------
    def batch(self, step: int) -> dict[str, dict[str, np.ndarray]]:
        """This process's rows of every enabled objective's batch for `step` (pure in seed, step, process)."""
        out = {}
        for name in self.cfg.enabled:
            if name == "tlm":
                out[name] = self.tlm_batch(step)
            else:
                out[name] = self.stream_batch(step, name)
        return out

    def stream_batch(self, step: int, objective: str = "mlm") -> dict[str, np.ndarray]:
        cfg, obj = self.cfg, OBJECTIVE_KEYS[objective]
        rows = self._rows(cfg.batch_size)
        u = row_uniforms((cfg.seed, step, obj, _DRAW_SAMPLE), rows, 2)
        lang = choose(self.mono_probs, u[:, 0])
        body = cfg.seq_len - int(cfg.bos_per_sequence)
        lengths = np.array([len(s) for s in self._streams], dtype=np.int64)
        starts = np.minimum((u[:, 1] * lengths[lang]).astype(np.int64), lengths[lang] - 1)
        window = np.arange(body, dtype=np.int64)[None, :]
        ids = np.empty((len(rows), body), dtype=np.int32)
        for li in np.unique(lang):
            sel = lang == li
            ids[sel] = self._streams[li].gather((starts[sel, None] + window) % lengths[li])
        if cfg.bos_per_sequence:
            ids = np.concatenate([np.full((len(rows), 1), BOS_ID, np.int32), ids], axis=1)
        lang_id = np.array([self.lang_ids[x] for x in cfg.mono_langs], dtype=np.int32)[lang]
        batch = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "positions": np.broadcast_to(np.arange(cfg.seq_len, dtype=np.int32), ids.shape).copy(),
            "langs": np.broadcast_to(lang_id[:, None], ids.shape).copy(),
            "example_lang": lang.astype(np.int32),
        }
        if objective == "clm":
            return batch
        return self._mask(batch, (cfg.seed, step, obj, _DRAW_MASK), rows)

    def valid_batches(
        self, lang: str, split: str = "valid", batch_size: int | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Held-out MLM batches: the stream `</s> s0 … </s>` cut into consecutive windows, masked with fixed
        noise (the same every evaluation); the last window and batch are padded (attention_mask 0, weight 0)."""
        cfg = self.cfg
        batch_size = batch_size or cfg.batch_size
        if batch_size % self.process_count:
            raise UserError(f"valid batch_size={batch_size} is not divisible by the process count {self.process_count}")
        if lang not in self.lang_ids:
            raise UserError(f"valid language {lang!r} is not in the run's languages {list(cfg.langs)}")
        stream = _Stream.of(self.corpus.mono(split, lang))
        total = len(stream) + 1  # the linear stream ends with </s>
        body = cfg.seq_len - int(cfg.bos_per_sequence)
        n_windows = math.ceil(total / body)
        lang_key = sum(ord(c) << (8 * i) for i, c in enumerate(lang[:7]))
        for first in range(0, n_windows, batch_size):
            rows = self._rows(batch_size)
            window = first + rows
            index = window[:, None] * body + np.arange(body)[None, :]
            real = index < total
            ids = np.where(real, stream.gather(np.minimum(index, len(stream) - 1)), PAD_ID)
            ids = np.where(index == len(stream), EOS_ID, ids).astype(np.int32)
            if cfg.bos_per_sequence:
                first_real = real[:, :1]
                ids = np.concatenate([np.where(first_real, BOS_ID, PAD_ID).astype(np.int32), ids], axis=1)
                real = np.concatenate([first_real, real], axis=1)
            attention = real.astype(np.int32)
            batch = {
                "input_ids": ids,
                "attention_mask": attention,
                "positions": (np.arange(cfg.seq_len, dtype=np.int32)[None, :] * attention).astype(np.int32),
                "langs": np.full(ids.shape, self.lang_ids[lang], np.int32),
                "example_lang": np.full(len(rows), cfg.mono_langs.index(lang) if lang in cfg.mono_langs else 0,
                                        np.int32),
            }
            yield self._mask(batch, (cfg.seed, _VALID_KEY, lang_key, 0), window)

    # ---- TLM ----------------------------------------------------------------------------------------------
    @cached_property
    def _pairs(self) -> list[_PairData]:
        pairs = []
        for l1, l2 in self.cfg.para_pairs:
            a, b = self.corpus.para(self.cfg.split, l1, l2)
            pairs.append(_PairData.of(a, b, self.cfg.tlm_max_len, self.cfg.pair_len))
            if not len(pairs[-1].valid):
                raise UserError(
                    f"{self.corpus.dir}: no {l1}-{l2} pair fits tlm_max_len={self.cfg.tlm_max_len} "
                    f"and a TLM row length of {self.cfg.pair_len}"
                )
        return pairs

    @cached_property
    def para_probs(self) -> np.ndarray:
        return sampling_probs([len(p.valid) for p in self._pairs], self.cfg.lang_alpha_para)

    def tlm_bucket_lengths(self) -> list[int]:
        """The static [B, T] shapes token-budget TLM batches can take (fixed mode: one shape)."""
        cfg = self.cfg
        longest, step = cfg.pair_len, cfg.tlm_bucket_multiple
        if cfg.tlm_batching == "fixed":
            return [longest]
        return sorted({min(longest, m) for m in range(step, longest + step, step)})

    def _bucket_rows(self, length: int) -> int:
        rows = self.cfg.tlm_tokens_per_batch // length
        return max(self.process_count, rows - rows % self.process_count)

    def tlm_batch(self, step: int) -> dict[str, np.ndarray]:
        cfg, obj = self.cfg, OBJECTIVE_KEYS["tlm"]
        if cfg.pack and cfg.tlm_batching == "fixed":
            return self._mask(self._packed_tlm(step), (cfg.seed, step, obj, _DRAW_MASK), self._rows(cfg.batch_size))
        if cfg.tlm_batching == "fixed":
            rows = self._rows(cfg.batch_size)
            u = row_uniforms((cfg.seed, step, obj, _DRAW_SAMPLE), rows, 3)
            pair = choose(self.para_probs, u[:, 0])
            valid_sizes = np.array([len(p.valid) for p in self._pairs])
            pick = np.minimum((u[:, 1] * valid_sizes[pair]).astype(np.int64), valid_sizes[pair] - 1)
            sentence = np.array([self._pairs[p].valid[i] for p, i in zip(pair, pick)], dtype=np.int64)
            seq_len = cfg.pair_len
        else:
            # One pair and one length bucket per step (shared by all processes), rows uniform within it; a
            # bucket is chosen in proportion to its number of batches so every pair is equally likely.
            u_step = row_uniforms((cfg.seed, step, obj, _DRAW_STEP), np.zeros(1, np.int64), 2)[0]
            p = int(choose(self.para_probs, u_step[:1])[0])
            lengths = self.tlm_bucket_lengths()
            members = self._pairs[p].buckets(lengths)
            batches = np.array([len(m) / self._bucket_rows(L) for m, L in zip(members, lengths)])
            j = int(choose(batches / batches.sum(), u_step[1:])[0])
            seq_len = lengths[j]
            rows = self._rows(self._bucket_rows(seq_len))
            u = row_uniforms((cfg.seed, step, obj, _DRAW_SAMPLE), rows, 3)
            pick = np.minimum((u[:, 1] * len(members[j])).astype(np.int64), len(members[j]) - 1)
            sentence = members[j][pick]
            pair = np.full(len(rows), p)
        swap = (u[:, 2] < 0.5) if cfg.tlm_random_order else np.zeros(len(rows), bool)
        batch = self._tlm_layout(pair, sentence, swap, seq_len)
        return self._mask(batch, (cfg.seed, step, obj, _DRAW_MASK), rows)

    def _packed_tlm(self, step: int) -> dict[str, np.ndarray]:
        """Packed TLM rows (see the module docstring): a pure function of (seed, step, global row)."""
        cfg, k = self.cfg, self.cfg.pack_segments
        rows = self._rows(cfg.batch_size)
        u = row_uniforms((cfg.seed, step, OBJECTIVE_KEYS["tlm"], _DRAW_PACK), rows, 1 + 2 * k)
        pair = choose(self.para_probs, u[:, 0])
        sizes = np.array([len(p.valid) for p in self._pairs])[pair][:, None]
        pick = np.minimum((u[:, 1 : 1 + k] * sizes).astype(np.int64), sizes - 1)
        swap = (u[:, 1 + k :] < 0.5) if cfg.tlm_random_order else np.zeros((len(rows), k), bool)
        seq_len = cfg.pair_len
        ids = np.full((len(rows), seq_len), PAD_ID, np.int32)
        positions, langs, segment_ids = (np.zeros((len(rows), seq_len), np.int32) for _ in range(3))
        for r in range(len(rows)):
            data, t, segment = self._pairs[pair[r]], 0, 0
            for c in range(k):
                if t + data.total[pick[r, c]] > seq_len:
                    continue  # this candidate does not fit what is left of the row: try the next one
                piece = self._tlm_example(pair[r], data.valid[pick[r, c]], swap[r, c])
                n = len(piece[0])
                segment += 1
                for out, value in zip((ids, positions, langs), piece):
                    out[r, t : t + n] = value
                segment_ids[r, t : t + n] = segment
                t += n
        return {
            "input_ids": ids,
            "attention_mask": (segment_ids > 0).astype(np.int32),
            "positions": positions,
            "langs": langs,
            "segment_ids": segment_ids,
            "example_lang": pair.astype(np.int32),
        }

    def _tlm_example(self, pair: int, sentence: int, swap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One TLM pair as (ids, positions, langs), each [a + b]: `first src </s></s> tgt </s>`, positions
        restarting at the target half, each half with its language id."""
        data = self._pairs[pair]
        l1, l2 = self.cfg.para_pairs[pair]
        src, tgt = data.sides[0].sentence(sentence), data.sides[1].sentence(sentence)
        src_lang, tgt_lang = self.lang_ids[l1], self.lang_ids[l2]
        if swap:
            src, tgt, src_lang, tgt_lang = tgt, src, tgt_lang, src_lang
        a, b = len(src) + 2, len(tgt) + 2  # each half with its own separators
        ids = np.empty(a + b, np.int32)
        ids[0] = EOS_ID if self.cfg.tlm_layout == "xlm" else BOS_ID
        ids[1 : a - 1] = src
        ids[a - 1 : a + 1] = EOS_ID
        ids[a + 1 : a + b - 1] = tgt
        ids[a + b - 1] = EOS_ID
        positions = np.concatenate([np.arange(a), np.arange(b)]).astype(np.int32)
        langs = np.concatenate([np.full(a, src_lang), np.full(b, tgt_lang)]).astype(np.int32)
        return ids, positions, langs

    def _tlm_layout(self, pair: np.ndarray, sentence: np.ndarray, swap: np.ndarray, seq_len: int) -> dict:
        n = len(pair)
        ids = np.full((n, seq_len), PAD_ID, np.int32)
        positions = np.zeros((n, seq_len), np.int32)
        langs = np.zeros((n, seq_len), np.int32)
        for r in range(n):
            piece = self._tlm_example(pair[r], sentence[r], swap[r])
            for out, value in zip((ids, positions, langs), piece):
                out[r, : len(value)] = value
        return {
            "input_ids": ids,
            "attention_mask": (ids != PAD_ID).astype(np.int32),
            "positions": positions,
            "langs": langs,
            "example_lang": pair.astype(np.int32),
        }


@dataclass(frozen=True)
class _PairData:
    sides: tuple[TokenArray, TokenArray]
    valid: np.ndarray  # aligned sentence indices kept after the length filters
    total: np.ndarray  # TLM row length of each valid pair

    @classmethod
    def of(cls, a: TokenArray, b: TokenArray, max_len: int, seq_len: int) -> _PairData:
        if len(a) != len(b):
            raise UserError(f"parallel sides have {len(a)} and {len(b)} sentences; they must be aligned")
        la, lb = a.lengths(), b.lengths()
        total = la + lb + TLM_SPECIALS
        keep = (la > 0) & (lb > 0) & (la <= max_len) & (lb <= max_len) & (total <= seq_len)
        return cls((a, b), np.nonzero(keep)[0], total[keep])

    def buckets(self, lengths: list[int]) -> list[np.ndarray]:
        which = np.searchsorted(np.asarray(lengths), self.total, side="left")
        return [self.valid[which == j] for j in range(len(lengths))]


class PhasedBatchSource:
    """The batches of a run in phases (a masking-rate / temperature / language / row-length schedule): update k's
    batch is `sources[i].batch(k)` for the phase i with starts[i] <= k < starts[i + 1], so batches stay a pure
    function of (seed, step, process) and a run resumed anywhere, across a phase boundary too, gets the same ones.

    `sources`: one `BatchSource` per phase (its DataConfig carries the phase's values; `langs` must be the same in
    all, so language ids do not move); `mono_langs`: the run's MLM / CLM languages (a superset of every phase's):
    each stream batch's `example_lang` is re-indexed into it, so the per-language metrics keep their names across
    phases. `eval_source` serves `valid_batches` (held-out batches do not change with the phase)."""

    def __init__(self, sources: Sequence[BatchSource], starts: Sequence[int], mono_langs: Sequence[str],
                 eval_source: BatchSource):
        if len(sources) != len(starts) or list(starts) != sorted(starts) or starts[0] != 0:
            raise ValueError(f"starts={list(starts)}: one increasing start per source, the first 0")
        self.sources, self.starts, self.eval_source = list(sources), list(starts), eval_source
        self.cfg = eval_source.cfg
        index = {lang: i for i, lang in enumerate(mono_langs)}
        self._remap = [np.array([index[lang] for lang in s.cfg.mono_langs], np.int32) for s in self.sources]

    def phase(self, step: int) -> int:
        """The phase of update `step` (0-based: the batch `batch(step)` builds)."""
        return int(np.searchsorted(self.starts, step, side="right")) - 1

    def batch(self, step: int) -> dict[str, dict[str, np.ndarray]]:
        i = self.phase(step)
        out = self.sources[i].batch(step)
        for name in ("mlm", "clm"):
            if name in out:
                out[name]["example_lang"] = self._remap[i][out[name]["example_lang"]]
        return out

    def valid_batches(self, lang: str, split: str = "valid", batch_size: int | None = None):
        return self.eval_source.valid_batches(lang, split=split, batch_size=batch_size)
