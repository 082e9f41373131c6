"""`photosync report unmatched` in every format, from a ledger a real reconcile wrote against
the emulator; the HTML is rendered in headless Chromium and looked at."""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import os
import re
import sqlite3
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from reconciler import app, queries
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.report import COLUMNS, HEADER_BAND, PLACEHOLDER
from tests.helpers import GREEN, cli_args, every_reason, write_jpeg

CHROMIUM = Path("/usr/bin/chromium")


def report(settings: Settings, *args: str) -> str:
    result = CliRunner().invoke(main, ["report", "unmatched", *args, *cli_args(settings)])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_json_report_gives_each_reason_its_detail_without_asking_graph(
    settings: Settings, emulator: GraphEmulator
) -> None:
    every_reason(settings, emulator)

    rows = {row["file"]: row for row in json.loads(report(settings, "--format", "json"))}

    assert emulator.requests() == []  # built from the ledger alone
    assert all(list(row) == list(COLUMNS) for row in rows.values())
    assert [row["reason"] for row in rows.values()] == [
        "unmatched",
        "unmatched",
        "ambiguous",
        "ineligible",
        "ineligible",
        "invalid",
        "failed",
    ]
    assert rows["Jon Smith.jpg"]["suggestions"] == ["John Smith"]
    assert rows["Lee Gu.jpg"]["candidates"] == ["lee1@contoso.com", "lee2@contoso.com"]
    assert rows["Gus Guest.jpg"]["ineligible_because"] == "guest"
    assert rows["Dana Disabled.jpg"]["ineligible_because"] == "disabled"
    invalid = rows["notes.txt"]
    assert "not a photo file type" in invalid["image_error"]
    assert invalid["location"] == "failed"
    assert Path(invalid["path"]).read_text() == "not a photo"  # where the file is now
    failed = rows["Jane Doe.jpg"]
    assert (failed["graph_error_code"], failed["http_status"], failed["attempts"]) == (
        "generalException",
        500,
        2,
    )
    assert failed["graph_error_message"] == "General exception while processing."
    for row in rows.values():
        first_seen = datetime.fromisoformat(row["first_seen"])
        assert first_seen.tzinfo is not None
        assert first_seen <= datetime.fromisoformat(row["last_attempt"])


def test_last_attempt_is_the_last_run_that_looked_not_the_last_change(
    settings: Settings, emulator: GraphEmulator
) -> None:
    settings = every_reason(settings, emulator).settings
    long_ago = "2020-01-02 03:04:05.000000"
    path = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:  # as if that run had been years ago
        db.execute("UPDATE runs SET started_at = ?", (long_ago,))
        db.execute("UPDATE inbox_files SET first_seen_at = ?, last_attempt_at = ?", (long_ago,) * 2)
    write_jpeg(settings.inbox_dir / "Someone New.jpg")  # something new: the run decides again

    app.reconcile(settings)

    row = next(
        r for r in json.loads(report(settings, "--format", "json")) if r["file"] == "Lee Gu.jpg"
    )
    assert row["first_seen"] == "2020-01-02T03:04:05+00:00"
    # The verdict did not change, yet the file was looked at again today.
    assert datetime.fromisoformat(row["last_attempt"]).year > 2020


def test_deferred_file_is_listed_with_no_detail(
    settings: Settings, emulator: GraphEmulator
) -> None:
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    app.reconcile(dataclasses.replace(settings, settle_seconds=3600))

    [row] = json.loads(report(settings, "--format", "json"))
    table = report(settings)

    assert (row["file"], row["reason"]) == ("Jane Doe.jpg", "deferred")
    assert re.search(r"Jane Doe\.jpg\s+deferred\s+.*—$", table.strip(), re.M)


def test_csv_and_table_carry_the_same_facts(settings: Settings, emulator: GraphEmulator) -> None:
    every_reason(settings, emulator)
    output = settings.inbox_dir.parent / "report.csv"

    report(settings, "--format", "csv", "--output", str(output))
    table = report(settings)

    # A CSV file starts with a UTF-8 byte order mark, so that Excel reads it as UTF-8.
    assert output.read_bytes().startswith(b"\xef\xbb\xbffile,")
    reader = csv.DictReader(io.StringIO(output.read_text(encoding="utf-8-sig")))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    rows = {row["file"]: row for row in reader}
    assert rows["Jon Smith.jpg"]["suggestions"] == "John Smith"
    assert rows["Lee Gu.jpg"]["candidates"] == "lee1@contoso.com; lee2@contoso.com"
    assert rows["Jane Doe.jpg"]["attempts"] == "2"
    lines = table.splitlines()
    assert lines[0].split() == ["FILE", "REASON", "FIRST", "SEEN", "LAST", "ATTEMPT", "DETAIL"]
    assert any(
        line.startswith("Jon Smith.jpg") and line.endswith("did you mean John Smith?")
        for line in lines
    )
    assert any("generalException: General exception" in line for line in lines)
    assert any("gus@example.org: guest account" in line for line in lines)


def data_uris(page: str) -> dict[str, str]:
    """alt text -> src of every image on the page."""
    return {alt: src for src, alt in re.findall(r'<img src="([^"]+)" alt="([^"]*)"', page)}


def test_html_is_one_self_contained_page_grouped_by_reason(
    settings: Settings, emulator: GraphEmulator
) -> None:
    scenario = every_reason(settings, emulator)
    (settings.inbox_dir / "Gus Guest.jpg").unlink()  # gone since: the row gets a placeholder

    page = report(scenario.settings, "--format", "html")

    assert emulator.requests() == []
    assert not re.search(r"https?:|url\(|@import|<link|<script", page)  # no fetch at all
    assert all(src.startswith("data:") for src in data_uris(page).values())
    headings = re.findall(r"<h2>(\w+): (\d+) files?</h2>", page)
    assert headings == [
        ("Unmatched", "2"),
        ("Ambiguous", "1"),
        ("Ineligible", "2"),
        ("Invalid", "1"),
        ("Failed", "1"),
    ]
    assert "Ann &lt;Admin&gt; &amp; Co.jpg" in page and "<Admin>" not in page
    images = data_uris(page)
    assert images["photo in notes.txt"] == PLACEHOLDER  # not an image
    assert images["photo in Gus Guest.jpg"] == PLACEHOLDER  # missing
    kind, encoded = images["photo in Jon Smith.jpg"].split(",", 1)
    assert kind == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as thumb:
        assert max(thumb.size) <= 96
        red, green, blue = thumb.convert("RGB").getpixel((thumb.width // 2, thumb.height // 2))
        assert abs(red - GREEN[0]) + abs(green - GREEN[1]) + abs(blue - GREEN[2]) < 30


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="needs /usr/bin/chromium (apt-get install chromium); .ci/run installs it",
)
def test_html_renders_in_a_browser_with_the_table_and_the_photo(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    every_reason(settings, emulator)
    page = tmp_path / "unmatched.html"
    report(settings, "--format", "html", "--output", str(page))
    shot = tmp_path / "shot.png"

    chromium([f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()], tmp_path / "p1")
    dom = chromium(["--dump-dom", page.as_uri()], tmp_path / "p2").stdout

    body_rows = re.findall(r"<tr><td class=\"photo\">", dom)
    assert len(body_rows) == 7
    assert "Jon Smith.jpg" in dom and "lee2@contoso.com" in dom
    with Image.open(shot) as image:
        pixels = image.convert("RGB")
    band = tuple(int(HEADER_BAND[i : i + 2], 16) for i in (1, 3, 5))
    # The first table (unmatched) starts in the top half: its header band must be drawn there.
    top = pixels.crop((0, 0, 1200, 450))
    colours = {colour for _count, colour in top.getcolors(1200 * 450) or []}
    assert band in colours
    near_green = [
        colour
        for colour in colours
        if sum(abs(c - g) for c, g in zip(colour, GREEN, strict=True)) < 30
    ]
    assert near_green, "the unmatched photo's thumbnail is not on screen"


def test_a_file_only_a_dry_run_has_seen_is_in_the_report(
    settings: Settings, emulator: GraphEmulator
) -> None:
    # A dry run records what it saw but no verdict; the file has not landed all the same.
    write_jpeg(settings.inbox_dir / "Jon Smith.jpg")
    app.reconcile(settings, dry_run=True)

    rows = queries.report_unmatched(settings)

    assert [(row.file, row.location) for row in rows] == [("Jon Smith.jpg", "inbox")]
