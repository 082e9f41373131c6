"""The read side: what `status`, `runs list`, `runs show` and `report unmatched` show, read
from the ledger alone (no Graph call, no lock, no write).

Each answer is a frozen view whose to_json() is the command's --json output, which scripts
read (README, "Commands"): its keys, their order, and null where a value is unknown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from reconciler.config import Settings
from reconciler.ledger import repository, state
from reconciler.ledger.db import Ledger
from reconciler.ledger.records import (
    ChangeRecord,
    FileRecord,
    RunFileRecord,
    RunRecord,
    UploadRecord,
)
from reconciler.model import (
    FAILED_STATUSES,
    ChangeStatus,
    FileLocation,
    Outcome,
    RunSummary,
    User,
    WriteKind,
)
from reconciler.report import REASONS, ReportRow

# The commands whose --json always carries the per-user outcomes (RunSummary.per_user).
PER_USER_COMMANDS = frozenset({"rollback", "verify"})


# --- the views


@dataclass(frozen=True, slots=True)
class RunView:
    """A recorded run as `reconcile --json` printed it (RunSummary.to_json: the contract's
    flat counts, graph_requests, duration_s, dry_run), plus what only the ledger knows:
    command, started_at, exit_code and error. duration_s is None while a run is going."""

    run_id: int
    counts: Mapping[Outcome, int]
    graph_requests: int
    duration_s: float | None
    dry_run: bool
    per_user: bool
    command: str
    started_at: str  # ISO 8601, UTC, to the second
    exit_code: int | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        # The counts are not repeated under a `counts` key: nothing reads them there.
        summary = RunSummary(
            self.run_id,
            counts=dict(self.counts),
            graph_requests=self.graph_requests,
            dry_run=self.dry_run,
            per_user=self.per_user,
        )
        data = summary.to_json()
        data["duration_s"] = self.duration_s
        return data | {
            "command": self.command,
            "started_at": self.started_at,
            "exit_code": self.exit_code,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class FailureReason:
    """Files that failed for the same reason, which status counts together."""

    outcome: str  # failed / invalid
    reason: str
    files: int

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reason": self.reason, "files": self.files}


@dataclass(frozen=True, slots=True)
class DriftSummary:
    """Photos `verify` found changed or removed outside photosync."""

    count: int
    oldest: str | None  # when the oldest was first seen, ISO 8601

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "oldest": self.oldest}


@dataclass(frozen=True, slots=True)
class IgnoredFile:
    """A link or folder in the inbox, with what to do about it: nothing else lists them."""

    file: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class StatusView:
    """The ledger at a glance."""

    ledger: str
    schema_revision: str | None
    users: int
    delta_token_age_s: float | None
    # How stale the backstop for what delta rounds miss is (full_refresh_hours).
    full_listing_age_s: float | None
    waiting: Mapping[str, int]  # files in the inbox by last outcome ("new": none yet)
    failures: Mapping[str, int]  # failed / invalid -> files
    failure_reasons: tuple[FailureReason, ...]  # most files first
    runs: tuple[RunView, ...]  # newest first
    drift: DriftSummary
    ignored: tuple[IgnoredFile, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger,
            "schema_revision": self.schema_revision,
            "users": self.users,
            "delta_token_age_s": self.delta_token_age_s,
            "full_listing_age_s": self.full_listing_age_s,
            "waiting": dict(self.waiting),
            "failures": dict(self.failures),
            "failure_reasons": [f.to_json() for f in self.failure_reasons],
            "runs": [r.to_json() for r in self.runs],
            "drift": self.drift.to_json(),
            "ignored": [i.to_json() for i in self.ignored],
        }


@dataclass(frozen=True, slots=True)
class RunFileView:
    """What one run did with one file, with its upload's HTTP status and client-request-id
    for a support ticket."""

    file: str
    outcome: str
    reason: str
    user_id: str | None
    user: str | None
    destination: str | None
    http_status: int | None
    attempts: int | None
    client_request_id: str | None
    quality_notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "outcome": self.outcome,
            "reason": self.reason,
            "user_id": self.user_id,
            "user": self.user,
            "destination": self.destination,
            "http_status": self.http_status,
            "attempts": self.attempts,
            "client_request_id": self.client_request_id,
            "quality_notes": list(self.quality_notes),
        }


@dataclass(frozen=True, slots=True)
class ChangeView:
    """What a rollback, prune or verify --fix did for one user."""

    kind: WriteKind
    user_id: str
    user: str
    status: ChangeStatus
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "user_id": self.user_id,
            "user": self.user,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RunDetailsView:
    """What one run did, file by file and user by user."""

    run: RunView
    host: str | None
    pid: int | None
    files: tuple[RunFileView, ...]
    changes: tuple[ChangeView, ...]

    def to_json(self) -> dict[str, Any]:
        return self.run.to_json() | {
            "host": self.host,
            "pid": self.pid,
            "files": [f.to_json() for f in self.files],
            "changes": [c.to_json() for c in self.changes],
        }


# --- the queries


def read_ledger(settings: Settings) -> Ledger:
    """The ledger opened read-only, as it is: never created, migrated, locked or written,
    so the read-only commands work for an account that may only read it. A missing ledger,
    or one not at this photosync's revision, is a one-line LedgerUnusable (exit 2)."""
    ledger = Ledger(settings.database_url, read_only=True)
    try:
        ledger.require_usable(migrating=False)
    except BaseException:
        ledger.dispose()
        raise
    return ledger


def status(settings: Settings, *, runs: int = 10) -> StatusView:
    """The ledger at a glance: last runs, files waiting, failures by reason, the delta
    token's age, where the ledger is and its schema revision."""
    ledger = read_ledger(settings)
    try:
        with ledger.session() as session:
            recent = repository.recent_runs(session, runs)
            waiting = repository.waiting_counts(session)
            delta = repository.get_state(session, state.DELTA_LINK)
            listed_at = repository.full_listing_at(session)
            users = repository.count_users(session)
            drifted = repository.drifts(session)
        rows = _not_landed_rows(ledger, settings.include_external_members)
        failures: dict[str, int] = {}
        by_reason: dict[tuple[str, str], int] = {}
        for row in rows:
            if row.reason in ("failed", "invalid"):
                failures[row.reason] = failures.get(row.reason, 0) + 1
                key = (row.reason, _failure_key(row))
                by_reason[key] = by_reason.get(key, 0) + 1
        now = datetime.now(UTC)
        return StatusView(
            ledger=ledger.describe(),
            schema_revision=ledger.revision(),
            users=users,
            delta_token_age_s=_seconds_between(delta.updated_at, now) if delta else None,
            full_listing_age_s=_seconds_between(listed_at, now) if listed_at else None,
            waiting=waiting,
            failures=failures,
            failure_reasons=tuple(
                FailureReason(outcome, reason, count)
                for (outcome, reason), count in sorted(by_reason.items(), key=lambda i: -i[1])
            ),
            runs=tuple(_run_view(run) for run in recent),
            drift=DriftSummary(len(drifted), _iso(drifted[0].first_seen_at) if drifted else None),
            ignored=tuple(IgnoredFile(r.file, r.detail) for r in rows if r.reason == "ignored"),
        )
    finally:
        ledger.dispose()


def runs_list(settings: Settings, *, limit: int = 20) -> list[RunView]:
    """The last `limit` runs, newest first."""
    ledger = read_ledger(settings)
    try:
        with ledger.session() as session:
            return [_run_view(run) for run in repository.recent_runs(session, limit)]
    finally:
        ledger.dispose()


def run_details(settings: Settings, run_id: int) -> RunDetailsView | None:
    """What one run did, file by file (table run_files), and user by user (table
    photo_changes); None when the ledger has no such run."""
    ledger = read_ledger(settings)
    try:
        with ledger.session() as session:
            run = repository.get_run(session, run_id)
            if run is None:
                return None
            run_files = repository.run_files_of(session, run_id)
            uploads = repository.uploads_of_run(session, run_id)
            changes = repository.changes_of_run(session, run_id)
            users = repository.users_by_id(
                session,
                {rf.user_id for rf in run_files if rf.user_id} | {c.user_id for c in changes},
            )
        return RunDetailsView(
            run=_run_view(run),
            host=run.host,
            pid=run.pid,
            files=tuple(_run_file_view(rf, uploads.get(rf.file_id), users) for rf in run_files),
            changes=tuple(_change_view(change, users) for change in changes),
        )
    finally:
        ledger.dispose()


def report_unmatched(settings: Settings) -> list[ReportRow]:
    """Every file that has not landed, with its reason's detail; the ledger alone."""
    ledger = read_ledger(settings)
    try:
        return _not_landed_rows(ledger, settings.include_external_members)
    finally:
        ledger.dispose()


# --- building the views


def _run_view(run: RunRecord) -> RunView:
    finished = run.finished_at
    return RunView(
        run_id=run.id,
        counts={o: int(run.counts.get(o.value, 0)) for o in Outcome},
        graph_requests=run.graph_requests,
        duration_s=_seconds_between(run.started_at, finished) if finished else None,
        dry_run=run.dry_run,
        per_user=run.command in PER_USER_COMMANDS,
        command=run.command,
        started_at=_iso(run.started_at),
        exit_code=run.exit_code,
        error=run.error,
    )


def _run_file_view(
    run_file: RunFileRecord, upload: UploadRecord | None, users: Mapping[str, User]
) -> RunFileView:
    user = users.get(run_file.user_id) if run_file.user_id else None
    return RunFileView(
        file=run_file.file_name,
        outcome=run_file.outcome,
        reason=run_file.reason,
        user_id=run_file.user_id,
        user=user.label if user else None,
        destination=run_file.destination,
        http_status=upload.http_status if upload else None,
        attempts=upload.attempts if upload else None,
        client_request_id=upload.client_request_id if upload else None,
        quality_notes=upload.quality_notes if upload else (),
    )


def _change_view(change: ChangeRecord, users: Mapping[str, User]) -> ChangeView:
    user = users.get(change.user_id)
    return ChangeView(
        kind=change.kind,
        user_id=change.user_id,
        user=user.label if user else change.user_id,
        status=change.status,
        reason=change.reason,
    )


def _failure_key(row: ReportRow) -> str:
    """What failures have in common, so that status can count them together."""
    if row.reason == "invalid":
        return row.image_error or row.detail
    if row.graph_error_code:
        return row.graph_error_code + (f" (HTTP {row.http_status})" if row.http_status else "")
    if row.http_status:
        return f"HTTP {row.http_status}"
    return row.graph_error_message or row.detail


def _not_landed_rows(ledger: Ledger, include_external: bool) -> list[ReportRow]:
    with ledger.session() as session:
        files = repository.not_landed(session)
        ids = [f.id for f in files]
        uploads = repository.last_uploads_of(session, ids)
        considered = repository.last_considered(session, ids)
        users = repository.users_by_id(session, {f.user_id for f in files if f.user_id})
        rows = [
            _report_row(f, uploads.get(f.id), considered.get(f.id), users, include_external)
            for f in files
        ]
        rows += _drift_rows(session)
    return sorted(rows, key=lambda r: (REASONS.index(r.reason), r.file))


def _drift_rows(session: Session) -> list[ReportRow]:
    """One row per photo `verify` found changed or removed outside photosync."""
    drifted = repository.drifts(session)
    writes = repository.latest_writes(session) if drifted else {}
    files = repository.files_of_uploads(
        session, [writes[d.user_id].upload_id for d in drifted if d.user_id in writes]
    )
    users = repository.users_by_id(session, {d.user_id for d in drifted})
    rows = []
    for drift in drifted:
        write = writes.get(drift.user_id)
        file = files.get(write.upload_id) if write else None
        user = users.get(drift.user_id)
        label = user.label if user else drift.user_id
        rows.append(
            ReportRow(
                file=file.name if file else label,
                reason="drifted",
                detail=(
                    f"the photo photosync set was {drift.state} since by someone else; "
                    "`photosync verify --fix` puts it back"
                ),
                suggestions=[],
                candidates=[],
                ineligible_because=None,
                image_error=None,
                graph_error_code=None,
                graph_error_message=None,
                http_status=None,
                attempts=None,
                user=label,
                first_seen=_utc(drift.first_seen_at),
                last_attempt=_utc(drift.last_seen_at),
                location="graph",
                path=file.path if file else "",
            )
        )
    return rows


def _report_row(
    file: FileRecord,
    upload: UploadRecord | None,
    considered: datetime | None,
    users: Mapping[str, User],
    include_external: bool,
) -> ReportRow:
    reason = "invalid" if file.location is FileLocation.FAILED else file.last_outcome or "deferred"
    user = users.get(file.user_id) if file.user_id else None
    # Only a failed upload explains a "failed" file; a failed move after a good upload doesn't.
    graph_failure = (
        upload if reason == "failed" and upload and upload.status in FAILED_STATUSES else None
    )
    last_attempt = considered or file.last_attempt_at
    if graph_failure is not None:
        last_attempt = graph_failure.finished_at or graph_failure.started_at
    listed = list(file.last_candidates)
    return ReportRow(
        file=file.name,
        reason=reason,
        detail=file.last_reason or "",
        suggestions=listed if reason == "unmatched" else [],
        candidates=listed if reason == "ambiguous" else [],
        ineligible_because=(
            user.ineligibility(include_external=include_external)
            if user and reason == "ineligible"
            else None
        ),
        image_error=file.last_reason if reason == "invalid" else None,
        graph_error_code=graph_failure.graph_error_code if graph_failure else None,
        graph_error_message=graph_failure.graph_error_message if graph_failure else None,
        http_status=graph_failure.http_status if graph_failure else None,
        attempts=graph_failure.attempts if graph_failure else None,
        user=user.label if user else None,
        first_seen=_utc(file.first_seen_at),
        last_attempt=_utc(last_attempt) if last_attempt else None,
        location=file.location,
        path=file.destination or file.path,
        # The notes on the photo as it was prepared for its last upload (failed ones too).
        quality_notes=list(upload.quality_notes) if upload else [],
    )


# --- time as the ledger stores it


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for what was stored in UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _iso(value: datetime) -> str:
    return _utc(value).isoformat(timespec="seconds")


def _seconds_between(then: datetime, now: datetime) -> float:
    return round((_utc(now) - _utc(then)).total_seconds(), 1)
