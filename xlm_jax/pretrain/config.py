"""The pretraining configuration: typed dataclasses, read from YAML and `key=value` overrides.

    python -m xlm_jax.train configs/xlmr_base.yaml train.steps=1000 optimizer.lr=3e-4 mesh.fsdp=8

Sections (every field below is a valid key; `python -m xlm_jax.train --help-config` prints them with defaults):

    run_dir, seed                 where the run lives; the seed of parameters, dropout and batches
    model.base                    a named ModelConfig (`xlm_jax.models.config.NAMED_CONFIGS`); model.<field> overrides
                                  any ModelConfig field (model.hidden_size=256, model.dtype=bfloat16 ...)
    data.*                        the preprocessed directory (or the corpus to prepare) and the batch recipe
    train.*                       steps, global batch, sequence length, logging / evaluation cadence
    optimizer.*                   `xlm_jax.training.optim.OptimizerConfig`
    mesh.data / fsdp / tensor     `xlm_jax.training.sharding.MeshConfig` (-1 = fill with the remaining devices)
    checkpoint.*                  cadence, how many to keep, keep-best
    phases.<name>.*               optional training phases (mmBERT's recipe: configs/mmbert_*.yaml): per phase its
                                  steps [start, end) and what changes from the previous one: the masking rate, the
                                  language-sampling temperature, the languages (a curriculum), the row length and
                                  the RoPE bases (`Phase`). {} = one phase with the sections' values (as before).

Values are parsed with `yaml.safe_load` (so `train.steps=100` is an int, `data.mono_langs=[en, fr]` a list,
`data.objectives={mlm: 1, tlm: 1}` a mapping) and checked against the field's type: a wrong type or an unknown
key is a `UserError` naming the key, the value and what is valid. Two conveniences: a float field accepts a
string such as `1e-4` (PyYAML reads exponents without a dot as strings), and a tuple-of-strings field accepts
`en,fr`. A key inside a mapping field may be set alone: `data.objectives.tlm=0`.

The parsing machinery is `xlm_jax.training.settings` (shared with fine-tuning); `ModelSection` parses its own keys
through that module's custom-section methods. The dataclass defaults ARE the embedded default run (`configs/default.yaml` spells the same values out; a test
keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from xlm_jax.core.errors import UserError, check_fields, check_range, check_value, unknown_name
from xlm_jax.data.batches import MIN_SEQ_LEN, check_recipe, check_tlm_budget
from xlm_jax.data.tokenizer import MIN_PIECES
from xlm_jax.models.config import NAMED_CONFIGS, NON_ARCHITECTURE, ROPE_FAMILIES, ModelConfig, get_model_config
from xlm_jax.training.optim import OptimizerConfig
from xlm_jax.training.settings import MAX_SEED, check_batch_split, flatten, load_dataclass, to_dict
from xlm_jax.training.sharding import MeshConfig, check_mesh_devices

_MODEL_FIELD_TYPES = typing.get_type_hints(ModelConfig)


@dataclass(frozen=True)
class ModelSection:
    """A named base configuration plus ModelConfig field overrides (the vocabulary size, special ids and
    languages come from the data unless set here)."""

    base: str = "xlmr_tiny"
    overrides: Mapping[str, Any] = field(
        default_factory=lambda: {
            "hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 512, "dropout": 0.0,
            "attention_dropout": 0.0,
        }
    )
    # A checkpoint to start from (anything `python -m xlm_jax.convert` reads): the architecture then comes from
    # it, and base / overrides may only change numerics (`xlm_jax.pretrain.adapt`). base "" = not given.
    init_from: str = ""

    def __post_init__(self):
        check_fields(self, "model.")
        if self.base not in NAMED_CONFIGS and not (self.init_from and self.base == ""):
            raise unknown_name("model.base", self.base, NAMED_CONFIGS)

    def resolve(self, **data_fields: Any) -> ModelConfig:
        """The ModelConfig: base, then the data-derived fields (vocab, specials, langs), then the user's overrides."""
        if not self.base:
            # model.init_from without a base: the checkpoint decides the architecture (xlm_jax.pretrain.adapt compares the
            # architecture overrides with it); the numerics are checked here, on a stand-in.
            return ModelConfig().replace(**{k: v for k, v in self.overrides.items() if k in NON_ARCHITECTURE})
        return get_model_config(self.base, **{**data_fields, **self.overrides})

    def provisional(self, vocab_size: int | None = None) -> ModelConfig:
        """The ModelConfig as far as it is known before the data is read (UserError for a bad override). The data
        decides the vocabulary size (`vocab_size` when known in advance) and the languages unless they are
        overridden, so they get stand-ins here that no special id or language count can conflict with;
        `resolve` checks the real ones."""
        stand_in: dict[str, Any] = {"vocab_size": vocab_size or _ANY_VOCAB, "langs": ()}
        if "langs" in self.overrides and "n_langs" not in self.overrides:
            stand_in["n_langs"] = max(1, len(self.overrides["langs"]))
        return self.resolve(**{k: v for k, v in stand_in.items() if k not in self.overrides})

    # ---- `xlm_jax.training.settings`' custom-section methods: model.<any ModelConfig field> ----

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return _MODEL_FIELD_TYPES

    def with_mapping(self, raw: Mapping, prefix: str) -> ModelSection:
        """This section with `raw` (base, init_from, ModelConfig fields) applied, each value checked."""
        valid = ["base", "init_from"] + sorted(_MODEL_FIELD_TYPES)
        overrides = {}
        for key, value in raw.items():
            if key in ("base", "init_from"):
                continue
            if key not in _MODEL_FIELD_TYPES:
                raise unknown_name("config key", str(key), valid, prefix)
            overrides[key] = check_value(f"{prefix}{key}", value, _MODEL_FIELD_TYPES[key])
        init_from = check_value(f"{prefix}init_from", raw.get("init_from", self.init_from), str)
        if init_from:
            # The checkpoint decides the architecture: only what the user names is compared with it.
            base = check_value(f"{prefix}base", raw.get("base", ""), str)
            return ModelSection(base=base, overrides=overrides, init_from=init_from)
        base = check_value(f"{prefix}base", raw.get("base", self.base), str)
        # Naming another base drops the default's overrides (they were chosen for the default's base).
        kept = dict(self.overrides) if base == self.base else {}
        return ModelSection(base=base, overrides={**kept, **overrides})

    def to_plain(self) -> dict[str, Any]:
        """base, init_from (when given) and the overridden fields, flat."""
        init = {"init_from": self.init_from} if self.init_from else {}
        return {"base": self.base, **init, **{k: to_dict(v) for k, v in self.overrides.items()}}


_ANY_VOCAB = 2**31 - 1  # a vocabulary size large enough for any special id (see ModelSection.provisional)


@dataclass(frozen=True)
class DataSection:
    """What to read and how to batch it. Batch-recipe fields mean what they mean in `xlm_jax.data.batches.DataConfig`."""

    # Where the preprocessed arrays are. "" = prepare `corpus` into the cache (gettext demo by default).
    dir: str = ""
    corpus: str = "gettext"  # raw corpus directory to prepare when dir is "", or "gettext" (system catalogs)
    vocab_size: int = 8000  # SentencePiece pieces + 2 ... trained when preparing (the vocab is vocab_size + 2 ids)
    tokenizer_sentences: int = 100000  # sentences sampled (α = 0.3 over languages) to train it
    max_langs: int = 15  # when preparing: keep the N languages with the most en-X pairs, plus en (0 = all)
    max_len: int = 64  # when preparing: pieces per sentence (longer ones are truncated)
    valid_fraction: float = 0.01  # when preparing a flat corpus: held-out share (of translation groups: xlm_jax.data.heldout)
    cache_dir: str = ""  # "" = $XLM_JAX_CACHE or ~/.cache/xlm_jax
    tokenizer: str = ""  # a SentencePiece model to prepare data with ("" = train one; with model.init_from, its own)
    # Batch recipe.
    objectives: Mapping[str, float] = field(default_factory=lambda: {"mlm": 1.0, "tlm": 1.0})
    mono_langs: tuple[str, ...] = ()  # () = every language of the corpus
    para_pairs: tuple[str, ...] = ()  # ("en-fr", ...); () = every pair of the corpus (when TLM is on)
    lang_alpha_mono: float = 0.7
    lang_alpha_para: float = 0.7
    mask_prob: float = 0.15
    mask_replace: float = 0.8
    mask_random: float = 0.1
    mask_keep: float = 0.1
    mask_count: str = "stochastic"
    sample_alpha: float = 0.0
    bos_per_sequence: bool = True
    tlm_layout: str = "xlmr"
    tlm_max_len: int = 100
    tlm_seq_len: int = 0
    tlm_random_order: bool = True
    tlm_batching: str = "fixed"
    tlm_tokens_per_batch: int = 0
    tlm_bucket_multiple: int = 32
    # TLM pairs packed several per row (docs/data.md "Packing"); false keeps the papers' one pair per padded row
    # (the same batches as before packing existed).
    pack: bool = True
    pack_segments: int = 8

    def __post_init__(self):
        check_fields(self, "data.")
        check_range("data.vocab_size", self.vocab_size, MIN_PIECES, integer=True)
        check_range("data.tokenizer_sentences", self.tokenizer_sentences, 1, integer=True)
        check_range("data.max_langs", self.max_langs, 0, integer=True)
        check_range("data.max_len", self.max_len, 1, integer=True)
        check_range("data.valid_fraction", self.valid_fraction, 0, 1, high_open=True)
        check_recipe(self, "data.")


@dataclass(frozen=True)
class TrainSection:
    steps: int = 500  # optimizer updates in the whole run (the schedule's length)
    batch_size: int = 32  # GLOBAL sequences per objective per update (all processes, all micro-batches)
    seq_len: int = 64  # MLM/CLM row length in tokens (TLM: data.tlm_seq_len, 0 = the same)
    grad_accum: int = 1  # micro-batches per update (batch_size / grad_accum rows each)
    stop_at: int = 0  # stop (with a checkpoint) after this step without changing the schedule; 0 = steps
    log_every: int = 25  # steps between metrics.jsonl / TensorBoard records (values averaged over the interval)
    eval_every: int = 250  # steps between validations (0 = only at the end)
    eval_batches: int = 2  # held-out batches per language per validation (0 = the whole split)
    eval_langs: tuple[str, ...] = ()  # () = every MLM language that has a valid split
    progress: bool = True  # tqdm progress bar (process 0)
    # Host batches built ahead in a background thread while the device steps (xlm_jax.data.prefetch); 0 = each
    # batch built between steps. The batches are the same either way (a pure function of seed and step).
    prefetch: int = 2
    # What the optimizer updates: all | embeddings (word embeddings + LM-head bias) | parameter-path regexes
    # (`xlm_jax.pretrain.adapt.trainable_mask`); the rest stays bit-identical and has no optimizer moments.
    trainable: tuple[str, ...] = ("all",)

    def __post_init__(self):
        check_fields(self, "train.")
        for name in ("steps", "batch_size", "grad_accum", "log_every"):
            check_range(f"train.{name}", getattr(self, name), 1, integer=True)
        check_range("train.seq_len", self.seq_len, MIN_SEQ_LEN, integer=True)
        check_range("train.stop_at", self.stop_at, 1, self.steps, integer=True, also={0: "train.steps"})
        check_range("train.eval_every", self.eval_every, 0, integer=True)
        check_range("train.eval_batches", self.eval_batches, 0, integer=True)
        check_range("train.prefetch", self.prefetch, 0, integer=True)
        if self.batch_size % self.grad_accum:
            raise UserError(f"train.batch_size={self.batch_size} is not divisible by train.grad_accum={self.grad_accum}")


@dataclass(frozen=True)
class CheckpointSection:
    every: int = 250  # steps between checkpoints (also one at the end, and on SIGTERM / SIGINT)
    keep: int = 2  # most recent checkpoints kept in RUN_DIR/checkpoints
    keep_best: bool = True  # also keep the best by validation loss in RUN_DIR/best (params + model_config)
    async_save: bool = True  # write in a background thread while training continues

    def __post_init__(self):
        check_fields(self, "checkpoint.")
        check_range("checkpoint.every", self.every, 1, integer=True)
        check_range("checkpoint.keep", self.keep, 1, integer=True)


@dataclass(frozen=True)
class Phase:
    """One training phase: the updates [start, end) (update k builds the batch of step k + 1) and what changes at
    its start. An unset (null) field keeps the previous phase's value (the first phase: the data / train / model
    sections'). mmBERT (Marone et al. 2025): masking 30 % -> 15 % -> 5 % (its released config: 25 % first),
    temperature 0.7 -> 0.5 -> 0.3, 60 -> 110 -> 1833 languages, rows 1024 -> 8192, RoPE θ 10k -> 160k."""

    name: str
    start: int
    end: int
    mask_prob: float | None = None  # MLM / TLM masking rate, in (0, 1)
    temperature: float | None = None  # language sampling p_i ∝ n_i^τ (data.lang_alpha_mono / _para), in (0, 1]
    langs: tuple[str, ...] | None = None  # the MLM languages of this phase (a curriculum adds languages)
    top_langs: int | None = None  # or: the N languages of the corpus with the most training text
    seq_len: int | None = None  # MLM row length (train.seq_len)
    rope_theta: float | None = None  # RoPE base of the global layers (model.rope_theta; RoPE families only)
    local_rope_theta: float | None = None  # RoPE base of ModernBERT's local layers (model.local_rope_theta)

    def __post_init__(self):
        key = f"phases.{self.name}."
        check_fields(self, key)
        check_range(f"{key}start", self.start, 0, integer=True)
        check_range(f"{key}end", self.end, 1, integer=True)
        if self.mask_prob is not None:
            check_range(f"{key}mask_prob", self.mask_prob, 0, 1, low_open=True, high_open=True)
        if self.temperature is not None:
            check_range(f"{key}temperature", self.temperature, 0, 1, low_open=True)
        if self.top_langs is not None:
            check_range(f"{key}top_langs", self.top_langs, 1, integer=True)
            if self.langs is not None:
                raise UserError(f"{key}langs and {key}top_langs: give one of them (a list of languages, or how many "
                                "of the corpus's largest)")
        if self.langs is not None and not self.langs:
            raise UserError(f"{key}langs=[]: a phase needs at least one language (null keeps the previous phase's)")
        if self.seq_len is not None:
            check_range(f"{key}seq_len", self.seq_len, MIN_SEQ_LEN, integer=True)
        for name in ("rope_theta", "local_rope_theta"):
            if getattr(self, name) is not None:
                check_range(f"{key}{name}", getattr(self, name), 0, low_open=True)


_PHASE_FIELD_TYPES = {k: v for k, v in typing.get_type_hints(Phase).items() if k != "name"}


@dataclass(frozen=True)
class PhasesSection:
    """`phases: {<name>: {start, end, ...}, ...}` in order (YAML keeps a mapping's order); `phases.<name>.<field>=v`
    on the command line. Empty: the run is one phase (the data / train / model sections' values)."""

    phases: tuple[Phase, ...] = ()

    # ---- `xlm_jax.training.settings`' custom-section methods ----

    @classmethod
    def field_types(cls) -> dict[str, Any]:
        return {}  # keys are phase names (each a mapping of Phase fields)

    def with_mapping(self, raw: Mapping, prefix: str) -> PhasesSection:
        merged = {p.name: {k: v for k, v in to_dict(p).items() if k != "name"} for p in self.phases}
        for name, fields in raw.items():
            if not isinstance(fields, Mapping):
                raise UserError(f"{prefix}{name}={fields!r}: expected a mapping like {{start: 0, end: 100, "
                                "mask_prob: 0.3}")
            merged[str(name)] = {**merged.get(str(name), {}), **fields}
        phases = []
        for name, fields in merged.items():
            values = {}
            for key, value in fields.items():
                if key not in _PHASE_FIELD_TYPES:
                    raise unknown_name("config key", str(key), sorted(_PHASE_FIELD_TYPES), f"{prefix}{name}.")
                values[key] = check_value(f"{prefix}{name}.{key}", value, _PHASE_FIELD_TYPES[key])
            for key in ("start", "end"):
                if key not in values:
                    raise UserError(f"{prefix}{name}.{key} is missing: every phase gives its updates as start (first) "
                                    "and end (one past the last)")
            phases.append(Phase(name=str(name), **values))
        return PhasesSection(tuple(phases))

    def to_plain(self) -> dict[str, Any]:
        return {p.name: {k: to_dict(v) for k, v in dataclasses.asdict(p).items() if k != "name" and v is not None}
                for p in self.phases}


def check_phases(phases: Sequence[Phase], steps: int) -> None:
    """Phases must tile [0, train.steps) in order: the first starts at 0, each ends after it starts and the next
    starts where it ends (no overlap, no gap, never backwards), the last ends at train.steps."""
    if not phases:
        return
    if phases[0].start != 0:
        raise UserError(f"phases.{phases[0].name}.start={phases[0].start}: the first phase starts at 0")
    for prev, phase in zip((None, *phases), phases):
        if phase.end <= phase.start:
            raise UserError(f"phases.{phase.name}: end={phase.end} <= start={phase.start}: a phase goes forwards "
                            "(end > start)")
        if prev is not None and phase.start != prev.end:
            what = "overlaps" if phase.start < prev.end else "leaves a gap after"
            raise UserError(f"phases.{phase.name}.start={phase.start} {what} phases.{prev.name} (end={prev.end}): "
                            f"each phase starts where the previous one ends (start={prev.end})")
    if phases[-1].end != steps:
        raise UserError(f"phases.{phases[-1].name}.end={phases[-1].end}: the last phase ends at train.steps={steps}")


@dataclass(frozen=True)
class TrainConfig:
    run_dir: str = "runs/default"
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=1e-3, warmup_steps=50, weight_decay=0.01)
    )
    mesh: MeshConfig = field(default_factory=MeshConfig)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    phases: PhasesSection = field(default_factory=PhasesSection)

    def __post_init__(self):
        """Each section checks its own fields; here the values that depend on two sections."""
        check_fields(self)
        if not self.run_dir.strip():
            raise UserError("run_dir='': give the run's directory (e.g. run_dir=runs/my_run)")
        check_range("seed", self.seed, 0, MAX_SEED, integer=True)
        self.optimizer.check_steps(self.train.steps)
        tlm_len = self.data.tlm_seq_len or self.train.seq_len
        check_tlm_budget(self.data, tlm_len, "data.")
        tlm_on = self.data.objectives.get("tlm", 0) > 0
        # Every model.* override is checked now, not after the data is prepared. A corpus prepared by the run
        # has data.vocab_size pieces + <pad> (fairseq's offset) + <mask>; a given data.dir's is not known yet.
        model = self.model.provisional(None if self.data.dir else self.data.vocab_size + 2)
        phases = self.phases.phases
        check_phases(phases, self.train.steps)
        if not self.model.init_from:  # else the checkpoint's positions count (xlm_jax.pretrain.adapt checks it up front)
            check_positions(max([self.train.seq_len, tlm_len if tlm_on else 0]
                                + [p.seq_len for p in phases if p.seq_len]), model)
        for phase in phases:
            for name in ("rope_theta", "local_rope_theta"):
                if getattr(phase, name) is not None and self.model.base and model.family not in ROPE_FAMILIES:
                    raise UserError(f"phases.{phase.name}.{name}={getattr(phase, name):g}: model.family="
                                    f"{model.family!r} has no RoPE (only {' / '.join(ROPE_FAMILIES)})")
        if -1 not in (self.mesh.data, self.mesh.fsdp):  # else the device count decides, known at start-up
            try:
                check_batch_split(self.train.batch_size, self.mesh.data, self.mesh.fsdp, self.train.grad_accum)
            except UserError as err:
                # The mesh against the devices first: one this machine cannot hold is named as such (the backend
                # starts only on this error path, which ends the run before any worker process is forked).
                check_mesh_devices(self.mesh, also=str(err))
                raise


def check_positions(longest: int, model: ModelConfig) -> None:
    """Rows of `longest` tokens (train.seq_len, or data.tlm_seq_len with TLM on) must fit the position table."""
    if longest > model.max_positions:
        raise UserError(f"sequences of {longest} tokens (train.seq_len / data.tlm_seq_len) exceed "
                        f"model.max_positions={model.max_positions}: shorten them or raise model.max_positions")


# ---- reading and writing ---------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The TrainConfig of a YAML file (None: the defaults) with `key=value` overrides applied in order."""
    return load_dataclass(TrainConfig(), path, overrides)


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=120)


# Mapping-valued keys compared and listed as one value (`flat_keys`).
_WHOLE = ("data.objectives",)


def flat_keys(d: Mapping) -> dict[str, Any]:
    """A config's plain data (`to_dict`, or a config.yaml read back) as dotted keys: model.hidden_size, ..."""
    return flatten(d, whole=_WHOLE)


# The ModelConfig fields a run takes from its data (the tokenizer's vocabulary and special ids, the languages).
DATA_MODEL_FIELDS = ("vocab_size", "bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id", "mask_token_id",
                     "langs", "n_langs")


def model_defaults(base: str | None = None) -> dict[str, Any]:
    """The ModelConfig a run uses for `model.base=base` with no other model.* key (None: the default run's base and
    its overrides), as plain data: what --help-config shows and `ModelSection.resolve` gives (the fields of
    DATA_MODEL_FIELDS are then replaced by the data's)."""
    section = TrainConfig().model
    if base is not None:
        section = section.with_mapping({"base": base}, "model.")
    return flat_keys(to_dict(section.resolve()))


def describe() -> str:
    """Every key with its default (for --help-config). The model.* defaults are those of the resolved ModelConfig:
    the default run's, then, per named model.base, the fields in which that base differs (naming another base
    drops the default run's overrides)."""
    lines = []
    for key, value in flat_keys(to_dict(TrainConfig())).items():
        if not key.startswith("model.") or key == "model.base":
            lines.append(f"{key} = {value!r}")
    lines.append("model.init_from = '' (a checkpoint to start from; see xlm_jax.pretrain.adapt)")
    default_base = TrainConfig().model.base
    defaults = model_defaults()
    lines.append(f"# model.<field>: the default run's (model.base={default_base} with its overrides); fields marked "
                 "(from the data) are set from the tokenizer and languages of the data")
    for key, value in defaults.items():
        lines.append(f"model.{key} = {value!r}{' (from the data)' if key in DATA_MODEL_FIELDS else ''}")
    lines.append("# another model.base drops those overrides and takes that base's own values; where they differ "
                 "from the list above:")
    for base in NAMED_CONFIGS:
        if base == default_base:
            continue
        diff = {k: v for k, v in model_defaults(base).items() if defaults.get(k) != v}
        lines.append(f"model.base={base}: " + ", ".join(f"{k}={v!r}" for k, v in diff.items()))
    return "\n".join(lines)
