"""`python -m xlm_jax.convert` and `xlm_jax.workflows.convert.load_any` / `export_hf` on tiny random models.

The fairseq and original-XLM checkpoints are built here from a tiny HF model's tensors under the original key
names, so every numerical check compares against transformers' own forward pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

import xlm_jax  # noqa: E402
from xlm_jax.convert import main as convert_main  # noqa: E402
from xlm_jax.workflows import convert  # noqa: E402
from xlm_jax.training import checkpoint
from xlm_jax.models.config import get_model_config  # noqa: E402

TOL = 1e-4
REPO = Path(__file__).resolve().parents[1]


def _randomize(model):
    # Fresh init leaves LayerNorms at (1, 0) and biases at 0: perturb everything so a swapped tensor shows.
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    """kind -> (model, saved directory): tiny XLM-R, XLM-R XL and XLM (with language embeddings)."""
    common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5)
    models = {
        "xlmr": transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(**common)),
        "xlmr_xl": transformers.XLMRobertaXLForMaskedLM(transformers.XLMRobertaXLConfig(**common)),
        "xlm": transformers.XLMWithLMHeadModel(transformers.XLMConfig(
            vocab_size=99, emb_dim=32, n_layers=2, n_heads=4, n_langs=3, use_lang_emb=True,
            max_position_embeddings=64, lang2id={"de": 0, "en": 1, "fr": 2})),
    }
    out = {}
    for kind, model in models.items():
        torch.manual_seed(0)
        directory = tmp_path_factory.mktemp(kind)
        _randomize(model).save_pretrained(directory)
        out[kind] = (model, directory)
    return out


def _batch(pad_id: int, with_langs: bool):
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 99, size=(3, 11))
    mask = np.zeros_like(ids)
    for row, n in enumerate([11, 7, 4]):
        mask[row, :n] = 1
        ids[row, n:] = pad_id
    ids[:, 0] = 0
    langs = np.tile(np.array([[0] * 6 + [2] * 5]), (3, 1)) if with_langs else None
    return ids, mask, langs


def _hf_outputs(model, ids, mask, langs):
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), output_hidden_states=True)
    if langs is not None:
        kwargs["langs"] = torch.tensor(langs)
    with torch.no_grad():
        out = model(**kwargs)
    return out.hidden_states[-1].numpy(), out.logits.numpy()


def _assert_matches_hf(loaded, model):
    ids, mask, langs = _batch(loaded.config.pad_token_id, loaded.config.has_lang_embeddings)
    hidden, logits = _hf_outputs(model, ids, mask, langs)
    np.testing.assert_allclose(np.asarray(loaded.hidden_states(ids, mask, langs)), hidden, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(loaded.mlm_logits(ids, mask, langs)), logits, atol=TOL, rtol=0)


def _trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


# ---------------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("kind", ["xlmr", "xlmr_xl", "xlm"])
def test_hf_to_orbax_to_hf_is_exact(hf, tmp_path, kind):
    model, src = hf[kind]
    line = convert.convert(src, tmp_path / "ours")
    assert line.startswith("converted hf checkpoint") and "-> xlm_jax orbax" in line
    assert checkpoint.resolve(tmp_path / "ours")[1] == 0
    convert.convert(tmp_path / "ours", tmp_path / "back")  # ours -> hf is the default direction

    original, exported = load_file(src / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert set(exported) == set(original)
    for key in original:
        np.testing.assert_array_equal(exported[key], original[key], err_msg=key)

    reloaded, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert type(reloaded) is type(model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    ids, mask, langs = _batch(model.config.pad_token_id, kind == "xlm")
    for want, got in zip(_hf_outputs(model, ids, mask, langs), _hf_outputs(reloaded.eval(), ids, mask, langs)):
        np.testing.assert_array_equal(got, want)


def _random_params(cfg, seed=0):
    # Straight from the abstract shapes: running Flax init op by op costs seconds on a busy CPU.
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda shape: rng.normal(0, 0.05, shape).astype(np.float32),
                                  convert.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))


@pytest.mark.parametrize("name", ["xlmr_tiny", "xlmr_xl_tiny", "xlm_tiny"])
def test_orbax_to_hf_to_orbax_is_exact(tmp_path, name):
    cfg = get_model_config(name, hidden_size=32, intermediate_size=128 if name == "xlm_tiny" else 48,
                           vocab_size=50, max_positions=16)
    params = _random_params(cfg)
    checkpoint.save_params(tmp_path / "ours", params, cfg)
    convert.convert(tmp_path / "ours", tmp_path / "hf", to="hf")
    _, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    convert.convert(tmp_path / "hf", tmp_path / "again", to="orbax")
    restored, restored_cfg = checkpoint.restore_params(tmp_path / "again")
    _trees_equal(restored, params)
    assert restored_cfg == cfg


def test_hf_weight_files_sharded_and_bin(hf, tmp_path):
    model, src = hf["xlmr"]
    want, cfg, _ = convert.load_any(src)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    (tmp_path / "bin").mkdir()
    shutil.copy(src / "config.json", tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    for d in ("sharded", "bin"):
        got, got_cfg, info = convert.load_any(tmp_path / d)
        assert info.kind == "hf" and got_cfg == cfg
        _trees_equal(got, want)


def test_bare_architecture_drops_the_head(hf, tmp_path):
    _, src = hf["xlmr"]
    full, _, _ = convert.load_any(src)
    params, cfg, info = convert.load_any(src, architecture="XLMRobertaModel")
    assert info.architecture == "XLMRobertaModel" and set(params) == {"encoder"}
    _trees_equal(params["encoder"], full["encoder"])
    assert convert.export_hf(params, cfg, tmp_path / "bare") == "XLMRobertaModel"
    model, info = transformers.AutoModel.from_pretrained(tmp_path / "bare", output_loading_info=True)
    assert type(model).__name__ == "XLMRobertaModel" and not info["unexpected_keys"]
    assert all(k.startswith("pooler.") for k in info["missing_keys"])  # HF's untrained pooler: ours has none
    with pytest.raises(xlm_jax.UserError, match="XLMRobertaXLForMaskedLM does not fit"):
        convert.load_any(src, architecture="XLMRobertaXLForMaskedLM")


def test_load_hf_directory_in_memory(hf):
    model, src = hf["xlmr"]
    loaded = xlm_jax.load(src)
    _assert_matches_hf(loaded, model)


# ------------------------------------------------------------------------------ fairseq and original XLM

def _fairseq_state(model, new_names: bool) -> dict:
    """HF XLMRobertaForMaskedLM / XL state dict under fairseq names (old: decoder., new: encoder.)."""
    sd = model.state_dict()
    p = "encoder." if new_names else "decoder."
    enc = p + "sentence_encoder."
    xl = model.config.model_type == "xlm-roberta-xl"
    out = {
        f"{enc}embed_tokens.weight": sd["roberta.embeddings.word_embeddings.weight"],
        # fairseq has no token-type table (the converter adds a zero row): fold HF's one row into the
        # positions, which gives the same function since every token has type 0.
        f"{enc}embed_positions.weight": sd["roberta.embeddings.position_embeddings.weight"]
        + sd["roberta.embeddings.token_type_embeddings.weight"],
        f"{p}lm_head.weight": sd["roberta.embeddings.word_embeddings.weight"],
        f"{enc}version": torch.tensor([2.0]),
    }
    for leaf in ("weight", "bias"):
        if xl:
            out[f"{enc}layer_norm.{leaf}"] = sd[f"roberta.encoder.LayerNorm.{leaf}"]
        else:
            emb_ln = "layernorm_embedding" if new_names else "emb_layer_norm"
            out[f"{enc}{emb_ln}.{leaf}"] = sd[f"roberta.embeddings.LayerNorm.{leaf}"]
        for name in ("dense", "layer_norm"):
            out[f"{p}lm_head.{name}.{leaf}"] = sd[f"lm_head.{name}.{leaf}"]
        for i in range(model.config.num_hidden_layers):
            h, f = f"roberta.encoder.layer.{i}.", f"{enc}layers.{i}."
            names = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
                     "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
                     "fc1": "intermediate.dense", "fc2": "output.dense"}
            names |= ({"self_attn_layer_norm": "attention.self_attn_layer_norm", "final_layer_norm": "LayerNorm"}
                      if xl else
                      {"self_attn_layer_norm": "attention.output.LayerNorm", "final_layer_norm": "output.LayerNorm"})
            for fs, hn in names.items():
                out[f"{f}{fs}.{leaf}"] = sd[f"{h}{hn}.{leaf}"]
    out[f"{p}lm_head.bias"] = sd["lm_head.bias"]
    return {k: v.clone() for k, v in out.items()}


@pytest.mark.parametrize("kind,new_names", [("xlmr", False), ("xlmr_xl", True)])
def test_fairseq_checkpoint(hf, tmp_path, kind, new_names):
    model, _ = hf[kind]
    args = argparse.Namespace(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=37,
                              encoder_attention_heads=4, max_positions=64, activation_fn="gelu", dropout=0.1,
                              attention_dropout=0.1, encoder_normalize_before=kind == "xlmr_xl")
    torch.save({"model": _fairseq_state(model, new_names), "args": args, "extra_state": {"val_loss": np.float64(3.5)}},
               tmp_path / "model.pt")
    line = convert.convert(tmp_path / "model.pt", tmp_path / "ours")
    arch = "XLMRobertaXLForMaskedLM" if kind == "xlmr_xl" else "XLMRobertaForMaskedLM"
    assert line.startswith("converted fairseq checkpoint") and arch in line
    loaded = xlm_jax.load(tmp_path / "ours")
    assert loaded.config.pre_layer_norm == (kind == "xlmr_xl") and loaded.config.max_positions == 64
    _assert_matches_hf(loaded, model)

    # fairseq -> HF directly; the tokenizer model next to model.pt comes along.
    (tmp_path / "sentencepiece.bpe.model").write_bytes(b"spm")
    convert.convert(tmp_path / "model.pt", tmp_path / "hf", to="hf")
    assert (tmp_path / "hf" / "sentencepiece.bpe.model").read_bytes() == b"spm"
    reloaded, info = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert type(reloaded) is type(model) and not info["missing_keys"] and not info["unexpected_keys"], info
    ids, mask, _ = _batch(1, False)
    for want, got in zip(_hf_outputs(model, ids, mask, None), _hf_outputs(reloaded.eval(), ids, mask, None)):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_fairseq_checkpoint_with_fused_attention_projection(hf, tmp_path):
    """The layout of the released xlmr.base / xlmr.large model.pt: q, k, v fused into self_attn.in_proj_weight /
    in_proj_bias (tests/fixtures/released_checkpoints.json)."""
    model, _ = hf["xlmr"]
    state = _fairseq_state(model, new_names=False)
    for i in range(model.config.num_hidden_layers):
        p = f"decoder.sentence_encoder.layers.{i}.self_attn."
        for leaf in ("weight", "bias"):
            state[f"{p}in_proj_{leaf}"] = torch.cat([state.pop(f"{p}{n}_proj.{leaf}") for n in ("q", "k", "v")])
    args = argparse.Namespace(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=37,
                              encoder_attention_heads=4, max_positions=64)
    torch.save({"model": state, "args": args}, tmp_path / "model.pt")
    _assert_matches_hf(xlm_jax.load(tmp_path / "model.pt"), model)


def _xlm_pth(model, path: Path, **param_overrides):
    sd = {("module." + k.removeprefix("transformer.")) if k.startswith("transformer.") else k: v.clone()
          for k, v in model.state_dict().items() if not k.endswith("position_ids")}
    words = [f"w{i}" for i in range(99)]
    params = dict(emb_dim=32, n_layers=2, n_heads=4, n_langs=3, use_lang_emb=True, sinusoidal_embeddings=False,
                  gelu_activation=True, lang2id={"de": 0, "en": 1, "fr": 2}, id2lang={0: "de", 1: "en", 2: "fr"},
                  n_words=99, bos_index=0, eos_index=1, pad_index=2, unk_index=3, mask_index=5, dropout=0.1,
                  attention_dropout=0.1)
    params |= param_overrides
    torch.save({"model": sd, "params": argparse.Namespace(**params), "dico_id2word": dict(enumerate(words)),
                "dico_word2id": {w: i for i, w in enumerate(words)}, "dico_counts": {w: 1 for w in words}}, path)


def test_xlm_pth_checkpoint(hf, tmp_path):
    model, _ = hf["xlm"]
    _xlm_pth(model, tmp_path / "mlm_tiny.pth")
    line = convert.convert(tmp_path / "mlm_tiny.pth", tmp_path / "ours")
    assert line.startswith("converted xlm checkpoint") and "XLMWithLMHeadModel" in line
    loaded = xlm_jax.load(tmp_path / "ours")
    assert loaded.config.langs == ("de", "en", "fr") and loaded.config.pad_token_id == 2
    _assert_matches_hf(loaded, model)


def test_xlm_pth_language_mismatch_is_explained(hf, tmp_path):
    _xlm_pth(hf["xlm"][0], tmp_path / "bad.pth", n_langs=4, lang2id=None, id2lang=None)
    with pytest.raises(xlm_jax.UserError, match=r"lang_embeddings.weight \(module.lang_embeddings.weight in the "
                                                r"file\) has shape \(3, 32\), expected \(4, 32\).*language"):
        convert.load_any(tmp_path / "bad.pth")


# ---------------------------------------------------------------------------------------------- bad input

def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xlm_jax.convert", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env={**os.environ, "JAX_PLATFORMS": "cpu"})


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_source(hf, tmp_path: Path, case: str) -> tuple[Path, list[str]]:
    """-> (SRC, extra CLI args) for one kind of bad input."""
    _, good = hf["xlmr"]
    src = tmp_path / "src"
    if case in ("nonexistent_src",):
        return tmp_path / "does_not_exist", []
    if case == "malicious_pickle":
        src.mkdir()
        torch.save({"model": {"x": _Evil(tmp_path / "MARKER")}, "args": None}, src / "model.pt")
        return src / "model.pt", []
    shutil.copytree(good, src)
    config = json.loads((src / "config.json").read_text())
    if case == "unknown_architecture":
        config |= {"model_type": "bert", "architectures": ["BertForMaskedLM"]}
    elif case == "vocab_mismatch":
        config["vocab_size"] = 100
    elif case == "position_table":
        config["max_position_embeddings"] = 64  # the tensors hold 66 rows (64 + padding_idx + 1)
    elif case == "missing_tensor":
        state = load_file(src / "model.safetensors")
        del state["roberta.encoder.layer.1.output.dense.weight"]
        save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    (src / "config.json").write_text(json.dumps(config))
    if case == "vocab_flag":
        return src, ["--vocab-size", "250002"]
    return src, []


BAD_INPUT = {
    "unknown_architecture": r"unsupported model_type 'bert'.*supported: xlm-roberta",
    "missing_tensor": r"missing tensor roberta\.encoder\.layer\.1\.output\.dense\.weight",
    "vocab_mismatch": r"roberta\.embeddings\.word_embeddings\.weight has shape \(99, 32\), expected \(100, 32\)"
                      r".*vocabulary size mismatch",
    "vocab_flag": r"word_embeddings\.weight \(--vocab-size 250002\) has shape \(99, 32\), expected \(250002, 32\)",
    "position_table": r"position_embeddings\.weight has shape \(66, 32\), expected \(64, 32\).*position table",
    "malicious_pickle": r"model\.pt: refusing to unpickle: it needs the global posix\.system",
    "nonexistent_src": r"does_not_exist: no such file or directory",
}


def _main(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI's main() in-process (the subprocess in test_cli_refuses_non_empty_destination_unless_forced checks the
    real exit path), -> CompletedProcess-like with its exit code and captured stdout / stderr."""
    capsys.readouterr()
    try:
        convert_main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["convert", *map(str, args)], code, out, err)


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_cli_bad_input(hf, tmp_path, capsys, case):
    src, extra = _bad_source(hf, tmp_path, case)
    result = _main(capsys, src, tmp_path / "out", *extra)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(BAD_INPUT[case], result.stderr), result.stderr
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no leftover staging directory
    assert not (tmp_path / "MARKER").exists()


def test_cli_refuses_non_empty_destination_unless_forced(hf, tmp_path, capsys):
    # The one subprocess of this file: the real exit path (exit 2, one `error:` line, no traceback).
    _, src = hf["xlmr"]
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    result = _cli(src, dst)
    assert result.returncode == 2 and "--force" in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "out: exists and holds files that `convert` did not write (keep.txt); nothing was changed" in result.stderr
    assert (dst / "keep.txt").read_text() == "mine" and sorted(os.listdir(dst)) == ["keep.txt"]

    result = _main(capsys, src, dst, "--force", "--to", "hf")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and "XLMRobertaForMaskedLM" in result.stdout
    assert "parameters" in result.stdout and str(dst) in result.stdout
    assert sorted(os.listdir(dst)) == [".xlm_jax.json", "config.json", "model.safetensors"]  # + the owner marker


def test_fairseq_config_problems_are_explained(hf, tmp_path):
    model, _ = hf["xlmr"]
    state = _fairseq_state(model, new_names=False)
    torch.save({"model": state, "args": None}, tmp_path / "model.pt")
    with pytest.raises(xlm_jax.UserError, match=r"model\.pt: the number of attention heads .* pass --num-heads"):
        convert.load_any(tmp_path / "model.pt")
    params, cfg, info = convert.load_any(tmp_path / "model.pt", num_heads=4)
    assert (info.kind, cfg.num_heads, cfg.num_layers, cfg.intermediate_size, cfg.max_positions) == ("fairseq", 4, 2, 37, 64)

    # args.max_positions=66 wants 66 + padding_idx + 1 = 68 rows; the table has 66 (the "512 vs 514" mistake).
    torch.save({"model": state, "args": argparse.Namespace(encoder_attention_heads=4, max_positions=66)},
               tmp_path / "model.pt")
    with pytest.raises(xlm_jax.UserError, match=r"position_embeddings\.weight \(decoder\.sentence_encoder\."
                                                r"embed_positions\.weight in the file\) has shape \(66, 32\), "
                                                r"expected \(68, 32\) \(position table mismatch"):
        convert.load_any(tmp_path / "model.pt")
