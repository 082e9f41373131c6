"""status, report and runs are read-only: they never create, migrate, lock or write a
ledger, and they work for an account that can only read it."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler import app
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.ledger.db import Ledger
from reconciler.ledger.revision import HEAD_REVISION
from tests.helpers import cli_args, write_jpeg

READERS = (
    ("status",),
    ("status", "--json"),
    ("report", "unmatched"),
    ("report", "unmatched", "--json"),
    ("runs", "list", "--json"),
    ("runs", "show", "1", "--json"),
)


def ledger_path(settings: Settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///"))


def folder_state(folder: Path) -> dict[str, str]:
    """Every file in the folder with a hash of its bytes."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@pytest.fixture
def one_run(settings: Settings, emulator: GraphEmulator) -> Settings:
    """A ledger a real reconcile wrote: one photo uploaded, one file waiting."""
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    write_jpeg(settings.inbox_dir / "Nobody Known.jpg", color=(1, 2, 3))
    app.reconcile(settings)
    return settings


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_missing_ledger_is_one_line_exit_2_and_nothing_is_created(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    database = tmp_path / "not" / "there" / "photosync.db"

    result = CliRunner().invoke(main, [*command, "--database-url", f"sqlite:///{database}"])

    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        "photosync: error: setting 'database_url': "
        f"no ledger at {database} (did you forget --config?)"
    ]
    assert not (tmp_path / "not").exists()


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_readers_change_no_byte_of_the_ledger_folder(
    one_run: Settings, command: tuple[str, ...]
) -> None:
    folder = ledger_path(one_run).parent
    before = folder_state(folder)

    result = CliRunner().invoke(main, [*command, *cli_args(one_run)])

    assert result.exit_code == 0, result.output
    after = folder_state(folder)
    # A reader of a WAL database makes SQLite's shared-memory index beside it (and an empty
    # log) where it may; the ledger and its run lock keep every byte.
    index = {name for name in after if name.endswith(("-shm", "-wal"))}
    assert {name: after[name] for name in after.keys() - index} == before
    wal = folder / f"{ledger_path(one_run).name}-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_ledger_behind_this_photosync_is_not_migrated_by_a_reader(one_run: Settings) -> None:
    ledger = Ledger(one_run.database_url)
    head = HEAD_REVISION
    ledger.dispose()
    older = _first_revision_id()
    assert older != head
    with sqlite3.connect(ledger_path(one_run)) as db:  # as an older photosync left it
        db.execute("UPDATE alembic_version SET version_num = ?", (older,))

    for command in READERS:
        result = CliRunner().invoke(main, [*command, *cli_args(one_run)])
        assert result.exit_code == 2, (command, result.output)
        [line] = result.stderr.splitlines()
        assert f"is at revision {older}, behind this photosync ({head})" in line
        assert "run `photosync db upgrade`" in line
    with sqlite3.connect(ledger_path(one_run)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(older,)]


def _first_revision_id() -> str:
    from alembic.script import ScriptDirectory

    from reconciler.ledger.db import migrations_config

    script = ScriptDirectory.from_config(migrations_config())
    return next(s.revision for s in script.walk_revisions() if s.down_revision is None)


@pytest.fixture
def read_only_ledger(one_run: Settings) -> Iterator[Settings]:
    """The ledger file 0444 in a 0555 folder; put back afterwards so tmp_path can go."""
    path = ledger_path(one_run)
    path.chmod(0o444)
    path.parent.chmod(0o555)
    try:
        yield one_run
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o600)


def as_account_without_dac_override(args: list[str]) -> subprocess.CompletedProcess[str]:
    """photosync as a process that file permissions apply to: root without the
    capabilities that let it ignore them (CI runs as root), as in tests/test_reconcile.py."""
    prefix = (
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    )
    return subprocess.run(
        [*prefix, sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readers_work_on_a_ledger_the_account_can_only_read(
    read_only_ledger: Settings,
) -> None:
    settings = read_only_ledger
    folder = ledger_path(settings).parent
    before = folder_state(folder)
    # The account really cannot write there: the check that makes the rest meaningful.
    probe = as_account_without_dac_override(
        ["db", "upgrade", "--database-url", settings.database_url]
    )
    assert probe.returncode != 0

    status = as_account_without_dac_override(["status", "--json", *cli_args(settings)])
    report = as_account_without_dac_override(["report", "unmatched", "--json", *cli_args(settings)])
    runs = as_account_without_dac_override(["runs", "list", "--json", *cli_args(settings)])
    shown = as_account_without_dac_override(["runs", "show", "1", "--json", *cli_args(settings)])

    for done in (status, report, runs, shown):
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
    assert json.loads(status.stdout)["waiting"] == {"unmatched": 1}
    assert [row["file"] for row in json.loads(report.stdout)] == ["Nobody Known.jpg"]
    assert [run["uploaded"] for run in json.loads(runs.stdout)] == [1]
    assert {f["file"] for f in json.loads(shown.stdout)["files"]} == {
        "Jane Doe.jpg",
        "Nobody Known.jpg",
    }
    assert folder_state(folder) == before


def test_a_reader_is_not_refused_while_a_run_holds_the_lock(one_run: Settings) -> None:
    from tests.helpers import lock_holder

    holder = lock_holder(one_run.database_url)
    try:
        result = CliRunner().invoke(main, ["runs", "list", *cli_args(one_run)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("#1 reconcile ")


PG_URL = os.environ.get("PHOTOSYNC_TEST_POSTGRES_URL")


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """A database of its own (not the one tests/test_postgres.py empties), made empty."""
    assert PG_URL is not None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = "photosync_read_only_test"
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.mark.skipif(PG_URL is None, reason="PHOTOSYNC_TEST_POSTGRES_URL is not set")
def test_readers_never_create_or_write_a_postgres_ledger(empty_pg_database: str) -> None:
    from sqlalchemy import text

    from reconciler.errors import LedgerError

    url = empty_pg_database
    for command in READERS:
        result = CliRunner().invoke(main, [*command, "--database-url", url])
        assert result.exit_code == 2, (command, result.output)
        [line] = result.stderr.splitlines()
        assert "holds no photosync tables yet; run `photosync db upgrade`" in line
    writer = Ledger(url)
    assert writer.revision() is None  # no reader created or migrated anything
    writer.upgrade()
    writer.dispose()
    for command in READERS[:-1]:  # no run 1 yet
        result = CliRunner().invoke(main, [*command, "--database-url", url])
        assert result.exit_code == 0, (command, result.output)

    reader = Ledger(url, read_only=True)
    try:
        with pytest.raises(LedgerError, match="read-only transaction"), reader.session() as s:
            s.execute(text("DELETE FROM runs"))
    finally:
        reader.dispose()


def test_a_read_only_sqlite_ledger_refuses_a_write(one_run: Settings) -> None:
    from sqlalchemy import text

    from reconciler.errors import LedgerError

    reader = Ledger(one_run.database_url, read_only=True)
    try:
        with pytest.raises(LedgerError, match="readonly"), reader.session() as session:
            session.execute(text("DELETE FROM runs"))
    finally:
        reader.dispose()
    assert CliRunner().invoke(main, ["runs", "show", "1", *cli_args(one_run)]).exit_code == 0
