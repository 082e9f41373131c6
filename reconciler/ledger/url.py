"""The common case of a ledger URL, read without SQLAlchemy: `sqlite:///<path>`.

Parsing any URL takes SQLAlchemy (0.2 s and 25 MB to import), and a run with nothing to do
should not pay that (docs/architecture.md, "Starting in a blink"). A URL of this one plain
form (no driver, no query, nothing percent-encoded) names its file as SQLAlchemy would;
every other URL is left to SQLAlchemy's make_url. tests/test_ledger.py checks the two agree.
"""

from __future__ import annotations

import re

_PLAIN_SQLITE = re.compile(r"sqlite:///([^?%]+)")


def plain_sqlite_file(url: str) -> str | None:
    """The database file of a plain `sqlite:///<path>` URL, as SQLAlchemy reads it; None
    for every other URL (other databases, drivers, queries, in-memory SQLite)."""
    match = _PLAIN_SQLITE.fullmatch(url)
    if match is None or match.group(1) == ":memory:":
        return None
    return match.group(1)


def with_file(path: str) -> str:
    """The plain SQLite URL of a database file."""
    return f"sqlite:///{path}"
