"""An idle scheduled run (empty inbox, nothing left over) is recorded without SQLAlchemy,
Graph or Pillow (reconciler/idle.py), and must be indistinguishable in the ledger, the
output and the exit code from the same run taken the full way."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from reconciler import app, idle, queries
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.ledger.quick import IdleFacts
from reconciler.ledger.revision import HEAD_REVISION
from reconciler.model import Outcome
from tests.helpers import cli_args, lock_holder, write_jpeg

# Columns that differ between any two runs, however they are recorded.
_PER_RUN = ("id", "started_at", "finished_at", "pid")
_HEAVY = ("sqlalchemy", "alembic", "requests", "azure", "PIL", "msal", "urllib3")


def _runs(settings: Settings) -> list[dict[str, object]]:
    database = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            "SELECT *, typeof(started_at) AS started_type, typeof(counts) AS counts_type "
            "FROM runs ORDER BY id"
        ).fetchall()
    return [dict(row) for row in rows]


def _photosync(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """A real `photosync` process that reports, as it exits, which heavy libraries it loaded."""
    code = (
        "import atexit, sys\n"
        f"atexit.register(lambda: print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}}"
        f" & set({_HEAVY!r})), file=sys.stderr))\n"
        "from reconciler.cli import main\n"
        "main(sys.argv[1:], prog_name='photosync')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )


def _loaded(process: subprocess.CompletedProcess[str]) -> list[str]:
    line = next(s for s in process.stderr.splitlines() if s.startswith("LOADED "))
    loaded: list[str] = json.loads(line.removeprefix("LOADED ").replace("'", '"'))
    return loaded


def test_an_idle_run_records_the_row_the_full_path_records(settings: Settings) -> None:
    full, _plan = app.reconcile(settings)  # the first run creates the ledger: full path
    quiet = idle.run_if_idle(settings)
    assert quiet is not None, "an empty inbox and a fresh ledger is an idle run"
    assert quiet.to_json() | {"run_id": 0, "duration_s": 0} == full.to_json() | {
        "run_id": 0,
        "duration_s": 0,
    }
    first, second = _runs(settings)
    assert (first["id"], second["id"]) == (full.run_id, quiet.run_id)
    assert second["finished_at"] is not None and second["started_at"] <= second["finished_at"]
    same = {k: v for k, v in first.items() if k not in _PER_RUN}
    assert {k: v for k, v in second.items() if k not in _PER_RUN} == same
    # And the full path reads the idle run's row as one of its own.
    assert queries.runs_list(settings, limit=1)[0].run_id == quiet.run_id


def test_an_idle_scheduled_run_loads_no_heavy_library(
    settings: Settings, emulator: GraphEmulator
) -> None:
    first = _photosync(settings, "reconcile", *cli_args(settings))
    assert first.returncode == 0, first.stderr
    assert "sqlalchemy" in _loaded(first)  # no ledger yet: the full path creates it
    for _ in range(2):
        run = _photosync(settings, "reconcile", "--json", *cli_args(settings))
        assert run.returncode == 0, run.stderr
        assert _loaded(run) == []
        summary = json.loads(run.stdout)
        assert summary["graph_requests"] == 0 and summary["uploaded"] == 0
    assert [row["exit_code"] for row in _runs(settings)] == [0, 0, 0]
    assert emulator.requests() == []  # nothing sent to Graph, not even for a token


def test_a_photo_in_the_inbox_takes_the_full_path(
    settings: Settings, emulator: GraphEmulator
) -> None:
    app.reconcile(settings)
    user_id = emulator.tenant.add_user("Ada Lovelace")
    write_jpeg(settings.inbox_dir / "Ada Lovelace.jpg", color=(10, 200, 60))
    assert idle.run_if_idle(settings) is None
    run = _photosync(settings, "reconcile", "--json", *cli_args(settings))
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["uploaded"] == 1
    stored = emulator.tenant.photo(user_id)
    assert stored is not None
    red, green, blue = Image.open(io.BytesIO(stored.data)).convert("RGB").getpixel((50, 50))
    assert abs(red - 10) < 12 and abs(green - 200) < 12 and abs(blue - 60) < 12


def test_whatever_a_killed_run_left_takes_the_full_path(settings: Settings) -> None:
    app.reconcile(settings)
    database = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO runs (command, dry_run, started_at, counts, graph_requests) "
            "VALUES ('reconcile', 0, '2026-01-01 00:00:00.000000', '{}', 0)"
        )
    assert idle.run_if_idle(settings) is None
    summary, _plan = app.reconcile(settings)  # closes it as abandoned
    assert summary.exit_code == 0
    assert idle.run_if_idle(settings) is not None


KEPT = "3 /srv/photosync/archive"  # what the last trim left, and what the settings ask


@pytest.mark.parametrize(
    ("facts", "archive", "idle_run"),
    [
        (IdleFacts(HEAD_REVISION, 0, 0, 0, True, KEPT), KEPT, True),
        (IdleFacts(HEAD_REVISION, 0, 0, 0, False, None), None, True),  # the archive is off
        (IdleFacts(HEAD_REVISION, 0, 0, 0, False, KEPT), KEPT, False),  # the last run failed
        (IdleFacts(HEAD_REVISION, 0, 0, 0, True, None), KEPT, False),  # never trimmed
        # archive_keep lowered, or the archive moved, since the last trim
        (IdleFacts(HEAD_REVISION, 0, 0, 0, True, KEPT), "2 /srv/photosync/archive", False),
        (IdleFacts(HEAD_REVISION, 0, 0, 0, True, KEPT), "3 /mnt/archive", False),
        (IdleFacts("0004", 0, 0, 0, True, KEPT), KEPT, False),  # a migration to run
        (IdleFacts(None, 0, 0, 0, True, KEPT), KEPT, False),
        (IdleFacts(HEAD_REVISION, 1, 0, 0, True, KEPT), KEPT, False),  # a file waits
        (IdleFacts(HEAD_REVISION, 0, 1, 0, True, KEPT), KEPT, False),  # an interrupted upload
        (IdleFacts(HEAD_REVISION, 0, 0, 1, True, KEPT), KEPT, False),  # an abandoned run
    ],
)
def test_only_a_ledger_with_nothing_left_over_is_idle(
    facts: IdleFacts, archive: str | None, idle_run: bool
) -> None:
    assert facts.nothing_to_do(archive=archive) is idle_run


def test_an_idle_run_still_refuses_a_broken_overrides_file(
    settings: Settings, tmp_path: Path
) -> None:
    app.reconcile(settings)
    overrides = tmp_path / "overrides.csv"
    overrides.write_bytes(b"\xff\xfe not UTF-8")
    run = _photosync(settings, "reconcile", *cli_args(settings), "--overrides-file", str(overrides))
    assert run.returncode == 2
    assert "overrides_file" in run.stderr


def test_an_idle_run_waits_its_turn_for_the_lock(settings: Settings) -> None:
    app.reconcile(settings)
    holder = lock_holder(settings.database_url)
    try:
        run = _photosync(settings, "reconcile", *cli_args(settings))
    finally:
        holder.kill()
        holder.wait()
    assert run.returncode == 3
    assert f"pid {holder.pid}" in run.stderr
    assert len(_runs(settings)) == 1


def test_an_idle_run_logs_the_lines_the_full_path_logs(settings: Settings, tmp_path: Path) -> None:
    log_file = tmp_path / "photosync.log"
    flags = [*cli_args(settings), "--log-file", str(log_file), "--log-format", "json"]
    flags += ["--log-level", "info"]
    for _ in range(2):  # the full path (it creates the ledger), then the idle one
        run = _photosync(settings, "reconcile", *flags)
        assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    full, quiet = [
        [
            (line["logger"], line["level"], line["run_id"], line["message"])
            for line in lines
            if line.get("run_id") == run_id
        ]
        for run_id in (1, 2)
    ]
    assert len(full) >= 2 and [entry[:2] for entry in quiet] == [entry[:2] for entry in full]

    def shown(message: str) -> str:  # the run's id and duration aside
        return re.sub(r" in [0-9.]+s$", " in …s", message.replace("run 1 ", "run 2 "))

    assert [shown(entry[3]) for entry in full] == [shown(entry[3]) for entry in quiet]


def test_a_ledger_that_refuses_the_run_row_is_explained_by_the_full_path(
    settings: Settings,
) -> None:
    """Whatever stops the idle run from writing its row (a read-only file, a full disk)
    is reported as the full path reports it: one line naming the ledger, exit 3."""
    app.reconcile(settings)
    database = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TRIGGER no_more_runs BEFORE INSERT ON runs "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    run = _photosync(settings, "reconcile", *cli_args(settings))
    assert run.returncode == 3
    message = [line for line in run.stderr.splitlines() if line.startswith("photosync: ")]
    assert len(message) == 1 and "database or disk is full" in message[0]
    assert "ledger" in message[0] and "unexpected" not in message[0]
    assert len(_runs(settings)) == 1


def test_a_lower_archive_keep_is_applied_by_the_next_run_even_with_nothing_to_do(
    settings: Settings, emulator: GraphEmulator
) -> None:
    """The full path trims the archive at every run's end; an idle run may skip that only
    while the archive is as the last trim left it."""
    user_id = emulator.tenant.add_user("Ada Lovelace")
    archive = Path(settings.database_url.removeprefix("sqlite:///")).parent / "archive"
    for n in range(3):  # three versions of Ada's photo, each kept in the archive
        write_jpeg(settings.inbox_dir / "Ada Lovelace.jpg", color=(40 * n, 90, 200))
        summary, _plan = app.reconcile(settings)
        assert summary.counts[Outcome.UPLOADED] == 1
    assert emulator.tenant.photo(user_id) is not None
    kept = sorted(p for p in archive.rglob("*") if p.is_file())
    assert idle.run_if_idle(settings) is not None  # nothing changed: idle
    fewer = dataclasses.replace(settings, archive_keep=1)
    assert idle.run_if_idle(fewer) is None  # archive_keep lowered: the full path trims
    app.reconcile(fewer)
    trimmed = sorted(p for p in archive.rglob("*") if p.is_file())
    assert len(trimmed) < len(kept)
    assert idle.run_if_idle(fewer) is not None
