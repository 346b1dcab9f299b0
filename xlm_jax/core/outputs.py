"""Output locations: no command destroys or changes what it did not create.

Every command that writes a directory goes through this module:

- `claim_dir(path, command)` for outputs written over time (a pretraining run directory, a fine-tuning output,
  an evaluation's results): the directory must be new, empty, or carry the marker of the same command from an
  earlier run (resume, idempotent re-run). Anything else is a `UserError` naming the directory and the flag that
  overrides (`--force`). The marker `.xlm_jax.json` records which command owns the directory.
- `write_atomically(dst, write, command)` for outputs produced in one go (a corpus, preprocessed arrays, a
  converted checkpoint): `write(tmp)` fills a fresh temporary sibling, which is renamed to `dst` only when it is
  complete, so readers never see half an output and an interrupted command leaves `dst` as it was. Code that
  fills the directory inline uses the same two halves: `staging_dir(dst)`, then `move_into_place(tmp, dst)`.
- `check_file_output(path)` for single-file outputs (a tokenizer model, a plot): an existing file is refused.

Check with `check_dir` before the work starts (it also refuses a location that cannot be written), so that a
refused output costs nothing. Directories written by earlier versions, before the marker existed, are
recognised by the file each command has always written (`legacy=`: manifest.json for preprocess, stats.json for
the gettext corpus, ..., or a predicate on the directory).

`--force` means: for `claim_dir` outputs, write into the directory anyway (files of the same names are
overwritten, the others are kept); for `write_atomically` outputs, replace the directory (what it held is
deleted); for single files, replace the file.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

from xlm_jax.core.errors import UserError

MARKER = ".xlm_jax.json"
R = TypeVar("R")
# A legacy signature: the name of a file the command has always written, or a predicate on the directory.
Legacy = str | Callable[[Path], bool] | None


def _has_signature(directory: Path, legacy: Legacy) -> bool:
    if legacy is None:
        return False
    if callable(legacy):
        try:
            return bool(legacy(directory))
        except (OSError, ValueError):
            return False
    return (directory / legacy).is_file()


def owner(directory: Path, legacy: dict[str, Legacy] | None = None) -> str | None:
    """The command that wrote `directory` (its marker, else a legacy signature), or None."""
    marker = directory / MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text()).get("command"))
        except (ValueError, OSError, AttributeError):
            return None
    for command, signature in (legacy or {}).items():
        if _has_signature(directory, signature):
            return command
    return None


def check_dir(path: str | Path, command: str, *, force: bool = False, flag: str = "--force",
              legacy: Legacy = None) -> Path:
    """`path` as a Path if `command` may write there; else UserError. Nothing is created.

    Allowed: `path` does not exist, is an empty directory, or carries `command`'s marker (or the `legacy`
    signature of outputs written before markers existed: a file name, or a predicate on the directory). `force`
    allows any directory. A path that is an existing file, a directory that cannot be written, or a new path
    under a file or a directory that cannot be written, is refused whatever `force` says.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{p}: exists and is not a directory; give a directory path for the output")
    if p.is_dir():
        try:
            entries = [e.name for e in p.iterdir()]
        except OSError as err:
            raise UserError(f"{p}: cannot read the directory ({err.strerror})") from None
        found = owner(p, {command: legacy} if legacy else None)
        if entries and found != command and not force:
            what = (f"the output of `{found}`" if found else
                    f"files that `{command}` did not write ({', '.join(sorted(entries)[:3])}"
                    f"{', ...' if len(entries) > 3 else ''})")
            raise UserError(f"{p}: exists and holds {what}; nothing was changed. Choose a new directory, "
                            f"or pass {flag} to write into it anyway")
        if not os.access(p, os.W_OK | os.X_OK):
            raise UserError(f"{p}: cannot write in this directory (permission denied); choose another location")
    else:
        _writable_parent(p)
    return p


def _writable_parent(p: Path) -> None:
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{p}: cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{p}: cannot write in {parent} (permission denied); choose another location")


def write_marker(directory: Path, command: str) -> None:
    (directory / MARKER).write_text(json.dumps({"command": command, "format": 1}) + "\n")


def claim_dir(path: str | Path, command: str, *, force: bool = False, flag: str = "--force",
              legacy: Legacy = None) -> Path:
    """`check_dir`, then create the directory (parents too) and write `command`'s marker into it.

    Raises UserError when the directory is refused or cannot be created / written (permissions, a full disk).
    """
    p = check_dir(path, command, force=force, flag=flag, legacy=legacy)
    try:
        p.mkdir(parents=True, exist_ok=True)
        if owner(p) != command:
            write_marker(p, command)
    except OSError as err:
        raise UserError(f"{p}: cannot write the output directory ({err.strerror or err})") from None
    return p


def _real(dst: str | Path) -> Path:
    """`dst`, or where it points when it is a symbolic link: an output reached through a link is replaced where
    it lives (and the link kept), not by renaming the link itself."""
    dst = Path(dst)
    return Path(os.path.realpath(dst)) if dst.is_symlink() else dst


def staging_dir(dst: str | Path) -> Path:
    """A fresh, empty temporary sibling of `dst` (same file system, so the final rename is atomic)."""
    dst = _real(dst)
    _writable_parent(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    except OSError as err:
        raise UserError(f"{dst}: cannot create a directory beside it ({err.strerror or err})") from None


def move_into_place(tmp: Path, dst: str | Path, command: str) -> None:
    """Marks the complete `tmp` as `command`'s output and renames it to `dst`, replacing what was there (callers
    check `dst` with `check_dir` first). The old `dst` is moved aside before the new one takes its name, so a
    reader sees either the old output or the new one, never a mix."""
    dst = _real(dst)
    old = None
    try:
        write_marker(tmp, command)
        if not dst.exists():
            tmp.rename(dst)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        dst.rename(old)  # onto an empty directory: allowed by rename(2)
    except OSError as err:
        if old is not None and old.is_dir() and not any(old.iterdir()):
            old.rmdir()  # the empty placeholder only: dst was not moved
        raise as_user_error(err, dst, "could not move the output into place", codes=None) from err
    try:
        tmp.rename(dst)
    except OSError as err:
        old.rename(dst)
        raise as_user_error(err, dst, "could not move the output into place", codes=None) from err
    shutil.rmtree(old, ignore_errors=True)


def write_atomically(dst: str | Path, write: Callable[[Path], R], command: str) -> R:
    """Runs `write(tmp)` on a fresh sibling directory of `dst`, marks it as `command`'s output and renames it to
    `dst` only on success (replacing what was there: callers check `dst` with `check_dir` first).

    The temporary directory is removed on any failure, interruption included; `dst` is then unchanged.
    """
    tmp = staging_dir(dst)
    try:
        try:
            result = write(tmp)
        except OSError as err:
            raise as_user_error(err, dst, "could not write the output; what was there is unchanged") from err
        move_into_place(tmp, dst, command)
        return result
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_file_output(path: str | Path, *, force: bool = False, flag: str = "--force", suffix: str = "") -> Path:
    """`path` as a Path if a single-file output may be written there: it must not exist (unless `force`), must
    not be a directory, and its parent must be writable. `suffix` (e.g. ".model") is required when given."""
    p = Path(path)
    if suffix and p.suffix != suffix:
        raise UserError(f"{p}: the output must end in {suffix}")
    if p.is_dir():
        raise UserError(f"{p}: is a directory; give a file path")
    if p.exists() and not force:
        raise UserError(f"{p}: exists; nothing was changed. Choose another path, or pass {flag} to replace it")
    _writable_parent(p)
    return p


def check_overlap(dst: str | Path, src: str | Path, what: str = "source") -> None:
    """Refuses an output location that is, holds or lies inside the input `src` (writing it would destroy the
    input, --force or not)."""
    s, d = Path(src).resolve(), Path(dst).resolve()
    if d == s or s.is_relative_to(d) or (s.is_dir() and d.is_relative_to(s)):
        raise UserError(f"{dst}: the output overlaps the {what} ({src}); choose another location")


def write_file(path: str | Path, write: Callable[[Path], None]) -> Path:
    """A single-file output, written whole or not at all: `write(tmp)` fills a temporary sibling of `path` (same
    suffix, so writers that pick the format from it work), which is then renamed onto `path`. Missing parent
    directories are created, as they are for directory outputs (`claim_dir`). Returns `path` as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary sibling and a rename (never half a file): `write_file`."""
    write_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# ---- write failures (a full disk, a read-only file system) -----------------------------------------------------

# Errors that can only come from writing: no room, a read-only file system, a file too large.
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
# tensorstore (under orbax) reports an OS error inside a ValueError's message: "... [os_error_code='28']".
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def os_error_of(err: BaseException | None) -> tuple[int | None, str, str | None] | None:
    """(errno, description, file name or None) of the OS error behind `err`, looking through its causes and
    through the messages of libraries that wrap it in another exception type (tensorstore); None if none."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and (err.errno is not None or err.strerror):
            return err.errno, err.strerror or str(err), err.filename
        code = _OS_ERROR_CODE.search(str(err))
        if code:
            return int(code.group(1)), os.strerror(int(code.group(1))), None
        if "No space left on device" in str(err):
            return errno.ENOSPC, os.strerror(errno.ENOSPC), None
        err = err.__cause__ or err.__context__
    return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def free_space(path: str | Path) -> str:
    """'N MB free' on the file system holding `path` (its nearest existing ancestor), or 'unknown space free'."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return f"{human_bytes(shutil.disk_usage(p).free)} free"
    except OSError:
        return "unknown space free"


def as_user_error(err: BaseException, path: str | Path, what: str = "could not write the output",
                  codes: frozenset[int] | None = WRITE_FAILURES) -> BaseException:
    """A UserError naming `path` (or the file the OS error names), the OS error and, for a full disk, the free
    space, when `err` is (or wraps) an OS error with one of `codes` (None: any); else `err` itself (a bug stays
    a traceback)."""
    found = os_error_of(err)
    if found is None or (codes is not None and found[0] not in codes):
        return err
    code, reason, filename = found
    where = f" writing {filename}" if filename and Path(filename) != Path(path) else ""
    room = f"; {free_space(path)} on that disk" if code in (errno.ENOSPC, errno.EDQUOT) else ""
    return UserError(f"{path}: {what} ({reason}{where}{room})")
