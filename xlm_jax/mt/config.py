"""`python -m xlm_jax.train_mt`'s configuration: `MTConfig` (YAML + key=value overrides, every value checked).

Sections: model (initialisation), data (corpus, tokenizer, token-budget batches), objectives (directions and
their lambda schedules, denoising noise), train (iterations, accumulation, logging, validation), optimizer,
mesh, checkpoint. `python -m xlm_jax.train_mt --help-config` lists every key with its default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from xlm_jax.core.errors import UserError, check_choice, check_fields, check_range
from xlm_jax.data.noise import NoiseConfig
from xlm_jax.models.config import NAMED_CONFIGS
from xlm_jax.training.lambdas import LambdaSchedule, parse_lambda
from xlm_jax.training.optim import OptimizerConfig
from xlm_jax.training.settings import MAX_SEED, describe_dataclass, load_dataclass
from xlm_jax.training.sharding import MeshConfig

INITS = ("mlm", "encoder", "random")
METRICS = ("bleu", "chrf++", "bleu_tok")


@dataclass(frozen=True)
class MTModel:
    init: str = "random"  # mlm: encoder and decoder from init_from | encoder: encoder only | random
    init_from: str = ""  # an MLM checkpoint in any format `convert` reads (ours, HF, fairseq, XLM .pth)
    base: str = "xlm_tiny"  # random init: the named shape (vocabulary, languages and specials from the tokenizer)
    decoder_layers: int = 0  # 0: as many as the encoder
    dropout: float = -1.0  # -1: the base's / checkpoint's

    def __post_init__(self):
        check_fields(self, "model.")
        check_choice("model.init", self.init, INITS)
        if self.init != "random" and not self.init_from:
            raise UserError(f"model.init={self.init!r} needs model.init_from=CHECKPOINT (an MLM); or model.init=random")
        if self.init == "random" and self.base not in NAMED_CONFIGS:
            raise UserError(f"model.base={self.base!r}: valid are {', '.join(sorted(NAMED_CONFIGS))}")
        check_range("model.decoder_layers", self.decoder_layers, 0, integer=True)
        if self.dropout != -1.0:
            check_range("model.dropout", self.dropout, 0, 1, high_open=True)


@dataclass(frozen=True)
class MTData:
    corpus: str = "gettext"  # gettext (this machine's catalogs, built once into the cache) | a raw corpus directory
    cache_dir: str = ""  # default $XLM_JAX_CACHE or ~/.cache/xlm_jax
    tokenizer: str = ""  # default: the init checkpoint's tokenizer, else one trained on the corpus (cached)
    vocab_size: int = 8000  # pieces of a tokenizer trained here
    max_len: int = 64  # tokens per side with both delimiters; longer training sentences are dropped (XLM: 100)
    tokens_per_batch: int = 1500  # rows x padded width per update (XLM --tokens_per_batch 2000)
    width_bucket: int = 8  # batch widths are multiples of this: one compiled shape per width
    valid_fraction: float = 0.02  # of a flat corpus's pairs held out, by a hash of the source text
    valid_sentences: int = 200  # validation pairs translated for BLEU (0: no validation)
    max_pairs: int = 0  # keep the first N training pairs of each pair (0: all); the low-resource setting
    mono_split: bool = False  # UNMT: monolingual sides from disjoint halves of the pairs (l1 from even, l2 from odd)

    def __post_init__(self):
        check_fields(self, "data.")
        check_range("data.vocab_size", self.vocab_size, 16, integer=True)
        check_range("data.max_len", self.max_len, 3, integer=True)
        check_range("data.width_bucket", self.width_bucket, 1, integer=True)
        check_range("data.tokens_per_batch", self.tokens_per_batch, 1, integer=True)
        check_range("data.valid_fraction", self.valid_fraction, 0, 1, high_open=True)
        check_range("data.valid_sentences", self.valid_sentences, 0, integer=True)
        check_range("data.max_pairs", self.max_pairs, 0, integer=True)
        if self.tokens_per_batch < self.max_len:
            raise UserError(f"data.tokens_per_batch={self.tokens_per_batch} is below data.max_len={self.max_len}: "
                            "a batch must hold at least one sentence of the longest width")


@dataclass(frozen=True)
class MTObjectives:
    mt: tuple[str, ...] = ("en-fr",)  # supervised directions SRC-TGT on parallel data
    ae: tuple[str, ...] = ()  # denoising auto-encoding languages
    bt: tuple[str, ...] = ()  # back-translation L1-L2-L1: L1 text -> L2 (generated) -> L1
    lambda_mt: str | float = "1"  # XLM lambda schedules: a number or "0:1,100000:0.1,300000:0" (linear between points)
    lambda_ae: str | float = "1"
    lambda_bt: str | float = "1"
    word_shuffle: float = 3.0  # denoising noise (XLM's UNMT recipe)
    word_dropout: float = 0.1
    word_blank: float = 0.1

    def __post_init__(self):
        check_fields(self, "objectives.")
        for d in self.mt:
            _direction("objectives.mt", d, 2)
        for d in self.bt:
            parts = _direction("objectives.bt", d, 3)
            if parts[0] != parts[2]:
                raise UserError(f"objectives.bt={d!r}: back-translation returns to its language (L1-L2-L1)")
        if not (self.mt or self.ae or self.bt):
            raise UserError("objectives: nothing to train; give objectives.mt, objectives.ae or objectives.bt")
        for name in ("lambda_mt", "lambda_ae", "lambda_bt"):
            parse_lambda(getattr(self, name), f"objectives.{name}")
        NoiseConfig(self.word_shuffle, self.word_dropout, self.word_blank)

    def schedule(self, kind: str) -> LambdaSchedule:
        return parse_lambda(getattr(self, f"lambda_{kind}"), f"objectives.lambda_{kind}")

    @property
    def noise(self) -> NoiseConfig:
        return NoiseConfig(self.word_shuffle, self.word_dropout, self.word_blank)

    def updates(self) -> list[tuple[str, tuple[str, ...]]]:
        """The updates of one iteration, in XLM's order (AE, MT, BT): (kind, languages)."""
        return ([("ae", (lang,)) for lang in self.ae] + [("mt", tuple(d.split("-"))) for d in self.mt]
                + [("bt", tuple(d.split("-"))) for d in self.bt])

    def langs(self) -> list[str]:
        return sorted({lang for _, langs in self.updates() for lang in langs})


def _direction(key: str, value: str, n: int) -> list[str]:
    parts = value.split("-")
    if len(parts) != n or not all(p.strip() for p in parts) or len(set(parts[:2])) != 2:
        form = "SRC-TGT such as en-fr" if n == 2 else "L1-L2-L1 such as en-fr-en"
        raise UserError(f"{key}: {value!r} is not a direction {form}")
    return parts


@dataclass(frozen=True)
class MTTrain:
    steps: int = 300  # iterations; each runs one update per objective whose lambda is > 0 (as XLM)
    stop_at: int = 0  # stop (with a checkpoint) after this iteration; 0: train.steps
    grad_accum: int = 1
    log_every: int = 25
    eval_every: int = 100  # iterations between validations (and at the end)
    valid_direction: str = ""  # SRC-TGT scored for model selection; default the first mt / bt direction
    metric: str = "bleu"  # bleu | chrf++ | bleu_tok: picks RUN_DIR/best
    valid_max_len: int = 0  # decoding length for validation (0: 1.3 x source + 5, as back-translation)
    progress: bool = True

    def __post_init__(self):
        check_fields(self, "train.")
        check_range("train.steps", self.steps, 1, integer=True)
        check_range("train.stop_at", self.stop_at, 0, self.steps, integer=True)
        check_range("train.grad_accum", self.grad_accum, 1, integer=True)
        check_range("train.log_every", self.log_every, 1, integer=True)
        check_range("train.eval_every", self.eval_every, 0, integer=True)
        check_choice("train.metric", self.metric, METRICS)
        check_range("train.valid_max_len", self.valid_max_len, 0, integer=True)
        if self.valid_direction:
            _direction("train.valid_direction", self.valid_direction, 2)


@dataclass(frozen=True)
class MTCheckpoint:
    every: int = 100  # iterations between checkpoints (also at the end and on SIGTERM / SIGINT)
    keep: int = 2
    keep_best: bool = True  # RUN_DIR/best: the params with the best validation train.metric

    def __post_init__(self):
        check_fields(self, "checkpoint.")
        check_range("checkpoint.every", self.every, 1, integer=True)
        check_range("checkpoint.keep", self.keep, 1, integer=True)


@dataclass(frozen=True)
class MTConfig:
    run_dir: str = "runs/mt"
    seed: int = 0
    model: MTModel = field(default_factory=MTModel)
    data: MTData = field(default_factory=MTData)
    objectives: MTObjectives = field(default_factory=MTObjectives)
    train: MTTrain = field(default_factory=MTTrain)
    # XLM's adam_inverse_sqrt (beta2 0.98, lr 1e-4, warm-up 4000); scaled down for the tiny default.
    optimizer: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(
        lr=1e-3, schedule="inverse_sqrt", warmup_steps=100, warmup_init_lr=1e-7, weight_decay=0.0, clip_norm=5.0))
    mesh: MeshConfig = field(default_factory=MeshConfig)
    checkpoint: MTCheckpoint = field(default_factory=MTCheckpoint)

    def __post_init__(self):
        check_fields(self)
        if not self.run_dir.strip():
            raise UserError("run_dir='': give the run's directory (e.g. run_dir=runs/mt)")
        check_range("seed", self.seed, 0, MAX_SEED, integer=True)
        self.optimizer.check_steps(self.total_updates, "train.steps x updates per iteration")
        valid = self.valid_direction
        if valid and self.data.valid_sentences and self.objectives.langs() and not set(valid.split("-")) <= set(
                self.objectives.langs()):
            raise UserError(f"train.valid_direction={valid!r}: its languages are not among the objectives' "
                            f"{self.objectives.langs()}")

    @property
    def total_updates(self) -> int:
        return self.train.steps * len(self.objectives.updates())

    @property
    def valid_direction(self) -> str:
        if self.train.valid_direction:
            return self.train.valid_direction
        if self.objectives.mt:
            return self.objectives.mt[0]
        if self.objectives.bt:
            return "-".join(self.objectives.bt[0].split("-")[:2])
        return ""


def load_mt_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> MTConfig:
    """The MTConfig of a YAML file (None: the defaults) with `key=value` overrides applied in order."""
    return load_dataclass(MTConfig(), path, overrides)


def describe() -> str:
    """Every key with its default (for --help-config)."""
    return "\n".join(describe_dataclass(MTConfig()))
