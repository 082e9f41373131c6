"""Observe the inbox: list, stat, and hash only what the stat cache cannot vouch for."""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.fingerprint import CachedFingerprint, can_trust, is_settled
from reconciler.model import FileStat, InboxFile

# Files that operating systems drop into folders; never photos.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})
_CHUNK = 1024 * 1024


@dataclass
class ScanResult:
    files: list[InboxFile] = field(default_factory=list)  # settled and hashed
    deferred: list[InboxFile] = field(default_factory=list)  # too new, or changed while read
    hashed: list[InboxFile] = field(default_factory=list)  # the subset of files we read
    skipped: list[str] = field(default_factory=list)  # names not considered, for debugging
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


def hash_file(path: Path) -> tuple[str, int]:
    digest, size, _after = _hash_and_restat(path)
    return digest, size


def _hash_and_restat(path: Path) -> tuple[str, int, FileStat]:
    """The file's sha256 and size, and its stat once read (fstat: the file we actually read)."""
    digest = hashlib.sha256()
    total = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            total += len(chunk)
        after = stat_of(os.fstat(handle.fileno()))
    return digest.hexdigest(), total, after


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
    """Every candidate file directly in `inbox`; `cache` is keyed by the file's path string."""
    inbox = inbox.resolve()
    result = ScanResult(started_ns=clock_ns())
    to_hash: list[tuple[str, Path, FileStat]] = []
    with os.scandir(inbox) as entries:
        for entry in entries:
            if not _is_candidate(entry, inbox):
                result.skipped.append(entry.name)
                continue
            try:
                raw = os.stat(entry.path)
            except OSError:
                continue  # gone since listing: it will not be in this run
            if not stat_module.S_ISREG(raw.st_mode):
                continue
            current = stat_of(raw)
            path = Path(entry.path)
            if not is_settled(current, result.started_ns, settle_seconds):
                result.deferred.append(InboxFile(entry.name, path, current, None))
                continue
            cached = cache.get(entry.path)
            if cached is not None and can_trust(cached, current):
                result.files.append(InboxFile(entry.name, path, current, cached.sha256))
                continue
            to_hash.append((entry.name, path, current))
    _hash_all(result, to_hash)
    return result


def _hash_all(result: ScanResult, to_hash: list[tuple[str, Path, FileStat]]) -> None:
    workers = min(_workers(), len(to_hash))
    if workers <= 1:
        hashed = [_hash_one(item) for item in to_hash]
    else:
        # One task per slice, not per file: a thread hand-off costs about as much as hashing
        # a small photo.
        slices = [to_hash[i::workers] for i in range(workers)]
        with ThreadPoolExecutor(workers, "photosync-hash") as pool:
            results = list(pool.map(lambda part: [_hash_one(item) for item in part], slices))
        hashed = [results[i % workers][i // workers] for i in range(len(to_hash))]
    for outcome in hashed:
        if outcome is None:
            continue
        observed, size, stable = outcome
        result.bytes_read += size
        if stable:
            result.files.append(observed)
            result.hashed.append(observed)
        else:
            # Written to while we read it: the hash describes no single version of the file.
            result.deferred.append(observed)


def _hash_one(item: tuple[str, Path, FileStat]) -> tuple[InboxFile, int, bool] | None:
    name, path, before = item
    try:
        sha256, size, after = _hash_and_restat(path)
    except OSError:
        return None
    if after != before:
        return InboxFile(name, path, after, None), size, False
    return InboxFile(name, path, after, sha256), size, True
