"""Observe the inbox: list, stat, and hash only what the stat cache cannot vouch for."""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.fingerprint import CachedFingerprint, can_trust, is_settled
from reconciler.model import FileStat, InboxFile, UnreadableFile

# Files that operating systems drop into folders; never photos.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})


@dataclass
class ScanResult:
    files: list[InboxFile] = field(default_factory=list)  # settled and hashed
    deferred: list[InboxFile] = field(default_factory=list)  # too new, or changed while read
    hashed: list[InboxFile] = field(default_factory=list)  # the subset of files we read
    unreadable: list[UnreadableFile] = field(default_factory=list)
    bytes_read: int = 0
    started_ns: int = 0


def stat_of(result: os.stat_result) -> FileStat:
    return FileStat(result.st_size, result.st_mtime_ns, result.st_ctime_ns, result.st_ino)


def scan(
    inbox: Path,
    cache: Mapping[str, CachedFingerprint],
    *,
    settle_seconds: float,
    clock_ns: Callable[[], int] = time.time_ns,
) -> ScanResult:
    """Every candidate file directly in `inbox`; `cache` is keyed by the file's path string.

    The whole folder is listed and statted before any file is read. Listing is cheap (a
    tenth of a second for 20,000 files), and hashing threads run at full speed only while
    no other thread runs Python: each needs the GIL back between reads and digest updates.
    """
    inbox = inbox.resolve()
    result = ScanResult(started_ns=clock_ns())
    unvouched: list[tuple[str, str, FileStat]] = []
    for name, path, current in _listing(inbox):
        if not is_settled(current, result.started_ns, settle_seconds):
            result.deferred.append(InboxFile(name, Path(path), current, None))
            continue
        cached = cache.get(path)
        if cached is not None and can_trust(cached, current):
            result.files.append(InboxFile(name, Path(path), current, cached.sha256))
        else:
            unvouched.append((name, path, current))
    digests = _hash_all([path for _, path, _ in unvouched])
    for (name, path, before), digest in zip(unvouched, digests, strict=True):
        if isinstance(digest, FileNotFoundError):
            continue  # gone since listing: it will not be in this run
        if isinstance(digest, OSError):
            file = InboxFile(name, Path(path), before, None)
            result.unreadable.append(UnreadableFile(file, digest.strerror or str(digest)))
            continue
        sha256, after = digest
        result.bytes_read += after.size
        if after != before:
            # Written to while we read it: the hash describes no single version of the file.
            result.deferred.append(InboxFile(name, Path(path), after, None))
        else:
            file = InboxFile(name, Path(path), after, sha256)
            result.files.append(file)
            result.hashed.append(file)
    return result


def _listing(inbox: Path) -> Iterator[tuple[str, str, FileStat]]:
    """(name, path, stat) of every candidate; plain strings, as 200,000 DirEntry objects
    would hold far more memory than the scan needs."""
    with os.scandir(inbox) as entries:
        for entry in entries:
            if not _is_candidate(entry, inbox):
                continue
            try:
                raw = os.stat(entry.path)
            except OSError:
                continue  # gone since listing: it will not be in this run
            if stat_module.S_ISREG(raw.st_mode):
                yield entry.name, entry.path, stat_of(raw)


def _is_candidate(entry: os.DirEntry[str], inbox: Path) -> bool:
    name = entry.name
    if name.startswith(".") or name.lower() in _SYSTEM_FILES:
        return False
    if entry.is_symlink():
        # A link may point anywhere; only follow it when it stays inside the inbox.
        target = Path(entry.path).resolve()
        return target.parent == inbox and target.is_file()
    return entry.is_file(follow_symlinks=False)


# --- hashing

_BATCH = 256
# os.read allocates a fresh buffer per call; 256 KiB is a whole typical photo in one or two
# reads, and small enough to stay in a core's cache while it is hashed.
_READ_BYTES = 256 * 1024

_Digest = tuple[str, FileStat] | OSError  # (sha256, stat after reading), or why not


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
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError as error:
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
