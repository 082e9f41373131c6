"""Apply a plan: prepare images, upload, move files, record every step. Never re-decides.

Crash-safe order for an upload (docs/reliability.md, "Crash campaign"): record the intent,
upload, record success, move the file, record the move. A crash between any two steps leaves
a ledger the next run finishes from: an intent without a result is simply uploaded again (PUT
is idempotent), and a recorded success whose file is still in the inbox is planned as
"unchanged" and moved.

With the archive on (reconciler/archive.py), the photo a write replaces is read and stored
before the intent, and the intent names it and the bytes sent; the success is recorded as
soon as Graph answers the write, and one read of the photo's ETag is added to it after. A run
killed before Graph's answer arrives leaves an intent without a result: the next run uploads
again and keeps the first intent's "before" (repository.carried_before), never its own photo.
A run killed between the answer and the ETag read leaves a success without an ETag, which
rollback and verify leave alone; it never costs a second upload. The reads are
not under Graph's photo write quota, so they run in pools of their own beside the writes:
the "before" reads are sent ahead for every planned upload, the ETag reads after each write
without holding up the next one (docs/reliability.md, "Keep what was there").

What is uploaded is what was read: each file is opened without following links, read once
and hashed as it is read, and the upload is prepared from those same bytes. If the open
file is not the one the scan saw (device, inode, size, mtime) or its bytes do not have the
planned hash, nothing is uploaded and the file is deferred. Before a file is moved, its
name must still refer to that same, unchanged file; otherwise whatever is there now stays
for the next run (docs/reliability.md, "Read once, upload what was read").
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import Session

from reconciler import names
from reconciler.archive import Archive, ArchiveError
from reconciler.errors import (
    AuthError,
    GraphError,
    GraphUnreachableError,
    ImageError,
    PermanentGraphError,
)
from reconciler.ledger import repository
from reconciler.ledger.db import Ledger
from reconciler.ledger.records import NO_PHOTO
from reconciler.model import (
    Action,
    ActionKind,
    FileLocation,
    FileResult,
    FileStat,
    Outcome,
    Plan,
    PreparedImage,
    UploadReceipt,
)
from reconciler.moves import SourceChanged, move_into
from reconciler.scanner import NotAPlainFile, Snapshot, read_snapshot, stat_of

CHANGED = "changed while being processed; the next run looks at it again"
NOT_KEPT = (
    "not uploaded, as the current photo could not be read to keep it in the archive "
    "(archive = false uploads without keeping it)"
)
# The name no longer leads to the file the scan saw: gone, renamed, or replaced by a link
# (ELOOP under O_NOFOLLOW) or by something that is not a file.
_REPLACED_ERRNOS = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR})

log = logging.getLogger("reconciler.executor")


class Uploader(Protocol):
    def upload_photo(self, user_id: str, data: bytes, content_type: str) -> UploadReceipt: ...


class PhotoReader(Protocol):
    """What the archive needs from Graph besides the upload."""

    def get_photo(self, user_id: str) -> bytes | None: ...

    def photo_etag(self, user_id: str) -> str | None: ...


@dataclass(frozen=True)
class ApplyOptions:
    completed_dir: Path
    failed_dir: Path
    move_completed: bool
    concurrency: int
    # The upload for a file whose content is these bytes (images.prepare_bytes).
    prepare: Callable[[bytes], PreparedImage]
    # Where the replaced and the uploaded photos are kept; None: the archive is off.
    archive: Archive | None = None


class Executor:
    def __init__(
        self,
        ledger: Ledger,
        run_id: int,
        file_ids: Mapping[str, int],
        options: ApplyOptions,
        uploader: Uploader | None,
        on_file_done: Callable[[FileResult], None] = lambda _result: None,
    ) -> None:
        self.ledger = ledger
        self.run_id = run_id
        self.file_ids = file_ids
        self.options = options
        self.uploader = uploader
        self.on_file_done = on_file_done
        # SQLite allows one writer; serialising our own writes avoids busy waits between them.
        self._write_lock = threading.Lock()
        self._abort: BaseException | None = None
        # file key -> the archived "before" photo of a planned upload, read ahead.
        self._befores: dict[str, Future[str | GraphError | ArchiveError]] = {}
        self._after_reads: ThreadPoolExecutor | None = None

    def apply(self, plan: Plan) -> list[FileResult]:
        """Run every action; raises AuthError/GraphUnreachableError after recording what was
        done if the run had to stop part-way."""
        results = self._record_leaves(plan.of_kind(ActionKind.LEAVE))
        if not self.options.move_completed:
            results += self._record_leaves(plan.of_kind(ActionKind.MOVE_UNCHANGED))
        else:
            results += [self._move_unchanged(a) for a in plan.of_kind(ActionKind.MOVE_UNCHANGED)]
        results += [self._reject(a, a.reason) for a in plan.of_kind(ActionKind.REJECT)]
        uploads = plan.of_kind(ActionKind.UPLOAD)
        if uploads:
            if self.uploader is None:
                raise ValueError("a plan with uploads needs an uploader")
            with ExitStack() as pools:
                if self.options.archive is not None:
                    self._start_archive_reads(uploads, pools)
                pool = pools.enter_context(
                    ThreadPoolExecutor(self.options.concurrency, "photosync-upload")
                )
                done = list(pool.map(self._upload_safely, uploads))
                for result in done:
                    if isinstance(result, Future):
                        result = result.result()
                    if result is not None:
                        results.append(result)
        if self._abort is not None:
            raise self._abort
        return results

    # --- the archive's reads, beside the writes

    def _start_archive_reads(self, uploads: list[Action], pools: ExitStack) -> None:
        concurrency = self.options.concurrency
        before = pools.enter_context(ThreadPoolExecutor(concurrency, "photosync-before"))
        self._after_reads = pools.enter_context(ThreadPoolExecutor(concurrency, "photosync-etag"))
        for action in uploads:
            assert action.user is not None
            self._befores[action.file.key] = before.submit(self._archive_current, action.user.id)

    def _archive_current(self, user_id: str) -> str | GraphError | ArchiveError:
        """Read the user's photo now and keep it; its archive name, or "none"."""
        assert self.options.archive is not None
        reader = self._reader()
        if self._abort is not None:
            return GraphError("the run stopped before this photo was read")
        try:
            data = reader.get_photo(user_id)
            return NO_PHOTO if data is None else self.options.archive.put(data)
        except (GraphError, ArchiveError) as exc:
            if isinstance(exc, GraphUnreachableError):
                raise
            return exc

    def _reader(self) -> PhotoReader:
        reader = self.uploader
        assert reader is not None and hasattr(reader, "get_photo")
        return reader  # type: ignore[return-value]

    def _keep_what_was_there(
        self, action: Action, prepared: PreparedImage
    ) -> tuple[str, str] | FileResult | GraphError:
        """(archive name of the replaced photo, of the bytes to send); or, when the photo
        cannot be kept, the file's result (archive not writable) or Graph's error on the
        read (recorded like a failed upload): then nothing is written."""
        assert action.user is not None and self.options.archive is not None
        before = self._befores[action.file.key].result()
        try:
            if isinstance(before, GraphError | ArchiveError):
                raise before
            with self._write_lock, self.ledger.session() as session:
                carried = repository.carried_before(session, action.user.id)
            return carried or before, self.options.archive.put(prepared.data)
        except (AuthError, GraphUnreachableError):
            raise
        except ArchiveError as exc:
            reason = f"not uploaded: {exc}"
        except GraphError as exc:
            return exc
        user = action.user
        return self._finish(
            action, FileResult(action.file.name, Outcome.FAILED, reason, user.id, user.label)
        )

    # --- each kind of action

    def _record_leaves(self, actions: list[Action]) -> list[FileResult]:
        results = [
            FileResult(
                a.file.name,
                a.outcome,
                a.reason,
                a.user.id if a.user else None,
                a.user.label if a.user else None,
            )
            for a in actions
        ]
        ids = [self.file_ids[a.file.key] for a in actions]
        with self._write_lock, self.ledger.session() as session:
            repository.preload_files(session, ids)
            self._record(session, actions, results)
        for result in results:
            self.on_file_done(result)
        return results

    def _move_unchanged(self, action: Action) -> FileResult:
        assert action.user is not None
        return self._move_and_record(action, Outcome.UNCHANGED, action.reason)

    def _reject(self, action: Action, reason: str) -> FileResult:
        if not _still_as_scanned(action.file.path, action.file.stat):
            return self._changed(action)
        try:
            destination = move_into(
                action.file.path, self.options.failed_dir, sha256=action.file.sha256
            )
        except SourceChanged:
            return self._changed(action)
        except OSError as exc:
            return self._finish(
                action,
                FileResult(
                    action.file.name,
                    Outcome.INVALID,
                    f"{reason}; and it could not be moved to failed_dir: {_os_words(exc)}",
                ),
            )
        result = FileResult(action.file.name, Outcome.INVALID, reason, destination=destination)
        return self._finish(action, result, location=FileLocation.FAILED)

    def _changed(self, action: Action) -> FileResult:
        return self._finish(action, FileResult(action.file.name, Outcome.DEFERRED, CHANGED))

    def _read(self, action: Action) -> Snapshot | FileResult:
        """The file's bytes, read once, if it is still the file the plan is about; else
        the file's result (deferred when it changed, failed when it cannot be read)."""
        try:
            snapshot = read_snapshot(action.file.path)
        except NotAPlainFile:
            return self._changed(action)
        except OSError as exc:
            if exc.errno in _REPLACED_ERRNOS:
                return self._changed(action)
            reason = (
                f"cannot be read ({_os_words(exc)}); give the account that runs photosync "
                "read access"
            )
            return self._finish(action, FileResult(action.file.name, Outcome.FAILED, reason))
        if not is_as_planned(snapshot, action.file.stat, action.file.sha256):
            return self._changed(action)
        return snapshot

    def _upload_safely(self, action: Action) -> FileResult | Future[FileResult | None] | None:
        if self._abort is not None:
            return None  # stays in the inbox, untouched; the next run takes it
        try:
            return self._upload(action)
        except (AuthError, GraphUnreachableError) as exc:
            self._abort = exc
            return None

    def _upload(self, action: Action) -> FileResult | Future[FileResult | None]:
        assert action.user is not None and action.file.sha256 is not None
        assert self.uploader is not None
        user = action.user
        snapshot = self._read(action)
        if isinstance(snapshot, FileResult):
            return snapshot
        try:
            prepared = self.options.prepare(snapshot.data)
        except ImageError as exc:
            return self._reject(action, str(exc))
        file_id = self.file_ids[action.file.key]
        objects: tuple[str | None, str | None] = (None, None)
        read_error: GraphError | None = None
        if self.options.archive is not None:
            kept = self._keep_what_was_there(action, prepared)
            if isinstance(kept, FileResult):
                return kept
            if isinstance(kept, GraphError):
                read_error = kept
            else:
                objects = kept
        with self._write_lock, self.ledger.session() as session:
            # The hash of the bytes read here, which are the bytes prepared and sent.
            upload_id = repository.record_intent(
                session,
                self.run_id,
                file_id,
                user.id,
                snapshot.sha256,
                prepared,
                replaced_object=objects[0],
                uploaded_object=objects[1],
            )
        try:
            if read_error is not None:
                raise read_error  # nothing is written without its "before" kept
            receipt = self.uploader.upload_photo(user.id, prepared.data, prepared.content_type)
        except GraphError as exc:
            self._record_failure(upload_id, exc)
            if isinstance(exc, GraphUnreachableError):
                raise
            reason = _failure_reason(exc)
            if exc is read_error:
                reason = f"{NOT_KEPT}: {reason}"
            log.warning(
                "upload of %s to %s failed: %s",
                action.file.name,
                user.label,
                reason,
                extra={
                    "file": action.file.name,
                    "user_id": user.id,
                    "action": "upload",
                    "http_status": exc.status,
                    "client_request_id": exc.client_request_id,
                },
            )
            return self._finish(
                action, FileResult(action.file.name, Outcome.FAILED, reason, user.id, user.label)
            )
        except AuthError as exc:
            self._record_failure(upload_id, GraphError(str(exc)))
            raise
        # Recorded before anything else happens: from here on a kill must not cost a second
        # upload, however many writes' ETag reads are still queued behind this one.
        with self._write_lock, self.ledger.session() as session:
            repository.record_upload_success(session, upload_id, receipt)
        if self._after_reads is not None:
            return self._after_reads.submit(self._after_etag_safely, action, upload_id, receipt)
        return self._uploaded(action, upload_id, receipt, None)

    def _after_etag_safely(
        self, action: Action, upload_id: int, receipt: UploadReceipt
    ) -> FileResult | None:
        """Read the ETag Graph gave the photo just written and add it to the recorded
        success. An ETag that cannot be read, or a run killed before it is read, leaves the
        success without one (rollback and verify then leave that user alone)."""
        assert action.user is not None
        try:
            etag = self._reader().photo_etag(action.user.id)
        except (AuthError, GraphUnreachableError) as exc:
            self._abort = exc
            return None
        except GraphError as exc:
            log.warning(
                "uploaded %s to %s, but its ETag could not be read: %s",
                action.file.name,
                action.user.label,
                exc,
                extra={"file": action.file.name, "user_id": action.user.id},
            )
            etag = None
        return self._uploaded(action, upload_id, receipt, etag)

    def _uploaded(
        self, action: Action, upload_id: int, receipt: UploadReceipt, etag: str | None
    ) -> FileResult:
        assert action.user is not None
        user = action.user
        file_id = self.file_ids[action.file.key]
        with self._write_lock, self.ledger.session() as session:
            if etag is not None:
                repository.record_etag_after(session, upload_id, etag)
            repository.record_outcome(
                session, file_id, self.run_id, Outcome.UPLOADED, action.reason, user_id=user.id
            )
        log.info(
            "uploaded %s to %s",
            action.file.name,
            user.label,
            extra={
                "file": action.file.name,
                "user_id": user.id,
                "action": "upload",
                "http_status": receipt.http_status,
                "client_request_id": receipt.client_request_id,
            },
        )
        if not self.options.move_completed:
            return self._finish(
                action,
                FileResult(action.file.name, Outcome.UPLOADED, action.reason, user.id, user.label),
            )
        return self._move_and_record(action, Outcome.UPLOADED, action.reason)

    # --- shared steps

    def _move_and_record(self, action: Action, outcome: Outcome, reason: str) -> FileResult:
        assert action.user is not None
        user = action.user
        if not _still_as_scanned(action.file.path, action.file.stat):
            return self._left_changed(action, outcome, reason)
        try:
            destination = move_into(
                action.file.path, self.options.completed_dir, sha256=action.file.sha256
            )
        except SourceChanged:
            return self._left_changed(action, outcome, reason)
        except OSError as exc:
            # The photo is in Graph; only the file is stuck. The next run moves it.
            note = f"{reason}; but it could not be moved to completed_dir: {_os_words(exc)}"
            return self._finish(
                action, FileResult(action.file.name, Outcome.FAILED, note, user.id, user.label)
            )
        result = FileResult(action.file.name, outcome, reason, user.id, user.label, destination)
        return self._finish(action, result, location=FileLocation.COMPLETED)

    def _left_changed(self, action: Action, outcome: Outcome, reason: str) -> FileResult:
        """The file at the name is no longer the one this run read: it stays for the next
        run, which hashes it again. What was uploaded (if anything) stands."""
        assert action.user is not None
        if outcome is not Outcome.UPLOADED:
            return self._changed(action)
        note = f"{reason}; the file {CHANGED}"
        result = FileResult(action.file.name, outcome, note, action.user.id, action.user.label)
        return self._finish(action, result)

    def _finish(
        self, action: Action, result: FileResult, location: FileLocation | None = None
    ) -> FileResult:
        with self._write_lock, self.ledger.session() as session:
            self._record(session, [action], [result])
            if location is not None and result.destination is not None:
                file_id = self.file_ids[action.file.key]
                destination = names.shown(str(result.destination))
                repository.record_move(session, file_id, location, destination)
        self.on_file_done(result)
        return result

    def _record(
        self, session: Session, actions: Sequence[Action], results: Sequence[FileResult]
    ) -> None:
        """Each file's latest verdict, and this run's line for it, in the caller's transaction."""
        ids = [self.file_ids[a.file.key] for a in actions]
        for file_id, action, result in zip(ids, actions, results, strict=True):
            repository.record_outcome(
                session,
                file_id,
                self.run_id,
                result.outcome,
                result.reason,
                user_id=result.user_id,
                candidates=action.candidates,
            )
        repository.record_run_files(session, self.run_id, list(zip(ids, results, strict=True)))

    def _record_failure(self, upload_id: int, exc: GraphError) -> None:
        with self._write_lock, self.ledger.session() as session:
            repository.record_upload_failure(
                session, upload_id, exc.details, permanent=isinstance(exc, PermanentGraphError)
            )


def is_as_planned(snapshot: Snapshot, planned: FileStat, planned_sha256: str | None) -> bool:
    """The bytes in hand are the planned file's, as the plan saw them: same device, inode,
    size and mtime, not written to while read, and the planned hash."""
    return (
        snapshot.steady
        and snapshot.stat.is_same_file(planned)
        and snapshot.sha256 == planned_sha256
    )


def _still_as_scanned(path: Path, planned: FileStat) -> bool:
    """Does the name still refer to the planned file, unchanged (never through a link)?"""
    try:
        return stat_of(os.lstat(path)).is_same_file(planned)
    except OSError:
        return False


def _os_words(exc: OSError) -> str:
    """The operating system's words for an error, with the path shown safely."""
    where = f": {names.shown(str(exc.filename))}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _failure_reason(exc: GraphError) -> str:
    kind = "rejected by Graph" if isinstance(exc, PermanentGraphError) else "Graph failed"
    tries = f" after {exc.attempts} attempts" if exc.attempts > 1 else ""
    hint = (
        "; the user may have been deleted, the next run re-checks"
        if exc.status == 404 and not exc.advice  # the advice already says what a 404 means
        else "; it will be retried on the next run"
        if not isinstance(exc, PermanentGraphError)
        else ""
    )
    return f"{kind}{tries}: {exc}{hint}"
