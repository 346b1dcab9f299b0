import contextlib
import difflib
import sys
from collections.abc import Iterable


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
        print(f"error: {err}", file=sys.stderr)
        sys.exit(code)
