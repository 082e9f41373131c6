"""The archive: content-addressed, atomic, private; archive_keep versions per user; off
means no reads and no files; a run killed after its write keeps the photo from before."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.archive import Archive, ArchiveError, default_archive_dir
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from tests.helpers import (
    cli_args,
    jpeg_bytes,
    ledger_rows,
    reconcile_killed_when_a_photo_is_stored,
    write_jpeg,
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_dir(settings: Settings) -> Path:
    return Path(settings.database_url.removeprefix("sqlite:///")).parent / "archive"


def test_objects_are_named_by_their_hash_private_and_read_back_checked(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "archive")
    data = jpeg_bytes()

    name = archive.put(data)

    assert name == sha(data)
    assert archive.put(data) == name  # stored once
    assert archive.get(name) == data
    path = archive.path_of(name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (archive.root, archive.root / "objects", path.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [name]  # no temporary file left
    path.write_bytes(data[:-1])
    with pytest.raises(ArchiveError, match="damaged"):
        archive.get(name)


def test_a_missing_object_is_one_line_naming_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="restore it from a backup"):
        Archive(tmp_path).get(sha(b"gone"))


def test_the_archive_lives_beside_a_sqlite_ledger(tmp_path: Path) -> None:
    assert default_archive_dir(f"sqlite:///{tmp_path}/l/photosync.db") == tmp_path / "l" / "archive"
    assert default_archive_dir("postgresql+psycopg://u@db/photosync").name == "archive"


def test_retention_keeps_archive_keep_versions_per_user(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    args = [*cli_args(settings), "--mirror"]
    sent: list[bytes] = []
    for version in range(5):
        write_jpeg(settings.inbox_dir / "Jane Doe.jpg", color=(50 * version, 10, 10))
        result = CliRunner().invoke(main, ["reconcile", "--json", *args])
        assert result.exit_code == 0 and json.loads(result.stdout)["uploaded"] == 1
        photo = emulator.tenant.photo(jane)
        assert photo is not None
        sent.append(photo.data)

    kept = {p.name for p in (archive_dir(settings) / "objects").glob("*/*")}

    # Versions 3, 4 and 5: what each replaced (2, 3, 4) and what each sent (3, 4, 5).
    assert kept == {sha(data) for data in sent[1:]}
    assert sha(sent[0]) not in kept
    assert len(ledger_rows(settings, "SELECT id FROM uploads")) == 5


def test_with_the_archive_off_an_upload_reads_nothing_and_keeps_nothing(
    settings: Settings, emulator: GraphEmulator
) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    emulator.reset_log()

    result = CliRunner().invoke(
        main, ["reconcile", "--json", *cli_args(settings), "--archive", "false"]
    )

    assert result.exit_code == 0 and json.loads(result.stdout)["uploaded"] == 1
    photo_requests = [r.method for r in emulator.requests() if "/photo" in r.path]
    assert photo_requests == ["PUT"]
    assert not archive_dir(settings).exists()
    assert ledger_rows(settings, "SELECT replaced_object, uploaded_object FROM uploads") == [
        (None, None)
    ]


def test_a_run_killed_after_the_write_keeps_the_photo_from_before(
    settings: Settings, emulator: GraphEmulator
) -> None:
    """Killed the instant Graph stored the new photo, before its ETag was recorded: the
    rerun uploads again, and the "before" it records is still the user's own photo, not
    the one the dead run wrote; a rollback of the rerun gives the user that photo back."""
    jane = emulator.tenant.add_user("Jane Doe")
    own = jpeg_bytes((100, 100), (5, 200, 5))
    emulator.change_photo_from_outside(jane, own)
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    reconcile_killed_when_a_photo_is_stored(emulator, settings)
    assert ledger_rows(settings, "SELECT status, replaced_object FROM uploads") == [
        ("pending", sha(own))
    ]

    rerun = CliRunner().invoke(main, ["reconcile", "--json", *cli_args(settings)])

    assert rerun.exit_code == 0, rerun.output
    run_id = json.loads(rerun.stdout)["run_id"]
    photo = emulator.tenant.photo(jane)
    assert photo is not None
    assert ledger_rows(
        settings, "SELECT replaced_object, etag_after FROM uploads WHERE status = 'succeeded'"
    ) == [(sha(own), photo.etag)]
    assert (archive_dir(settings) / "objects" / sha(own)[:2] / sha(own)).read_bytes() == own
    rollback = CliRunner().invoke(main, ["rollback", str(run_id), *cli_args(settings)])
    assert rollback.exit_code == 0, rollback.output
    restored = emulator.tenant.photo(jane)
    assert restored is not None and restored.data == own


def test_an_archive_that_cannot_be_written_uploads_nothing_and_says_why(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "not-a-folder"
        blocked.write_text("a file where the archive folder should be")
    else:
        blocked = tmp_path / "locked"
        blocked.mkdir(mode=0o500)
    jane = emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    locked = dataclasses.replace(settings, archive_dir=blocked / "archive")

    result = CliRunner().invoke(
        main, ["reconcile", *cli_args(locked), "--archive-dir", str(locked.archive_dir)]
    )

    assert result.exit_code == 1
    assert "cannot write to the archive" in result.stdout
    assert emulator.tenant.photo(jane) is None
    assert (settings.inbox_dir / "Jane Doe.jpg").exists()
