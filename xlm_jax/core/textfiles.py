"""Reading the user's text files: one policy for bytes that are not text (also in docs/reliability.md).

Two kinds of text files, one rule each:

- Structured files, where a misread line would silently become a wrong example or a wrong setting: fine-tuning
  and evaluation data (TSV, CSV, JSONL, CoNLL), retrieval files, YAML configs. They must be UTF-8 (a leading
  byte-order mark is allowed and dropped). `read_text` refuses a file with a NUL byte (binary, or UTF-16) and
  names the first line that is not UTF-8: `data/train.tsv:7: not valid UTF-8 (byte 0xe9 at column 12) ...`.
- Raw corpora (`python -m xlm_jax.tokenizer train`, `python -m xlm_jax.preprocess`): web text often holds a few
  broken lines, so those are decoded with U+FFFD, counted, and recorded in the preprocessed manifest. A file
  that is not text at all is refused before any work starts (`check_corpus_file`): one with a NUL byte in its
  first 8 KiB (git's and grep's test for binary files; it also catches UTF-16), or one where more than half of
  the lines are not text (invalid UTF-8 or NUL bytes: a file in another encoding, or binary data).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from xlm_jax.core.errors import UserError

BINARY_SNIFF_BYTES = 8192
MAX_BAD_LINE_SHARE = 0.5
_BLOCK = 1 << 22
# After decoding with surrogateescape, an undecodable byte is a lone surrogate U+DC80..U+DCFF.
_BAD_LINE = re.compile("[^\n]*[\x00\udc80-\udcff][^\n]*")


def _is_binary(head: bytes) -> bool:
    return b"\0" in head[:BINARY_SNIFF_BYTES]


def _not_text(path: Path, why: str) -> UserError:
    return UserError(f"{path}: not a text file ({why}); give a UTF-8 text file")


def _binary(path: Path, head: bytes) -> UserError:
    return _not_text(path, f"a NUL byte at offset {head.index(0)}: binary data, or UTF-16 / UTF-32 text")


def _check_path(path: Path, what: str) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such {what}")
    if not path.is_file():
        raise UserError(f"{path}: is a directory, not a {what}" if path.is_dir() else f"{path}: not a regular file")


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of a UTF-8 file. Raises UserError when it is missing, binary, or has a byte that is not UTF-8
    (naming the line, 1-based, and the column of the first bad byte)."""
    path = Path(path)
    _check_path(path, what)
    data = path.read_bytes()
    if b"\0" in data:  # anywhere: no structured text file holds a NUL
        raise _binary(path, data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[err.start]:02x} at column {err.start - line_start + 1}); "
            "the file must be UTF-8: convert it, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`"
        ) from None


def open_text(path: str | Path, what: str = "file", newline: str | None = None) -> io.StringIO:
    """`read_text` as a file object (lines read like `open(path, newline=newline)` would give them)."""
    return io.StringIO(read_text(path, what), newline=newline)


def _bad_lines(data: bytes) -> int:
    if b"\0" not in data:
        try:
            data.decode("utf-8")
            return 0
        except UnicodeDecodeError:
            pass
    return len(_BAD_LINE.findall(data.decode("utf-8", "surrogateescape")))


@dataclass(frozen=True)
class TextStats:
    lines: int  # every line, blank or not
    has_text: bool  # a line that is not blank
    bad: int  # lines with invalid UTF-8 or a NUL byte


def check_corpus_file(path: str | Path) -> TextStats:
    """Line counts of a raw corpus file, read in blocks (any size). Raises UserError, naming the file and the share
    of bad lines, when the file is binary or mostly not text (see the module docstring)."""
    path = Path(path)
    _check_path(path, "corpus file")
    lines = bad = 0
    has_text = False
    with open(path, "rb") as f:
        head = f.read(BINARY_SNIFF_BYTES)
        if _is_binary(head):
            raise _binary(path, head)
        f.seek(0)
        rest = b""
        while True:
            block = f.read(_BLOCK)
            data = rest + block
            if block:  # whole lines only, so that no line is split between two blocks
                cut = data.rfind(b"\n") + 1
                data, rest = data[:cut], data[cut:]
            elif data and not data.endswith(b"\n"):
                data += b"\n"
            if data:
                lines += data.count(b"\n")
                has_text = has_text or bool(data.strip())
                bad += _bad_lines(data)
            if not block:
                break
    if bad and bad > MAX_BAD_LINE_SHARE * lines:
        raise _not_text(path, f"{bad} of its {lines} lines ({100 * bad / lines:.0f} %) are not valid UTF-8 text")
    return TextStats(lines, has_text, bad)
