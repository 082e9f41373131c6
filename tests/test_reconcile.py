"""reconcile end to end: the emulator over loopback, the real ManagedIdentityCredential,
real SQLite files and real Pillow images."""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from pathlib import Path

from click.testing import CliRunner

from reconciler import app
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.model import Outcome
from tests.helpers import (
    cli_args,
    jpeg_bytes,
    ledger_rows,
    outcomes,
    reconcile_killed_when_a_photo_is_stored,
    write_jpeg,
)


def test_every_outcome_lands_where_the_contract_says(
    settings: Settings, emulator: GraphEmulator
) -> None:
    tenant = emulator.tenant
    jane = tenant.add_user("Jane Doe", user_principal_name="jane@contoso.com")
    lee1 = tenant.add_user("Lee Gu", user_principal_name="lee1@contoso.com")
    lee2 = tenant.add_user("Lee Gu", user_principal_name="lee2@contoso.com")
    guest = tenant.add_user("Gus Guest", user_principal_name="gus@x.com", user_type="Guest")
    gone = tenant.add_user(
        "Dana Disabled", user_principal_name="dana@contoso.com", account_enabled=False
    )
    tenant.add_user("John Smith", user_principal_name="john@contoso.com")
    inbox = settings.inbox_dir
    jane_bytes = write_jpeg(inbox / "Jane Doe.jpg", color=(10, 20, 30))
    write_jpeg(inbox / "Lee Gu.jpg")
    write_jpeg(inbox / "Gus Guest.jpg")
    write_jpeg(inbox / "Dana Disabled.jpg")
    write_jpeg(inbox / "Jon Smith.jpg")
    (inbox / "notes.txt").write_text("not a photo")

    summary, _plan = app.reconcile(settings)

    assert outcomes(summary) == {
        "Jane Doe.jpg": Outcome.UPLOADED,
        "Lee Gu.jpg": Outcome.AMBIGUOUS,
        "Gus Guest.jpg": Outcome.INELIGIBLE,
        "Dana Disabled.jpg": Outcome.INELIGIBLE,
        "Jon Smith.jpg": Outcome.UNMATCHED,
        "notes.txt": Outcome.INVALID,
    }
    photo = tenant.photo(jane)
    assert photo is not None and photo.data == jane_bytes  # small JPEG: sent as is
    for user_id in (lee1, lee2, guest, gone):
        assert tenant.photo(user_id) is None
    assert (settings.completed_dir / "Jane Doe.jpg").read_bytes() == jane_bytes
    assert (settings.failed_dir / "notes.txt").read_text() == "not a photo"
    assert sorted(p.name for p in inbox.iterdir()) == [
        "Dana Disabled.jpg",
        "Gus Guest.jpg",
        "Jon Smith.jpg",
        "Lee Gu.jpg",
    ]
    unmatched = next(r for r in summary.results if r.file == "Jon Smith.jpg")
    assert "John Smith" in unmatched.reason
    assert summary.exit_code == 1  # the invalid file
    rows = ledger_rows(settings, "SELECT user_id, status, source_sha256 FROM uploads")
    assert len(rows) == 1 and rows[0][0] == jane and rows[0][1] == "succeeded"


def test_second_run_uploads_nothing_and_asks_graph_nothing(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    write_jpeg(settings.inbox_dir / "Nobody Known.jpg")
    first, _ = app.reconcile(settings)
    assert first.counts[Outcome.UPLOADED] == 1
    writes_before = emulator.tenant.photo_writes(jane)

    second, _ = app.reconcile(settings)

    assert second.counts[Outcome.UPLOADED] == 0
    assert second.counts[Outcome.UNMATCHED] == 1
    # A file waiting for its user costs one delta round, and only that.
    assert second.graph_requests == 1
    assert emulator.tenant.photo_writes(jane) == writes_before

    (settings.inbox_dir / "Nobody Known.jpg").unlink()
    third, _ = app.reconcile(settings)

    assert third.graph_requests == 0  # nothing new, nothing waiting: Graph is not asked
    assert emulator.tenant.photo_writes(jane) == writes_before


def test_changed_content_is_uploaded_again_and_older_completed_file_kept(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    first_bytes = write_jpeg(settings.inbox_dir / "Jane Doe.jpg", color=(255, 0, 0))
    app.reconcile(settings)
    second_bytes = write_jpeg(settings.inbox_dir / "Jane Doe.jpg", color=(0, 0, 255))

    summary, _ = app.reconcile(settings)

    assert outcomes(summary) == {"Jane Doe.jpg": Outcome.UPLOADED}
    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == second_bytes
    completed = {p.name: p.read_bytes() for p in settings.completed_dir.iterdir()}
    assert completed["Jane Doe.jpg"] == second_bytes
    kept = [data for name, data in completed.items() if name != "Jane Doe.jpg"]
    assert kept == [first_bytes]  # the older file survives under a dated name


def test_same_content_again_is_unchanged_and_moved(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    data = write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    app.reconcile(settings)
    (settings.inbox_dir / "jane doe.jpeg").write_bytes(data)

    summary, _ = app.reconcile(settings)

    assert outcomes(summary) == {"jane doe.jpeg": Outcome.UNCHANGED}
    assert emulator.tenant.photo_writes(jane) == 1
    assert (settings.completed_dir / "jane doe.jpeg").exists()


def test_case_and_unicode_normalisation(settings: Settings, emulator: GraphEmulator) -> None:
    zoe = emulator.tenant.add_user("Zoë  Ångström")  # NFC, with a double space
    nfd_name = unicodedata.normalize("NFD", "ZOË ÅNGSTRÖM.JPG")
    write_jpeg(settings.inbox_dir / nfd_name)

    summary, _ = app.reconcile(settings)

    assert [r.outcome for r in summary.results] == [Outcome.UPLOADED]
    assert emulator.tenant.photo(zoe) is not None


def test_ambiguous_name_is_never_uploaded_even_on_later_runs(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = [
        emulator.tenant.add_user("Lee Gu", user_principal_name=f"lee{i}@contoso.com")
        for i in (1, 2)
    ]
    write_jpeg(settings.inbox_dir / "Lee Gu.jpg")
    for _ in range(2):
        summary, _ = app.reconcile(settings)
        assert outcomes(summary) == {"Lee Gu.jpg": Outcome.AMBIGUOUS}
    assert all(emulator.tenant.photo_writes(i) == 0 for i in ids)
    assert (settings.inbox_dir / "Lee Gu.jpg").exists()
    candidates = ledger_rows(settings, "SELECT last_candidates FROM inbox_files")
    assert json.loads(str(candidates[0][0])) == ["lee1@contoso.com", "lee2@contoso.com"]


def test_overrides_file_resolves_an_ambiguous_name(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    emulator.tenant.add_user("Lee Gu", user_principal_name="lee1@contoso.com")
    lee2 = emulator.tenant.add_user("Lee Gu", user_principal_name="lee2@contoso.com")
    overrides = tmp_path / "overrides.csv"
    overrides.write_text("filename,userPrincipalName\nLee Gu (Sales).jpg,lee2@contoso.com\n")
    data = write_jpeg(settings.inbox_dir / "Lee Gu (Sales).jpg")

    summary, _ = app.reconcile(dataclasses.replace(settings, overrides_file=overrides))

    assert outcomes(summary) == {"Lee Gu (Sales).jpg": Outcome.UPLOADED}
    photo = emulator.tenant.photo(lee2)
    assert photo is not None and photo.data == data


def test_two_files_for_one_person_are_both_held_back(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg", color=(1, 2, 3))
    write_jpeg(settings.inbox_dir / "jane doe.png", color=(4, 5, 6))
    summary, _ = app.reconcile(settings)
    assert set(outcomes(summary).values()) == {Outcome.AMBIGUOUS}
    assert emulator.tenant.photo_writes(jane) == 0


def test_deferred_file_is_left_alone(settings: Settings, emulator: GraphEmulator) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    summary, _ = app.reconcile(dataclasses.replace(settings, settle_seconds=3600))
    assert outcomes(summary) == {"Jane Doe.jpg": Outcome.DEFERRED}
    assert summary.graph_requests == 0
    assert (settings.inbox_dir / "Jane Doe.jpg").exists()


def test_dry_run_changes_nothing(settings: Settings, emulator: GraphEmulator) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    (settings.inbox_dir / "junk.txt").write_text("x")

    result = CliRunner().invoke(main, ["reconcile", "--dry-run", *cli_args(settings)])

    assert result.exit_code == 1, result.output  # it would fail on the invalid file
    assert "upload" in result.output and "Jane Doe.jpg" in result.output
    assert emulator.tenant.photo_writes(jane) == 0
    assert not settings.completed_dir.exists() and not settings.failed_dir.exists()
    assert ledger_rows(settings, "SELECT count(*) FROM uploads") == [(0,)]
    assert ledger_rows(
        settings, "SELECT count(*) FROM inbox_files WHERE last_outcome IS NOT NULL"
    ) == [(0,)]
    writes = [r for r in emulator.requests() if r.method in ("PUT", "PATCH", "POST", "DELETE")]
    assert writes == []


def test_json_summary_has_the_contract_keys(settings: Settings, emulator: GraphEmulator) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    result = CliRunner().invoke(main, ["reconcile", "--json", *cli_args(settings)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary) == {
        "run_id",
        "uploaded",
        "unchanged",
        "unmatched",
        "ambiguous",
        "ineligible",
        "invalid",
        "failed",
        "deferred",
        "ignored",  # an extension: links and folders in the inbox (contract, "Every inbox entry")
        "graph_requests",
        "duration_s",
        "dry_run",  # an extension (contract, "Dry run"): false on a real run
    }
    assert summary["dry_run"] is False
    assert summary["uploaded"] == 1
    # One delta "latest", one users page, one lookup confirming Jane before writing, one PUT;
    # with the archive on (the default), the photo read before the PUT and its ETag after.
    assert summary["graph_requests"] == emulator.graph_request_count == 6


def test_graph_failure_leaves_file_in_inbox_and_exits_1(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    emulator.faults.fail_photo_users.add(jane)
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    result = CliRunner().invoke(
        main, ["reconcile", "--json", "--retry-attempts", "2", *cli_args(settings)]
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["failed"] == 1
    assert (settings.inbox_dir / "Jane Doe.jpg").exists()
    rows = ledger_rows(settings, "SELECT status, http_status, attempts FROM uploads")
    assert rows == [("failed-transient", 500, 2)]


def test_crash_after_success_before_move_is_finished_without_reupload(
    settings: Settings, emulator: GraphEmulator
) -> None:
    # Mirror mode leaves exactly the ledger a crash between "record success" and "move"
    # leaves: a recorded success whose file is still in the inbox.
    jane = emulator.tenant.add_user("Jane Doe")
    data = write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    app.reconcile(dataclasses.replace(settings, move_completed=False))
    assert emulator.tenant.photo_writes(jane) == 1
    emulator.tenant.update_user(jane, displayName="Jane Smith")  # the name no longer matches

    summary, _ = app.reconcile(settings)

    assert outcomes(summary) == {"Jane Doe.jpg": Outcome.UNCHANGED}
    assert emulator.tenant.photo_writes(jane) == 1
    assert (settings.completed_dir / "Jane Doe.jpg").read_bytes() == data


def test_second_run_is_refused_while_one_holds_the_lock(
    settings: Settings, emulator: GraphEmulator
) -> None:
    from reconciler.ledger.db import Ledger

    ledger = Ledger(settings.database_url)
    with ledger.run_lock():
        result = CliRunner().invoke(main, ["reconcile", *cli_args(settings)])
    assert result.exit_code == 3
    assert "another photosync run holds the lock" in result.output
    assert "pid" in result.output
    ledger.dispose()


def test_ledger_file_is_private_and_in_wal_mode(
    settings: Settings, emulator: GraphEmulator
) -> None:
    app.reconcile(settings)
    path = Path(settings.database_url.removeprefix("sqlite:///"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert ledger_rows(settings, "PRAGMA journal_mode") == [("wal",)]


def test_retry_failed_uploads_to_the_recorded_user_without_listing(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    emulator.faults.fail_photo_users.add(jane)
    data = write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    app.reconcile(dataclasses.replace(settings, retry_attempts=1))
    emulator.faults.fail_photo_users.clear()
    emulator.reset_log()

    summary, _ = app.retry_failed(settings)

    assert outcomes(summary) == {"Jane Doe.jpg": Outcome.UPLOADED}
    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == data
    assert [
        (r.method, r.path.endswith("/photo/$value"))
        for r in emulator.requests()
        if not r.token_request
        # the lookup confirming Jane, the archive's read of her photo, the write, its ETag
    ] == [("GET", False), ("GET", True), ("PUT", True), ("GET", False)]


def test_large_photo_is_resized_before_upload(settings: Settings, emulator: GraphEmulator) -> None:
    from io import BytesIO

    from PIL import Image

    jane = emulator.tenant.add_user("Jane Doe")
    (settings.inbox_dir / "Jane Doe.jpg").write_bytes(jpeg_bytes((2000, 1000)))
    app.reconcile(settings)
    photo = emulator.tenant.photo(jane)
    assert photo is not None
    assert Image.open(BytesIO(photo.data)).size == (648, 324)


def test_crash_after_upload_before_success_is_recorded(
    settings: Settings, emulator: GraphEmulator
) -> None:
    """A real process, killed the instant Graph has stored the photo and before it answers."""

    jane = emulator.tenant.add_user("Jane Doe")
    data = write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    reconcile_killed_when_a_photo_is_stored(emulator, settings)
    assert emulator.tenant.photo_writes(jane) == 1
    # The dead run recorded an intent but no success: the ledger claims nothing.
    assert ledger_rows(settings, "SELECT status FROM uploads") == [("pending",)]
    assert (settings.inbox_dir / "Jane Doe.jpg").exists()

    summary, _ = app.reconcile(settings)

    assert outcomes(summary) == {"Jane Doe.jpg": Outcome.UPLOADED}
    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == data
    assert (settings.completed_dir / "Jane Doe.jpg").read_bytes() == data
    assert sorted(ledger_rows(settings, "SELECT status FROM uploads")) == [
        ("interrupted",),
        ("succeeded",),
    ]


def test_ledger_records_how_each_upload_was_prepared(
    settings: Settings, emulator: GraphEmulator
) -> None:
    import hashlib

    big = emulator.tenant.add_user("Big Photo")
    small = emulator.tenant.add_user("Small Photo")
    big_source = jpeg_bytes((1600, 1200), (20, 120, 40))
    (settings.inbox_dir / "Big Photo.jpg").write_bytes(big_source)
    small_source = write_jpeg(settings.inbox_dir / "Small Photo.jpg", size=(300, 300))

    app.reconcile(settings)

    rows = {
        row[0]: row[1:]
        for row in ledger_rows(
            settings,
            "SELECT user_id, prepare_path, source_sha256, uploaded_sha256, source_width,"
            " source_height, uploaded_width, uploaded_height, source_bytes, uploaded_bytes"
            " FROM uploads WHERE status = 'succeeded'",
        )
    }
    big_photo, small_photo = emulator.tenant.photo(big), emulator.tenant.photo(small)
    assert big_photo is not None and small_photo is not None
    assert rows[big] == (
        "reencoded",
        hashlib.sha256(big_source).hexdigest(),
        hashlib.sha256(big_photo.data).hexdigest(),
        1600,
        1200,
        648,
        486,
        len(big_source),
        len(big_photo.data),
    )
    assert rows[small][0] == "original"
    assert rows[small][1] == rows[small][2] == hashlib.sha256(small_source).hexdigest()


def test_retry_failed_leaves_permanent_failures_unless_asked(
    settings: Settings, emulator: GraphEmulator
) -> None:
    doomed = emulator.tenant.add_user("Doomed User")
    emulator.faults.delete_user_on_photo_write.add(doomed)
    write_jpeg(settings.inbox_dir / "Doomed User.jpg")
    app.reconcile(settings)
    emulator.reset_log()

    untouched, _ = app.retry_failed(settings)
    assert untouched.results == [] and emulator.graph_request_count == 0

    retried, _ = app.retry_failed(settings, include_permanent=True)
    # Confirmed before writing: Graph no longer has the user, so nothing is written and
    # the file waits, unmatched (a lookup by name, then one read of the recorded user).
    assert outcomes(retried) == {"Doomed User.jpg": Outcome.UNMATCHED}
    assert [r.method for r in emulator.requests() if not r.token_request] == ["GET", "GET"]
    assert ledger_rows(
        settings, f"SELECT deleted_at IS NOT NULL FROM users WHERE id = '{doomed}'"
    ) == [(1,)]


def test_a_file_photosync_cannot_read_stays_and_fails_the_run(
    settings: Settings, emulator: GraphEmulator
) -> None:
    import os
    import subprocess
    import sys

    jane = emulator.tenant.add_user("Jane Doe")
    john = emulator.tenant.add_user("John Roe")
    jane_bytes = write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    locked = settings.inbox_dir / "John Roe.jpg"
    john_bytes = write_jpeg(locked, color=(0, 0, 200))
    locked.chmod(0)
    # Root reads anything; without the capabilities that let it ignore file permissions it
    # is shut out like the service account a real inbox would shut out.
    as_plain_account = (
        ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    )
    command = [sys.executable, "-m", "reconciler", "reconcile", "--json", *cli_args(settings)]
    done = subprocess.run(
        [*as_plain_account, *command],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["uploaded"], summary["failed"]) == (1, 1)
    assert emulator.tenant.photo(john) is None
    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == jane_bytes
    assert locked.exists() and not (settings.completed_dir / "John Roe.jpg").exists()
    [(outcome, reason)] = ledger_rows(
        settings, "SELECT last_outcome, last_reason FROM inbox_files WHERE name = 'John Roe.jpg'"
    )
    assert outcome == "failed" and "Permission denied" in str(reason)

    locked.chmod(0o644)
    summary_after_fix, _ = app.reconcile(settings)

    assert outcomes(summary_after_fix) == {"John Roe.jpg": Outcome.UPLOADED}
    photo = emulator.tenant.photo(john)
    assert photo is not None and photo.data == john_bytes


def test_an_interrupted_run_is_recorded_as_one(settings: Settings, emulator: GraphEmulator) -> None:
    """Ctrl+C (or a service stop sending SIGINT) mid-upload: the ledger must not show it as
    a run that ended well."""
    import os
    import signal
    import subprocess
    import sys

    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    run = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "reconcile", *cli_args(settings)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    emulator.faults.after_photo_stored = lambda _user: os.kill(run.pid, signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    emulator.faults.after_photo_stored = None

    assert run.returncode == 3
    assert stderr.strip().endswith("interrupted; the next run picks up where this one stopped")
    assert ledger_rows(settings, "SELECT exit_code, error FROM runs") == [(3, "interrupted")]
