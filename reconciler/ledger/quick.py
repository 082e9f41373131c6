"""The ledger of a scheduled run that has nothing to do, read and recorded with the standard
library's sqlite3 rather than SQLAlchemy (docs/architecture.md, "Starting in a blink").

Only for a SQLite ledger already at HEAD_REVISION, and only under the run lock. It reads the
few facts that say whether a run would find anything to finish, and records the run with
the same row `repository.start_run` and `repository.finish_run` write (tests/test_idle.py
compares the two). Any doubt (no file yet, an older schema, an error) is "not idle": the
caller then takes the full path, which explains any problem the way it always has.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from reconciler.ledger.revision import HEAD_REVISION, VERSION_TABLE
from reconciler.ledger.state import ARCHIVE_TRIMMED
from reconciler.model import FileLocation, UploadStatus


@dataclass(frozen=True, slots=True)
class IdleFacts:
    """What the ledger says about work left over from earlier runs."""

    revision: str | None
    # inbox_files rows still in the inbox: new, waiting, undecided or failed files.
    files_in_inbox: int
    # Upload intents without a result: a killed run's, which a run closes as interrupted.
    pending_uploads: int
    # Runs without an end: a killed run's, which a run closes as abandoned.
    unfinished_runs: int
    # The newest run ended without an error, so it trimmed the archive as it ended.
    last_run_clean: bool
    # What that trim left (state.archive_trim_mark), None if no run has trimmed yet.
    archive_trimmed: str | None = None

    def nothing_to_do(self, *, archive: str | None) -> bool:
        """Would a run with an empty inbox find nothing to finish, record or trim?
        `archive`: the trim mark the settings ask for, None when the archive is off."""
        trimmed = archive is None or (self.last_run_clean and self.archive_trimmed == archive)
        return (
            self.revision == HEAD_REVISION
            and self.files_in_inbox == 0
            and self.pending_uploads == 0
            and self.unfinished_runs == 0
            and trimmed
        )


def connect(path: Path) -> sqlite3.Connection | None:
    """The existing ledger file, opened for reading and writing with the pragmas the full
    path sets (reconciler/ledger/db.py); None when there is no such file."""
    if not path.is_file():
        return None
    try:
        connection = sqlite3.connect(
            f"file:{quote(str(path))}?mode=rw", uri=True, isolation_level=None, timeout=30
        )
        connection.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error:
        return None
    return connection


def read_facts(connection: sqlite3.Connection) -> IdleFacts | None:
    """The ledger's facts, or None when they cannot be read (not a ledger, another schema)."""
    try:
        revisions = [
            row[0] for row in connection.execute(f"SELECT version_num FROM {VERSION_TABLE}")
        ]
        if revisions != [HEAD_REVISION]:
            return IdleFacts(",".join(revisions) or None, 0, 0, 0, False)
        in_inbox = _count(
            connection, "SELECT count(*) FROM inbox_files WHERE location = ?", FileLocation.INBOX
        )
        pending = _count(
            connection, "SELECT count(*) FROM uploads WHERE status = ?", UploadStatus.PENDING
        )
        unfinished = _count(connection, "SELECT count(*) FROM runs WHERE finished_at IS NULL")
        last = connection.execute("SELECT error FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        trimmed = connection.execute(
            "SELECT value FROM sync_state WHERE key = ?", (ARCHIVE_TRIMMED,)
        ).fetchone()
    except sqlite3.Error:
        return None
    last_run_clean = last is not None and last[0] is None
    return IdleFacts(
        HEAD_REVISION,
        in_inbox,
        pending,
        unfinished,
        last_run_clean,
        trimmed[0] if trimmed else None,
    )


def _count(connection: sqlite3.Connection, query: str, *values: str) -> int:
    row = connection.execute(query, values).fetchone()
    return int(row[0]) if row else 0


def record_run(
    connection: sqlite3.Connection,
    command: str,
    *,
    started_at: datetime,
    counts: Mapping[str, int],
    exit_code: int,
) -> int:
    """A finished run's row, written at once, as start_run and finish_run would leave it."""
    with connection:
        cursor = connection.execute(
            "INSERT INTO runs (command, dry_run, started_at, finished_at, exit_code, counts, "
            "graph_requests, host, pid, error) VALUES (?, 0, ?, ?, ?, ?, 0, ?, ?, NULL)",
            (
                command,
                _stored(started_at),
                _stored(datetime.now(UTC)),
                exit_code,
                json.dumps(dict(counts)),
                socket.gethostname(),
                os.getpid(),
            ),
        )
    run_id = cursor.lastrowid
    assert run_id is not None
    return run_id


def _stored(moment: datetime) -> str:
    """A UTC moment as SQLAlchemy's DateTime keeps it in SQLite."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
