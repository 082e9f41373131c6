"""`photosync rollback`: the photo each user had before a run comes back, byte for byte, or
the photo the run added goes; a photo someone else changed since is left alone."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from tests.helpers import cli_args, jpeg_bytes, ledger_rows, write_jpeg


def photosync(settings: Settings, *args: str) -> tuple[int, dict[str, object] | str]:
    """One CLI run; the parsed --json object when asked for, else the output."""
    result = CliRunner().invoke(main, [*args, *cli_args(settings)])
    if "--json" in args and result.stdout.strip().startswith("{"):
        return result.exit_code, json.loads(result.stdout)
    return result.exit_code, result.output


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Scene:
    jane: str
    bob: str
    jane_before: bytes  # Jane's photo before photosync's run (Bob had none)
    run_id: int


def upload_run(settings: Settings, emulator: GraphEmulator) -> Scene:
    """Jane has a photo of her own, Bob none; one reconcile gives both a new one."""
    jane = emulator.tenant.add_user("Jane Doe")
    bob = emulator.tenant.add_user("Bob Smith")
    before = jpeg_bytes((120, 120), (10, 200, 10))
    emulator.change_photo_from_outside(jane, before)
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg", color=(200, 30, 30))
    write_jpeg(settings.inbox_dir / "Bob Smith.jpg", color=(30, 30, 200))
    code, summary = photosync(settings, "reconcile", "--json")
    assert code == 0 and isinstance(summary, dict) and summary["uploaded"] == 2, summary
    return Scene(jane, bob, before, int(str(summary["run_id"])))


def upn(emulator: GraphEmulator, user_id: str) -> str:
    return str((emulator.tenant.user(user_id) or {})["userPrincipalName"])


def writes_sent(emulator: GraphEmulator) -> list[tuple[str, str | None]]:
    return [
        (r.method, r.user_id)
        for r in emulator.requests()
        if r.method in ("PUT", "DELETE") and not r.token_request
    ]


def test_the_upload_records_what_it_replaced_what_it_sent_and_the_etag_after(
    settings: Settings, emulator: GraphEmulator
) -> None:
    scene = upload_run(settings, emulator)
    rows = dict(
        (user, (replaced, uploaded, etag))
        for user, replaced, uploaded, etag in ledger_rows(
            settings, "SELECT user_id, replaced_object, uploaded_object, etag_after FROM uploads"
        )
    )
    jane_photo = emulator.tenant.photo(scene.jane)
    bob_photo = emulator.tenant.photo(scene.bob)
    assert jane_photo is not None and bob_photo is not None
    assert rows[scene.jane] == (sha(scene.jane_before), sha(jane_photo.data), jane_photo.etag)
    assert rows[scene.bob] == ("none", sha(bob_photo.data), bob_photo.etag)


def test_rollback_restores_the_exact_previous_bytes_and_removes_a_photo_that_did_not_exist(
    settings: Settings, emulator: GraphEmulator
) -> None:
    scene = upload_run(settings, emulator)
    emulator.reset_log()

    code, summary = photosync(settings, "rollback", str(scene.run_id), "--json")

    assert code == 0, summary
    assert isinstance(summary, dict)
    assert (summary["restored"], summary["removed"], summary["skipped"]) == (1, 1, 0)
    jane_photo = emulator.tenant.photo(scene.jane)
    assert jane_photo is not None and jane_photo.data == scene.jane_before
    assert emulator.tenant.photo(scene.bob) is None
    assert sorted(writes_sent(emulator)) == sorted([("PUT", scene.jane), ("DELETE", scene.bob)])
    # A run of its own, with one finished change per user and the ETag after the restore.
    assert ledger_rows(
        settings, f"SELECT command, exit_code FROM runs WHERE id = {summary['run_id']}"
    ) == [("rollback", 0)]
    changes = dict(
        (user, (kind, status, etag))
        for user, kind, status, etag in ledger_rows(
            settings, "SELECT user_id, kind, status, etag_after FROM photo_changes"
        )
    )
    assert changes == {
        scene.jane: ("rollback", "succeeded", jane_photo.etag),
        scene.bob: ("rollback", "succeeded", None),
    }
    code, shown = photosync(settings, "runs", "show", str(summary["run_id"]), "--json")
    assert code == 0 and isinstance(shown, dict)
    assert sorted((c["user"], c["status"]) for c in shown["changes"]) == sorted(  # type: ignore[union-attr]
        [(upn(emulator, scene.jane), "succeeded"), (upn(emulator, scene.bob), "succeeded")]
    )


def test_a_second_rollback_of_the_same_run_does_nothing_and_says_so(
    settings: Settings, emulator: GraphEmulator
) -> None:
    scene = upload_run(settings, emulator)
    assert photosync(settings, "rollback", str(scene.run_id))[0] == 0
    emulator.reset_log()

    code, output = photosync(settings, "rollback", str(scene.run_id))

    assert code == 0
    assert writes_sent(emulator) == []
    assert isinstance(output, str) and output.count("already rolled back") == 2
    jane_photo = emulator.tenant.photo(scene.jane)
    assert jane_photo is not None and jane_photo.data == scene.jane_before


def test_rollback_skips_a_user_whose_photo_someone_else_changed_since(
    settings: Settings, emulator: GraphEmulator
) -> None:
    scene = upload_run(settings, emulator)
    from_teams = jpeg_bytes((150, 150), (250, 250, 0))
    emulator.change_photo_from_outside(scene.jane, from_teams)

    code, summary = photosync(settings, "rollback", str(scene.run_id), "--json")

    assert code == 0 and isinstance(summary, dict)
    assert (summary["restored"], summary["removed"], summary["skipped"]) == (0, 1, 1)
    jane_photo = emulator.tenant.photo(scene.jane)
    assert jane_photo is not None and jane_photo.data == from_teams  # left alone
    assert emulator.tenant.photo(scene.bob) is None
    [(status, reason)] = ledger_rows(
        settings,
        f"SELECT status, reason FROM photo_changes WHERE user_id = '{scene.jane}'",
    )
    assert status == "skipped" and reason == "changed since by someone else"


def test_rollback_of_one_user_and_a_dry_run_change_only_what_they_say(
    settings: Settings, emulator: GraphEmulator
) -> None:
    scene = upload_run(settings, emulator)
    uploaded = emulator.tenant.photo(scene.jane)
    emulator.reset_log()

    dry_code, dry = photosync(settings, "rollback", str(scene.run_id), "--dry-run")
    assert dry_code == 0 and isinstance(dry, str) and dry.count("would have") == 2
    assert writes_sent(emulator) == []

    code, summary = photosync(
        settings, "rollback", str(scene.run_id), "--user", upn(emulator, scene.bob), "--json"
    )

    assert code == 0 and isinstance(summary, dict) and summary["removed"] == 1
    assert emulator.tenant.photo(scene.bob) is None
    assert emulator.tenant.photo(scene.jane) == uploaded  # untouched, same ETag


@pytest.mark.parametrize(
    "args",
    [["rollback", "999"], ["rollback", "1", "--user", "nobody@contoso.com"]],
    ids=["unknown run", "user the run did not change"],
)
def test_rollback_of_what_the_ledger_does_not_hold_is_a_one_line_usage_error(
    settings: Settings, emulator: GraphEmulator, args: list[str]
) -> None:
    upload_run(settings, emulator)
    emulator.reset_log()

    result = CliRunner().invoke(main, [*args, *cli_args(settings)])

    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("photosync: error:")
    assert writes_sent(emulator) == []
    # Recorded as a rollback that could not run for a usage error, not as a crash.
    [(exit_code,)] = ledger_rows(settings, "SELECT exit_code FROM runs WHERE command = 'rollback'")
    assert exit_code == 2


def killed_rollback(
    settings: Settings,
    emulator: GraphEmulator,
    run_id: int,
    arm: Callable[[Callable[[str], None]], None],
) -> None:
    """`photosync rollback` in a real process, killed by the emulator the instant a photo
    write has landed and before Graph's answer reaches it."""
    victim = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "rollback", str(run_id), *cli_args(settings)],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    arm(lambda _user: os.kill(victim.pid, signal.SIGKILL))
    assert victim.wait(timeout=60) == -signal.SIGKILL


@pytest.mark.parametrize("moment", ["after the restore", "after the removal"])
def test_a_rollback_killed_mid_way_converges_on_rerun(
    settings: Settings, emulator: GraphEmulator, moment: str
) -> None:
    scene = upload_run(settings, emulator)

    def arm(kill: Callable[[str], None]) -> None:
        if moment == "after the restore":
            emulator.faults.after_photo_stored = kill
        else:
            emulator.faults.after_photo_deleted = kill

    killed_rollback(settings, emulator, scene.run_id, arm)
    emulator.faults.after_photo_stored = emulator.faults.after_photo_deleted = None
    # The dead run left an intent without a result.
    assert ("pending",) in ledger_rows(settings, "SELECT status FROM photo_changes")

    code, output = photosync(settings, "rollback", str(scene.run_id))

    assert code == 0, output
    jane_photo = emulator.tenant.photo(scene.jane)
    assert jane_photo is not None and jane_photo.data == scene.jane_before
    assert emulator.tenant.photo(scene.bob) is None
    finished = ledger_rows(
        settings,
        "SELECT user_id, status FROM photo_changes WHERE status IN ('succeeded', 'pending')",
    )
    assert sorted(finished) == sorted([(scene.jane, "succeeded"), (scene.bob, "succeeded")])
    # And the next rollback has nothing left to do.
    emulator.reset_log()
    assert photosync(settings, "rollback", str(scene.run_id))[0] == 0
    assert writes_sent(emulator) == []
