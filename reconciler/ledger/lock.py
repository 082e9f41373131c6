"""The run lock of a SQLite ledger: a lock file beside the database, held by the OS for
as long as the run's process lives, with the holder's identity written inside so a refused
run can say who holds it (docs/reliability.md). Only the standard library and filelock:
an idle run takes this lock without loading SQLAlchemy (reconciler/idle.py)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import filelock

from reconciler.errors import LedgerError, RunLockedError


def holder_identity() -> dict[str, Any]:
    """Who takes the lock: this host and process, and since when."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def lock_path(database: Path) -> Path:
    """The run lock of a SQLite ledger, beside the file the path resolves to: every name
    that reaches that file (a symlinked file or folder, a relative path, `..`) takes the
    same lock. Hard links are other names for the file, not paths to it: see
    docs/reliability.md."""
    real = Path(os.path.realpath(database))
    return real.with_name(real.name + ".lock")


# Read or write by group or others; an execute bit alone gives no access to a data file.
_SHARED_ACCESS = stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH


def ledger_file_warnings(path: Path, mode: int, links: int) -> list[str]:
    """One line per problem with a ledger file of this mode and link count."""
    warnings = []
    if mode & _SHARED_ACCESS:
        warnings.append(
            f"the ledger {path} can be read or written by other accounts "
            f"(mode {stat.S_IMODE(mode):04o}) and holds the tenant's user directory: "
            f"run `chmod 600 {path}`"
        )
    if links > 1:
        warnings.append(
            f"the ledger {path} has {links} hard links: a run that opens it by another of "
            "those names takes another run lock and another journal; remove the extra names "
            "and use a symlink instead"
        )
    return warnings


def sqlite_file_warnings(database: Path) -> list[str]:
    """What the operator should fix about a SQLite ledger file (permissions, extra names);
    nothing where the OS has no such notion, or before the file exists (it is created 0600
    when first opened)."""
    if os.name != "posix":
        return []
    real = Path(os.path.realpath(database))
    try:
        info = real.stat()
    except OSError:
        return []
    return ledger_file_warnings(real, info.st_mode, info.st_nlink)


def describe_holder(info: dict[str, Any]) -> str:
    # Host last: PostgreSQL keeps only 63 characters of application_name.
    return f"pid {info['pid']} since {info['since']} on {info['host']}"


# The holder's identity is written into the lock file after this many bytes: Windows locks
# byte 0 of the file (LockFileEx) and no other process may read a locked byte.
_IDENTITY_OFFSET = 1
# How long a refused run waits for the holder to write its identity, which it does right
# after it takes the lock: the gap is microseconds, unless the holder is frozen mid-way.
_IDENTITY_WAIT_S = 1.0


@contextlib.contextmanager
def file_lock(path: Path, holder: dict[str, Any]) -> Iterator[None]:
    # Our own descriptor, never truncated on open: the holder's identity lives in the file
    # and a process that is refused the lock must not wipe it.
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as exc:
        raise LedgerError(
            f"cannot open the run lock {path}: {exc.strerror}; "
            f"let this account create and write files in {path.parent}"
        ) from None
    try:
        _make_private(descriptor)
        if not _try_lock(descriptor, path):
            raise RunLockedError(_holder_of(descriptor), lock=str(path))
        try:
            try:
                _write_identity(descriptor, holder)
            except OSError as exc:
                raise LedgerError(
                    f"cannot write to the run lock {path}: {exc.strerror}; "
                    f"free some space on, or let this account write to, {path.parent}"
                ) from None
            yield
        finally:
            # Emptied, never deleted: unlinking a lock file lets a process that opened the
            # old inode and a process that creates a new one both "hold" the lock.
            with contextlib.suppress(OSError):
                os.ftruncate(descriptor, 0)
            with contextlib.suppress(OSError):  # closing the descriptor releases it anyway
                filelock.unlock_descriptor(descriptor)
    finally:
        os.close(descriptor)


def _try_lock(descriptor: int, path: Path) -> bool:
    try:
        return filelock.lock_descriptor(descriptor, blocking=False)
    except OSError as exc:  # e.g. a network file system without locks (ENOLCK)
        raise LedgerError(
            f"cannot lock the run lock {path}: {exc.strerror}; keep a SQLite ledger on a "
            "local disk (see docs/reliability.md)"
        ) from None


def _make_private(descriptor: int) -> None:
    # A lock file made by an older photosync (or under a loose umask) is tightened too.
    if os.name == "posix":
        with contextlib.suppress(OSError):  # someone else's file: theirs to fix
            os.fchmod(descriptor, 0o600)


def _write_identity(descriptor: int, holder: dict[str, Any]) -> None:
    payload = b"\n" * _IDENTITY_OFFSET + json.dumps(holder).encode("utf-8")
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, payload)
    os.ftruncate(descriptor, len(payload))


def _read_identity(descriptor: int) -> dict[str, Any] | None:
    os.lseek(descriptor, _IDENTITY_OFFSET, os.SEEK_SET)
    try:
        info = json.loads(os.read(descriptor, 4096).decode("utf-8"))
    except (OSError, ValueError):
        return None  # empty, or caught mid-write
    if not isinstance(info, dict) or not {"pid", "since", "host"} <= info.keys():
        return None
    return info


def _holder_of(descriptor: int) -> str:
    """Who holds the lock, as the holder wrote it. Read again briefly while the identity is
    missing or is a dead process's (a crashed run's, not yet overwritten by the new holder)."""
    deadline = time.monotonic() + _IDENTITY_WAIT_S
    while True:
        info = _read_identity(descriptor)
        if info is not None and not _is_dead_local_process(info):
            return describe_holder(info)
        if time.monotonic() >= deadline:
            return "its pid, host and start time are not recorded in the lock file"
        time.sleep(0.02)


def _is_dead_local_process(info: dict[str, Any]) -> bool:
    # Only on this host, and only where signal 0 is a probe: on Windows os.kill terminates.
    if os.name != "posix" or info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, OverflowError):
        return False  # alive under another account, or not a pid we can judge
    return False
