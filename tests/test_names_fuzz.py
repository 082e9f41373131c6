"""Fuzzing file names: whatever bytes a name is made of (invalid UTF-8, control characters,
newlines, 255-byte names), a run never crashes and every entry gets an outcome, or is junk
the README lists as ignored. Every file ends in exactly one of inbox, completed, failed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler import app
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.names import shown
from reconciler.scanner import is_junk
from tests.helpers import jpeg_bytes

NAME_MAX = 255
SUFFIXES = (b".jpg", b".JPEG", b".png", b".txt", b"")


def name_bytes() -> st.SearchStrategy[bytes]:
    """A file name as a POSIX file system takes it: any bytes but NUL and '/', at most 255."""
    stem = st.binary(min_size=1, max_size=NAME_MAX).map(
        lambda b: b.replace(b"\0", b"_").replace(b"/", b"_")
    )
    return st.tuples(stem, st.sampled_from(SUFFIXES)).map(
        lambda parts: (parts[0] + parts[1])[-NAME_MAX:]
    )


def contents() -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.just(jpeg_bytes((64, 64))),
        st.binary(max_size=64),  # not an image at all
        st.just(jpeg_bytes((64, 64))[:100]),  # a truncated JPEG
    )


def entries_under(*folders: Path) -> list[bytes]:
    found = []
    for folder in folders:
        if folder.exists():
            found.extend(os.listdir(os.fsencode(folder)))
    return found


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(files=st.dictionaries(name_bytes(), contents(), min_size=1, max_size=6))
def test_any_file_name_gets_an_outcome_and_stays_in_one_place(
    settings: Settings, emulator: GraphEmulator, files: dict[bytes, bytes]
) -> None:
    inbox = os.fsencode(settings.inbox_dir)
    for folder in (settings.inbox_dir, settings.completed_dir, settings.failed_dir):
        shutil.rmtree(folder, ignore_errors=True)
    settings.inbox_dir.mkdir()
    created = {}
    for raw, data in files.items():
        if raw in (b".", b".."):
            continue
        with open(os.path.join(inbox, raw), "wb") as handle:
            handle.write(data)
        created[raw] = data
    emulator.tenant.add_user("Fuzz Person")

    summary, _ = app.reconcile(settings)

    reported = {result.file for result in summary.results}
    for raw in created:
        name = os.fsdecode(raw)
        if is_junk(name):
            continue
        assert shown(name) in reported, f"{name!r} got no outcome"
    everywhere = entries_under(settings.inbox_dir, settings.completed_dir, settings.failed_dir)
    for raw in created:
        assert everywhere.count(raw) == 1, f"{raw!r} is in {everywhere.count(raw)} places"
