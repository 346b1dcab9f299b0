"""Schedules against their closed forms (fairseq polynomial_decay, XLM adam_inverse_sqrt, cosine), the
weight-decay mask, decoupled decay and clipping."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from xlm_jax.models.config import get_model_config
from xlm_jax.core.errors import UserError
from xlm_jax.training.optim import OptimizerConfig, current_lr, decay_mask, make_optimizer, make_schedule
from xlm_jax.training.step import boxed_abstract_params

TOTAL = 100


def values(cfg, steps=range(0, TOTAL + 20)):
    schedule = make_schedule(cfg, TOTAL)
    return np.array([float(schedule(k)) for k in steps])


def fairseq_polynomial_decay(k, lr, warmup, end_lr, power, total):
    # fairseq/optim/lr_scheduler/polynomial_decay_schedule.py: get_lr for num_updates = k
    if warmup > 0 and k <= warmup:
        return (k / warmup) * lr
    if k >= total:
        return end_lr
    pct_remaining = 1 - (k - warmup) / (total - warmup)
    return (lr - end_lr) * pct_remaining**power + end_lr


def xlm_inverse_sqrt(k, lr, warmup, warmup_init_lr):
    # XLM src/optim.py AdamInverseSqrtWithWarmup.get_lr_for_step
    if k < warmup:
        return warmup_init_lr + k * (lr - warmup_init_lr) / warmup
    return lr * warmup**0.5 * k**-0.5


@pytest.mark.parametrize("schedule,power", [("linear", 1.0), ("polynomial", 2.0), ("polynomial", 0.5)])
def test_polynomial_decay_matches_fairseq(schedule, power):
    cfg = OptimizerConfig(lr=3e-4, schedule=schedule, warmup_steps=10, end_lr=1e-5, power=power)
    expect = [fairseq_polynomial_decay(k, 3e-4, 10, 1e-5, power if schedule == "polynomial" else 1.0, TOTAL)
              for k in range(TOTAL + 20)]
    np.testing.assert_allclose(values(cfg), expect, rtol=1e-5, atol=1e-10)
    assert values(cfg)[0] == 0.0 and math.isclose(values(cfg)[10], 3e-4, rel_tol=1e-6)


def test_inverse_sqrt_matches_xlm():
    cfg = OptimizerConfig(lr=1e-4, schedule="inverse_sqrt", warmup_steps=4000, warmup_init_lr=1e-7)
    steps = [0, 1, 100, 3999, 4000, 4001, 10000, 16000, 100000]
    expect = [xlm_inverse_sqrt(k, 1e-4, 4000, 1e-7) for k in steps]
    np.testing.assert_allclose(values(cfg, steps), expect, rtol=1e-5)
    assert math.isclose(values(cfg, [16000])[0], 1e-4 * math.sqrt(4000 / 16000), rel_tol=1e-6)


def test_cosine_and_constant():
    cfg = OptimizerConfig(lr=1e-3, schedule="cosine", warmup_steps=20, warmup_init_lr=1e-5, end_lr=1e-4)
    got = values(cfg)
    for k in range(TOTAL + 20):
        if k < 20:
            expect = 1e-5 + (1e-3 - 1e-5) * k / 20
        else:
            progress = min((k - 20) / (TOTAL - 20), 1.0)
            expect = 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * progress))
        assert math.isclose(got[k], expect, rel_tol=1e-5), k
    constant = values(OptimizerConfig(lr=2e-4, schedule="constant", warmup_steps=5))
    np.testing.assert_allclose(constant[5:], 2e-4, rtol=1e-6)
    np.testing.assert_allclose(constant[:5], 2e-4 * np.arange(5) / 5, rtol=1e-6)


def test_config_validation():
    with pytest.raises(UserError, match="schedule='cosin'"):
        OptimizerConfig(schedule="cosin")
    with pytest.raises(UserError, match="inverse_sqrt"):
        OptimizerConfig(schedule="inverse_sqrt", warmup_steps=0)
    with pytest.raises(UserError, match="must exceed"):
        make_schedule(OptimizerConfig(warmup_steps=100), total_steps=50)


def decayed_paths(cfg):
    params = nn.unbox(boxed_abstract_params(get_model_config("xlmr_tiny")))
    mask = decay_mask(params, cfg)
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    return {"/".join(k.key for k in path) for path, on in flat if on}


def test_decay_mask_selects_exactly_matrices_and_configured_tables():
    layers = {f"encoder/layers/{m}/kernel" for m in ("attention/query", "attention/key", "attention/value",
                                                       "attention/out", "mlp/wi", "mlp/wo")}
    base = layers | {"lm_head/dense/kernel"}
    tables = {"encoder/embeddings/word_embeddings/embedding", "encoder/embeddings/token_type_embeddings/embedding"}
    assert decayed_paths(OptimizerConfig()) == base | tables
    assert decayed_paths(OptimizerConfig(decay_embeddings=False)) == base
    assert decayed_paths(OptimizerConfig(decay_embeddings=False, decay_position_tables=True)) == base | {
        "encoder/embeddings/position_embeddings/embedding"}
    # Boxed trees give the same mask (the Partitioned wrapper is not a path component).
    boxed_mask = decay_mask(boxed_abstract_params(get_model_config("xlmr_tiny")), OptimizerConfig())
    assert sum(jax.tree.leaves(boxed_mask)) == len(base | tables)


def test_decoupled_decay_only_on_masked_leaves_and_lr_recorded():
    cfg = OptimizerConfig(lr=0.1, schedule="constant", warmup_steps=0, weight_decay=0.5, clip_norm=0)
    opt = make_optimizer(cfg, TOTAL)
    params = {"mlp": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)},
              "layer_norm": {"scale": jnp.full((2,), 2.0)}}
    state = opt.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, state = opt.update(zero, state, params)
    np.testing.assert_allclose(updates["mlp"]["kernel"], -0.1 * 0.5 * 2.0)  # PyTorch AdamW: lr * wd * param
    np.testing.assert_array_equal(updates["mlp"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["layer_norm"]["scale"], 0.0)
    assert math.isclose(float(current_lr(state)), 0.1, rel_tol=1e-6)


def test_clipping_by_global_norm():
    # A large eps makes Adam's first step nearly linear in the gradient, so clipping shows in the update.
    common = dict(lr=1.0, schedule="constant", warmup_steps=0, weight_decay=0.0, eps=1e3)
    clipped = make_optimizer(OptimizerConfig(clip_norm=1.0, **common), TOTAL)
    plain = make_optimizer(OptimizerConfig(clip_norm=0.0, **common), TOTAL)
    params = {"w": jnp.zeros((3,))}
    grads = {"w": jnp.array([30.0, 40.0, 0.0])}  # norm 50
    got, _ = clipped.update(grads, clipped.init(params), params)
    want, _ = plain.update(optax.clip_by_global_norm(1.0).update(grads, None)[0], plain.init(params), params)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)
    assert abs(float(got["w"][0])) < 1e-3  # ~ -0.6 / 1000.6
