"""The service layer: one function per command. Owns session lifetimes and wiring; the
decisions themselves live in planner/matching, the I/O in scanner/executor/graph."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from reconciler import images
from reconciler.config import Settings
from reconciler.errors import ConfigError, DeltaResyncRequired
from reconciler.executor import ApplyOptions, Executor
from reconciler.fingerprint import CachedFingerprint
from reconciler.graph.auth import TokenProvider, build_credential, token_scope
from reconciler.graph.client import GraphClient
from reconciler.ledger import models, repository
from reconciler.ledger.db import Ledger
from reconciler.ledger.models import utcnow
from reconciler.matching import UserIndex, parse_overrides
from reconciler.model import (
    USER_SELECT,
    Action,
    ActionKind,
    FileResult,
    Outcome,
    Plan,
    RunSummary,
    User,
)
from reconciler.planner import LedgerView, new_or_changed, plan
from reconciler.report import ReportRow
from reconciler.scanner import ScanResult, scan

log = logging.getLogger("reconciler")

ClientFactory = Callable[[Settings], GraphClient]


@dataclass
class Progress:
    """Hooks the CLI uses to draw progress bars; silent by default."""

    stage: Callable[[str], None] = lambda _name: None
    users: Callable[[int], None] = lambda _count: None
    uploads_total: Callable[[int], None] = lambda _count: None
    file_done: Callable[[FileResult], None] = lambda _result: None


def build_client(settings: Settings) -> GraphClient:
    """The real client: azure-identity credential per the auth setting, scope from graph_url."""
    factory = partial(
        build_credential,
        settings.auth,
        graph_url=settings.graph_url,
        client_id=settings.client_id,
        tenant_id=settings.tenant_id,
        certificate_path=str(settings.certificate_path) if settings.certificate_path else None,
        client_secret=settings.client_secret,
    )
    factory()  # surface a missing client_id/tenant_id as a ConfigError before any work
    tokens = TokenProvider(factory, mode=settings.auth, scope=token_scope(settings.graph_url))
    return GraphClient(
        settings.graph_url,
        tokens,
        concurrency=settings.concurrency,
        max_attempts=settings.retry_attempts,
    )


def open_ledger(settings: Settings) -> Ledger:
    ledger = Ledger(settings.database_url)
    ledger.upgrade()
    return ledger


def load_overrides(settings: Settings) -> dict[str, str]:
    if settings.overrides_file is None:
        return {}
    try:
        with settings.overrides_file.open(newline="", encoding="utf-8-sig") as handle:
            return parse_overrides(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            "overrides_file", f"cannot read {settings.overrides_file}: {exc}"
        ) from None
    except ValueError as exc:
        raise ConfigError("overrides_file", f"{settings.overrides_file} {exc}") from None


def prepare_options(settings: Settings) -> ApplyOptions:
    return ApplyOptions(
        completed_dir=settings.completed_dir,
        failed_dir=settings.failed_dir,
        move_completed=settings.move_completed,
        concurrency=settings.concurrency,
        prepare=partial(
            images.prepare,
            max_bytes=settings.max_bytes,
            max_dimension=settings.max_dimension,
            crop="square" if settings.crop == "square" else None,
        ),
    )


# --- user refresh


def refresh_users(client: GraphClient, ledger: Ledger, *, full: bool, progress: Progress) -> None:
    """Bring the ledger's users up to date with the fewest Graph requests: the saved delta
    link when there is one, otherwise (or when Graph has forgotten it) a full listing."""
    with ledger.session() as session:
        saved = repository.get_state(session, repository.DELTA_LINK)
        delta_link = saved.value if saved else None
    if delta_link and not full:
        try:
            changes = client.delta(delta_link)
        except DeltaResyncRequired as exc:
            log.warning("the users delta link is no longer valid (%s); listing all users", exc)
        else:
            now = utcnow()
            with ledger.session() as session:
                repository.upsert_users(session, changes.upserted, now)
                repository.mark_users_deleted(session, changes.removed, now)
                repository.set_state(session, repository.DELTA_LINK, changes.delta_link)
                repository.set_state(session, repository.USERS_REFRESHED_AT, now.isoformat())
            progress.users(len(changes.upserted) + len(changes.removed))
            return
    # Ask for the delta link *before* listing: changes made during the listing then show up
    # in the next delta round instead of being lost between the two.
    delta_link = client.delta_latest(USER_SELECT)
    started = utcnow()
    with ledger.session() as session:
        for page in client.list_users(USER_SELECT):
            repository.upsert_users(session, page, utcnow())
            progress.users(len(page))
        repository.mark_unrefreshed_users_deleted(session, started)
        repository.set_state(session, repository.DELTA_LINK, delta_link)
        repository.set_state(session, repository.USERS_REFRESHED_AT, started.isoformat())


# --- reconcile


@contextmanager
def _run(
    ledger: Ledger, command: str, dry_run: bool
) -> Iterator[tuple[RunSummary, list[GraphClient]]]:
    """Record a run from start to finish, including runs that end in an error."""
    started = time.monotonic()
    with ledger.session() as session:
        # Under the run lock no other run is uploading, so any pending intent is a dead run's.
        interrupted = repository.close_interrupted_uploads(session)
        summary = RunSummary(repository.start_run(session, command, dry_run))
    if interrupted:
        log.warning("%d upload(s) of an interrupted run will be redone", interrupted)
    clients: list[GraphClient] = []
    error: str | None = None
    try:
        yield summary, clients
    except Exception as exc:
        error = str(exc)
        raise
    finally:
        summary.graph_requests = sum(c.request_count for c in clients)
        summary.duration_s = time.monotonic() - started
        for client in clients:
            client.close()
        with ledger.session() as session:
            repository.finish_run(session, summary, 3 if error else summary.exit_code, error)


def _observe(settings: Settings, ledger: Ledger) -> tuple[ScanResult, dict[str, int], LedgerView]:
    with ledger.session() as session:
        cache: dict[str, CachedFingerprint] = repository.fingerprints(session)
    observed = scan(settings.inbox_dir, cache, settle_seconds=settings.settle_seconds)
    with ledger.session() as session:
        # The view is what the ledger knew *before* this scan: comparing against it is how
        # a run tells new and changed files from ones it has already seen.
        view = repository.ledger_view(session)
        file_ids = repository.record_scan(session, observed)
    return observed, file_ids, view


def reconcile(
    settings: Settings,
    *,
    dry_run: bool = False,
    full_refresh: bool = False,
    client_factory: ClientFactory = build_client,
    progress: Progress | None = None,
) -> tuple[RunSummary, Plan]:
    """observe -> refresh (only if something is new) -> plan -> apply -> report."""
    progress = progress or Progress()
    settings.require_folders()
    overrides = load_overrides(settings)
    ledger = open_ledger(settings)
    try:
        with ledger.run_lock(), _run(ledger, "reconcile", dry_run) as (summary, clients):
            progress.stage("scan")
            observed, file_ids, view = _observe(settings, ledger)
            client: GraphClient | None = None

            def refreshed_plan() -> Plan:
                nonlocal client
                progress.stage("users")
                client = client_factory(settings)
                clients.append(client)
                refresh_users(client, ledger, full=full_refresh, progress=progress)
                return plan_from_ledger()

            def plan_from_ledger() -> Plan:
                with ledger.session() as session:
                    index = UserIndex(repository.current_users(session), settings.match_on)
                return plan(observed.files, observed.deferred, view, index, overrides)

            if full_refresh or new_or_changed(observed.files, view):
                the_plan = refreshed_plan()
            else:
                the_plan = plan_from_ledger()
                # About to write to Graph anyway (a retry of an earlier failure): one delta
                # request first, so a user deleted since is not written to again.
                if the_plan.has_graph_work:
                    the_plan = refreshed_plan()
            if dry_run:
                for action in the_plan.actions:
                    summary.add(FileResult(action.file.name, action.outcome, action.reason))
                return summary, the_plan
            if the_plan.has_graph_work and client is None:
                client = client_factory(settings)
                clients.append(client)
            progress.stage("upload")
            progress.uploads_total(len(the_plan.actions))
            executor = Executor(
                ledger,
                summary.run_id,
                file_ids,
                prepare_options(settings),
                client,
                progress.file_done,
            )
            for result in executor.apply(the_plan):
                summary.add(result)
            return summary, the_plan
    finally:
        ledger.dispose()


def retry_failed(
    settings: Settings,
    *,
    include_permanent: bool = False,
    client_factory: ClientFactory = build_client,
    progress: Progress | None = None,
) -> tuple[RunSummary, Plan]:
    """Upload again the files whose last upload failed, to the user the ledger recorded:
    no listing, no matching, one request per file."""
    progress = progress or Progress()
    settings.require_folders()
    ledger = open_ledger(settings)
    try:
        with ledger.run_lock(), _run(ledger, "retry-failed", False) as (summary, clients):
            observed, file_ids, _view = _observe(settings, ledger)
            with ledger.session() as session:
                targets = repository.failed_uploads(session, include_permanent=include_permanent)
            actions = _retry_actions(observed, targets)
            the_plan = Plan(tuple(actions))
            if not actions:
                return summary, the_plan
            client = client_factory(settings)
            clients.append(client)
            progress.uploads_total(len(actions))
            executor = Executor(
                ledger,
                summary.run_id,
                file_ids,
                prepare_options(settings),
                client,
                progress.file_done,
            )
            for result in executor.apply(the_plan):
                summary.add(result)
            return summary, the_plan
    finally:
        ledger.dispose()


def _retry_actions(
    observed: ScanResult, targets: dict[str, repository.FailedUpload]
) -> list[Action]:
    actions = []
    for file in observed.files:
        target = targets.get(str(file.path))
        # Content changed since the failure: that is reconcile's business, not a retry.
        if target is None or target.source_sha256 != file.sha256:
            continue
        reason = f"retry of a failed upload for {target.user.label}"
        actions.append(Action(file, ActionKind.UPLOAD, Outcome.UPLOADED, reason, target.user))
    return actions


def upgrade_database(settings: Settings) -> tuple[str, str | None]:
    ledger = Ledger(settings.database_url)
    try:
        ledger.upgrade()
        return ledger.describe(), ledger.revision()
    finally:
        ledger.dispose()


# --- reading the ledger: status and reports (no Graph call, no lock)


def _open_existing(settings: Settings) -> Ledger:
    ledger = Ledger(settings.database_url)
    ledger.upgrade()  # an older ledger is brought up to date; reads need the current schema
    return ledger


def status(settings: Settings, *, runs: int = 10) -> dict[str, Any]:
    ledger = _open_existing(settings)
    try:
        with ledger.session() as session:
            recent = repository.recent_runs(session, runs)
            waiting = repository.waiting_counts(session)
            delta = repository.get_state(session, repository.DELTA_LINK)
            users = repository.count_users(session)
        failures: dict[str, int] = {}
        with ledger.session() as session:
            for row in repository.not_landed(session):
                if row.last_outcome in ("failed", "invalid"):
                    failures[row.last_outcome] = failures.get(row.last_outcome, 0) + 1
        now = utcnow()
        return {
            "ledger": ledger.describe(),
            "schema_revision": ledger.revision(),
            "users": users,
            "delta_token_age_s": _age_seconds(delta.updated_at, now) if delta else None,
            "waiting": waiting,
            "failures": failures,
            "runs": [_run_view(run) for run in recent],
        }
    finally:
        ledger.dispose()


def _age_seconds(then: datetime, now: datetime) -> float:
    if then.tzinfo is None:  # SQLite returns naive datetimes; we only ever store UTC
        then = then.replace(tzinfo=UTC)
    return round((now - then).total_seconds(), 1)


def _run_view(run: models.Run) -> dict[str, Any]:
    started = (
        run.started_at.replace(tzinfo=UTC) if run.started_at.tzinfo is None else run.started_at
    )
    duration = None
    if run.finished_at is not None:
        duration = _age_seconds(
            started,
            run.finished_at.replace(tzinfo=UTC)
            if run.finished_at.tzinfo is None
            else run.finished_at,
        )
    return {
        "run_id": run.id,
        "command": run.command,
        "dry_run": run.dry_run,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": duration,
        "counts": run.counts,
        "graph_requests": run.graph_requests,
        "exit_code": run.exit_code,
        "error": run.error,
    }


def report_unmatched(settings: Settings) -> list[ReportRow]:
    ledger = _open_existing(settings)
    try:
        with ledger.session() as session:
            files = repository.not_landed(session)
            uploads = repository.last_uploads_of(session, [f.id for f in files])
            users = repository.users_by_id(session, {f.user_id for f in files if f.user_id})
            return [_report_row(f, uploads.get(f.id), users) for f in files]
    finally:
        ledger.dispose()


def _report_row(
    file: models.InboxFile, upload: models.Upload | None, users: dict[str, User]
) -> ReportRow:
    reason = file.last_outcome or "deferred"
    if file.location == "failed":
        reason = "invalid"
    detail = file.last_reason or ""
    attempts = None
    last_attempt = file.last_attempt_at
    if reason == "failed" and upload is not None:
        attempts = upload.attempts
        last_attempt = upload.finished_at or upload.started_at
        code = upload.graph_error_code or f"HTTP {upload.http_status}"
        detail = f"{code}: {upload.graph_error_message} ({upload.attempts} attempts)"
    user = users.get(file.user_id) if file.user_id else None
    return ReportRow(
        file=file.name,
        reason=reason,
        detail=detail,
        user=user.label if user else None,
        candidates=list(file.last_candidates or []),
        attempts=attempts,
        first_seen=file.first_seen_at,
        last_attempt=last_attempt,
        location=file.location,
        path=file.destination or file.path,
    )
