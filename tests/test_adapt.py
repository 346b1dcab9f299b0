"""Continued pretraining (`xlm_jax.pretrain.adapt`, issue #12): model.init_from, the checkpoint's tokenizer, train.trainable,
and `convert RUN --to hf` with the tokenizer. Tiny models (32 wide, 2 layers), a tiny SentencePiece model, few steps.

The step-0 check: a run's step-1 metrics are the loss of the *initial* parameters on batch 0 (the update comes
after), so with dropout off they must equal transformers' loss on that batch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tiny_setup  # noqa: E402
from xlm_jax.training import checkpoint  # noqa: E402
from xlm_jax.pretrain import adapt
from xlm_jax.core.errors import UserError  # noqa: E402
from xlm_jax.training.metrics import read_metrics  # noqa: E402
from xlm_jax.data.tokenizer import Tokenizer  # noqa: E402
from xlm_jax.train import main as train_main, train  # noqa: E402
from xlm_jax.pretrain.config import load_config  # noqa: E402

TOL = 2e-5


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _hf_model(vocab: int, xl: bool = False):
    common = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=66, type_vocab_size=1, layer_norm_eps=1e-5, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    if xl:
        return _randomize(transformers.XLMRobertaXLForMaskedLM(transformers.XLMRobertaXLConfig(**common)))
    return _randomize(transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(**common)))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny tokenizer, a raw en/de/fr corpus, an HF directory (with sentencepiece.bpe.model), a shared cache."""
    d = tmp_path_factory.mktemp("adapt")
    tok_path = tiny_setup.make_tokenizer(d)
    tok = Tokenizer.load(tok_path)
    corpus = d / "corpus" / "mono"
    corpus.mkdir(parents=True)
    for lang in ("en", "de", "fr"):
        shutil.copy(d / f"{lang}.txt", corpus / f"{lang}.txt")
    model = _hf_model(len(tok))
    hf = d / "hf"
    model.save_pretrained(hf)
    shutil.copy(tok_path, hf / "sentencepiece.bpe.model")
    return {"dir": d, "tok": tok, "tok_path": tok_path, "corpus": d / "corpus", "hf": hf, "model": model,
            "cache": d / "cache"}


def _args(env, run_dir: Path, *extra: str) -> list[str]:
    return [f"data.corpus={env['corpus']}", f"data.cache_dir={env['cache']}", f"run_dir={run_dir}",
            "data.objectives={mlm: 1}", "data.valid_fraction=0", "train.steps=3", "train.batch_size=4",
            "train.seq_len=24", "train.log_every=1", "train.eval_every=0", "train.progress=false",
            "optimizer.warmup_steps=1", "optimizer.lr=1e-2", "model.dropout=0", "model.attention_dropout=0",
            "checkpoint.async_save=false", *extra]


def _run(env, run_dir, *extra) -> int:
    return train(load_config(None, _args(env, run_dir, *extra)))


def _first_batch(run_dir: Path) -> dict:
    from xlm_jax.data.batches import BatchSource
    from xlm_jax.data.corpus import PreprocessedCorpus
    from xlm_jax.pretrain.data import make_data_config

    cfg = load_config(run_dir / "config.yaml")
    corpus = PreprocessedCorpus(cfg.data.dir)
    return BatchSource(corpus, make_data_config(cfg, corpus)).batch(0)["mlm"]


def _torch_mlm_loss(model, batch: dict) -> float:
    """The MLM loss of a transformers model on one of our batches (mean over the predicted tokens)."""
    kwargs = {"input_ids": torch.tensor(np.asarray(batch["input_ids"], np.int64)),
              "attention_mask": torch.tensor(np.asarray(batch["attention_mask"], np.int64))}
    if batch.get("positions") is not None:  # XLM-R numbers positions from padding_idx + 1
        kwargs["position_ids"] = torch.tensor(np.asarray(batch["positions"], np.int64) + model.config.pad_token_id + 1)
    with torch.no_grad():
        logits = model(**kwargs).logits.double().numpy()
    picked = np.take_along_axis(logits, np.asarray(batch["mlm_positions"])[..., None], axis=1)
    log_z = np.log(np.exp(picked - picked.max(-1, keepdims=True)).sum(-1)) + picked.max(-1)
    nll = log_z - np.take_along_axis(picked, np.asarray(batch["mlm_targets"])[..., None], -1)[..., 0]
    w = np.asarray(batch["mlm_weights"], np.float64)
    return float((nll * w).sum() / w.sum())


def _step_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["mlm/loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}


def _tree_hash(params) -> dict[str, str]:
    return {p: hashlib.sha256(np.asarray(x).tobytes()).hexdigest()
            for p, x in zip(adapt.param_paths(params), jax.tree.leaves(params))}


# ------------------------------------------------------------------------------------------- init_from: HF


@pytest.fixture(scope="module")
def hf_run(env, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("hf_run") / "run"
    assert _run(env, run_dir, f"model.init_from={env['hf']}") == 0
    return run_dir


def test_hf_init_step0_loss_equals_transformers_and_keeps_its_tokenizer(env, hf_run):
    losses = _step_losses(hf_run)
    assert sorted(losses) == [1, 2, 3]
    want = _torch_mlm_loss(env["model"], _first_batch(hf_run))
    assert losses[1] == pytest.approx(want, abs=TOL, rel=TOL)
    assert losses[3] < losses[1]  # it trains on from there
    # The data was prepared with the checkpoint's own SentencePiece model, not a newly trained one.
    assert (hf_run / "tokenizer.model").read_bytes() == (env["hf"] / "sentencepiece.bpe.model").read_bytes()
    cfg = load_config(hf_run / "config.yaml")
    manifest = json.loads((Path(cfg.data.dir) / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == env["tok"].sha256
    assert cfg.model.init_from == str(env["hf"]) and cfg.model.overrides["hidden_size"] == 32
    assert not (env["cache"] / "tokenizers").exists()


def test_resume_does_not_read_init_from_again(env, tmp_path):
    hf = tmp_path / "hf_copy"
    shutil.copytree(env["hf"], hf)
    run_dir = tmp_path / "run"
    assert _run(env, run_dir, f"model.init_from={hf}", "train.stop_at=1") == 0
    shutil.rmtree(hf)  # gone: the resumed run must not need it
    assert _run(env, run_dir, f"model.init_from={hf}") == 0
    uninterrupted = tmp_path / "whole"
    assert _run(env, uninterrupted, f"model.init_from={env['hf']}") == 0
    resumed, whole = _step_losses(run_dir), _step_losses(uninterrupted)
    assert sorted(resumed) == [1, 2, 3]
    for step in (1, 2, 3):
        assert resumed[step] == pytest.approx(whole[step], rel=1e-5)


def test_run_copies_the_tokenizer_it_was_given_even_when_cached_data_names_a_gone_one(env, tmp_path):
    """Data prepared from a tokenizer copy that was deleted since is reused (same sha256): the new run's
    RUN/tokenizer.model comes from the tokenizer this run was given, not the path the cached manifest records."""
    hf = tmp_path / "hf_copy"
    shutil.copytree(env["hf"], hf)
    first = tmp_path / "first"
    cache = f"data.cache_dir={tmp_path / 'cache'}"  # its own: the copy's path is the one the manifest records
    assert _run(env, first, f"model.init_from={hf}", "train.steps=2", cache) == 0
    shutil.rmtree(hf)
    second = tmp_path / "second"
    assert _run(env, second, f"model.init_from={env['hf']}", "train.steps=2", cache) == 0
    assert (second / "tokenizer.model").read_bytes() == (env["hf"] / "sentencepiece.bpe.model").read_bytes()


def test_orbax_run_as_init_from_starts_where_it_ended(env, hf_run, tmp_path):
    """Our own run directory as init_from: the step-0 loss of the new run is the old run's final model's loss."""
    import xlm_jax
    from xlm_jax.training.objectives import mlm_loss

    run_dir = tmp_path / "run"
    assert _run(env, run_dir, f"model.init_from={hf_run}", "train.steps=2") == 0
    assert (run_dir / "tokenizer.model").read_bytes() == (hf_run / "tokenizer.model").read_bytes()
    old = xlm_jax.load(hf_run)
    loss, _ = mlm_loss(old.model, old.params, jax.tree.map(np.asarray, _first_batch(run_dir)))
    assert _step_losses(run_dir)[1] == pytest.approx(float(loss), rel=1e-5)


def test_the_config_that_trained_a_run_can_continue_it(env, hf_run, tmp_path, capsys):
    """configs/default.yaml names model.base=xlmr_tiny (vocabulary 1000, <mask> -1: placeholders that a run
    always takes from its data) with overrides equal to its run's architecture: continuing that run with the same
    config is accepted (it was refused on vocab_size / mask_token_id, issue #12 part 6). An explicit
    model.vocab_size that contradicts the checkpoint is still refused."""
    import dataclasses

    import xlm_jax
    from xlm_jax.pretrain.adapt import DATA_FIELDS
    from xlm_jax.models.config import NAMED_CONFIGS
    from xlm_jax.models.config import NON_ARCHITECTURE

    config = xlm_jax.load(hf_run, tokenizer=False).config
    base = NAMED_CONFIGS["xlmr_tiny"]
    same = [f"model.{f.name}={json.dumps(getattr(config, f.name))}" for f in dataclasses.fields(config)
            if f.name not in DATA_FIELDS and f.name not in NON_ARCHITECTURE
            and getattr(config, f.name) != getattr(base, f.name)]
    assert any(a.startswith("model.hidden_size=") for a in same)  # the base alone would contradict
    assert base.vocab_size != config.vocab_size
    run_dir = tmp_path / "run"
    assert _run(env, run_dir, f"model.init_from={hf_run}", "model.base=xlmr_tiny", *same, "train.steps=2") == 0
    assert _step_losses(run_dir)  # it trained
    _expect_refusal(env, tmp_path / "run2", capsys,
                    [f"model.init_from={hf_run}", "model.base=xlmr_tiny", *same, "model.vocab_size=1000"],
                    [f"model.vocab_size: checkpoint {config.vocab_size}, config 1000"])


# ------------------------------------------------------------------------------------------- init_from: fairseq


def _fairseq_dir(env, d: Path, xl: bool = False, dict_lines: list[str] | None = None) -> tuple[Path, object]:
    from test_convert import _fairseq_state

    model = _hf_model(len(env["tok"]), xl=xl)
    d.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=37,
                              encoder_attention_heads=4, max_positions=64, activation_fn="gelu", dropout=0.0,
                              attention_dropout=0.0, encoder_normalize_before=xl)
    torch.save({"model": _fairseq_state(model, new_names=xl), "args": args}, d / "model.pt")
    shutil.copy(env["tok_path"], d / "sentencepiece.bpe.model")
    sp = env["tok"].sp
    lines = dict_lines if dict_lines is not None else [f"{sp.id_to_piece(i)} {100 - i}"
                                                       for i in range(3, sp.get_piece_size())]
    (d / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d, model


@pytest.mark.parametrize("xl", [False, True])
def test_fairseq_init_step0_loss_equals_the_source(env, tmp_path, xl):
    src, model = _fairseq_dir(env, tmp_path / "fairseq", xl=xl)
    run_dir = tmp_path / "run"
    assert _run(env, run_dir, f"model.init_from={src / 'model.pt'}", "train.steps=2") == 0
    assert _step_losses(run_dir)[1] == pytest.approx(_torch_mlm_loss(model, _first_batch(run_dir)), abs=TOL, rel=TOL)
    assert (run_dir / "tokenizer.model").read_bytes() == env["tok_path"].read_bytes()


def test_fairseq_dict_defines_the_ids(env, tmp_path):
    sp = env["tok"].sp
    pieces = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
    ids = adapt.fairseq_dict_ids(_fairseq_dir(env, tmp_path / "ok")[0] / "dict.txt")
    assert [ids[p] for p in pieces] == [sp.piece_to_id(p) + 1 for p in pieces]
    swapped = pieces[:]
    swapped[5], swapped[6] = swapped[6], swapped[5]
    for name, lines, words in [
        ("swapped", [f"{p} 1" for p in swapped], [repr(swapped[5]), "fairseq id 9", "does not give fairseq's ids"]),
        ("short", [f"{p} 1" for p in pieces[:-3]], ["defines", str(len(env["tok"]) - 3), str(len(env["tok"]))]),
        ("alien", [f"{p} 1" for p in pieces[:-1]] + ["ЖЖЖ 1"], ["'ЖЖЖ'", "is not in it"]),
        ("malformed", ["no_count_here"], ["dict.txt:1", "<piece> <count>"]),
    ]:
        src, _ = _fairseq_dir(env, tmp_path / name, dict_lines=lines)
        with pytest.raises(UserError) as err:
            adapt.check_fairseq_dict(src / "dict.txt", env["tok"])
        for w in words:
            assert w in str(err.value), (name, str(err.value))


# ------------------------------------------------------------------------------------------- train.trainable


def test_trainable_embeddings_freezes_the_rest_bit_for_bit_without_moments(env, hf_run, tmp_path):
    run_dir = tmp_path / "run"
    # Through a resume (stop_at, then on), so the masked optimizer state also survives a checkpoint round trip.
    assert _run(env, run_dir, f"model.init_from={hf_run}", "train.trainable=embeddings", "train.stop_at=2") == 0
    assert _run(env, run_dir, f"model.init_from={hf_run}", "train.trainable=embeddings") == 0
    before, _ = checkpoint.restore_params(hf_run)
    after, _ = checkpoint.restore_params(run_dir)
    b, a = _tree_hash(before), _tree_hash(after)
    changed = {p for p in b if a[p] != b[p]}
    assert changed == set(adapt.EMBEDDINGS)
    # The optimizer state holds moments for the two trainable tensors only (mu and nu).
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        meta = ckptr.metadata((run_dir / "checkpoints" / "3" / "opt_state").absolute())
    shapes = [tuple(m.shape) for m in jax.tree.leaves(getattr(meta, "item_metadata", meta),
                                                      is_leaf=lambda m: hasattr(m, "shape")) if len(m.shape)]
    vocab = len(env["tok"])
    assert sorted(shapes) == sorted([(vocab,), (vocab,), (vocab, 32), (vocab, 32)])


def test_trainable_patterns_select_by_path(env):
    from xlm_jax.models.config import get_model_config

    params = adapt.abstract_params(get_model_config("xlmr_tiny"))
    paths = adapt.param_paths(params)

    def chosen(*patterns):
        mask = adapt.trainable_mask(patterns, params)
        return {p for p, m in zip(paths, jax.tree.leaves(mask)) if m}

    assert adapt.trainable_mask(["all"], params) is None
    assert chosen("embeddings") == set(adapt.EMBEDDINGS)
    assert chosen("lm_head") == {p for p in paths if p.startswith("lm_head/")}
    assert chosen("encoder/layers/mlp/.*", "lm_head/bias") == {p for p in paths if "/mlp/" in p} | {"lm_head/bias"}
    assert chosen(".*layer_norm") == {p for p in paths if "/layer_norm/" in p}
    # No moments for frozen leaves: Adam's state holds the trainable leaves only.
    import optax

    opt = adapt.restrict_optimizer(optax.adam(1e-3), ("embeddings",), params)
    state = jax.eval_shape(opt.init, params)
    assert len([x for x in jax.tree.leaves(state) if x.ndim]) == 2 * len(adapt.EMBEDDINGS)


@pytest.mark.parametrize("trainable,words", [
    ("[encoder/nothing_here]", ["'encoder/nothing_here'", "matches no parameter", "lm_head/bias"]),
    ("[lm_head/bias, decoder]", ["'decoder'", "matches no parameter"]),
    ("'[unclosed'", ["'[unclosed'", "not a regular expression"]),
    ("[]", ["train.trainable=[]", "embeddings"]),
    ("[all, lm_head]", ["'all'", "alone"]),
])
@pytest.mark.parametrize("with_init", [False, True])
def test_trainable_bad_patterns_are_refused_before_anything(env, hf_run, tmp_path, capsys, trainable, words,
                                                            with_init):
    run_dir = tmp_path / "run"
    extra = [f"train.trainable={trainable}"] + ([f"model.init_from={hf_run}"] if with_init else [])
    _expect_refusal(env, run_dir, capsys, extra, words)


# ------------------------------------------------------------------------------------------- bad input


def _expect_refusal(env, run_dir, capsys, extra, words, cache=None):
    cache = cache or run_dir.parent / "fresh_cache"
    args = [a for a in _args(env, run_dir, *extra) if not a.startswith("data.cache_dir=")]
    capsys.readouterr()  # what the test's own set-up printed
    with pytest.raises(SystemExit) as done:
        train_main(args + [f"data.cache_dir={cache}"])
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not run_dir.exists() and not cache.exists()  # nothing written: no run, no data prepared
    return lines[0]


def _bad_sources(env, tmp_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    from test_convert import _xlm_pth

    t = tmp_path
    (t / "notes.txt").write_text("not a checkpoint\n")
    (t / "empty").mkdir()
    (t / "badjson").mkdir()
    (t / "badjson" / "config.json").write_text("{not json")
    (t / "garbage.pt").write_bytes(b"\x00\x01garbage")
    nospm = t / "nospm"
    shutil.copytree(env["hf"], nospm)
    (nospm / "sentencepiece.bpe.model").unlink()
    nodict = t / "nodict"
    _fairseq_dir(env, nodict)
    (nodict / "dict.txt").unlink()
    xlm = transformers.XLMWithLMHeadModel(transformers.XLMConfig(
        vocab_size=99, emb_dim=32, n_layers=2, n_heads=4, n_langs=3, use_lang_emb=True,
        max_position_embeddings=64, lang2id={"de": 0, "en": 1, "fr": 2}))
    _xlm_pth(xlm, t / "mlm_tiny.pth")
    other_tok = t / "other"
    other_tok.mkdir()
    from xlm_jax.data.tokenizer import train_tokenizer

    train_tokenizer([str(env["dir"] / f"{lang}.txt") for lang in ("en", "de", "fr")], 40, str(other_tok / "t40.model"))
    hf = env["hf"]
    return {
        "missing": ([f"model.init_from={t / 'nope'}"], ["model.init_from=", "nope", "no such file"]),
        "text file": ([f"model.init_from={t / 'notes.txt'}"], ["notes.txt", "not a recognised checkpoint"]),
        "empty dir": ([f"model.init_from={t / 'empty'}"], ["empty", "not a recognised checkpoint"]),
        "bad config.json": ([f"model.init_from={t / 'badjson'}"], ["model.init_from", "config.json", "not valid JSON"]),
        "garbage pickle": ([f"model.init_from={t / 'garbage.pt'}"], ["model.init_from", "garbage.pt", "not a PyTorch checkpoint"]),
        "xlm pth": ([f"model.init_from={t / 'mlm_tiny.pth'}"], ["mlm_tiny.pth", "Moses + fastBPE", "Supported"]),
        "no tokenizer": ([f"model.init_from={nospm}"], ["nospm", "no tokenizer of its own", "data.tokenizer"]),
        "fairseq no dict.txt": ([f"model.init_from={nodict / 'model.pt'}"], ["no dict.txt", "fairseq's ids"]),
        "tokenizer smaller": ([f"model.init_from={hf}", f"data.tokenizer={other_tok / 't40.model'}"],
                              ["42 ids", f"vocabulary of {len(env['tok'])}"]),
        "tokenizer not spm": ([f"model.init_from={hf}", f"data.tokenizer={t / 'notes.txt'}"],
                              ["data.tokenizer=", "notes.txt", "not a SentencePiece model"]),
        "tokenizer missing": ([f"data.tokenizer={t / 'nope.model'}"], ["data.tokenizer=", "nope.model", "does not exist"]),
        "tokenizer is a dir": ([f"data.tokenizer={t / 'empty'}"], ["data.tokenizer=", "is a directory"]),
        "override contradicts": ([f"model.init_from={hf}", "model.hidden_size=64", "model.num_layers=3"],
                                 ["model.hidden_size: checkpoint 32, config 64",
                                  "model.num_layers: checkpoint 2, config 3"]),
        "base contradicts": ([f"model.init_from={hf}", "model.base=xlmr_base"],
                             ["model.base=xlmr_base", "model.hidden_size: checkpoint 32, config 768"]),
        "zero heads": ([f"model.init_from={hf}", "model.num_heads=0"], ["model.num_heads: checkpoint 4, config 0"]),
        "bad dtype": ([f"model.init_from={hf}", "model.dtype=fp16"], ["model.dtype='fp16'", "bfloat16"]),
        "positions": ([f"model.init_from={hf}", "train.seq_len=100"], ["100 tokens", "64 positions", "checkpoint"]),
    }


def test_bad_input_one_line_exit_2_nothing_written(env, hf_run, tmp_path, capsys):
    cases = _bad_sources(env, tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    seen = {}
    for name, (extra, words) in cases.items():
        seen[name] = _expect_refusal(env, tmp_path / f"run_{name.replace(' ', '_')}", capsys, extra, words)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # inputs untouched
    print("\n".join(f"{k} | {v}" for k, v in seen.items()))


def test_data_dir_with_another_vocabulary_is_refused_before_training(env, tmp_path, capsys):
    from xlm_jax.data.__main__ import write_synthetic

    write_synthetic(tmp_path / "syn", n_langs=2, n_tokens=2000, n_pairs=0, vocab_size=200, seed=0)
    line = _expect_refusal(env, tmp_path / "run", capsys, [f"model.init_from={env['hf']}", f"data.dir={tmp_path / 'syn'}"],
                           ["200 ids", f"has {len(env['tok'])}"])
    assert "syn" in line


def test_damaged_init_checkpoint_is_refused_before_the_run_directory_is_made(env, hf_run, tmp_path, capsys):
    """The init checkpoint's arrays are read before run_dir is claimed: a damaged one (an array file zeroed, found
    only when read) leaves no run directory behind (bad_inputs.py found a stub run_dir with a marker before)."""
    for name, damage in (("zeroed", lambda f: f.write_bytes(b"\0" * 64)), ("truncated", lambda f: f.write_bytes(b""))):
        src = tmp_path / f"src_{name}"
        shutil.copytree(hf_run, src)
        arrays = [f for d in (src / "checkpoints").glob("*/params") for f in d.rglob("*") if f.is_file()]
        damage(max(arrays, key=lambda f: f.stat().st_size))  # init_from reads only the params item
        before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
        run_dir = tmp_path / f"run_{name}"
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            train_main(_args(env, run_dir, f"model.init_from={src}"))
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert done.value.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
        assert "damaged" in lines[0] and str(src) in lines[0], lines[0]
        assert not run_dir.exists()
        assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------------------------------- convert --to hf


def test_convert_run_to_hf_carries_the_tokenizer(env, hf_run, tmp_path):
    import xlm_jax
    from xlm_jax.convert import main as convert_main

    out = tmp_path / "out_hf"
    convert_main([str(hf_run), str(out), "--to", "hf"])
    assert (out / "sentencepiece.bpe.model").read_bytes() == (hf_run / "tokenizer.model").read_bytes()
    hf_tok = transformers.XLMRobertaTokenizer.from_pretrained(out)
    model = transformers.AutoModelForMaskedLM.from_pretrained(out).eval()
    ours = xlm_jax.load(hf_run)
    tok = Tokenizer.load(hf_run / "tokenizer.model")
    texts = ["the cat open file", "die katze öffnen datei drucken", "le chien <mask> fichier"]
    for text in texts:
        ids = hf_tok(text)["input_ids"]
        assert ids == tok.encode(text), text
        with torch.no_grad():
            theirs = model(input_ids=torch.tensor([ids])).logits.numpy()
        mine = np.asarray(ours.mlm_logits(np.asarray([ids]), np.ones((1, len(ids)), np.int32)))
        np.testing.assert_allclose(mine, theirs, atol=1e-4, rtol=0)
    assert hf_tok.mask_token_id == tok.mask_id == model.config.vocab_size - 1


def _dir_hashes(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in d.rglob("*") if p.is_file()}


def test_resume_with_another_trainable_is_refused_and_the_run_untouched(env, hf_run, capsys):
    before = _dir_hashes(hf_run)
    for trainable, words in [("embeddings", ["train.trainable=['embeddings']", "['all']", "new run_dir"]),
                             ("[lm_head]", ["train.trainable=['lm_head']", "['all']"])]:
        with pytest.raises(SystemExit) as done:
            train_main(_args(env, hf_run, f"model.init_from={env['hf']}", f"train.trainable={trainable}"))
        err = capsys.readouterr().err.strip().splitlines()
        assert done.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
        assert all(w in err[0] for w in words), err[0]
    assert _dir_hashes(hf_run) == before


def test_data_dir_preprocessed_with_another_tokenizer_is_refused(env, hf_run, tmp_path, capsys):
    from xlm_jax.data.tokenizer import train_tokenizer

    other = tmp_path / "t40.model"
    train_tokenizer([str(env["dir"] / f"{lang}.txt") for lang in ("en", "de", "fr")], 40, str(other))
    data_dir = load_config(hf_run / "config.yaml").data.dir
    _expect_refusal(env, tmp_path / "run", capsys, [f"data.dir={data_dir}", f"data.tokenizer={other}"],
                    ["data.tokenizer=", "t40.model", "is not the tokenizer", "preprocessed with"])


def test_larger_tokenizer_extends_the_checkpoint_through_xlm_jax_vocab(env, tmp_path):
    """With xlm_jax.data.vocab (issue #12 part 3): a base tokenizer with pieces appended resizes the checkpoint at step 0
    (adapt._extend); the run trains on the extended vocabulary, old rows kept, <mask> moved to the last id."""
    from xlm_jax.data import vocab

    new_text = tmp_path / "ka.txt"
    new_text.write_text("\n".join(["გამარჯობა ფაილი გახსნა დახურვა შეცდომა"] * 50) + "\n", encoding="utf-8")
    ext_path = tmp_path / "ext.model"
    vocab.extend_tokenizer(str(env["tok_path"]), [str(new_text)], 20, str(ext_path))
    ext = Tokenizer.load(ext_path)
    assert len(ext) > len(env["tok"])
    corpus = tmp_path / "corpus" / "mono"
    corpus.mkdir(parents=True)
    shutil.copy(env["dir"] / "en.txt", corpus / "en.txt")
    shutil.copy(new_text, corpus / "ka.txt")
    run_dir = tmp_path / "run"
    args = [a for a in _args(env, run_dir, f"model.init_from={env['hf']}", f"data.tokenizer={ext_path}",
                             "train.steps=2") if not a.startswith("data.corpus=")]
    assert train(load_config(None, args + [f"data.corpus={tmp_path / 'corpus'}"])) == 0
    params, config = checkpoint.restore_params(run_dir)
    assert config.vocab_size == len(ext) and config.mask_id == len(ext) - 1
    assert (run_dir / "tokenizer.model").read_bytes() == ext_path.read_bytes()
    assert params["encoder"]["embeddings"]["word_embeddings"]["embedding"].shape == (len(ext), 32)


def test_data_tokenizer_without_init_from_is_used_instead_of_training_one(env, tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    args = [a for a in _args(env, run_dir, f"data.tokenizer={env['tok_path']}", "train.steps=2",
                             "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
                             "model.intermediate_size=64", "model.max_positions=64")
            if not a.startswith("data.cache_dir=")]
    assert train(load_config(None, args + [f"data.cache_dir={cache}"])) == 0
    assert (run_dir / "tokenizer.model").read_bytes() == env["tok_path"].read_bytes()
    assert not (cache / "tokenizers").exists()  # nothing trained
    assert checkpoint.load_model_config(run_dir).vocab_size == len(env["tok"])
