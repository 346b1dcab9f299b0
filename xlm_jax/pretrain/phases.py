"""Training phases (`phases.*` of the pretraining config; mmBERT's recipe, configs/mmbert_*.yaml): each phase's
batch recipe (masking rate, language-sampling temperature, languages, row length) and model configuration (RoPE
bases), resolved against the data, and which phase an update or a checkpoint belongs to.

Update k (0-based: the batch of step k + 1) belongs to the phase whose [start, end) holds it; a checkpoint of step s
holds parameters last updated in the phase of update s - 1, so it is saved (and on resume compared) with that
phase's model configuration. Phases only change what the config says they change; the optimizer, its schedule
(optimizer.schedule=wsd for mmBERT's warmup–stable–decay) and the parameters carry on across a boundary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from xlm_jax.core.errors import UserError
from xlm_jax.data.batches import BatchSource, DataConfig, PhasedBatchSource
from xlm_jax.data.corpus import PreprocessedCorpus
from xlm_jax.models.config import ROPE_FAMILIES, ModelConfig
from xlm_jax.pretrain.config import TrainConfig


@dataclass(frozen=True)
class PhasePlan:
    """One entry per phase (a run without phases: one phase covering every step)."""

    names: tuple[str, ...]
    starts: tuple[int, ...]
    data_cfgs: tuple[DataConfig, ...]
    model_cfgs: tuple[ModelConfig, ...]

    def index(self, update: int) -> int:
        """The phase of update `update` (0-based)."""
        return max(i for i, s in enumerate(self.starts) if s <= max(update, 0))

    def of_checkpoint(self, step: int) -> int:
        """The phase whose model configuration a checkpoint of step `step` carries (that of its last update)."""
        return self.index(step - 1)

    def describe(self) -> list[str]:
        ends = [*self.starts[1:], None]
        lines = []
        for name, start, end, d, m in zip(self.names, self.starts, ends, self.data_cfgs, self.model_cfgs):
            rope = f", RoPE θ {m.rope_theta:g} / local {m.local_rope_theta:g}" if m.family in ROPE_FAMILIES else ""
            lines.append(f"phase {name}: updates [{start}, {end if end is not None else 'end'}), mask {d.mask_prob:g}, "
                         f"τ {d.lang_alpha_mono:g}, {len(d.mono_langs)} languages, rows of {d.seq_len}{rope}")
        return lines


def _largest(corpus: PreprocessedCorpus, langs: tuple[str, ...], n: int) -> tuple[str, ...]:
    """The n languages of `langs` with the most training tokens (ties by code), in `langs`' order."""
    sizes = {lang: int(corpus.mono("train", lang).offsets[-1]) for lang in langs}
    chosen = set(sorted(langs, key=lambda lang: (-sizes[lang], lang))[:n])
    return tuple(lang for lang in langs if lang in chosen)


def plan(cfg: TrainConfig, corpus: PreprocessedCorpus, data_cfg: DataConfig, model_cfg: ModelConfig
         ) -> tuple[PhasePlan, DataConfig]:
    """The phases resolved against the data: (plan, the run's DataConfig with its MLM languages the union of the
    phases'). Raises UserError naming `phases.<name>.<key>` for a language the data lacks, more languages than it
    has, or a RoPE base on a model without RoPE. Without phases: one phase of `data_cfg` and `model_cfg`."""
    phases = cfg.phases.phases
    if not phases:
        return PhasePlan(("all",), (0,), (data_cfg,), (model_cfg,)), data_cfg
    available = tuple(data_cfg.mono_langs)
    stream = bool({"mlm", "clm"} & set(data_cfg.enabled))
    recipes: list[dict[str, Any]] = []
    models: list[ModelConfig] = []
    current = {"mono_langs": available, "mask_prob": data_cfg.mask_prob, "lang_alpha_mono": data_cfg.lang_alpha_mono,
               "lang_alpha_para": data_cfg.lang_alpha_para, "seq_len": data_cfg.seq_len}
    model = model_cfg
    for phase in phases:
        key = f"phases.{phase.name}."
        if (phase.langs is not None or phase.top_langs is not None) and not stream:
            raise UserError(f"{key}langs / top_langs: a language curriculum needs the MLM (or CLM) objective, which "
                            "this run does not have")
        if phase.langs is not None:
            missing = [lang for lang in phase.langs if lang not in available]
            if missing:
                raise UserError(f"{key}langs: {missing[0]!r} is not among the data's languages ({corpus.dir}, "
                                f"data.mono_langs); valid: {', '.join(available)}")
            current["mono_langs"] = tuple(lang for lang in available if lang in phase.langs)
        elif phase.top_langs is not None:
            if phase.top_langs > len(available):
                raise UserError(f"{key}top_langs={phase.top_langs}: the data has {len(available)} languages "
                                f"({corpus.dir}); use at most {len(available)}")
            current["mono_langs"] = _largest(corpus, available, phase.top_langs)
        if phase.mask_prob is not None:
            current["mask_prob"] = phase.mask_prob
        if phase.temperature is not None:
            current["lang_alpha_mono"] = current["lang_alpha_para"] = phase.temperature
        if phase.seq_len is not None:
            current["seq_len"] = phase.seq_len
        rope = {k: getattr(phase, k) for k in ("rope_theta", "local_rope_theta") if getattr(phase, k) is not None}
        if rope and model_cfg.family not in ROPE_FAMILIES:
            name = next(iter(rope))
            raise UserError(f"{key}{name}={rope[name]:g}: model.family={model_cfg.family!r} has no RoPE (only "
                            f"{' / '.join(ROPE_FAMILIES)})")
        model = model.replace(**rope) if rope else model
        recipes.append(dict(current))
        models.append(model)
    union = tuple(lang for lang in available if any(lang in r["mono_langs"] for r in recipes)) if stream else ()
    run_cfg = dataclasses.replace(data_cfg, mono_langs=union, langs=data_cfg.langs)
    data_cfgs = tuple(dataclasses.replace(run_cfg, **r) if stream else
                      dataclasses.replace(run_cfg, **{k: v for k, v in r.items() if k != "mono_langs"})
                      for r in recipes)
    return PhasePlan(tuple(p.name for p in phases), tuple(p.start for p in phases), data_cfgs, tuple(models)), run_cfg


def batch_source(phase_plan: PhasePlan, corpus: PreprocessedCorpus, run_cfg: DataConfig, process_index: int,
                 process_count: int) -> BatchSource | PhasedBatchSource:
    """The run's batches: a plain `BatchSource` for one phase, else a `PhasedBatchSource` over the phases'."""
    if len(phase_plan.starts) == 1:
        return BatchSource(corpus, phase_plan.data_cfgs[0], process_index, process_count)
    sources = [BatchSource(corpus, d, process_index, process_count) for d in phase_plan.data_cfgs]
    return PhasedBatchSource(sources, phase_plan.starts, run_cfg.mono_langs,
                             BatchSource(corpus, run_cfg, process_index, process_count))
