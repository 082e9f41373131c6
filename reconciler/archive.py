"""The archive: every photo photosync replaced and every photo it uploaded, kept by content.

Objects are named by the sha256 of their bytes (`objects/ab/abcd...`), so a photo kept
for several versions is stored once and an object can be checked against its name. Each
object is written atomically (temporary file, fsync, rename, fsync of the folder): a
killed run leaves either the whole object or none, never a torn one. The folders are
created mode 0700 and the files 0600: profile photos are personal data.

Which objects are still needed is the ledger's business (reconciler/undo.py keeps
`archive_keep` versions per user); this module only stores, reads and deletes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import platformdirs

from reconciler.ledger.url import plain_sqlite_file

_HEX = frozenset("0123456789abcdef")


class ArchiveError(Exception):
    """The archive cannot be written or read; the message names the path and the fix."""


def default_archive_dir(database_url: str) -> Path:
    """A folder `archive` beside a SQLite ledger file; the user data folder otherwise."""
    database = plain_sqlite_file(database_url)
    if database is None:
        from sqlalchemy.engine import make_url

        try:
            url = make_url(database_url)
        except Exception:  # a bad URL is reported by the ledger, not here
            url = None
        if url is not None and url.get_backend_name() == "sqlite":
            database = url.database
    if database and database != ":memory:":
        return Path(database).expanduser().parent / "archive"
    return Path(platformdirs.user_data_dir("photosync", appauthor=False)) / "archive"


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_object_name(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


class Archive:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, digest: str) -> Path:
        if not is_object_name(digest):
            raise ValueError(f"not an archive object name: {digest!r}")
        return self.root / "objects" / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store `data` (once) and return its name, the sha256 hex of the bytes."""
        digest = digest_of(data)
        target = self.path_of(digest)
        if target.is_file():
            return digest  # content-addressed: the same bytes are already there
        try:
            self._make_private_dirs(target.parent)
            fd, temporary = tempfile.mkstemp(prefix=".incoming-", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
            _fsync_dir(target.parent)
        except OSError as exc:
            raise ArchiveError(
                f"cannot write to the archive {self.root} ({exc.strerror or exc}); give the "
                "account that runs photosync write access, or point archive_dir elsewhere"
            ) from None
        return digest

    def get(self, digest: str) -> bytes:
        """The bytes of an object, checked against its name."""
        path = self.path_of(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArchiveError(
                f"archive object {digest[:12]} is not in {self.root}: it was pruned "
                "(archive_keep) or the archive was moved; restore it from a backup"
            ) from None
        except OSError as exc:
            raise ArchiveError(
                f"cannot read {path} ({exc.strerror or exc}); check its permissions"
            ) from None
        if digest_of(data) != digest:
            raise ArchiveError(f"archive object {path} is damaged; restore it from a backup")
        return data

    def has(self, digest: str) -> bool:
        return is_object_name(digest) and self.path_of(digest).is_file()

    def objects(self) -> Iterator[str]:
        """The name of every object stored."""
        base = self.root / "objects"
        if not base.is_dir():
            return
        for folder in sorted(base.iterdir()):
            if folder.is_dir():
                for entry in sorted(folder.iterdir()):
                    if is_object_name(entry.name):
                        yield entry.name

    def remove_all_but(self, keep: Iterable[str]) -> int:
        """Delete every object not in `keep`; returns how many were deleted."""
        wanted = set(keep)
        removed = 0
        for digest in list(self.objects()):
            if digest not in wanted:
                self.path_of(digest).unlink(missing_ok=True)
                removed += 1
        return removed

    def _make_private_dirs(self, folder: Path) -> None:
        missing = []
        current = folder
        while not current.exists():
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
