"""Pooling, the multiple-negatives ranking loss (against sentence-transformers' own torch code), global in-batch
negatives on an 8-device mesh, and GradCache against the plain full-batch gradient."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
from sentence_transformers.sentence_transformer.losses.matryoshka import shrink
from sentence_transformers.sentence_transformer.modules.pooling import Pooling

from xlm_jax.core.errors import UserError
from xlm_jax.models.config import get_model_config
from xlm_jax.models.sentence_transformers import POOLING_MODES
from xlm_jax.models.xlm import Encoder
from xlm_jax.tasks.contrastive import (ContrastiveConfig, contrastive_loss, grad_cache_step, in_batch_accuracy,
                                       info_nce, pool)

REPO = Path(__file__).resolve().parents[1]


def _states(seed=0, b=4, t=7, d=8):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(b, t, d)).astype(np.float32)
    mask = np.zeros((b, t), np.int64)
    for row, n in enumerate([7, 5, 2, 1][:b]):
        mask[row, :n] = 1
    return hidden, mask


def _st_pool(hidden, mask, mode, prompt_length=None):
    module = Pooling(hidden.shape[-1], mode, include_prompt=prompt_length is None)
    features = {"token_embeddings": torch.tensor(hidden), "attention_mask": torch.tensor(mask)}
    if prompt_length is not None:
        features["prompt_length"] = prompt_length
    return module(features)["sentence_embedding"].numpy()


@pytest.mark.parametrize("mode", POOLING_MODES + (("cls", "mean", "max"),))
def test_pool_matches_sentence_transformers(mode):
    hidden, mask = _states()
    ours = pool(jnp.asarray(hidden), jnp.asarray(mask), mode)
    np.testing.assert_allclose(ours, _st_pool(hidden, mask, mode), atol=1e-6)
    unit = pool(jnp.asarray(hidden), jnp.asarray(mask), mode, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["mean", "max", "weightedmean"])
def test_pool_without_the_prompt(mode):
    hidden, mask = _states()
    mask[:, :3] = 1  # every row holds the 2-token prompt and a real token
    ours = pool(jnp.asarray(hidden), jnp.asarray(mask), mode, skip_first=2)
    np.testing.assert_allclose(ours, _st_pool(hidden, mask, mode, prompt_length=2), atol=1e-6)


def test_pool_refuses_an_unknown_mode():
    hidden, mask = _states()
    with pytest.raises(UserError, match=r"pooling.*'median'.*valid.*mean"):
        pool(jnp.asarray(hidden), jnp.asarray(mask), "median")


def _embeddings(seed=0, b=6, d=16, k=2):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(b, d)).astype(np.float32), rng.normal(size=(b, d)).astype(np.float32),
            rng.normal(size=(b, k, d)).astype(np.float32))


def _st_loss(a, p, negatives=(), **kwargs):
    loss = MultipleNegativesRankingLoss(None, **kwargs)
    return loss.compute_loss_from_embeddings([torch.tensor(x) for x in (a, p, *negatives)], None).item()


def test_info_nce_matches_multiple_negatives_ranking_loss():
    a, p, n = _embeddings()
    assert info_nce(a, p) == pytest.approx(_st_loss(a, p), abs=1e-5)
    # [B, K, D] hard negatives: sentence-transformers takes them as K extra columns of B rows each.
    st = _st_loss(a, p, [n[:, i] for i in range(n.shape[1])], scale=10.0)
    assert info_nce(a, p, n, scale=10.0) == pytest.approx(st, abs=1e-5)
    assert info_nce(a, p, n.reshape(-1, n.shape[-1]), scale=10.0) == pytest.approx(st, abs=1e-5)
    symmetric = _st_loss(a, p, scale=7.0, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")
    assert info_nce(a, p, scale=7.0, symmetric=True) == pytest.approx(symmetric, abs=1e-5)
    # The default temperature is sentence-transformers' default scale 20.
    assert contrastive_loss(a, p, n) == pytest.approx(_st_loss(a, p, [n[:, 0], n[:, 1]]), abs=1e-5)
    assert in_batch_accuracy(p, p) == 1.0


def test_matryoshka_matches_sentence_transformers():
    a, p, n = _embeddings()
    cfg = ContrastiveConfig(temperature=0.1, matryoshka_dims=(16, 8, 4), matryoshka_weights=(1.0, 0.5, 0.25))
    # MatryoshkaLoss: Σ weight · loss(shrink(embeddings, dim)); shrink truncates and renormalises.
    expected = sum(w * _st_loss(*(shrink(torch.tensor(x), d).numpy() for x in (a, p)),
                                [shrink(torch.tensor(n[:, i]), d).numpy() for i in range(2)], scale=10.0)
                   for d, w in zip(cfg.matryoshka_dims, cfg.matryoshka_weights))
    assert contrastive_loss(a, p, n, cfg) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0), r"contrastive\.temperature=0(\.0)?: must be a number > 0"),
    (dict(temperature=-0.5), r"contrastive\.temperature=-0\.5"),
    (dict(matryoshka_dims=(8, 0)), r"contrastive\.matryoshka_dims\[1\]=0: must be an integer >= 1"),
    (dict(matryoshka_dims=(8, 8)), r"contrastive\.matryoshka_dims=\[8, 8\]: each dimension once"),
    (dict(matryoshka_dims=(8, 4), matryoshka_weights=(1.0,)), r"contrastive\.matryoshka_weights=\[1\.0\]: one weight"),
    (dict(matryoshka_weights=(-1.0,), matryoshka_dims=(4,)), r"contrastive\.matryoshka_weights\[0\]=-1\.0"),
])
def test_config_refusals_name_the_key(kwargs, match):
    with pytest.raises(UserError, match=match):
        ContrastiveConfig(**kwargs)


def test_matryoshka_dim_beyond_the_hidden_size_is_refused():
    a, p, _ = _embeddings()
    cfg = ContrastiveConfig(matryoshka_dims=(32, 8))
    with pytest.raises(UserError, match=r"contrastive\.matryoshka_dims\[0\]=32: at most the embedding size 16"):
        contrastive_loss(a, p, config=cfg)


SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from xlm_jax.training.sharding import MeshConfig, make_mesh, batch_sharding
from xlm_jax.tasks.contrastive import ContrastiveConfig, contrastive_loss
assert jax.device_count() == 8
rng = np.random.default_rng(0)
a, p = (rng.normal(size=(16, 12)).astype(np.float32) for _ in range(2))
n = rng.normal(size=(16, 2, 12)).astype(np.float32)
cfg = ContrastiveConfig(temperature=0.05, symmetric=True, matryoshka_dims=(12, 6))
loss = lambda a, p, n: contrastive_loss(a, p, n, cfg)
single = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), device=jax.devices()[0])(a, p, n)
mesh = make_mesh(MeshConfig(data=4, fsdp=2))
rows = batch_sharding(mesh)
sa, sp, sn = (jax.device_put(x, rows) for x in (a, p, n))
assert len(sa.sharding.device_set) == 8 and sa.addressable_shards[0].data.shape == (2, 12)
with jax.set_mesh(mesh):
    sharded = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(sa, sp, sn)
np.testing.assert_allclose(sharded[0], single[0], rtol=1e-6)
for g_sharded, g_single in zip(sharded[1], single[1]):
    np.testing.assert_allclose(g_sharded, g_single, atol=1e-6)
# A per-device loss (local negatives only) would differ: the sharded one really saw the global batch.
local = np.mean([loss(a[i:i + 2], p[i:i + 2], n[i:i + 2]) for i in range(0, 16, 2)])
assert abs(local - float(single[0])) > 1e-2, (local, single[0])

# GradCache on the sharded batch: the same gradient as plain autodiff on one device.
from xlm_jax.tasks.contrastive import grad_cache_step
params = {"w": jnp.asarray(rng.normal(size=(12, 12)), jnp.float32)}
embed = lambda w, x, key: jnp.tanh(x @ w["w"])
loss_of = lambda e: contrastive_loss(e["a"], e["p"], None, cfg)
plain = jax.jit(jax.value_and_grad(lambda w: loss_of({"a": embed(w, a, None), "p": embed(w, p, None)})),
                device=jax.devices()[0])(params)
with jax.set_mesh(mesh):
    cached = jax.jit(lambda w, b: grad_cache_step(embed, w, b, 8, loss_of))(params, {"a": sa, "p": sp})
np.testing.assert_allclose(cached[0], plain[0], rtol=1e-6)
np.testing.assert_allclose(cached[1]["w"], plain[1]["w"], atol=1e-5)
print("ok", float(sharded[0]))
"""


def test_in_batch_negatives_span_the_data_parallel_mesh():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SHARDED)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok")


# ------------------------------------------------------------------------------------------------ GradCache


@pytest.fixture(scope="module")
def encoder():
    # xlmr_tiny, smaller still: the test compares gradients, it needs no capacity.
    cfg = dataclasses.replace(get_model_config("xlmr_tiny"), vocab_size=50, hidden_size=32, intermediate_size=48,
                              max_positions=16, num_layers=1)
    model = Encoder(cfg)
    return cfg, model, nn.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])


def _batch(cfg, seed, rows, length=6):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, cfg.vocab_size, size=(rows, length)).astype(np.int32)
    mask = np.ones_like(ids)
    for r in range(rows):
        n = int(rng.integers(3, length + 1))
        mask[r, n:] = 0
        ids[r, n:] = cfg.pad_token_id
    ids[:, 0] = 0
    return {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}


def test_grad_cache_equals_the_full_batch_step(encoder):
    cfg, model, params = encoder
    loss_cfg = ContrastiveConfig(temperature=0.05, symmetric=True, matryoshka_dims=(32, 8))
    batch = {"anchor": _batch(cfg, 1, 8), "positive": _batch(cfg, 2, 8), "negative": _batch(cfg, 3, 16)}

    def embed(p, x, rng=None):
        hidden = model.apply({"params": p}, x["input_ids"], x["attention_mask"])
        return pool(hidden, x["attention_mask"], "mean")

    def loss_of(e):
        negatives = e["negative"].reshape(8, 2, -1)
        return contrastive_loss(e["anchor"], e["positive"], negatives, loss_cfg)

    full = jax.jit(jax.value_and_grad(lambda p: loss_of({k: embed(p, v) for k, v in batch.items()})))(params)
    # 2 chunks of the anchors / positives, 4 of the negatives.
    cached = jax.jit(lambda p, b: grad_cache_step(embed, p, b, 4, loss_of))(params, batch)
    assert cached[0] == pytest.approx(float(full[0]), abs=1e-5)
    flat_full, flat_cached = jax.tree.leaves(full[1]), jax.tree.leaves(cached[1])
    assert len(flat_full) == len(flat_cached) > 10
    for g_full, g_cached in zip(flat_full, flat_cached):
        np.testing.assert_allclose(g_cached, g_full, atol=1e-5, rtol=1e-5)
    assert max(float(jnp.abs(g).max()) for g in flat_full) > 1e-3  # the gradients are not trivially zero


def test_grad_cache_refuses_a_chunk_that_does_not_fit(encoder):
    cfg, model, params = encoder
    batch = {"anchor": _batch(cfg, 1, 4), "positive": _batch(cfg, 2, 4)}

    def embed(p, x, rng=None):
        return pool(model.apply({"params": p}, x["input_ids"], x["attention_mask"]), x["attention_mask"])

    def loss_of(e):
        return info_nce(e["anchor"], e["positive"])

    for chunk, match in [(8, r"grad_cache\.chunk=8: must divide the 4 rows of batch\['anchor'\] and be at most 4"),
                         (3, r"grad_cache\.chunk=3: must divide the 4 rows"),
                         (0, r"grad_cache\.chunk=0: must be an integer >= 1")]:
        with pytest.raises(UserError, match=match):
            grad_cache_step(embed, params, batch, chunk, loss_of)


def test_grad_cache_memory_follows_the_chunk(encoder):
    # XLA's own account of the compiled step's temporaries: activations for one chunk, not for the batch.
    cfg, model, params = encoder
    ids = jnp.full((32, 16), 5, jnp.int32)
    batch = {"anchor": {"input_ids": ids, "attention_mask": jnp.ones_like(ids)},
             "positive": {"input_ids": ids, "attention_mask": jnp.ones_like(ids)}}

    def embed(p, x, rng=None):
        return pool(model.apply({"params": p}, x["input_ids"], x["attention_mask"]), x["attention_mask"])

    def loss_of(e):
        return info_nce(e["anchor"], e["positive"])

    def temp_bytes(fn, *args):
        return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes

    full = temp_bytes(jax.value_and_grad(lambda p: loss_of({k: embed(p, v) for k, v in batch.items()})), params)
    small, large = (temp_bytes(lambda p, b, c=c: grad_cache_step(embed, p, b, c, loss_of), params, batch)
                    for c in (2, 8))
    assert small < large / 2 and small < full / 4, (small, large, full)


def test_grad_cache_with_dropout_reuses_each_chunks_key():
    # Both passes of a chunk must draw the same dropout mask (Gao et al.'s RandContext); the reference is plain
    # autodiff through the same per-(column, chunk) keys.
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)}
    batch = {"anchor": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32),
             "positive": jnp.asarray(rng.normal(size=(8, 6)), jnp.float32)}

    def embed(p, x, key):
        h = jnp.tanh(x @ p["w"])
        return h * jax.random.bernoulli(key, 0.7, h.shape) / 0.7

    def loss_of(e):
        return info_nce(e["anchor"], e["positive"], scale=5.0)

    key = jax.random.key(3)

    def reference(p):
        # Chunk i of 4 holds rows i, i + 4 (see grad_cache_step).
        return loss_of({name: jnp.stack([
            embed(p, batch[name][i::4], jax.random.fold_in(jax.random.fold_in(key, col), i))
            for i in range(4)], axis=1).reshape(8, -1) for col, name in enumerate(batch)})

    loss, grads = jax.value_and_grad(reference)(params)
    cached_loss, cached = grad_cache_step(embed, params, batch, 2, loss_of, rng=key)
    assert cached_loss == pytest.approx(float(loss), abs=1e-6)
    np.testing.assert_allclose(cached["w"], grads["w"], atol=1e-6)
    assert abs(float(loss) - float(grad_cache_step(embed, params, batch, 2, loss_of, rng=jax.random.key(4))[0])) > 1e-4
