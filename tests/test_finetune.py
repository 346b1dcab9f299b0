"""Fine-tuning on tiny models: learning on a fixture task, per-language tables, protocols, early stopping,
layer-wise learning rates, NER end to end, and bad inputs through the CLI (exit 2, clear messages)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_setup  # tests/tiny_setup.py: tiny tokenizer + checkpoint + task builders

from xlm_jax.finetune import main as finetune_main
from xlm_jax.workflows import finetune as F
from xlm_jax.models.config import get_model_config
from xlm_jax.core.errors import UserError

FIX = Path(__file__).parent / "fixtures" / "finetune"
ROOT = Path(__file__).parent.parent



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tiny = tiny_setup
    d = tmp_path_factory.mktemp("ft")
    tok = tiny.make_tokenizer(d)
    ckpt = tiny.make_checkpoint(d)
    train = tiny.write_jsonl(d / "train.jsonl", tiny.task_examples("en", 32, 1) + tiny.task_examples("de", 32, 2))
    valid = tiny.write_jsonl(d / "valid.jsonl", [e for lang in ("fr", "de", "en") for e in tiny.task_examples(lang, 16, 3)])
    return {"dir": d, "tok": str(tok), "ckpt": str(ckpt), "train": str(train), "valid": str(valid)}


def _args(setup, out, **kw) -> list[str]:
    base = dict(task="classification", init=setup["ckpt"], tokenizer=setup["tok"], out=str(out),
                train=[setup["train"]], valid=[setup["valid"]], test=[setup["valid"]], lr=1e-3, batch_size=16,
                dropout=0, log_every=10, warmup_ratio=0.1)
    base.update(kw)
    return [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in base.items()]


def _cfg(setup, out, **kw):
    return F.load_config(None, _args(setup, out, **kw))


def test_tiny_finetune_learns_zero_shot_and_writes_table(setup, tmp_path):
    messages = []
    out = tmp_path / "run"
    # 200 more English test examples: with n = 216, a classifier at chance (p = 0.5) reaches the threshold below with
    # probability < 1e-9, so passing means the model learnt the rule (16 examples at > 0.6 pass by chance 23 %).
    big_test = tiny_setup.write_jsonl(tmp_path / "test_en.jsonl", tiny_setup.task_examples("en", 200, 7))
    result = F.finetune(_cfg(setup, out, max_steps=60, eval_every=20, test=[setup["valid"], str(big_test)]),
                        log=messages.append)
    assert any("has no classifier head: initialised a new classification head with 2 labels" in m for m in messages)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    train_acc = [r["accuracy"] for r in log if "accuracy" in r]
    assert train_acc[-1] >= 0.9  # overfits the 32 English examples (chance = 0.5)
    table = json.loads((out / "results.json").read_text())
    assert table["train_examples"] == {"en": 32}  # zero-shot: English only, although de is in the train file
    assert table["langs"] == ["en", "de", "fr"]
    assert table["metric"] == "accuracy" and table["best_step"] == result.best_step
    test = table["splits"]["test"]
    n = test["per_lang"]["en"]["n"]
    assert n == 216
    threshold = next(k for k in range(n + 1) if sum(math.comb(n, j) for j in range(k, n + 1)) / 2**n < 1e-9)
    assert test["per_lang"]["en"]["score"] * n >= threshold, (test["per_lang"]["en"], threshold)
    assert test["avg"] == pytest.approx(np.mean([test["per_lang"][x]["score"] for x in ("en", "de", "fr")]))
    md = (out / "results.md").read_text().splitlines()
    assert md[0] == "| accuracy | en | de | fr | avg |"
    assert md[2].startswith("| valid |") and md[3].startswith("| test |")
    assert md[3].endswith(f"| {100 * test['avg']:.1f} |")  # average last
    # The best checkpoint carries its task: evaluate rebuilds the head and reproduces the table's numbers.
    assert json.loads((out / "best" / "task.json").read_text())["labels"] == ["file", "other"]
    from xlm_jax.evaluate import run_task_eval

    _, again = run_task_eval(str(out), setup["tok"], [setup["valid"], str(big_test)])
    assert again["splits"]["test"]["per_lang"] == test["per_lang"]


def test_translate_train_all_and_truncation(setup, tmp_path):
    result = F.finetune(_cfg(setup, tmp_path / "tta", protocol="translate_train_all", max_steps=2, max_len=8,
                             valid=[]), log=lambda m: None)
    table = result.table
    assert table["train_examples"] == {"de": 32, "en": 32}
    assert table["truncated"]["train"] > 0 and table["truncated"]["test"] > 0
    assert result.best_step == 2  # no valid data: the last step is kept


def test_early_stopping(setup, tmp_path):
    # A learning rate too small to change predictions: the valid score never improves after the first evaluation.
    result = F.finetune(_cfg(setup, tmp_path / "es", lr=1e-12, max_steps=50, eval_every=1, patience=2, test=[]),
                        log=lambda m: None)
    assert result.stopped_early and result.steps == 3 and result.best_step == 1
    assert [h["step"] for h in result.history] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "es" / "best").iterdir()) == ["1", "task.json"]


def test_best_checkpoint_is_the_best_validation_score_not_the_latest(setup, tmp_path, monkeypatch):
    # Validation scores 0.3, 0.9, 0.6 at steps 2, 4, 6 (fed in-process): step 4 must be kept, with its parameters.
    scores, seen = iter([0.3, 0.9, 0.6]), []
    real = F.evaluate_features

    def fake(task, examples, feats, labels, options, predict, params, *args, **kwargs):
        if len(seen) == 3:  # the final scoring of the kept parameters on valid / test
            return real(task, examples, feats, labels, options, predict, params, *args, **kwargs)
        seen.append(jax.device_get(params))
        return {"en": {"score": next(scores), "n": 1}}, []

    monkeypatch.setattr(F, "evaluate_features", fake)
    out = tmp_path / "best"
    result = F.finetune(_cfg(setup, out, max_steps=6, eval_every=2), log=lambda m: None)
    assert [(h["step"], h["score"]) for h in result.history] == [(2, 0.3), (4, 0.9), (6, 0.6)]
    assert result.best_step == 4 and result.best_score == 0.9 and result.table["best_step"] == 4
    assert sorted(p.name for p in (out / "best").iterdir()) == ["4", "task.json"]
    from xlm_jax.training.checkpoint import restore_params

    kept, _ = restore_params(out / "best")
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(seen[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(jax.tree.leaves(seen[1])[0], jax.tree.leaves(seen[2])[0])  # the steps differ


def test_select_on_one_language(setup, tmp_path):
    result = F.finetune(_cfg(setup, tmp_path / "sel", max_steps=4, eval_every=2, select_on="en", test=[]),
                        log=lambda m: None)
    assert result.best_score == max(h["per_lang"]["en"] for h in result.history)


def test_layerwise_lr_scales_updates_not_gradients():
    config = get_model_config("xlmr_tiny")
    from xlm_jax.workflows.loading import task_model
    from xlm_jax.models.xlm import init_params
    import flax.linen as nn

    params = nn.unbox(init_params(task_model(config, F.get_task("classification"), 2), jax.random.key(0)))
    scales = F.lr_scales(params, config, 0.5, 10.0)
    assert scales["encoder"]["layers"]["attention"]["query"]["kernel"].reshape(-1).tolist() == [0.25, 0.5]
    assert float(scales["encoder"]["embeddings"]["word_embeddings"]["embedding"]) == 0.125
    assert float(scales["classifier"]["out_proj"]["kernel"]) == 10.0
    cfg = F.FinetuneConfig(task="classification", lr=1e-3, head_lr=1e-2, layer_decay=0.5, warmup_ratio=0.0,
                           weight_decay=0.0, clip_norm=0.0)
    opt = F.build_optimizer(cfg, params, config, total_steps=10)
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    q = np.asarray(updates["encoder"]["layers"]["attention"]["query"]["kernel"])
    # Adam's first update is -lr * g / (|g| + eps) = -lr: the per-layer scale shows up exactly in the update.
    np.testing.assert_allclose(q[0], -1e-3 * 0.25, rtol=1e-4)
    np.testing.assert_allclose(q[1], -1e-3 * 0.5, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(updates["classifier"]["out_proj"]["kernel"]), -1e-2, rtol=1e-4)


def test_ner_finetune_reports_entity_f1(setup, tmp_path):
    result = F.finetune(F.load_config(None, [
        "task=ner", f"init={setup['ckpt']}", f"tokenizer={setup['tok']}", f"out={tmp_path / 'ner'}",
        f"train=[{FIX / 'conll_en.txt'}]", f"valid=[{FIX / 'wikiann_test.txt'}]", "max_steps=3", "batch_size=2",
        "lr=1e-3", "labels=[O,B-PER,I-PER,B-ORG,I-ORG,B-LOC,I-LOC,B-MISC,I-MISC]",
    ]), log=lambda m: None)
    table = result.table
    assert table["metric"] == "f1" and table["langs"] == ["en", "de"]
    per = table["splits"]["valid"]["per_lang"]
    assert set(per["en"]) == {"n", "score", "precision", "recall"} and per["de"]["n"] == 1
    assert table["labels"][:3] == ["O", "B-PER", "I-PER"]


def _ner_sentences(lang: str, n: int, seed: int) -> str:
    """WikiANN-style lines of a learnable toy task: the word for "file" is a B-MISC entity, the word for "window"
    (or "door" ...: WORDS[lang][10]) followed by "page" a B-LOC I-LOC entity, every other word O."""
    import random

    rng, words, out = random.Random(seed), tiny_setup.WORDS[lang], []
    for _ in range(n):
        tokens = [(rng.choice(words[:4]), "O") for _ in range(rng.randint(3, 6))]
        for entity in rng.sample([[(words[5], "B-MISC")], [(words[10], "B-LOC"), (words[7], "I-LOC")]], rng.randint(1, 2)):
            at = rng.randrange(len(tokens) + 1)
            tokens[at:at] = entity
        out.append("".join(f"{lang}:{w}\t{label}\n" for w, label in tokens) + "\n")
    return "".join(out)


def test_ner_learns_a_toy_task_and_reports_its_entity_f1(setup, tmp_path):
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text(_ner_sentences("en", 64, 0))
    valid.write_text(_ner_sentences("en", 100, 1))
    result = F.finetune(F.load_config(None, [
        "task=ner", f"init={setup['ckpt']}", f"tokenizer={setup['tok']}", f"out={tmp_path / 'ner'}",
        f"train=[{train}]", f"valid=[{valid}]", "max_steps=80", "eval_every=40", "batch_size=16", "lr=3e-3",
        "dropout=0", "labels=[O,B-LOC,I-LOC,B-MISC]",
    ]), log=lambda m: None)
    scores = result.table["splits"]["valid"]["per_lang"]["en"]
    # 100 sentences hold ~150 entities; an untrained model (one label everywhere, or labels at random) scores
    # an entity F1 near 0: 0.9 needs both entity kinds and the two-word span right.
    assert scores["n"] == 100 and scores["score"] >= 0.9, scores
    p, r = scores["precision"], scores["recall"]
    assert scores["score"] == pytest.approx(2 * p * r / (p + r))


@pytest.mark.parametrize("name", ["classification", "ner", "pawsx", "xnli"])
def test_shipped_configs_load_with_their_documented_command(name):
    import shlex

    import yaml

    path = ROOT / "configs" / f"finetune_{name}.yaml"
    text = path.read_text()
    cfg = F.load_config(str(path))
    assert cfg.task == name
    for key, value in yaml.safe_load(text).items():  # every key is a field and keeps its value
        got = getattr(cfg, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    # The command on the file's first line parses (its placeholders as given).
    command = shlex.split(text.splitlines()[0].lstrip("# "))
    assert command[:4] == ["python", "-m", "xlm_jax.finetune", f"configs/finetune_{name}.yaml"]
    documented = F.load_config(str(ROOT / command[3]), command[4:])
    assert documented.init == "CKPT" and documented.task == name and documented.out.startswith("runs/")


def test_config_errors():
    with pytest.raises(UserError, match="unknown config key learning_rate"):
        F.load_config(None, ["learning_rate=1"])
    with pytest.raises(UserError, match="did you mean lr"):
        F.load_config(None, ["lrr=1"])
    with pytest.raises(UserError, match="protocol='translate'"):
        F.load_config(None, ["protocol=translate"])


def test_cli_bad_inputs_exit_2(setup, tmp_path, capsys):
    common = [f"init={setup['ckpt']}", f"tokenizer={setup['tok']}", f"out={tmp_path / 'x'}"]
    # One subprocess for the real exit path (exit 2, one `error:` line, no traceback); the other cases call main()
    # in-process, which goes through the same exit_on_user_error edge.
    unknown = subprocess.run([sys.executable, "-m", "xlm_jax.finetune", "task=sentiment", *common,
                              f"train=[{setup['train']}]"], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert unknown.returncode == 2
    assert "unknown task 'sentiment'; known tasks: xnli, pawsx, classification, ner" in unknown.stderr
    assert unknown.stderr.startswith("error: ") and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    for args, message in [
        (["task=classification", "labels=[file,print]", *common, f"train=[{FIX / 'bad_label.tsv'}]"],
         "bad_label.tsv:3: label 'prnt' is not in the label set {file, print}"),
        (["task=ner", *common, f"train=[{FIX / 'bad_ner.txt'}]"], "bad_ner.txt:3: malformed line"),
        (["task=classification", f"init={tmp_path / 'nope'}", f"tokenizer={setup['tok']}", f"train=[{setup['train']}]"],
         "no such checkpoint"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            finetune_main(args)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err, err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()  # nothing written on bad input


# ---- every value checked before any work (issue #10, kind 2) -------------------------------------------------

BAD_FINETUNE = [
    ("epochs=-3", ["epochs=-3.0", "> 0"]),
    ("epochs=0", ["epochs=0.0", "> 0"]),
    ("max_steps=-1", ["max_steps=-1", ">= 0"]),
    ("batch_size=0", ["batch_size=0", ">= 1"]),
    ("eval_batch_size=-2", ["eval_batch_size=-2", ">= 1"]),
    ("lr=0", ["lr=0.0", "> 0"]),
    ("lr=.inf", ["lr=inf", "> 0"]),
    ("head_lr=-1e-3", ["head_lr=-0.001", ">= 0"]),
    ("layer_decay=0", ["layer_decay=0.0", "(0, 1]"]),
    ("layer_decay=1.5", ["layer_decay=1.5", "(0, 1]"]),
    ("warmup_ratio=1", ["warmup_ratio=1.0", "[0, 1)"]),
    ("patience=-1", ["patience=-1", ">= 0"]),
    ("eval_every=-5", ["eval_every=-5", ">= 0"]),
    ("log_every=0", ["log_every=0", ">= 1"]),
    ("weight_decay=-0.1", ["weight_decay=-0.1", ">= 0"]),
    ("clip_norm=-1", ["clip_norm=-1.0", ">= 0"]),
    ("b1=1", ["b1=1.0", "[0, 1)"]),
    ("b2=-0.5", ["b2=-0.5", "[0, 1)"]),
    ("eps=0", ["eps=0.0", "> 0"]),
    ("dropout=1", ["dropout=1.0", "[0, 1)", "-1.0"]),
    ("dropout=-0.5", ["dropout=-0.5", "[0, 1)"]),
    ("dtype=fp16", ["dtype='fp16'", "float32", "bfloat16"]),
    ("dtype=float16", ["dtype='float16'", "bfloat16", "loss scaling"]),
    ("protocol=few_shot", ["protocol='few_shot'", "'zero_shot'", "'translate_train_all'"]),
    ("max_len=2", ["max_len=2", ">= 5", "special tokens"]),  # xnli: a pair of texts
    ("max_len=-1", ["max_len=-1", ">= 5"]),
    ("seed=-1", ["seed=-1", "[0, "]),
    ("mesh_data=0", ["mesh_data=0", ">= 1", "-1"]),
    ("mesh_fsdp=-1", ["mesh_data=-1", "mesh_fsdp=-1", "at most one"]),
    ("mesh_data=3", ["batch_size=32", "data=3 x fsdp=1", "multiple of 3"]),
    ("select_on=''", ["select_on=''", "empty"]),
    ("train_lang=''", ["train_lang=''", "empty"]),
    ("batch_size=2.5", ["batch_size=2.5", "integer"]),
    ("train=5", ["train=5", "list"]),
    ("labels=[entailment,neutral]", ["labels=['entailment', 'neutral']", "xnli", "fixed label set"]),
    ("task=classification labels=[a,b,a]", ["labels=['a', 'b', 'a']", "each listed once"]),
    ("task=ner labels=[O]", ["labels=['O']", "at least 2"]),
]


@pytest.mark.parametrize("override, words", BAD_FINETUNE, ids=[o for o, _ in BAD_FINETUNE])
def test_bad_values_name_key_value_and_valid_range(override, words):
    with pytest.raises(UserError) as err:
        F.load_config(None, override.split(" "))
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_single_text_tasks_accept_a_short_max_len():
    assert F.load_config(None, ["task=classification", "max_len=3"]).max_len == 3
    with pytest.raises(UserError, match="max_len=2 is too small: a single sentence"):
        F.load_config(None, ["task=ner", "max_len=2"])


def test_cli_refuses_bad_values_before_reading_anything(tmp_path, capsys):
    for override, words in [("epochs=-3", "epochs=-3.0"), ("max_steps=-1", "max_steps=-1"),
                            ("batch_size=0", "batch_size=0")]:
        with pytest.raises(SystemExit) as exit_info:
            finetune_main([override, "init=/nowhere", "tokenizer=/nowhere.model", "train=[/nowhere.tsv]",
                    f"out={tmp_path / 'out'}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "out").exists()


def test_select_on_and_max_len_are_checked_against_data_and_checkpoint_at_start_up(setup, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"select_on='zz'.*valid: avg, de, en, fr"):
        F.finetune(_cfg(setup, out, select_on="zz", max_steps=2), log=lambda m: None)
    # xnli pairs: 5 tokens fit the XLM layout (3 specials) but not this XLM-R checkpoint's (4 specials + 2 pieces).
    xnli = str(FIX / "xnli.dev.tsv")
    with pytest.raises(UserError, match=r"max_len=5 is too small: a sentence pair needs 4 special tokens.*>= 6"):
        F.finetune(_cfg(setup, out, task="xnli", train=[xnli], valid=[xnli], test=[], max_len=5, max_steps=2),
                   log=lambda m: None)
    assert not out.exists()


def test_nan_loss_stops_with_exit_3_and_saves_nothing_after(setup, tmp_path, capsys):
    """A learning rate that blows the model up (the issue's `lr=1000` on XNLI): exit 3 naming the step and the
    last good checkpoint, instead of a table of chance scores with exit 0; nothing is saved after the bad step."""
    out = tmp_path / "nan"
    # Warm-up from 0: the first update uses lr 0 (step 1 is evaluated and saved as best), later ones lr ~1e30.
    with pytest.raises(SystemExit) as exit_:
        finetune_main(_args(setup, out, lr=1e30, clip_norm=0, warmup_ratio=0.5, max_steps=6, eval_every=1, log_every=1))
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    bad_step = int(err.split("at step ")[1].split(";")[0])
    assert 1 < bad_step <= 6 and "NaN / inf" in err
    saved = sorted(p.name for p in (out / "best").iterdir())
    assert len(saved) == 2 and saved[1] == "task.json" and int(saved[0]) < bad_step
    assert f"last good checkpoint is {out / 'best' / saved[0]} (nothing later was saved)" in err, err
    assert not (out / "results.json").exists() and not (out / "results.md").exists()
    valid_steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines() if "valid" in line]
    assert valid_steps and max(valid_steps) < bad_step
    # The API raises, naming the same checkpoint.
    with pytest.raises(F.NonFiniteError) as raised:
        F.finetune(_cfg(setup, tmp_path / "api", lr=1e30, clip_norm=0, warmup_ratio=0.5, max_steps=6, eval_every=1),
                   log=lambda m: None)
    assert raised.value.last_good == str(next((tmp_path / "api" / "best").glob("[0-9]*")))
