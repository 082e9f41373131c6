"""Trying photosync offline: `photosync demo` and `photosync emulator`.

`demo` is a whole reconcile against the bundled emulator in seconds. It builds a small tenant
and an inbox that shows every outcome HR staff will meet: photos that land, one whose name two
people share, a guest, a disabled account, a typo, and a file that is not a photo at all.
With --keep it also leaves a photosync.toml for trying the real commands afterwards.

`emulator` serves the same emulator on its own, with a generated tenant, until Ctrl+C, and
prints the settings that point photosync at it.
"""

from __future__ import annotations

import io
import os
import shlex
import signal
import tempfile
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from PIL import Image, ImageDraw

from reconciler import app
from reconciler.config import Settings
from reconciler.emulator import OTHER_IDENTITY_VARIABLES, GraphEmulator
from reconciler.errors import ConfigError
from reconciler.model import Outcome

TENANT = (
    # display name, UPN, enabled, user type
    ("Adele Vance", "adele.vance@contoso.com", True, "Member"),
    ("Alex Wilber", "alex.wilber@contoso.com", True, "Member"),
    ("Megan Bowen", "megan.bowen@contoso.com", True, "Member"),
    ("John Smith", "john.smith@contoso.com", True, "Member"),
    ("Nestor Wilke", "nestor.wilke@contoso.com", True, "Member"),
    ("Lee Gu", "lee.gu@contoso.com", True, "Member"),
    ("Lee Gu", "lee.gu2@contoso.com", True, "Member"),
    ("Grady Archie", "grady_fabrikam.com#EXT#@contoso.com", True, "Guest"),
    ("Isaiah Langer", "isaiah.langer@contoso.com", False, "Member"),
)

INBOX = (
    # file name, what it shows
    ("Adele Vance.jpg", "a new photo: uploaded"),
    ("alex wilber.PNG", "case and extension do not matter: uploaded"),
    ("Megan Bowen.jpeg", "a large photo: resized, then uploaded"),
    ("Lee Gu.jpg", "two people are called Lee Gu: ambiguous, never uploaded"),
    ("Grady Archie.jpg", "a guest: ineligible"),
    ("Isaiah Langer.jpg", "a disabled account: ineligible"),
    ("Jon Smith.jpg", "nobody by that name: unmatched, with a suggestion"),
    ("Nestor Wilke.jpg", "not really a JPEG: invalid, moved to the failed folder"),
)


def portrait(size: tuple[int, int], hue: int) -> bytes:
    image = Image.new("RGB", size, (hue, 120, 255 - hue))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w * 0.3, h * 0.15, w * 0.7, h * 0.55), fill=(240, 200, 170))
    draw.rectangle((w * 0.2, h * 0.6, w * 0.8, h), fill=(40, 40, 90))
    buffer = io.BytesIO()
    image.save(buffer, "PNG" if hue % 2 else "JPEG", quality=90)
    return buffer.getvalue()


def build_inbox(inbox: Path) -> None:
    for number, (name, _story) in enumerate(INBOX):
        if name.startswith("Nestor"):
            data = b"This is a scanned form, not a photo.\n"
        elif name.lower().endswith(".png"):
            data = portrait((400, 400), 2 * number + 1)
        elif name.startswith("Megan"):
            data = portrait((3000, 2000), 2 * number)
        else:
            data = portrait((500, 500), 2 * number)
        (inbox / name).write_bytes(data)


def run(keep: Path | None, echo: Callable[[str], None]) -> None:
    with ExitStack() as stack:
        if keep is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="photosync-demo-")))
        else:
            root = keep
            root.mkdir(parents=True, exist_ok=True)
        emulator = stack.enter_context(GraphEmulator())
        user_ids = [
            emulator.tenant.add_user(
                display_name, user_principal_name=upn, account_enabled=enabled, user_type=user_type
            )
            for display_name, upn, enabled, user_type in TENANT
        ]
        # The real ManagedIdentityCredential fetches its token from the emulator.
        stack.callback(_restore_environment, dict(os.environ))
        wanted = emulator.client_environment(os.environ)
        os.environ.clear()
        os.environ.update(wanted)

        inbox = root / "InProgress"
        inbox.mkdir(exist_ok=True)
        build_inbox(inbox)
        settings = Settings(
            graph_url=emulator.url,
            inbox_dir=inbox,
            completed_dir=root / "Completed",
            failed_dir=root / "Failed",
            database_url=f"sqlite:///{root / 'photosync.db'}",
            settle_seconds=0,
        )
        echo(f"Demo tenant: {len(TENANT)} users on a Graph emulator at {emulator.url}")
        echo(f"Inbox: {inbox}")
        for name, story in INBOX:
            echo(f"  {name:<20} {story}")
        echo("")
        summary, _plan = app.reconcile(settings)
        echo("Where each file went:")
        for result in sorted(summary.results, key=lambda r: r.file):
            where = result.destination.parent.name if result.destination else "stays in the inbox"
            echo(f"  {result.outcome.value:<10} {result.file:<20} {where:<20} {result.reason}")
        echo("")
        landed = sum(1 for u in user_ids if emulator.tenant.photo(u) is not None)
        counts = ", ".join(f"{o.value} {n}" for o, n in summary.counts.items() if n)
        echo(
            f"Summary: {counts}; {summary.graph_requests} Graph requests; "
            f"{summary.duration_s:.1f}s. Photos now in the tenant: {landed}."
        )
        echo("Run it again and nothing is uploaded twice: the ledger remembers.")
        second, _ = app.reconcile(settings)
        echo(
            f"Second run: uploaded {second.counts[Outcome.UPLOADED]}, "
            f"{second.graph_requests} Graph requests."
        )
        if keep is not None:
            echo(f"Kept in {root}")
            for line in keep_config(root):
                echo(line)


def _restore_environment(saved: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(saved)


# --- after the demo: the real commands, against `photosync emulator`

EMULATOR_PORT = 8642  # the port the kept photosync.toml and the printed steps agree on
KEPT_CONFIG = f"""# Written by `photosync demo --keep`. Relative paths are from this file's folder.
# Serve a Graph emulator first: photosync emulator --port {EMULATOR_PORT}
[photosync]
graph_url = "http://127.0.0.1:{EMULATOR_PORT}"
inbox_dir = "InProgress"
completed_dir = "Completed"
failed_dir = "Failed"
database_url = "sqlite:///photosync.db"
settle_seconds = 0
"""


def keep_config(root: Path) -> list[str]:
    """Leave a photosync.toml in `root` (never over an existing one) and say what to try."""
    config = (root / "photosync.toml").absolute()
    try:
        with config.open("x", encoding="utf-8") as handle:
            handle.write(KEPT_CONFIG)
        wrote = f"Wrote {config}."
    except FileExistsError:
        wrote = f"{config} already exists; left as it is."
    run = f"photosync --config {shlex.quote(str(config))}"
    return [
        wrote,
        "Try the real commands next:",
        f"  {run} status                 # what the ledger knows, no Graph needed",
        f"  {run} report unmatched       # the files that did not land, and why",
        f"  photosync emulator --port {EMULATOR_PORT}   # in another terminal; "
        "run the export lines it prints here",
        f"  {run} doctor",
        f"  {run} reconcile --dry-run",
    ]


# The emulator's tenant: the demo's people first, then made-up members, all enabled.
_FIRST = ("Avery", "Blake", "Casey", "Dana", "Emery", "Finley", "Harper", "Jordan", "Kai", "Logan")
_LAST = ("Adams", "Baker", "Clarke", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jones")


def generated_tenant(count: int) -> list[tuple[str, str, bool, str]]:
    """`count` users: the demo's TENANT, then unique made-up members, in a fixed order."""
    people = list(TENANT[:count])
    number = 0
    while len(people) < count:
        first, last = _FIRST[number % len(_FIRST)], _LAST[(number // len(_FIRST)) % len(_LAST)]
        suffix = "" if number < len(_FIRST) * len(_LAST) else f" {number // 100 + 1}"
        name = f"{first} {last}{suffix}"
        upn = name.lower().replace(" ", ".") + "@contoso.com"
        people.append((name, upn, True, "Member"))
        number += 1
    return people


def emulator_settings(emulator: GraphEmulator, env: dict[str, str]) -> list[str]:
    """The sh and PowerShell lines that point photosync (and its ManagedIdentityCredential)
    at `emulator`. The identity header is a value this emulator made up for this run; it
    opens nothing else."""
    variables = {"PHOTOSYNC_GRAPH_URL": emulator.url, **emulator.managed_identity_env()}
    variables["NO_PROXY"] = "127.0.0.1,localhost"
    stray = sorted(name for name in OTHER_IDENTITY_VARIABLES if name in env)
    lines = ["Point photosync at it, in sh:"]
    lines += [f"  export {name}={shlex.quote(value)}" for name, value in variables.items()]
    if stray:
        lines.append(f"  unset {' '.join(stray)}")
    lines.append("or in PowerShell:")
    lines += [f"  $env:{name} = '{value}'" for name, value in variables.items()]
    lines += [f"  Remove-Item Env:{name}" for name in stray]
    return lines


def serve(users: int, port: int, echo: Callable[[str], None]) -> None:
    """Serve the emulator with a generated tenant until Ctrl+C (KeyboardInterrupt)."""
    emulator = GraphEmulator(port=port)
    try:
        emulator.start()
    except OSError as exc:
        raise ConfigError(
            "port", f"cannot listen on 127.0.0.1:{port} ({exc.strerror}); choose another --port"
        ) from None
    try:
        people = generated_tenant(users)
        for display_name, upn, enabled, user_type in people:
            emulator.tenant.add_user(
                display_name, user_principal_name=upn, account_enabled=enabled, user_type=user_type
            )
        echo(f"Graph emulator with {len(people)} users at {emulator.url} (Ctrl+C stops it).")
        for line in emulator_settings(emulator, dict(os.environ)):
            echo(line)
        members = [name for name, _upn, enabled, kind in people if enabled and kind == "Member"]
        examples = ", ".join(f'"{name}.jpg"' for name in members[:3])
        echo(f"A photo named after a user matches, e.g. {examples}.")
        echo("Ready.")
        # Started in the background by a script, a process inherits SIGINT ignored; Ctrl+C
        # (and a service manager's SIGTERM) must stop the emulator all the same.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        threading.Event().wait()
    except KeyboardInterrupt:
        echo("Emulator stopped.")
    finally:
        emulator.stop()
