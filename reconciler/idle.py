"""A scheduled reconcile with nothing to do, run without loading SQLAlchemy, Graph or Pillow.

Most scheduled runs find an empty inbox and nothing left over. Such a run sends nothing to
Graph and changes nothing but its own run record, yet the full path would spend most of a
second importing libraries it never uses (docs/architecture.md, "Starting in a blink").
Here the same checks are made, the same run row is written and the same lines are logged
and printed; whenever anything could need doing, None sends the caller to the full path.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from reconciler import logs
from reconciler.archive import default_archive_dir
from reconciler.config import Settings, checked_for_reconcile
from reconciler.ledger import quick
from reconciler.ledger.lock import file_lock, holder_identity, lock_path, sqlite_file_warnings
from reconciler.ledger.state import archive_trim_mark
from reconciler.ledger.url import plain_sqlite_file
from reconciler.model import RunSummary

COMMAND = "reconcile"


def run_if_idle(settings: Settings) -> RunSummary | None:
    """The recorded summary of this reconcile if it has nothing to do; None when the full
    path must run (anything in the inbox or left over, a ledger other than a plain SQLite
    file at head, prune on, or a person watching the progress on a terminal)."""
    database = plain_sqlite_file(settings.database_url)
    if database is None or settings.prune or sys.stderr.isatty():
        return None
    checked_for_reconcile(settings)  # the same errors as the full path (exit 2)
    if not _is_empty(settings.inbox_dir):
        return None
    path = Path(database)
    connection = quick.connect(path)
    if connection is None:
        return None
    try:
        return _record_if_idle(settings, path, connection)
    finally:
        connection.close()


def _record_if_idle(
    settings: Settings, path: Path, connection: sqlite3.Connection
) -> RunSummary | None:
    logs.ledger_file_warned(sqlite_file_warnings(path))
    with file_lock(lock_path(path), holder_identity()):
        started, started_at = time.monotonic(), datetime.now(UTC)
        facts = quick.read_facts(connection)
        # Read under the lock: the inbox too, as a file may have arrived since the look above.
        if facts is None or not facts.nothing_to_do(archive=_archive_mark(settings)):
            return None
        if not _is_empty(settings.inbox_dir):
            return None
        summary = RunSummary(0)
        counts = {outcome.value: count for outcome, count in summary.counts.items()}
        try:
            summary.run_id = quick.record_run(
                connection, COMMAND, started_at=started_at, counts=counts, exit_code=0
            )
        except sqlite3.Error:
            # Nothing was written (one transaction); the full path meets the same trouble
            # (a read-only file, a full disk) and says what to do about it.
            return None
        summary.duration_s = time.monotonic() - started
    logs.run_started(summary.run_id, COMMAND, False, settings)
    logs.run_finished(summary, summary.exit_code, None)
    return summary


def _is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _archive_mark(settings: Settings) -> str | None:
    """What the archive must look like for a run to skip its trim; None: the archive is off."""
    if not settings.archive:
        return None
    root = settings.archive_dir or default_archive_dir(settings.database_url)
    return archive_trim_mark(settings.archive_keep, root)
