"""`photosync verify`: who no longer has the photo photosync set, found with one $batch per
20 users, recorded, shown in status and the report; `--fix` puts photosync's photo back."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from click.testing import CliRunner
from PIL import Image

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from tests.helpers import cli_args, jpeg_bytes, ledger_rows, write_jpeg


def photosync(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, *cli_args(settings)])
    return result.exit_code, result.stdout


def uploaded(settings: Settings, emulator: GraphEmulator, names: list[str]) -> dict[str, str]:
    ids = {name: emulator.tenant.add_user(name) for name in names}
    for number, name in enumerate(names):
        write_jpeg(settings.inbox_dir / f"{name}.jpg", color=(number % 256, 80, 160))
    code, out = photosync(settings, "reconcile", "--json")
    assert code == 0 and json.loads(out)["uploaded"] == len(names), out
    return ids


def test_verify_finds_photos_changed_or_removed_outside_and_records_them(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = uploaded(settings, emulator, ["Jane Doe", "Bob Smith", "Carol White"])
    emulator.change_photo_from_outside(ids["Jane Doe"], jpeg_bytes((100, 100), (9, 9, 9)))
    emulator.change_photo_from_outside(ids["Bob Smith"], None)
    emulator.reset_log()

    code, out = photosync(settings, "verify", "--json")

    assert code == 0, out
    summary = json.loads(out)
    assert (summary["drifted"], summary["unchanged"]) == (2, 1)
    # One $batch of metadata reads for three users, nothing written.
    requests = [r for r in emulator.requests() if not r.token_request]
    assert [(r.method, r.path) for r in requests] == [("POST", "/v1.0/$batch")]
    assert sorted(ledger_rows(settings, "SELECT user_id, state FROM photo_drift")) == sorted(
        [(ids["Jane Doe"], "changed"), (ids["Bob Smith"], "removed")]
    )

    code, status = photosync(settings, "status", "--json")
    assert code == 0
    drift = json.loads(status)["drift"]
    assert drift["count"] == 2 and drift["oldest"] is not None

    code, report = photosync(settings, "report", "unmatched", "--format", "json")
    assert code == 0
    in_report = {row["file"] for row in json.loads(report) if row["reason"] == "drifted"}
    assert in_report == {"Jane Doe.jpg", "Bob Smith.jpg"}

    code, lines = photosync(settings, "verify")
    assert code == 0
    drifted = sorted(line for line in lines.splitlines() if line.startswith("drifted"))
    assert [line.split()[1:3] for line in drifted] == [
        ["Bob", "Smith.jpg"],
        ["Jane", "Doe.jpg"],
    ]
    assert "removed since by someone else (first seen" in drifted[0]
    assert "changed since by someone else (first seen" in drifted[1]


def test_verify_fix_puts_back_the_archived_bytes_and_records_the_new_etag(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = uploaded(settings, emulator, ["Jane Doe", "Bob Smith"])
    ours = {name: emulator.tenant.photo(user) for name, user in ids.items()}
    someone_elses = jpeg_bytes((100, 100), (9, 9, 9))
    emulator.change_photo_from_outside(ids["Jane Doe"], someone_elses)
    emulator.change_photo_from_outside(ids["Bob Smith"], None)

    code, out = photosync(settings, "verify", "--fix", "--json")

    assert code == 0, out
    assert json.loads(out)["uploaded"] == 2
    for name, user in ids.items():
        now = emulator.tenant.photo(user)
        before = ours[name]
        assert now is not None and before is not None and now.data == before.data
    fixes = dict(
        (user, (status, etag))
        for user, status, etag in ledger_rows(
            settings, "SELECT user_id, status, etag_after FROM photo_changes WHERE kind = 'fix'"
        )
    )
    current = {user: emulator.tenant.photo(user) for user in ids.values()}
    assert fixes == {
        user: ("succeeded", photo.etag) for user, photo in current.items() if photo is not None
    }
    assert len(fixes) == 2
    # The photo someone else had set was kept before it was replaced.
    archive = Path(settings.database_url.removeprefix("sqlite:///")).parent / "archive"
    digest = hashlib.sha256(someone_elses).hexdigest()
    assert (archive / "objects" / digest[:2] / digest).read_bytes() == someone_elses
    assert ledger_rows(settings, "SELECT count(*) FROM photo_drift") == [(0,)]
    code, out = photosync(settings, "verify", "--json")
    assert code == 0 and json.loads(out)["drifted"] == 0


def test_verify_costs_one_request_per_20_users(settings: Settings, emulator: GraphEmulator) -> None:
    names = [f"Person {n:02d}" for n in range(45)]
    ids = uploaded(settings, emulator, names)
    emulator.change_photo_from_outside(ids["Person 44"], None)
    emulator.reset_log()

    code, out = photosync(settings, "verify", "--json")

    assert code == 0
    summary = json.loads(out)
    assert (summary["drifted"], summary["unchanged"]) == (1, 44)
    assert summary["graph_requests"] == emulator.graph_request_count == math.ceil(45 / 20)


def test_verify_fix_asks_graph_first_and_leaves_a_user_the_file_no_longer_names(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = uploaded(settings, emulator, ["Jane Doe"])
    emulator.change_photo_from_outside(ids["Jane Doe"], None)
    emulator.tenant.update_user(ids["Jane Doe"], accountEnabled=False)

    code, out = photosync(settings, "verify", "--fix", "--json")

    assert code == 0
    assert json.loads(out)["skipped"] == 1
    assert emulator.tenant.photo(ids["Jane Doe"]) is None


def test_an_upload_of_a_png_is_put_back_as_a_png(
    settings: Settings, emulator: GraphEmulator
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    Image.new("RGBA", (120, 120), (10, 20, 30, 128)).save(settings.inbox_dir / "Jane Doe.png")
    assert photosync(settings, "reconcile")[0] == 0
    ours = emulator.tenant.photo(jane)
    assert ours is not None
    emulator.change_photo_from_outside(jane, None)

    assert photosync(settings, "verify", "--fix")[0] == 0

    now = emulator.tenant.photo(jane)
    assert now is not None and now.data == ours.data
    assert now.content_type == ours.content_type


def test_verify_sends_again_the_reads_graph_throttled_inside_a_batch(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = uploaded(settings, emulator, ["Jane Doe", "Bob Smith", "Carol White"])
    emulator.change_photo_from_outside(ids["Bob Smith"], None)
    emulator.faults.fractional_retry_after = True  # Retry-After 0.05 s: the test stays quick
    emulator.faults.throttle_batch_photo_reads = 2
    emulator.reset_log()

    code, out = photosync(settings, "verify", "--json")

    assert code == 0, out
    summary = json.loads(out)
    assert (summary["drifted"], summary["unchanged"], summary["failed"]) == (1, 2, 0)
    [first, again] = [r for r in emulator.requests() if not r.token_request]
    assert [r.status for r in first.inner].count(429) == 2
    assert len(again.inner) == 2 and all(r.status == 200 or r.status == 404 for r in again.inner)
