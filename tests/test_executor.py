"""The executor (reconciler/executor.py) on its own: a real Executor, a real SQLite ledger,
real files and real JPEGs, with a small stand-in for Graph at the Uploader seam.

The stand-in notes what the ledger and the folders hold at the instant each upload is
sent, so these tests see the crash-safe order itself (record the intent, upload, record
success, move the file, record the move), not only where a whole run ends up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler import app
from reconciler.archive import Archive, digest_of
from reconciler.config import Settings
from reconciler.errors import GraphError, TransientGraphError
from reconciler.executor import CHANGED, ApplyOptions, Executor
from reconciler.ledger import repository
from reconciler.ledger.db import Ledger
from reconciler.matching import UserIndex
from reconciler.model import ActionKind, FileResult, Outcome, Plan, UploadReceipt, User
from reconciler.planner import plan
from reconciler.scanner import scan
from tests.helpers import ledger_rows, write_jpeg

JANE = User("u-jane", "Jane Doe", "jane@contoso.com")
LEE = User("u-lee", "Lee Gu", "lee@contoso.com")


class Killed(BaseException):
    """The process dies at this instant: nothing the executor does handles it, as nothing
    runs after a SIGKILL."""


def upload_rows(settings: Settings) -> list[dict[str, Any]]:
    """Every row of the uploads table, by column name, read with plain SQL."""
    path = settings.database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path)) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM uploads ORDER BY id")]


def names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@dataclass(frozen=True)
class Seen:
    """What the ledger and the folders held the instant upload_photo was called."""

    user_id: str
    data: bytes
    content_type: str
    uploads: list[dict[str, Any]]
    inbox: list[str]
    completed: list[str]


@dataclass
class FakeGraph:
    """The Uploader seam (and the PhotoReader the archive needs): keeps the photos it is
    sent, notes each call in order, and what the ledger and folders held at each upload.

    `fail`: raised instead of storing the photo (Graph answered with an error).
    `kill_after_storing`: the photo is stored, then the process dies before hearing so."""

    settings: Settings
    photos: dict[str, bytes] = field(default_factory=dict)
    fail: GraphError | None = None
    kill_after_storing: bool = False
    calls: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def upload_photo(self, user_id: str, data: bytes, content_type: str) -> UploadReceipt:
        seen = Seen(
            user_id,
            data,
            content_type,
            upload_rows(self.settings),
            names_in(self.settings.inbox_dir),
            names_in(self.settings.completed_dir),
        )
        with self._lock:
            self.calls.append(f"upload_photo {user_id}")
            self.seen.append(seen)
        if self.fail is not None:
            raise self.fail
        self.photos[user_id] = data
        if self.kill_after_storing:
            raise Killed
        return UploadReceipt(attempts=1, http_status=204, client_request_id=f"crid-{user_id}")

    def get_photo(self, user_id: str) -> bytes | None:
        with self._lock:
            self.calls.append(f"get_photo {user_id}")
        return self.photos.get(user_id)

    def photo_etag(self, user_id: str) -> str | None:
        with self._lock:
            self.calls.append(f"photo_etag {user_id}")
        return f'"{hashlib.sha256(self.photos[user_id]).hexdigest()[:16]}"'

    def seen_for(self, user_id: str) -> Seen:
        [seen] = [s for s in self.seen if s.user_id == user_id]
        return seen


@dataclass
class Workspace:
    settings: Settings
    ledger: Ledger


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """An inbox, its completed and failed folders, and a migrated SQLite ledger. Graph is
    never reached: its URL goes nowhere, and every test passes a FakeGraph."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    settings = Settings(
        graph_url="https://graph.invalid",
        inbox_dir=inbox,
        completed_dir=tmp_path / "completed",
        failed_dir=tmp_path / "failed",
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        settle_seconds=0,
        concurrency=2,
        archive=False,
    )
    ledger = Ledger(settings.database_url)
    ledger.upgrade()
    try:
        yield Workspace(settings, ledger)
    finally:
        ledger.dispose()


def start_run(workspace: Workspace) -> int:
    with workspace.ledger.session() as session:
        return repository.start_run(session, "reconcile", False)


def observe_and_plan(workspace: Workspace, users: list[User]) -> tuple[Plan, dict[str, int]]:
    """Scan the inbox, record the scan and plan against `users`, as a run does
    (app._observe, then the pure planner)."""
    settings, ledger = workspace.settings, workspace.ledger
    with ledger.session() as session:
        rows = repository.inbox_records(session)
    observed = scan(settings.inbox_dir, repository.fingerprints(rows), settle_seconds=0)
    with ledger.session() as session:
        view = repository.ledger_view(session, rows)
        file_ids = repository.record_scan(session, observed, rows)
    index = UserIndex(users, settings.match_on)
    the_plan = plan(observed.files, observed.deferred, view, index, {}, observed.unreadable)
    return the_plan, file_ids


def apply(
    workspace: Workspace,
    run_id: int,
    the_plan: Plan,
    file_ids: dict[str, int],
    graph: FakeGraph,
    options: ApplyOptions | None = None,
) -> list[FileResult]:
    options = options or app.prepare_options(workspace.settings)
    executor = Executor(workspace.ledger, run_id, file_ids, options, graph)
    return executor.apply(the_plan)


def inbox_file_row(settings: Settings, name: str) -> tuple[object, ...]:
    [row] = ledger_rows(
        settings,
        "SELECT location, destination, last_outcome, user_id FROM inbox_files "
        f"WHERE name = '{name}'",
    )
    return row


def test_the_intent_is_recorded_before_the_upload_and_the_move_after_the_success(
    workspace: Workspace,
) -> None:
    settings = workspace.settings
    jane_bytes = write_jpeg(settings.inbox_dir / "Jane Doe.jpg", color=(200, 30, 30))
    lee_bytes = write_jpeg(settings.inbox_dir / "Lee Gu.jpg", color=(30, 30, 200))
    run_id = start_run(workspace)
    the_plan, file_ids = observe_and_plan(workspace, [JANE, LEE])
    assert [a.kind for a in the_plan.actions] == [ActionKind.UPLOAD, ActionKind.UPLOAD]
    graph = FakeGraph(settings)

    results = apply(workspace, run_id, the_plan, file_ids, graph)

    prepare = app.prepare_options(settings).prepare
    for user, name, source in ((JANE, "Jane Doe.jpg", jane_bytes), (LEE, "Lee Gu.jpg", lee_bytes)):
        seen = graph.seen_for(user.id)
        # At the upload: this upload's intent is in the ledger, without a result, and the
        # file has not moved.
        [intent] = [row for row in seen.uploads if row["user_id"] == user.id]
        assert (intent["run_id"], intent["file_id"], intent["status"]) == (
            run_id,
            file_ids[str(settings.inbox_dir / name)],
            "pending",
        )
        assert intent["finished_at"] is None and intent["http_status"] is None
        assert intent["source_sha256"] == hashlib.sha256(source).hexdigest()
        assert name in seen.inbox and name not in seen.completed
        # What was sent is the prepared upload of that file's bytes, and the intent names it.
        prepared = prepare(source)
        assert (seen.data, seen.content_type) == (prepared.data, prepared.content_type)
        assert intent["uploaded_sha256"] == hashlib.sha256(seen.data).hexdigest()
        assert intent["uploaded_bytes"] == len(seen.data)

    # After apply: the success is recorded, the file is in completed_dir, the ledger says so.
    assert sorted((r["user_id"], r["status"]) for r in upload_rows(settings)) == [
        (JANE.id, "succeeded"),
        (LEE.id, "succeeded"),
    ]
    for row in upload_rows(settings):
        assert (row["http_status"], row["attempts"]) == (204, 1)
        assert row["client_request_id"] == f"crid-{row['user_id']}"
        assert row["finished_at"] is not None
    assert names_in(settings.inbox_dir) == []
    assert names_in(settings.completed_dir) == ["Jane Doe.jpg", "Lee Gu.jpg"]
    assert (settings.completed_dir / "Jane Doe.jpg").read_bytes() == jane_bytes
    assert inbox_file_row(settings, "Jane Doe.jpg") == (
        "completed",
        str(settings.completed_dir / "Jane Doe.jpg"),
        "uploaded",
        JANE.id,
    )
    assert sorted(
        ledger_rows(settings, "SELECT run_id, outcome, user_id, destination FROM run_files")
    ) == [
        (run_id, "uploaded", JANE.id, str(settings.completed_dir / "Jane Doe.jpg")),
        (run_id, "uploaded", LEE.id, str(settings.completed_dir / "Lee Gu.jpg")),
    ]
    by_file = {r.file: r for r in results}
    assert by_file["Jane Doe.jpg"].outcome is Outcome.UPLOADED
    assert by_file["Jane Doe.jpg"].user_id == JANE.id
    assert by_file["Jane Doe.jpg"].destination == settings.completed_dir / "Jane Doe.jpg"
    assert graph.photos == {user.id: graph.seen_for(user.id).data for user in (JANE, LEE)}


def test_a_transient_graph_failure_is_recorded_and_the_file_stays(workspace: Workspace) -> None:
    settings = workspace.settings
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    run_id = start_run(workspace)
    the_plan, file_ids = observe_and_plan(workspace, [JANE])
    unavailable = TransientGraphError(
        "Service unavailable.",
        status=503,
        code="serviceNotAvailable",
        request_id="req-1",
        client_request_id="crid-1",
        attempts=3,
    )
    graph = FakeGraph(settings, fail=unavailable)

    [result] = apply(workspace, run_id, the_plan, file_ids, graph)

    assert graph.calls == [f"upload_photo {JANE.id}"]
    assert [r["status"] for r in graph.seen[0].uploads] == ["pending"]
    [row] = upload_rows(settings)
    assert row["status"] == "failed-transient"
    assert (row["http_status"], row["attempts"], row["graph_error_code"]) == (
        503,
        3,
        "serviceNotAvailable",
    )
    assert row["graph_error_message"] == "Service unavailable."
    assert (row["request_id"], row["client_request_id"]) == ("req-1", "crid-1")
    assert row["finished_at"] is not None
    assert graph.photos == {}
    assert names_in(settings.inbox_dir) == ["Jane Doe.jpg"]
    assert names_in(settings.completed_dir) == []
    assert inbox_file_row(settings, "Jane Doe.jpg") == ("inbox", None, "failed", JANE.id)
    assert ledger_rows(settings, "SELECT outcome, destination FROM run_files") == [("failed", None)]
    assert (result.outcome, result.user_id, result.destination) == (Outcome.FAILED, JANE.id, None)
    assert result.reason.startswith("Graph failed after 3 attempts: HTTP 503 serviceNotAvailable")
    assert result.reason.endswith("; it will be retried on the next run")


def test_a_run_killed_after_the_upload_leaves_an_intent_the_next_run_uploads_again(
    workspace: Workspace,
) -> None:
    settings = workspace.settings
    source = write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    first_run = start_run(workspace)
    the_plan, file_ids = observe_and_plan(workspace, [JANE])
    dying = FakeGraph(settings, kill_after_storing=True)

    with pytest.raises(Killed):
        apply(workspace, first_run, the_plan, file_ids, dying)

    # Graph has the photo, but the ledger only knows it meant to send it: never a success.
    assert JANE.id in dying.photos
    [intent] = upload_rows(settings)
    assert (intent["run_id"], intent["status"], intent["finished_at"]) == (
        first_run,
        "pending",
        None,
    )
    assert names_in(settings.inbox_dir) == ["Jane Doe.jpg"]
    assert names_in(settings.completed_dir) == []
    assert inbox_file_row(settings, "Jane Doe.jpg") == ("inbox", None, None, None)
    assert ledger_rows(settings, "SELECT * FROM run_files") == []

    # The next run: the dead run's intent is closed as interrupted, and the file, which no
    # success vouches for, is planned and uploaded again (PUT is idempotent).
    with workspace.ledger.session() as session:
        assert repository.close_interrupted_uploads(session) == 1
    second_run = start_run(workspace)
    again, file_ids = observe_and_plan(workspace, [JANE])
    assert [(a.kind, a.user) for a in again.actions] == [(ActionKind.UPLOAD, JANE)]
    graph = FakeGraph(settings)

    [result] = apply(workspace, second_run, again, file_ids, graph)

    assert result.outcome is Outcome.UPLOADED
    assert [(r["run_id"], r["status"]) for r in upload_rows(settings)] == [
        (first_run, "interrupted"),
        (second_run, "succeeded"),
    ]
    assert graph.seen_for(JANE.id).data == dying.photos[JANE.id]
    assert (settings.completed_dir / "Jane Doe.jpg").read_bytes() == source


def test_a_file_changed_after_planning_is_not_uploaded_and_waits(workspace: Workspace) -> None:
    settings = workspace.settings
    path = settings.inbox_dir / "Jane Doe.jpg"
    write_jpeg(path, color=(200, 30, 30))
    run_id = start_run(workspace)
    the_plan, file_ids = observe_and_plan(workspace, [JANE])
    assert [a.kind for a in the_plan.actions] == [ActionKind.UPLOAD]
    newer = write_jpeg(path, size=(240, 240), color=(30, 200, 30))  # HR saves a new version
    graph = FakeGraph(settings)

    [result] = apply(workspace, run_id, the_plan, file_ids, graph)

    assert graph.calls == []
    assert upload_rows(settings) == []
    assert (result.outcome, result.reason, result.user_id) == (Outcome.DEFERRED, CHANGED, None)
    assert path.read_bytes() == newer
    assert names_in(settings.completed_dir) == []
    assert inbox_file_row(settings, "Jane Doe.jpg") == ("inbox", None, "deferred", None)
    assert ledger_rows(settings, "SELECT outcome FROM run_files") == [("deferred",)]


def test_with_the_archive_the_replaced_photo_is_kept_before_the_intent_names_it(
    workspace: Workspace, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        workspace.settings, archive=True, archive_dir=tmp_path / "archive"
    )
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg", color=(200, 30, 30))
    before = write_jpeg(tmp_path / "photo in Graph.jpg", color=(90, 90, 90))
    run_id = start_run(workspace)
    the_plan, file_ids = observe_and_plan(workspace, [JANE])
    options = app.prepare_options(settings)
    assert options.archive is not None
    graph = FakeGraph(settings, photos={JANE.id: before})

    [result] = apply(workspace, run_id, the_plan, file_ids, graph, options)

    assert graph.calls == [
        f"get_photo {JANE.id}",
        f"upload_photo {JANE.id}",
        f"photo_etag {JANE.id}",
    ]
    seen = graph.seen_for(JANE.id)
    [intent] = seen.uploads
    assert intent["status"] == "pending"
    # Both photos were in the archive before anything was written.
    assert intent["replaced_object"] == digest_of(before)
    assert intent["uploaded_object"] == digest_of(seen.data)
    archive = Archive(tmp_path / "archive")
    assert archive.get(digest_of(before)) == before
    assert archive.get(digest_of(seen.data)) == seen.data
    [row] = upload_rows(settings)
    assert row["status"] == "succeeded"
    assert row["etag_after"] == f'"{hashlib.sha256(seen.data).hexdigest()[:16]}"'
    assert result.outcome is Outcome.UPLOADED
    assert names_in(settings.completed_dir) == ["Jane Doe.jpg"]
