"""Fine-tuning stops and resumes like pretraining (`xlm_jax.workflows.finetune_resume`): SIGINT / SIGTERM save the
state after the step in hand to OUT/resume/<step>, name it in one line and exit 130 / 143; re-running the same
command resumes to the result of an uninterrupted run (classification, NER, QA); a changed config is refused; a
finished output is not trained again; a second signal ends at once."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint + task builders
from test_finetune import _ner_sentences
from test_qa import squad_file

from xlm_jax.finetune import main as finetune_main
from xlm_jax.training import checkpoint as ckpt_lib
from xlm_jax.training.checkpoint import restore_params
from xlm_jax.workflows import finetune as F

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft_resume")
    tok, ckpt = tiny_setup.make_tokenizer(d), tiny_setup.make_checkpoint(d)
    cls_train = tiny_setup.write_jsonl(d / "train.jsonl", tiny_setup.task_examples("en", 40, 1))
    cls_valid = tiny_setup.write_jsonl(d / "valid.jsonl", [e for lang in ("en", "de") for e in
                                                           tiny_setup.task_examples(lang, 12, 3)])
    (d / "ner_train.txt").write_text(_ner_sentences("en", 24, 0))
    (d / "ner_valid.txt").write_text(_ner_sentences("en", 12, 1))
    squad_file(d / "qa_train.json", "en", 24, 1, long_every=6)
    squad_file(d / "qa_valid.json", "en", 12, 2, long_every=4)
    squad_file(d / "qa_de.json", "de", 8, 3)
    common = dict(init=str(ckpt), tokenizer=str(tok), lr=2e-3, batch_size=8, eval_batch_size=16, dropout=0.1,
                  log_every=1, max_steps=8, eval_every=3)
    return {
        "classification": dict(common, task="classification", train=[str(cls_train)], valid=[str(cls_valid)],
                               test=[str(cls_valid)]),
        "ner": dict(common, task="ner", train=[str(d / "ner_train.txt")], valid=[str(d / "ner_valid.txt")],
                    labels=["O", "B-LOC", "I-LOC", "B-MISC"]),
        "qa": dict(common, task="qa", train=[f"en:{d / 'qa_train.json'}"], valid=[f"en:{d / 'qa_valid.json'}"],
                   test=[f"en:{d / 'qa_valid.json'}", f"de:{d / 'qa_de.json'}"], max_len=48, max_query_len=12,
                   doc_stride=16),
    }


def args(base: dict, out: Path, **kw) -> list[str]:
    return [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in {**base, "out": str(out), **kw}.items()]


def signal_at(monkeypatch, step: int, signum: int, module=F) -> None:
    """The test hook: the training step sends `signum` to this process during step `step` (as Ctrl-C or a
    scheduler would), so the loop sees it after that step. `module`: the loop's module, whose `make_step` is
    replaced (fine-tuning's by default; tests/test_train_mt.py passes `xlm_jax.mt.loop`, where a step is an
    update)."""
    real = module.make_step

    def make_step(*a, **kw):
        train_step = real(*a, **kw)
        calls = []

        def step_fn(state, batch, rng):
            calls.append(1)
            if len(calls) == step:
                os.kill(os.getpid(), signum)
            return train_step(state, batch, rng)

        return step_fn

    monkeypatch.setattr(module, "make_step", make_step)


def digest(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def log_without_times(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
            for line in (out / "log.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    """Same results, predictions, selection, logged metrics and best parameters (1e-6)."""
    ra, rb = json.loads((a / "results.json").read_text()), json.loads((b / "results.json").read_text())
    assert ra == rb
    assert (a / "results.md").read_text() == (b / "results.md").read_text()
    if (a / "predictions.json").exists():
        assert (a / "predictions.json").read_text() == (b / "predictions.json").read_text()
    la, lb = log_without_times(a), log_without_times(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for x, y in zip(la, lb):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float):
                assert x[k] == pytest.approx(y[k], rel=1e-6, abs=1e-6), (x["step"], k)
            else:
                assert x[k] == y[k], (x["step"], k)
    pa, _ = restore_params(a / "best")
    pb, _ = restore_params(b / "best")
    assert sorted(p.name for p in (a / "best").iterdir()) == sorted(p.name for p in (b / "best").iterdir())
    for u, v in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def uninterrupted(setup, tmp_path_factory):
    runs = {}

    def get(task: str) -> Path:
        if task not in runs:
            out = tmp_path_factory.mktemp("whole") / task
            finetune_main(args(setup[task], out))
            runs[task] = out
        return runs[task]

    return get


@pytest.mark.parametrize("task, at, signum", [("classification", 4, signal.SIGTERM), ("qa", 5, signal.SIGINT),
                                              ("ner", 3, signal.SIGTERM)])
def test_a_stopped_run_resumes_to_the_uninterrupted_result(task, at, signum, setup, uninterrupted, tmp_path,
                                                           monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        signal_at(m, at, signum)
        with pytest.raises(SystemExit) as exit_:
            finetune_main(args(setup[task], out))
    captured = capsys.readouterr()
    assert exit_.value.code == 128 + signum, captured.err
    name = signal.Signals(signum).name
    assert (f"{name}: stopped after step {at}; checkpoint {out / 'resume' / str(at)} saved. Re-run the same command "
            "to resume.") in captured.out
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in (out / "resume").iterdir()) == [str(at)]
    assert not (out / "results.json").exists()
    assert max(r["step"] for r in log_without_times(out)) == at
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back

    finetune_main(args(setup[task], out))  # the same command: resumes
    printed = capsys.readouterr().out
    assert f"resuming from step {at}" in printed and "step 1/" not in printed and f"step {at + 1}/8" in printed
    assert not (out / "resume").exists()  # a finished output holds only what it always held
    assert_same_run(uninterrupted(task), out)


def test_a_signal_during_the_final_evaluation_saves_the_last_step(setup, uninterrupted, tmp_path, monkeypatch,
                                                                  capsys):
    out = tmp_path / "run"
    real, calls = F.evaluate_features, []

    def evaluate(*a, **kw):
        calls.append(1)
        if len(calls) == 4:  # validations at steps 3, 6, 8, then the final valid scoring
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(F, "evaluate_features", evaluate)
        with pytest.raises(SystemExit) as exit_:
            finetune_main(args(setup["classification"], out))
    assert exit_.value.code == 143
    assert f"SIGTERM: stopped after step 8; checkpoint {out / 'resume' / '8'} saved" in capsys.readouterr().out
    finetune_main(args(setup["classification"], out))
    printed = capsys.readouterr().out
    assert "resuming from step 8" in printed and "step 8/8" not in printed  # nothing trained again
    assert_same_run(uninterrupted("classification"), out)


def test_patience_stop_is_kept_across_a_resume(setup, tmp_path, monkeypatch, capsys):
    """A run stopped early by patience, then signalled during its final scoring, does not train on when resumed."""
    base = dict(setup["classification"], lr=1e-12, eval_every=1, patience=2, max_steps=20)
    whole = tmp_path / "whole"
    finetune_main(args(base, whole))
    out = tmp_path / "run"
    real, calls = F.evaluate_features, []

    def evaluate(*a, **kw):
        calls.append(1)
        if len(calls) == 4:  # validations at steps 1, 2, 3 (early stop), then the final valid scoring
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **kw)

    with monkeypatch.context() as m:
        m.setattr(F, "evaluate_features", evaluate)
        with pytest.raises(SystemExit) as exit_:
            finetune_main(args(base, out))
    assert exit_.value.code == 130 and (out / "resume" / "3").is_dir()
    finetune_main(args(base, out))
    assert "step 4/" not in capsys.readouterr().out
    table = json.loads((out / "results.json").read_text())
    assert table["stopped_early"] and table["steps"] == 3
    assert_same_run(whole, out)


def test_a_changed_config_is_refused_and_a_finished_run_is_not_trained_again(setup, tmp_path, monkeypatch, capsys):
    base = setup["classification"]
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        signal_at(m, 2, signal.SIGTERM)
        with pytest.raises(SystemExit):
            finetune_main(args(base, out))
    capsys.readouterr()
    before = digest(out)
    for change, words in [({"lr": 0.004}, ["lr: 0.002 -> 0.004"]),
                          ({"max_steps": 9, "seed": 1}, ["max_steps: 8 -> 9", "seed: 0 -> 1"]),
                          ({"train": [base["valid"][0]]}, ["train: "])]:
        with pytest.raises(SystemExit) as exit_:
            finetune_main(args(base, out, **change))
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        for word in ["cannot resume", str(out), "stopped after step 2", *words, "delete", str(out / "resume")]:
            assert word in err, (word, err)
        assert digest(out) == before  # nothing read, nothing written
    # Keys that do not change the steps taken may change: noted, and the run resumes.
    finetune_main(args(base, out, eval_batch_size=8))
    printed = capsys.readouterr().out
    assert "config changed since the stopped run: eval_batch_size: 16 -> 8" in printed
    assert "resuming from step 2" in printed and (out / "results.json").exists()

    # Finished: the same command trains nothing, changes nothing and shows the stored results.
    finished = digest(out)
    finetune_main(args(base, out, eval_batch_size=8))
    printed = capsys.readouterr().out
    assert f"{out} is complete (8 steps, best step" in printed and "nothing to train" in printed
    assert (out / "results.md").read_text().splitlines()[0] in printed and "step 1/8" not in printed
    assert digest(out) == finished
    # Another config on a finished output: trained again from step 0, saying so.
    finetune_main(args(base, out, eval_batch_size=8, max_steps=3))
    printed = capsys.readouterr().out
    assert "holds a finished fine-tuning of another config (max_steps: 8 -> 3)" in printed and "step 1/3" in printed
    assert json.loads((out / "results.json").read_text())["steps"] == 3


def test_a_damaged_resume_state_names_what_to_delete(setup, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        signal_at(m, 2, signal.SIGTERM)
        with pytest.raises(SystemExit):
            finetune_main(args(setup["classification"], out))
    capsys.readouterr()
    (out / "resume" / "2" / "train_meta" / "metadata").write_text("{not json")
    with pytest.raises(SystemExit) as exit_:
        finetune_main(args(setup["classification"], out))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "is damaged" in err and f"delete {out / 'resume'}" in err, err


DRIVER = """
import sys, time
from xlm_jax.workflows import finetune as F
real = F.make_step
def make_step(*a, **kw):
    train_step = real(*a, **kw)
    def slow(state, batch, rng):
        out = train_step(state, batch, rng)
        time.sleep(0.5)  # time for the test to signal between steps
        return out
    return slow
F.make_step = make_step
from xlm_jax.finetune import main
main(sys.argv[1:])
"""


def _start(argv: list[str], env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", DRIVER, *argv], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(proc: subprocess.Popen, text: str, seen: list[str], timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return
    proc.kill()
    raise AssertionError(f"never saw {text!r}: {''.join(seen)[-2000:]} {proc.stderr.read()[-2000:]}")


def signal_until_exit(proc: subprocess.Popen, signum: int, timeout: float = 60) -> None:
    """Sends `signum` every 20 ms until `proc` ends (then reaps it): signals arriving while the main thread is inside
    one XLA call reach Python's handler as one, so a fixed number of them could be merged into one."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        proc.send_signal(signum)
        time.sleep(0.02)
    proc.communicate(timeout=120)


@pytest.mark.slow
def test_ctrl_c_from_outside_saves_and_a_second_signal_ends_at_once(setup, tmp_path):
    out = tmp_path / "run"
    argv = args(setup["classification"], out, max_steps=200, eval_every=100)
    proc, seen = _start(argv), []
    _wait_for(proc, "step 2/200", seen)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    out_text = "".join(seen) + rest
    assert proc.returncode == 130, err
    assert "SIGINT: stopped after step" in out_text and "Traceback" not in err and "KeyboardInterrupt" not in err
    step = int(out_text.split("SIGINT: stopped after step ")[1].split(";")[0])
    assert sorted(p.name for p in (out / "resume").iterdir()) == [str(step)]
    saved = digest(out / "resume" / str(step))

    # Resumed, then signals in quick succession: the first is taken, a later one ends the process at once (it lands
    # during the first one's save, held open 3 s by the test hook, which is left a temporary directory orbax never
    # renamed), and the complete checkpoint is kept. Signals are repeated until the process ends: two that arrive
    # while the main thread is inside one XLA call reach Python's handler as one.
    proc, seen = _start(argv, env={ckpt_lib.SAVE_DELAY_ENV: "3"}), []
    _wait_for(proc, f"step {step + 1}/200", seen)
    signal_until_exit(proc, signal.SIGTERM)
    assert proc.returncode == -signal.SIGTERM
    assert [p.name for p in (out / "resume").iterdir() if p.name.isdigit()] == [str(step)]
    assert digest(out / "resume" / str(step)) == saved
    assert F.finetune_resume.resume_step(out) == step  # what a re-run resumes from
