"""How a file name is shown and stored. Pure: no I/O.

A POSIX file name is bytes. Python hands them to us as str, with each byte that is not valid
UTF-8 turned into a lone surrogate (U+DC80..U+DCFF, "surrogateescape"). Such a str must stay
exactly as it is for every system call (it is the only way back to the file), but it cannot
be written to the ledger, a JSON document or a UTF-8 log. Control characters (a newline in a
name) are valid text, but would split a log line or a report row in two.

So photosync keeps the real name in memory for I/O and, everywhere a name is shown or
stored, uses its *escaped form* (`shown`):

- a byte that is not valid UTF-8 becomes ``\\xNN`` (two lowercase hex digits, 80..ff);
- a C0 control character or DEL becomes ``\\t``, ``\\n``, ``\\r`` or ``\\xNN`` (00..1f, 7f);
- a C1 control, a line or paragraph separator, a bidirectional override or isolate, or any
  other lone surrogate becomes ``\\uNNNN`` (four lowercase hex digits);
- on POSIX, a backslash becomes ``\\\\``, so that the three forms above cannot be confused
  with a name that really contains a backslash. (On Windows a backslash is the path
  separator and never part of a name, so it stays as it is.)

Every other character stands for itself. `original` undoes `shown` exactly on POSIX:
``os.fsencode(original(shown(name))) == os.fsencode(name)`` for every name, e.g. the bytes
``b"Caf\\xe9.jpg"`` are shown as ``Caf\\xe9.jpg`` and come back as the same four bytes.

`one_line` is the same escaping without the backslash rule: what every output line (CLI
text, reports, log lines) applies to text that may hold a name, so that nothing a file name
contains can break a line or an encoder. It leaves an already escaped name unchanged.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import PurePath

# Longest file name (one path component) on ext4, XFS, APFS, tmpfs: 255 bytes. NTFS counts
# 255 UTF-16 units, which a name of at most 255 UTF-8 bytes never exceeds.
NAME_MAX_BYTES = 255

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# Reorder how the rest of a line is drawn: a name could make a report line read backwards.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_BACKSLASH_IS_A_CHARACTER = os.sep != "\\"


def _needs_escape(char: str) -> bool:
    category = unicodedata.category(char)
    return category in ("Cc", "Cs", "Zl", "Zp") or char in _BIDI


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def one_line(text: str) -> str:
    """`text` with every control character, separator, bidi override and undecodable byte
    escaped (see the module docstring): safe on one line of any UTF-8 output."""
    if text.isprintable():  # the common case, checked in C
        return text
    return "".join(_escape(c) if _needs_escape(c) else c for c in text)


def shown(name: str) -> str:
    """The escaped form of a file name or path, for the ledger, reports, logs and --json."""
    if _BACKSLASH_IS_A_CHARACTER and "\\" in name:
        name = name.replace("\\", "\\\\")
    return one_line(name)


_ESCAPE = re.compile(r"\\(\\|t|n|r|x[0-9a-f]{2}|u[0-9a-f]{4})")


def original(escaped: str) -> str:
    """The real name (as os.fsdecode would give it) of a name in `shown` form (POSIX)."""

    def unescape(match: re.Match[str]) -> str:
        body = match.group(1)
        if body == "\\":
            return "\\"
        if body in ("t", "n", "r"):
            return {"t": "\t", "n": "\n", "r": "\r"}[body]
        code = int(body[1:], 16)
        if body[0] == "x" and code >= 0x80:
            return chr(0xDC00 + code)  # back to the surrogateescape form of that byte
        return chr(code)

    return _ESCAPE.sub(unescape, escaped)


def undecodable(name: str) -> bool:
    """True if the name is not valid UTF-8 (POSIX) or not valid UTF-16 (Windows): it holds
    a lone surrogate, which no text column, JSON document or log line can carry."""
    return any(0xD800 <= ord(c) <= 0xDFFF for c in name)


NOT_UTF8 = "rename this file: its name is not valid UTF-8"


def stray_mark_hint(name: str) -> str | None:
    """Why a name that did not match may be mistyped: a space or dot just before the
    extension ("Jane Doe .jpg", "Jane Doe..jpg"). None when there is none."""
    path = PurePath(name)
    if not path.suffix:
        return None
    stem = path.stem
    clean = stem.rstrip(" .")
    if clean == stem or not clean:
        return None
    marks = {" ": "a space", ".": "a dot"}
    found = " and ".join(sorted({marks[c] for c in stem[len(clean) :]}))
    return f"the name has {found} before the extension: rename it '{clean}{path.suffix}'"


def fit_name(stem: str, tail: str, limit: int = NAME_MAX_BYTES) -> str:
    """`stem + tail`, with `stem` cut short (on a character boundary) so that the name
    takes at most `limit` bytes on disk; `tail` (a date and the extension) is kept whole."""
    budget = limit - len(os.fsencode(tail))
    if budget < 1:
        raise ValueError(f"no room for a name before {tail!r} in {limit} bytes")
    while len(os.fsencode(stem)) > budget:
        stem = stem[:-1]
    return stem + tail
