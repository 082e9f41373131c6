"""Fixtures shared by every test: a live Graph emulator, a workspace with a real SQLite
ledger, and a folder on a file system of its own. Plain helpers are in tests/helpers.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.config import Settings
from reconciler.emulator import GraphEmulator


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphEmulator]:
    """A running emulator, with the environment pointing ManagedIdentityCredential at it."""
    with GraphEmulator() as emu:
        wanted = emu.client_environment(os.environ)
        for name in set(os.environ) - set(wanted):
            monkeypatch.delenv(name)
        for name, value in wanted.items():
            monkeypatch.setenv(name, value)
        yield emu


@pytest.fixture
def settings(tmp_path: Path, emulator: GraphEmulator) -> Settings:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return Settings(
        graph_url=emulator.url,
        inbox_dir=inbox,
        completed_dir=tmp_path / "completed",
        failed_dir=tmp_path / "failed",
        database_url=f"sqlite:///{tmp_path / 'ledger' / 'photosync.db'}",
        settle_seconds=0,
        concurrency=2,
    )


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on a file system of its own (tmpfs), so that rename(2) into or out of it
    fails with EXDEV as it does for a completed_dir on another disk or share."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount_point = tmp_path / "other-fs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount refused a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)
