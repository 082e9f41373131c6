"""prune (mirror mode): a file removed from the folder removes the photo it set, only while
that photo is still photosync's, archived first; an emptied or unmounted folder prunes
nothing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from tests.helpers import cli_args, jpeg_bytes, ledger_rows, write_jpeg

PEOPLE = ("Jane Doe", "Bob Smith", "Carol White")


def mirror(settings: Settings, *, prune_max: int = 10) -> list[str]:
    """The CLI flags of a mirror-mode run with prune on."""
    return [*cli_args(settings), "--mirror", "--prune", "true", "--prune-max", str(prune_max)]


def reconcile(settings: Settings, *extra: str, prune_max: int = 10) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["reconcile", *extra, *mirror(settings, prune_max=prune_max)])
    return result.exit_code, result.stdout, result.stderr


def everyone_uploaded(settings: Settings, emulator: GraphEmulator) -> dict[str, str]:
    ids = {name: emulator.tenant.add_user(name) for name in PEOPLE}
    for number, name in enumerate(PEOPLE):
        write_jpeg(settings.inbox_dir / f"{name}.jpg", color=(40 * number, 90, 200))
    code, out, err = reconcile(settings, "--json")
    assert code == 0 and json.loads(out)["uploaded"] == 3, (out, err)
    return ids


def archive_objects(settings: Settings) -> set[str]:
    root = Path(settings.database_url.removeprefix("sqlite:///")).parent / "archive" / "objects"
    return {p.name for p in root.glob("*/*")}


def test_a_removed_file_removes_only_the_photo_photosync_set(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = everyone_uploaded(settings, emulator)
    jane_photo = emulator.tenant.photo(ids["Jane Doe"])
    assert jane_photo is not None
    from_teams = jpeg_bytes((150, 150), (1, 2, 3))
    emulator.change_photo_from_outside(ids["Carol White"], from_teams)
    (settings.inbox_dir / "Jane Doe.jpg").unlink()
    (settings.inbox_dir / "Carol White.jpg").unlink()

    code, out, err = reconcile(settings, "--json")

    assert code == 0, err
    summary = json.loads(out)
    assert (summary["removed"], summary["skipped"]) == (1, 1)
    assert emulator.tenant.photo(ids["Jane Doe"]) is None
    carol = emulator.tenant.photo(ids["Carol White"])
    assert carol is not None and carol.data == from_teams  # someone else's: left alone
    assert emulator.tenant.photo(ids["Bob Smith"]) is not None
    # Archived first: the photo removed is in the archive, by its hash.
    assert hashlib.sha256(jane_photo.data).hexdigest() in archive_objects(settings)
    changes = ledger_rows(settings, "SELECT user_id, kind, status, reason FROM photo_changes")
    assert sorted(changes) == sorted(
        [
            (ids["Jane Doe"], "prune", "succeeded", "file removed from the inbox; photo removed"),
            (ids["Carol White"], "prune", "skipped", "changed since by someone else"),
        ]
    )
    # Pruned once: the next run has nothing to prune.
    code, out, _ = reconcile(settings, "--json")
    assert code == 0 and json.loads(out).get("removed", 0) == 0


def test_a_dry_run_lists_what_would_be_pruned_and_removes_nothing(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = everyone_uploaded(settings, emulator)
    (settings.inbox_dir / "Bob Smith.jpg").unlink()
    emulator.reset_log()

    code, out, err = reconcile(settings, "--dry-run", "--json")

    assert code == 0, err
    assert json.loads(out)["removed"] == 1
    code, listing, _ = reconcile(settings, "--dry-run")
    assert code == 0
    [line] = [x for x in listing.splitlines() if x.startswith("remove")]
    assert "Bob Smith.jpg" in line and "would remove the photo" in line
    assert emulator.tenant.photo(ids["Bob Smith"]) is not None
    assert [r.method for r in emulator.requests() if r.method in ("PUT", "DELETE")] == []
    assert ledger_rows(settings, "SELECT count(*) FROM photo_changes") == [(0,)]


def test_an_emptied_inbox_prunes_nothing_and_exits_1(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = everyone_uploaded(settings, emulator)
    for name in PEOPLE:
        (settings.inbox_dir / f"{name}.jpg").unlink()
    emulator.reset_log()

    code, _out, err = reconcile(settings, prune_max=2)

    assert code == 1
    assert "prune refused: the files of 3 users are gone" in err
    assert "prune_max (2)" in err and len(err.strip().splitlines()) == 1
    assert all(emulator.tenant.photo(user) is not None for user in ids.values())
    assert [r.method for r in emulator.requests() if r.method == "DELETE"] == []


def test_a_missing_mount_prunes_nothing_and_exits_1(
    settings: Settings, emulator: GraphEmulator
) -> None:
    """The share is not mounted: the inbox path is an empty folder of the local disk."""
    ids = everyone_uploaded(settings, emulator)
    settings.inbox_dir.rename(settings.inbox_dir.with_name("share-contents"))
    settings.inbox_dir.mkdir()

    code, _out, err = reconcile(settings, prune_max=2)

    assert code == 1 and "prune refused" in err
    assert all(emulator.tenant.photo(user) is not None for user in ids.values())
    assert ledger_rows(settings, "SELECT count(*) FROM photo_changes") == [(0,)]


def test_prune_outside_mirror_mode_is_a_one_line_configuration_error(
    settings: Settings, emulator: GraphEmulator
) -> None:
    result = CliRunner().invoke(main, ["reconcile", *cli_args(settings), "--prune", "true"])

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "photosync: error: setting 'prune': needs mirror mode; set move_completed = false "
        "(files stay in the inbox) or prune = false"
    ]


def test_a_prune_killed_after_the_delete_converges_on_rerun(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = everyone_uploaded(settings, emulator)
    (settings.inbox_dir / "Jane Doe.jpg").unlink()
    victim = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "reconcile", *mirror(settings)],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    emulator.faults.after_photo_deleted = lambda _user: os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    emulator.faults.after_photo_deleted = None
    assert emulator.tenant.photo(ids["Jane Doe"]) is None
    assert ledger_rows(settings, "SELECT status FROM photo_changes") == [("pending",)]

    code, _out, err = reconcile(settings)

    assert code == 0, err
    assert ledger_rows(settings, "SELECT user_id, status FROM photo_changes") == [
        (ids["Jane Doe"], "succeeded")
    ]
    assert emulator.tenant.photo(ids["Bob Smith"]) is not None
    assert emulator.tenant.photo(ids["Carol White"]) is not None


def test_prune_is_off_by_default_in_mirror_mode(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = everyone_uploaded(settings, emulator)
    (settings.inbox_dir / "Jane Doe.jpg").unlink()
    plain_mirror = dataclasses.replace(settings, move_completed=False)
    result = CliRunner().invoke(main, ["reconcile", *cli_args(plain_mirror), "--mirror"])
    assert result.exit_code == 0
    assert emulator.tenant.photo(ids["Jane Doe"]) is not None
