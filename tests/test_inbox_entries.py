"""Every inbox entry gets an outcome or a documented reason to be ignored, and no entry can
stop the others: links, loops, folders, names that are not UTF-8 or hold control
characters, and names too long to set aside, in one inbox with good photos."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler import names
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.logs import JsonLineFormatter, OneLineFormatter
from reconciler.scanner import FOLDER_REASON, LINK_REASON
from tests.helpers import cli_args, jpeg_bytes, ledger_rows, write_jpeg

NOT_UTF8_NAME = b"Caf\xe9.jpg"


def long_stem(size: int) -> str:
    """A person's name of exactly `size` UTF-8 bytes, with two-byte letters in it."""
    stem = ""
    while len(stem.encode()) < size - 1:
        stem += "Zoë Ærø "[len(stem) % 8]
    return stem + "a" * (size - len(stem.encode()))


def listing(folder: Path) -> list[bytes]:
    return sorted(os.listdir(os.fsencode(folder))) if folder.exists() else []


def test_one_run_handles_every_kind_of_entry_and_the_next_runs_converge(
    settings: Settings, emulator: GraphEmulator
) -> None:
    tenant = emulator.tenant
    jane = tenant.add_user("Jane Doe")
    john = tenant.add_user("John Smith")
    stem = long_stem(246)
    long_user = tenant.add_user(stem)
    inbox = settings.inbox_dir
    jane_bytes = write_jpeg(inbox / "Jane Doe.jpg", color=(200, 0, 0))
    john_bytes = write_jpeg(inbox / "John Smith.jpg", color=(0, 200, 0))
    long_bytes = write_jpeg(inbox / f"{stem}.jpg", color=(0, 0, 200))
    assert len(f"{stem}.jpg".encode()) == 250
    settings.completed_dir.mkdir()
    older = write_jpeg(settings.completed_dir / f"{stem}.jpg", color=(9, 9, 9))
    not_utf8 = jpeg_bytes(color=(90, 90, 90))
    Path(os.fsdecode(os.fsencode(inbox) + b"/" + NOT_UTF8_NAME)).write_bytes(not_utf8)
    (inbox / "Loop.jpg").symlink_to("Loop.jpg")
    (inbox / "x.jpg").mkdir()
    write_jpeg(inbox / "Jane Doe..jpg", color=(1, 1, 1))
    write_jpeg(inbox / "New\nLine.jpg", color=(2, 2, 2))
    (inbox / "Thumbs.db").write_bytes(b"junk")
    runner = CliRunner()

    first = runner.invoke(main, ["reconcile", *cli_args(settings)])

    assert first.exit_code == 1, first.output  # the file that is not UTF-8 is invalid
    assert "invalid     Caf\\xe9.jpg  (rename this file: its name is not valid UTF-8)" in (
        first.output
    )
    for user_id, data in ((jane, jane_bytes), (john, john_bytes), (long_user, long_bytes)):
        photo = tenant.photo(user_id)
        assert photo is not None and photo.data == data
    # The long name's older twin was set aside under a dated name that fits in 255 bytes.
    filed = {
        name: (settings.completed_dir / os.fsdecode(name)).read_bytes()
        for name in listing(settings.completed_dir)
    }
    assert filed.pop(f"{stem}.jpg".encode()) == long_bytes
    assert filed.pop(b"Jane Doe.jpg") == jane_bytes
    assert filed.pop(b"John Smith.jpg") == john_bytes
    [(aside, data)] = filed.items()
    assert data == older and len(aside) <= 255 and aside.endswith(b".jpg")
    assert aside.decode("utf-8").startswith(stem[:150])
    # The name that is not UTF-8 is in failed_dir under its real bytes, and in the ledger
    # under its escaped form.
    assert listing(settings.failed_dir) == [NOT_UTF8_NAME]
    assert (settings.failed_dir / os.fsdecode(NOT_UTF8_NAME)).read_bytes() == not_utf8
    assert ledger_rows(
        settings, "SELECT path, location, destination FROM inbox_files WHERE name = 'Caf\\xe9.jpg'"
    ) == [
        (
            f"{settings.inbox_dir.resolve()}/Caf\\xe9.jpg",
            "failed",
            f"{settings.failed_dir}/Caf\\xe9.jpg",
        )
    ]
    left = [b"Jane Doe..jpg", b"Loop.jpg", b"New\nLine.jpg", b"Thumbs.db", b"x.jpg"]
    assert listing(inbox) == left

    runs = [runner.invoke(main, ["reconcile", "--json", *cli_args(settings)]) for _ in range(2)]

    summaries = [json.loads(run.stdout) for run in runs]
    for run, summary in zip(runs, summaries, strict=True):
        assert run.exit_code == 0, run.output
        assert (summary["ignored"], summary["unmatched"], summary["uploaded"]) == (2, 2, 0)
        assert summary["invalid"] == summary["failed"] == 0
    assert listing(inbox) == left
    assert len(listing(settings.completed_dir)) == 4 and len(listing(settings.failed_dir)) == 1

    report = runner.invoke(main, ["report", "unmatched", "--format", "json", *cli_args(settings)])
    assert report.exit_code == 0, report.output
    rows = {row["file"]: row for row in json.loads(report.stdout)}
    assert {name: row["reason"] for name, row in rows.items()} == {
        "Caf\\xe9.jpg": "invalid",
        "Jane Doe..jpg": "unmatched",
        "Loop.jpg": "ignored",
        "New\\nLine.jpg": "unmatched",
        "x.jpg": "ignored",
    }
    assert rows["Loop.jpg"]["detail"] == LINK_REASON
    assert rows["x.jpg"]["detail"] == FOLDER_REASON
    assert "a dot before the extension: rename it 'Jane Doe.jpg'" in rows["Jane Doe..jpg"]["detail"]
    for fmt in ("table", "csv", "html"):
        text = runner.invoke(main, ["report", "unmatched", "--format", fmt, *cli_args(settings)])
        assert text.exit_code == 0, text.output
        for shown in ("Loop.jpg", "x.jpg", "Caf\\xe9.jpg", "New\\nLine.jpg"):
            assert shown in text.output, (fmt, shown)
    table = runner.invoke(main, ["report", "unmatched", *cli_args(settings)]).output
    assert len(table.splitlines()) == 1 + len(rows)  # one line per entry, whatever its name

    status = runner.invoke(main, ["status", *cli_args(settings)])
    assert status.exit_code == 0, status.output
    assert f"ignored  Loop.jpg: {LINK_REASON}" in status.output
    assert f"ignored  x.jpg: {FOLDER_REASON}" in status.output
    status_json = json.loads(runner.invoke(main, ["status", "--json", *cli_args(settings)]).stdout)
    assert sorted(entry["file"] for entry in status_json["ignored"]) == ["Loop.jpg", "x.jpg"]


@pytest.mark.parametrize(
    "raw",
    [
        b"Caf\xe9.jpg",
        b"Jane\nDoe.jpg",
        b"back\\slash\\xe9.jpg",
        b"\x01\x7f\xff\xc3.jpg",
        "Ünïcødé\u2028\u202e.jpg".encode(),
    ],
)
def test_the_escaped_form_is_one_printable_line_and_round_trips_to_the_same_bytes(
    raw: bytes,
) -> None:
    real = os.fsdecode(raw)
    escaped = names.shown(real)
    assert escaped.isprintable() and escaped.encode("utf-8")
    assert os.fsencode(names.original(escaped)) == raw


def test_log_lines_stay_one_line_whatever_a_name_holds() -> None:
    real = os.fsdecode(b"Caf\xe9\nDoe.jpg")
    record = logging.LogRecord(
        "reconciler", logging.INFO, __file__, 1, "uploaded %s", (real,), None
    )
    record.file = real

    text = OneLineFormatter("%(levelname)s %(message)s").format(record)
    line = JsonLineFormatter().format(record)

    assert text == "INFO uploaded Caf\\xe9\\nDoe.jpg"
    assert "\n" not in line and line.encode("utf-8")
    entry = json.loads(line)
    assert (
        entry["message"] == "uploaded Caf\\xe9\\nDoe.jpg" and entry["file"] == "Caf\\xe9\\nDoe.jpg"
    )


def test_a_stray_space_or_dot_before_the_extension_is_named() -> None:
    assert names.stray_mark_hint("Jane Doe..jpg") == (
        "the name has a dot before the extension: rename it 'Jane Doe.jpg'"
    )
    assert names.stray_mark_hint("Jane Doe .jpg") == (
        "the name has a space before the extension: rename it 'Jane Doe.jpg'"
    )
    assert names.stray_mark_hint("Jane Doe.jpg") is None
