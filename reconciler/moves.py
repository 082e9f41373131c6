"""Moving a file out of the inbox without ever losing one."""

from __future__ import annotations

import errno
import os
import shutil
from datetime import datetime
from pathlib import Path


def _aside_name(existing: Path) -> Path:
    """A free name for an older file: 'Jane Doe.jpg' -> 'Jane Doe.2026-11-26_211500.jpg'."""
    stamp = datetime.fromtimestamp(existing.stat().st_mtime).strftime("%Y-%m-%d_%H%M%S")
    candidate = existing.with_name(f"{existing.stem}.{stamp}{existing.suffix}")
    counter = 2
    while candidate.exists():
        candidate = existing.with_name(f"{existing.stem}.{stamp}-{counter}{existing.suffix}")
        counter += 1
    return candidate


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return  # Windows cannot open a directory for fsync; NTFS journals the rename.
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _copy_across_devices(source: Path, target: Path) -> None:
    # rename(2) cannot cross file systems: copy to a temporary name, make it durable,
    # rename it into place, and only then remove the original.
    temporary = target.with_name(f".{target.name}.photosync-partial")
    shutil.copy2(source, temporary)
    with temporary.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    _fsync_dir(target.parent)
    source.unlink()


def move_into(source: Path, folder: Path) -> Path:
    """Move `source` into `folder` under its own name and return where it went. An older
    file of that name already there is first renamed aside, never overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    if target.exists():
        os.replace(target, _aside_name(target))
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across_devices(source, target)
    return target
