import dataclasses
from pathlib import Path

import pytest
import yaml

from xlm_jax.data.batches import DataConfig
from xlm_jax.core.errors import UserError
from xlm_jax.pretrain.config import DataSection, TrainConfig, load_config, to_yaml

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_overrides_are_typed():
    cfg = load_config(None, ["train.steps=70", "optimizer.lr=1e-4", "data.mono_langs=en,fr", "mesh.fsdp=2",
                             "checkpoint.keep_best=false", "data.para_pairs=[de-en, en-fr]", "seed=3"])
    assert cfg.train.steps == 70 and isinstance(cfg.train.steps, int)
    assert cfg.optimizer.lr == 1e-4 and isinstance(cfg.optimizer.lr, float)
    assert cfg.data.mono_langs == ("en", "fr")
    assert cfg.data.para_pairs == ("de-en", "en-fr")
    assert cfg.mesh.fsdp == 2 and cfg.checkpoint.keep_best is False and cfg.seed == 3
    # Untouched fields of a section keep the default run's values, not the bare dataclass defaults.
    assert cfg.optimizer.warmup_steps == TrainConfig().optimizer.warmup_steps == 50


def test_mapping_entry_override_keeps_other_entries():
    cfg = load_config(None, ["data.objectives.tlm=0"])
    assert cfg.data.objectives == {"mlm": 1.0, "tlm": 0.0}
    cfg = load_config(None, ["data.objectives={clm: 1}"])
    assert cfg.data.objectives == {"clm": 1.0}


def test_model_overrides_and_base():
    cfg = load_config(None, ["model.hidden_size=64", "model.dtype=bfloat16"])
    assert cfg.model.base == "xlmr_tiny"
    assert cfg.model.overrides["hidden_size"] == 64 and cfg.model.overrides["num_layers"] == 2
    resolved = cfg.model.resolve(vocab_size=500)
    assert (resolved.hidden_size, resolved.vocab_size, resolved.dtype) == (64, 500, "bfloat16")
    # Another base drops the default's overrides (they were chosen for xlmr_tiny).
    cfg = load_config(None, ["model.base=xlmr_base"])
    assert dict(cfg.model.overrides) == {} and cfg.model.resolve().hidden_size == 768


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.step=5", ["train.step", "train.steps"]),
        ("model.hiden_size=3", ["model.hiden_size", "model.hidden_size"]),
        ("optimzer.lr=1", ["optimzer", "optimizer"]),
        ("train.steps=abc", ["train.steps", "'abc'", "integer"]),
        ("train.steps=1.5", ["train.steps", "1.5", "integer"]),
        ("mesh.data=true", ["mesh.data", "True", "integer"]),
        ("checkpoint.keep_best=3", ["checkpoint.keep_best", "true or false"]),
        ("optimizer.lr=fast", ["optimizer.lr", "'fast'", "number"]),
        ("model.activation=tanh", ["model.activation", "'gelu'"]),
        ("data.objectives=[mlm]", ["data.objectives", "mapping"]),
        ("model.base=xlmr_bse", ["xlmr_base"]),
        ("train.steps", ["KEY=VALUE"]),
        ("train.steps.x=1", ["train.steps", "integer"]),
    ],
)
def test_bad_keys_and_types_name_key_value_and_expectation(override, words):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_default_yaml_is_the_dataclass_default():
    assert load_config(CONFIGS / "default.yaml") == TrainConfig() == load_config(None)


@pytest.mark.parametrize("name", ["default", "xlm_mlm_tlm_xnli15", "xlm_mlm_100", "xlmr_base", "xlmr_large", "xlmr_xl"])
def test_recipes_load_and_start_with_their_command(name):
    path = CONFIGS / f"{name}.yaml"
    assert path.read_text().splitlines()[0].startswith("# python -m xlm_jax.train")
    cfg = load_config(path)
    model = cfg.model.resolve()
    if name.startswith("xlmr_") and name != "xlmr_xl":
        assert (cfg.train.seq_len, cfg.train.batch_size, cfg.data.lang_alpha_mono) == (512, 8192, 0.3)
        assert (cfg.optimizer.b2, cfg.optimizer.eps, cfg.optimizer.weight_decay) == (0.98, 1e-6, 0.01)
    if name.startswith("xlm_"):
        assert cfg.optimizer.schedule == "inverse_sqrt" and cfg.optimizer.lr == 1e-4 and model.family == "xlm"
    if name == "xlmr_xl":
        assert model.pre_layer_norm and model.hidden_size == 2560


def test_yaml_round_trip(tmp_path):
    cfg = load_config(None, ["train.steps=90", "model.num_layers=1", "data.mono_langs=en", "optimizer.lr=3e-4"])
    path = tmp_path / "c.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(path) == cfg


def test_data_section_mirrors_data_config():
    """Every batch-recipe field of DataConfig is settable as data.<field>, with the same default."""
    ours = {f.name: f for f in dataclasses.fields(DataSection)}
    base = DataConfig(mono_langs=("en",))
    for f in dataclasses.fields(DataConfig):
        if f.name in ("seq_len", "batch_size", "seed", "split", "langs", "mono_langs", "para_pairs", "objectives"):
            continue
        assert f.name in ours, f.name
        assert getattr(DataSection(), f.name) == getattr(base, f.name), f.name


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"stepz": 3}}))
    with pytest.raises(UserError, match="train.stepz.*train.steps"):
        load_config(path)
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.yaml")


# ---- every value is type- and range-checked when the config is built (issue #10, kind 2) ---------------------

BAD_VALUES = [
    # model.* (ModelConfig fields through the base + overrides)
    ("model.dtype=fp16", ["model.dtype", "'fp16'", "float32", "bfloat16"]),
    ("model.dtype=float16", ["model.dtype", "'float16'", "float32", "bfloat16", "loss scaling"]),
    ("model.param_dtype=float64", ["model.param_dtype", "'float64'", "float32, bfloat16"]),
    ("model.num_heads=0", ["model.num_heads=0", ">= 1"]),
    ("model.num_heads=3", ["model.hidden_size=128", "model.num_heads=3", "divid"]),
    ("model.hidden_size=-8", ["model.hidden_size=-8", ">= 1"]),
    ("model.num_layers=0", ["model.num_layers=0", ">= 1"]),
    ("model.intermediate_size=0", ["model.intermediate_size=0", ">= 1"]),
    ("model.max_positions=0", ["model.max_positions=0", ">= 1"]),
    ("model.n_langs=0", ["model.n_langs=0", ">= 1"]),
    ("model.vocab_size=0", ["model.vocab_size=0", ">= 1"]),
    ("model.activation=swish", ["model.activation", "'swish'", "'gelu'", "'relu'"]),
    ("model.attention_impl=flash", ["model.attention_impl", "'flash'", "'xla'", "'cudnn'"]),
    ("model.remat_policy=some", ["model.remat_policy", "'some'", "'dots'"]),
    ("model.family=bert", ["model.family", "'bert'", "'xlmr'"]),
    ("model.dropout=1.0", ["model.dropout=1.0", "[0, 1)"]),
    ("model.attention_dropout=-0.1", ["model.attention_dropout=-0.1", "[0, 1)"]),
    ("model.layer_norm_eps=0", ["model.layer_norm_eps=0.0", "> 0"]),
    ("model.initializer_range=-0.02", ["model.initializer_range=-0.02", "> 0"]),
    ("model.type_vocab_size=-1", ["model.type_vocab_size=-1", ">= 0"]),
    ("model.mask_token_id=-2", ["model.mask_token_id=-2", "-1 (the last id)"]),
    ("model.pad_token_id=9000", ["model.pad_token_id=9000", "[0, 8001]"]),  # data.vocab_size 8000 + 2 ids
    ("model.langs=[en, en]", ["model.langs", "twice"]),
    ("model.scan_layers=2", ["model.scan_layers", "true or false"]),
    # data.*
    ("data.objectives={mlm: -1.0}", ["data.objectives.mlm=-1.0", ">= 0"]),
    ("data.objectives={mlm: 0, tlm: 0}", ["data.objectives", "at least one", "> 0", "mlm, clm, tlm"]),
    ("data.objectives={nsp: 1}", ["data.objectives.nsp", "mlm, clm, tlm"]),
    ("data.objectives.mlm=.nan", ["data.objectives.mlm=nan", ">= 0"]),
    ("data.objectives={mlm:1}", ["data.objectives", "space after the colon"]),
    ("data.valid_fraction=1", ["data.valid_fraction=1.0", "[0, 1)"]),
    ("data.mask_prob=0", ["data.mask_prob=0.0", "(0, 1]"]),
    ("data.mask_prob=1.5", ["data.mask_prob=1.5", "(0, 1]"]),
    ("data.mask_replace=0.5", ["data.mask_replace=0.5", "sum to 1"]),
    ("data.mask_random=-0.1", ["data.mask_random=-0.1", "[0, 1]"]),
    ("data.mask_count=bernoulli", ["data.mask_count", "'bernoulli'", "'stochastic'", "'ceil'"]),
    ("data.tlm_layout=bert", ["data.tlm_layout", "'bert'", "'xlmr'", "'xlm'"]),
    ("data.tlm_batching=dynamic", ["data.tlm_batching", "'dynamic'", "'fixed'", "'tokens'"]),
    ("data.tlm_batching=tokens", ["data.tlm_tokens_per_batch=0", ">= 64"]),
    ("data.lang_alpha_mono=-1", ["data.lang_alpha_mono=-1.0", "[0, 1]"]),
    ("data.lang_alpha_para=2", ["data.lang_alpha_para=2.0", "[0, 1]"]),
    ("data.sample_alpha=-0.5", ["data.sample_alpha=-0.5", ">= 0"]),
    ("data.vocab_size=2", ["data.vocab_size=2", ">= 4"]),
    ("data.max_len=0", ["data.max_len=0", ">= 1"]),
    ("data.tlm_seq_len=4", ["data.tlm_seq_len=4", ">= 8", "or 0"]),
    ("data.tlm_max_len=0", ["data.tlm_max_len=0", ">= 1"]),
    ("data.tlm_bucket_multiple=0", ["data.tlm_bucket_multiple=0", ">= 1"]),
    ("data.tokenizer_sentences=0", ["data.tokenizer_sentences=0", ">= 1"]),
    ("data.max_langs=-1", ["data.max_langs=-1", ">= 0"]),
    ("data.para_pairs=[en]", ["data.para_pairs[0]", "'en'", "en-fr"]),
    ("data.para_pairs=[en-en]", ["data.para_pairs[0]", "'en-en'", "two different languages"]),
    # train.*
    ("train.steps=0", ["train.steps=0", ">= 1"]),
    ("train.batch_size=-4", ["train.batch_size=-4", ">= 1"]),
    ("train.seq_len=4", ["train.seq_len=4", ">= 8"]),
    ("train.seq_len=256", ["256", "model.max_positions=128"]),
    ("train.grad_accum=0", ["train.grad_accum=0", ">= 1"]),
    ("train.grad_accum=3", ["train.batch_size=32", "train.grad_accum=3"]),
    ("train.stop_at=600", ["train.stop_at=600", "[1, 500]"]),
    ("train.stop_at=-1", ["train.stop_at=-1", "or 0"]),
    ("train.eval_every=-1", ["train.eval_every=-1", ">= 0"]),
    ("train.eval_batches=-2", ["train.eval_batches=-2", ">= 0"]),
    ("train.log_every=0", ["train.log_every=0", ">= 1"]),
    ("train.prefetch=-1", ["train.prefetch=-1", ">= 0"]),
    ("train.prefetch=1.5", ["train.prefetch=1.5"]),
    ("model.lm_head_chunk=-1", ["model.lm_head_chunk=-1", ">= 1", "or 0"]),
    # optimizer.*
    ("optimizer.lr=0", ["optimizer.lr=0.0", "> 0"]),
    ("optimizer.lr=-1e-4", ["optimizer.lr=-0.0001", "> 0"]),
    ("optimizer.lr=.inf", ["optimizer.lr=inf", "> 0"]),
    ("optimizer.warmup_steps=-1", ["optimizer.warmup_steps=-1", ">= 0"]),
    ("optimizer.warmup_steps=500", ["train.steps=500", "optimizer.warmup_steps=500"]),
    ("optimizer.b1=1", ["optimizer.b1=1.0", "[0, 1)"]),
    ("optimizer.b2=-0.1", ["optimizer.b2=-0.1", "[0, 1)"]),
    ("optimizer.eps=0", ["optimizer.eps=0.0", "> 0"]),
    ("optimizer.weight_decay=-0.01", ["optimizer.weight_decay=-0.01", ">= 0"]),
    ("optimizer.clip_norm=-1", ["optimizer.clip_norm=-1.0", ">= 0"]),
    ("optimizer.schedule=cosin", ["optimizer.schedule", "'cosin'", "'cosine'", "'linear'"]),
    ("optimizer.power=0", ["optimizer.power=0.0", "> 0"]),
    ("optimizer.end_lr=-1", ["optimizer.end_lr=-1.0", ">= 0"]),
    ("optimizer.warmup_init_lr=.nan", ["optimizer.warmup_init_lr=nan", ">= 0"]),
    # mesh.*, checkpoint.*, top level
    ("mesh.data=0", ["mesh.data=0", ">= 1", "-1"]),
    ("mesh.fsdp=-2", ["mesh.fsdp=-2", ">= 1", "-1"]),
    ("mesh.tensor=-1", ["mesh.data=-1", "mesh.tensor=-1", "at most one -1"]),
    ("mesh.data=3", ["train.batch_size=32", "data=3 x fsdp=1", "multiple of 3"]),
    ("checkpoint.every=0", ["checkpoint.every=0", ">= 1"]),
    ("checkpoint.keep=0", ["checkpoint.keep=0", ">= 1"]),
    ("seed=-1", ["seed=-1", "[0, "]),
    ("run_dir=''", ["run_dir=''"]),
]


@pytest.mark.parametrize("override, words", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_values_name_key_value_and_valid_range(override, words):
    with pytest.raises(UserError) as err:
        load_config(None, [override])
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_config_file_values_are_checked_too(tmp_path):
    path = tmp_path / "c.yaml"
    for section, values, message in [("model", {"num_heads": 0}, "model.num_heads=0: must be an integer >= 1"),
                                     ("optimizer", {"lr": -1}, "optimizer.lr=-1.0: must be a number > 0"),
                                     ("data", {"mask_prob": 2}, r"data.mask_prob=2.0: must be a number in \(0, 1\]")]:
        path.write_text(yaml.safe_dump({section: values}))
        with pytest.raises(UserError, match=message):
            load_config(path)


@pytest.mark.parametrize("fields, words", [
    (dict(num_heads=0), ["model.num_heads=0"]),
    (dict(num_heads=5), ["model.num_heads=5", "divid"]),
    (dict(dtype="fp16"), ["model.dtype='fp16'", "bfloat16"]),
    (dict(dtype="float16"), ["model.dtype='float16'", "float32"]),
    (dict(hidden_size="64"), ["model.hidden_size='64'", "integer"]),
    (dict(dropout=float("nan")), ["model.dropout=nan", "[0, 1)"]),
    (dict(mask_token_id=1000), ["model.mask_token_id=1000", "[0, 999]", "-1"]),
    (dict(bos_token_id=-1), ["model.bos_token_id=-1", "[0, 999]"]),
    (dict(langs=("en", "fr"), n_langs=3), ["model.langs", "model.n_langs=3"]),
    (dict(use_lang_emb="yes"), ["model.use_lang_emb", "true or false"]),
])
def test_model_config_api_checks_every_field(fields, words):
    """ModelConfig itself (the Python API, converted and saved configs) checks what model.* checks."""
    from xlm_jax.models.config import get_model_config

    with pytest.raises(UserError) as err:
        get_model_config("xlmr_tiny", **fields)
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_every_named_config_and_saved_form_is_valid():
    import numpy as np

    from xlm_jax.models.config import NAMED_CONFIGS, ModelConfig, from_dict, to_dict

    for name, cfg in NAMED_CONFIGS.items():
        assert from_dict(to_dict(cfg)) == cfg, name
    assert NAMED_CONFIGS["xlm_mlm_xnli15_1024"].mask_id == 5 and NAMED_CONFIGS["xlmr_base"].mask_id == 250001
    # Values read from checkpoints may be NumPy scalars or lists: normalised, not refused.
    cfg = ModelConfig(vocab_size=np.int64(100), hidden_size=64, num_heads=4, layer_norm_eps=np.float32(1e-5),
                      langs=["en"], dropout=0)
    assert type(cfg.vocab_size) is int and cfg.langs == ("en",) and type(cfg.dropout) is float
    hash(cfg)  # still usable as a static (hashable) module attribute


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    if path.name.startswith("finetune_"):
        from xlm_jax.finetune import load_config as load_finetune

        load_finetune(path)
    elif path.name.startswith("mt_"):
        from xlm_jax.mt.config import load_mt_config

        load_mt_config(path)
    else:
        load_config(path).model.provisional()


def test_train_refuses_bad_values_before_any_work(tmp_path, monkeypatch, capsys):
    """`python -m xlm_jax.train model.num_heads=0` ends at once: nothing prepared in the cache, no run directory."""
    import time

    from xlm_jax import train

    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    cache.mkdir()
    monkeypatch.setenv("XLM_JAX_CACHE", str(cache))
    for override, words in [("model.num_heads=0", "model.num_heads=0"), ("model.dtype=fp16", "model.dtype='fp16'"),
                            ("data.objectives={mlm: -1.0}", "data.objectives.mlm=-1.0"),
                            ("train.prefetch=-1", "train.prefetch=-1"),
                            ("model.lm_head_chunk=-8", "model.lm_head_chunk=-8")]:
        start = time.perf_counter()
        with pytest.raises(SystemExit) as exit_info:
            train.main([override, f"run_dir={run_dir}"])
        assert time.perf_counter() - start < 5  # the config alone: no corpus, no tokenizer, no compilation
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert list(cache.iterdir()) == [] and not run_dir.exists()


def test_steps_below_the_default_warm_up_name_a_warm_up_that_fits(capsys):
    """`python -m xlm_jax.train train.steps=20` (default warm-up 50): one error line naming
    optimizer.warmup_steps= with a value that the same command then accepts (issue 21)."""
    from xlm_jax import train

    with pytest.raises(SystemExit) as exit_info:
        train.main(["train.steps=20"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "train.steps=20 must exceed optimizer.warmup_steps=50" in err
    suggested = err.split("e.g. optimizer.warmup_steps=")[1].split(")")[0]
    assert load_config(None, ["train.steps=20", f"optimizer.warmup_steps={suggested}"]).optimizer.warmup_steps == 2
    # wsd: the suggestion leaves room for the decay too.
    with pytest.raises(UserError, match=r"e\.g\. optimizer\.warmup_steps=2\b"):
        load_config(None, ["train.steps=20", "optimizer.schedule=wsd", "optimizer.decay_steps=10"])
    load_config(None, ["train.steps=20", "optimizer.schedule=wsd", "optimizer.decay_steps=10",
                       "optimizer.warmup_steps=2"])


def _help_config_model_defaults() -> tuple[str, dict, dict]:
    """--help-config's output, parsed: (default base, the model.<field> defaults, {base: its differing fields})."""
    import ast
    import re
    import subprocess
    import sys

    text = subprocess.run([sys.executable, "-m", "xlm_jax.train", "--help-config"], capture_output=True, text=True,
                          check=True, timeout=120).stdout
    defaults, per_base, base = {}, {}, None
    for line in text.splitlines():
        if line.startswith("model.base = "):
            base = ast.literal_eval(line.split(" = ", 1)[1])
        elif line.startswith("model.base="):
            name, _, rest = line[len("model.base="):].partition(": ")
            # "k=v, k=v": each value a Python literal; split at ", name=" boundaries.
            parts = re.split(r", (?=[a-z_]+=)", rest) if rest else []
            per_base[name] = {k: ast.literal_eval(v) for k, v in (p.split("=", 1) for p in parts)}
        elif line.startswith("model.") and " = " in line and not line.startswith("model.init_from"):
            key, value = line[len("model."):].split(" = ", 1)
            defaults[key] = ast.literal_eval(value.removesuffix(" (from the data)"))
    return base, defaults, per_base


def test_help_config_model_defaults_are_the_ones_each_base_resolves_to():
    """Every shown model default is the one used: for the default run and for every named model.base (naming
    xlm_tiny gave dropout 0.1 while --help-config showed 0.0)."""
    from xlm_jax.models.config import NAMED_CONFIGS, to_dict

    base, defaults, per_base = _help_config_model_defaults()
    fields = set(to_dict(load_config(None, ["data.dir=d"]).model.resolve()))
    assert base == "xlmr_tiny" and set(defaults) == fields
    assert set(per_base) == set(NAMED_CONFIGS) - {base}
    for name in NAMED_CONFIGS:
        resolved = to_dict(load_config(None, ["data.dir=d", f"model.base={name}"]).model.resolve())
        shown = {**defaults, **per_base.get(name, {})}
        assert shown == {k: (list(v) if isinstance(v, tuple) else v) for k, v in resolved.items()}, name
    assert per_base["xlm_tiny"]["dropout"] == 0.1 and defaults["dropout"] == 0.0
