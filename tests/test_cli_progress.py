"""Progress bars for a person at a terminal; silence but for the summary for a scheduled run."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading

from click.testing import CliRunner

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from tests.helpers import cli_args, write_jpeg


def test_off_a_terminal_a_run_prints_only_its_summary(
    settings: Settings, emulator: GraphEmulator
) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    write_jpeg(settings.inbox_dir / "Nobody Known.jpg")

    result = CliRunner().invoke(main, ["reconcile", *cli_args(settings)])  # not a tty

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    [summary] = result.stdout.splitlines()
    # delta "latest", one users page, the lookup confirming Jane, her PUT, and the archive's
    # reads of the photo it replaces and of the ETag after it (archive = true)
    assert summary.startswith("run 1: uploaded 1, unmatched 1; 6 Graph requests in ")


def test_off_a_terminal_the_files_that_failed_the_run_are_named(
    settings: Settings, emulator: GraphEmulator
) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    (settings.inbox_dir / "notes.txt").write_text("not a photo")

    result = CliRunner().invoke(main, ["reconcile", *cli_args(settings)])

    assert result.exit_code == 1
    assert result.stderr == ""
    invalid, summary = result.stdout.splitlines()
    assert invalid.startswith("invalid     notes.txt  (not a photo file type")
    assert summary.startswith("run 1: uploaded 1, invalid 1;")


def run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run photosync with stdout and stderr on a pseudo-terminal, as a person would."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**os.environ, "COLUMNS": "100"},
    )
    os.close(terminal)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    code = process.wait(timeout=120)
    reader.join(timeout=30)
    os.close(controller)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_on_a_terminal_each_stage_shows_its_progress(
    settings: Settings, emulator: GraphEmulator
) -> None:
    for name in ("Jane Doe", "John Smith", "Ann Other"):
        emulator.tenant.add_user(name)
        write_jpeg(settings.inbox_dir / f"{name}.jpg")
    write_jpeg(settings.inbox_dir / "Nobody Known.jpg")

    code, screen = run_on_a_terminal(["reconcile", *cli_args(settings)])

    assert code == 0, screen
    assert "Scanning the inbox..." in screen
    assert "Refreshing users from Graph..." in screen
    assert "users refreshed: 3" in screen
    assert "Handling files..." in screen
    assert "4/4" in screen and "[####" in screen  # the bar reached the end
    assert "uploaded    Jane Doe.jpg" in screen  # a person sees every file
    assert "run 1: uploaded 3, unmatched 1;" in screen
