"""Every numeric flag of every command is range-checked by argparse before any work: exit 2 and one
`error: argument --flag: invalid value V: must be ...` line (issue #10, kind 2). In-process main() calls."""

import importlib

import pytest

CASES = [
    ("xlm_jax.evaluate", ["task", "--checkpoint", "c", "--tokenizer", "t", "--data", "d", "--batch-size", "0"],
     ">= 1"),
    ("xlm_jax.evaluate", ["retrieval", "--checkpoint", "c", "--tokenizer", "t", "--src-file", "a", "--tgt-file", "b",
                          "--max-len", "0"], ">= 3"),
    ("xlm_jax.evaluate", ["retrieval", "--checkpoint", "c", "--tokenizer", "t", "--src-file", "a", "--tgt-file", "b",
                          "--batch-size", "-1"], ">= 1"),
    ("xlm_jax.preprocess", ["corpus", "--tokenizer", "t", "--out", "o", "--max-len", "0"], ">= 1"),
    ("xlm_jax.preprocess", ["corpus", "--tokenizer", "t", "--out", "o", "--workers", "0"], ">= 1"),
    ("xlm_jax.preprocess", ["corpus", "--tokenizer", "t", "--out", "o", "--valid-fraction", "1.5"], "[0, 1)"),
    ("xlm_jax.preprocess", ["corpus", "--tokenizer", "t", "--out", "o", "--test-fraction", "-0.1"], "[0, 1)"),
    ("xlm_jax.preprocess", ["corpus", "--tokenizer", "t", "--out", "o", "--valid-fraction", "abc"], "[0, 1)"),
    ("xlm_jax.tokenizer", ["train", "--input", "x", "--output", "o.model", "--vocab-size", "0"], ">= 4"),
    ("xlm_jax.tokenizer", ["train", "--input", "x", "--output", "o.model", "--vocab-size", "9", "--alpha", "-0.3"],
     "[0, 1]"),
    ("xlm_jax.tokenizer", ["train", "--input", "x", "--output", "o.model", "--vocab-size", "9",
                           "--max-sentences", "0"], ">= 1"),
    ("xlm_jax.tokenizer", ["train", "--input", "x", "--output", "o.model", "--vocab-size", "9", "--seed", "-1"],
     ">= 0"),
    ("xlm_jax.data.__main__", ["bench", "d", "--seq-len", "4"], ">= 8"),
    ("xlm_jax.data.__main__", ["bench", "d", "--batch-size", "0"], ">= 1"),
    ("xlm_jax.data.__main__", ["bench", "d", "--steps", "0"], ">= 1"),
    ("xlm_jax.data.__main__", ["bench", "d", "--sample-alpha", "-1"], ">= 0"),
    ("xlm_jax.data.__main__", ["bench", "d", "--tlm-seq-len", "3"], "or 0"),
    ("xlm_jax.data.__main__", ["bench", "d", "--tlm-tokens-per-batch", "-1"], ">= 0"),
    ("xlm_jax.data.__main__", ["synth", "o", "--langs", "0"], ">= 1"),
    ("xlm_jax.data.__main__", ["synth", "o", "--tokens", "10"], ">= 1000"),
    ("xlm_jax.data.__main__", ["synth", "o", "--para-pairs", "-1"], ">= 0"),
    ("xlm_jax.data.__main__", ["synth", "o", "--vocab-size", "3"], ">= 6"),
    ("xlm_jax.data.gettext", ["o", "--min-pairs", "0"], ">= 1"),
    ("xlm_jax.data.gettext", ["o", "--workers", "-2"], ">= 1"),
    ("xlm_jax.convert", ["a", "b", "--vocab-size", "0"], ">= 1"),
    ("xlm_jax.convert", ["a", "b", "--num-heads", "0"], ">= 1"),
    ("xlm_jax.bench.__main__", ["--steps", "0"], ">= 1"),
    ("xlm_jax.bench.__main__", ["--repeats", "-1"], ">= 1"),
    ("xlm_jax.bench.__main__", ["--warmup", "0"], ">= 1"),
    ("xlm_jax.bench.__main__", ["--threads", "0"], ">= 1"),
    ("xlm_jax.train", ["--num-processes", "0"], ">= 1"),
    ("xlm_jax.train", ["--process-id", "-1"], ">= 0"),
    ("xlm_jax.data.tfds_source", ["n", "o", "--max-examples", "0"], ">= 1"),
]


@pytest.mark.parametrize("module, argv, valid", CASES, ids=[f"{m.split('.', 1)[1]} {a[-2]}" for m, a, _ in CASES])
def test_numeric_flags_are_range_checked_up_front(module, argv, valid, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths in argv: nothing may be created anyway
    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()  # one line, no usage block (errors.ArgumentParser)
    assert len(error) == 1 and error[0].startswith("error: "), error
    flag, value = argv[-2], argv[-1]
    assert f"argument {flag}: invalid value" in error[0] and value in error[0] and valid in error[0], error[0]
    assert list(tmp_path.iterdir()) == []


def test_cross_flag_range_of_synth(tmp_path, capsys):
    from xlm_jax.data.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["synth", str(tmp_path / "s"), "--langs", "2", "--para-pairs", "2"])
    assert exit_info.value.code == 2
    assert "--para-pairs=2: at most --langs - 1 = 1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_api_functions_check_the_same_ranges(tmp_path):
    from xlm_jax.data.gettext import build_gettext_corpus
    from xlm_jax.core.errors import UserError
    from xlm_jax.data.preprocess import preprocess_corpus
    from xlm_jax.data.tokenizer import train_tokenizer

    out = str(tmp_path / "out")
    with pytest.raises(UserError, match="--workers=0: must be an integer >= 1"):
        preprocess_corpus(tmp_path, tmp_path / "t.model", out, workers=0)
    with pytest.raises(UserError, match="--min-pairs=0"):
        build_gettext_corpus(out, min_pairs=0)
    with pytest.raises(UserError, match=r"--alpha=1.5: must be a number in \[0, 1\]"):
        train_tokenizer([str(tmp_path)], 100, str(tmp_path / "t.model"), alpha=1.5)
    with pytest.raises(UserError, match="--vocab-size=2"):
        train_tokenizer([str(tmp_path)], 2, str(tmp_path / "t.model"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "t.model").exists()


def test_finetune_help_config_lists_every_key_with_its_default_and_type():
    import ast
    import dataclasses
    import subprocess
    import sys

    from xlm_jax.training.settings import to_dict, type_name
    from xlm_jax.workflows.finetune import FinetuneConfig

    proc = subprocess.run([sys.executable, "-m", "xlm_jax.finetune", "--help-config"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    shown = {}
    for line in proc.stdout.splitlines():
        key, _, rest = line.partition(" = ")
        value, _, kind = rest.partition("  (")
        shown[key] = (ast.literal_eval(value), kind.split(")", 1)[0])
    def expected(obj, prefix=""):  # (key, default, type name) per field; a nested config's fields as section.key
        hints = __import__("typing").get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from expected(value, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", to_dict(value), type_name(hints[f.name])

    rows = list(expected(FinetuneConfig()))
    assert list(shown) == [key for key, _, _ in rows]
    assert "contrastive.temperature" in shown
    for key, value, kind in rows:
        assert shown[key] == (value, kind), key
    assert shown["train"] == ([], "list of str") and shown["lr"] == (2e-5, "float") and shown["pack"] == (True, "bool")
    assert "# -1: the checkpoint's" in next(line for line in proc.stdout.splitlines() if line.startswith("dropout ="))
