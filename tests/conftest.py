"""Fixtures shared by every test: a live Graph emulator, a workspace with a real SQLite
ledger, and real generated images."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.model import Outcome, RunSummary


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


def jpeg_bytes(
    size: tuple[int, int] = (200, 200),
    color: tuple[int, int, int] = (200, 30, 30),
    quality: int = 90,
) -> bytes:
    """A real JPEG of one colour; distinct colours give distinct bytes."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_jpeg(
    path: Path, size: tuple[int, int] = (200, 200), color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    data = jpeg_bytes(size, color)
    path.write_bytes(data)
    return data


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


def ledger_rows(settings: Settings, query: str) -> list[tuple[object, ...]]:
    path = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchall()


def outcomes(summary: RunSummary) -> dict[str, Outcome]:
    return {r.file: r.outcome for r in summary.results}


def cli_args(settings: Settings) -> list[str]:
    return [
        "--graph-url",
        settings.graph_url,
        "--inbox-dir",
        str(settings.inbox_dir),
        "--completed-dir",
        str(settings.completed_dir),
        "--failed-dir",
        str(settings.failed_dir),
        "--database-url",
        settings.database_url,
        "--settle-seconds",
        "0",
    ]


def lock_holder(database_url: str) -> subprocess.Popen[str]:
    """Another photosync process holding the run lock on `database_url`: returns once the
    lock is taken; the caller kills it to simulate a run that died holding the lock."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from reconciler.ledger.db import Ledger\n"
            f"ledger = Ledger({database_url!r})\n"
            "with ledger.run_lock():\n"
            "    print('locked', flush=True); sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


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


def reconcile_killed_when_a_photo_is_stored(emulator: GraphEmulator, settings: Settings) -> None:
    """Run `photosync reconcile` as a child process and SIGKILL it the instant Graph has
    stored its first photo: uploaded, but the run never hears so nor records an end."""
    victim = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "reconcile", *cli_args(settings)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    emulator.faults.after_photo_stored = lambda _user: victim.send_signal(signal.SIGKILL)
    try:
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        emulator.faults.after_photo_stored = None
