"""Moving a file out of the inbox without ever losing one, or keeping one twice.

Within one file system a move is one rename(2). Across file systems (completed_dir on
another disk or share) it is a sequence of steps, each of which a kill can interrupt:
copy to a temporary name in the destination, fsync it, rename it into place, fsync the
folder, unlink the source. A later run recognises what an interrupted one left: a
temporary file is removed, and a file already at the target with the source's sha256 is
the earlier copy, so only the source is removed (docs/reliability.md, "Moves across file
systems").
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from reconciler import names
from reconciler.scanner import OPEN_FLAGS


# Called after each step of a move across file systems with the step's name ("copied",
# "renamed", "synced", "unlinked"). Does nothing; the crash tests set it, in a child
# process, to kill that process at one exact step.
def _no_hook(_step: str) -> None:
    return None


after_step: Callable[[str], None] = _no_hook

PARTIAL_SUFFIX = ".photosync-partial"
_CHUNK_BYTES = 1024 * 1024


class SourceChanged(OSError):
    """The source's bytes are not the ones the run read: it was changed under us."""


def partial_name(name: str) -> str:
    """The temporary name a copy into the destination folder is written under: hidden,
    derived from the target's name (so a later run finds it), and short enough to exist."""
    return names.fit_name(f".{name}", PARTIAL_SUFFIX)


def _aside_name(existing: Path) -> Path:
    """A free name for an older file: 'Jane Doe.jpg' -> 'Jane Doe.2026-11-26_211500.jpg',
    with the stem shortened when needed so that the name fits in 255 bytes."""
    stamp = datetime.fromtimestamp(existing.lstat().st_mtime).strftime("%Y-%m-%d_%H%M%S")
    stem, suffix = existing.stem, existing.suffix
    candidate = existing.with_name(names.fit_name(stem, f".{stamp}{suffix}"))
    counter = 2
    while os.path.lexists(candidate):
        candidate = existing.with_name(names.fit_name(stem, f".{stamp}-{counter}{suffix}"))
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


def _sha256_of(path: Path) -> str | None:
    """The sha256 of a regular file at `path` (never through a link); None if there is
    none or it cannot be read."""
    try:
        descriptor = os.open(path, OPEN_FLAGS)
    except OSError:
        return None
    digest = hashlib.sha256()
    try:
        while chunk := os.read(descriptor, _CHUNK_BYTES):
            digest.update(chunk)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return digest.hexdigest()


def _same_entry(one: Path, other: Path) -> bool:
    try:
        return os.path.samestat(os.lstat(one), os.lstat(other))
    except OSError:
        return False


def _remove_leftover(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _copy_durably(source: Path, temporary: Path, sha256: str | None) -> None:
    """Copy `source` to `temporary` and fsync it; if `sha256` is given, the bytes copied
    must have it, else the copy is removed and SourceChanged raised."""
    digest = hashlib.sha256()
    reader = os.open(source, OPEN_FLAGS)
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        writer = os.open(temporary, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            while chunk := os.read(reader, _CHUNK_BYTES):
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(writer, view) :]
            os.fsync(writer)
        finally:
            os.close(writer)
    except BaseException:
        _remove_leftover(temporary)
        raise
    finally:
        os.close(reader)
    if sha256 is not None and digest.hexdigest() != sha256:
        _remove_leftover(temporary)
        raise SourceChanged(errno.EAGAIN, "changed while being processed", str(source))
    shutil.copystat(source, temporary, follow_symlinks=False)


def _copy_across_devices(source: Path, target: Path, sha256: str | None) -> None:
    # rename(2) cannot cross file systems: copy to a temporary name, make it durable,
    # rename it into place, and only then remove the original.
    temporary = target.with_name(partial_name(target.name))
    _copy_durably(source, temporary, sha256)
    after_step("copied")
    os.replace(temporary, target)
    after_step("renamed")
    _fsync_dir(target.parent)
    after_step("synced")
    _unlink_source(source, copy=target)
    after_step("unlinked")


def _unlink_source(source: Path, *, copy: Path | None) -> None:
    """Remove the original. If it cannot be removed, `copy` (the one this move made) is
    removed again, so that a folder nobody may delete from does not gain a copy per run."""
    try:
        source.unlink()
    except FileNotFoundError:
        return  # removed by someone else meanwhile: the copy is the file now
    except OSError as exc:
        if copy is not None:
            copy.unlink()
            _fsync_dir(copy.parent)
        raise OSError(
            exc.errno,
            f"the original cannot be removed from the inbox ({exc.strerror}), so the copy "
            "was not kept; give the account that runs photosync delete rights on the inbox",
        ) from exc


def move_into(source: Path, folder: Path, *, sha256: str | None = None) -> Path:
    """Move `source` into `folder` under its own name and return where it went.

    `sha256` is the hash of the source's bytes as this run read them. A file already at the
    target with that hash is the same photo (the copy of a move a kill interrupted, or the
    same bytes filed before): the source is removed and nothing is stored twice. Any other
    file of that name is first renamed aside, never overwritten; if the move then fails,
    it is put back. Raises OSError (SourceChanged if the bytes differ from `sha256`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    _remove_leftover(target.with_name(partial_name(target.name)))
    aside: Path | None = None
    if os.path.lexists(target):
        if _same_entry(source, target):
            return target  # the folder is the source's own (or a link to it): nothing to move
        if sha256 is not None and _sha256_of(target) == sha256:
            _unlink_source(source, copy=None)
            return target
        aside = _aside_name(target)
        os.replace(target, aside)
    try:
        try:
            os.replace(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_across_devices(source, target, sha256)
    except OSError:
        if aside is not None and not os.path.lexists(target):
            os.replace(aside, target)  # the older file goes back to its own name
        raise
    return target
