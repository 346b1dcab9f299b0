"""`convert` of ModernBERT / EuroBERT checkpoints (tiny random transformers models saved with a tokenizer.json):
HF -> our checkpoint -> the same logits (1e-4), and `convert --to hf` back -> loadable by transformers' Auto
classes with the same logits; the tokenizer travels; bad inputs are refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlm_jax.core.errors import UserError
from xlm_jax.models import families
from xlm_jax.workflows.convert import convert, load_any

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import rope_parity as rp  # noqa: E402
import rope_setup as rs  # noqa: E402

AUTO = {"mlm": "AutoModelForMaskedLM", "sequence": "AutoModelForSequenceClassification",
        "token": "AutoModelForTokenClassification", "span": "AutoModelForQuestionAnswering"}
CASES = [("modernbert", h) for h in ("mlm", "sequence", "token", "span")] + \
        [("eurobert", h) for h in ("mlm", "sequence", "token")]


def _ours(params, cfg, head, n_labels, ids, mask):
    module = families.masked_lm(cfg) if head == "mlm" else families.task_model(cfg, head, n_labels)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return rp.ours(module, params, ids, mask, method=module.mlm_logits if head == "mlm" else None)


@pytest.mark.parametrize("family,head", CASES)
def test_convert_in_and_out(tmp_path, family, head):
    model = rs.saved_model(tmp_path / "hf", family, head)
    out = "span" if head == "span" else "logits"
    ids, mask = rs.batch(family)
    want = rp.hf_logits(model, ids, mask, out)

    summary = convert(tmp_path / "hf", tmp_path / "ours")
    assert rs.PREFIX[family] + rs.HEADS[head] in summary
    assert (tmp_path / "ours" / "tokenizer.json").is_file()
    params, cfg, info = load_any(tmp_path / "ours")
    assert cfg.family == family and info.kind == "orbax"
    n_labels = 2 if head == "span" else rs.LABELS
    if head != "mlm":
        assert info.task is not None and info.task.spec.kind == head
    rp.assert_padded_equal(_ours(params, cfg, head, n_labels, ids, mask), want, mask, head != "sequence")

    convert(tmp_path / "ours", tmp_path / "back", to="hf")
    assert (tmp_path / "back" / "tokenizer.json").is_file()
    back = getattr(transformers, AUTO[head]).from_pretrained(str(tmp_path / "back"), attn_implementation="eager")
    assert type(back).__name__ == rs.PREFIX[family] + rs.HEADS[head]
    rp.assert_padded_equal(rp.hf_logits(back.eval(), ids, mask, out), want, mask, head != "sequence")
    if head in ("sequence", "token"):
        assert back.config.num_labels == rs.LABELS


def test_eurobert_span_head_has_no_hf_class(tmp_path):
    """Our EuroBERT QA head converts to our format but not to HF (transformers has no such class): refused,
    nothing written."""
    from xlm_jax.workflows.convert import export_hf
    from xlm_jax.workflows.loading import TaskInfo
    cfg = load_any(_saved(tmp_path, "eurobert"))[1]
    params = rp.random_params(families.task_model(cfg, "span", 2), 0)
    with pytest.raises(UserError, match="no EuroBERT class"):
        export_hf(params, cfg, tmp_path / "x", task=TaskInfo("qa", ("start", "end"), 64))
    assert not (tmp_path / "x").exists()


def _saved(tmp_path, family, head="mlm", **kw):
    rs.saved_model(tmp_path / f"hf_{family}", family, head, **kw)
    return tmp_path / f"hf_{family}"


def test_bare_architecture_and_masked_lm_read_as_encoder(tmp_path):
    src = _saved(tmp_path, "modernbert")
    convert(src, tmp_path / "enc", to="hf", architecture="ModernBertModel")
    bare = transformers.AutoModel.from_pretrained(str(tmp_path / "enc"))
    assert type(bare).__name__ == "ModernBertModel"
    params, cfg, info = load_any(tmp_path / "enc")
    assert set(params) == {"encoder"} and info.architecture == "ModernBertModel"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "xlm_jax.convert", *map(str, args)], capture_output=True, text=True)


def _refused(proc, *words):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_bad_inputs_one_error_line_nothing_written(tmp_path):
    # A tokenizer.json whose vocabulary is not the model's (more ids than rows).
    src = _saved(tmp_path, "modernbert")
    rs.tokenizer(src, "modernbert", vocab=rs.VOCAB + 30)
    _refused(_cli(src, tmp_path / "o1"), "tokenizer", str(rs.VOCAB + 30), str(rs.VOCAB))
    assert not (tmp_path / "o1").exists()
    # A config.json the model cannot be: a local / global pattern not every-n from 0; a window that is not positive;
    # a RoPE theta that is not positive; a head count the key / value heads do not divide.
    bad = {
        "layer_types": (["sliding_attention", "full_attention", "sliding_attention", "full_attention"], "layer_types"),
        "num_hidden_layers": (3, "num_hidden_layers=3"),  # 4 layer types for 3 layers
        "local_attention": (0, "model.local_window"),
        "rope_parameters": ({"full_attention": {"rope_type": "default", "rope_theta": -1.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}, "model.rope_theta"),
    }
    for i, (key, (value, words)) in enumerate(bad.items()):
        conf = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**conf, key: value}))
        _refused(_cli(src, tmp_path / f"b{i}"), words)
        assert not (tmp_path / f"b{i}").exists()
        (src / "config.json").write_text(json.dumps(conf))
    euro = _saved(tmp_path, "eurobert")
    conf = json.loads((euro / "config.json").read_text())
    (euro / "config.json").write_text(json.dumps({**conf, "num_key_value_heads": 3}))
    _refused(_cli(euro, tmp_path / "e"), "model.num_kv_heads=3", "model.num_heads=4")
    assert not (tmp_path / "e").exists()
    _refused(_cli(src, tmp_path / "a", "--to", "hf", "--architecture", "EuroBertModel"), "EuroBertModel",
             "ModernBertForMaskedLM")
    assert not (tmp_path / "a").exists()
