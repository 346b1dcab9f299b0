"""Shared pieces of tests/test_modernbert.py and tests/test_eurobert.py: tiny random HF models (torch, fp32, eval,
fixed seeds, no downloads), their weights perturbed so that norms and biases are not at their initial values, and
the comparisons of our logits with transformers' on padded batches and on packed rows."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import torch

from xlm_jax.models.xlm import init_params

TOL = 1e-4


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter + N(0, 0.05): norm scales / biases away from 1 / 0 (a mapping that drops them shows)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def state_of(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def shapes_of(module: nn.Module) -> dict:
    abstract = jax.eval_shape(lambda key: nn.unbox(init_params(module, key)), jax.random.key(0))
    return jax.tree_util.tree_map(lambda x: tuple(x.shape), abstract)


def padded_batch(rng: np.random.Generator, vocab: int, lengths: list[int], pad: int, low: int = 5):
    """ids, mask int [B, T] with T = max(lengths), real tokens first."""
    length = max(lengths)
    ids = np.full((len(lengths), length), pad, np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(low, vocab, n)
        mask[row, :n] = 1
    return ids, mask


def hf_logits(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray | None = None, output: str = "logits"):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids),
                    attention_mask=None if mask is None else torch.from_numpy(mask))
    if output == "span":
        return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], axis=-1)
    return out.logits.numpy()


def ours(module: nn.Module, params: dict, ids: np.ndarray, mask: np.ndarray, method=None, **kw) -> np.ndarray:
    """Our logits, jitted (one compile instead of op-by-op dispatch); kw: segment_ids / example_starts arrays."""
    kw = {k: jnp.asarray(v, jnp.int32) for k, v in kw.items()}
    run = jax.jit(lambda p, i, m, kw: module.apply({"params": p}, i, m, None, None, method=method, **kw))
    return np.asarray(run(params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32), kw))


def random_params(module: nn.Module, seed: int) -> dict:
    """Random params of `module`'s shapes (no init run to compile): N(0, 0.1), norm scales 1 + N(0, 0.1), so that
    every tensor, norms and biases included, matters."""
    rng = np.random.default_rng(seed)

    def one(path, shape):
        value = 0.1 * rng.standard_normal(shape).astype(np.float32)
        return value + 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else value

    return jax.tree_util.tree_map_with_path(one, shapes_of(module), is_leaf=lambda x: isinstance(x, tuple))


def assert_padded_equal(got: np.ndarray, want: np.ndarray, mask: np.ndarray, per_token: bool) -> None:
    if per_token:  # only real tokens: padded positions are never read
        real = mask.astype(bool)
        np.testing.assert_allclose(got[real], want[real], atol=TOL, rtol=TOL)
    else:
        np.testing.assert_allclose(got, want, atol=TOL, rtol=TOL)


def pack(examples: list[np.ndarray], length: int, pad: int):
    """One packed row: ids, mask, segment_ids [1, T]; example_starts [1, E]."""
    ids = np.full((1, length), pad, np.int64)
    segments = np.zeros_like(ids)
    starts, at = [], 0
    for e, ex in enumerate(examples):
        ids[0, at:at + len(ex)] = ex
        segments[0, at:at + len(ex)] = e + 1
        starts.append(at)
        at += len(ex)
    assert at <= length
    return ids, (segments > 0).astype(np.int64), segments, np.asarray([starts])
