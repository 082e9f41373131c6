"""What was hashed is what is uploaded: files renamed, rewritten or swapped for a link
between the scan and the upload, in real runs against the emulator."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from reconciler import app
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.executor import CHANGED
from reconciler.model import Outcome
from tests.helpers import jpeg_bytes, ledger_rows, outcomes, write_jpeg


def before_upload(action: Callable[[], None]) -> app.Progress:
    """Progress hooks that do `action` once the plan is made and before any file is opened:
    the seam between the scan and the upload."""

    def stage(name: str) -> None:
        if name == "upload":
            action()

    return app.Progress(stage=stage)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_renamed_onto_another_name_never_puts_one_face_on_the_other(
    settings: Settings, emulator: GraphEmulator
) -> None:
    alice = emulator.tenant.add_user("Alice Adams")
    bob = emulator.tenant.add_user("Bob Brown")
    inbox = settings.inbox_dir
    write_jpeg(inbox / "Alice Adams.jpg", color=(200, 0, 0))
    bob_bytes = write_jpeg(inbox / "Bob Brown.jpg", size=(240, 240), color=(0, 0, 200))

    summary, _ = app.reconcile(
        settings,
        progress=before_upload(
            lambda: os.replace(inbox / "Bob Brown.jpg", inbox / "Alice Adams.jpg")
        ),
    )

    assert outcomes(summary) == {
        "Alice Adams.jpg": Outcome.DEFERRED,
        "Bob Brown.jpg": Outcome.DEFERRED,
    }
    assert {r.reason for r in summary.results} == {CHANGED}
    assert emulator.tenant.photo(alice) is None and emulator.tenant.photo(bob) is None
    assert ledger_rows(settings, "SELECT count(*) FROM uploads") == [(0,)]
    # Nothing was moved: what is now at Alice's name waits for the next run.
    assert (inbox / "Alice Adams.jpg").read_bytes() == bob_bytes
    assert not settings.completed_dir.exists()


def test_a_file_rewritten_before_it_is_read_is_deferred_then_its_new_bytes_uploaded(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    path = settings.inbox_dir / "Jane Doe.jpg"
    write_jpeg(path, color=(200, 0, 0))
    second = jpeg_bytes((260, 260), (0, 200, 0))

    first, _ = app.reconcile(settings, progress=before_upload(lambda: path.write_bytes(second)))

    assert outcomes(first) == {"Jane Doe.jpg": Outcome.DEFERRED}
    assert emulator.tenant.photo(jane) is None

    again, _ = app.reconcile(settings)

    assert outcomes(again) == {"Jane Doe.jpg": Outcome.UPLOADED}
    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == second
    assert ledger_rows(settings, "SELECT source_sha256, uploaded_sha256 FROM uploads") == [
        (sha256(second), sha256(photo.data))
    ]
    assert (settings.completed_dir / "Jane Doe.jpg").read_bytes() == second


def test_a_file_rewritten_after_it_was_read_is_recorded_as_what_graph_got_and_kept(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    path = settings.inbox_dir / "Jane Doe.jpg"
    first_bytes = write_jpeg(path, color=(200, 0, 0))
    second = jpeg_bytes((260, 260), (0, 200, 0))
    # Rewritten at the instant Graph stores the first version, before the run moves it.
    emulator.faults.after_photo_stored = lambda _user: path.write_bytes(second)

    first, _ = app.reconcile(settings)

    emulator.faults.after_photo_stored = None
    assert outcomes(first) == {"Jane Doe.jpg": Outcome.UPLOADED}
    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == first_bytes
    assert ledger_rows(settings, "SELECT source_sha256 FROM uploads") == [(sha256(first_bytes),)]
    # The new version was never uploaded: it must not be filed as done.
    assert path.read_bytes() == second and not settings.completed_dir.exists()

    again, _ = app.reconcile(settings)

    assert outcomes(again) == {"Jane Doe.jpg": Outcome.UPLOADED}
    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == second
    assert (settings.completed_dir / "Jane Doe.jpg").read_bytes() == second


def test_a_file_swapped_for_a_link_uploads_nothing_from_outside_the_inbox(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    path = settings.inbox_dir / "Jane Doe.jpg"
    write_jpeg(path)
    outside = tmp_path / "someone-else.jpg"
    secret = write_jpeg(outside, color=(5, 5, 5))

    def swap() -> None:
        path.unlink()
        path.symlink_to(outside)

    first, _ = app.reconcile(settings, progress=before_upload(swap))

    assert outcomes(first) == {"Jane Doe.jpg": Outcome.DEFERRED}
    assert emulator.tenant.photo(jane) is None
    assert emulator.tenant.photo_writes(jane) == 0

    again, _ = app.reconcile(settings)

    assert outcomes(again) == {"Jane Doe.jpg": Outcome.IGNORED}
    assert emulator.tenant.photo_writes(jane) == 0
    assert path.is_symlink() and outside.read_bytes() == secret  # both left alone
