"""Numerical parity with Hugging Face transformers on tiny random models saved with `save_pretrained`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from flax import linen as nn  # noqa: E402

from xlm_jax.models import hf_mapping  # noqa: E402
from xlm_jax.models.xlm import XLMForMaskedLM, init_params  # noqa: E402

TOL = 1e-4


def _hf_models():
    common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    return {
        "xlmr": transformers.XLMRobertaForMaskedLM(
            transformers.XLMRobertaConfig(**common, max_position_embeddings=66, type_vocab_size=1)
        ),
        "xlmr_xl": transformers.XLMRobertaXLForMaskedLM(
            transformers.XLMRobertaXLConfig(**common, max_position_embeddings=66, type_vocab_size=1)
        ),
        "xlm_langs": transformers.XLMWithLMHeadModel(
            transformers.XLMConfig(vocab_size=99, emb_dim=32, n_layers=2, n_heads=4, n_langs=3, use_lang_emb=True,
                                   max_position_embeddings=64, lang2id={"de": 0, "en": 1, "fr": 2})
        ),
        "xlm_sinusoidal": transformers.XLMWithLMHeadModel(
            transformers.XLMConfig(vocab_size=99, emb_dim=32, n_layers=2, n_heads=4, n_langs=1,
                                   sinusoidal_embeddings=True, max_position_embeddings=64)
        ),
    }


def _randomize(model):
    # Random init leaves LayerNorm at (1, 0) and biases at 0: perturb everything so that a swapped tensor shows.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "position_embeddings" in name and getattr(model.config, "sinusoidal_embeddings", False):
                continue
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _batch(pad_id: int, vocab: int):
    rng = np.random.default_rng(0)
    ids = rng.integers(4, vocab, size=(3, 11))
    lengths = [11, 7, 4]
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = pad_id
    ids[:, 0] = 0
    return ids, mask


@pytest.mark.parametrize("kind", ["xlmr", "xlmr_xl", "xlm_langs", "xlm_sinusoidal"])
def test_parity_with_transformers(tmp_path, kind):
    hf_model = _randomize(_hf_models()[kind])
    hf_model.save_pretrained(tmp_path)
    hf_model = type(hf_model).from_pretrained(tmp_path).eval()
    hf_cfg = hf_model.config.to_dict()
    cfg, arch = hf_mapping.hf_config_to_model_config(hf_cfg, str(tmp_path))
    shapes = jax.tree_util.tree_map(lambda x: x.shape, nn.unbox(init_params(XLMForMaskedLM(cfg), jax.random.key(0))))
    state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    params = hf_mapping.hf_to_params(state, cfg, arch, shapes, str(tmp_path))

    ids, mask = _batch(cfg.pad_token_id, cfg.vocab_size)
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    langs = None
    if cfg.has_lang_embeddings:
        langs = np.tile(np.array([[0] * 6 + [2] * 5]), (3, 1))
        kwargs["langs"] = torch.tensor(langs)
    with torch.no_grad():
        out = hf_model(**kwargs)
    model = XLMForMaskedLM(cfg)
    hidden = model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask), None,
                         None if langs is None else jnp.asarray(langs))
    logits = model.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask), None,
                         None if langs is None else jnp.asarray(langs), method=XLMForMaskedLM.mlm_logits)
    np.testing.assert_allclose(np.asarray(hidden), out.hidden_states[-1].numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(logits), out.logits.numpy(), atol=TOL, rtol=0)

    # Export gives back exactly the HF tensors (tied ones included).
    exported = hf_mapping.params_to_hf(params, cfg, arch)
    for key, value in exported.items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    assert set(state) - set(exported) <= {"transformer.position_ids", "roberta.embeddings.position_ids"}
