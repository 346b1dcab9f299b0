"""BERT/XLM masked-language-model masking, vectorised over a batch, with fixed-size prediction arrays.

Which positions are predicted: every row predicts an exact number of its candidate tokens (ids that are not
specials 0–3, not `<mask>`, not padding), chosen without replacement:
- count_rule "stochastic" (default, fairseq `MaskTokensDataset`): int(mask_prob · n + U[0, 1)) tokens, so the
  expected fraction is exactly mask_prob and the count varies by at most one;
- count_rule "ceil" (XLM with `sample_alpha`): exactly ceil(mask_prob · n) tokens.
XLM without sample_alpha draws an independent Bernoulli per position instead; an exact count per row keeps
the prediction arrays small and static (P below) without ever truncating, which is why we use it.

With token weights (XLM's `sample_alpha`: weight ∝ count^-alpha, so rare words are masked more) the
positions are drawn by weighted sampling without replacement (Efraimidis–Spirakis keys log(u)/w: the same
distribution as XLM's successive `np.random.choice(..., replace=False, p=...)`).

Of the chosen positions independently: `mask_replace` → `<mask>`, `mask_random` → a uniform random
non-special id (4 .. V-1, never `<mask>`), the rest keep their token.

P = num_predictions(T, mask_prob) = ceil(mask_prob · T): both count rules give at most ceil(mask_prob · n)
≤ P predictions for a row with n ≤ T candidates, so the arrays never truncate. mask_prob · n is rounded to 9
decimals first so that 0.15 · 20 counts as 3, not 3.0000000000000004.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xlm_jax.core.errors import UserError, check_choice, check_range

N_SPECIAL = 4  # <s>=0, <pad>=1, </s>=2, <unk>=3 are never predicted
PAD_ID = 1
COUNT_RULES = ("stochastic", "ceil")


@dataclass(frozen=True)
class MaskConfig:
    vocab_size: int
    mask_id: int
    mask_prob: float = 0.15
    mask_replace: float = 0.8
    mask_random: float = 0.1
    mask_keep: float = 0.1
    count_rule: str = "stochastic"

    def __post_init__(self):
        check_masking(self.mask_prob, self.mask_replace, self.mask_random, self.mask_keep, self.count_rule)
        if not N_SPECIAL <= self.mask_id < self.vocab_size or self.vocab_size < N_SPECIAL + 2:
            raise UserError(f"mask_id={self.mask_id}, vocab_size={self.vocab_size}: need 4 <= mask_id < vocab_size")


def check_masking(mask_prob: float, replace: float, random: float, keep: float, count_rule: str,
                  prefix: str = "", count_key: str = "count_rule") -> None:
    """The masking recipe's ranges (shared by MaskConfig and the data configs, whose keys carry `prefix`)."""
    check_range(f"{prefix}mask_prob", mask_prob, 0, 1, low_open=True)
    split = {"mask_replace": replace, "mask_random": random, "mask_keep": keep}
    for name, value in split.items():
        check_range(f"{prefix}{name}", value, 0, 1)
    if abs(sum(split.values()) - 1.0) > 1e-6:
        shown = ", ".join(f"{prefix}{k}={v}" for k, v in split.items())
        raise UserError(f"{shown}: the three shares of the predicted tokens must sum to 1")
    check_choice(f"{prefix}{count_key}", count_rule, COUNT_RULES)


def _expected(mask_prob: float, n):
    return np.round(mask_prob * np.asarray(n, dtype=np.float64), 9)


def num_predictions(seq_len: int, mask_prob: float) -> int:
    """P, the static width of mlm_positions / mlm_targets / mlm_weights for sequences of seq_len tokens."""
    return max(1, math.ceil(float(_expected(mask_prob, seq_len))))


def noise_width(seq_len: int, mask_prob: float) -> int:
    """Uniforms mask_tokens consumes per row: T selection keys, 1 count rounding, P kinds, P random ids."""
    return seq_len + 1 + 2 * num_predictions(seq_len, mask_prob)


def frequency_weights(counts: np.ndarray, sample_alpha: float, cfg: MaskConfig) -> np.ndarray:
    """XLM's mask_scores: max(count, 1)^-alpha per vocabulary id; 0 for specials, <mask> and unseen ids."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (cfg.vocab_size,):
        raise UserError(f"token counts have shape {counts.shape}, expected ({cfg.vocab_size},)")
    weights = np.maximum(counts, 1.0) ** -float(sample_alpha)
    weights[:N_SPECIAL] = 0.0
    weights[cfg.mask_id] = 0.0
    weights[counts == 0] = 0.0
    return weights


def mask_tokens(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    noise: np.ndarray,
    cfg: MaskConfig,
    token_weights: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Mask a [B, T] batch given per-row uniforms `noise` [B, noise_width(T)] (the only randomness).

    Returns input_ids (masked copy), mlm_positions / mlm_targets (int32 [B, P], sorted by position; unused
    slots hold position 0 and target <pad>) and mlm_weights (float32 [B, P], 1 for a real prediction).
    """
    ids = np.asarray(input_ids)
    batch, seq_len = ids.shape
    width = num_predictions(seq_len, cfg.mask_prob)
    if noise.shape != (batch, noise_width(seq_len, cfg.mask_prob)):
        raise ValueError(f"noise has shape {noise.shape}, expected {(batch, noise_width(seq_len, cfg.mask_prob))}")
    u_select = noise[:, :seq_len]
    u_count = noise[:, seq_len]
    u_kind = noise[:, seq_len + 1 : seq_len + 1 + width]
    u_token = noise[:, seq_len + 1 + width :]

    candidate = (ids >= N_SPECIAL) & (ids != cfg.mask_id) & (np.asarray(attention_mask) > 0)
    if token_weights is None:
        keys = np.where(candidate, u_select, -1.0)  # u in [0, 1): every candidate outranks every non-candidate
    else:
        w = np.where(candidate, token_weights[ids], 0.0)
        candidate = w > 0
        with np.errstate(divide="ignore"):
            keys = np.where(candidate, np.log1p(-u_select) / np.where(candidate, w, 1.0), -np.inf)
    n_candidates = candidate.sum(axis=1)
    expected = _expected(cfg.mask_prob, n_candidates)
    if cfg.count_rule == "ceil":
        count = np.ceil(expected)
    else:
        count = np.floor(expected + u_count)
    count = np.minimum(count.astype(np.int64), np.minimum(n_candidates, width))

    if width < seq_len:
        top = np.argpartition(-keys, width - 1, axis=1)[:, :width]
    else:
        top = np.broadcast_to(np.arange(seq_len), (batch, seq_len))[:, :width]
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1, kind="stable")
    ranked = np.take_along_axis(top, order, axis=1)
    used = np.arange(width)[None, :] < count[:, None]
    positions = np.sort(np.where(used, ranked, seq_len), axis=1)  # unused slots sort to the end
    used = positions < seq_len
    positions = np.where(used, positions, 0)

    targets = np.where(used, np.take_along_axis(ids, positions, axis=1), PAD_ID)
    n_random_ids = cfg.vocab_size - N_SPECIAL - 1
    random_ids = N_SPECIAL + np.minimum((u_token * n_random_ids).astype(np.int64), n_random_ids - 1)
    random_ids += random_ids >= cfg.mask_id  # skip <mask>
    replacement = np.where(
        u_kind < cfg.mask_replace,
        cfg.mask_id,
        np.where(u_kind < cfg.mask_replace + cfg.mask_random, random_ids, targets),
    )
    masked = ids.astype(np.int32, copy=True)
    rows, slots = np.nonzero(used)
    masked[rows, positions[rows, slots]] = replacement[rows, slots]
    return {
        "input_ids": masked,
        "mlm_positions": positions.astype(np.int32),
        "mlm_targets": targets.astype(np.int32),
        "mlm_weights": used.astype(np.float32),
    }
