"""Output locations (issue #10, kind 1 and the output-path part of kind 4): no command destroys or changes what
it did not create.

Every command that writes is given, in turn: a directory holding the user's own files (refused: exit 2, one
`error:` line naming the directory and --force, every file byte-identical, nothing added, no staging directory
left beside it); its own earlier output (re-run works); the user's directory with --force (works); an output
path that is an existing file or lies under a file (exit 2, before any work). Commands run in-process through
their `main`."""

import errno
import hashlib
import json
import os
import struct
import sys
import types
from pathlib import Path

import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint + task builders

from xlm_jax.core import outputs
from xlm_jax.core.errors import UserError


# ---- helpers -----------------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 (or 'dir') of everything under root, hidden files included."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def user_dir(path: Path) -> Path:
    """A directory holding the user's own work."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("my notes\n")
    (path / "draft.md").write_text("# draft\n")
    (path / "sub").mkdir()
    (path / "sub" / "data.bin").write_bytes(bytes(range(256)))
    return path


def call(main, argv: list[str], capsys) -> tuple[int, str]:
    """-> (exit code, stderr) of a command's main run in this process."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    return int(code or 0), capsys.readouterr().err


def write_mo(path: Path, pairs: dict[str, str]) -> None:
    """A minimal GNU .mo catalog (UTF-8 header + the pairs)."""
    entries = sorted({"": "Content-Type: text/plain; charset=UTF-8\n", **pairs}.items())
    ids = [k.encode() for k, _ in entries]
    strs = [v.encode() for _, v in entries]
    n = len(entries)
    orig_at, trans_at = 28, 28 + 8 * n
    data_at = trans_at + 8 * n
    blob, orig, trans = b"", [], []
    for table, items in ((orig, ids), (trans, strs)):
        for item in items:
            table.append((len(item), data_at + len(blob)))
            blob += item + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, orig_at, trans_at, 0, 0)
    body = b"".join(struct.pack("<2I", *e) for e in orig) + b"".join(struct.pack("<2I", *e) for e in trans)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body + blob)


# ---- inputs ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    tok = tiny_setup.make_tokenizer(d)
    ckpt = tiny_setup.make_checkpoint(d)
    corpus = d / "corpus"
    (corpus / "mono").mkdir(parents=True)
    for lang in ("en", "de"):
        (corpus / "mono" / f"{lang}.txt").write_text((d / f"{lang}.txt").read_text())
    from xlm_jax.data.__main__ import write_synthetic

    synth = d / "synth"
    synth.mkdir()
    write_synthetic(synth, n_langs=2, n_tokens=3000, n_pairs=1, vocab_size=100, seed=0)
    words = [("Open the file now", "Öffne die Datei jetzt"), ("Close the window please", "Schließe bitte das Fenster"),
             ("Save the document here", "Speichere das Dokument hier"), ("Print this page again", "Drucke diese Seite erneut"),
             ("The message was sent", "Die Nachricht wurde gesendet")]
    write_mo(d / "locale" / "de" / "LC_MESSAGES" / "app.mo", dict(words))
    train_file = tiny_setup.write_jsonl(d / "train.jsonl", tiny_setup.task_examples("en", 16, 1))
    metrics = d / "run_for_plot"
    metrics.mkdir()
    (metrics / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "kind": "train", "loss": 5.0 - s, "mlm/loss": 5.0 - s, "mlm/accuracy": 0.1 * s,
                    "tokens_per_s": 100.0, "tokens_per_s_per_device": 100.0}) + "\n" for s in range(1, 4)))
    return {"dir": d, "tok": tok, "ckpt": ckpt, "corpus": corpus, "synth": synth, "locale": d / "locale",
            "train": train_file, "metrics": metrics}


@pytest.fixture(scope="module")
def finetuned(inputs, tmp_path_factory):
    """A fine-tuning output (the checkpoint `evaluate task` reads)."""
    from xlm_jax import finetune as F

    out = tmp_path_factory.mktemp("ft") / "run"
    F.finetune(F.load_config(None, finetune_args(inputs, out)), log=lambda m: None)
    return out


def finetune_args(inputs, out) -> list[str]:
    return ["task=classification", f"init={inputs['ckpt']}", f"tokenizer={inputs['tok']}", f"out={out}",
            f"train=[{inputs['train']}]", "max_steps=1", "batch_size=8", "log_every=1"]


def train_args(inputs, run_dir, *extra) -> list[str]:
    return [f"data.dir={inputs['synth']}", f"run_dir={run_dir}", "train.steps=2", "optimizer.warmup_steps=1",
            "train.batch_size=2", "train.seq_len=16", "train.eval_every=0", "train.progress=false", "checkpoint.keep_best=false",
            "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=32",
            "model.max_positions=32", "data.objectives={mlm: 1.0}", *extra]


# ---- the commands ------------------------------------------------------------------------------------------------
# name -> (how it treats a directory given --force: "replace" (write_atomically) or "into" (claim_dir),
#          argv builder (inputs, out) -> (main, argv), what a complete output holds)


def _preprocess(inputs, out):
    from xlm_jax.preprocess import main

    return main, [inputs["corpus"], "--tokenizer", inputs["tok"], "--out", out, "--workers", "1"]


def _gettext(inputs, out):
    from xlm_jax.data.gettext import main

    return main, [out, "--locale-dirs", inputs["locale"], "--min-pairs", "3", "--workers", "1"]


def _tfds(inputs, out):
    from xlm_jax.data.tfds_source import main

    return main, ["wiki40b/de", out]


def _synth(inputs, out):
    from xlm_jax.data.__main__ import main

    return main, ["synth", out, "--langs", "2", "--tokens", "1000", "--para-pairs", "1", "--vocab-size", "100"]


def _convert(inputs, out):
    from xlm_jax.convert import main

    return main, [inputs["ckpt"], out, "--to", "hf"]


def _train(inputs, out):
    from xlm_jax.train import main

    return main, train_args(inputs, out)


def _finetune(inputs, out):
    from xlm_jax.finetune import main

    return main, finetune_args(inputs, out)


def _evaluate(inputs, out):
    from xlm_jax.evaluate import main

    return main, ["task", "--checkpoint", inputs["finetuned"], "--tokenizer", inputs["tok"], "--data",
                  inputs["train"], "--out", out]


def _bench(inputs, out):
    from xlm_jax.bench.__main__ import main

    return main, ["--smoke", "--out", out]


COMMANDS = {
    "preprocess": ("replace", _preprocess, ["manifest.json", "train"]),
    "data.gettext": ("replace", _gettext, ["stats.json", "para", "mono"]),
    "data.tfds_source": ("replace", _tfds, ["mono"]),
    "data.synth": ("replace", _synth, ["manifest.json", "train"]),
    "convert": ("replace", _convert, ["config.json", "model.safetensors"]),
    "train": ("into", _train, ["config.yaml", "checkpoints", "metrics.jsonl", "tokenizer_record.json"]),
    "finetune": ("into", _finetune, ["best", "results.json", "finetune_config.json"]),
    "evaluate": ("into", _evaluate, ["results.md", "results.json"]),
    "bench": ("into", _bench, ["bench.json"]),
}
# Refusals happen before any work, so every command is tried on a user's directory; a complete run (re-run and
# --force) is tried where it costs seconds (train and bench have their own end-to-end tests).
RUNS = ["preprocess", "data.gettext", "data.tfds_source", "data.synth", "convert", "finetune", "evaluate", "bench",
        "train"]


@pytest.fixture
def fake_backends(monkeypatch):
    """tfds without TensorFlow; bench without its framework workers (its own tests run those)."""
    from xlm_jax.bench import __main__ as bench  # the command's own names: what its main() calls
    from xlm_jax.data import tfds_source

    examples = [{"text": b"_START_ARTICLE_\nTitel\n_START_PARAGRAPH_\nEin Satz._NEWLINE_Noch einer."}] * 3
    builder = types.SimpleNamespace(builder_config=None, info=types.SimpleNamespace(splits={}))
    fake = types.SimpleNamespace(load=lambda name, split, data_dir: examples, as_numpy=lambda ds: ds,
                                 builder=lambda name, data_dir: builder)
    monkeypatch.setattr(tfds_source, "_import_tfds", lambda: fake)

    def run_config(config, settings, workdir, log):
        (workdir / f"{config.name}.log").write_text("fake\n")
        return {"config": config.name, "frameworks": {fw: {"train_tokens_per_s": 1.0} for fw in settings.sides}}

    monkeypatch.setattr(bench, "run_config", run_config)
    monkeypatch.setattr(bench, "format_table", lambda results, smoke=False: "table")
    monkeypatch.setattr(bench, "plot", lambda results, path, smoke=False: Path(path).write_bytes(b"png"))


@pytest.fixture
def env(inputs, finetuned, fake_backends, tmp_path, monkeypatch):
    monkeypatch.setenv("XLM_JAX_CACHE", str(tmp_path / "cache"))
    return {**inputs, "finetuned": finetuned}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_directory_of_user_files_is_refused_and_left_untouched(name, env, tmp_path, capsys):
    out = user_dir(tmp_path / "mine")
    before, around = snapshot(out), sorted(os.listdir(tmp_path))
    main, argv = COMMANDS[name][1](env, out)
    code, err = call(main, argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(out) in err and "--force" in err and "nothing was changed" in err
    assert snapshot(out) == before  # every file byte-identical, nothing added
    assert sorted(os.listdir(tmp_path)) == around  # no staging directory beside it, no cache built


@pytest.mark.parametrize("name", RUNS)
def test_rerun_on_own_output_and_force(name, env, tmp_path, capsys, monkeypatch):
    how, build, expected = COMMANDS[name]
    monkeypatch.chdir(tmp_path)  # relative output paths, as in `python -m xlm_jax.train` (runs/default)
    out = Path("out")
    main, argv = build(env, out)
    code, err = call(main, argv, capsys)
    assert code == 0, err
    assert all((out / e).exists() for e in expected), sorted(os.listdir(out))
    assert json.loads((out / outputs.MARKER).read_text())["command"] == name
    code, err = call(main, argv, capsys)  # its own output: an idempotent re-run (or a resume)
    assert code == 0, err
    assert all((out / e).exists() for e in expected)
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".out")]
    assert not leftovers  # no staging or old copies left beside it

    mine = user_dir(Path("mine"))
    main, argv = build(env, mine)
    code, err = call(main, argv + ["--force"], capsys)
    assert code == 0, err
    assert all((mine / e).exists() for e in expected)
    # --force: a one-go output replaces the directory; an incremental one writes into it, keeping the rest.
    assert (mine / "notes.txt").exists() == (how == "into")


def test_finetune_refuses_a_pretraining_run_directory(env, tmp_path, capsys):
    from xlm_jax.finetune import main

    run = tmp_path / "pretrain"
    run.mkdir()
    outputs.write_marker(run, "train")
    (run / "best" / "30" / "params").mkdir(parents=True)
    (run / "best" / "30" / "params" / "x").write_text("keep-best weights")
    legacy = tmp_path / "legacy_pretrain"  # a run directory from before markers
    legacy.mkdir()
    (legacy / "config.yaml").write_text("# resolved config; re-run: python -m xlm_jax.train ...\nseed: 0\n")
    (legacy / "checkpoints").mkdir()
    for d, what in ((run, "the output of `train`"), (legacy, "did not write")):
        before = snapshot(d)
        code, err = call(main, finetune_args(env, d), capsys)
        assert code == 2 and str(d) in err and what in err and "--force" in err, err
        assert snapshot(d) == before


def test_earlier_outputs_without_a_marker_are_recognised(tmp_path):
    from xlm_jax.pretrain.setup import is_train_run

    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "manifest.json").write_text("{}")
    assert outputs.check_dir(pre, "preprocess", legacy="manifest.json") == pre
    with pytest.raises(UserError, match="pass --force"):  # another command's signature is not enough
        outputs.check_dir(pre, "data.gettext", legacy="stats.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("# resolved config; re-run: python -m xlm_jax.train runs/x/config.yaml\n")
    assert outputs.check_dir(run, "train", legacy=is_train_run) == run
    own = tmp_path / "own_config"  # a user's own config.yaml is not a run directory
    own.mkdir()
    (own / "config.yaml").write_text("train:\n  steps: 10\n")
    with pytest.raises(UserError, match="files that `train` did not write \\(config.yaml\\)"):
        outputs.check_dir(own, "train", legacy=is_train_run)


@pytest.mark.parametrize("case", ["is_a_file", "under_a_file"])
@pytest.mark.parametrize("name", ["train", "finetune", "evaluate", "preprocess", "convert", "bench"])
def test_output_path_that_is_or_lies_under_a_file(name, case, env, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file of the user")
    out = blocker if case == "is_a_file" else blocker / "sub" / "out"
    main, argv = COMMANDS[name][1](env, out)
    for force in ([], ["--force"]):  # --force never turns a file into a directory
        code, err = call(main, argv + force, capsys)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1 and "blocker" in err
        assert "not a directory" in err or "is not a directory" in err, err
    assert blocker.read_text() == "a file of the user"
    assert sorted(os.listdir(tmp_path)) == ["blocker"]  # nothing built: no data cache, no staging


@pytest.mark.parametrize("name", ["train", "finetune", "preprocess", "evaluate"])
def test_read_only_location_is_refused_before_work(name, env, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root ignores permission bits: make the check see what a user would
        real_access = os.access
        monkeypatch.setattr(outputs.os, "access", lambda p, mode: Path(p) != ro and real_access(p, mode))
    for target in (ro, ro / "new"):
        ro.chmod(0o500)
        try:
            main, argv = COMMANDS[name][1](env, target)
            code, err = call(main, argv, capsys)
        finally:
            ro.chmod(0o700)
        assert code == 2 and "cannot write in" in err and "permission denied" in err, err
        assert os.listdir(ro) == []


def test_train_checks_run_dir_before_preparing_data(tmp_path, capsys, monkeypatch):
    """The default run builds a corpus, a tokenizer and arrays first (minutes): a bad run_dir must fail at once."""
    from xlm_jax.train import main

    monkeypatch.setenv("XLM_JAX_CACHE", str(tmp_path / "cache"))
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    code, err = call(main, [f"run_dir={blocker}"], capsys)
    assert code == 2 and "runs: exists and is not a directory" in err, err
    code, err = call(main, [f"run_dir={user_dir(tmp_path / 'mine')}"], capsys)
    assert code == 2 and "mine: exists and holds files" in err, err
    assert not (tmp_path / "cache").exists()


def test_tokenizer_train_never_replaces_a_model_or_vocab_without_force(inputs, tmp_path, capsys):
    from xlm_jax.tokenizer import main

    files = [inputs["dir"] / f"{lang}.txt" for lang in ("en", "de", "fr")]  # as tiny_setup trains it
    argv = ["train", "--input", *files, "--vocab-size", "60", "--quiet", "--output"]
    for existing in ("t.model", "t.vocab"):
        d = tmp_path / existing.replace(".", "_")
        d.mkdir()
        (d / existing).write_text("the user's own file")
        code, err = call(main, argv + [d / "t.model"], capsys)
        assert code == 2 and f"{d / existing}: exists" in err and "--force" in err, err
        assert sorted(os.listdir(d)) == [existing] and (d / existing).read_text() == "the user's own file"
        code, err = call(main, argv + [d / "t.model", "--force"], capsys)
        assert code == 0, err
        assert sorted(os.listdir(d)) == ["t.model", "t.vocab"]  # no temporary file left beside them
    (tmp_path / "x.model").mkdir()  # a directory where the model would go
    code, err = call(main, argv + [tmp_path / "x.model"], capsys)
    assert code == 2 and "is a directory" in err


def test_plot_out_never_replaces_a_file_without_force(inputs, tmp_path, capsys):
    from xlm_jax.plot import main

    run = inputs["metrics"]
    mine = tmp_path / "figure.png"
    mine.write_bytes(b"my figure")
    code, err = call(main, [run, "--out", mine], capsys)
    assert code == 2 and str(mine) in err and "--force" in err
    assert mine.read_bytes() == b"my figure"
    code, err = call(main, [run, "--out", mine, "--force"], capsys)
    assert code == 0 and mine.read_bytes()[:4] == b"\x89PNG"
    for _ in range(2):  # the run's own plot is redrawn every time
        code, err = call(main, [run], capsys)
        assert code == 0 and (run / "metrics.png").stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]


def test_preprocess_refuses_to_overwrite_its_inputs_even_with_force(inputs, tmp_path, capsys):
    from xlm_jax.preprocess import main

    corpus = tmp_path / "corpus"
    (corpus / "mono").mkdir(parents=True)
    (corpus / "mono" / "en.txt").write_text((inputs["dir"] / "en.txt").read_text())
    before = snapshot(corpus)
    for out in (corpus, corpus.parent, corpus / "mono" / "pre"):
        code, err = call(main, [corpus, "--tokenizer", inputs["tok"], "--out", out, "--workers", "1", "--force"],
                         capsys)
        assert code == 2 and "overlaps the corpus" in err, err
    assert snapshot(corpus) == before


def test_a_full_disk_while_writing_a_one_go_output_leaves_the_old_one(inputs, tmp_path, capsys, monkeypatch):
    from xlm_jax.data import preprocess  # the library, whose _save fails below
    from xlm_jax.preprocess import main  # the command

    out = tmp_path / "pre"
    argv = [inputs["corpus"], "--tokenizer", inputs["tok"], "--out", out, "--workers", "1"]
    assert call(main, argv, capsys)[0] == 0
    before = snapshot(out)
    (inputs["corpus"] / "mono" / "en.txt").touch()  # a changed input: the output is rebuilt

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(preprocess, "_save", full)
    code, err = call(main, argv, capsys)
    assert code == 2, err
    assert f"{out}: could not write the output" in err and "No space left on device" in err and "free" in err
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["pre"]


def test_outputs_api_messages(tmp_path):
    mine = user_dir(tmp_path / "mine")
    with pytest.raises(UserError, match=r"mine: exists and holds files that `x` did not write \(draft.md, notes.txt"):
        outputs.claim_dir(mine, "x")
    assert outputs.claim_dir(mine, "x", force=True) == mine and (mine / outputs.MARKER).is_file()
    assert outputs.claim_dir(mine, "x") == mine  # now it is x's
    with pytest.raises(UserError, match="holds the output of `x`"):
        outputs.check_dir(mine, "y")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert outputs.check_dir(empty, "y") == empty
    err = outputs.as_user_error(ValueError("RESOURCE_EXHAUSTED: Failed to write 4 bytes: No space left on device "
                                           "[os_error_code='28']"), tmp_path)
    assert isinstance(err, UserError) and "No space left on device" in str(err) and "free on that disk" in str(err)
    bug = KeyError("x")
    assert outputs.as_user_error(bug, tmp_path) is bug


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
