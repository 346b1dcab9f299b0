"""Checkpoint merging (`python -m xlm_jax.merge`): averaging and TIES against a NumPy reference of the formula
written here independently of `xlm_jax.training.merging`, on tiny models; the output's format and tokenizer copy;
bad input (one `error:` line, exit 2, nothing written)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import jax
import numpy as np
import pytest

from xlm_jax.merge import main as merge_main
from xlm_jax.models.config import get_model_config
from xlm_jax.training import checkpoint
from xlm_jax.training.merging import ties, trim
from xlm_jax.workflows import convert

REPO = Path(__file__).resolve().parent.parent


def _params(cfg, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(lambda shape: rng.normal(0, 0.05, shape).astype(np.float32),
                                  convert.param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))


def _save(tmp_path: Path, name: str, cfg, params, tokenizer: bytes = b"sentencepiece model") -> Path:
    out = tmp_path / name
    checkpoint.save_params(out, params, cfg)
    (out / "tokenizer.model").write_bytes(tokenizer)
    return out


def _ties_reference(base: np.ndarray, models: list[np.ndarray], density: float, lam: float) -> np.ndarray:
    """Yadav et al. 2023, Algorithm 1, for one tensor, written loop by loop."""
    flat_base = base.astype(np.float64).ravel()
    trimmed = []
    for m in models:
        tv = m.astype(np.float64).ravel() - flat_base
        k = int(np.ceil(density * tv.size))
        order = sorted(range(tv.size), key=lambda j: -abs(tv[j]))
        kept = np.zeros_like(tv)
        for j in order[:k]:
            kept[j] = tv[j]
        trimmed.append(kept)
    out = np.zeros_like(flat_base)
    for j in range(flat_base.size):
        column = [t[j] for t in trimmed]
        sign = np.sign(sum(column))
        agreeing = [v for v in column if v != 0 and np.sign(v) == sign]
        out[j] = flat_base[j] + lam * (sum(agreeing) / len(agreeing) if agreeing else 0.0)
    return out.reshape(base.shape)


def _main(capsys, *args):
    capsys.readouterr()
    try:
        merge_main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cfg():
    return get_model_config("modernbert_tiny", hidden_size=16, num_heads=2, intermediate_size=24, vocab_size=40,
                            num_layers=3, global_attn_every_n=3, max_positions=32)


def test_trim_keeps_the_top_k_share_by_magnitude():
    x = np.array([0.1, -0.5, 0.3, -0.05, 0.2])
    np.testing.assert_array_equal(trim(x, 0.4), [0, -0.5, 0.3, 0, 0])  # ceil(0.4 * 5) = 2
    np.testing.assert_array_equal(trim(x, 1.0), x)
    np.testing.assert_array_equal(trim(x, 0.01), [0, -0.5, 0, 0, 0])  # at least one entry


def test_ties_matches_the_reference_on_one_tensor():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(6, 5))
    models = [base + rng.normal(size=(6, 5)) for _ in range(3)]
    for density, lam in ((0.2, 1.0), (0.5, 0.7), (1.0, 1.0)):
        got = ties({"w": base}, [{"w": m} for m in models], density=density, scale=lam)["w"]
        np.testing.assert_allclose(got, _ties_reference(base, models, density, lam), rtol=1e-12, atol=1e-12)


def test_merge_command_average_and_ties_on_tiny_models(cfg, tmp_path, capsys):
    base = _params(cfg, 0)
    variants = [jax.tree.map(lambda b, d: b + d, base, _params(cfg, s)) for s in (1, 2, 3)]
    paths = [_save(tmp_path, f"v{i}", cfg, p) for i, p in enumerate(variants)]
    base_path = _save(tmp_path, "base", cfg, base)

    code, out, err = _main(capsys, tmp_path / "avg", *paths)
    assert code == 0, err
    merged, merged_cfg = checkpoint.restore_params(tmp_path / "avg")
    assert merged_cfg == cfg
    want = jax.tree.map(lambda *xs: np.mean(np.stack(xs), 0), *variants)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), merged, want)
    assert (tmp_path / "avg" / "tokenizer.model").read_bytes() == b"sentencepiece model"  # the tokenizer copy

    code, out, err = _main(capsys, tmp_path / "ties", *paths, "--method", "ties", "--base", base_path,
                           "--density", "0.3", "--scale", "0.9")
    assert code == 0, err
    assert "TIES" in out
    merged, _ = checkpoint.restore_params(tmp_path / "ties")
    flat_base = jax.tree_util.tree_leaves_with_path(base)
    for (path, b), m, *vs in zip(flat_base, jax.tree.leaves(merged), *map(jax.tree.leaves, variants)):
        want = _ties_reference(b, vs, 0.3, 0.9).astype(np.float32)
        np.testing.assert_allclose(m, want, rtol=1e-6, atol=1e-7, err_msg=jax.tree_util.keystr(path))
    record = json.loads((tmp_path / "ties" / "merge.json").read_text())
    assert record["method"] == "ties" and record["density"] == 0.3
    loaded = convert.load_any(tmp_path / "ties")  # a checkpoint convert / xlm_jax.load read
    assert loaded[1] == cfg

    # Weighted averaging; a second run into the same output replaces it (its own marker).
    code, _, err = _main(capsys, tmp_path / "avg", paths[0], paths[1], "--weights", "3", "1")
    assert code == 0, err
    merged, _ = checkpoint.restore_params(tmp_path / "avg")
    want = jax.tree.map(lambda a, b: 0.75 * a + 0.25 * b, variants[0], variants[1])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), merged, want)


BAD = {
    "one_checkpoint": (["{v0}"], r"1 checkpoint\(s\) given: merging needs at least two"),
    "ties_without_base": (["{v0}", "{v1}", "--method", "ties"], r"--method ties needs --base"),
    "density_zero": (["{v0}", "{v1}", "--method", "ties", "--base", "{v0}", "--density", "0"],
                     r"--density=0\.0: must be"),
    "density_above_one": (["{v0}", "{v1}", "--method", "ties", "--base", "{v0}", "--density", "1.5"],
                          r"--density=1\.5: must be"),
    "density_with_average": (["{v0}", "{v1}", "--density", "0.5"], r"--density is for --method ties"),
    "weights_count": (["{v0}", "{v1}", "--weights", "1"], r"--weights: 1 values for 2 checkpoints"),
    "other_architecture": (["{v0}", "{wide}"], r"another architecture|other parameters"),
    "other_vocabulary": (["{v0}", "{vocab}"], r"vocabulary of 48 ids"),
    "other_tokenizer": (["{v0}", "{tok}"], r"its tokenizer \(tokenizer\.model\) differs"),
    "missing": (["{v0}", "{tmp}/nowhere"], r"nowhere: no such file or directory"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input(cfg, tmp_path, capsys, case):
    args, pattern = BAD[case]
    paths = {"v0": _save(tmp_path, "v0", cfg, _params(cfg, 0)), "v1": _save(tmp_path, "v1", cfg, _params(cfg, 1)),
             "tmp": tmp_path}
    if "{wide}" in args:
        wide = cfg.replace(num_layers=2, global_attn_every_n=1)
        paths["wide"] = _save(tmp_path, "wide", wide, _params(wide, 2))
    if "{vocab}" in args:
        vocab = cfg.replace(vocab_size=48)
        paths["vocab"] = _save(tmp_path, "vocab", vocab, _params(vocab, 2))
    if "{tok}" in args:
        paths["tok"] = _save(tmp_path, "tok", cfg, _params(cfg, 2), tokenizer=b"another model")
    code, out, err = _main(capsys, tmp_path / "out", *[a.format(**paths) for a in args])
    assert code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_command_refuses_a_foreign_output_directory(cfg, tmp_path):
    # The real exit path in a subprocess: exit 2, one `error:` line, the directory untouched.
    v0, v1 = _save(tmp_path, "v0", cfg, _params(cfg, 0)), _save(tmp_path, "v1", cfg, _params(cfg, 1))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-m", "xlm_jax.merge", str(out), str(v0), str(v1)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_a_contrastive_models_embedding_settings_travel_and_must_agree(cfg, tmp_path, capsys):
    # A contrastive fine-tuning output has no head, only its task.json (pooling, length, prefixes): merging two of
    # them keeps it, so the merged model still embeds as they do; different settings are refused.
    from xlm_jax.tasks.embedding import ContrastiveConfig, options
    from xlm_jax.workflows.loading import TASK_FILE, TaskInfo

    settings = options(types.SimpleNamespace(contrastive=ContrastiveConfig(pooling="cls", query_prefix="query: ")))
    paths = []
    for i in range(2):
        path = _save(tmp_path / f"out{i}", "best", cfg, _params(cfg, i))
        (path / TASK_FILE).write_text(TaskInfo("contrastive", (), 48, settings).to_json())
        paths.append(path)
    code, _, err = _main(capsys, tmp_path / "merged", *paths)
    assert code == 0, err
    merged = TaskInfo.read(tmp_path / "merged" / TASK_FILE)
    assert (merged.task, merged.max_len, merged.options) == ("contrastive", 48, settings)

    (paths[1] / TASK_FILE).write_text(TaskInfo("contrastive", (), 48, {**settings, "pooling": "mean"}).to_json())
    code, _, err = _main(capsys, tmp_path / "refused", *paths)
    assert code == 2 and err.startswith("error: ") and "differs from" in err and "pooling" in err, err
    assert not (tmp_path / "refused").exists()
