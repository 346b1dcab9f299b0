"""AdamW with a weight-decay mask, global-norm clipping and the learning-rate schedules of XLM and XLM-R.

Schedules (the argument is the number of updates already applied, so update k uses `schedule(k)` and the
first update uses `warmup_init_lr`, as fairseq and XLM do):

- "linear" (XLM-R / fairseq `polynomial_decay` with power 1): linear warm-up from `warmup_init_lr` to `lr`
  over `warmup_steps`, then linear decay to `end_lr` at `total_steps`;
- "polynomial": the same with `(1 - progress) ** power` (fairseq's polynomial_decay, `power` = its --power);
- "inverse_sqrt" (XLM's `adam_inverse_sqrt`): linear warm-up from `warmup_init_lr`, then `lr * sqrt(warmup / k)`;
- "cosine": linear warm-up, then half a cosine from `lr` to `end_lr` at `total_steps`;
- "constant": linear warm-up, then `lr`;
- "wsd" (warmup–stable–decay, the trapezoid of ModernBERT / mmBERT): linear warm-up, `lr` held until the last
  `decay_steps` updates, then a decay to `end_lr` shaped by `decay_shape` ("linear", "cosine"); built from optax's
  own schedules (`optax.join_schedules` of `linear_schedule`, `constant_schedule` and `linear_schedule` /
  `cosine_decay_schedule`).

Weight decay is decoupled (AdamW, scaled by the learning rate as in PyTorch). Biases and LayerNorm parameters
are never decayed; token / language / type embeddings are decayed when `decay_embeddings`, the learned position
table when `decay_position_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from xlm_jax.core.errors import UserError, check_choice, check_fields, check_range

SCHEDULES = ("linear", "polynomial", "inverse_sqrt", "cosine", "constant", "wsd")
DECAY_SHAPES = ("linear", "cosine")


@dataclass(frozen=True)
class OptimizerConfig:
    lr: float = 5e-4
    schedule: str = "linear"  # linear (XLM-R) | polynomial | inverse_sqrt (XLM) | cosine | constant | wsd
    warmup_steps: int = 1000
    warmup_init_lr: float = 0.0  # XLM's adam_inverse_sqrt uses 1e-7
    end_lr: float = 0.0
    power: float = 1.0  # polynomial decay exponent
    decay_steps: int = 0  # wsd: the last N updates decay (the rest after warm-up is stable); other schedules: 0
    decay_shape: str = "linear"  # wsd: linear | cosine
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.01
    clip_norm: float = 1.0  # 0 = off
    decay_embeddings: bool = True
    decay_position_tables: bool = False

    def __post_init__(self):
        check_fields(self, "optimizer.")
        check_choice("optimizer.schedule", self.schedule, SCHEDULES)
        check_adamw(self, "optimizer.")
        check_range("optimizer.warmup_steps", self.warmup_steps, 0, integer=True)
        if self.schedule == "inverse_sqrt" and self.warmup_steps < 1:
            raise UserError("optimizer.warmup_steps must be >= 1 for schedule=inverse_sqrt (lr * sqrt(warmup / step))")
        for name in ("warmup_init_lr", "end_lr"):
            check_range(f"optimizer.{name}", getattr(self, name), 0)
        check_range("optimizer.power", self.power, 0, low_open=True)
        check_choice("optimizer.decay_shape", self.decay_shape, DECAY_SHAPES)
        if self.schedule == "wsd":
            check_range("optimizer.decay_steps", self.decay_steps, 1, integer=True)
        elif self.decay_steps:
            raise UserError(f"optimizer.decay_steps={self.decay_steps}: only schedule=wsd has a separate decay "
                            f"(schedule={self.schedule!r} decays over all of train.steps); leave it 0")

    def check_steps(self, total_steps: int, key: str = "train.steps") -> None:
        """A decaying schedule needs more steps than its warm-up (UserError naming a warm-up that would fit:
        a tenth of the steps, as fine-tuning's default warmup_ratio)."""
        fits = total_steps // 10
        if self.schedule == "wsd":
            fits = max(min(fits, total_steps - self.decay_steps), 0)
        if self.schedule not in ("inverse_sqrt", "constant") and total_steps <= self.warmup_steps:
            raise UserError(f"{key}={total_steps} must exceed optimizer.warmup_steps={self.warmup_steps} for "
                            f"schedule={self.schedule!r}: lower the warm-up (e.g. optimizer.warmup_steps={fits}) "
                            f"or raise the steps")
        if self.schedule == "wsd" and self.warmup_steps + self.decay_steps > total_steps:
            raise UserError(f"optimizer.warmup_steps={self.warmup_steps} + optimizer.decay_steps="
                            f"{self.decay_steps} exceed {key}={total_steps}: warm-up and decay must fit in the run "
                            f"(e.g. optimizer.warmup_steps={fits}, or lower optimizer.decay_steps)")


def check_adamw(cfg: Any, prefix: str = "") -> None:
    """AdamW's ranges, for OptimizerConfig and the fine-tuning config (whose keys have no prefix): lr > 0,
    b1 / b2 in [0, 1), eps > 0, weight_decay >= 0, clip_norm >= 0 (0 = off); every value finite."""
    check_range(f"{prefix}lr", cfg.lr, 0, low_open=True)
    for name in ("b1", "b2"):
        check_range(f"{prefix}{name}", getattr(cfg, name), 0, 1, high_open=True)
    check_range(f"{prefix}eps", cfg.eps, 0, low_open=True)
    check_range(f"{prefix}weight_decay", cfg.weight_decay, 0)
    check_range(f"{prefix}clip_norm", cfg.clip_norm, 0)


def make_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """The learning rate as a function of the number of updates done (jit-friendly)."""
    warmup = cfg.warmup_steps
    cfg.check_steps(total_steps)
    if cfg.schedule == "wsd":
        return wsd_schedule(cfg, total_steps)
    decay_steps = max(total_steps - warmup, 1)

    def after_warmup(step):
        if cfg.schedule in ("linear", "polynomial"):
            power = 1.0 if cfg.schedule == "linear" else cfg.power
            remaining = 1.0 - jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
            return (cfg.lr - cfg.end_lr) * remaining**power + cfg.end_lr
        if cfg.schedule == "cosine":
            progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
            return cfg.end_lr + 0.5 * (cfg.lr - cfg.end_lr) * (1.0 + jnp.cos(jnp.pi * progress))
        if cfg.schedule == "inverse_sqrt":
            return cfg.lr * jnp.sqrt(warmup / jnp.maximum(step, 1.0))
        return jnp.full_like(step, cfg.lr)

    def schedule(count):
        step = jnp.asarray(count, jnp.float32)
        if warmup == 0:
            return after_warmup(step)
        warm = cfg.warmup_init_lr + (cfg.lr - cfg.warmup_init_lr) * step / warmup
        return jnp.where(step < warmup, warm, after_warmup(step))

    return schedule


def wsd_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Warmup–stable–decay from optax's schedules: `warmup_init_lr` -> `lr` linearly over `warmup_steps`, `lr`
    until `total_steps - decay_steps`, then `lr` -> `end_lr` over `decay_steps` (linear or cosine), `end_lr`
    after. Source: the trapezoidal schedule of ModernBERT (Warner et al. 2024) and mmBERT (Marone et al. 2025)."""
    stable_end = total_steps - cfg.decay_steps
    if cfg.decay_shape == "cosine":
        decay = optax.cosine_decay_schedule(cfg.lr, cfg.decay_steps, alpha=cfg.end_lr / cfg.lr)
    else:
        decay = optax.linear_schedule(cfg.lr, cfg.end_lr, cfg.decay_steps)
    parts = [optax.constant_schedule(cfg.lr), decay]
    boundaries = [stable_end]
    if cfg.warmup_steps:
        parts.insert(0, optax.linear_schedule(cfg.warmup_init_lr, cfg.lr, cfg.warmup_steps))
        boundaries.insert(0, cfg.warmup_steps)
    return optax.join_schedules(parts, boundaries)


def _key(entry) -> str:
    return str(getattr(entry, "key", getattr(entry, "idx", entry)))


def decays(path: tuple[str, ...], cfg: OptimizerConfig) -> bool:
    """Whether the parameter at `path` (module names ..., leaf name) gets weight decay."""
    leaf = path[-1]
    if leaf == "bias" or leaf == "scale":  # biases and LayerNorm (only LayerNorm has "scale")
        return False
    if any("norm" in name for name in path[:-1]):  # LayerNorm modules: layer_norm, attention_norm, final_norm ...
        return False
    if leaf == "embedding":
        if "position_embeddings" in path:
            return cfg.decay_position_tables
        return cfg.decay_embeddings
    return True


def decay_mask(params: Any, cfg: OptimizerConfig) -> Any:
    """A bool per leaf of `params` (plain or boxed): True where weight decay applies."""
    def one(path, _):
        # Boxed (nn.Partitioned) leaves add a trailing attribute entry ("value") that is not a parameter name.
        names = tuple(_key(e) for e in path if not isinstance(e, jax.tree_util.GetAttrKey))
        return decays(names, cfg)

    return jax.tree_util.tree_map_with_path(one, params)


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm (if clip_norm) -> AdamW with masked decoupled weight decay and the schedule.

    The chain is optax.adamw's own (scale_by_adam -> add_decayed_weights -> scale_by_learning_rate), with the
    learning rate injected as a hyperparameter so that the state records the rate of the last update
    (`current_lr(opt_state)`) and the train step can report it without knowing the schedule.
    """
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts += [
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay, mask=lambda params: decay_mask(params, cfg)),
        optax.inject_hyperparams(optax.scale_by_learning_rate)(learning_rate=make_schedule(cfg, total_steps)),
    ]
    return optax.chain(*parts)


def current_lr(opt_state: Any) -> jax.Array | None:
    """The learning rate the last update used (from `make_optimizer`'s injected hyperparameter), else None."""
    found = [
        node.hyperparams["learning_rate"]
        for node in jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "hyperparams"))
        if hasattr(node, "hyperparams") and "learning_rate" in node.hyperparams
    ]
    return found[0] if len(found) == 1 else None
