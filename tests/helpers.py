"""Plain helpers shared by more than one test module: real images, a look into the ledger,
the CLI's arguments for a workspace, a process holding the run lock, raw Graph requests
against the emulator, and whole scenarios. Fixtures live in conftest.py; these are imported.
"""

from __future__ import annotations

import dataclasses
import io
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
from PIL import Image

from reconciler import app
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.matching import UserIndex
from reconciler.model import Outcome, RunSummary, User

# --- real images


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


# --- the ledger, the CLI and the run lock of a workspace


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


# --- raw Graph requests against the emulator


def v1(emulator: GraphEmulator, path: str) -> str:
    return f"{emulator.url}/v1.0/{path}"


def error_of(response: requests.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def follow(session: requests.Session, url: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Every page of a listing or delta round, in order."""
    pages = []
    next_url: str | None = url
    while next_url:
        response = session.get(next_url, **kwargs)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_url = pages[-1].get("@odata.nextLink")
    return pages


def delta_round(session: requests.Session, url: str, **kwargs: Any) -> tuple[list[Any], str]:
    pages = follow(session, url, **kwargs)
    return [item for page in pages for item in page["value"]], pages[-1]["@odata.deltaLink"]


# --- scenarios

GREEN = (20, 200, 40)  # the unmatched photo's colour, looked for in the screenshot


@dataclasses.dataclass
class Scenario:
    settings: Settings
    run_id: int
    jane: str


def every_reason(settings: Settings, emulator: GraphEmulator) -> Scenario:
    """One reconcile that leaves a file for each reason but deferred (which needs its own
    run: a fresh ctime defers every file at once)."""
    tenant = emulator.tenant
    tenant.add_user("John Smith", user_principal_name="john@contoso.com")
    tenant.add_user("Lee Gu", user_principal_name="lee1@contoso.com")
    tenant.add_user("Lee Gu", user_principal_name="lee2@contoso.com")
    tenant.add_user("Gus Guest", user_principal_name="gus@example.org", user_type="Guest")
    tenant.add_user("Dana Disabled", user_principal_name="dana@contoso.com", account_enabled=False)
    jane = tenant.add_user("Jane Doe", user_principal_name="jane@contoso.com")
    emulator.faults.fail_photo_users.add(jane)
    inbox = settings.inbox_dir
    write_jpeg(inbox / "Jon Smith.jpg", color=GREEN)
    write_jpeg(inbox / "Ann <Admin> & Co.jpg", color=(90, 90, 200))
    write_jpeg(inbox / "Lee Gu.jpg")
    write_jpeg(inbox / "Gus Guest.jpg")
    write_jpeg(inbox / "Dana Disabled.jpg")
    write_jpeg(inbox / "Jane Doe.jpg")
    (inbox / "notes.txt").write_text("not a photo")
    settings = dataclasses.replace(settings, retry_attempts=2)
    summary, _ = app.reconcile(settings)
    emulator.reset_log()
    return Scenario(settings, summary.run_id, jane)


# --- a small directory for the pure matching and planning tests: one clear match, a shared
# display name, a guest, a disabled account, and a disabled namesake

JANE = User("1", "Jane Doe", "jane@contoso.com")
LEE1 = User("2", "Lee Gu", "lee1@contoso.com")
LEE2 = User("3", "Lee Gu", "lee2@contoso.com")
GUEST = User("4", "Gus Guest", "gus@x.com", user_type="Guest")
OFF = User("5", "Dana Off", "dana@contoso.com", account_enabled=False)
LEE_OFF = User("6", "Lee Gu", "lee3@contoso.com", account_enabled=False)
INDEX = UserIndex([JANE, LEE1, LEE2, GUEST, OFF, LEE_OFF], "displayName")
