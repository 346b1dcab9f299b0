"""Issue 20, items 1 and 4: every output carries its tokenizer (found from any working directory, its sha256
recorded), every entry that takes another checks it with the one `check_tokenizer_fits` message, Hugging Face
directories with only tokenizer.json load with their tokenizer, and `LoadedModel.save` round-trips.

Bad-input kinds, several inputs each: a tokenizer of another size / special ids given to `evaluate task`,
`evaluate retrieval`, `load` and `finetune` (exit 2 or UserError, the key words, hashed files unchanged), and
`save` into a foreign non-empty directory."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py

import xlm_jax
from xlm_jax.core.errors import UserError
from xlm_jax.data.tokenizer import train_tokenizer
from xlm_jax.models.config import get_model_config
from xlm_jax.models.xlm import XLMForMaskedLM, init_params
from xlm_jax.training.checkpoint import save_params


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A 62-id tokenizer and, on a 62-row xlmr model (<mask> = 61, as pretraining writes it): a run directory
    with best/ and a record, a classification fine-tuning output; tokenizers of 66 and 42 ids."""
    d = tmp_path_factory.mktemp("travels")
    tok = tiny_setup.make_tokenizer(d)
    texts = [str(d / f"{lang}.txt") for lang in ("en", "de", "fr")]
    big, small = d / "big.model", d / "small.model"
    train_tokenizer(texts, 64, str(big))
    train_tokenizer(texts, 40, str(small))
    cfg = get_model_config("xlmr_tiny", vocab_size=62, mask_token_id=61, num_layers=1, max_positions=64)
    params = jax.tree_util.tree_map(np.asarray, nn.unbox(
        jax.jit(lambda key: init_params(XLMForMaskedLM(cfg), key))(jax.random.key(0))))
    run = d / "run"
    save_params(run / "checkpoints", params, cfg, step=5)
    save_params(run / "best", params, cfg, step=5)
    shutil.copy(tok, run / "tokenizer.model")
    sha = hashlib.sha256(tok.read_bytes()).hexdigest()
    (run / "tokenizer_record.json").write_text(json.dumps({"sha256": sha, "path": str(tok), "data": ""}))
    train = tiny_setup.write_jsonl(d / "train.jsonl", tiny_setup.task_examples("en", 16, 1))
    return {"dir": d, "tok": tok, "big": big, "small": small, "cfg": cfg, "params": params, "run": run,
            "train": train, "sha": sha}


@pytest.fixture(scope="module")
def finetuned(env):
    """A real (2-step) fine-tuning output, the tokenizer given by a RELATIVE path from its own directory."""
    import os

    from xlm_jax.workflows import finetune as F

    here = os.getcwd()
    os.chdir(env["dir"])
    try:
        cfg = F.load_config(None, [f"init={env['run']}", "tokenizer=t.model", "out=ft", "task=classification",
                                   f"train=[\"{env['train']}\"]", f"valid=[\"{env['train']}\"]", "test=[]",
                                   "max_steps=2", "eval_every=2", "batch_size=8", "max_len=16", "dropout=0"])
        F.finetune(cfg, log=lambda m: None)
    finally:
        os.chdir(here)
    return env["dir"] / "ft"


# ------------------------------------------------------------------------------------------- outputs carry it

def test_run_best_and_steps_find_the_run_tokenizer(env):
    run = env["run"]
    for path in (run, run / "best", run / "best" / "5", run / "checkpoints", run / "checkpoints" / "5"):
        m = xlm_jax.load(path)
        assert m.tokenizer is not None and Path(m.tokenizer.path) == (run / "tokenizer.model").absolute(), path


def test_run_record_old_name_is_read_and_sha256_compared(env, tmp_path):
    run = shutil.copytree(env["run"], tmp_path / "old")
    (run / "tokenizer_record.json").unlink()
    (run / "tokenizer.json").write_text(json.dumps({"sha256": "a" * 64, "path": "/gone/t.model", "data": ""}))
    other = tmp_path / "same_ids.model"
    shutil.copy(env["tok"], other)
    for given in (None, other):
        with pytest.warns(UserWarning, match="sha256"):
            m = xlm_jax.load(run, tokenizer=given)
        assert m.tokenizer is not None and len(m.tokenizer) == 62


def test_finetune_output_carries_its_tokenizer_from_any_directory(env, finetuned, tmp_path, monkeypatch):
    record = json.loads((finetuned / "finetune_config.json").read_text())
    assert record["tokenizer_copy"] == "tokenizer.model" and record["tokenizer_sha256"] == env["sha"]
    assert Path(record["tokenizer_source"]).is_absolute()
    assert (finetuned / "tokenizer.model").read_bytes() == env["tok"].read_bytes()
    monkeypatch.chdir(tmp_path)  # another working directory: the relative "t.model" given no longer resolves
    for path in (finetuned, finetuned / "best"):
        m = xlm_jax.load(path)
        assert m.tokenizer is not None and Path(m.tokenizer.path) == finetuned / "tokenizer.model"
        assert m.predict("the cat").label in ("file", "other")


def test_old_finetune_output_resolves_its_recorded_path_against_itself(finetuned, tmp_path, monkeypatch):
    out = shutil.copytree(finetuned, tmp_path / "old_ft")
    record = json.loads((out / "finetune_config.json").read_text())
    shutil.move(out / "tokenizer.model", out / "t.model")
    for key in ("tokenizer_copy", "tokenizer_sha256", "tokenizer_source"):  # written since the copy exists
        record.pop(key)
    (out / "finetune_config.json").write_text(json.dumps({**record, "tokenizer": "t.model"}))
    monkeypatch.chdir(tmp_path.parent)
    assert xlm_jax.load(out).tokenizer.path == str(out / "t.model")


def test_convert_of_a_fine_tuned_output_carries_the_tokenizer(env, finetuned, tmp_path):
    from xlm_jax.workflows.convert import convert

    convert(finetuned / "best", tmp_path / "conv", to="orbax")
    assert (tmp_path / "conv" / "tokenizer.model").read_bytes() == env["tok"].read_bytes()
    assert len(xlm_jax.load(tmp_path / "conv").tokenizer) == 62


def test_finetune_defaults_to_the_init_tokenizer_and_checks_another(env, tmp_path):
    from xlm_jax.workflows import finetune as F

    base = [f"init={env['run']}", "task=classification", f"train=[\"{env['train']}\"]", "test=[]",
            "max_steps=1", "eval_every=1", "batch_size=8", "max_len=16"]
    F.finetune(F.load_config(None, base + [f"out={tmp_path / 'a'}"]), log=lambda m: None)
    assert (tmp_path / "a" / "tokenizer.model").read_bytes() == env["tok"].read_bytes()
    for bad, words in ((env["big"], ("66 ids", "vocabulary has 62")), (env["small"], ("42 ids", "mask token"))):
        out = tmp_path / f"bad_{bad.stem}"
        with pytest.raises(UserError) as err:
            F.finetune(F.load_config(None, base + [f"out={out}", f"tokenizer={bad}"]), log=lambda m: None)
        assert all(w in str(err.value) for w in (*words, "do not belong together")), str(err.value)
        assert not out.exists()


# ------------------------------------------------------------------------------------------- checked everywhere

def test_evaluate_task_refuses_another_tokenizer(env, finetuned, tmp_path, capsys):
    from xlm_jax import evaluate as E

    before = _hashes(finetuned)
    for bad, words in ((env["big"], ("66 ids", "vocabulary has 62")),
                       (env["small"], ("42 ids", "its mask token is id 41", "61"))):
        out = tmp_path / f"out_{bad.stem}"
        with pytest.raises(SystemExit) as ex:
            E.main(["task", "--checkpoint", str(finetuned), "--tokenizer", str(bad), "--data", str(env["train"]),
                    "--out", str(out)])
        err = capsys.readouterr().err
        assert ex.value.code == 2 and err.startswith("error:")
        assert all(w in err for w in (*words, "do not belong together")), err
        assert not out.exists()
    assert _hashes(finetuned) == before
    # Without --tokenizer: the output's own copy; with the right one: the same table.
    E.main(["task", "--checkpoint", str(finetuned), "--data", str(env["train"])])
    own = capsys.readouterr().out
    E.main(["task", "--checkpoint", str(finetuned), "--tokenizer", str(env["tok"]), "--data", str(env["train"])])
    assert capsys.readouterr().out == own and "|" in own


def test_evaluate_retrieval_refuses_another_tokenizer(env, tmp_path, capsys):
    from xlm_jax import evaluate as E

    src = tmp_path / "a.txt"
    src.write_text("the cat\nthe dog\n")
    for bad in (env["big"], env["small"]):
        with pytest.raises(SystemExit) as ex:
            E.main(["retrieval", "--checkpoint", str(env["run"]), "--tokenizer", str(bad), "--src-file", str(src),
                    "--tgt-file", str(src)])
        err = capsys.readouterr().err
        assert ex.value.code == 2 and "do not belong together" in err, err
    E.main(["retrieval", "--checkpoint", str(env["run"]), "--src-file", str(src), "--tgt-file", str(src)])
    assert json.loads(capsys.readouterr().out)


def test_load_refuses_a_smaller_unrelated_tokenizer(env):
    for bad, words in ((env["small"], ("42 ids", "its mask token is id 41 but the model's is 61")),
                       (env["big"], ("66 ids", "vocabulary has 62"))):
        for given in (bad, str(bad), xlm_jax.Tokenizer.load(bad)):
            with pytest.raises(UserError) as err:
                xlm_jax.load(env["run"], tokenizer=given)
            assert all(w in str(err.value) for w in (*words, "do not belong together")), str(err.value)


# ------------------------------------------------------------------------------------------- Hugging Face

def _hf_dir(env, d: Path) -> Path:
    """A tiny random XLMRobertaForMaskedLM saved by transformers 5 with its tokenizer (tokenizer.json only)."""
    transformers = pytest.importorskip("transformers")
    import test_convert as tc

    cfg = transformers.XLMRobertaConfig(vocab_size=62, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                        intermediate_size=37, max_position_embeddings=66, type_vocab_size=1)
    model = tc._randomize(transformers.XLMRobertaForMaskedLM(cfg))
    model.save_pretrained(d)
    spm = d.parent / "spm_dir"
    spm.mkdir()
    shutil.copy(env["tok"], spm / "sentencepiece.bpe.model")
    transformers.XLMRobertaTokenizer.from_pretrained(str(spm)).save_pretrained(str(d))
    return d


def test_hf_directory_with_only_tokenizer_json_loads_with_it(env, tmp_path):
    transformers = pytest.importorskip("transformers")
    hf = _hf_dir(env, tmp_path / "hf")
    assert (hf / "tokenizer.json").is_file() and not (hf / "sentencepiece.bpe.model").exists()
    m = xlm_jax.load(hf)
    auto = transformers.AutoTokenizer.from_pretrained(str(hf))
    for text in ("the cat opens the file", "Die Katze öffnet die Datei.", "<mask> chat"):
        assert m.tokenizer.encode(text) == auto(text)["input_ids"]
    fills = m.fill_mask("the <mask> dog", top_k=3)
    assert len(fills) == 1 and len(fills[0]) == 3
    assert all(f.piece == auto.convert_ids_to_tokens(f.id) for f in fills[0])


# ------------------------------------------------------------------------------------------- save

def test_save_round_trips_both_formats(env, tmp_path):
    transformers = pytest.importorskip("transformers")
    m = xlm_jax.load(env["run"])
    ids = np.asarray([m.tokenizer.encode("the cat opens the file")])
    for fmt in ("xlm_jax", "hf"):
        out = m.save(tmp_path / fmt, format=fmt)
        back = xlm_jax.load(out)
        assert back.tokenizer is not None and back.tokenizer.encode("the cat") == m.tokenizer.encode("the cat")
        np.testing.assert_allclose(np.asarray(back.mlm_logits(ids)), np.asarray(m.mlm_logits(ids)), atol=1e-5)
        np.testing.assert_allclose(back.embed(["the cat"]), m.embed(["the cat"]), atol=1e-5)
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert auto("the cat opens the file")["input_ids"] == m.tokenizer.encode("the cat opens the file")
    m.save(tmp_path / "xlm_jax")  # its own earlier output: replaced
    assert xlm_jax.load(tmp_path / "xlm_jax").tokenizer is not None


def test_save_of_a_fine_tuned_model(finetuned, tmp_path):
    m = xlm_jax.load(finetuned)
    back = xlm_jax.load(m.save(tmp_path / "ft_saved"))
    assert back.task.labels == m.task.labels and back.tokenizer is not None
    a, b = m.predict(["the cat", "file dog"]), back.predict(["the cat", "file dog"])
    assert [p.label for p in a] == [p.label for p in b]
    np.testing.assert_allclose([p.probability for p in a], [p.probability for p in b], atol=1e-5)
    # Hugging Face: the class with the head and its labels, and the tokenizer; read back with the same predictions.
    hf = xlm_jax.load(m.save(tmp_path / "ft_hf", format="hf"))
    assert hf.task.labels == m.task.labels and hf.tokenizer is not None
    c = hf.predict(["the cat", "file dog"])
    assert [p.label for p in a] == [p.label for p in c]
    np.testing.assert_allclose([p.probability for p in a], [p.probability for p in c], atol=1e-5)


def test_save_refuses_a_foreign_directory_and_bad_formats(env, tmp_path):
    m = xlm_jax.load(env["run"])
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    (foreign / "data.bin").write_bytes(b"\x00" * 10)
    before = _hashes(foreign)
    for fmt in ("xlm_jax", "hf"):
        with pytest.raises(UserError) as err:
            m.save(foreign, format=fmt)
        assert "force=True" in str(err.value) and "nothing was changed" in str(err.value)
        assert _hashes(foreign) == before
    for fmt in ("pt", "", None):
        with pytest.raises(UserError, match="format"):
            m.save(tmp_path / "new", format=fmt)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        m.save(tmp_path / "a_file")
    assert not (tmp_path / "new").exists()
    m.save(foreign, force=True)
    assert xlm_jax.load(foreign).tokenizer is not None


def test_run_record_is_read_under_both_names_and_never_from_a_hf_tokenizer(env, tmp_path):
    from xlm_jax.data.tokenizer_files import read_run_record
    from xlm_jax.workflows.convert import _tokenizer_files

    new, old, hf, none = (tmp_path / n for n in ("new", "old", "hf", "none"))
    for d in (new, old, hf, none):
        d.mkdir()
    (new / "tokenizer_record.json").write_text(json.dumps({"sha256": "a" * 64, "path": "x"}))
    (old / "tokenizer.json").write_text(json.dumps({"sha256": "b" * 64, "path": "x"}))
    (hf / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}, "sha256": "c"}))
    (none / "tokenizer_record.json").write_text("{not json")
    assert read_run_record(new)["sha256"] == "a" * 64 and read_run_record(old)["sha256"] == "b" * 64
    assert read_run_record(hf) is None and read_run_record(none) is None
    # An old run's record is never exported as a Hugging Face tokenizer; a real tokenizer.json is.
    assert _tokenizer_files(old) == () and _tokenizer_files(hf) == (str(hf / "tokenizer.json"),)
