"""The service layer: one function per command. Owns session lifetimes and wiring; the
decisions themselves live in planner/matching, the I/O in scanner/executor/graph."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from reconciler import dry_run as what_if
from reconciler import images, logs, undo
from reconciler.archive import ArchiveError
from reconciler.config import Settings, checked_for_reconcile, load_overrides
from reconciler.errors import DeltaResyncRequired
from reconciler.executor import ApplyOptions, Executor
from reconciler.graph.auth import TokenProvider, build_credential, token_scope
from reconciler.graph.client import FILTER_VALUES_LIMIT, GraphClient
from reconciler.ledger import repository, state
from reconciler.ledger.db import Ledger
from reconciler.matching import UserIndex
from reconciler.model import (
    USER_SELECT,
    ActionKind,
    FileResult,
    LedgerView,
    Plan,
    RunSummary,
    User,
    UserChanges,
)
from reconciler.planner import (
    confirm,
    confirmation_lookups,
    new_or_changed,
    plan,
    plan_retries,
    undecided,
    waiting,
)
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


def prepare_options(settings: Settings) -> ApplyOptions:
    return ApplyOptions(
        completed_dir=settings.completed_dir,
        failed_dir=settings.failed_dir,
        move_completed=settings.move_completed,
        concurrency=settings.concurrency,
        prepare=partial(
            images.prepare_bytes,
            max_bytes=settings.max_bytes,
            max_dimension=settings.max_dimension,
            crop=settings.crop if settings.crop in ("square", "face") else None,
            require_face=settings.require_face,
        ),
        # Keep what was there: the photo each write replaces, and the bytes it sends.
        archive=undo.archive_for(settings) if settings.archive else None,
    )


# --- user refresh


def refresh_users(
    client: GraphClient,
    ledger: Ledger,
    *,
    full: bool,
    progress: Progress,
    full_refresh_hours: float = 24.0,
) -> None:
    """Bring the ledger's users up to date with the fewest Graph requests: the saved delta
    link when there is one, otherwise a full listing. A full listing also replaces the
    delta round once the last one is older than `full_refresh_hours`: delta rounds can
    miss restores and, if a `$deltatoken=latest` link forgets its `$select`, eligibility
    changes (docs/graph-behaviour.md, "Full listing as a backstop")."""
    with ledger.session() as session:
        saved = repository.get_state(session, state.DELTA_LINK)
        delta_link = saved.value if saved else None
        listed_at = repository.full_listing_at(session)
    due = listed_at is None or (_utcnow() - listed_at).total_seconds() >= full_refresh_hours * 3600
    if delta_link and not full and not due:
        try:
            changes = client.delta(delta_link)
        except DeltaResyncRequired as exc:
            log.warning("the users delta link is no longer valid (%s); listing all users", exc)
        else:
            _apply_user_changes(client, ledger, changes)
            progress.users(len(changes.upserted) + len(changes.removed))
            return
    # Ask for the delta link *before* listing: changes made during the listing then show up
    # in the next delta round instead of being lost between the two.
    delta_link = client.delta_latest(USER_SELECT)
    started = _utcnow()
    with ledger.session() as session:
        for page in client.list_users(USER_SELECT):
            repository.upsert_users(session, page, _utcnow())
            progress.users(len(page))
        repository.mark_unrefreshed_users_deleted(session, started)
        repository.set_state(session, state.DELTA_LINK, delta_link)
        repository.set_state(session, state.FULL_LISTING_AT, started.isoformat())


def _apply_user_changes(client: GraphClient, ledger: Ledger, changes: UserChanges) -> None:
    """Store one delta round. Items are patches: a user the ledger holds changes only in
    the properties its item carries. A user never seen before whose item lacks a property
    photosync needs is read in full first; if Graph cannot show it yet (replication), it
    is kept with what is known, which is never eligible (docs/graph-behaviour.md, "Delta
    items are patches"). Everything lands in one transaction with the new delta link."""
    with ledger.session() as session:
        known = repository.known_user_ids(session, [p.id for p in changes.upserted])
    patches = [p for p in changes.upserted if p.id in known]
    newcomers: list[User] = []
    for patch in changes.upserted:
        if patch.id in known:
            continue
        item = None if patch.is_complete else client.get_user(patch.id, USER_SELECT)
        newcomers.append(User.from_graph({**(item or patch.properties), "id": patch.id}))
    now = _utcnow()
    with ledger.session() as session:
        repository.apply_user_patches(session, patches, now)
        repository.upsert_users(session, newcomers, now)
        repository.mark_users_deleted(session, changes.removed, now)
        repository.set_state(session, state.DELTA_LINK, changes.delta_link)


def _chunked(values: list[str], size: int) -> list[list[str]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


def confirm_before_write(run: _Run, the_plan: Plan, overrides: Mapping[str, str]) -> Plan:
    """Ask Graph, in this run, who each planned upload's file key names now, and keep only
    the uploads that still go to exactly the planned eligible user. Costs ceil(k/15)
    requests for k uploads, plus one read per planned user Graph no longer vouches for
    (docs/graph-behaviour.md, "Confirm before write"). The ledger learns every user read."""
    settings = run.settings
    lookups = confirmation_lookups(the_plan, overrides, settings.match_on)
    if not lookups:
        return the_plan
    client = run.graph()
    values: dict[str, set[str]] = {}
    for lookup in lookups.values():
        values.setdefault(lookup.graph_property, set()).add(lookup.value)
    # One lookup per FILTER_VALUES_LIMIT values, sent `concurrency` at a time: reads do not
    # count against the photo write quota, and 500 uploads need 34 of them.
    requests = [
        (graph_property, chunk)
        for graph_property, wanted in values.items()
        for chunk in _chunked(sorted(wanted), FILTER_VALUES_LIMIT)
    ]
    found: dict[str, User] = {}
    with ThreadPoolExecutor(settings.concurrency, "photosync-confirm") as pool:
        answers = pool.map(lambda r: client.find_users(r[0], r[1], USER_SELECT), requests)
        for answer in answers:
            for item in answer:
                user = User.from_graph(item)
                found[user.id] = user
    confirmed = confirm(
        the_plan, lookups, found.values(), include_external=settings.include_external_members
    )
    kept = {id(a.file) for a in confirmed.of_kind(ActionKind.UPLOAD)}
    unvouched = {
        a.user.id
        for a in the_plan.of_kind(ActionKind.UPLOAD)
        if a.user is not None and id(a.file) not in kept and a.user.id not in found
    }
    gone: list[str] = []
    for user_id in sorted(unvouched):
        current = client.get_user(user_id, USER_SELECT)
        if current is None:
            gone.append(user_id)
        else:
            found[user_id] = User.from_graph(current)
    now = _utcnow()
    with run.ledger.session() as session:
        repository.upsert_users(session, list(found.values()), now)
        repository.mark_users_deleted(session, gone, now)
    return confirmed


# --- reconcile


@dataclass
class _Run:
    """One recorded run: its ledger (locked), its summary, and the Graph client it opened."""

    settings: Settings
    ledger: Ledger
    summary: RunSummary
    client_factory: ClientFactory
    client: GraphClient | None = None

    def graph(self) -> GraphClient:
        """The run's one Graph client, created on first need: a run with nothing to do
        never authenticates."""
        if self.client is None:
            self.client = self.client_factory(self.settings)
        return self.client


@contextmanager
def _run(
    settings: Settings, command: str, dry_run: bool, client_factory: ClientFactory
) -> Iterator[_Run]:
    """Open the ledger, take the run lock, and record the run from start to finish,
    including runs that end in an error."""
    ledger = Ledger(settings.database_url)
    try:
        logs.ledger_file_warned(ledger.file_warnings())
        with ledger.run_lock():
            # Migrated under the lock: two runs never migrate at once, nor one under another.
            ledger.upgrade()
            started = time.monotonic()
            with ledger.session() as session:
                # Under the run lock nobody else is uploading: a pending intent is a dead run's,
                # and so is every other run without an end.
                interrupted = repository.close_interrupted_uploads(session)
                summary = RunSummary(
                    repository.start_run(session, command, dry_run), dry_run=dry_run
                )
                abandoned = repository.close_abandoned_runs(session, summary.run_id)
            logs.run_started(summary.run_id, command, dry_run, settings)
            if abandoned:
                log.warning(
                    "closed run(s) %s as abandoned: their process stopped before they finished",
                    ", ".join(map(str, abandoned)),
                )
            if interrupted:
                log.warning("%d upload(s) of an interrupted run will be redone", interrupted)
            run = _Run(settings, ledger, summary, client_factory)
            error: str | None = None
            error_code = 3
            try:
                yield run
            except KeyboardInterrupt:
                # Ctrl+C or a service stop: recorded as a run that could not finish, not as
                # a clean one with whatever counts it had reached.
                error = "interrupted"
                raise
            except Exception as exc:
                error = str(exc)
                # Asked for what the ledger does not hold (rollback of an unknown run): usage.
                error_code = 2 if isinstance(exc, undo.UsageError) else 3
                raise
            finally:
                if settings.archive and not dry_run and error is None:
                    _trim_archive(settings, ledger)
                if run.client is not None:
                    summary.graph_requests = run.client.request_count
                    run.client.close()
                summary.duration_s = time.monotonic() - started
                with ledger.session() as session:
                    exit_code = error_code if error else summary.exit_code
                    repository.finish_run(session, summary, exit_code, error)
                logs.run_finished(summary, exit_code, error)
    finally:
        ledger.dispose()


def _trim_archive(settings: Settings, ledger: Ledger) -> None:
    """archive_keep versions per user, when the run ends; a failure only costs space."""
    try:
        removed = undo.trim_archive(settings, ledger)
    except (OSError, ArchiveError) as exc:
        log.warning("the archive could not be trimmed to archive_keep versions: %s", exc)
        return
    if removed:
        log.info("archive: %d object(s) no kept version refers to were deleted", removed)


def _observe(settings: Settings, ledger: Ledger) -> tuple[ScanResult, dict[str, int], LedgerView]:
    with ledger.session() as session:
        rows = repository.inbox_records(session)
    cache = repository.fingerprints(rows)
    observed = scan(settings.inbox_dir, cache, settle_seconds=settings.settle_seconds)
    with ledger.session() as session:
        # The view is what the ledger knew *before* this scan: comparing against it is how
        # a run tells new and changed files from ones it has already seen.
        view = repository.ledger_view(session, rows)
        file_ids = repository.record_scan(session, observed, rows)
    return observed, file_ids, view


def reconcile(
    settings: Settings,
    *,
    dry_run: bool = False,
    full_refresh: bool = False,
    client_factory: ClientFactory = build_client,
    progress: Progress | None = None,
) -> tuple[RunSummary, Plan]:
    """observe -> refresh (only if something is new or waiting) -> plan -> confirm ->
    apply -> report.

    A dry run stops short of apply: it reads and prepares each planned upload in memory
    (reconciler/dry_run.py), so its counts and exit code are what a real run would give.
    It uploads, moves and records no outcome; what it leaves in the ledger is a run row
    marked dry_run (status and runs show it as one), the scan rows that cache each file's
    hash, and the users it read from Graph, none of which a later run reads as done."""
    progress = progress or Progress()
    overrides = checked_for_reconcile(settings)
    with _run(settings, "reconcile", dry_run, client_factory) as run:
        progress.stage("scan")
        observed, file_ids, view = _observe(settings, run.ledger)

        def plan_from_ledger() -> Plan:
            with run.ledger.session() as session:
                # Loading 100,000 users costs seconds; skip it when no file needs a name.
                users = repository.current_users(session) if observed.files else []
            index = UserIndex(
                users, settings.match_on, include_external=settings.include_external_members
            )
            return plan(
                observed.files, observed.deferred, view, index, overrides, observed.unreadable
            )

        def refreshed_plan() -> Plan:
            progress.stage("users")
            refresh_users(
                run.graph(),
                run.ledger,
                full=full_refresh,
                progress=progress,
                full_refresh_hours=settings.full_refresh_hours,
            )
            return plan_from_ledger()

        # New files need names (so do files a killed run saw but never decided about);
        # waiting files may have been settled by a change in the tenant. A run with none of
        # these sends nothing to Graph.
        needs_users = (
            new_or_changed(observed.files, view)
            or undecided(observed.files, view)
            or waiting(observed.files, view)
        )
        if full_refresh or needs_users:
            the_plan = refreshed_plan()
        else:
            the_plan = plan_from_ledger()
            # About to write to Graph anyway (a retry of an earlier failure): one delta
            # request first, so a user deleted since is not written to again.
            if the_plan.has_graph_work:
                the_plan = refreshed_plan()
        the_plan = confirm_before_write(run, the_plan, overrides)
        if dry_run:
            options = prepare_options(settings)
            for result in what_if.predict(the_plan, options.prepare, settings.concurrency):
                run.summary.add(result)
        else:
            _apply(run, the_plan, file_ids, progress)
        if settings.prune:
            # After the plan is applied: a renamed file has claimed its user by now.
            undo.prune_removed(run, dry_run=dry_run)
        return run.summary, the_plan


def _apply(run: _Run, the_plan: Plan, file_ids: dict[str, int], progress: Progress) -> None:
    progress.stage("upload")
    progress.uploads_total(len(the_plan.actions))
    executor = Executor(
        run.ledger,
        run.summary.run_id,
        file_ids,
        prepare_options(run.settings),
        run.graph() if the_plan.has_graph_work else None,
        progress.file_done,
    )
    for result in executor.apply(the_plan):
        run.summary.add(result)


def retry_failed(
    settings: Settings,
    *,
    include_permanent: bool = False,
    client_factory: ClientFactory = build_client,
    progress: Progress | None = None,
) -> tuple[RunSummary, Plan]:
    """Upload again the files whose last upload failed, to the user the ledger recorded:
    no listing and no matching, but each write is confirmed with Graph first, as in
    reconcile (the user may have been disabled or renamed since the failure)."""
    progress = progress or Progress()
    settings.require_folders()
    overrides = load_overrides(settings)
    with _run(settings, "retry-failed", False, client_factory) as run:
        observed, file_ids, _view = _observe(settings, run.ledger)
        with run.ledger.session() as session:
            targets = repository.failed_uploads(session, include_permanent=include_permanent)
        the_plan = plan_retries(observed.files, targets)
        the_plan = confirm_before_write(run, the_plan, overrides)
        if the_plan.actions:
            _apply(run, the_plan, file_ids, progress)
        return run.summary, the_plan


# --- undo and drift (reconciler/undo.py)


def rollback(
    settings: Settings,
    run_id: int,
    *,
    upn: str | None = None,
    dry_run: bool = False,
    client_factory: ClientFactory = build_client,
) -> RunSummary:
    """`rollback`: put back what run `run_id` replaced, as a run of its own."""
    with _run(settings, "rollback", dry_run, client_factory) as run:
        run.summary.per_user = True
        undo.rollback(run, run_id, upn=upn, dry_run=dry_run)
        return run.summary


def verify(
    settings: Settings, *, fix: bool = False, client_factory: ClientFactory = build_client
) -> tuple[RunSummary, list[undo.Drift]]:
    """`verify`: who no longer has the photo photosync set; with fix, put it back."""
    overrides = load_overrides(settings)
    with _run(settings, "verify", False, client_factory) as run:
        run.summary.per_user = True
        drifts = undo.verify(
            run, fix=fix, confirm=lambda p: confirm_before_write(run, p, overrides)
        )
        return run.summary, drifts


def upgrade_database(settings: Settings) -> tuple[str, str | None]:
    """`db upgrade`: migrate under the run lock, like a run does, never beside one."""
    ledger = Ledger(settings.database_url)
    try:
        logs.ledger_file_warned(ledger.file_warnings())
        with ledger.run_lock():
            ledger.upgrade()
        return ledger.describe(), ledger.revision()
    finally:
        ledger.dispose()


def _utcnow() -> datetime:
    return datetime.now(UTC)
