"""The HF mapping module of each RoPE family, for the converter: `module_for(family)` or
`module_for_hf(config_json)`.

Every module (`hf_modernbert`, `hf_eurobert`) offers the same functions: `ARCHITECTURES`, `TIED_KEYS`,
`table(cfg, arch)`, `hf_to_params(state, cfg, arch, params_shapes, source)`, `params_to_hf(params, cfg, arch)`,
`expected_hf_shapes(cfg, arch, params_shapes)`, `default_architecture(cfg, head)`,
`hf_config_to_model_config(hf, source) -> (cfg, arch)`, `model_config_to_hf_config(cfg, arch, num_labels)`.
XLM and XLM-R keep `xlm_jax.models.hf_mapping`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from xlm_jax.models import hf_eurobert, hf_modernbert
from xlm_jax.models import hf_tables as t

MODULES: dict[str, ModuleType] = {"modernbert": hf_modernbert, "eurobert": hf_eurobert}  # by ModelConfig.family
MODEL_TYPES: dict[str, str] = {"modernbert": "modernbert", "eurobert": "eurobert"}  # HF model_type -> family


def module_for(family: str) -> ModuleType | None:
    """The mapping module of `family`, or None for the XLM families (hf_mapping)."""
    return MODULES.get(family)


def module_for_hf(hf_config: dict[str, Any]) -> ModuleType | None:
    """The mapping module for an HF config.json dict (by its model_type), or None when it is no RoPE family."""
    family = MODEL_TYPES.get(hf_config.get("model_type"))
    return MODULES[family] if family else None


def module_for_architecture(architecture: str) -> ModuleType | None:
    """The mapping module whose `ARCHITECTURES` name `architecture` (e.g. "ModernBertForMaskedLM"), else None."""
    return next((m for m in MODULES.values() if architecture in m.ARCHITECTURES), None)


def architectures() -> tuple[str, ...]:
    """Every transformers class the RoPE families read and write."""
    return tuple(a for m in MODULES.values() for a in m.ARCHITECTURES)


def head_kind(architecture: str) -> str | None:
    """The task head kind ("sequence", "token", "span") of a RoPE family's fine-tuned class; None for the masked LM,
    the bare encoder and classes of other families."""
    module = module_for_architecture(architecture)
    if module is None:
        return None
    head = t.head_of(architecture, module.PREFIX)
    return None if head == "mlm" else head
