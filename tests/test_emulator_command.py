"""Trying photosync offline: `photosync emulator` as a real process that a real
`photosync reconcile` runs against, stopped with Ctrl+C (SIGINT); `photosync demo --keep`
leaving a photosync.toml the real commands read."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.emulator import OTHER_IDENTITY_VARIABLES
from tests.helpers import write_jpeg

PHOTOSYNC = [sys.executable, "-m", "reconciler"]


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`photosync emulator --users 5` running, and what it printed up to "Ready."."""
    process = subprocess.Popen(
        [*PHOTOSYNC, "emulator", "--users", "5", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    printed = []
    for line in process.stdout:  # blocks on the process's own output, never on a clock
        printed.append(line.rstrip("\n"))
        if line.strip() == "Ready.":
            break
    try:
        yield process, printed
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def exported(printed: list[str]) -> dict[str, str]:
    variables = {}
    for line in printed:
        if line.startswith("  export "):
            name, _, value = line.removeprefix("  export ").partition("=")
            variables[name] = shlex.split(value)[0]
    return variables


def test_a_real_reconcile_against_the_served_emulator(
    served: tuple[subprocess.Popen[str], list[str]], tmp_path: Path
) -> None:
    process, printed = served
    assert printed[0].startswith("Graph emulator with 5 users at http://127.0.0.1:")
    variables = exported(printed)
    assert set(variables) == {
        "PHOTOSYNC_GRAPH_URL",
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "NO_PROXY",
    }
    example = re.search(r'e\.g\. "([^"]+)"', "\n".join(printed))
    assert example is not None
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_jpeg(inbox / example.group(1))

    env = {k: v for k, v in os.environ.items() if k not in OTHER_IDENTITY_VARIABLES}
    env = {k: v for k, v in env.items() if not k.startswith("PHOTOSYNC_")}
    env.update(variables)
    run = subprocess.run(
        [
            *PHOTOSYNC,
            "reconcile",
            "--json",
            "--inbox-dir",
            str(inbox),
            "--completed-dir",
            str(tmp_path / "completed"),
            "--failed-dir",
            str(tmp_path / "failed"),
            "--database-url",
            f"sqlite:///{tmp_path / 'photosync.db'}",
            "--settle-seconds",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["uploaded"] == 1
    assert (tmp_path / "completed" / example.group(1)).is_file()

    process.send_signal(signal.SIGINT)
    rest, errors = process.communicate(timeout=60)
    assert process.returncode == 0, errors
    assert "Emulator stopped." in rest
    assert "Traceback" not in errors


def test_a_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["emulator", "--port", str(port)])
    assert result.exit_code == 2
    assert f"127.0.0.1:{port}" in result.stderr and "another --port" in result.stderr
    assert result.stderr.count("\n") == 1


def test_demo_keep_leaves_a_config_the_real_commands_read(tmp_path: Path) -> None:
    kept = tmp_path / "demo"
    result = subprocess.run(
        [*PHOTOSYNC, "demo", "--keep", str(kept)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    config = kept / "photosync.toml"
    assert f"Wrote {config}." in result.stdout
    assert f"photosync --config {config} status" in result.stdout
    assert "photosync emulator --port 8642" in result.stdout

    status = subprocess.run(
        [*PHOTOSYNC, "--config", str(config), "status", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",  # relative paths in the kept file do not depend on where this runs
    )
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert str(kept / "photosync.db") in info["ledger"]
    assert len(info["runs"]) == 2  # the demo's two runs

    again = subprocess.run(
        [*PHOTOSYNC, "demo", "--keep", str(kept)], capture_output=True, text=True, timeout=300
    )
    assert f"{config} already exists; left as it is." in again.stdout
