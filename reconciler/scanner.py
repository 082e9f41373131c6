"""Observe the inbox: list, stat, and hash only what the stat cache cannot vouch for.

Links are never followed, here or anywhere in photosync: a link in the inbox could point at
any file the account can read. Every entry is either a candidate photo, set aside with a
reason that reaches the report (a link, a folder named like a photo, an entry that cannot
be statted), or junk that operating systems leave in folders (`is_junk`).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat as stat_module
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from reconciler import names
from reconciler.fingerprint import CachedFingerprint, can_trust, is_settled
from reconciler.model import IMAGE_SUFFIXES, FileStat, InboxFile, UnreadableFile

# Files that Windows drops into folders (compared casefolded); never photos. Names starting
# with "." (macOS .DS_Store and ._ files, editors' and sync tools' hidden files) and "~$"
# (Office lock files) are junk too. The README lists exactly these.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})

LINK_REASON = (
    "a symbolic link; photosync never follows links — copy the photo itself into the inbox"
)
FOLDER_REASON = "a folder, not a photo; put the photo file itself in the inbox"
SPECIAL_REASON = "a pipe, socket or device, not a photo; remove it from the inbox"

# No link followed (O_NOFOLLOW: a link in place of the file fails with ELOOP); no blocking
# on a pipe put in a photo's place (O_NONBLOCK is ignored for regular files); no descriptor
# leaked into child processes; no newline translation on Windows.
OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def is_junk(name: str) -> bool:
    """Hidden and operating-system files, ignored without a word (README, "Outcomes")."""
    return name.startswith((".", "~$")) or name.casefold() in _SYSTEM_FILES


@dataclass
class ScanResult:
    files: list[InboxFile] = field(default_factory=list)  # settled and hashed
    deferred: list[InboxFile] = field(default_factory=list)  # too new, or changed while read
    hashed: list[InboxFile] = field(default_factory=list)  # the subset of files we read
    # Entries that cannot be read (failed) or that photosync never reads by rule
    # (`ignored`: links, folders named like photos): each one is reported.
    unreadable: list[UnreadableFile] = field(default_factory=list)
    started_ns: int = 0


def stat_of(result: os.stat_result) -> FileStat:
    return FileStat(
        result.st_size, result.st_mtime_ns, result.st_ctime_ns, result.st_ino, result.st_dev
    )


def scan(
    inbox: Path,
    cache: Mapping[str, CachedFingerprint],
    *,
    settle_seconds: float,
    clock_ns: Callable[[], int] = time.time_ns,
) -> ScanResult:
    """Every entry directly in `inbox`; `cache` is keyed by the ledger's path (InboxFile.key).

    The whole folder is listed and statted before any file is read. Listing is cheap (a
    tenth of a second for 20,000 files), and hashing threads run at full speed only while
    no other thread runs Python: each needs the GIL back between reads and digest updates.
    """
    inbox = inbox.resolve()
    result = ScanResult(started_ns=clock_ns())
    unvouched: list[tuple[str, str, FileStat]] = []
    for name, path, current in _listing(inbox, result.unreadable):
        if not is_settled(current, result.started_ns, settle_seconds):
            result.deferred.append(InboxFile(name, Path(path), current, None))
            continue
        cached = cache.get(names.shown(path))
        if cached is not None and can_trust(cached, current):
            result.files.append(InboxFile(name, Path(path), current, cached.sha256))
        else:
            unvouched.append((name, path, current))
    digests = _hash_all([path for _, path, _ in unvouched])
    for (name, path, before), digest in zip(unvouched, digests, strict=True):
        if isinstance(digest, FileNotFoundError):
            continue  # gone since listing: it will not be in this run
        if isinstance(digest, _Replaced):
            result.deferred.append(InboxFile(name, Path(path), before, None))
            continue
        if isinstance(digest, OSError):
            file = InboxFile(name, Path(path), before, None)
            result.unreadable.append(UnreadableFile(file, digest.strerror or str(digest)))
            continue
        sha256, after = digest
        if after != before:
            # Written to while we read it: the hash describes no single version of the file.
            result.deferred.append(InboxFile(name, Path(path), after, None))
        else:
            file = InboxFile(name, Path(path), after, sha256)
            result.files.append(file)
            result.hashed.append(file)
    return result


def _listing(inbox: Path, set_aside: list[UnreadableFile]) -> Iterator[tuple[str, str, FileStat]]:
    """(shown name, real path, stat) of every regular file; plain strings, as 200,000
    DirEntry objects would hold far more memory than the scan needs. Entries that are not
    regular files, or cannot be statted, go to `set_aside` with the reason."""
    with os.scandir(inbox) as entries:
        for entry in entries:
            if is_junk(entry.name):
                continue
            shown = names.shown(entry.name)
            try:
                # os.lstat, not entry.stat(): on Windows the latter leaves inode and device
                # at 0, and the executor compares both with the file it opens.
                raw = os.lstat(entry.path)
            except FileNotFoundError:
                continue  # gone since listing: it will not be in this run
            except OSError as error:
                unknown = InboxFile(shown, Path(entry.path), FileStat(0, 0, 0, 0), None)
                set_aside.append(UnreadableFile(unknown, error.strerror or str(error)))
                continue
            current = stat_of(raw)
            if stat_module.S_ISREG(raw.st_mode):
                yield shown, entry.path, current
                continue
            reason = _set_aside_reason(entry.name, raw.st_mode)
            if reason is not None:
                entry_file = InboxFile(shown, Path(entry.path), current, None)
                set_aside.append(UnreadableFile(entry_file, reason, ignored=True))


def _set_aside_reason(name: str, mode: int) -> str | None:
    """Why an entry that is not a regular file is no photo; None for a plain sub-folder,
    which photosync never looks into (README, "Outcomes")."""
    if stat_module.S_ISLNK(mode):
        return LINK_REASON  # a link to a link, a loop or a dangling one alike
    if stat_module.S_ISDIR(mode):
        return FOLDER_REASON if Path(name).suffix.lower() in IMAGE_SUFFIXES else None
    return SPECIAL_REASON


# --- hashing

_BATCH = 256
# os.read allocates a fresh buffer per call; 256 KiB is a whole typical photo in one or two
# reads, and small enough to stay in a core's cache while it is hashed.
_READ_BYTES = 256 * 1024


class _Replaced(Exception):
    """The listed file was replaced by a link before it could be read."""


# (sha256, stat after reading), or why not.
_Digest = tuple[str, FileStat] | OSError | _Replaced


def _hash_all(paths: list[str]) -> list[_Digest]:
    """Hash `paths` in a few threads, in batches: a per-file hand-off would cost about as
    much as hashing a small photo. Results come back in the order of `paths`."""
    batches = [paths[start : start + _BATCH] for start in range(0, len(paths), _BATCH)]
    if len(batches) <= 1:
        return [_digest(path) for path in paths]
    with ThreadPoolExecutor(_workers(), "photosync-hash") as pool:
        return [digest for batch in pool.map(_hash_batch, batches) for digest in batch]


def _workers() -> int:
    # hashlib and reads release the GIL: a few threads use every core on a local disk and
    # hide latency on a network share; more would only contend for the GIL.
    return max(1, min(4, os.cpu_count() or 1))


def _hash_batch(paths: list[str]) -> list[_Digest]:
    return [_digest(path) for path in paths]


def _digest(path: str) -> _Digest:
    """Plain descriptors rather than file objects: this runs in threads that contend for
    the GIL between every read and update, so the less Python per file, the faster."""
    digest = hashlib.sha256()
    try:
        descriptor = os.open(path, OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:
            # Replaced by a link since it was listed: report what the listing saw changed,
            # which defers it; the next run reports the link.
            return _CHANGED
        return error
    try:
        while chunk := os.read(descriptor, _READ_BYTES):
            digest.update(chunk)
        after = stat_of(os.fstat(descriptor))
    except OSError as error:
        return error
    finally:
        os.close(descriptor)
    return digest.hexdigest(), after


_CHANGED = _Replaced()


# --- reading a file for upload


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read of a whole file: its bytes, their sha256, and fstat of what was read."""

    data: bytes
    sha256: str
    stat: FileStat  # of the open descriptor, before reading
    steady: bool  # False if the file was written to while it was read


def _steady(before: FileStat, after: FileStat) -> bool:
    return before == after and before.device == after.device


class NotAPlainFile(OSError):
    """The name no longer refers to a regular file (a pipe or folder took its place)."""


def read_snapshot(path: Path) -> Snapshot:
    """Read `path` once, without following a link, hashing as it reads. The stat is taken
    from the open descriptor before and after reading: the caller compares it, and the
    hash, with what it planned. Raises OSError (ELOOP when `path` is now a link)."""
    descriptor = os.open(path, OPEN_FLAGS)
    try:
        opened = os.fstat(descriptor)
        if not stat_module.S_ISREG(opened.st_mode):
            raise NotAPlainFile(errno.EINVAL, "not a regular file", str(path))
        digest = hashlib.sha256()
        chunks = []
        while chunk := os.read(descriptor, _READ_BYTES):
            digest.update(chunk)
            chunks.append(chunk)
        closed = stat_of(os.fstat(descriptor))
    finally:
        os.close(descriptor)
    before = stat_of(opened)
    return Snapshot(b"".join(chunks), digest.hexdigest(), before, _steady(before, closed))
