"""`photosync preview`: the contact sheet of what the next run would upload, made against
the emulator from real photos, rendered in headless Chromium and looked at."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy
import pytest
from click.testing import CliRunner
from PIL import Image

from reconciler import app
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.faces.detect import faces_in
from reconciler.preview import CROP_COLOUR
from tests.helpers import cli_args

DATA = Path(__file__).parent / "data"
CHROMIUM = Path("/usr/bin/chromium")
HOSTILE = '<img src=x onerror="alert(1)"> & Co.png'


def portrait() -> bytes:
    """The astronaut on a wider canvas, face right of centre: a centre crop would miss."""
    with Image.open(DATA / "astronaut.png") as im:
        person = im.convert("RGB").resize((1024, 1024), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (1800, 1200), (60, 70, 85))
    canvas.paste(person, (700, 100))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def inbox_with_people(settings: Settings, emulator: GraphEmulator) -> str:
    eileen = emulator.tenant.add_user("Eileen Collins", user_principal_name="eileen@contoso.com")
    (settings.inbox_dir / "Eileen Collins.jpg").write_bytes(portrait())
    (settings.inbox_dir / "Nobody Known.png").write_bytes((DATA / "coffee.png").read_bytes())
    (settings.inbox_dir / HOSTILE).write_bytes((DATA / "coffee.png").read_bytes())
    return eileen


def preview(settings: Settings, output: Path, *extra: str) -> dict[str, Any]:
    result = CliRunner().invoke(
        main,
        [
            "preview",
            "--output",
            str(output),
            "--json",
            "--crop",
            "face",
            *extra,
            *cli_args(settings),
        ],
    )
    assert result.exit_code == 0, result.output
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def photo_writes(emulator: GraphEmulator) -> list[str]:
    return [
        f"{r.method} {r.path}"
        for r in emulator.requests()
        if r.method in ("PUT", "PATCH", "POST", "DELETE") and "photo" in r.path
    ]


def test_preview_prepares_what_the_run_will_upload_and_changes_nothing(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    eileen = inbox_with_people(settings, emulator)
    before = sorted(p.name for p in settings.inbox_dir.iterdir())

    answer = preview(settings, tmp_path / "sheet.html")

    files = {f["file"]: f for f in answer["files"]}
    assert Path(answer["output"]).is_file()
    assert files["Eileen Collins.jpg"]["outcome"] == "uploaded"
    assert files["Eileen Collins.jpg"]["user"] == "eileen@contoso.com"
    assert files["Eileen Collins.jpg"]["quality_notes"] == []
    assert files["Nobody Known.png"]["outcome"] == "unmatched"
    assert files["Nobody Known.png"]["quality_notes"][0] == "no face found"
    # Nothing written to Graph, nothing moved, no photo anywhere.
    assert photo_writes(emulator) == []
    assert emulator.tenant.photo(eileen) is None
    assert sorted(p.name for p in settings.inbox_dir.iterdir()) == before
    assert not settings.completed_dir.exists() or not any(settings.completed_dir.iterdir())

    # The real run then uploads exactly the bytes the preview prepared.
    summary, _ = app.reconcile(
        Settings(**{**settings.__dict__, "crop": "face"})  # the same settings as the preview
    )
    stored = emulator.tenant.photo(eileen)
    assert stored is not None
    assert hashlib.sha256(stored.data).hexdigest() == files["Eileen Collins.jpg"]["sha256"]
    assert summary.exit_code == 0


def test_require_face_shows_why_a_photo_would_be_refused(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    emulator.tenant.add_user("Nobody Known")
    (settings.inbox_dir / "Nobody Known.png").write_bytes((DATA / "coffee.png").read_bytes())

    answer = preview(settings, tmp_path / "sheet.html", "--require-face", "true")

    (entry,) = answer["files"]
    assert entry["outcome"] == "invalid"
    assert entry["reason"].startswith("no face found, and require_face is on")
    assert (settings.inbox_dir / "Nobody Known.png").exists()  # a preview moves nothing


def test_the_page_is_self_contained_and_escapes_names(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    inbox_with_people(settings, emulator)
    page = tmp_path / "sheet.html"

    preview(settings, page)

    text = page.read_text(encoding="utf-8")
    assert "default-src 'none'" in text  # the CSP forbids every fetch
    assert 'onerror="alert(1)"' not in text and "&lt;img src=x onerror=" in text
    sources = [s.split('"')[0] for s in text.split('src="')[1:]]
    assert sources and all(s.startswith("data:image/") for s in sources)


def chromium(args: list[str], profile: Path) -> None:
    subprocess.run(
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
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def locate(
    screen: numpy.ndarray[Any, Any], picture: Image.Image, inset: int
) -> tuple[int, int, float]:
    """Where `picture` is drawn on the screen (its top-left), found from its middle (the
    part a circle mask leaves whole); and how well it matched (1 = exactly)."""
    middle = picture.crop((inset, inset, picture.width - inset, picture.height - inset))
    template = numpy.asarray(middle.convert("RGB"))
    scores = cv2.matchTemplate(screen, template, cv2.TM_CCOEFF_NORMED)
    _low, best, _where_low, (x, y) = cv2.minMaxLoc(scores)
    return x - inset, y - inset, float(best)


@pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="needs /usr/bin/chromium (apt-get install chromium); .ci/run installs it",
)
def test_the_sheet_shows_each_face_inside_its_circle_in_a_browser(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    emulator.tenant.add_user("Eileen Collins")
    data = portrait()
    (settings.inbox_dir / "Eileen Collins.jpg").write_bytes(data)
    page = tmp_path / "sheet.html"
    preview(settings, page)
    shot = tmp_path / "shot.png"

    chromium([f"--screenshot={shot}", "--window-size=1200,700", page.as_uri()], tmp_path / "p")

    with Image.open(shot) as image:
        screen_image = image.convert("RGB")
    screen = numpy.asarray(screen_image)
    # What the run would upload, at the two sizes the page shows it.
    settings_face = Settings(**{**settings.__dict__, "crop": "face"})
    uploaded = app.prepare_options(settings_face).prepare(data)
    with Image.open(io.BytesIO(uploaded.data)) as im:
        upload = im.convert("RGB")
    large = upload.resize((240, 240), Image.Resampling.LANCZOS)

    x, y, score = locate(screen, large, 50)
    assert score > 0.9, "the 240-pixel photo is not on the page"
    centre, radius = (x + 120, y + 120), 120
    white = (255, 255, 255)
    # A circle: the square's corners show the card behind, its edges' middles the photo.
    for cx, cy in ((x + 4, y + 4), (x + 235, y + 4), (x + 4, y + 235), (x + 235, y + 235)):
        assert screen_image.getpixel((cx, cy)) == white, (cx, cy)
    for cx, cy in ((x + 120, y + 3), (x + 3, y + 120), (x + 236, y + 120), (x + 120, y + 236)):
        assert screen_image.getpixel((cx, cy)) != white, (cx, cy)
    # The face, found in the screenshot, lies inside the circle, centred, eyes 40 % down.
    (face,) = faces_in(screen_image.crop((x, y, x + 240, y + 240)))
    for fx, fy in ((face.left, face.top), (face.right, face.top), (face.left, face.bottom)):
        assert math.hypot(x + fx - centre[0], y + fy - centre[1]) < radius
    assert abs(face.centre[0] - 120) < 10

    small = upload.resize((48, 48), Image.Resampling.LANCZOS)
    sx, sy, small_score = locate(screen, small, 10)
    assert small_score > 0.8, "the 48-pixel circle is not on the page"
    assert not (x <= sx <= x + 240 and y <= sy <= y + 240)  # a second picture, not the first
    assert screen_image.getpixel((sx + 1, sy + 1)) == white  # masked to a circle as well
    assert screen_image.getpixel((sx + 24, sy + 24)) != white

    # The original beside it, with the kept square drawn on it around the face.
    red = tuple(int(CROP_COLOUR[i : i + 2], 16) for i in (1, 3, 5))
    mask = numpy.all(numpy.abs(screen.astype(int) - red) < 40, axis=2)
    ys, xs = numpy.nonzero(mask)
    assert len(xs) > 200, "no crop rectangle on the original"
    left, right, top, bottom = xs.min(), xs.max(), ys.min(), ys.max()
    assert abs((right - left) - (bottom - top)) <= 3  # a square
    original_faces = faces_in(screen_image.crop((int(left), int(top), int(right), int(bottom))))
    assert len(original_faces) == 1  # the face is inside the rectangle
