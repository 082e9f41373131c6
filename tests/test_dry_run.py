"""`reconcile --dry-run` is a faithful what-if: it reads and prepares every image a real run
would upload, so a dry run and the real run after it give the same counts and exit code,
and the dry run leaves nothing a later run could read as done."""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.images import MAX_PIXELS
from tests.helpers import cli_args, jpeg_bytes, ledger_rows, write_jpeg

COUNTS = ("uploaded", "unchanged", "unmatched", "ambiguous", "ineligible", "invalid", "failed")


def inbox_with_bad_images(settings: Settings, emulator: GraphEmulator) -> dict[str, str]:
    """Files whose names match real users but whose bytes a real run rejects only when it
    prepares them: empty, truncated, too many pixels. Returns user id by file name."""
    tenant = emulator.tenant
    users = {
        name: tenant.add_user(name.removesuffix(".jpg").removesuffix(".png"))
        for name in ("Jane Doe.jpg", "Zero Byte.jpg", "Cut Short.jpg", "Huge Poster.png")
    }
    inbox = settings.inbox_dir
    write_jpeg(inbox / "Jane Doe.jpg")
    (inbox / "Zero Byte.jpg").write_bytes(b"")
    whole = jpeg_bytes((400, 400), (10, 200, 10))
    (inbox / "Cut Short.jpg").write_bytes(whole[: len(whole) // 2])
    # A one-bit PNG is small on disk, but its header says more pixels than photosync decodes.
    side = int(MAX_PIXELS**0.5) + 100
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")
    (inbox / "Huge Poster.png").write_bytes(buffer.getvalue())
    write_jpeg(inbox / "Nobody Known.jpg", color=(1, 2, 3))
    return users


def invoke(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["reconcile", *args, *cli_args(settings)])
    return result.exit_code, result.stdout


def test_a_dry_run_counts_what_the_real_run_then_does(
    settings: Settings, emulator: GraphEmulator
) -> None:
    users = inbox_with_bad_images(settings, emulator)

    dry_code, dry_out = invoke(settings, "--dry-run", "--json")

    dry = json.loads(dry_out)
    assert dry["dry_run"] is True
    assert (dry["uploaded"], dry["invalid"], dry["unmatched"]) == (1, 3, 1)
    assert dry_code == 1  # the three unusable images fail the run, as they will for real
    # Nothing a later run could read as done: no outcome, no run line per file, no upload.
    assert ledger_rows(settings, "SELECT count(*) FROM run_files") == [(0,)]
    assert ledger_rows(settings, "SELECT count(*) FROM uploads") == [(0,)]
    assert ledger_rows(
        settings, "SELECT count(*) FROM inbox_files WHERE last_outcome IS NOT NULL"
    ) == [(0,)]
    assert ledger_rows(settings, "SELECT dry_run FROM runs") == [(1,)]
    assert sorted(p.name for p in settings.inbox_dir.iterdir()) == sorted(
        [*users, "Nobody Known.jpg"]
    )
    assert not settings.failed_dir.exists() and not settings.completed_dir.exists()
    assert all(emulator.tenant.photo_writes(user) == 0 for user in users.values())

    real_code, real_out = invoke(settings, "--json")

    real = json.loads(real_out)
    assert real["dry_run"] is False
    assert {key: real[key] for key in COUNTS} == {key: dry[key] for key in COUNTS}
    assert real_code == dry_code
    assert sorted(p.name for p in settings.failed_dir.iterdir()) == [
        "Cut Short.jpg",
        "Huge Poster.png",
        "Zero Byte.jpg",
    ]
    assert emulator.tenant.photo_writes(users["Jane Doe.jpg"]) == 1


def test_a_dry_run_says_would_upload_and_why_a_file_is_invalid(
    settings: Settings, emulator: GraphEmulator
) -> None:
    inbox_with_bad_images(settings, emulator)

    code, text = invoke(settings, "--dry-run")

    assert code == 1
    lines = text.splitlines()
    [jane] = [line for line in lines if "Jane Doe.jpg" in line]
    assert jane.startswith("would upload  Jane Doe.jpg  ->  ")
    [empty] = [line for line in lines if "Zero Byte.jpg" in line]
    assert empty.startswith("invalid") and "empty" in empty.lower()
    [huge] = [line for line in lines if "Huge Poster.png" in line]
    assert huge.startswith("invalid") and "megapixels" in huge
    assert "dry run" in lines[-1] and "invalid 3" in lines[-1]


def test_a_clean_dry_run_exits_0_like_the_real_run(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")

    dry_code, dry_out = invoke(settings, "--dry-run", "--json")
    real_code, real_out = invoke(settings, "--json")

    assert (dry_code, real_code) == (0, 0)
    assert json.loads(dry_out)["uploaded"] == json.loads(real_out)["uploaded"] == 1
