"""Output locations: no command destroys or changes what it did not create.

Every command that writes a directory goes through this module:

- `claim_dir(path, command)` for outputs written over time (a pretraining run directory, a fine-tuning output,
  an evaluation's results): the directory must be new, empty, or carry the marker of the same command from an
  earlier run (resume, idempotent re-run). Anything else is a `UserError` naming the directory and the flag that
  overrides (`--force`). The marker `.xlm_jax.json` records which command owns the directory.
- `write_atomically(dst, write, command)` for outputs produced in one go (a corpus, preprocessed arrays, a
  converted checkpoint): `write(tmp)` fills a fresh temporary sibling, which is renamed to `dst` only when it is
  complete, so readers never see half an output and an interrupted command leaves `dst` as it was.
- `check_file_output(path)` for single-file outputs (a tokenizer model, a plot): an existing file is refused.

Directories written by earlier versions, before the marker existed, are recognised by the file each command has
always written (`legacy=`: manifest.json for preprocess, stats.json for the gettext corpus, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

from xlm_jax.errors import UserError

MARKER = ".xlm_jax.json"
R = TypeVar("R")


def owner(directory: Path, legacy: dict[str, str] | None = None) -> str | None:
    """The command that wrote `directory` (its marker, else a legacy signature file), or None."""
    marker = directory / MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text()).get("command"))
        except (ValueError, OSError, AttributeError):
            return None
    for command, filename in (legacy or {}).items():
        if (directory / filename).is_file():
            return command
    return None


def check_dir(path: str | Path, command: str, *, force: bool = False, flag: str = "--force",
              legacy: str | None = None) -> Path:
    """`path` as a Path if `command` may write there; else UserError.

    Allowed: `path` does not exist, is an empty directory, or carries `command`'s marker (or the `legacy`
    signature file of outputs written before markers existed). `force` allows any directory. A path that is an
    existing file, or a directory whose parent cannot be written, is refused whatever `force` says.
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
    return p


def _writable_parent(p: Path) -> None:
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{p}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{p}: cannot write in {parent} (permission denied); choose another location")


def write_marker(directory: Path, command: str) -> None:
    (directory / MARKER).write_text(json.dumps({"command": command, "format": 1}) + "\n")


def claim_dir(path: str | Path, command: str, *, force: bool = False, flag: str = "--force",
              legacy: str | None = None) -> Path:
    """`check_dir`, then create the directory (parents too) and write `command`'s marker into it.

    Raises UserError when the directory is refused or cannot be created / written (permissions, a full disk).
    """
    p = check_dir(path, command, force=force, flag=flag, legacy=legacy)
    if not p.is_dir():
        _writable_parent(p)
    try:
        p.mkdir(parents=True, exist_ok=True)
        if owner(p) != command:
            write_marker(p, command)
    except OSError as err:
        raise UserError(f"{p}: cannot write the output directory ({err.strerror or err})") from None
    return p


def write_atomically(dst: str | Path, write: Callable[[Path], R], command: str) -> R:
    """Runs `write(tmp)` on a fresh sibling directory of `dst`, marks it as `command`'s output and renames it to
    `dst` only on success (replacing what was there: callers check `dst` with `check_dir` first).

    The temporary directory is removed on any failure, interruption included; `dst` is then unchanged.
    """
    dst = Path(dst)
    _writable_parent(dst)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    except OSError as err:
        raise UserError(f"{dst}: cannot create a directory beside it ({err.strerror or err})") from None
    try:
        result = write(tmp)
        write_marker(tmp, command)
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            dst.rename(old)
            tmp.rename(dst)
            shutil.rmtree(old)
        else:
            tmp.rename(dst)
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


def atomic_write_text(path: Path, text: str) -> None:
    """Writes `text` to `path` through a temporary sibling and a rename (never half a file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
