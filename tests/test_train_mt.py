"""`python -m xlm_jax.train_mt` (xlm_jax/mt, training/seq2seq.py): bad input refused before work, the batching
and noise plumbing, no gradient through back-translation's generation, an exact resume in the middle of an
unsupervised (denoising + back-translation) run, and what `train` guarantees (tests/test_train.py,
tests/test_finetune_resume.py test the same for `train` / `finetune`): NaN / inf -> exit 3 with nothing saved
after the last good checkpoint; SIGTERM -> a checkpoint, exit 143, and a re-run ending as an uninterrupted run;
train.grad_accum = the update of the whole batch; RUN_DIR/best follows train.metric; a finished run is not
trained again. Tiny synthetic en/fr corpus, CPU."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xlm_jax.data.noise import NoiseConfig
from xlm_jax.models.config import encoder_decoder_config, get_model_config
from xlm_jax.models.decoder import EncoderDecoder, init_params
from xlm_jax.models.decoding import start_token
from xlm_jax.mt import data as mtdata
from test_finetune_resume import _wait_for, digest, signal_at, signal_until_exit

from xlm_jax.mt import loop
from xlm_jax.mt.config import load_mt_config
from xlm_jax.mt.loop import train_mt
from xlm_jax.train_mt import main as train_mt_main
from xlm_jax.training import checkpoint as ckpt_lib
from xlm_jax.training.metrics import read_metrics
from xlm_jax.training.seq2seq import back_translate, seq2seq_loss

WORDS = {"en": "the cat dog house open file print page save document window close error message".split(),
         "fr": "le chat chien maison ouvrir fichier imprimer page enregistrer document fenêtre fermer erreur "
               "message".split()}


def write_corpus(root: Path, n: int = 200, drop_last_fr: bool = False) -> Path:
    """para/en-fr.{en,fr}: n word-for-word aligned lines of 1 to 6 words."""
    rng = random.Random(0)
    lines = {"en": [], "fr": []}
    for _ in range(n):
        idx = [rng.randrange(len(WORDS["en"])) for _ in range(rng.randint(1, 6))]
        for lang in lines:
            lines[lang].append(" ".join(WORDS[lang][j] for j in idx))
    if drop_last_fr:
        lines["fr"].pop()
    (root / "para").mkdir(parents=True)
    for lang, text in lines.items():
        (root / "para" / f"en-fr.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("mt") / "corpus")


@pytest.fixture(scope="module")
def tokenizer(corpus) -> Path:
    from xlm_jax.data.tokenizer import train_tokenizer

    out = corpus.parent / "t.model"
    train_tokenizer([str(corpus / "para" / "en-fr.en"), str(corpus / "para" / "en-fr.fr")], 40, str(out))
    return out


def tiny(corpus: Path, tokenizer: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"data.corpus={corpus}", f"data.tokenizer={tokenizer}", f"run_dir={run_dir}", "data.max_len=16",
            "data.width_bucket=16", "data.tokens_per_batch=128", "data.valid_sentences=0", "train.progress=false",
            "train.log_every=1", "checkpoint.every=2", "optimizer.warmup_steps=2", *extra]


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("extra, message", [
    (["objectives.lambda_ae=0:1,x:2"], "objectives.lambda_ae='0:1,x:2': step 'x'"),
    (["objectives.lambda_bt=100:1,50:0"], "objectives.lambda_bt='100:1,50:0'"),
    (["data.max_len=2"], "data.max_len"),
    (["objectives.mt=[en-de]"], "objectives.mt=[en-de], objectives.ae=[en, fr]: corpus "),
    (["objectives.mt=[en-de]"], "has no data for ['de']"),
    (["objectives.bt=[en-fr-de]"], "objectives.bt='en-fr-de'"),
    (["data.tokens_per_batch=8"], "data.tokens_per_batch=8 is below data.max_len=16"),
    (["optimizer.schedule=linear", "optimizer.warmup_steps=50", "train.steps=4"],
     "train.steps x updates per iteration=12 must exceed optimizer.warmup_steps=50 for schedule='linear': lower the "
     "warm-up (e.g. optimizer.warmup_steps=1)"),
])
def test_bad_config_is_one_error_line_exit_2_nothing_written(corpus, tokenizer, tmp_path, capsys, extra, message):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        train_mt_main(tiny(corpus, tokenizer, run_dir, "objectives.ae=[en,fr]", *extra))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not run_dir.exists()


def test_unaligned_parallel_sides_are_refused(tokenizer, tmp_path, capsys):
    bad = write_corpus(tmp_path / "bad", n=20, drop_last_fr=True)
    with pytest.raises(SystemExit) as exit_:
        train_mt_main(tiny(bad, tokenizer, tmp_path / "run"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "not line-aligned" in err and "20 lines" in err and "19" in err, err
    assert not (tmp_path / "run").exists()


def test_languages_the_model_lacks_are_refused_before_the_corpus_is_read(tmp_path):
    """`prepare` checks the MLM's config (read from model.init_from) with `_check_mlm` before the corpus: the
    config of an xlm_tiny MLM (languages de, en, fr) stands in for a checkpoint."""
    from xlm_jax.core.errors import UserError
    from xlm_jax.mt.loop import _check_mlm

    cfg = load_mt_config(None, [f"run_dir={tmp_path / 'run'}", "model.init=mlm", "model.init_from=mlm_ckpt",
                                "objectives.mt=[en-ro]"])
    mlm = get_model_config("xlm_tiny")
    with pytest.raises(UserError, match=r"\['ro'\], which the model lacks \(its languages: \['de', 'en', 'fr'\]\)"):
        _check_mlm(cfg, mlm, cfg.objectives.langs())
    with pytest.raises(UserError, match="model.init_from=mlm_ckpt: an XLM-family checkpoint without language "
                                        "embeddings"):
        _check_mlm(cfg, mlm.replace(use_lang_emb=False), cfg.objectives.langs())
    assert _check_mlm(cfg, get_model_config("xlmr_tiny"), ["en", "ro"]).langs == ("en", "ro")  # XLM-R: no table
    assert not (tmp_path / "run").exists()


def test_init_from_is_required_for_mlm_init(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_mt_main([f"run_dir={tmp_path / 'run'}", "model.init=mlm"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "model.init='mlm' needs model.init_from" in err and err.count("\n") == 1, err


# ------------------------------------------------------------------------------------------ batches and noise


def test_token_batches_keep_the_budget_and_are_a_pure_function_of_seed_and_k():
    widths = np.random.default_rng(0).integers(3, 30, 500)
    b = mtdata.TokenBatches.build(widths, 256, 8, 2, seed=5, stream=7)
    seen = np.concatenate([idx[idx >= 0] for _, idx in b.batches])
    assert sorted(seen.tolist()) == list(range(500))  # every sentence once per epoch
    for w, idx in b.batches:
        assert w % 8 == 0 and len(idx) % 2 == 0 and len(idx) * w <= 256
        assert (mtdata.bucket(widths[idx[idx >= 0]], 8) == w).all()  # grouped by padded width
    again = mtdata.TokenBatches.build(widths, 256, 8, 2, seed=5, stream=7)
    n = len(b.batches)
    for k in (1, 2, n, n + 1, 3 * n + 4):
        assert b.at(k)[0] == again.at(k)[0] and (b.at(k)[1] == again.at(k)[1]).all()
    epoch = {tuple(b.at(k)[1]) for k in range(1, n + 1)}
    assert len(epoch) == n  # an epoch visits every batch once
    other = mtdata.TokenBatches.build(widths, 256, 8, 2, seed=6, stream=7)
    assert any(b.at(k)[0] != other.at(k)[0] or not np.array_equal(b.at(k)[1], other.at(k)[1]) for k in range(1, 6))


def test_denoising_keeps_delimiters_and_padding_rows():
    eos, pad, mask_id = 2, 1, 5
    sentences = [np.arange(10, 10 + n, dtype=np.int32) for n in (1, 4, 9)]
    ids, mask = mtdata.pad_rows(sentences, np.array([0, 1, -1, 2]), 12, eos, eos, pad)
    for seed in range(20):
        out, out_mask = mtdata.noisy(ids, mask, NoiseConfig(3, 0.3, 0.3), pad, mask_id, np.random.default_rng(seed))
        np.testing.assert_array_equal(out[2], ids[2])  # the padding row stays padding, mask 0
        assert out_mask[2].sum() == 0
        for r in (0, 1, 3):
            n = out_mask[r].sum()
            assert out[r, 0] == eos and out[r, n - 1] == eos and n >= 3  # delimiters kept, at least one word
            assert (out[r, n:] == pad).all()


# ------------------------------------------------------------------------------------------ back-translation


def _tiny_model(dropout: float = 0.0):
    enc = get_model_config("xlm_tiny", vocab_size=40, hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64,
                           max_positions=32, dropout=dropout, attention_dropout=dropout)
    cfg = encoder_decoder_config(enc, 1)
    model = EncoderDecoder(cfg)
    params = nn.unbox(init_params(model, jax.random.key(0)))
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
    return cfg, model, params


@pytest.mark.slow  # three compilations of a (tiny) encoder-decoder: minutes on a loaded 2-core machine
def test_back_translation_generation_gets_no_gradient_and_runs_without_dropout():
    cfg, model, params = _tiny_model(dropout=0.3)
    rng = np.random.default_rng(0)
    start, eos, pad = start_token(cfg.encoder), cfg.encoder.eos_token_id, cfg.encoder.pad_token_id
    sentences = [rng.integers(5, 40, n).astype(np.int32) for n in (3, 6, 2, 5)]
    clean, clean_mask = mtdata.pad_rows(sentences, np.arange(4), 8, start, eos, pad)
    en, fr = 1, 2
    langs = jnp.full(clean.shape, en, jnp.int32)

    gen, gen_mask = back_translate(model, params, jnp.asarray(clean), jnp.asarray(clean_mask), langs, fr, 12)
    # Dropout off (greedy decoding takes no dropout key): a second call writes the same text.
    again, _ = back_translate(model, params, jnp.asarray(clean), jnp.asarray(clean_mask), langs, fr, 12)
    np.testing.assert_array_equal(np.asarray(gen), np.asarray(again))
    assert (np.asarray(gen)[:, 0] == start).all() and (np.asarray(gen_mask)[:, 0] == 1).all()

    loss = seq2seq_loss(model)
    key = jax.random.key(3)

    def batch_of(g, gm):
        return {"src": g, "src_mask": gm, "src_langs": jnp.full(g.shape, fr, jnp.int32), "tgt": jnp.asarray(clean),
                "tgt_mask": jnp.asarray(clean_mask), "tgt_langs": langs, "weight": jnp.ones((4,), jnp.float32)}

    def with_generation(p):  # the generation is inside the differentiated function ...
        g, gm = back_translate(model, p, jnp.asarray(clean), jnp.asarray(clean_mask), langs, fr, 12)
        b = batch_of(g, gm)
        return loss.fn(p, b, key, loss.totals(b))[0]

    def on_fixed_text(p):  # ... or its output is given as data: the same gradient, nothing flows through it
        b = batch_of(gen, gen_mask)
        return loss.fn(p, b, key, loss.totals(b))[0]

    g1, g2 = jax.jit(jax.grad(with_generation))(params), jax.jit(jax.grad(on_fixed_text))(params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):  # two programs: float reassociation only
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)
    # The generation's parameters are stop_gradient'ed: its tangent is zero even though it reads `params`.
    tangent = jax.tree.map(jnp.ones_like, params)
    _, jvp_out = jax.jvp(lambda p: jax.lax.stop_gradient(p)["decoder"], (params,), (tangent,))
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(jvp_out))
    # The training update's input is plain host data built after generation (no tracer, no graph kept).
    assert isinstance(np.asarray(gen), np.ndarray) and gen.dtype == jnp.int32


# ------------------------------------------------------------------------------------------ resume


@pytest.mark.slow
def test_resume_in_the_middle_of_unsupervised_mt_equals_an_uninterrupted_run(corpus, tokenizer, tmp_path):
    """Denoising en + fr and back-translation en-fr-en with dropout, 4 iterations: a copy of the run cut back to
    its iteration-2 checkpoint (as if stopped there) and re-run gives the metrics and final parameters of the run
    that was not interrupted (the back-translations of iterations 3 and 4 are generated again from the restored
    parameters)."""
    common = ["objectives.mt=[]", "objectives.ae=[en,fr]", "objectives.bt=[en-fr-en]", "data.mono_split=true",
              "train.steps=4", "model.dropout=0.1", "model.decoder_layers=1", "checkpoint.keep=2"]
    straight = tmp_path / "straight"
    assert train_mt(load_mt_config(None, tiny(corpus, tokenizer, straight, *common))) == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / "4")
    assert ckpt_lib.manager(resumed / "checkpoints").latest_step() == 2
    assert train_mt(load_mt_config(None, tiny(corpus, tokenizer, resumed, *common))) == 0

    assert [r["step"] for r in records(resumed)] == [1, 2, 3, 4]
    assert records(straight) == records(resumed)
    assert {"ae_en/loss", "ae_fr/loss", "bt_en-fr-en/loss"} <= set(records(straight)[-1])
    assert_same_params(straight / "checkpoints", resumed / "checkpoints")


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock times."""
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in read_metrics(run_dir)]


def params_of(path: Path) -> list[np.ndarray]:
    params, _ = ckpt_lib.restore_params(path)
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def assert_same_params(a: Path, b: Path, atol: float = 0.0) -> None:
    for x, y in zip(params_of(a), params_of(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=atol, atol=atol)


def steps_in(directory: Path) -> list[int]:
    """The complete steps of an orbax directory (a save in flight is a temporary directory, not a step)."""
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


# ------------------------------------------------------------------------------------------ train's guarantees

# Supervised en-fr with dropout: 4 iterations, one update each, checkpoints at 2 and 4.
MT_RUN = ("train.steps=4", "model.decoder_layers=1", "model.dropout=0.1", "checkpoint.keep=10")


@pytest.fixture(scope="module")
def straight(corpus, tokenizer, tmp_path_factory) -> Path:
    """An uninterrupted run of MT_RUN."""
    run_dir = tmp_path_factory.mktemp("mt_straight") / "run"
    assert train_mt(load_mt_config(None, tiny(corpus, tokenizer, run_dir, *MT_RUN))) == 0
    return run_dir


def test_nan_loss_stops_with_exit_3_and_saves_nothing_after_the_last_good_checkpoint(corpus, tokenizer, tmp_path,
                                                                                   capsys):
    """tests/test_train.py's injection: a warm-up from 1e-7 to lr=1e30 with no clipping; update 1 is good, update 2
    blows the parameters up. Validation every iteration and a log only at the end: the NaN / inf is caught before
    the state is validated, kept as best or checkpointed, and no record is written for it."""
    run_dir = tmp_path / "nan"
    with pytest.raises(SystemExit) as exit_:
        train_mt_main(tiny(corpus, tokenizer, run_dir, "optimizer.lr=1e30", "optimizer.warmup_steps=2",
                           "optimizer.clip_norm=0", "checkpoint.every=1", "checkpoint.keep=10", "train.steps=6",
                           "train.log_every=6", "train.eval_every=1", "data.valid_sentences=8",
                           "train.valid_max_len=8", "model.decoder_layers=1"))
    err = capsys.readouterr().err
    assert exit_.value.code == 3, err
    assert "NaN / inf" in err and "last good checkpoint" in err and "Traceback" not in err, err
    bad = int(err.split(" at step ")[1].split(";")[0])
    assert 1 < bad < 6
    good = steps_in(run_dir / "checkpoints")
    assert good and max(good) < bad and f"The last good checkpoint is {run_dir / 'checkpoints' / str(max(good))}" in err
    assert all(np.isfinite(x).all() for x in params_of(run_dir / "checkpoints" / str(max(good))))
    assert all(step < bad for step in steps_in(run_dir / "best"))
    assert [r["step"] for r in read_metrics(run_dir) if r["kind"] == "valid"] == list(range(1, bad))


def test_sigterm_saves_a_checkpoint_exits_143_and_the_rerun_ends_as_an_uninterrupted_run(
        corpus, tokenizer, straight, tmp_path, monkeypatch, capsys):
    """The signal is sent from inside update 3 (tests/test_finetune_resume.py's `signal_at`): deterministic, one
    signal. The subprocess test below sends it from outside."""
    run_dir = tmp_path / "run"
    argv = tiny(corpus, tokenizer, run_dir, *MT_RUN)
    with monkeypatch.context() as m:
        signal_at(m, 3, signal.SIGTERM, module=loop)
        with pytest.raises(SystemExit) as exit_:
            train_mt_main(argv)
    out = capsys.readouterr().out
    assert exit_.value.code == 143
    assert (f"SIGTERM: stopped after iteration 3; checkpoint {run_dir / 'checkpoints' / '3'} saved. Re-run the same "
            "command to resume.") in out
    assert steps_in(run_dir / "checkpoints") == [2, 3]
    assert max(r["step"] for r in read_metrics(run_dir)) == 3
    with pytest.raises(SystemExit) as exit_:
        train_mt_main(argv)  # the same command: resumes
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "resuming from iteration 3" in out and "iteration 1:" not in out
    assert records(run_dir) == records(straight)
    assert_same_params(straight / "checkpoints", run_dir / "checkpoints")


DRIVER = """
import os, signal, sys, time
from xlm_jax.mt import loop
real = loop.make_step
def make_step(*a, **kw):
    train_step, calls = real(*a, **kw), []
    def step(state, batch, rng):
        calls.append(1)
        if len(calls) == int(os.environ["WAIT_AT_UPDATE"]):
            # Wait until the stop handler has run (StopSignals then restores SIG_DFL): the signal lands in this
            # update whatever the machine's load, and is never merged with another into one handler call.
            print("waiting for a signal", flush=True)
            deadline = time.time() + 300
            while signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL and time.time() < deadline:
                time.sleep(0.02)
        return train_step(state, batch, rng)
    return step
loop.make_step = make_step
from xlm_jax.train_mt import main
main(sys.argv[1:])
"""


def _start(argv: list[str], **env: str) -> subprocess.Popen:
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen([sys.executable, "-c", DRIVER, *argv], cwd=root, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1",
                                                         "PYTHONPATH": str(root), **env})


@pytest.mark.slow
def test_sigterm_from_outside_then_signals_during_the_save_keep_the_checkpoint(corpus, tokenizer, straight,
                                                                             tmp_path):
    """From outside, as a scheduler sends it: one SIGTERM during update 3 -> checkpoint 3, exit 143. Resumed, then
    SIGTERM repeated until the process ends (two signals arriving inside one XLA call reach Python's handler as
    one, so a fixed count could be merged): the first is taken, a later one ends the process at once while the
    checkpoint of iteration 4 is held open 3 s by the test hook (XLM_JAX_TEST_SAVE_DELAY_S); checkpoint 3 is
    kept unchanged, and the same command then ends as the uninterrupted run."""
    run_dir = tmp_path / "run"
    argv = tiny(corpus, tokenizer, run_dir, *MT_RUN)
    proc = _start(argv, WAIT_AT_UPDATE="3")
    _wait_for(proc, "waiting for a signal", [], timeout=600)  # start-up, compilation
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM: stopped after iteration 3" in out and "Traceback" not in err
    assert steps_in(run_dir / "checkpoints") == [2, 3]
    saved = digest(run_dir / "checkpoints" / "3")

    proc = _start(argv, WAIT_AT_UPDATE="1", **{ckpt_lib.SAVE_DELAY_ENV: "3"})  # resumed: update 1 is iteration 4
    _wait_for(proc, "waiting for a signal", [], timeout=600)  # start-up, compilation
    signal_until_exit(proc, signal.SIGTERM)
    assert proc.returncode == -signal.SIGTERM
    assert steps_in(run_dir / "checkpoints") == [2, 3] and digest(run_dir / "checkpoints" / "3") == saved

    assert train_mt(load_mt_config(None, argv)) == 0
    assert records(run_dir) == records(straight)
    assert_same_params(straight / "checkpoints", run_dir / "checkpoints")


def test_grad_accum_is_the_update_of_the_whole_batch(corpus, tokenizer, tmp_path):
    """Batches of 8 rows (128 tokens / width 16) split into 3 micro-batches (one padding row added, which counts
    nothing): the same sentences, losses and parameters as one update on the batch (no dropout: micro-batches
    draw other dropout keys)."""
    common = ("train.steps=2", "model.dropout=0.0", "model.decoder_layers=1")
    assert train_mt(load_mt_config(None, tiny(corpus, tokenizer, tmp_path / "one", *common))) == 0
    assert train_mt(load_mt_config(None, tiny(corpus, tokenizer, tmp_path / "three", *common,
                                              "train.grad_accum=3"))) == 0
    one, three = records(tmp_path / "one"), records(tmp_path / "three")
    assert [r["step"] for r in three] == [1, 2]
    for a, b in zip(one, three, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-5), (a["step"], key)
    assert_same_params(tmp_path / "one" / "checkpoints", tmp_path / "three" / "checkpoints", atol=1e-5)


def test_best_follows_train_metric_not_the_last_iteration(corpus, tokenizer, tmp_path, monkeypatch):
    """The scorer is replaced in-process (a tiny model's BLEU is 0 throughout): BLEU 3, 1, 2 and chrF++ 10, 30, 20
    at iterations 1, 2, 3. With train.metric=chrf++, best/ holds iteration 2 -- neither the last nor BLEU's best."""
    real, scores = loop.mt_report, iter([(3.0, 10.0), (1.0, 30.0), (2.0, 20.0)])

    def report(*a, **kw):
        out = real(*a, **kw)
        bleu, chrf = next(scores)
        out["rows"][0] = {**out["rows"][0], "bleu": bleu, "chrf++": chrf}
        return out

    monkeypatch.setattr(loop, "mt_report", report)
    run_dir = tmp_path / "best"
    assert train_mt(load_mt_config(None, tiny(corpus, tokenizer, run_dir, "train.steps=3", "train.eval_every=1",
                                              "checkpoint.every=1", "checkpoint.keep=10", "data.valid_sentences=8",
                                              "train.valid_max_len=8", "train.metric=chrf++",
                                              "model.decoder_layers=1"))) == 0
    valid = [(r["step"], r["bleu"], r["chrf++"]) for r in read_metrics(run_dir) if r["kind"] == "valid"]
    assert valid == [(1, 3.0, 10.0), (2, 1.0, 30.0), (3, 2.0, 20.0)]
    assert steps_in(run_dir / "best") == [2]
    assert_same_params(run_dir / "best", run_dir / "checkpoints" / "2")
    meta = json.loads((run_dir / "checkpoints" / "3" / "train_meta" / "metadata").read_text())
    assert meta["best_step"] == 2 and meta["best_metric"] == 30.0


def test_a_finished_run_says_so_and_trains_nothing(corpus, tokenizer, straight, tmp_path, capsys):
    """Re-running a finished run: `train`'s "already at" line, no "done: ... updates" line, nothing changed."""
    run_dir = tmp_path / "again"
    shutil.copytree(straight, run_dir)
    before = digest(run_dir / "checkpoints")
    capsys.readouterr()
    assert train_mt(load_mt_config(None, tiny(corpus, tokenizer, run_dir, *MT_RUN))) == 0
    out = capsys.readouterr().out
    assert ("the run is already at iteration 4 (train.steps=4, train.stop_at=0): nothing to train; raise "
            "train.steps to continue it") in out, out
    assert "done:" not in out and "updates in" not in out and "iteration 4:" not in out, out
    assert digest(run_dir / "checkpoints") == before and records(run_dir) == records(straight)


def test_supervised_training_learns_a_word_for_word_toy_language(corpus, tokenizer, tmp_path):
    """End to end (batches, labels, source conditioning, greedy validation): a tiny random-init model trained on
    the word-for-word en->fr corpus translates held-out sentences (new combinations of the same 14 words) far
    better than copying the source does — the check that train_mt can learn at all, independent of scale."""
    run_dir = tmp_path / "learn"
    args = tiny(corpus, tokenizer, run_dir, "objectives.mt=[en-fr]", "train.steps=600", "train.eval_every=600",
                "train.log_every=100", "checkpoint.every=600", "data.valid_fraction=0.1", "data.valid_sentences=50",
                "optimizer.lr=3e-3", "optimizer.warmup_steps=10", "model.dropout=0.0")
    assert train_mt(load_mt_config(None, args)) == 0
    valid = [r for r in read_metrics(run_dir) if r["kind"] == "valid"][-1]
    assert valid["sentences"] >= 10
    # measured: BLEU 36.3, chrF++ 59.8 (copying the source: 15.8), training accuracy 0.97 at iteration 600
    assert valid["bleu"] > 20 and valid["chrf++"] > valid["copy/chrf++"] + 30, valid
