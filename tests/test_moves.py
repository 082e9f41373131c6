"""Moves out of the inbox: aside names that fit, twins recognised by their hash, and moves
across file systems (a real tmpfs) that a kill at any step cannot turn into two copies."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import app, moves
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.model import Outcome
from tests.helpers import cli_args, ledger_rows, outcomes, write_jpeg

# --- within one file system


def long_stem(size: int) -> str:
    """A person's name of exactly `size` UTF-8 bytes, mostly two-byte letters."""
    stem = ""
    for char in itertools.cycle("Åsa Öberg-Ångström "):
        if len((stem + char).encode()) > size:
            break
        stem += char
    return stem.ljust(size - len(stem.encode()) + len(stem), "a")


def test_an_aside_name_keeps_date_and_extension_and_fits_in_255_bytes(tmp_path: Path) -> None:
    completed = tmp_path / "completed"
    completed.mkdir()
    stem = long_stem(246)  # with two-byte letters, where a cut could fall inside one
    name = f"{stem}.jpg"
    assert len(name.encode()) == 250
    (completed / name).write_bytes(b"older")
    source = tmp_path / name
    source.write_bytes(b"newer")

    moves.move_into(source, completed, sha256=hashlib.sha256(b"newer").hexdigest())

    files = {p.name: p.read_bytes() for p in completed.iterdir()}
    assert files.pop(name) == b"newer"
    [(aside, data)] = files.items()
    assert data == b"older"
    assert len(aside.encode("utf-8")) <= 255  # encodes: no character was cut in half
    assert aside.endswith(".jpg") and aside.startswith(stem[:100])
    assert aside[-22:-4].startswith(".20")  # '.YYYY-mm-dd_HHMMSS' kept whole


def test_a_twin_with_the_same_bytes_is_the_same_photo(tmp_path: Path) -> None:
    completed = tmp_path / "completed"
    completed.mkdir()
    (completed / "Jane Doe.jpg").write_bytes(b"photo")
    source = tmp_path / "Jane Doe.jpg"
    source.write_bytes(b"photo")

    moves.move_into(source, completed, sha256=hashlib.sha256(b"photo").hexdigest())

    assert not source.exists()
    assert [p.name for p in completed.iterdir()] == ["Jane Doe.jpg"]


def test_a_file_already_in_its_destination_is_never_removed(tmp_path: Path) -> None:
    # completed_dir set to the inbox itself: the "twin" is the file, and must survive.
    source = tmp_path / "Jane Doe.jpg"
    source.write_bytes(b"photo")

    moves.move_into(source, tmp_path, sha256=hashlib.sha256(b"photo").hexdigest())

    assert source.read_bytes() == b"photo"


def test_a_failed_move_puts_the_older_file_back(tmp_path: Path) -> None:
    completed = tmp_path / "completed"
    completed.mkdir()
    (completed / "Jane Doe.jpg").write_bytes(b"older")
    missing = tmp_path / "Jane Doe.jpg"  # removed by someone before the move

    with pytest.raises(FileNotFoundError):
        moves.move_into(missing, completed, sha256=hashlib.sha256(b"newer").hexdigest())

    assert {p.name: p.read_bytes() for p in completed.iterdir()} == {"Jane Doe.jpg": b"older"}


# --- across file systems


def only_entries(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def test_a_move_across_file_systems_copies_then_removes(
    settings: Settings, emulator: GraphEmulator, other_fs: Path
) -> None:
    settings = _with_completed(settings, other_fs / "completed")
    assert os.stat(settings.inbox_dir).st_dev != os.stat(other_fs).st_dev
    emulator.tenant.add_user("Jane Doe")
    data = write_jpeg(settings.inbox_dir / "Jane Doe.jpg")

    summary, _ = app.reconcile(settings)

    assert outcomes(summary) == {"Jane Doe.jpg": Outcome.UPLOADED}
    assert only_entries(settings.completed_dir) == ["Jane Doe.jpg"]
    assert (settings.completed_dir / "Jane Doe.jpg").read_bytes() == data
    assert only_entries(settings.inbox_dir) == []


# The child: one real `photosync reconcile`, killed (as by SIGKILL, no clean-up) right after
# the named step of a move.
_KILLED_AT = """
import os, sys
from reconciler import moves
from reconciler.cli import main

def kill_after(step):
    if step == sys.argv[1]:
        os._exit(137)

moves.after_step = kill_after
main(sys.argv[2:], prog_name="photosync")
"""


@pytest.mark.parametrize("step", ["copied", "renamed", "synced"])
def test_a_run_killed_at_any_step_of_a_move_leaves_one_copy_after_the_next_run(
    settings: Settings, emulator: GraphEmulator, other_fs: Path, step: str
) -> None:
    settings = _with_completed(settings, other_fs / "completed")
    jane = emulator.tenant.add_user("Jane Doe")
    data = write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    # An older photo of Jane already filed: it must survive, once, under a dated name.
    settings.completed_dir.mkdir()
    older = write_jpeg(settings.completed_dir / "Jane Doe.jpg", color=(1, 2, 3))

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AT, step, "reconcile", *cli_args(settings)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == 137, killed.stderr
    assert emulator.tenant.photo_writes(jane) == 1  # uploaded before the move began

    summary, _ = app.reconcile(settings)

    assert outcomes(summary) == {"Jane Doe.jpg": Outcome.UNCHANGED}
    assert emulator.tenant.photo_writes(jane) == 1
    assert only_entries(settings.inbox_dir) == []
    filed = {
        name: (settings.completed_dir / name).read_bytes()
        for name in os.listdir(settings.completed_dir)
    }
    assert filed.pop("Jane Doe.jpg") == data
    assert list(filed.values()) == [older]  # no partial file, no second copy
    assert ledger_rows(
        settings, "SELECT location, destination FROM inbox_files WHERE name = 'Jane Doe.jpg'"
    ) == [("completed", str(settings.completed_dir / "Jane Doe.jpg"))]

    again, _ = app.reconcile(settings)
    assert again.results == [] and again.exit_code == 0
    assert len(os.listdir(settings.completed_dir)) == 2


def test_an_inbox_that_cannot_be_deleted_from_gains_no_copies(
    settings: Settings, emulator: GraphEmulator, other_fs: Path
) -> None:
    inbox = other_fs / "inbox"
    inbox.mkdir()
    settings = dataclasses.replace(settings, inbox_dir=inbox)
    jane = emulator.tenant.add_user("Jane Doe")
    data = write_jpeg(inbox / "Jane Doe.jpg")
    subprocess.run(["mount", "-o", "remount,ro", str(other_fs)], check=True)

    first, _ = app.reconcile(settings)
    second, _ = app.reconcile(settings)

    for summary in (first, second):
        assert outcomes(summary) == {"Jane Doe.jpg": Outcome.FAILED}
        [result] = summary.results
        assert "cannot be removed from the inbox" in result.reason
        assert "delete rights" in result.reason
        assert summary.exit_code == 1
    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == data
    assert emulator.tenant.photo_writes(jane) == 1  # the second run only retried the move
    assert only_entries(settings.completed_dir) == []  # the copy was taken back, both times
    assert (inbox / "Jane Doe.jpg").read_bytes() == data


def _with_completed(settings: Settings, completed: Path) -> Settings:
    return dataclasses.replace(settings, completed_dir=completed)
