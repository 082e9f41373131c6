"""`photosync demo`: a whole reconcile against the bundled emulator, offline, in seconds.

It builds a small tenant and an inbox that shows every outcome HR staff will meet: photos
that land, one whose name two people share, a guest, a disabled account, a typo, and a file
that is not a photo at all.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from PIL import Image, ImageDraw

from reconciler import app
from reconciler.config import Settings
from reconciler.graph.emulator import GraphEmulator
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


def _restore_environment(saved: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(saved)
