import dataclasses
from pathlib import Path

import pytest
import yaml

from xlm_jax.data.batches import DataConfig
from xlm_jax.errors import UserError
from xlm_jax.train_config import DataSection, TrainConfig, load_config, to_yaml

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
