"""Reading and writing the ledger. Every function takes a Session and never commits: the
service layer decides where each transaction begins and ends."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from reconciler import model, names
from reconciler.errors import GraphFailure
from reconciler.fingerprint import CachedFingerprint
from reconciler.ledger.orm import (
    InboxFileRow,
    PhotoChangeRow,
    PhotoDriftRow,
    RunFileRow,
    RunRow,
    SyncStateRow,
    UploadRow,
    UserRow,
    utcnow,
)
from reconciler.ledger.records import (
    NO_PHOTO,
    ChangeRecord,
    DriftRecord,
    FileRecord,
    InboxRecord,
    PhotoWrite,
    RunFileRecord,
    RunRecord,
    StateRecord,
    UploadRecord,
    UploadSource,
)
from reconciler.ledger.state import ARCHIVE_TRIMMED, FULL_LISTING_AT, archive_trim_mark
from reconciler.model import (
    FAILED_STATUSES,
    UNFINISHED_STATUSES,
    ChangeStatus,
    DriftState,
    FileLocation,
    Outcome,
    UploadStatus,
    WriteKind,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# Rows per INSERT: under SQLite's default 32,766 bound-parameter limit with 9 columns.
_CHUNK = 2000
_T = TypeVar("_T")
_R = TypeVar("_R", bound="DataclassInstance")


def _chunks(values: Iterable[_T]) -> Iterator[list[_T]]:
    """`values` in lists of _CHUNK: SQLite refuses more than 32,766 bound parameters in one
    statement, and an inbox or tenant can hold more ids than that."""
    items = list(values)
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# --- runs


def start_run(session: Session, command: str, dry_run: bool) -> int:
    run = RunRow(
        command=command, dry_run=dry_run, host=socket.gethostname(), pid=os.getpid(), counts={}
    )
    session.add(run)
    session.flush()
    return run.id


def finish_run(
    session: Session, summary: model.RunSummary, exit_code: int, error: str | None = None
) -> None:
    run = session.get_one(RunRow, summary.run_id)
    run.finished_at = utcnow()
    run.exit_code = exit_code
    run.counts = {outcome.value: count for outcome, count in summary.counts.items()}
    run.graph_requests = summary.graph_requests
    run.error = error


ABANDONED = (
    "abandoned: the process stopped before the run finished "
    "(killed, crashed or the machine restarted)"
)
# The exit code the abandoned run would have had: it could not run to the end.
ABANDONED_EXIT_CODE = 3


def close_abandoned_runs(session: Session, current_run_id: int) -> list[int]:
    """Close the runs a dead process left open. Only safe under the run lock: then no other
    run is alive, so every other unfinished run is one that will never finish. finished_at
    is when this was noticed, the only time the ledger can vouch for."""
    abandoned = list(
        session.scalars(
            select(RunRow.id).where(RunRow.finished_at.is_(None), RunRow.id != current_run_id)
        )
    )
    if abandoned:
        session.execute(
            update(RunRow)
            .where(RunRow.id.in_(abandoned))
            .values(finished_at=utcnow(), exit_code=ABANDONED_EXIT_CODE, error=ABANDONED)
        )
    return abandoned


# --- users


# The users columns that hold a UserRow's fields, named like them.
_USER_COLUMNS = tuple(model.USER_FIELDS.values())
_user_values = attrgetter(*_USER_COLUMNS)


def _user_row(user: model.User, now: datetime) -> dict[str, Any]:
    values = dict(zip(_USER_COLUMNS, _user_values(user), strict=True))
    return {"id": user.id, **values, "refreshed_at": now, "deleted_at": None}


def to_model_user(row: UserRow) -> model.User:
    return model.User(row.id, *_user_values(row))


def upsert_users(session: Session, users: Sequence[model.User], now: datetime) -> None:
    """Insert or replace complete users in bulk: one compiled statement, executed for many
    rows (a multi-row VALUES clause would be recompiled for every page, which is slower)."""
    if not users:
        return
    rows = [_user_row(u, now) for u in users]
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        lite = sqlite.insert(UserRow)
        updates = {c: lite.excluded[c] for c in rows[0] if c != "id"}
        statement: Any = lite.on_conflict_do_update(index_elements=["id"], set_=updates)
    elif dialect == "postgresql":
        pg = postgresql.insert(UserRow)
        updates = {c: pg.excluded[c] for c in rows[0] if c != "id"}
        statement = pg.on_conflict_do_update(index_elements=["id"], set_=updates)
    else:
        for row in rows:
            session.merge(UserRow(**row))
        return
    session.connection().execute(statement, rows)


def known_user_ids(session: Session, ids: Iterable[str]) -> set[str]:
    """Which of `ids` the ledger holds a row for (deleted ones included)."""
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update(session.scalars(select(UserRow.id).where(UserRow.id.in_(chunk))))
    return found


def apply_user_patches(session: Session, patches: Sequence[model.UserPatch], now: datetime) -> None:
    """Apply delta items to users the ledger already holds: only the properties an item
    carries change; the rest keep their earlier values (docs/graph-behaviour.md, "Delta
    items are patches"). A patched user is present in the tenant, so it is not deleted."""
    changes = []
    for patch in patches:
        values: dict[str, Any] = {
            model.USER_FIELDS[name]: value
            for name, value in patch.properties.items()
            if name in model.USER_FIELDS
        }
        if "account_enabled" in values and values["account_enabled"] is not None:
            values["account_enabled"] = bool(values["account_enabled"])
        changes.append({"id": patch.id, **values, "refreshed_at": now, "deleted_at": None})
    if changes:
        # Bulk UPDATE by primary key; rows with the same set of columns share a statement.
        session.execute(update(UserRow), changes)


def mark_users_deleted(session: Session, ids: Iterable[str], now: datetime) -> None:
    for chunk in _chunks(ids):
        session.execute(update(UserRow).where(UserRow.id.in_(chunk)).values(deleted_at=now))


def mark_unrefreshed_users_deleted(session: Session, refreshed_since: datetime) -> None:
    """After a full listing: whoever the listing did not mention is gone from the tenant."""
    session.execute(
        update(UserRow)
        .where(UserRow.refreshed_at < refreshed_since, UserRow.deleted_at.is_(None))
        .values(deleted_at=refreshed_since)
    )


def current_users(session: Session) -> list[model.User]:
    rows = session.scalars(select(UserRow).where(UserRow.deleted_at.is_(None)))
    return [to_model_user(row) for row in rows]


def users_by_id(session: Session, ids: Iterable[str]) -> dict[str, model.User]:
    found: dict[str, model.User] = {}
    for chunk in _chunks(ids):
        rows = session.scalars(select(UserRow).where(UserRow.id.in_(chunk)))
        found.update({row.id: to_model_user(row) for row in rows})
    return found


def count_users(session: Session) -> int:
    return (
        session.scalar(
            select(func.count()).select_from(UserRow).where(UserRow.deleted_at.is_(None))
        )
        or 0
    )


# --- sync state


def get_state(session: Session, key: str) -> StateRecord | None:
    row = session.get(SyncStateRow, key)
    return None if row is None else StateRecord(row.value, row.updated_at)


def full_listing_at(session: Session) -> datetime | None:
    """When the users were last listed in full, in UTC; None if never (or not legible)."""
    row = session.get(SyncStateRow, FULL_LISTING_AT)
    try:
        listed = datetime.fromisoformat(row.value) if row is not None else None
    except ValueError:
        return None
    return _aware(listed) if listed is not None else None


def set_state(session: Session, key: str, value: str) -> None:
    row = session.get(SyncStateRow, key)
    if row is None:
        session.add(SyncStateRow(key=key, value=value, updated_at=utcnow()))
    else:
        row.value = value
        row.updated_at = utcnow()


# --- inbox files


_IN_INBOX = InboxFileRow.location == FileLocation.INBOX


def record_archive_trimmed(session: Session, keep: int, root: Path) -> None:
    """The archive now holds at most `keep` versions per user, in `root`."""
    set_state(session, ARCHIVE_TRIMMED, archive_trim_mark(keep, root))


def inbox_records(session: Session) -> dict[str, InboxRecord]:
    """Every file the ledger holds as still in the inbox, by path. A run reads this once,
    before its scan: the stat cache, the record of the scan and the planner's view all come
    from it (under the run lock nothing else writes these rows). Plain columns, not ORM
    objects: at 20,000 files that is the difference between 0.1 s and 1 s."""
    rows = session.execute(
        select(
            InboxFileRow.id,
            InboxFileRow.path,
            InboxFileRow.size,
            InboxFileRow.mtime_ns,
            InboxFileRow.ctime_ns,
            InboxFileRow.inode,
            InboxFileRow.sha256,
            InboxFileRow.hashed_at_ns,
            InboxFileRow.last_outcome,
        ).where(_IN_INBOX)
    )
    return {
        path: InboxRecord(file_id, model.FileStat(size, mtime, ctime, inode), sha, hashed, outcome)
        for file_id, path, size, mtime, ctime, inode, sha, hashed, outcome in rows
    }


def fingerprints(rows: Mapping[str, InboxRecord]) -> dict[str, CachedFingerprint]:
    """The stat cache: the files whose hash the ledger holds, and when it was taken."""
    return {
        path: CachedFingerprint(row.stat, row.sha256, row.hashed_at_ns)
        for path, row in rows.items()
        if row.sha256 is not None and row.hashed_at_ns is not None
    }


def record_scan(
    session: Session, scan: model.ObservedInbox, existing: Mapping[str, InboxRecord]
) -> dict[str, int]:
    """Bring the inbox rows in line with what the scan saw; `existing` is inbox_records() as
    read before the scan. Returns {path: file id}.

    Only rows whose stat or hash changed are written, so an unchanged inbox of 20,000 files
    costs no statement at all. Rows are written as plain column values in bulk statements,
    not as ORM objects: building and flushing one object per file cost more than hashing it.
    """
    # Keyed by InboxFileRow.key: a real path that is not valid text is stored escaped.
    hashed_paths = {f.key for f in scan.hashed}
    now = utcnow()
    new_rows: dict[str, dict[str, Any]] = {}
    changes: list[dict[str, Any]] = []
    ids: dict[str, int] = {}
    for file in [*scan.files, *scan.deferred, *(u.file for u in scan.unreadable)]:
        key = file.key
        hashed = key in hashed_paths
        values: dict[str, Any] = {
            "size": file.stat.size,
            "mtime_ns": file.stat.mtime_ns,
            "ctime_ns": file.stat.ctime_ns,
            "inode": file.stat.inode,
        }
        if hashed:
            values["sha256"] = file.sha256
            values["hashed_at_ns"] = scan.started_ns
        row = existing.get(key)
        if row is None:
            new_rows[key] = {
                "name": file.name,
                "path": key,
                "location": FileLocation.INBOX,
                "first_seen_at": now,
                "sha256": None,
                "hashed_at_ns": None,
                **values,
            }
            continue
        ids[key] = row.id
        if row.stat == file.stat:
            for name in ("size", "mtime_ns", "ctime_ns", "inode"):
                del values[name]
        elif not hashed and file.sha256 is None and row.sha256 is not None:
            values["sha256"] = None  # changed and not yet settled: the old hash no longer holds
        if values:
            changes.append({"id": row.id, **values})
    if changes:
        # Bulk UPDATE by primary key; rows with the same set of columns share a statement.
        session.execute(update(InboxFileRow), changes)
    gone = [row.id for key, row in existing.items() if key not in ids]
    for chunk in _chunks(gone):
        # Removed or renamed by someone; no longer ours to handle.
        session.execute(
            update(InboxFileRow)
            .where(InboxFileRow.id.in_(chunk))
            .values(location=FileLocation.GONE)
        )
    if new_rows:
        # A Core executemany on the table: the ORM's bulk path still costs ~15 us a row.
        session.connection().execute(insert(InboxFileRow), list(new_rows.values()))
        # Read the new ids back rather than rely on RETURNING, which not every backend
        # supports for a many-row INSERT. One plain SELECT of the inbox is cheaper than
        # binding every new path into IN lists.
        rows = session.execute(select(InboxFileRow.path, InboxFileRow.id).where(_IN_INBOX))
        ids.update({path: file_id for path, file_id in rows if path in new_rows})
    return ids


def ledger_view(session: Session, rows: Mapping[str, InboxRecord]) -> model.LedgerView:
    """What the ledger knew of the inbox when `rows` (inbox_records()) were read."""
    uploaded_to_ids = {
        (file_id, sha): user_id
        for file_id, sha, user_id in session.execute(
            select(UploadRow.file_id, UploadRow.source_sha256, UploadRow.user_id)
            .join(InboxFileRow, InboxFileRow.id == UploadRow.file_id)
            .where(_IN_INBOX, UploadRow.status == UploadStatus.SUCCEEDED)
        )
    }
    users = users_by_id(session, set(uploaded_to_ids.values()))
    files = {}
    for path, row in rows.items():
        user_id = uploaded_to_ids.get((row.id, row.sha256 or ""))
        files[path] = model.RecordedFile(
            row.sha256, users.get(user_id) if user_id else None, row.last_outcome
        )
    return model.LedgerView(files=files, last_upload_sha=last_upload_sha(session))


def last_upload_sha(session: Session) -> dict[str, str]:
    """user id -> source sha256 of that user's most recent successful upload."""
    latest = (
        select(UploadRow.user_id, func.max(UploadRow.id).label("upload_id"))
        .where(UploadRow.status == UploadStatus.SUCCEEDED)
        .group_by(UploadRow.user_id)
        .subquery()
    )
    rows = session.execute(
        select(UploadRow.user_id, UploadRow.source_sha256).join(
            latest, latest.c.upload_id == UploadRow.id
        )
    )
    return {user_id: sha for user_id, sha in rows}


def record_outcome(
    session: Session,
    file_id: int,
    run_id: int,
    outcome: model.Outcome,
    reason: str,
    *,
    user_id: str | None = None,
    candidates: Sequence[str] = (),
) -> None:
    row = session.get_one(InboxFileRow, file_id)
    new = (outcome.value, reason, list(candidates) or None, user_id)
    if (row.last_outcome, row.last_reason, row.last_candidates, row.user_id) == new:
        return  # an unchanged verdict costs no write: mirror mode re-plans every file each run
    row.last_outcome, row.last_reason, row.last_candidates, row.user_id = new
    row.last_run_id = run_id
    row.last_attempt_at = utcnow()


def preload_files(session: Session, file_ids: Sequence[int]) -> None:
    """Load many inbox rows in a few SELECTs, so per-file updates hit the identity map."""
    # The identity map holds objects weakly: rows nobody references are dropped at once and
    # each session.get() would SELECT (and autoflush) again. The session keeps them alive.
    held: list[InboxFileRow] = session.info.setdefault("preloaded_files", [])
    for chunk in _chunks(file_ids):
        held.extend(session.scalars(select(InboxFileRow).where(InboxFileRow.id.in_(chunk))).all())


def record_run_files(
    session: Session, run_id: int, results: Sequence[tuple[int, model.FileResult]]
) -> None:
    if not results:
        return
    session.execute(
        insert(RunFileRow),
        [
            {
                "run_id": run_id,
                "file_id": file_id,
                "outcome": result.outcome.value,
                "reason": result.reason,
                "user_id": result.user_id,
                "destination": names.shown(str(result.destination)) if result.destination else None,
            }
            for file_id, result in results
        ],
    )


def record_move(session: Session, file_id: int, location: FileLocation, destination: str) -> None:
    row = session.get_one(InboxFileRow, file_id)
    row.location = location
    row.destination = destination


# --- uploads


def record_intent(
    session: Session,
    run_id: int,
    file_id: int,
    user_id: str,
    source_sha256: str,
    prepared: model.PreparedImage,
    *,
    replaced_object: str | None = None,
    uploaded_object: str | None = None,
) -> int:
    upload = UploadRow(
        replaced_object=replaced_object,
        uploaded_object=uploaded_object,
        run_id=run_id,
        file_id=file_id,
        user_id=user_id,
        source_sha256=source_sha256,
        uploaded_sha256=prepared.sha256,
        content_type=prepared.content_type,
        prepare_path=prepared.path,
        source_bytes=prepared.source_bytes,
        uploaded_bytes=len(prepared.data),
        source_width=prepared.source_width,
        source_height=prepared.source_height,
        uploaded_width=prepared.width,
        uploaded_height=prepared.height,
        quality_notes=list(prepared.quality_notes),
        status=UploadStatus.PENDING,
        started_at=utcnow(),
    )
    session.add(upload)
    session.flush()
    return upload.id


def record_upload_success(
    session: Session,
    upload_id: int,
    receipt: model.UploadReceipt,
    *,
    etag_after: str | None = None,
) -> None:
    upload = session.get_one(UploadRow, upload_id)
    upload.status = UploadStatus.SUCCEEDED
    upload.etag_after = etag_after
    upload.http_status = receipt.http_status
    upload.attempts = receipt.attempts
    upload.client_request_id = receipt.client_request_id
    upload.finished_at = utcnow()


def record_etag_after(session: Session, upload_id: int, etag: str) -> None:
    """The ETag Graph reported for the photo an already recorded success wrote."""
    session.get_one(UploadRow, upload_id).etag_after = etag


def record_upload_failure(
    session: Session, upload_id: int, failure: GraphFailure, *, permanent: bool
) -> None:
    upload = session.get_one(UploadRow, upload_id)
    upload.status = UploadStatus.FAILED_PERMANENT if permanent else UploadStatus.FAILED_TRANSIENT
    upload.http_status = failure.status
    upload.graph_error_code = failure.code
    upload.graph_error_message = failure.message
    upload.request_id = failure.request_id
    upload.client_request_id = failure.client_request_id
    upload.attempts = failure.attempts
    upload.finished_at = utcnow()


def failed_uploads(session: Session, *, include_permanent: bool) -> dict[str, model.FailedUpload]:
    """Inbox files whose most recent upload failed, by path, with the user it was meant for."""
    statuses = FAILED_STATUSES if include_permanent else {UploadStatus.FAILED_TRANSIENT}
    latest = (
        select(UploadRow.file_id, func.max(UploadRow.id).label("upload_id"))
        .group_by(UploadRow.file_id)
        .subquery()
    )
    rows = session.execute(
        select(InboxFileRow.path, UploadRow.source_sha256, UploadRow.user_id)
        .join(latest, latest.c.upload_id == UploadRow.id)
        .join(InboxFileRow, InboxFileRow.id == UploadRow.file_id)
        .where(_IN_INBOX, UploadRow.status.in_(statuses))
    ).all()
    users = users_by_id(session, {user_id for _, _, user_id in rows})
    return {
        path: model.FailedUpload(sha, users[user_id])
        for path, sha, user_id in rows
        if user_id in users
    }


# --- reading for status and reports


def recent_runs(session: Session, limit: int) -> list[RunRecord]:
    rows = session.scalars(select(RunRow).order_by(RunRow.id.desc()).limit(limit))
    return [_run_record(run) for run in rows]


def waiting_counts(session: Session) -> dict[str, int]:
    """Files still in the inbox, by their last outcome."""
    rows = session.execute(
        select(InboxFileRow.last_outcome, func.count())
        .where(_IN_INBOX)
        .group_by(InboxFileRow.last_outcome)
    )
    return {outcome or "new": count for outcome, count in rows}


# Outcomes of a file whose photo reached its user.
_LANDED = (Outcome.UPLOADED, Outcome.UNCHANGED)


def not_landed(session: Session) -> list[FileRecord]:
    """Every file that has not landed: still in the inbox without a final outcome (or with
    none yet: seen only by a dry run or a run that stopped early), or set aside in
    failed_dir."""
    undecided = InboxFileRow.last_outcome.is_(None)  # SQL's NOT IN is never true for NULL
    rows = session.scalars(
        select(InboxFileRow)
        .where(
            (
                _IN_INBOX
                & (
                    undecided
                    | InboxFileRow.last_outcome.not_in([Outcome.UPLOADED, Outcome.UNCHANGED])
                )
            )
            | (InboxFileRow.location == FileLocation.FAILED)
        )
        .order_by(InboxFileRow.last_outcome, InboxFileRow.name)
    )
    return [_file_record(row) for row in rows]


def last_uploads_of(session: Session, file_ids: Sequence[int]) -> dict[int, UploadRecord]:
    """file id -> the latest upload of that file."""
    found: dict[int, UploadRecord] = {}
    for chunk in _chunks(file_ids):
        latest = (
            select(func.max(UploadRow.id))
            .where(UploadRow.file_id.in_(chunk))
            .group_by(UploadRow.file_id)
        )
        found.update(
            {
                u.file_id: _upload_record(u)
                for u in session.scalars(select(UploadRow).where(UploadRow.id.in_(latest)))
            }
        )
    return found


def close_interrupted_uploads(session: Session) -> int:
    """Intents left 'pending' by a run that died: the upload may or may not have reached
    Graph, so they are marked 'interrupted' (never 'succeeded'); the file is still in the
    inbox and will be uploaded again."""
    result = session.execute(
        update(UploadRow)
        .where(UploadRow.status == UploadStatus.PENDING)
        .values(status=UploadStatus.INTERRUPTED, finished_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- reading for the operator: `runs show` and the report's dates


def get_run(session: Session, run_id: int) -> RunRecord | None:
    run = session.get(RunRow, run_id)
    return None if run is None else _run_record(run)


def run_files_of(session: Session, run_id: int) -> list[RunFileRecord]:
    """What one run decided for each file, by file name."""
    rows = session.execute(
        select(RunFileRow, InboxFileRow.name)
        .join(InboxFileRow, InboxFileRow.id == RunFileRow.file_id)
        .where(RunFileRow.run_id == run_id)
        .order_by(InboxFileRow.name, RunFileRow.id)
    )
    return [
        RunFileRecord(rf.file_id, name, rf.outcome, rf.reason, rf.user_id, rf.destination)
        for rf, name in rows
    ]


def last_considered(session: Session, file_ids: Sequence[int]) -> dict[int, datetime]:
    """file id -> start of the last run that decided something about it. inbox_files'
    own last_attempt_at moves only when the verdict changes, so this is the truer date."""
    found: dict[int, datetime] = {}
    for chunk in _chunks(file_ids):
        rows = session.execute(
            select(RunFileRow.file_id, func.max(RunRow.started_at))
            .join(RunRow, RunRow.id == RunFileRow.run_id)
            .where(RunFileRow.file_id.in_(chunk))
            .group_by(RunFileRow.file_id)
        )
        found.update({file_id: when for file_id, when in rows if when is not None})
    return found


def uploads_of_run(session: Session, run_id: int) -> dict[int, UploadRecord]:
    """file id -> the last upload one run made for it."""
    rows = session.scalars(
        select(UploadRow).where(UploadRow.run_id == run_id).order_by(UploadRow.id)
    )
    return {upload.file_id: _upload_record(upload) for upload in rows}


# --- the archive, rollback, verify and prune (reconciler/undo.py)


def carried_before(session: Session, user_id: str) -> str | None:
    """The photo a user had before an upload that a killed run left unfinished: when the
    user's latest archived upload is an intent without a result, its write may have landed,
    so what Graph shows now may be photosync's own photo. The "before" to keep is the one
    that intent archived (docs/reliability.md, "Rollback and prune survive a kill")."""
    latest = session.scalars(
        select(UploadRow)
        .where(UploadRow.user_id == user_id, UploadRow.replaced_object.is_not(None))
        .order_by(UploadRow.id.desc())
        .limit(1)
    ).first()
    if latest is not None and latest.status in UNFINISHED_STATUSES:
        return latest.replaced_object
    return None


def latest_writes(session: Session) -> dict[str, PhotoWrite]:
    """user id -> photosync's latest successful write of that user's photo."""
    found: dict[str, PhotoWrite] = {}
    uploads = session.execute(
        select(
            UploadRow.user_id,
            UploadRow.id,
            UploadRow.uploaded_object,
            UploadRow.etag_after,
            UploadRow.finished_at,
            UploadRow.started_at,
            UploadRow.run_id,
        )
        .where(UploadRow.status == UploadStatus.SUCCEEDED)
        .order_by(UploadRow.id)
    )
    for user_id, upload_id, written, etag, finished, started, run_id in uploads:
        found[user_id] = PhotoWrite(
            user_id, upload_id, WriteKind.UPLOAD, None, written, etag, finished or started, run_id
        )
    changes = session.execute(
        select(PhotoChangeRow)
        .where(PhotoChangeRow.status == ChangeStatus.SUCCEEDED)
        .order_by(PhotoChangeRow.id)
    ).scalars()
    for change in changes:
        at = change.finished_at or change.started_at
        earlier = found.get(change.user_id)
        if earlier is not None and _aware(earlier.at) > _aware(at):
            continue
        found[change.user_id] = PhotoWrite(
            change.user_id,
            change.upload_id,
            WriteKind(change.kind),
            change.id,
            change.written_object,
            change.etag_after,
            at,
            change.run_id,
        )
    return found


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def succeeded_uploads_of_run(session: Session, run_id: int) -> list[tuple[UploadRecord, str]]:
    """The last successful upload per user of one run, with its file's name."""
    rows = session.execute(
        select(UploadRow, InboxFileRow.name)
        .join(InboxFileRow, InboxFileRow.id == UploadRow.file_id)
        .where(UploadRow.run_id == run_id, UploadRow.status == UploadStatus.SUCCEEDED)
        .order_by(UploadRow.id)
    )
    latest: dict[str, tuple[UploadRecord, str]] = {}
    for upload, name in rows:
        latest[upload.user_id] = (_upload_record(upload), name)
    return list(latest.values())


def changes_about(
    session: Session, upload_ids: Sequence[int], kind: WriteKind
) -> dict[int, ChangeRecord]:
    """upload id -> the latest change of `kind` about it."""
    found: dict[int, ChangeRecord] = {}
    for chunk in _chunks(upload_ids):
        rows = session.scalars(
            select(PhotoChangeRow)
            .where(PhotoChangeRow.upload_id.in_(chunk), PhotoChangeRow.kind == kind)
            .order_by(PhotoChangeRow.id)
        )
        for change in rows:
            found[change.upload_id] = _change_record(change)
    return found


def record_change_intent(
    session: Session,
    run_id: int,
    kind: WriteKind,
    user_id: str,
    upload_id: int,
    *,
    before_object: str | None,
    written_object: str | None,
) -> int:
    change = PhotoChangeRow(
        run_id=run_id,
        kind=kind,
        user_id=user_id,
        upload_id=upload_id,
        status=ChangeStatus.PENDING,
        before_object=before_object,
        written_object=written_object,
        started_at=utcnow(),
    )
    session.add(change)
    session.flush()
    return change.id


def record_change_result(
    session: Session,
    change_id: int,
    status: ChangeStatus,
    reason: str,
    etag_after: str | None = None,
) -> None:
    change = session.get_one(PhotoChangeRow, change_id)
    change.status = status
    change.reason = reason
    change.etag_after = etag_after
    change.finished_at = utcnow()


def record_change_skipped(
    session: Session,
    run_id: int,
    kind: WriteKind,
    user_id: str,
    upload_id: int,
    reason: str,
    *,
    status: ChangeStatus = ChangeStatus.SKIPPED,
) -> None:
    """A change decided against (e.g. the photo was changed since by someone else): a
    finished row, so `runs show` and the next run can tell."""
    now = utcnow()
    session.add(
        PhotoChangeRow(
            run_id=run_id,
            kind=kind,
            user_id=user_id,
            upload_id=upload_id,
            status=status,
            reason=reason,
            started_at=now,
            finished_at=now,
        )
    )


def changes_of_run(session: Session, run_id: int) -> list[ChangeRecord]:
    rows = session.scalars(
        select(PhotoChangeRow).where(PhotoChangeRow.run_id == run_id).order_by(PhotoChangeRow.id)
    )
    return [_change_record(change) for change in rows]


def archive_references(session: Session, keep: int) -> set[str]:
    """Every archive object a kept version refers to: per user, the `keep` latest archived
    uploads and changes, plus every intent without a result (a killed run's "before")."""
    versions: dict[str, list[tuple[datetime, tuple[str | None, ...]]]] = {}
    pinned: set[str] = set()
    uploads = session.execute(
        select(
            UploadRow.user_id,
            UploadRow.started_at,
            UploadRow.replaced_object,
            UploadRow.uploaded_object,
            UploadRow.status,
        ).where(UploadRow.uploaded_object.is_not(None))
    )
    for user_id, started, replaced, uploaded, status in uploads:
        versions.setdefault(user_id, []).append((_aware(started), (replaced, uploaded)))
        if status in UNFINISHED_STATUSES and replaced:
            pinned.add(replaced)
    changes = session.execute(
        select(
            PhotoChangeRow.user_id,
            PhotoChangeRow.started_at,
            PhotoChangeRow.before_object,
            PhotoChangeRow.written_object,
            PhotoChangeRow.status,
        ).where(PhotoChangeRow.status.in_([ChangeStatus.PENDING, ChangeStatus.SUCCEEDED]))
    )
    for user_id, started, before, written, status in changes:
        versions.setdefault(user_id, []).append((_aware(started), (before, written)))
        if status == ChangeStatus.PENDING:
            pinned.update(o for o in (before, written) if o)
    kept: set[str] = set(pinned)
    for entries in versions.values():
        entries.sort(key=lambda e: e[0], reverse=True)
        for _at, objects in entries[:keep]:
            kept.update(o for o in objects if o)
    kept.discard(NO_PHOTO)
    return kept


def gone_files_with_photos(session: Session) -> list[tuple[str, UploadRecord]]:
    """Files removed from the inbox (location 'gone') whose upload is still the latest
    photosync write for its user, by file name: the candidates for prune."""
    writes = latest_writes(session)
    upload_ids = [
        w.upload_id for w in writes.values() if w.kind in (WriteKind.UPLOAD, WriteKind.FIX)
    ]
    found: list[tuple[str, UploadRecord]] = []
    for chunk in _chunks(upload_ids):
        rows = session.execute(
            select(InboxFileRow.name, UploadRow)
            .join(UploadRow, UploadRow.file_id == InboxFileRow.id)
            .where(UploadRow.id.in_(chunk), InboxFileRow.location == FileLocation.GONE)
        )
        found.extend((name, _upload_record(upload)) for name, upload in rows)
    # A user another file in the inbox still stands for (a renamed or replaced file) keeps
    # the photo: that file decides it.
    still_claimed = set(
        session.scalars(
            select(InboxFileRow.user_id).where(_IN_INBOX, InboxFileRow.user_id.is_not(None))
        )
    )
    return sorted([(f, u) for f, u in found if u.user_id not in still_claimed], key=lambda p: p[0])


def files_of_uploads(session: Session, upload_ids: Sequence[int]) -> dict[int, UploadSource]:
    """upload id -> the inbox file it uploaded (plain columns: verify reads 100,000)."""
    found: dict[int, UploadSource] = {}
    for chunk in _chunks(upload_ids):
        rows = session.execute(
            select(UploadRow.id, InboxFileRow.name, InboxFileRow.path, InboxFileRow.sha256)
            .join(InboxFileRow, InboxFileRow.id == UploadRow.file_id)
            .where(UploadRow.id.in_(chunk))
        )
        found.update({upload_id: UploadSource(n, p, sha) for upload_id, n, p, sha in rows})
    return found


def record_drift(
    session: Session,
    run_id: int,
    user_id: str,
    state: DriftState,
    expected_etag: str | None,
    seen_etag: str | None,
) -> None:
    row = session.get(PhotoDriftRow, user_id)
    now = utcnow()
    if row is None:
        session.add(
            PhotoDriftRow(
                user_id=user_id,
                state=state,
                expected_etag=expected_etag,
                seen_etag=seen_etag,
                first_seen_at=now,
                last_seen_at=now,
                last_run_id=run_id,
            )
        )
        return
    if row.expected_etag != expected_etag:
        row.first_seen_at = now  # a drift from a newer photo of ours is a new drift
    row.state, row.expected_etag, row.seen_etag = state, expected_etag, seen_etag
    row.last_seen_at, row.last_run_id = now, run_id


def clear_drift(session: Session, user_ids: Iterable[str]) -> None:
    for chunk in _chunks(user_ids):
        session.execute(delete(PhotoDriftRow).where(PhotoDriftRow.user_id.in_(chunk)))


def drifts(session: Session) -> list[DriftRecord]:
    rows = session.scalars(select(PhotoDriftRow).order_by(PhotoDriftRow.first_seen_at))
    return [_record(DriftRecord, row, state=DriftState(row.state)) for row in rows]


# --- rows as the values the rest of photosync reads


def _record(record_type: type[_R], row: object, **converted: Any) -> _R:
    """The value of one ORM row: every field of `record_type` is the row's column of the
    same name, except those given in `converted`."""
    columns = {f.name: getattr(row, f.name) for f in fields(record_type) if f.name not in converted}
    return record_type(**columns, **converted)


def _run_record(row: RunRow) -> RunRecord:
    return _record(RunRecord, row, counts={k: int(v) for k, v in (row.counts or {}).items()})


def _file_record(row: InboxFileRow) -> FileRecord:
    return _record(
        FileRecord,
        row,
        location=FileLocation(row.location),
        last_candidates=tuple(row.last_candidates or ()),
    )


def _upload_record(row: UploadRow) -> UploadRecord:
    return _record(
        UploadRecord,
        row,
        status=UploadStatus(row.status),
        quality_notes=tuple(row.quality_notes or ()),
    )


def _change_record(row: PhotoChangeRow) -> ChangeRecord:
    return _record(ChangeRecord, row, kind=WriteKind(row.kind), status=ChangeStatus(row.status))
