"""The inbox scan: what counts as a candidate, and reading files only when needed."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import time
from pathlib import Path

import pytest

from reconciler.fingerprint import CachedFingerprint
from reconciler.scanner import (
    FOLDER_REASON,
    LINK_REASON,
    SPECIAL_REASON,
    ScanResult,
    read_snapshot,
    scan,
)


def test_only_plain_files_directly_in_the_inbox(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "Jane Doe.jpg").write_bytes(b"x")
    (inbox / ".hidden.jpg").write_bytes(b"x")
    (inbox / "Thumbs.db").write_bytes(b"x")
    (inbox / "desktop.ini").write_bytes(b"x")
    (inbox / "sub").mkdir()
    (inbox / "sub" / "Deep Person.jpg").write_bytes(b"x")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    (inbox / "Link Out.jpg").symlink_to(outside)
    (inbox / "Link In.jpg").symlink_to(inbox / "Jane Doe.jpg")

    result = scan(inbox, {}, settle_seconds=0)

    # Links are never followed, not even to a file inside the inbox: each is reported.
    assert sorted(f.name for f in result.files) == ["Jane Doe.jpg"]
    assert sorted((u.file.name, u.ignored) for u in result.unreadable) == [
        ("Link In.jpg", True),
        ("Link Out.jpg", True),
    ]


def later() -> int:
    return time.time_ns() + 10_000_000_000


def test_unchanged_files_are_not_read_again(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for number in range(5):
        path = inbox / f"Person {number}.jpg"
        path.write_bytes(bytes([number]) * 1000)
    # The first scan happens a while after the files were written, as in real use.
    first = scan(inbox, {}, settle_seconds=0, clock_ns=later)
    assert bytes_hashed(first) == 5000
    cache = {
        str(f.path): CachedFingerprint(f.stat, f.sha256 or "", first.started_ns)
        for f in first.files
    }
    second = scan(inbox, cache, settle_seconds=0)
    assert bytes_hashed(second) == 0 and second.hashed == []
    assert {f.sha256 for f in second.files} == {f.sha256 for f in first.files}

    changed = inbox / "Person 3.jpg"
    changed.write_bytes(b"new content")
    third = scan(inbox, cache, settle_seconds=0)
    assert [f.name for f in third.hashed] == ["Person 3.jpg"]


def test_racy_entry_is_hashed_again(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "Jane.jpg"
    path.write_bytes(b"abc")
    first = scan(inbox, {}, settle_seconds=0)
    # Hashed in the same instant the file was written: its stat cannot vouch for it.
    cache = {
        str(f.path): CachedFingerprint(f.stat, f.sha256 or "", first.started_ns)
        for f in first.files
    }
    second = scan(inbox, cache, settle_seconds=0)
    assert [f.name for f in second.hashed] == ["Jane.jpg"]


def test_recent_files_are_deferred_without_reading(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "Jane.jpg").write_bytes(b"abc")
    result = scan(inbox, {}, settle_seconds=60)
    assert [f.name for f in result.deferred] == ["Jane.jpg"]
    assert result.files == [] and bytes_hashed(result) == 0


def test_every_file_gets_its_own_hash_when_hashed_in_threads(tmp_path: Path) -> None:
    # More files than one hashing batch, of different sizes, so the threads finish out of
    # order: each recorded hash must still be the one of its own file's bytes.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    expected = {}
    for number in range(700):
        content = number.to_bytes(2, "big") * (1 + number * 37 % 5000)
        (inbox / f"Person {number:03d}.jpg").write_bytes(content)
        expected[f"Person {number:03d}.jpg"] = hashlib.sha256(content).hexdigest()

    result = scan(inbox, {}, settle_seconds=0, clock_ns=later)

    assert {f.name: f.sha256 for f in result.files} == expected
    assert len(result.hashed) == 700 and result.deferred == []
    assert bytes_hashed(result) == sum(p.stat().st_size for p in inbox.iterdir())


def test_junk_is_silent_and_every_other_entry_is_a_candidate_or_reported(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for junk in (".DS_Store", "._Jane Doe.jpg", "..jpg", "Thumbs.db", "DESKTOP.INI", "~$Doc.docx"):
        (inbox / junk).write_bytes(b"x")
    (inbox / "Jane Doe.jpg").write_bytes(b"photo")
    (inbox / "x.jpg").mkdir()
    (inbox / "Archive").mkdir()  # a plain sub-folder: never looked into, by rule
    (inbox / "Loop.jpg").symlink_to("Loop.jpg")
    (inbox / "Dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(inbox / "Pipe.jpg")

    result = scan(inbox, {}, settle_seconds=0)

    assert [f.name for f in result.files] == ["Jane Doe.jpg"]
    assert sorted((u.file.name, u.error, u.ignored) for u in result.unreadable) == [
        ("Dangling.jpg", LINK_REASON, True),
        ("Loop.jpg", LINK_REASON, True),
        ("Pipe.jpg", SPECIAL_REASON, True),
        ("x.jpg", FOLDER_REASON, True),
    ]


def test_a_name_that_is_not_utf8_is_scanned_under_its_real_path(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    real = os.fsdecode(os.fsencode(str(inbox)) + b"/Caf\xe9.jpg")
    Path(real).write_bytes(b"bytes")

    result = scan(inbox, {}, settle_seconds=0)

    [file] = result.files
    assert file.name == "Caf\\xe9.jpg"  # shown escaped
    assert os.fsencode(file.path) == os.fsencode(real)  # the real bytes, for the move
    assert file.key.endswith("/Caf\\xe9.jpg") and file.key.isprintable()
    assert file.sha256 == hashlib.sha256(b"bytes").hexdigest()


def test_the_scan_records_the_device_and_the_cache_ignores_it(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "Jane.jpg").write_bytes(b"abc")
    first = scan(inbox, {}, settle_seconds=0, clock_ns=later)
    [file] = first.files
    assert file.stat.device == os.stat(inbox / "Jane.jpg").st_dev != 0
    # The ledger keeps no device: a cached entry without one still vouches for the file.
    stored = CachedFingerprint(dataclasses.replace(file.stat, device=0), file.sha256 or "", later())
    second = scan(inbox, {file.key: stored}, settle_seconds=0)
    assert second.hashed == [] and [f.sha256 for f in second.files] == [file.sha256]


def test_read_snapshot_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"not yours")
    link = tmp_path / "Jane.jpg"
    link.symlink_to(outside)
    with pytest.raises(OSError) as caught:
        read_snapshot(link)
    assert caught.value.errno == errno.ELOOP


def bytes_hashed(result: ScanResult) -> int:
    """How much of the inbox a scan read to hash it."""
    return sum(file.stat.size for file in result.hashed)
