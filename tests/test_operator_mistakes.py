"""Every operator mistake is one line on stderr that names what is at fault, with the
contract's exit code, never a traceback: each case is a real `python -m reconciler` process."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.ledger.db import Ledger, migrations_config

# An inbox and a ledger that are fine, so that each case has exactly one mistake.
WORKSPACE = "{w}"
# A Graph URL nothing answers: no case may get as far as Graph.
NOWHERE = "http://127.0.0.1:9"
# A process with no PostgreSQL driver, as after `pip install entra-photosync` without the
# [postgres] extra: importing psycopg fails the way it does when it is not installed.
WITHOUT_PSYCOPG = (
    "import sys; sys.modules['psycopg'] = None; sys.modules['psycopg2'] = None; "
    "from reconciler.cli import main; main(prog_name='photosync')"
)


@dataclass(frozen=True)
class Mistake:
    name: str
    args: tuple[str, ...]
    code: int
    needle: str  # the thing at fault, as the one line must name it
    without_psycopg: bool = False


def ledger(kind: str) -> tuple[str, ...]:
    return ("--database-url", f"sqlite:///{{w}}/{kind}.db")


def run_args(kind: str = "good") -> tuple[str, ...]:
    return (
        "--inbox-dir",
        "{w}/inbox",
        "--completed-dir",
        "{w}/completed",
        "--failed-dir",
        "{w}/failed",
        "--graph-url",
        NOWHERE,
        *ledger(kind),
    )


MISTAKES = [
    # the ledger: missing (did you forget --config?), behind, newer, not a ledger at all
    Mistake("status, no ledger", ("status", *ledger("absent")), 2, "no ledger at {w}/absent.db"),
    Mistake("report, no ledger", ("report", "unmatched", *ledger("absent")), 2, "--config"),
    Mistake("runs list, no ledger", ("runs", "list", *ledger("absent")), 2, "no ledger at"),
    Mistake("runs show, no ledger", ("runs", "show", "1", *ledger("absent")), 2, "no ledger at"),
    Mistake("status, older ledger", ("status", *ledger("older")), 2, "photosync db upgrade"),
    Mistake(
        "report, older ledger",
        ("report", "unmatched", "--json", *ledger("older")),
        2,
        "behind this photosync",
    ),
    Mistake("status, newer ledger", ("status", *ledger("newer")), 2, "upgrade photosync"),
    Mistake("reconcile, newer ledger", ("reconcile", *run_args("newer")), 2, "newer than this"),
    Mistake("db upgrade, newer ledger", ("db", "upgrade", *ledger("newer")), 2, "f00dfacecafe"),
    Mistake("status, text file", ("status", *ledger("corrupt")), 2, "not a readable photosync"),
    Mistake("reconcile, text file", ("reconcile", *run_args("corrupt")), 2, "{w}/corrupt.db"),
    Mistake("db upgrade, text file", ("db", "upgrade", *ledger("corrupt")), 2, "move it aside"),
    Mistake("runs list, text file", ("runs", "list", *ledger("corrupt")), 2, "restore a backup"),
    # the database URL
    Mistake(
        "no PostgreSQL driver",
        ("status", "--database-url", "postgresql+psycopg://svc@127.0.0.1:9/photosync"),
        2,
        "pip install 'entra-photosync[postgres]'",
        without_psycopg=True,
    ),
    # a PostgreSQL server that is not there: the run cannot run (3); the password never shown
    Mistake(
        "PostgreSQL down, status",
        ("status", "--database-url", "postgresql+psycopg://svc:pw@127.0.0.1:9/photosync"),
        3,
        "cannot read the ledger postgresql+psycopg://svc:***@127.0.0.1:9/photosync",
    ),
    Mistake(
        "PostgreSQL down, reconcile",
        (
            "reconcile",
            *run_args(),
            "--database-url",
            "postgresql+psycopg://svc:pw@127.0.0.1:9/photosync",
        ),
        3,
        "cannot reach the ledger postgresql+psycopg://svc:***@127.0.0.1:9/photosync",
    ),
    Mistake("unknown database", ("db", "upgrade", "--database-url", "foo://x/y"), 2, "'foo'"),
    Mistake("no MySQL driver", ("status", "--database-url", "mysql://u@h/db"), 2, "mysql"),
    Mistake("not a URL", ("status", "--database-url", "not a url"), 2, "database_url"),
    # files the command writes
    Mistake("log file is a folder", ("status", "--log-file", "{w}", *ledger("good")), 2, "{w}"),
    Mistake(
        "log file under a file",
        ("db", "upgrade", "--log-file", "{w}/corrupt.db/x.log", *ledger("good")),
        2,
        "log_file",
    ),
    Mistake(
        "report into a missing folder",
        ("report", "unmatched", "--output", "{w}/no/such/r.csv", *ledger("good")),
        2,
        "{w}/no/such/r.csv",
    ),
    # settings
    Mistake("missing inbox", ("reconcile", *run_args(), "--inbox-dir", "{w}/gone"), 2, "inbox_dir"),
    Mistake(
        "completed is the inbox",
        ("reconcile", *run_args(), "--completed-dir", "{w}/inbox"),
        2,
        "completed_dir",
    ),
    Mistake("missing config", ("status", "--config", "{w}/nope.toml"), 2, "{w}/nope.toml"),
    Mistake("config without a table", ("status", "--config", "{w}/bare.toml"), 2, "[photosync]"),
    Mistake("unknown setting", ("status", "--config", "{w}/typo.toml"), 2, "inbox_folder"),
    Mistake("max_bytes not a number", ("reconcile", *run_args(), "--max-bytes", "4MB"), 2, "4MB"),
    Mistake("unknown auth", ("reconcile", *run_args(), "--auth", "magic"), 2, "'magic'"),
    Mistake("unknown log level", ("status", "--log-level", "loud", *ledger("good")), 2, "loud"),
    Mistake(
        "graph over http",
        ("reconcile", *run_args(), "--graph-url", "http://graph.example.com"),
        2,
        "graph_url",
    ),
    Mistake("no concurrency", ("reconcile", *run_args(), "--concurrency", "0"), 2, "concurrency"),
    # the command line itself
    Mistake("unknown run", ("runs", "show", "999", *ledger("good")), 2, "no run 999"),
    Mistake("run id not a number", ("runs", "show", "abc", *ledger("good")), 2, "'abc'"),
    Mistake("unknown format", ("report", "unmatched", "--format", "xml"), 2, "--format"),
    Mistake("two formats", ("report", "unmatched", "--json", "--format", "csv"), 2, "--json"),
    Mistake("unknown option", ("reconcile", "--frobnicate"), 2, "--frobnicate"),
    Mistake("unknown command", ("reconcil",), 2, "reconcil"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    w = tmp_path_factory.mktemp("mistakes")
    (w / "inbox").mkdir()
    good = w / "good.db"
    made = Ledger(f"sqlite:///{good}")
    made.upgrade()
    made.dispose()
    shutil.copy(good, w / "older.db")
    shutil.copy(good, w / "newer.db")
    from alembic.script import ScriptDirectory

    first = next(
        s.revision
        for s in ScriptDirectory.from_config(migrations_config()).walk_revisions()
        if s.down_revision is None
    )
    for name, revision in (("older.db", first), ("newer.db", "f00dfacecafe")):
        with sqlite3.connect(w / name) as db:
            db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    (w / "corrupt.db").write_text("these are someone's notes, not a ledger\n")
    (w / "corrupt.db").chmod(0o600)  # as private as a ledger: no permission warning
    (w / "bare.toml").write_text('inbox_dir = "/Photos"\n')
    (w / "typo.toml").write_text('[photosync]\ninbox_folder = "/Photos"\n')
    return w


def photosync(
    args: list[str], workspace: Path, *, without_psycopg: bool = False
) -> subprocess.CompletedProcess[str]:
    # Nothing from the machine running the tests: no PHOTOSYNC_* variable, no config found
    # by discovery in a home folder.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOSYNC_")}
    env |= {"HOME": str(workspace), "XDG_CONFIG_HOME": str(workspace / "xdg")}
    start = ["-c", WITHOUT_PSYCOPG] if without_psycopg else ["-m", "reconciler"]
    return subprocess.run(
        [sys.executable, *start, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=workspace,
        timeout=60,
    )


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_a_mistake_is_one_line_naming_what_is_at_fault(mistake: Mistake, workspace: Path) -> None:
    args = [a.replace(WORKSPACE, str(workspace)) for a in mistake.args]

    done = photosync(args, workspace, without_psycopg=mistake.without_psycopg)

    assert done.returncode == mistake.code, done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("photosync: error: ")
    assert mistake.needle.replace(WORKSPACE, str(workspace)) in line
    assert done.stdout == ""


def test_there_are_at_least_25_mistakes() -> None:
    assert len(MISTAKES) >= 25


def test_debug_shows_the_traceback_of_a_mistake(workspace: Path) -> None:
    done = photosync(
        ["status", "--log-level", "debug", "--database-url", f"sqlite:///{workspace}/corrupt.db"],
        workspace,
    )

    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert "file is not a database" in done.stderr  # SQLite's own words, for whoever debugs
    assert done.stderr.splitlines()[-1].startswith("photosync: error: ")
