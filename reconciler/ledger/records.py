"""What the ledger hands out: frozen values read from its rows. The ORM classes
(ledger/orm.py) never leave the ledger package; every reader above it gets one of these, and
every change to a row goes through a function of ledger/repository.py."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from reconciler import model

# The archive object name for "the user had no photo" (uploads.replaced_object and
# photo_changes.before_object).
NO_PHOTO = "none"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One invocation of a command that runs: reconcile, retry-failed, rollback, verify."""

    id: int
    command: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    counts: Mapping[str, int]  # Outcome value -> count, as the run ended
    graph_requests: int
    host: str | None
    pid: int | None
    error: str | None  # why the run could not finish


@dataclass(frozen=True, slots=True)
class FileRecord:
    """A file that entered the inbox, from first sight to where it ended (the stat cache
    aside: that is InboxRecord's)."""

    id: int
    name: str
    path: str
    location: model.FileLocation
    destination: str | None
    first_seen_at: datetime
    last_attempt_at: datetime | None
    last_outcome: str | None
    last_reason: str | None
    # Candidate UPNs (ambiguous) or did-you-mean names (unmatched).
    last_candidates: tuple[str, ...]
    user_id: str | None


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """An upload's intent and, once known, its outcome."""

    id: int
    run_id: int
    file_id: int
    user_id: str
    status: model.UploadStatus
    http_status: int | None
    graph_error_code: str | None
    graph_error_message: str | None
    attempts: int
    client_request_id: str | None
    started_at: datetime
    finished_at: datetime | None
    # The archive objects of the photo this upload replaced (NO_PHOTO: none; None: the
    # archive was off) and of the bytes it sent, and the photo's ETag right after.
    replaced_object: str | None
    uploaded_object: str | None
    etag_after: str | None
    quality_notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RunFileRecord:
    """What one run decided and did for one file."""

    file_id: int
    file_name: str
    outcome: str
    reason: str
    user_id: str | None
    destination: str | None


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """A photo write that is not an upload: a rollback, a prune or a verify --fix."""

    id: int
    run_id: int
    kind: model.WriteKind  # rollback / prune / fix
    user_id: str
    upload_id: int  # the upload it undoes, removes or repeats
    status: model.ChangeStatus
    reason: str | None


@dataclass(frozen=True, slots=True)
class DriftRecord:
    """A user whose photo no longer carries the ETag photosync recorded."""

    user_id: str
    state: model.DriftState
    expected_etag: str | None
    seen_etag: str | None
    first_seen_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class StateRecord:
    """A named value carried over between runs, e.g. the users delta link."""

    value: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class InboxRecord:
    """What the ledger holds of a file still in the inbox."""

    id: int
    stat: model.FileStat
    sha256: str | None
    hashed_at_ns: int | None
    last_outcome: str | None = None


@dataclass(frozen=True, slots=True)
class PhotoWrite:
    """photosync's latest successful write of one user's photo: an upload, or a change made
    by rollback, prune or verify --fix."""

    user_id: str
    upload_id: int  # the upload itself, or the one the change was about
    kind: model.WriteKind
    change_id: int | None
    written_object: str | None  # None: the photo was removed (or not archived)
    etag: str | None
    at: datetime
    run_id: int


@dataclass(frozen=True, slots=True)
class UploadSource:
    """The little verify needs of the file an upload came from."""

    name: str
    path: str
    sha256: str | None
