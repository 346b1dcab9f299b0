import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from the user: the message names the file / key / value and what would be valid."""


def unknown_name(what: str, name: str, valid: Iterable[str], prefix: str = "") -> UserError:
    """`unknown {what} {prefix}{name}; did you mean ...? (valid: ...)`, with the closest valid names."""
    valid = [str(v) for v in valid]
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
    return UserError(f"unknown {what} {prefix}{name}{hint} (valid: {', '.join(valid)})")
