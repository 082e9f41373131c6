"""Undo and drift: roll a run back, verify what Graph shows, prune in mirror mode, and keep
the archive to `archive_keep` versions per user.

Every function here works inside one recorded run (app._run: the run lock is held) and
adds one result per user to the run's summary. Each photo write is recorded as an intent
(table photo_changes, status 'pending') before it is sent and finished after, so a run
killed mid-way is completed by the next one (docs/reliability.md, "Rollback and prune
survive a kill").

A photo is only ever changed while it is still photosync's: its ETag, read in this run,
must be the one recorded after photosync's last write. Graph gives a photo a new ETag on
every write, whoever made it, and re-encodes what it is sent, so the ETag is the only
witness (docs/graph-behaviour.md, "Photo ETags").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from reconciler.archive import Archive, ArchiveError, default_archive_dir
from reconciler.config import Settings, check_prune
from reconciler.errors import AuthError, GraphError, GraphUnreachableError
from reconciler.graph.client import BATCH_LIMIT, GraphClient
from reconciler.ledger import repository
from reconciler.ledger.db import Ledger
from reconciler.ledger.records import NO_PHOTO, ChangeRecord, PhotoWrite, UploadRecord, UploadSource
from reconciler.model import (
    Action,
    ActionKind,
    ChangeStatus,
    DriftState,
    FileResult,
    FileStat,
    InboxFile,
    Outcome,
    Plan,
    RunSummary,
    User,
    WriteKind,
)

log = logging.getLogger("reconciler.undo")

Pool = ThreadPoolExecutor
Done = FileResult | Future[FileResult]
# SQLite allows one writer; serialising this module's own writes avoids busy waits.
_LEDGER_WRITES = threading.Lock()

CHANGED_BY_SOMEONE_ELSE = "changed since by someone else"
_PNG = b"\x89PNG\r\n\x1a\n"


class UsageError(Exception):
    """The command was asked for something the ledger does not hold (exit code 2)."""


class RunContext(Protocol):
    """What these functions need of app._Run."""

    settings: Settings
    ledger: Ledger
    summary: RunSummary

    def graph(self) -> GraphClient: ...


Confirm = Callable[[Plan], Plan]


def archive_for(settings: Settings) -> Archive:
    return Archive(settings.archive_dir or default_archive_dir(settings.database_url))


def content_type_of(data: bytes) -> str:
    """What photosync uploads is JPEG or PNG; the bytes say which."""
    return "image/png" if data.startswith(_PNG) else "image/jpeg"


# --- reading ETags, ⌈U/20⌉ requests


def current_etags(
    client: GraphClient, user_ids: Sequence[str], concurrency: int
) -> dict[str, str | GraphError | None]:
    """Each user's photo ETag (None: no photo) through $batch, 20 reads a request, a few
    requests at a time: reads are not under the photo write quota."""
    chunks = [list(user_ids[i : i + BATCH_LIMIT]) for i in range(0, len(user_ids), BATCH_LIMIT)]
    found: dict[str, str | GraphError | None] = {}
    if not chunks:
        return found
    with ThreadPoolExecutor(max(1, concurrency), "photosync-etags") as pool:
        for answer in pool.map(client.photo_etags_batch, chunks):
            found.update(answer)
    return found


def stream_etags(
    client: GraphClient, user_ids: Sequence[str], concurrency: int
) -> Iterator[dict[str, str | GraphError | None]]:
    """current_etags, one $batch answer at a time as they arrive (in order), so the writes
    that depend on them can start after the first 20 instead of after all."""
    chunks = [list(user_ids[i : i + BATCH_LIMIT]) for i in range(0, len(user_ids), BATCH_LIMIT)]
    if not chunks:
        return
    with ThreadPoolExecutor(max(1, concurrency), "photosync-etags") as pool:
        yield from pool.map(client.photo_etags_batch, chunks)


# --- pure decisions


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one user: write (or remove), skip, or nothing left to do."""

    act: bool
    outcome: Outcome
    reason: str


def rollback_verdict(
    upload: UploadRecord,
    latest: PhotoWrite | None,
    earlier: ChangeStatus | None,
    live: str | None,
) -> Verdict:
    """Roll back one upload? `earlier`: the status of an earlier rollback of it (None if
    none); `live`: the user's photo ETag now (None: no photo)."""
    removes = upload.replaced_object == NO_PHOTO
    done = Outcome.REMOVED if removes else Outcome.RESTORED
    what = "removed the photo it added" if removes else "put back the photo it replaced"
    if earlier is ChangeStatus.SUCCEEDED:
        return Verdict(False, Outcome.UNCHANGED, f"already rolled back ({what})")
    if earlier is ChangeStatus.PENDING:
        # A rollback killed mid-way: its write may have landed, which changed the ETag.
        if removes and live is None:
            return Verdict(False, done, f"{what} (finishing an interrupted rollback)")
        if live == upload.etag_after or not removes:
            # The restore is sent again either way: a PUT of the same bytes is harmless,
            # and it gives the ETag the ledger needs.
            return Verdict(True, done, f"{what} (finishing an interrupted rollback)")
        return Verdict(False, Outcome.SKIPPED, CHANGED_BY_SOMEONE_ELSE)
    if upload.replaced_object is None:
        return Verdict(
            False,
            Outcome.FAILED,
            "cannot roll back: this upload was made with archive = false, so the photo it "
            "replaced was not kept",
        )
    if latest is not None and latest.upload_id != upload.id:
        return Verdict(
            False,
            Outcome.SKIPPED,
            f"changed since by photosync run {latest.run_id}; roll that run back first",
        )
    if upload.etag_after is None:
        return Verdict(
            False,
            Outcome.SKIPPED,
            "no ETag was recorded after the upload, so whether someone changed the photo "
            "since cannot be told; nothing was changed",
        )
    if live != upload.etag_after:
        return Verdict(False, Outcome.SKIPPED, CHANGED_BY_SOMEONE_ELSE)
    return Verdict(True, done, what)


def prune_verdict(upload: UploadRecord, earlier: ChangeStatus | None, live: str | None) -> Verdict:
    """Remove the photo a removed file set? Only while it is still photosync's."""
    if earlier is ChangeStatus.PENDING and live is None:
        return Verdict(False, Outcome.REMOVED, "file removed from the inbox; photo removed")
    if upload.etag_after is None or live != upload.etag_after:
        return Verdict(False, Outcome.SKIPPED, CHANGED_BY_SOMEONE_ELSE)
    return Verdict(True, Outcome.REMOVED, "file removed from the inbox; photo removed")


def drift_state(expected: str | None, live: str | None) -> DriftState | None:
    """None when the photo is as photosync set it; else how it differs."""
    if live == expected:
        return None
    return DriftState.REMOVED if live is None else DriftState.CHANGED


# --- rollback


@dataclass(frozen=True, slots=True)
class _Target:
    upload: UploadRecord
    file_name: str
    user: User


def rollback(run: RunContext, run_id: int, *, upn: str | None, dry_run: bool) -> None:
    """Put back, for each user run `run_id` changed (or only `upn`), the photo they had
    before it: PUT the archived bytes, or DELETE when they had none."""
    targets = _rollback_targets(run, run_id, upn)
    if not targets:
        return
    with run.ledger.session() as session:
        earlier = repository.changes_about(
            session, [t.upload.id for t in targets], WriteKind.ROLLBACK
        )
        latest = repository.latest_writes(session)
    statuses = {upload_id: change.status for upload_id, change in earlier.items()}
    archive = archive_for(run.settings)

    def one(target: _Target, seen: str | GraphError | None, after: Pool) -> Done:
        upload, user = target.upload, target.user
        if isinstance(seen, GraphError):
            return _result(target.file_name, user, Outcome.FAILED, _read_failed(seen))
        prior = earlier.get(upload.id)
        verdict = rollback_verdict(upload, latest.get(user.id), statuses.get(upload.id), seen)
        if dry_run:
            reason = f"would have {verdict.reason}" if verdict.act else verdict.reason
            return _result(target.file_name, user, verdict.outcome, reason)
        if not verdict.act:
            if verdict.outcome in (Outcome.RESTORED, Outcome.REMOVED) and prior is not None:
                _finish_pending(run, prior.id, verdict.reason, None)
            elif verdict.outcome in (Outcome.SKIPPED, Outcome.FAILED):
                failed = verdict.outcome is Outcome.FAILED
                status = ChangeStatus.FAILED if failed else ChangeStatus.SKIPPED
                _record_skip(run, WriteKind.ROLLBACK, user.id, upload.id, verdict.reason, status)
            return _result(target.file_name, user, verdict.outcome, verdict.reason)
        written = None if upload.replaced_object == NO_PHOTO else upload.replaced_object
        return _write(
            run,
            archive,
            kind=WriteKind.ROLLBACK,
            upload_id=upload.id,
            user=user,
            file_name=target.file_name,
            before=upload.uploaded_object,
            written=written,
            verdict=verdict,
            interrupted=_if_pending(prior),
            after=after,
        )

    _each_as_read(run, targets, one)


def _rollback_targets(run: RunContext, run_id: int, upn: str | None) -> list[_Target]:
    with run.ledger.session() as session:
        found = repository.get_run(session, run_id)
        if found is None:
            raise UsageError(f"no run {run_id} in the ledger; `photosync runs list` shows them")
        if found.dry_run:
            raise UsageError(f"run {run_id} was a dry run and changed nothing")
        pairs = repository.succeeded_uploads_of_run(session, run_id)
        users = repository.users_by_id(session, {u.user_id for u, _ in pairs})
    targets = [
        _Target(upload, file_name, users.get(upload.user_id) or User(id=upload.user_id))
        for upload, file_name in pairs
    ]
    if upn is not None:
        wanted = upn.strip().lower()
        targets = [
            t
            for t in targets
            if wanted in {t.user.id.lower(), (t.user.user_principal_name or "").lower()}
        ]
        if not targets:
            raise UsageError(
                f"run {run_id} changed no photo of {upn}; `photosync runs show {run_id}` "
                "lists whom it changed"
            )
    return targets


# --- prune (mirror mode)


def prune_removed(run: RunContext, *, dry_run: bool) -> None:
    """Remove the photo each file removed from the inbox had set, if it is still
    photosync's; refuse to remove any when more than prune_max would go."""
    settings = run.settings
    check_prune(settings)
    with run.ledger.session() as session:
        candidates = repository.gone_files_with_photos(session)
        users = repository.users_by_id(session, {u.user_id for _, u in candidates})
        earlier = repository.changes_about(session, [u.id for _, u in candidates], WriteKind.PRUNE)
    if not candidates:
        return
    if len(candidates) > settings.prune_max:
        run.summary.refusals.append(
            f"prune refused: the files of {len(candidates)} users are gone from "
            f"{settings.inbox_dir}, more than prune_max ({settings.prune_max}); no photo was "
            "removed. If the folder is unmounted or was emptied by mistake, put it back; if "
            "they really left, raise prune_max for one run"
        )
        # The CLI prints it on stderr as the run ends; the log keeps it too, below the
        # default level so that stderr does not show it twice.
        log.info("%s", run.summary.refusals[-1])
        return
    archive = archive_for(settings) if settings.archive else None
    targets = [
        _Target(upload, file_name, users.get(upload.user_id) or User(id=upload.user_id))
        for file_name, upload in candidates
    ]

    def one(target: _Target, seen: str | GraphError | None, after: Pool) -> Done:
        upload, user = target.upload, target.user
        if isinstance(seen, GraphError):
            return _result(target.file_name, user, Outcome.FAILED, _read_failed(seen))
        prior = earlier.get(upload.id)
        verdict = prune_verdict(upload, prior.status if prior else None, seen)
        if dry_run:
            reason = f"would remove the photo: {verdict.reason}" if verdict.act else verdict.reason
            return _result(target.file_name, user, verdict.outcome, reason)
        if not verdict.act:
            if verdict.outcome is Outcome.REMOVED and prior is not None:
                _finish_pending(run, prior.id, verdict.reason, None)
            else:
                _record_skip(run, WriteKind.PRUNE, user.id, upload.id, verdict.reason)
            return _result(target.file_name, user, verdict.outcome, verdict.reason)
        return _write(
            run,
            archive,
            kind=WriteKind.PRUNE,
            upload_id=upload.id,
            user=user,
            file_name=target.file_name,
            before=None,
            written=None,
            verdict=verdict,
            interrupted=_if_pending(prior),
            keep_current=True,
            after=after,
        )

    _each_as_read(run, targets, one)


# --- verify


@dataclass(frozen=True, slots=True)
class Drift:
    user_id: str
    user: str
    file: str
    state: DriftState
    first_seen: datetime


@dataclass(frozen=True, slots=True)
class _SetPhoto:
    """A photo photosync set, with what verify needs to name it and to put it back."""

    write: PhotoWrite
    user: User
    file: InboxFile | None  # the inbox file whose upload it was (None: no longer known)

    @property
    def name(self) -> str:
        return self.file.name if self.file is not None else self.user.label


def verify(run: RunContext, *, fix: bool, confirm: Confirm) -> list[Drift]:
    """Compare every photo photosync set with what Graph shows now (⌈U/20⌉ requests for
    U users); record who drifted and since when; with `fix`, put photosync's photo back
    (confirmed first, like reconcile). Users and files are loaded only for the users that
    need a line: at 100,000 users, the others cost a count and nothing more."""
    with run.ledger.session() as session:
        writes = [
            w
            for w in repository.latest_writes(session).values()
            if w.written_object not in (None, NO_PHOTO) and w.etag is not None
        ]
        had_drift = bool(repository.drifts(session))
    live = current_etags(run.graph(), [w.user_id for w in writes], run.settings.concurrency)
    drifted: list[tuple[PhotoWrite, DriftState, str | None]] = []
    failed: list[tuple[PhotoWrite, GraphError]] = []
    in_line: list[str] = []
    for write in writes:
        seen = live.get(write.user_id)
        if isinstance(seen, GraphError):
            failed.append((write, seen))
            continue
        state = drift_state(write.etag, seen)
        if state is None:
            in_line.append(write.user_id)
        else:
            drifted.append((write, state, seen))
    del live
    run.summary.counts[Outcome.UNCHANGED] += len(in_line)
    with run.ledger.session() as session:
        if had_drift:
            repository.clear_drift(session, in_line)
        for write, state, seen in drifted:
            repository.record_drift(
                session, run.summary.run_id, write.user_id, state, write.etag, seen
            )
        first_seen = {d.user_id: d.first_seen_at for d in repository.drifts(session)}
    photos = _photos_set(run.ledger, [w for w, _e in failed] + [w for w, _s, _l in drifted])
    for write, error in failed:
        photo = photos[write.user_id]
        run.summary.add(_result(photo.name, photo.user, Outcome.FAILED, _read_failed(error)))
    found = [
        Drift(
            w.user_id,
            photos[w.user_id].user.label,
            photos[w.user_id].name,
            state,
            first_seen[w.user_id],
        )
        for w, state, _seen in drifted
    ]
    if fix:
        _fix(run, [photos[w.user_id] for w, _state, _seen in drifted], confirm)
    else:
        for drift in found:
            reason = (
                f"{drift.state} since by someone else "
                f"(first seen {drift.first_seen:%Y-%m-%d %H:%M} UTC)"
            )
            run.summary.add(
                FileResult(drift.file, Outcome.DRIFTED, reason, drift.user_id, drift.user)
            )
    return found


def _photos_set(ledger: Ledger, writes: Sequence[PhotoWrite]) -> dict[str, _SetPhoto]:
    """user id -> the photo photosync set, with its user and the file it came from."""
    with ledger.session() as session:
        users = repository.users_by_id(session, {w.user_id for w in writes})
        file_of = repository.files_of_uploads(session, [w.upload_id for w in writes])
    return {
        w.user_id: _SetPhoto(
            w,
            users.get(w.user_id) or User(id=w.user_id),
            _as_inbox_file(file_of[w.upload_id]) if w.upload_id in file_of else None,
        )
        for w in writes
    }


def _as_inbox_file(row: UploadSource) -> InboxFile:
    # Only its name and path matter here: they are what confirm-before-write looks up.
    return InboxFile(row.name, Path(row.path), FileStat(0, 0, 0, 0), row.sha256)


@dataclass(frozen=True, slots=True)
class _Repeat:
    """A photo photosync set, to be written again for the user Graph confirmed."""

    write: PhotoWrite
    file_name: str
    user: User


def _fix(run: RunContext, photos: list[_SetPhoto], confirm: Confirm) -> None:
    """Put photosync's last photo back for each drifted user whose file still names them,
    as Graph confirms in this run."""
    by_key: dict[str, _SetPhoto] = {}
    actions = []
    for photo in photos:
        if photo.file is None:
            reason = "not fixed: the file that set this photo is no longer in the ledger"
            run.summary.add(_result(photo.name, photo.user, Outcome.SKIPPED, reason))
            continue
        by_key[photo.file.key] = photo
        actions.append(Action(photo.file, ActionKind.UPLOAD, Outcome.UPLOADED, "fix", photo.user))
    confirmed = confirm(Plan(tuple(actions))) if actions else Plan(())
    archive = archive_for(run.settings)
    work: list[_Repeat] = []
    for action in confirmed.actions:
        photo = by_key[action.file.key]
        if action.kind is not ActionKind.UPLOAD or action.user is None:
            reason = f"not fixed: {action.reason}"
            run.summary.add(_result(photo.name, photo.user, Outcome.SKIPPED, reason))
            continue
        work.append(_Repeat(photo.write, photo.name, action.user))

    def one(target: _Repeat, _seen: str | GraphError | None, after: Pool) -> Done:
        return _write(
            run,
            archive,
            kind=WriteKind.FIX,
            upload_id=target.write.upload_id,
            user=target.user,
            file_name=target.file_name,
            before=None,
            written=target.write.written_object,
            verdict=Verdict(True, Outcome.UPLOADED, "put photosync's photo back"),
            interrupted=None,
            keep_current=True,
            after=after,
        )

    _each_as_read(run, work, one, read_etags=False)


# --- the shared write step


def _write(
    run: RunContext,
    archive: Archive | None,
    *,
    kind: WriteKind,
    upload_id: int,
    user: User,
    file_name: str,
    before: str | None,
    written: str | None,
    verdict: Verdict,
    interrupted: ChangeRecord | None,
    keep_current: bool = False,
    after: Pool | None = None,
) -> Done:
    """Intent, write, ETag, result: one photo change in the crash-safe order. The ETag
    read and the result go to `after` when given, so the next write need not wait."""
    client = run.graph()
    try:
        data = archive.get(written) if written is not None and archive is not None else None
        if written is not None and data is None:
            raise ArchiveError("the archive is off (archive = false); nothing to put back")
        if keep_current and archive is not None:
            current = client.get_photo(user.id)
            before = NO_PHOTO if current is None else archive.put(current)
    except ArchiveError as exc:
        _record_skip(run, kind, user.id, upload_id, str(exc), status=ChangeStatus.FAILED)
        return _result(file_name, user, Outcome.FAILED, str(exc))
    except (AuthError, GraphUnreachableError):
        raise
    except GraphError as exc:
        return _result(file_name, user, Outcome.FAILED, _read_failed(exc))
    with _LEDGER_WRITES, run.ledger.session() as session:
        if interrupted is not None:
            repository.record_change_result(
                session, interrupted.id, ChangeStatus.INTERRUPTED, "finished by a later run"
            )
        change_id = repository.record_change_intent(
            session,
            run.summary.run_id,
            kind,
            user.id,
            upload_id,
            before_object=before,
            written_object=written,
        )
    try:
        if data is None:
            client.delete_photo(user.id)
        else:
            client.upload_photo(user.id, data, content_type_of(data))
    except (AuthError, GraphUnreachableError):
        raise  # the intent stays pending: the next run finishes it
    except GraphError as exc:
        reason = f"Graph refused the change: {exc}"
        with _LEDGER_WRITES, run.ledger.session() as session:
            repository.record_change_result(session, change_id, ChangeStatus.FAILED, reason)
        return _result(file_name, user, Outcome.FAILED, reason)

    def finish() -> FileResult:
        # After a PUT, the ETag Graph gave it: what a later rollback or verify compares.
        etag = client.photo_etag(user.id) if data is not None else None
        with _LEDGER_WRITES, run.ledger.session() as session:
            repository.record_change_result(
                session, change_id, ChangeStatus.SUCCEEDED, verdict.reason, etag
            )
            repository.clear_drift(session, [user.id])
        log.info("%s: %s for %s", kind, verdict.reason, user.label, extra={"user_id": user.id})
        return _result(file_name, user, verdict.outcome, verdict.reason)

    return after.submit(finish) if after is not None and data is not None else finish()


def _if_pending(change: ChangeRecord | None) -> ChangeRecord | None:
    """An earlier change a killed run left pending: this run's write finishes it."""
    return change if change is not None and change.status is ChangeStatus.PENDING else None


def _finish_pending(run: RunContext, change_id: int, reason: str, etag: str | None) -> None:
    with _LEDGER_WRITES, run.ledger.session() as session:
        repository.record_change_result(session, change_id, ChangeStatus.SUCCEEDED, reason, etag)


def _record_skip(
    run: RunContext,
    kind: WriteKind,
    user_id: str,
    upload_id: int,
    reason: str,
    status: ChangeStatus = ChangeStatus.SKIPPED,
) -> None:
    with _LEDGER_WRITES, run.ledger.session() as session:
        repository.record_change_skipped(
            session, run.summary.run_id, kind, user_id, upload_id, reason, status=status
        )


class _ForUser(Protocol):
    @property
    def user(self) -> User: ...


_T = TypeVar("_T", bound=_ForUser)


def _each_as_read(
    run: RunContext,
    targets: Sequence[_T],
    one: Callable[[_T, str | GraphError | None, Pool], Done],
    *,
    read_etags: bool = True,
) -> None:
    """One change per user, `concurrency` at a time (the client paces the writes), each
    sent as soon as its user's current ETag has arrived; ETag reads after the writes run
    in a pool of their own. Reads are not under the photo write quota, so neither holds
    up the writes (docs/reliability.md, "Keep what was there")."""
    concurrency = max(1, run.settings.concurrency)
    by_user = {t.user.id: t for t in targets}
    answers: Iterator[Mapping[str, str | GraphError | None]] = (
        stream_etags(run.graph(), list(by_user), concurrency)
        if read_etags
        else iter([dict.fromkeys(by_user)])
    )
    with (
        ThreadPoolExecutor(concurrency, "photosync-etag-after") as after,
        ThreadPoolExecutor(concurrency, "photosync-undo") as writes,
    ):
        pending = [
            writes.submit(one, by_user[user_id], seen, after)
            for answer in answers
            for user_id, seen in answer.items()
        ]
        for future in pending:
            done = future.result()
            run.summary.add(done.result() if isinstance(done, Future) else done)


def _result(file_name: str, user: User, outcome: Outcome, reason: str) -> FileResult:
    return FileResult(file_name, outcome, reason, user.id, user.label)


def _read_failed(exc: GraphError) -> str:
    return f"the photo's ETag could not be read ({exc}); nothing was changed, try again later"


# --- retention


def trim_archive(settings: Settings, ledger: Ledger) -> int:
    """Delete the archive objects no kept version refers to; how many were deleted."""
    archive = archive_for(settings)
    removed = 0
    if archive.root.is_dir():
        with ledger.session() as session:
            kept = repository.archive_references(session, settings.archive_keep)
        removed = archive.remove_all_but(kept)
    with ledger.session() as session:
        repository.record_archive_trimmed(session, settings.archive_keep, archive.root)
    return removed
