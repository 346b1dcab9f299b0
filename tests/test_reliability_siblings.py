"""Siblings of the issue-#10 kinds that a fresh-user trial found after the first fixes: each test tries several
inputs of one kind and asserts the one-line refusal (or UserError), and that nothing existing changed."""

import hashlib
import json
from pathlib import Path
import os

import numpy as np
import pytest

import tiny_setup

from xlm_jax.core.errors import UserError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("siblings")
    return {"dir": d, "tok": tiny_setup.make_tokenizer(d), "ckpt": tiny_setup.make_checkpoint(d)}


def one_error_line(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ---- kind 2: integers that do not fit the device's int32 ------------------------------------------------------


@pytest.mark.parametrize("override", ["train.steps=100000000000000000000", "model.max_positions=100000000000",
                                      "train.batch_size=4294967296", "checkpoint.every=3000000000"])
def test_train_integers_beyond_int32_are_refused_up_front(override, capsys, tmp_path, monkeypatch):
    from xlm_jax.train import main

    monkeypatch.setenv("XLM_JAX_CACHE", str(tmp_path / "cache"))
    line = one_error_line(main, [override, f"run_dir={tmp_path / 'run'}"], capsys)
    assert override.split("=")[0] in line and "at most 2147483647" in line, line
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("override", ["max_steps=3000000000", "batch_size=10000000000", "eval_every=2147483648"])
def test_finetune_integers_beyond_int32_are_refused(override):
    from xlm_jax import finetune as F

    with pytest.raises(UserError, match="at most 2147483647"):
        F.load_config(None, [override])


@pytest.mark.parametrize("argv", [["task", "--checkpoint", "c", "--tokenizer", "t", "--data", "d",
                                   "--batch-size", "1000000000000"],
                                  ["retrieval", "--checkpoint", "c", "--tokenizer", "t", "--src-file", "s",
                                   "--tgt-file", "t", "--max-len", "99999999999"]])
def test_flags_beyond_int32_are_refused(argv, capsys):
    from xlm_jax.evaluate import main

    line = one_error_line(main, argv, capsys)
    assert "must be at most 2147483647" in line and argv[-2] in line


def test_a_batch_size_wider_than_the_data_allocates_only_the_data(tiny):
    from xlm_jax import evaluate as E
    from xlm_jax.api import load
    from xlm_jax.data.tokenizer import Tokenizer

    model, tok = load(tiny["ckpt"]), Tokenizer.load(tiny["tok"])
    huge = E.embed_sentences(model, tok, ["the cat", "open file"], batch_size=2**31 - 1)
    np.testing.assert_allclose(huge, E.embed_sentences(model, tok, ["the cat", "open file"], batch_size=2), atol=1e-6)


# ---- kind 4: files that are not in the task's format ----------------------------------------------------------


def test_training_data_with_fewer_than_two_labels_is_refused(tmp_path):
    from xlm_jax import tasks as T

    one = tiny_setup.write_jsonl(tmp_path / "one.jsonl", [e for e in tiny_setup.task_examples("en", 8, 0)
                                                          if e["label"] == "file"])
    conll = tmp_path / "one.conll"  # every word tagged O
    conll.write_text("".join(f"{w}\tO\n" for w in ("Open", "the", "file")) + "\n" + "Save\tO\nit\tO\n")
    for task, path in (("classification", one), ("ner", conll)):
        spec = T.get_task(task)
        examples = T.read_files(spec, [str(path)])
        with pytest.raises(UserError, match=rf"the {task} training data has 1 label.*at least 2"):
            T.resolve_labels(spec, (), examples)


# ---- kind 3 / 6: the API and the tokenizer --------------------------------------------------------------------


@pytest.mark.parametrize("path", [None, 123, "", "   ", b"/tmp"])
def test_load_refuses_what_is_not_a_path(path):
    import xlm_jax

    with pytest.raises(UserError, match="path must be a non-empty str or pathlib.Path"):
        xlm_jax.load(path)


@pytest.mark.parametrize("call", ["encode", "batch_encode", "pair", "pieces"])
def test_lone_surrogates_are_refused_by_name(tiny, call):
    from xlm_jax.data.tokenizer import Tokenizer

    tok = Tokenizer.load(tiny["tok"])
    bad = "the file \ud800 open"
    run = {"encode": lambda: tok.encode(bad), "batch_encode": lambda: tok.batch_encode(["ok", bad], max_len=16),
           "pair": lambda: tok.batch_encode([("ok", bad)], max_len=16),
           "pieces": lambda: tok.encode_batch_pieces_ids([bad])}[call]
    with pytest.raises(UserError, match=r"'\\ud800' at character 9.*lone surrogate"):
        run()


def test_finetune_file_with_an_escaped_surrogate_is_one_error_line(tiny, tmp_path, capsys):
    from xlm_jax.finetune import main

    rows = tiny_setup.task_examples("en", 8, 0)
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"text": "the \\ud800 file", "label": "file"}\n')
    line = one_error_line(main, ["task=classification", f"init={tiny['ckpt']}", f"tokenizer={tiny['tok']}",
                                 f"train=[{path}]", "max_steps=1", "batch_size=8", f"out={tmp_path / 'ft'}"], capsys)
    assert "lone surrogate" in line


# ---- kind 1: outputs through symbolic links, plot targets -----------------------------------------------------


def _digest(root) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_rerun_into_own_output_through_a_symlink_replaces_the_target_and_keeps_the_link(tiny, tmp_path, capsys):
    from xlm_jax.convert import main

    real, link = tmp_path / "real", tmp_path / "link"
    main([str(tiny["ckpt"]), str(real), "--to", "hf"])
    link.symlink_to(real)
    main([str(tiny["ckpt"]), str(link), "--to", "hf"])
    assert link.is_symlink() and os.readlink(link) == str(real) and (real / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # no .old / .tmp left behind
    # A link to a folder of the user's files is refused like the folder itself.
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine\n")
    (tmp_path / "user_link").symlink_to(user)
    before = _digest(user)
    line = one_error_line(main, [str(tiny["ckpt"]), str(tmp_path / "user_link")], capsys)
    assert "did not write" in line and _digest(user) == before


@pytest.mark.parametrize("out, words", [("curves.txt", "image format"), ("curves", "image format")])
def test_plot_refuses_an_out_it_cannot_write_before_drawing(out, words, tmp_path, capsys):
    from xlm_jax.plot import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 1.0}) + "\n")
    line = one_error_line(main, [str(run), "--out", str(tmp_path / out)], capsys)
    assert words in line and not (tmp_path / out).exists()


@pytest.mark.parametrize("out", ["no_such_dir/curves.png", "a/b/c/curves.svg"])
def test_plot_creates_the_missing_parents_of_a_file_output(out, tmp_path, capsys):
    # A single-file output whose parent is missing is created with its parents, as directory outputs are.
    from xlm_jax.plot import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 1.0}) + "\n")
    main([str(run), "--out", str(tmp_path / out)])
    assert (tmp_path / out).is_file() and (tmp_path / out).stat().st_size > 0
    assert [p.name for p in (tmp_path / out).parent.iterdir()] == [Path(out).name]  # no temporary file left


@pytest.mark.parametrize("what, words", [("missing", "no such run directory"), ("empty", "has no metrics.jsonl")])
def test_plot_names_a_run_directory_that_is_not_one(what, words, tmp_path, capsys):
    from xlm_jax.plot import main

    run = tmp_path / what
    if what == "empty":
        run.mkdir()
    assert words in one_error_line(main, [str(run)], capsys)


# ---- one line, whatever the message holds ---------------------------------------------------------------------


def test_yaml_syntax_errors_are_one_line_with_file_line_and_column(tmp_path, capsys):
    from xlm_jax.train import main

    cfg = tmp_path / "tab.yaml"
    cfg.write_text("train:\n\tsteps: 4\n")
    line = one_error_line(main, [str(cfg), f"run_dir={tmp_path / 'run'}"], capsys)
    assert f"{cfg}:2:1: not valid YAML" in line and "'\\t'" in line


@pytest.mark.parametrize("value", ["slow", "-1", "nan", "inf"])
def test_the_save_delay_test_hook_refuses_a_bad_value(value, monkeypatch):
    from xlm_jax.training.checkpoint import SAVE_DELAY_ENV, json_save

    monkeypatch.setenv(SAVE_DELAY_ENV, value)
    with pytest.raises(UserError, match=rf"{SAVE_DELAY_ENV}='{value}': expected a number of seconds >= 0"):
        json_save({"step": 1})
    monkeypatch.setenv(SAVE_DELAY_ENV, "0.5")
    json_save({"step": 1})  # a valid delay
