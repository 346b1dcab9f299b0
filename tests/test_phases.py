"""Training phases (mmBERT's recipe: `phases.*`, configs/mmbert_*.yaml) and the warmup–stable–decay schedule:
batches a pure function of (seed, step) with each phase's masking rate / temperature / languages / row length, a
run resumed at a phase boundary equal to one that was not stopped, the RoPE base per phase in the checkpoints,
and bad input (one `error:` line, exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from xlm_jax.core.errors import UserError
from xlm_jax.data.__main__ import write_synthetic
from xlm_jax.data.batches import BatchSource, DataConfig, PhasedBatchSource
from xlm_jax.data.corpus import PreprocessedCorpus
from xlm_jax.pretrain.config import load_config
from xlm_jax.train import main as train_main, train
from xlm_jax.training import checkpoint as ckpt_lib
from xlm_jax.training.metrics import read_metrics
from xlm_jax.training.optim import OptimizerConfig, make_schedule

TIMING = ("tokens_per_s", "tokens_per_s_per_device", "real_tokens_per_s", "flops_per_token", "tflops_per_s",
          "tflops_per_s_per_device", "mfu", "elapsed_s", "padding_share")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    write_synthetic(out, n_langs=3, n_tokens=6000, n_pairs=0, vocab_size=200, seed=0)
    return out


PHASES = ["phases.one.start=0", "phases.one.end=4", "phases.one.mask_prob=0.3", "phases.one.temperature=0.7",
          "phases.one.top_langs=2", "phases.two.start=4", "phases.two.end=8", "phases.two.mask_prob=0.05",
          "phases.two.temperature=0.3", "phases.two.langs=[l00, l01, l02]", "phases.two.seq_len=48",
          "phases.two.rope_theta=160000", "phases.two.local_rope_theta=160000"]


def tiny(corpus: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"data.dir={corpus}", f"run_dir={run_dir}", "train.steps=8", "train.batch_size=4", "train.seq_len=32",
            "train.log_every=1", "train.eval_every=0", "train.progress=false", "checkpoint.every=2",
            "checkpoint.keep=10", "data.objectives={mlm: 1.0}", "model.base=modernbert_tiny",
            "model.hidden_size=32", "model.num_layers=3", "model.num_heads=2", "model.intermediate_size=48",
            "model.local_window=8", "model.max_positions=64", "model.rope_theta=10000",
            "model.local_rope_theta=10000", "optimizer.schedule=wsd", "optimizer.warmup_steps=2",
            "optimizer.decay_steps=4", "optimizer.lr=3e-3", *PHASES, *extra]


def records(run_dir) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir)]


def test_wsd_schedule_is_warmup_stable_decay():
    cfg = OptimizerConfig(lr=1.0, schedule="wsd", warmup_steps=10, decay_steps=20, end_lr=0.1)
    s = make_schedule(cfg, 100)
    want = {0: 0.0, 5: 0.5, 10: 1.0, 50: 1.0, 80: 1.0, 90: 0.55, 100: 0.1, 120: 0.1}
    for step, lr in want.items():
        assert float(s(step)) == pytest.approx(lr, abs=1e-6), step
    cos = make_schedule(OptimizerConfig(lr=1.0, schedule="wsd", warmup_steps=0, decay_steps=20, decay_shape="cosine"),
                        100)
    assert float(cos(79)) == 1.0 and float(cos(90)) == pytest.approx(0.5, abs=1e-6) and float(cos(100)) < 1e-6
    with pytest.raises(UserError, match="optimizer.decay_steps=0"):
        OptimizerConfig(schedule="wsd")
    with pytest.raises(UserError, match="only schedule=wsd"):
        OptimizerConfig(decay_steps=5)
    with pytest.raises(UserError, match="exceed train.steps=20"):
        OptimizerConfig(schedule="wsd", warmup_steps=10, decay_steps=15).check_steps(20)


def test_phased_batches_are_each_phase_own_and_pure(corpus):
    data = PreprocessedCorpus(corpus)
    base = DataConfig(seq_len=32, batch_size=64, mono_langs=("l00", "l01", "l02"), seed=3)
    one = BatchSource(data, DataConfig(seq_len=32, batch_size=64, mono_langs=("l01",), langs=base.langs,
                                       mask_prob=0.3, seed=3))
    two = BatchSource(data, DataConfig(seq_len=48, batch_size=64, mono_langs=base.mono_langs, mask_prob=0.05, seed=3))
    source = PhasedBatchSource([one, two], [0, 5], base.mono_langs, BatchSource(data, base))
    assert [source.phase(k) for k in (0, 4, 5, 9)] == [0, 0, 1, 1]
    early, late = source.batch(4)["mlm"], source.batch(5)["mlm"]
    assert early["input_ids"].shape == (64, 32) and late["input_ids"].shape == (64, 48)
    assert set(early["example_lang"]) == {1}  # l01, indexed into the run's languages
    assert set(late["example_lang"]) == {0, 1, 2}
    rate = lambda b: (b["mlm_weights"].sum() / b["attention_mask"].sum())  # noqa: E731
    assert 0.25 < rate(early) < 0.35 and 0.03 < rate(late) < 0.07
    np.testing.assert_array_equal(source.batch(4)["mlm"]["input_ids"], early["input_ids"])  # pure in the step


def test_resume_at_a_phase_boundary_is_exact(corpus, tmp_path, capsys):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train(load_config(None, tiny(corpus, straight))) == 0
    log = capsys.readouterr().out
    assert "phase one: updates [0, 4), mask 0.3, τ 0.7, 2 languages, rows of 32" in log, log
    assert "phase two: updates [4, end), mask 0.05, τ 0.3, 3 languages, rows of 48, RoPE θ 160000" in log
    assert train(load_config(None, tiny(corpus, resumed, "train.stop_at=4"))) == 0  # stops at the boundary
    assert train(load_config(None, tiny(corpus, resumed))) == 0
    assert "resuming from step 4" in capsys.readouterr().out
    assert records(resumed) == records(straight)
    a, _ = ckpt_lib.restore_params(straight)
    b, _ = ckpt_lib.restore_params(resumed)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    # Each checkpoint carries the RoPE base its parameters were trained with.
    theta = {s: ckpt_lib.load_model_config(straight / "checkpoints" / str(s)).rope_theta for s in (2, 4, 6, 8)}
    assert theta == {2: 10000.0, 4: 10000.0, 6: 160000.0, 8: 160000.0}
    rows = [r for r in records(straight) if r["kind"] == "train"]
    assert rows[-1]["lr"] == pytest.approx(3e-3 * 0.25, rel=1e-5)  # the 8th update: 3 of the 4 decay steps done
    langs = lambda rs: {k for r in rs for k in r if k.startswith("mlm/loss/")}  # noqa: E731
    assert len(langs(rows[:4])) <= 2 and len(langs(rows[4:])) == 3  # the curriculum: 2 languages, then 3
    # A fine-tuning-style reader sees the final phase's configuration.
    assert ckpt_lib.load_model_config(straight).rope_theta == 160000.0


def test_mmbert_configs_start_with_their_command_and_load():
    for name in ("mmbert_tiny", "mmbert_base"):
        path = Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml"
        assert path.read_text().startswith(f"# python -m xlm_jax.train configs/{name}.yaml"), name
        cfg = load_config(path)
        assert [p.mask_prob for p in cfg.phases.phases] == [0.3, 0.15, 0.05], name  # the paper's (config: 0.25)
        assert [p.temperature for p in cfg.phases.phases] == [0.7, 0.5, 0.3], name
        assert cfg.optimizer.schedule == "wsd", name


def test_single_phase_configs_are_unchanged():
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "default.yaml")
    assert cfg.phases.phases == () and cfg.optimizer.schedule == "linear"


BAD = {
    "overlap": (["phases.two.start=3"], "phases.two.start=3 overlaps phases.one (end=4)"),
    "gap": (["phases.two.start=5"], "phases.two.start=5 leaves a gap after phases.one"),
    "backwards": (["phases.two.end=3", "phases.two.start=4"], "phases.two: end=3 <= start=4"),
    "short": (["phases.two.end=7"], "phases.two.end=7: the last phase ends at train.steps=8"),
    "first_start": (["phases.one.start=1"], "phases.one.start=1: the first phase starts at 0"),
    "mask_zero": (["phases.one.mask_prob=0"], "phases.one.mask_prob=0"),
    "mask_one": (["phases.two.mask_prob=1.0"], "phases.two.mask_prob=1.0"),
    "temperature": (["phases.two.temperature=0"], "phases.two.temperature=0"),
    "missing_end": (["phases.three.start=8"], "phases.three.end is missing"),
    "unknown_key": (["phases.two.mask_rate=0.1"], "mask_rate"),
    "langs_and_top": (["phases.two.top_langs=2"], "give one of them"),
    "unknown_lang": (["phases.two.langs=[l00, xx]"], "phases.two.langs: 'xx' is not among the data's languages"),
    "too_many_langs": (["phases.one.top_langs=9"], "phases.one.top_langs=9: the data has 3 languages"),
    "rope_on_xlmr": (["model.base=xlmr_tiny", "model.local_window=128", "model.rope_theta=10000"],
                     "phases.two.rope_theta=160000: model.family='xlmr' has no RoPE"),
    "too_long": (["phases.two.seq_len=100"], "exceed model.max_positions=64"),
    "wsd_too_long": (["optimizer.decay_steps=7"], "optimizer.decay_steps=7 exceed train.steps=8"),
    "wsd_no_decay": (["optimizer.decay_steps=0"], "optimizer.decay_steps=0"),
    "decay_not_wsd": (["optimizer.schedule=linear"], "only schedule=wsd"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_phases(corpus, tmp_path, capsys, case):
    extra, words = BAD[case]
    args = tiny(corpus, tmp_path / "run", *extra)
    if case == "rope_on_xlmr":  # the ModernBERT-only overrides would be refused first
        args = [a for a in args if not a.startswith(("model.local_window", "model.local_rope_theta",
                                                      "model.num_layers"))] + ["model.num_layers=2"]
    with pytest.raises(SystemExit) as exit_:
        train_main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert words in err, err
    assert not (tmp_path / "run").exists()
