import argparse
import contextlib
import dataclasses
import difflib
import functools
import math
import numbers
import sys
import types
import typing
from collections.abc import Hashable, Iterable, Mapping
from typing import Any


class UserError(Exception):
    """Bad input from the user: the message names the file / key / value and what would be valid."""


class NonFiniteError(Exception):
    """Training diverged: the loss, a gradient norm or the parameters became NaN / inf at `step`. Commands stop,
    save nothing after that step and exit with code 3, naming `last_good` (the last checkpoint saved before)."""

    def __init__(self, step: int, what: str, last_good: str | None = None):
        super().__init__(f"{what} at step {step}")
        self.step, self.what, self.last_good = step, what, last_good


def unknown_name(what: str, name: str, valid: Iterable[str], prefix: str = "") -> UserError:
    """`unknown {what} {prefix}{name}; did you mean ...? (valid: ...)`, with the closest valid names."""
    valid = [str(v) for v in valid]
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
    return UserError(f"unknown {what} {prefix}{name}{hint} (valid: {', '.join(valid)})")


@contextlib.contextmanager
def exit_on_user_error(code: int = 2):
    """The edge of every command: a UserError becomes one `error: ...` line on stderr and exit code 2."""
    try:
        yield
    except UserError as err:
        # One line whatever the message holds (a library's multi-line text quoted inside it).
        print("error: " + " ".join(str(err).split()), file=sys.stderr)
        sys.exit(code)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for every command: a bad flag or argument is one line `error: ... (see PROG --help)` on stderr and
    exit 2, like every other bad input (argparse's own refusal prints the usage block first). Sub-parsers made
    with `add_subparsers` are of this class too."""

    def error(self, message: str):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


# ---- typed, ranged checks shared by the config dataclasses and every command's flags ------------------------


def type_name(hint: Any) -> str:
    """How a field type reads in an error message ("an integer", "one of 'gelu', 'relu'", ...)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (tuple,):
        return "a list of strings (or 'a,b')" if args and args[0] is str else f"a list ({hint})"
    if origin in (dict, Mapping, typing.Mapping) or hint is Mapping:
        return "a mapping like {mlm: 1.0, tlm: 1.0}"
    if origin in (types.UnionType, typing.Union):
        return " or ".join(type_name(a) for a in args)
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}.get(
        hint, str(hint)
    )


def check_value(key: str, value: Any, hint: Any) -> Any:
    """`value` converted to the field type `hint`, or UserError naming key, value and expected type.

    Conversions: an integer (NumPy's too) in a float field becomes a float, a string such as "1e-4" in a float
    field its number, a list (or "a,b") in a tuple field a tuple."""

    def bad():
        return UserError(f"{key}={value!r} ({type(value).__name__}): expected {type_name(hint)}")

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        for option in args:
            try:
                return check_value(key, value, option)
            except UserError:
                pass
        raise bad()
    if hint is type(None):
        if value is None:
            return None
        raise bad()
    if origin is typing.Literal:
        if isinstance(value, Hashable) and value in args:
            return value
        raise bad()
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        raise bad()
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise bad()
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad()
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad()
        item = args[0] if args else Any
        return tuple(check_value(f"{key}[{i}]", v, item) if item is not Any else v for i, v in enumerate(value))
    if origin in (dict, Mapping) or hint is Mapping or origin is typing.Mapping:
        if not isinstance(value, Mapping):
            raise bad()
        key_t, val_t = args if args else (str, Any)
        out = {}
        for k, v in value.items():
            if v is None and isinstance(k, str) and ":" in k:  # YAML reads {mlm:1} as {"mlm:1": None}
                raise UserError(f"{key}={{{k}}}: write a space after the colon, e.g. {{{k.replace(':', ': ', 1)}}}")
            check_value(f"{key} key", k, key_t)
            out[k] = v if val_t is Any else check_value(f"{key}.{k}", v, val_t)
        return out
    if hint is Any:
        return value
    raise bad()


@functools.cache
def _field_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(obj: Any, prefix: str = "") -> None:
    """Type-checks every field of the (frozen) dataclass instance `obj` against its annotation, normalising the
    values in place as `check_value` does; a nested dataclass field must hold an instance of its class.
    Raises UserError naming `prefix + field`, the value and the expected type."""
    hints = _field_hints(type(obj))
    for f in dataclasses.fields(obj):
        hint, value = hints[f.name], getattr(obj, f.name)
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise UserError(f"{prefix}{f.name}={value!r}: expected a {hint.__name__} section")
            continue
        object.__setattr__(obj, f.name, check_value(f"{prefix}{f.name}", value, hint))


def describe_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                   high_open: bool = False, integer: bool = False, also: Mapping[Any, str] | None = None) -> str:
    """"an integer >= 1", "a number in [0, 1)", "an integer >= 8, or 0 (the MLM row length)" ..."""
    kind = "an integer" if integer else "a number"
    if low is not None and high is not None:
        text = f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        text = f"{kind} {'>' if low_open else '>='} {low}"
    elif high is not None:
        text = f"{kind} {'<' if high_open else '<='} {high}"
    else:
        text = f"a finite {kind.split()[1]}"
    return text + "".join(f", or {k!r} ({meaning})" for k, meaning in (also or {}).items())


def _in_range(value: Any, low, high, low_open: bool, high_open: bool, integer: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        return False
    if not math.isfinite(value):
        return False
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return not (high is not None and (value > high or (high_open and value == high)))


def check_range(key: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, integer: bool = False,
                also: Mapping[Any, str] | None = None) -> Any:
    """`value` if it is a finite number (an integer when `integer`) within the bounds (closed unless `*_open`),
    or one of the special values in `also` ({value: meaning}); else UserError "key=value: must be <range>"."""
    if also and isinstance(value, Hashable) and not isinstance(value, bool) and value in also:
        return value
    if _in_range(value, low, high, low_open, high_open, integer):
        if _beyond_int32(value, high, integer):
            raise UserError(f"{key}={value!r}: must be at most {INT32_MAX} (counts, sizes and ids are int32 on the "
                            "device)")
        return value
    valid = describe_range(low, high, low_open=low_open, high_open=high_open, integer=integer, also=also)
    raise UserError(f"{key}={value!r}: must be {valid}")


INT32_MAX = 2**31 - 1


def _beyond_int32(value: Any, high: float | None, integer: bool) -> bool:
    """An integer with no upper bound of its own must still fit the int32 the step counter, positions and ids
    use on the device (a larger one would end in an OverflowError traceback inside jit)."""
    return integer and high is None and value > INT32_MAX


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> Any:
    """`value` if it is one of `choices`, else UserError naming key, value, the closest and all valid choices."""
    choices = list(choices)
    if isinstance(value, Hashable) and value in choices:
        return value
    close = []
    if isinstance(value, str):
        close = difflib.get_close_matches(value, [str(c) for c in choices], n=2, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise UserError(f"{key}={value!r}: valid values are {', '.join(repr(c) for c in choices)}{hint}")


def arg_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
              high_open: bool = False, integer: bool = True, also: Mapping[Any, str] | None = None):
    """An argparse `type=` that parses an integer (or a float) and checks it like `check_range`: a bad value
    ends the command before any work with exit 2 and `error: argument --flag: ...`."""
    expected = describe_range(low, high, low_open=low_open, high_open=high_open, integer=integer, also=also)

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid value {text!r}: must be {expected}") from None
        if (also and value in also) or _in_range(value, low, high, low_open, high_open, integer):
            if _beyond_int32(value, high, integer):
                raise argparse.ArgumentTypeError(f"invalid value {text}: must be at most {INT32_MAX}")
            return value
        raise argparse.ArgumentTypeError(f"invalid value {text}: must be {expected}")

    return parse


positive_int = arg_range(1)
nonnegative_int = arg_range(0)
fraction = arg_range(0, 1, high_open=True, integer=False)  # a share of the data: [0, 1)
