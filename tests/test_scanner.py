"""The inbox scan: what counts as a candidate, and reading files only when needed."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from reconciler.fingerprint import CachedFingerprint
from reconciler.scanner import scan


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

    assert sorted(f.name for f in result.files) == ["Jane Doe.jpg", "Link In.jpg"]


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
    assert first.bytes_read == 5000
    cache = {
        str(f.path): CachedFingerprint(f.stat, f.sha256 or "", first.started_ns)
        for f in first.files
    }
    second = scan(inbox, cache, settle_seconds=0)
    assert second.bytes_read == 0 and second.hashed == []
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
    assert result.files == [] and result.bytes_read == 0


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
    assert result.bytes_read == sum(p.stat().st_size for p in inbox.iterdir())
