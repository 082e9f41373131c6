"""The ledger's tables, as SQLAlchemy 2.0 typed ORM classes.

The ledger is the memory that lets each run do only what changed: the users as Graph last
described them, the inbox files as last observed (the stat cache), every upload's intent and
outcome, and the delta link that resumes the user refresh.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from reconciler.model import ChangeStatus, FileLocation, UploadStatus

# Stable constraint names, so Alembic migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class RunRow(Base):
    """One invocation of reconcile or retry-failed."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command: Mapped[str] = mapped_column(String(32))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    exit_code: Mapped[int | None]
    # Outcome -> count, the contract's summary keys.
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    graph_requests: Mapped[int] = mapped_column(Integer, default=0)
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None]
    # Why a run could not finish (auth, unreachable Graph...), for `status`.
    error: Mapped[str | None] = mapped_column(Text)


class UserRow(Base):
    """A tenant user as Graph last described it. Deleted users are kept (deleted_at set)
    so upload history still names them."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(512))
    user_principal_name: Mapped[str | None] = mapped_column(String(512))
    mail: Mapped[str | None] = mapped_column(String(512))
    mail_nickname: Mapped[str | None] = mapped_column(String(512))
    employee_id: Mapped[str | None] = mapped_column(String(128))
    # NULL: Graph has not told us, which is never read as enabled or as a member.
    account_enabled: Mapped[bool | None] = mapped_column(Boolean)
    user_type: Mapped[str | None] = mapped_column(String(32))
    # What marks an external (B2B) account besides an #EXT# userPrincipalName.
    creation_type: Mapped[str | None] = mapped_column(String(64))
    external_user_state: Mapped[str | None] = mapped_column(String(64))
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_users_user_principal_name", "user_principal_name"),)


class InboxFileRow(Base):
    """One file that entered the inbox, from first sight to where it ended.

    While the file is in the inbox, (size, mtime_ns, ctime_ns, inode) is the stat cache that
    vouches for `sha256` without reading the file again.
    """

    __tablename__ = "inbox_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(1024))
    path: Mapped[str] = mapped_column(String(4096))
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    ctime_ns: Mapped[int] = mapped_column(BigInteger)
    inode: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # When the hash was taken (ns since epoch): a file modified too close to this instant
    # cannot be trusted by its stat alone (racy timestamps).
    hashed_at_ns: Mapped[int | None] = mapped_column(BigInteger)
    # A model.FileLocation value.
    location: Mapped[str] = mapped_column(String(16), default=FileLocation.INBOX.value)
    destination: Mapped[str | None] = mapped_column(String(4096))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_attempt_at: Mapped[datetime | None]
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_reason: Mapped[str | None] = mapped_column(Text)
    # Candidate UPNs (ambiguous) or did-you-mean names (unmatched).
    last_candidates: Mapped[list[str] | None]
    last_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    user_id: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (Index("ix_inbox_files_location_path", "location", "path"),)


class UploadRow(Base):
    """An upload's intent, then its outcome. A row with status 'pending' is an intent whose
    result was never recorded (a crash): it is not a success."""

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    file_id: Mapped[int] = mapped_column(ForeignKey("inbox_files.id"))
    user_id: Mapped[str] = mapped_column(String(64))
    source_sha256: Mapped[str] = mapped_column(String(64))
    uploaded_sha256: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(64))
    # original / stripped / reencoded: how the uploaded bytes were made.
    prepare_path: Mapped[str | None] = mapped_column(String(16))
    source_bytes: Mapped[int | None] = mapped_column(BigInteger)
    uploaded_bytes: Mapped[int | None] = mapped_column(BigInteger)
    source_width: Mapped[int | None]
    source_height: Mapped[int | None]
    uploaded_width: Mapped[int | None]
    uploaded_height: Mapped[int | None]
    # A model.UploadStatus value.
    status: Mapped[str] = mapped_column(String(20), default=UploadStatus.PENDING.value)
    http_status: Mapped[int | None]
    graph_error_code: Mapped[str | None] = mapped_column(String(128))
    graph_error_message: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    client_request_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # The archive (reconciler/archive.py): the sha256 object of the photo this upload
    # replaced (records.NO_PHOTO when the user had none; NULL when the archive was off), the object
    # of the bytes sent, and the photo ETag Graph reported right after the upload.
    replaced_object: Mapped[str | None] = mapped_column(String(64))
    uploaded_object: Mapped[str | None] = mapped_column(String(64))
    etag_after: Mapped[str | None] = mapped_column(String(256))
    # What a person should know about the photo as uploaded ("no face found", "blurred
    # (...)"; reconciler/faces/quality.py); NULL for uploads made before migration 0005.
    quality_notes: Mapped[list[str] | None]

    __table_args__ = (
        Index("ix_uploads_user_id_status", "user_id", "status"),
        Index("ix_uploads_file_id", "file_id"),
    )


class SyncStateRow(Base):
    """Small named values that carry over between runs, e.g. the users delta link."""

    __tablename__ = "sync_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunFileRow(Base):
    """What one run decided and did for one file: the history behind `runs show`."""

    __tablename__ = "run_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    file_id: Mapped[int] = mapped_column(ForeignKey("inbox_files.id"))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(64))
    destination: Mapped[str | None] = mapped_column(String(4096))

    __table_args__ = (Index("ix_run_files_run_id", "run_id"),)


class PhotoChangeRow(Base):
    """A photo write that is not an upload of an inbox file: a rollback (restore or
    remove), a prune, or a verify --fix. Recorded as an intent first ('pending'), like an
    upload, so a killed run is finished by the next one (docs/reliability.md)."""

    __tablename__ = "photo_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    # A model.WriteKind value other than upload.
    kind: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(64))
    # The upload this change undoes (rollback), removes (prune) or repeats (fix).
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id"))
    # A model.ChangeStatus value.
    status: Mapped[str] = mapped_column(String(16), default=ChangeStatus.PENDING.value)
    reason: Mapped[str | None] = mapped_column(Text)
    # Archive objects: the photo this change replaced, and what it wrote (NULL: removed).
    before_object: Mapped[str | None] = mapped_column(String(64))
    written_object: Mapped[str | None] = mapped_column(String(64))
    etag_after: Mapped[str | None] = mapped_column(String(256))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_photo_changes_upload_id", "upload_id"),
        Index("ix_photo_changes_user_id", "user_id"),
    )


class PhotoDriftRow(Base):
    """A user whose photo no longer carries the ETag photosync recorded: someone changed or
    removed it. Written by `verify`; gone once verify finds the photo back in line."""

    __tablename__ = "photo_drift"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # A model.DriftState value.
    state: Mapped[str] = mapped_column(String(16))
    expected_etag: Mapped[str | None] = mapped_column(String(256))
    seen_etag: Mapped[str | None] = mapped_column(String(256))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
