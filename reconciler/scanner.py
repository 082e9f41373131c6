"""Observe the inbox: list, stat, and hash only what the stat cache cannot vouch for."""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
import time
from collections.abc import Callable, Mapping
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
    digest = hashlib.sha256()
    total = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            total += len(chunk)
    return digest.hexdigest(), total


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
    with os.scandir(inbox) as entries:
        for entry in entries:
            if not _is_candidate(entry, inbox):
                result.skipped.append(entry.name)
                continue
            path = Path(entry.path)
            try:
                raw = os.stat(path)
            except OSError:
                continue  # gone since listing: it will not be in this run
            if not stat_module.S_ISREG(raw.st_mode):
                continue
            current = stat_of(raw)
            if not is_settled(current, result.started_ns, settle_seconds):
                result.deferred.append(InboxFile(entry.name, path, current, None))
                continue
            cached = cache.get(str(path))
            if cached is not None and can_trust(cached, current):
                result.files.append(InboxFile(entry.name, path, current, cached.sha256))
                continue
            _hash_into(result, entry.name, path, current)
    return result


def _hash_into(result: ScanResult, name: str, path: Path, before: FileStat) -> None:
    try:
        sha256, size = hash_file(path)
        after = stat_of(os.stat(path))
    except OSError:
        return
    result.bytes_read += size
    observed = InboxFile(name, path, after, sha256)
    if after != before:
        # Written to while we read it: the hash describes no single version of the file.
        result.deferred.append(InboxFile(name, path, after, None))
        return
    result.files.append(observed)
    result.hashed.append(observed)
