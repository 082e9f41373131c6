"""Observe the inbox: list, stat, and hash only what the stat cache cannot vouch for."""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.fingerprint import CachedFingerprint, can_trust, is_settled
from reconciler.model import FileStat, InboxFile

# Files that operating systems drop into folders; never photos.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})


@dataclass
class ScanResult:
    files: list[InboxFile] = field(default_factory=list)  # settled and hashed
    deferred: list[InboxFile] = field(default_factory=list)  # too new, or changed while read
    hashed: list[InboxFile] = field(default_factory=list)  # the subset of files we read
    bytes_read: int = 0
    started_ns: int = 0


def stat_of(result: os.stat_result) -> FileStat:
    return FileStat(result.st_size, result.st_mtime_ns, result.st_ctime_ns, result.st_ino)


def _is_candidate(entry: os.DirEntry[str], inbox: Path) -> bool:
    name = entry.name
    if name.startswith(".") or name.lower() in _SYSTEM_FILES:
        return False
    if entry.is_symlink():
        # A link may point anywhere; only follow it when it stays inside the inbox.
        target = Path(entry.path).resolve()
        return target.parent == inbox and target.is_file()
    return entry.is_file(follow_symlinks=False)


def _workers() -> int:
    # hashlib and file reads release the GIL: a few threads use every core on a local disk
    # and hide latency on a network share; more would only contend.
    return max(1, min(4, os.cpu_count() or 1))


def scan(
    inbox: Path,
    cache: Mapping[str, CachedFingerprint],
    *,
    settle_seconds: float,
    clock_ns: Callable[[], int] = time.time_ns,
) -> ScanResult:
    """Every candidate file directly in `inbox`; `cache` is keyed by the file's path string.

    Files the cache cannot vouch for are hashed by a few threads while the listing goes on
    (hashlib and reads release the GIL), in batches: a per-file hand-off would cost about as
    much as hashing a small photo.
    """
    inbox = inbox.resolve()
    result = ScanResult(started_ns=clock_ns())
    batches: list[Future[list[_Hashed | None]]] = []
    batch: list[tuple[str, str, FileStat]] = []
    with ThreadPoolExecutor(_workers(), "photosync-hash") as pool, os.scandir(inbox) as entries:
        for entry in entries:
            if not _is_candidate(entry, inbox):
                continue
            try:
                raw = os.stat(entry.path)
            except OSError:
                continue  # gone since listing: it will not be in this run
            if not stat_module.S_ISREG(raw.st_mode):
                continue
            current = stat_of(raw)
            if not is_settled(current, result.started_ns, settle_seconds):
                result.deferred.append(InboxFile(entry.name, Path(entry.path), current, None))
                continue
            cached = cache.get(entry.path)
            if cached is not None and can_trust(cached, current):
                file = InboxFile(entry.name, Path(entry.path), current, cached.sha256)
                result.files.append(file)
                continue
            batch.append((entry.name, entry.path, current))
            if len(batch) == _BATCH:
                batches.append(pool.submit(_hash_batch, batch))
                batch = []
        if batch:
            batches.append(pool.submit(_hash_batch, batch))
        for future in batches:
            for hashed in future.result():
                if hashed is not None:
                    _add_hashed(result, hashed)
    return result


_BATCH = 256


@dataclass(frozen=True, slots=True)
class _Hashed:
    file: InboxFile  # sha256 None when the file changed while it was read
    size: int


def _hash_batch(batch: list[tuple[str, str, FileStat]]) -> list[_Hashed | None]:
    return [_hash_one(name, path, before) for name, path, before in batch]


_buffers = threading.local()
_BUFFER_BYTES = 1024 * 1024


def _read_buffer() -> memoryview:
    # One buffer per hashing thread, reused for every file: allocating (and zeroing) a
    # buffer per file costs more than hashing a small photo.
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = memoryview(bytearray(_BUFFER_BYTES))
        _buffers.view = view
    return view


def _hash_one(name: str, path: str, before: FileStat) -> _Hashed | None:
    view = _read_buffer()
    digest = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as handle:
            while count := handle.readinto(view):
                digest.update(view[:count])
            after = stat_of(os.fstat(handle.fileno()))
    except OSError:
        return None
    sha256 = digest.hexdigest() if after == before else None
    return _Hashed(InboxFile(name, Path(path), after, sha256), after.size)


def _add_hashed(result: ScanResult, hashed: _Hashed) -> None:
    result.bytes_read += hashed.size
    if hashed.file.sha256 is None:
        # Written to while we read it: the hash describes no single version of the file.
        result.deferred.append(hashed.file)
    else:
        result.files.append(hashed.file)
        result.hashed.append(hashed.file)
