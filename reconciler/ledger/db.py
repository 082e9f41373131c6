"""Opening the ledger: engine, SQLite pragmas, migrations to head, and the run lock.

Two ways in. A run (reconcile, retry-failed, db upgrade) opens the ledger for writing,
creating a SQLite file on first use and migrating it under the run lock. The read-only
commands (status, report, runs) open it read-only (`Ledger(url, read_only=True)`): they
never create, migrate, lock or write it, and work for an account that may only read it.
A ledger photosync cannot use as it is (missing for a reader, behind or ahead of this
photosync, not a ledger at all, its driver not installed) is a LedgerUnusable: one line
naming the ledger and what to do, exit 2.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from alembic.config import Config

from reconciler.errors import ConfigError, LedgerError, RunLockedError
from reconciler.ledger.lock import (
    describe_holder,
    file_lock,
    holder_identity,
    lock_path,
    sqlite_file_warnings,
)
from reconciler.ledger.revision import HEAD_REVISION, VERSION_TABLE, revision_problem


class LedgerUnusable(ConfigError, LedgerError):
    """The configured ledger cannot be used as it is; the operator's fix, so exit 2 (a
    ConfigError), while code that handles every LedgerError still sees one."""

    def __init__(self, problem: str) -> None:
        super().__init__("database_url", problem)


# SQLite's words for "these bytes are not a database" (sqlite3 exposes the error's name).
_NOT_A_DATABASE = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})
POSTGRES_EXTRA = "pip install 'entra-photosync[postgres]'"

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
    # Created where the path resolves to: O_EXCL refuses a symlink, even one to nothing yet.
    real = Path(os.path.realpath(path))
    real.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(real, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))


def read_only_uri(path: Path, *, immutable: bool = False) -> str:
    """The SQLite URI that opens `path` read-only. `immutable` also tells SQLite that
    nobody writes the file, so it needs no -shm file beside it: the only way to read a
    WAL ledger in a folder the account cannot write when no run has its journal open."""
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    return uri + "&immutable=1" if immutable else uri


def _read_only_sqlite(path: Path) -> Any:
    """A read-only connection to the ledger at `path` (a DBAPI connection for SQLAlchemy's
    creator). A WAL ledger needs its -shm file, which a reader creates when missing; in a
    folder it cannot write, and with no run writing (no -wal file), it is read as an
    immutable file instead."""
    connection = sqlite3.connect(read_only_uri(path), uri=True, check_same_thread=False)
    try:
        connection.execute("PRAGMA schema_version").fetchone()
    except sqlite3.OperationalError:
        connection.close()
        if Path(f"{path}-wal").exists():
            raise
        return sqlite3.connect(
            read_only_uri(path, immutable=True), uri=True, check_same_thread=False
        )
    return connection


def _read_only_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def driver_problem(url: URL, exc: BaseException) -> str:
    """One line for a database URL SQLAlchemy cannot load: an unknown kind of database, or
    a driver that is not installed (with the command that installs it)."""
    if isinstance(exc, NoSuchModuleError):
        return (
            f"unknown kind of database '{url.drivername}'; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        )
    if url.get_backend_name() == "postgresql":
        return (
            f"the PostgreSQL driver for {url.drivername} is not installed ({exc}); "
            f"install it with {POSTGRES_EXTRA}"
        )
    return f"the database driver for {url.drivername} is not installed ({exc})"


def sql_free(exc: SQLAlchemyError) -> str:
    """The database's own words for a failure, without the SQL statement and parameters
    SQLAlchemy appends (which can hold file names and say nothing to an operator)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return str(exc.orig)
    return str(exc).split("\n", 1)[0]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets `status` read while a run writes; NORMAL is durable at checkpoints under WAL.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _known_revisions() -> frozenset[str]:
    """Every revision this photosync's migrations know, read from the scripts by Alembic."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrations_config())
    return frozenset(script.revision for script in scripts.walk_revisions())


def migrations_config(engine: Engine | None = None) -> Config:
    """An Alembic config pointing at the migrations shipped inside the package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("reconciler._migrations")))
    if engine is not None:
        # Only the engine, never its URL: Alembic's config would interpolate a URL-encoded
        # password ("%40") and print it in clear in the traceback.
        config.attributes["engine"] = engine
    return config


class Ledger:
    """The database behind photosync, opened and (on request) migrated to head; with
    `read_only`, opened for reading only (see the module docstring)."""

    def __init__(self, database_url: str, *, read_only: bool = False) -> None:
        try:
            self.url = make_url(database_url)
        except (ArgumentError, ValueError) as exc:
            # Not echoed: a URL that does not parse may still hold a password.
            raise LedgerUnusable("the ledger's database_url is not a SQLAlchemy URL") from exc
        self.read_only = read_only
        path = sqlite_path(self.url)
        try:
            if read_only:
                self.engine = self._read_only_engine(path)
            else:
                if path is not None:
                    _prepare_sqlite_file(path)
                self.engine = create_engine(self.url)
        except (NoSuchModuleError, ImportError) as exc:
            raise LedgerUnusable(driver_problem(self.url, exc)) from exc
        except (OSError, SQLAlchemyError) as exc:
            raise LedgerError(f"cannot open the ledger {self.describe()}: {exc}") from exc
        if self.url.get_backend_name() == "sqlite" and not read_only:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _read_only_engine(self, path: Path | None) -> Engine:
        if path is not None:
            if not path.is_file():
                raise LedgerUnusable(f"no ledger at {path} (did you forget --config?)")
            engine = create_engine("sqlite://", creator=lambda: _read_only_sqlite(path))
            event.listen(engine, "connect", _read_only_pragmas)
            return engine
        if self.url.get_backend_name() == "postgresql":
            # Every transaction of this engine is READ ONLY: PostgreSQL refuses any write.
            return create_engine(
                self.url,
                poolclass=NullPool,
                connect_args={"options": "-c default_transaction_read_only=on"},
            )
        return create_engine(self.url, poolclass=NullPool)

    def require_usable(self, *, migrating: bool) -> None:
        """Raise LedgerUnusable unless this photosync can use the ledger: readable as a
        ledger, and at head (or, when `migrating`, at a revision it can bring to head)."""
        current = self.revision()
        if current == HEAD_REVISION:
            return
        problem = revision_problem(
            self.describe(), current, HEAD_REVISION, _known_revisions(), migrating=migrating
        )
        if problem is not None:
            raise LedgerUnusable(problem)

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def upgrade(self) -> None:
        """Bring the ledger to head. One query when it is there already, as it is on every
        run but the first after an upgrade of photosync: Alembic is imported only to
        migrate."""
        if self.revision() == HEAD_REVISION:
            return
        self.require_usable(migrating=True)  # never a ledger newer than us, nor a stranger
        from alembic import command

        try:
            command.upgrade(migrations_config(self.engine), "head")
        except (SQLAlchemyError, OSError) as exc:
            problem = sql_free(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
            raise LedgerError(f"cannot migrate the ledger {self.describe()}: {problem}") from exc

    def revision(self) -> str | None:
        """The ledger's Alembic revision (None: no photosync tables yet), read with one
        query rather than through Alembic. A file that is not a database at all is a
        LedgerUnusable, not SQLite's words and our SQL."""
        try:
            with self.engine.connect() as connection:
                if not inspect(connection).has_table(VERSION_TABLE):
                    return None
                query = text(f"SELECT version_num FROM {VERSION_TABLE}")
                revisions = sorted(connection.execute(query).scalars())
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlite_errorname", None) in _NOT_A_DATABASE:
                raise LedgerUnusable(
                    f"{self.describe()} is not a readable photosync ledger; restore a backup "
                    "or move it aside"
                ) from exc
            raise LedgerError(f"cannot read the ledger {self.describe()}: {sql_free(exc)}") from exc
        # Alembic keeps one row per head; photosync's migrations have one line of history.
        return ",".join(revisions) or None

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on error."""
        try:
            with self.sessions.begin() as session:
                yield session
        except SQLAlchemyError as exc:
            raise LedgerError(f"ledger {self.describe()}: {sql_free(exc)}") from exc

    @contextlib.contextmanager
    def run_lock(self) -> Iterator[None]:
        """Hold the one-run-at-a-time lock. The OS releases it when a process dies, so a
        killed run never blocks the next one. See docs/reliability.md."""
        holder = holder_identity()
        path = sqlite_path(self.url)
        if path is not None:
            with file_lock(lock_path(path), holder):
                yield
        elif self.url.get_backend_name() == "postgresql":
            with _pg_advisory_lock(self.engine, holder, self.describe()):
                yield
        else:
            yield  # in-memory SQLite: one process by construction

    def file_warnings(self) -> list[str]:
        """What the operator should fix about the SQLite file itself (permissions, extra
        names); nothing for other databases."""
        path = sqlite_path(self.url)
        return [] if path is None else sqlite_file_warnings(path)

    def dispose(self) -> None:
        self.engine.dispose()


@contextlib.contextmanager
def _pg_advisory_lock(engine: Engine, holder: dict[str, Any], ledger: str) -> Iterator[None]:
    try:
        connection = engine.connect()
    except SQLAlchemyError as exc:  # the server is down or refuses us: one line, exit 3
        raise LedgerError(f"cannot reach the ledger {ledger}: {sql_free(exc)}") from exc
    with connection:
        # application_name is how the other run learns who holds the lock.
        connection.execute(
            text("SELECT set_config('application_name', :name, false)"),
            {"name": describe_holder(holder)[:63]},
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
            raise RunLockedError(
                holder_name
                or "its pid, host and start time are not reported by PostgreSQL: "
                "look for an advisory lock in pg_locks",
                lock=f"on {ledger}",
            )
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
            connection.commit()
