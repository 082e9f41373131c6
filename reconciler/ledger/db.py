"""Opening the ledger: engine, SQLite pragmas, migrations to head, and the run lock."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import filelock
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from reconciler.errors import LedgerError, RunLockedError

# Postgres advisory-lock key for "a photosync run": any fixed 64-bit number, ours is 'PHOTOSYN'.
_PG_LOCK_KEY = int.from_bytes(b"PHOTOSYN", "big") & 0x7FFF_FFFF_FFFF_FFFF


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database or "")


def _prepare_sqlite_file(path: Path) -> None:
    # The ledger holds the tenant's user directory: readable by its owner only. Creating the
    # file ourselves (rather than letting SQLite do it) is the only way to get 0600 from birth.
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        descriptor = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.close(descriptor)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets `status` read while a run writes; NORMAL is durable at checkpoints under WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def migrations_config(engine: Engine | None = None) -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("reconciler._migrations")))
    if engine is not None:
        # Only the engine, never its URL: Alembic's config would interpolate a URL-encoded
        # password ("%40") and print it in clear in the traceback.
        config.attributes["engine"] = engine
    return config


class Ledger:
    """The database behind photosync, opened and (on request) migrated to head."""

    def __init__(self, database_url: str) -> None:
        try:
            self.url = make_url(database_url)
        except (ArgumentError, ValueError) as exc:
            # Not echoed: a URL that does not parse may still hold a password.
            raise LedgerError("the ledger's database_url is not a SQLAlchemy URL") from exc
        try:
            path = sqlite_path(self.url)
            if path is not None:
                _prepare_sqlite_file(path)
            self.engine = create_engine(self.url)
        except (OSError, SQLAlchemyError, ImportError) as exc:
            raise LedgerError(f"cannot open the ledger {self.describe()}: {exc}") from exc
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def upgrade(self) -> None:
        try:
            command.upgrade(migrations_config(self.engine), "head")
        except (SQLAlchemyError, OSError) as exc:
            raise LedgerError(f"cannot migrate the ledger {self.describe()}: {exc}") from exc

    def revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(migrations_config()).get_current_head()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on error."""
        try:
            with self.sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise LedgerError(f"ledger {self.describe()}: {exc}") from exc

    @contextlib.contextmanager
    def run_lock(self) -> Iterator[None]:
        """Hold the one-run-at-a-time lock. The OS releases it when a process dies, so a
        killed run never blocks the next one."""
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        path = sqlite_path(self.url)
        if path is not None:
            with _file_lock(path.with_name(path.name + ".lock"), holder):
                yield
        elif self.url.get_backend_name() == "postgresql":
            with _pg_advisory_lock(self.engine, holder):
                yield
        else:
            yield  # in-memory SQLite: one process by construction

    def dispose(self) -> None:
        self.engine.dispose()


def _describe_holder(info: dict[str, Any]) -> str:
    # Host last: PostgreSQL keeps only 63 characters of application_name.
    return f"pid {info.get('pid', '?')} since {info.get('since', '?')} on {info.get('host', '?')}"


@contextlib.contextmanager
def _file_lock(path: Path, holder: dict[str, Any]) -> Iterator[None]:
    lock = filelock.FileLock(path, timeout=0)
    owner_file = path.with_name(path.name + ".owner")
    try:
        lock.acquire()
    except filelock.Timeout:
        try:
            info = json.loads(owner_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        raise RunLockedError(_describe_holder(info)) from None
    try:
        owner_file.write_text(json.dumps(holder), encoding="utf-8")
        yield
    finally:
        with contextlib.suppress(OSError):
            owner_file.unlink()
        lock.release()


@contextlib.contextmanager
def _pg_advisory_lock(engine: Engine, holder: dict[str, Any]) -> Iterator[None]:
    with engine.connect() as connection:
        # application_name is how the other run learns who holds the lock.
        connection.execute(
            text("SELECT set_config('application_name', :name, false)"),
            {"name": _describe_holder(holder)[:63]},
        )
        got = connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
        if not got.scalar():
            holder_name = connection.execute(
                text(
                    "SELECT a.application_name FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted AND l.objid = :low LIMIT 1"
                ),
                {"low": _PG_LOCK_KEY & 0xFFFF_FFFF},
            ).scalar()
            raise RunLockedError(holder_name or "a session whose name PostgreSQL did not report")
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            connection.commit()
