"""The run lock and the run records, with real processes: one lock per ledger file whatever
name reaches it, migrations under the lock, killed runs closed as abandoned, the holder
always named, private lock files, and a warning for a ledger others can read."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler import app
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.errors import RunLockedError
from reconciler.ledger.db import Ledger
from reconciler.ledger.repository import ABANDONED
from reconciler.ledger.revision import HEAD_REVISION
from tests.helpers import (
    cli_args,
    ledger_rows,
    lock_holder,
    reconcile_killed_when_a_photo_is_stored,
    write_jpeg,
)

# --- one lock per file, whatever name reaches it


def _symlinked_file(tmp_path: Path, real: Path) -> str:
    (tmp_path / "alias.db").symlink_to(real)
    return f"sqlite:///{tmp_path / 'alias.db'}"


def _symlinked_folder(tmp_path: Path, real: Path) -> str:
    (tmp_path / "alias").symlink_to(real.parent, target_is_directory=True)
    return f"sqlite:///{tmp_path / 'alias' / real.name}"


def _relative(tmp_path: Path, real: Path) -> str:
    return f"sqlite:///{real.relative_to(tmp_path)}"  # the test runs with tmp_path as cwd


def _dot_dot(tmp_path: Path, real: Path) -> str:
    (tmp_path / "other").mkdir()
    return f"sqlite:///{tmp_path / 'other' / '..' / real.parent.name / real.name}"


ALIASES: dict[str, Callable[[Path, Path], str]] = {
    "symlinked file": _symlinked_file,
    "symlinked folder": _symlinked_folder,
    "relative path": _relative,
    "dot-dot": _dot_dot,
}


@pytest.mark.parametrize("holder_uses_alias", [False, True], ids=["real holds", "alias holds"])
@pytest.mark.parametrize("alias", list(ALIASES))
def test_every_name_of_a_ledger_takes_the_same_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alias: str, holder_uses_alias: bool
) -> None:
    monkeypatch.chdir(tmp_path)  # the holder process inherits it: relative URLs agree
    real = tmp_path / "ledger" / "photosync.db"
    real.parent.mkdir()
    real_url, alias_url = f"sqlite:///{real}", ALIASES[alias](tmp_path, real)
    holder_url, contender_url = (
        (alias_url, real_url) if holder_uses_alias else (real_url, alias_url)
    )

    holder = lock_holder(holder_url)
    contender = Ledger(contender_url)
    try:
        with pytest.raises(RunLockedError, match=f"pid {holder.pid} "), contender.run_lock():
            pytest.fail("two names of one ledger were both locked")
    finally:
        holder.kill()
        holder.wait()
    with contender.run_lock():
        pass  # the dead holder's lock is gone for every name
    contender.dispose()
    # One lock file, beside the real file, and none beside the alias.
    assert sorted(p.name for p in tmp_path.rglob("*.lock")) == ["photosync.db.lock"]
    assert (real.parent / "photosync.db.lock").exists()


def test_a_run_through_a_symlinked_folder_uploads_nothing_while_the_real_path_is_locked(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    real = Path(settings.database_url.removeprefix("sqlite:///"))
    real.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "alias").symlink_to(real.parent, target_is_directory=True)
    alias_url = f"sqlite:///{tmp_path / 'alias' / real.name}"
    args = cli_args(settings)
    args[args.index(settings.database_url)] = alias_url

    holder = lock_holder(settings.database_url)
    try:
        result = CliRunner().invoke(main, ["reconcile", *args])
    finally:
        holder.kill()
        holder.wait()

    assert result.exit_code == 3
    assert f"pid {holder.pid} " in result.stderr
    assert emulator.tenant.photo_writes(jane) == 0
    assert (settings.inbox_dir / "Jane Doe.jpg").exists()


# --- migrations under the lock


def test_neither_a_run_nor_db_upgrade_migrates_while_another_run_holds_the_lock(
    settings: Settings, emulator: GraphEmulator
) -> None:
    holder = lock_holder(settings.database_url)  # leaves an empty, unmigrated ledger file
    try:
        upgrade = CliRunner().invoke(main, ["db", "upgrade", *cli_args(settings)])
        run = CliRunner().invoke(main, ["reconcile", *cli_args(settings)])
        tables_meanwhile = ledger_rows(settings, "SELECT name FROM sqlite_master")
    finally:
        holder.kill()
        holder.wait()

    assert (upgrade.exit_code, run.exit_code) == (3, 3)
    assert "another photosync run holds the lock" in upgrade.stderr
    assert tables_meanwhile == []
    upgrade = CliRunner().invoke(main, ["db", "upgrade", *cli_args(settings)])
    assert upgrade.exit_code == 0
    ledger = Ledger(settings.database_url)
    assert ledger.revision() == HEAD_REVISION is not None
    ledger.dispose()


# --- a killed run is closed by the next one


def test_a_killed_run_is_closed_as_abandoned_by_the_next_run(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    data = write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    # Killed mid-run, the instant Graph has stored the photo: no chance to record an end.
    reconcile_killed_when_a_photo_is_stored(emulator, settings)
    assert ledger_rows(settings, "SELECT id, finished_at, exit_code FROM runs") == [(1, None, None)]

    summary, _ = app.reconcile(settings)

    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == data
    rows = ledger_rows(settings, "SELECT id, finished_at IS NOT NULL, exit_code, error FROM runs")
    assert rows == [(1, 1, 3, ABANDONED), (summary.run_id, 1, 0, None)]
    status = CliRunner().invoke(main, ["status", *cli_args(settings)])
    assert status.exit_code == 0
    assert f"error: {ABANDONED}" in status.output
    as_json = CliRunner().invoke(main, ["status", "--json", *cli_args(settings)])
    runs = {run["run_id"]: run for run in json.loads(as_json.stdout)["runs"]}
    assert (runs[1]["exit_code"], runs[1]["error"]) == (3, ABANDONED)
    assert runs[summary.run_id]["error"] is None


# --- the holder is always named


def test_the_holder_is_named_by_pid_host_and_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'photosync.db'}"
    holder = lock_holder(url)
    try:
        with pytest.raises(RunLockedError) as caught, Ledger(url).run_lock():
            pass
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    since = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.search(
        f"pid {holder.pid} since {since} on {re.escape(socket.gethostname())}", message
    )
    assert str(tmp_path / "photosync.db.lock") in message
    assert "?" not in message


def test_a_holder_that_recorded_nothing_is_said_plainly(tmp_path: Path) -> None:
    """A lock taken by a process that never wrote who it is, over the identity a crashed run
    left behind: the message names the lock file and shows no made-up or stale holder."""
    url = f"sqlite:///{tmp_path / 'photosync.db'}"
    lock_file = tmp_path / "photosync.db.lock"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00Z"}
    lock_file.write_bytes(b"\n" + json.dumps(stale).encode())
    mute = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, filelock\n"
            f"fd = os.open({str(lock_file)!r}, os.O_RDWR)\n"
            "assert filelock.lock_descriptor(fd, blocking=False)\n"
            "print('locked', flush=True); sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert mute.stdout is not None and mute.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as caught, Ledger(url).run_lock():
            pass
    finally:
        mute.kill()
        mute.wait()
    message = str(caught.value)
    assert str(lock_file) in message
    assert "pid, host and start time are not recorded in the lock file" in message
    assert f"pid {dead.pid}" not in message and "?" not in message


# --- permissions


def test_lock_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'photosync.db'}"
    lock_file = tmp_path / "photosync.db.lock"
    previous = os.umask(0)
    try:
        with Ledger(url).run_lock():
            assert lock_file.stat().st_mode & 0o777 == 0o600
        # A lock file left readable by an older version is tightened by the next run.
        os.chmod(lock_file, 0o666)
        with Ledger(url).run_lock():
            assert lock_file.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photosync.db", "photosync.db.lock"]


def _cli(settings: Settings, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "reconcile", *cli_args(settings), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_ledger_others_can_read_is_warned_about_on_every_run(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    ledger = Path(settings.database_url.removeprefix("sqlite:///"))
    assert _cli(settings).returncode == 0
    assert "chmod" not in _cli(settings).stderr  # a private ledger: nothing to say
    os.chmod(ledger, 0o644)
    fix = f"chmod 600 {ledger}"

    to_stderr = _cli(settings)
    log_file = tmp_path / "photosync.log"
    to_log_file = _cli(settings, "--log-file", str(log_file))

    assert (to_stderr.returncode, to_log_file.returncode) == (0, 0)
    assert to_stderr.stderr.count(fix) == 1
    assert to_log_file.stderr.count(fix) == 1
    logged = [line for line in log_file.read_text().splitlines() if fix in line]
    assert len(logged) == 1 and "WARNING" in logged[0] and "0644" in logged[0]
    assert ledger.stat().st_mode & 0o777 == 0o644  # told, not changed behind the owner's back


def test_a_killed_run_row_survives_in_a_ledger_read_directly(
    settings: Settings, emulator: GraphEmulator
) -> None:
    """The abandoned run's counts are whatever it had recorded: closing it touches only its
    end, exit code and error."""
    app.reconcile(settings)
    path = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO runs (command, dry_run, started_at, counts, graph_requests, host, pid)"
            " VALUES ('reconcile', 0, '2026-12-01 10:00:00', '{\"uploaded\": 2}', 7, 'h', 1)"
        )
    app.reconcile(settings)
    assert ledger_rows(
        settings, "SELECT counts, graph_requests, exit_code, error FROM runs WHERE id = 2"
    ) == [('{"uploaded": 2}', 7, 3, ABANDONED)]


def test_a_lock_file_that_cannot_be_opened_is_one_line_naming_it(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ledger = Path(settings.database_url.removeprefix("sqlite:///"))
    ledger.parent.mkdir(parents=True, exist_ok=True)
    (ledger.parent / "photosync.db.lock").mkdir()  # in the way of the lock file

    result = CliRunner().invoke(main, ["reconcile", *cli_args(settings)])

    assert result.exit_code == 3
    (line,) = result.stderr.splitlines()
    assert f"cannot open the run lock {ledger.parent / 'photosync.db.lock'}" in line
    assert "Traceback" not in result.output
