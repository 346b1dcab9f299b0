"""Typed settings from YAML and `key=value` overrides, shared by every workflow's config (pretraining,
fine-tuning): `load_dataclass` applies a YAML file and then overrides to a frozen dataclass instance of defaults,
every value type-checked (`xlm_jax.core.errors.check_value`) and unknown keys rejected with the closest valid
names. Also the checks and plain-data helpers those configs share: `MAX_SEED`, `check_batch_split`, `to_dict`,
`flatten`.

Values are parsed with `yaml.safe_load` (so `steps=100` is an int, `langs=[en, fr]` a list, `objectives={mlm: 1}`
a mapping). A key inside a mapping field may be set alone (`data.objectives.tlm=0` keeps the default's other
entries). Sections start from the enclosing default, so `optimizer.lr=1e-4` keeps the other optimizer settings.

A section whose keys are not its dataclass fields (pretraining's `model` section: a base name plus any
`ModelConfig` field) defines three methods that this module calls instead of the generic ones:
`with_mapping(raw, prefix)` (the section with the mapping `raw` applied), the classmethod `field_types()` (the
type of each key) and `to_plain()` (its plain data for YAML).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from xlm_jax.core.errors import UserError, check_value, unknown_name
from xlm_jax.core.textfiles import read_text

MAX_SEED = 2**63 - 1  # jax.random.key takes a signed 64-bit seed


def check_batch_split(batch_size: int, data: int, fsdp: int, grad_accum: int = 1,
                      key: str = "train.batch_size") -> None:
    """The global batch must split evenly over the mesh's batch shards (data x fsdp) and the micro-batches;
    UserError naming `key` and the multiple to use otherwise."""
    rows_multiple = data * fsdp * grad_accum
    if batch_size % rows_multiple:
        raise UserError(
            f"{key}={batch_size} (global sequences) does not divide over the mesh data={data} x "
            f"fsdp={fsdp} = {data * fsdp} batch shards"
            + (f" times train.grad_accum={grad_accum}" if grad_accum > 1 else "")
            + f": use a multiple of {rows_multiple}"
        )


# ---- parsing ------------------------------------------------------------------------------------------------


def _custom(obj_or_cls: Any) -> bool:
    """A section that parses its own keys (see the module docstring)."""
    return hasattr(obj_or_cls, "with_mapping")


def _build(default: Any, raw: Any, prefix: str):
    """`default` (a dataclass instance) with the mapping `raw` applied, recursively, every value checked and
    unknown keys rejected."""
    where = prefix[:-1] or "the config"
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise UserError(f"{where} must be a mapping of keys to values, got {raw!r}")
    if _custom(default):
        return default.with_mapping(raw, prefix)
    cls = type(default)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    changes = {}
    for key, value in raw.items():
        if key not in hints:
            raise unknown_name("config key", str(key), names, prefix)
        if dataclasses.is_dataclass(hints[key]):
            changes[key] = _build(getattr(default, key), value, f"{prefix}{key}.")
        else:
            changes[key] = check_value(f"{prefix}{key}", value, hints[key])
    return dataclasses.replace(default, **changes)


def _field_hint(path: list[str], root: Any) -> Any:
    """The type of the field at a dotted path (None if it is not a field), used to set one mapping entry."""
    cls: Any = type(root)
    for name in path:
        if _custom(cls):
            return cls.field_types().get(name)
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if name not in hints:
            return None
        cls = hints[name]
    return cls


def _is_mapping_hint(hint: Any) -> bool:
    return hint is Mapping or typing.get_origin(hint) in (dict, Mapping, typing.Mapping)


def _default_of(path: list[str], root: Any) -> Any:
    obj: Any = root
    for name in path:
        obj = getattr(obj, name)
    return obj


def apply_override(raw: dict, item: str, root: Any) -> None:
    """Sets `a.b.c=value` (value parsed by yaml.safe_load) in the nested mapping `raw` of the config whose
    defaults are `root` (a dataclass instance). UserError for a missing `=`, an empty key part, a value that is
    not YAML, or a key below a plain value."""
    if "=" not in item:
        raise UserError(f"override {item!r}: expected KEY=VALUE, e.g. train.steps=100")
    key, text = item.split("=", 1)
    path = [p for p in key.strip().split(".")]
    if not all(path):
        raise UserError(f"override {item!r}: empty key part in {key!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as err:
        raise UserError(f"override {item!r}: value {text!r} is not valid YAML ({str(err).splitlines()[0]})") from None
    node = raw
    for depth, name in enumerate(path[:-1]):
        child = node.get(name)
        if child is None:
            hint = _field_hint(path[: depth + 1], root)
            # Setting one entry of a mapping field starts from its default, so `data.objectives.tlm=0` keeps mlm
            # (a custom section's keys are never mapping fields with a default of their own).
            child = dict(_default_of(path[: depth + 1], root)) if _is_mapping_hint(hint) else {}
            node[name] = child
        if not isinstance(child, dict):
            raise UserError(f"override {item!r}: {'.'.join(path[: depth + 1])} is a value, not a section")
        node = child
    node[path[-1]] = value


def split_config_args(args: Sequence[str]) -> tuple[str | None, list[str]]:
    """A command's positional arguments -> (the YAML config path or None, the `key=value` overrides in order).
    Raises UserError when more than one argument is not an override (one config file at most)."""
    configs = [a for a in args if "=" not in a]
    if len(configs) > 1:
        raise UserError(f"more than one config file given: {configs} (overrides look like key=value)")
    return (configs[0] if configs else None), [a for a in args if "=" in a]


def load_dataclass(default: Any, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Any:
    """`default` (a config dataclass instance) with a YAML file and then `key=value` overrides applied, every
    value type-checked and unknown keys rejected (UserError naming the file / key, the value and what is valid).
    Serves the pretraining and the fine-tuning configs."""
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file {p} not found (configs are in configs/*.yaml)")
        try:
            raw = yaml.safe_load(read_text(p, "config file")) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
            what = " ".join(x for x in (getattr(err, "context", None), getattr(err, "problem", None)) if x)
            raise UserError(f"{where}: not valid YAML: {what or str(err).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise UserError(f"{p}: the top level must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item, default)
    return _build(default, raw, "")


# ---- plain data ---------------------------------------------------------------------------------------------


def to_dict(cfg: Any) -> Any:
    """Plain YAML-able data (tuples -> lists; a custom section through its `to_plain`)."""
    if _custom(cfg):
        return cfg.to_plain()
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def flatten(d: Mapping, prefix: str = "", whole: Sequence[str] = ()) -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys ({"a": {"b": 1}} -> {"a.b": 1}); the dotted keys in `whole`
    (mapping-valued fields such as data.objectives) stay one value."""
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v and f"{prefix}{k}" not in whole:
            out.update(flatten(v, f"{prefix}{k}.", whole))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---- --help-config ----------------------------------------------------------------------------------------------


def type_name(hint: Any) -> str:
    """A field's type as a user writes its value: int, float, str, bool, list of str, mapping of str to float."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, list, Sequence, typing.Sequence) and args:
        return f"list of {type_name(args[0])}"
    if _is_mapping_hint(hint) and args:
        return f"mapping of {type_name(args[0])} to {type_name(args[1])}"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(type_name(a) for a in args)
    return getattr(hint, "__name__", str(hint))


def _field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field in `cls`'s source (empty where the source is not available)."""
    import inspect  # only --help-config reads source

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    comments = {}
    for line in source.splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and name.isidentifier() and "#" in rest and "=" in rest.split("#", 1)[0]:
            comments[name] = rest.split("#", 1)[1].strip()
    return comments


def describe_dataclass(default: Any, prefix: str = "") -> list[str]:
    """`key = default  (type)  # the field's comment` for every field of the dataclass instance `default`, nested
    sections as dotted keys (a custom section: its `field_types()` keys with their types) — the lines of a
    command's --help-config."""
    hints, comments, lines = typing.get_type_hints(type(default)), _field_comments(type(default)), []
    for f in dataclasses.fields(default):
        value, key = getattr(default, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not _custom(value):
            lines += describe_dataclass(value, f"{key}.")
            continue
        note = f"  # {comments[f.name]}" if f.name in comments else ""
        lines.append(f"{key} = {to_dict(value)!r}  ({type_name(hints[f.name])}){note}")
    return lines
