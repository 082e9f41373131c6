"""Face framing (crop = "face"), quality notes and require_face, on real photos.

The person is the astronaut portrait in tests/data (see its README): placed on larger
canvases at known offsets, scales and flips, so where her eyes are is known exactly, and
the prepared square must put them where a profile photo needs them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance, ImageFilter

from reconciler import app, images
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.errors import ImageError
from reconciler.faces import framing
from reconciler.faces.detect import faces_in
from reconciler.faces.framing import Box
from reconciler.model import Outcome
from tests.helpers import cli_args, ledger_rows, outcomes

DATA = Path(__file__).parent / "data"
ASTRONAUT = DATA / "astronaut.png"
COFFEE = DATA / "coffee.png"
# The midpoint between her pupils in astronaut.png (512x512), read off the image.
EYES = (225.0, 102.0)
BACKGROUND = (60, 70, 85)
# How far the framing may miss, as a fraction of the square's side.
TOLERANCE = 0.04


def astronaut(scale: float, *, flip: bool = False) -> Image.Image:
    side = round(512 * scale)
    with Image.open(ASTRONAUT) as im:
        person = im.convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    return person.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else person


def eyes_at(scale: float, offset: tuple[int, int], *, flip: bool = False) -> tuple[float, float]:
    x = 512 - EYES[0] if flip else EYES[0]
    return offset[0] + x * scale, offset[1] + EYES[1] * scale


def on_canvas(
    size: tuple[int, int], people: list[tuple[float, tuple[int, int]]], *, flip: bool = False
) -> Image.Image:
    canvas = Image.new("RGB", size, BACKGROUND)
    for scale, offset in people:
        canvas.paste(astronaut(scale, flip=flip), offset)
    return canvas


def jpeg(im: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=92, **params)
    return buffer.getvalue()


def assert_framed(box: tuple[float, float, float, float] | None, eyes: tuple[float, float]) -> None:
    """The eyes centred horizontally and on the line 40 % from the top of the square."""
    assert box is not None
    left, top, right, bottom = box
    side = right - left
    assert math.isclose(side, bottom - top)
    assert abs((left + right) / 2 - eyes[0]) <= TOLERANCE * side, (box, eyes)
    assert abs((eyes[1] - top) / side - framing.EYE_LINE) <= TOLERANCE, (box, eyes)


# --- the geometry, alone


def test_the_square_centres_the_face_and_puts_the_eyes_40_percent_down() -> None:
    face = Box(400, 300, 100, 100)
    square = framing.face_square((2000, 1500), face, eye_y=340)

    assert square.width == square.height == framing.HEAD_SIDES * 100
    assert square.centre[0] == face.centre[0]
    assert (340 - square.top) / square.width == pytest.approx(framing.EYE_LINE)


def test_the_inscribed_circle_holds_the_whole_head_and_the_shoulders_show() -> None:
    face = Box(400, 300, 100, 100)
    square = framing.face_square((2000, 1500), face)
    radius = square.width / 2
    cx, cy = square.centre
    # A head is about 0.9 face boxes wide and reaches 0.35 above the box; the chin 0.15 below.
    head = [(face.left - 5, face.top - 35), (face.right + 5, face.top - 35)]
    head += [(face.left - 20, face.top + 40), (face.right + 20, face.top + 40)]
    head += [(face.centre[0], face.top - 35), (face.centre[0], face.bottom + 15)]
    for x, y in head:
        assert math.hypot(x - cx, y - cy) < radius, (x, y)
    assert square.bottom - (face.bottom + 15) > 0.2 * square.width  # room for shoulders


def test_a_face_near_an_edge_is_moved_inside_not_padded() -> None:
    face = Box(10, 20, 100, 100)
    square = framing.face_square((2000, 1500), face)

    assert (square.left, square.top) == (0, 0)
    assert square.right <= 2000 and square.bottom <= 1500


def test_the_square_reaches_past_the_image_only_where_it_is_larger_than_the_image() -> None:
    face = Box(100, 150, 300, 300)  # a tight headshot: the square (750) is taller than 500
    square = framing.face_square((1000, 500), face)

    assert square.left >= 0 and square.right <= 1000  # fits across: kept inside
    assert square.top < 0 or square.bottom > 500  # cannot fit down: padded
    assert square.top <= 0 and square.bottom >= 500  # and covers the whole height


def test_the_largest_of_several_faces_is_framed() -> None:
    small, large = Box(0, 0, 50, 50), Box(500, 500, 80, 80)

    assert framing.largest([small, large, Box(10, 10, 60, 60)]) is large
    assert framing.largest([]) is None


# --- real photos


@pytest.mark.parametrize(
    ("size", "scale", "offset", "flip"),
    [
        ((1800, 1200), 2.0, (500, 100), False),  # landscape, face right of centre
        ((1800, 1200), 2.0, (80, 150), False),  # near the left edge
        ((1800, 1200), 2.0, (700, 120), True),  # mirrored
        ((1200, 1800), 2.0, (100, 400), False),  # portrait, face in the upper half
        ((3000, 4000), 5.0, (150, 700), False),  # 12 megapixels: decoded at reduced scale
    ],
)
def test_the_crop_centres_the_face_wherever_it_is(
    size: tuple[int, int], scale: float, offset: tuple[int, int], flip: bool
) -> None:
    data = jpeg(on_canvas(size, [(scale, offset)], flip=flip))

    prepared = images.prepare_bytes(data, crop="face")

    assert_framed(prepared.crop_box, eyes_at(scale, offset, flip=flip))
    assert prepared.width == prepared.height == 648 or prepared.width == prepared.height
    assert "no face found" not in prepared.quality_notes
    # And in the uploaded pixels themselves: one face, centred, eyes 40 % down.
    with Image.open(io.BytesIO(prepared.data)) as out:
        found = faces_in(out.convert("RGB"))
    assert len(found) == 1
    face = found[0]
    assert abs(face.centre[0] - prepared.width / 2) <= TOLERANCE * prepared.width
    eye_line = (face.top + framing.EYES_IN_FACE_BOX * face.height) / prepared.height
    assert abs(eye_line - framing.EYE_LINE) <= TOLERANCE


def test_exif_orientation_is_applied_before_detection() -> None:
    upright = on_canvas((1800, 1200), [(2.0, (500, 100))])
    # Stored turned a quarter, as a phone held upright writes it, with the tag that undoes it.
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6

    prepared = images.prepare_bytes(jpeg(stored, exif=exif.tobytes()), crop="face")
    unturned = images.prepare_bytes(jpeg(stored), crop="face")

    assert_framed(prepared.crop_box, eyes_at(2.0, (500, 100)))
    assert "no face found" not in prepared.quality_notes
    assert "no face found" in unturned.quality_notes  # the same pixels, seen sideways


def test_two_people_the_larger_face_is_framed_and_noted() -> None:
    # Faces of 20 % and 15 % of the height: both large enough to count.
    data = jpeg(on_canvas((1400, 1050), [(2.2, (0, 0)), (1.7, (700, 250))]))

    prepared = images.prepare_bytes(data, crop="face")

    assert_framed(prepared.crop_box, eyes_at(2.2, (0, 0)))
    assert prepared.quality_notes[0] == "several faces (2); the largest was framed"
    with pytest.raises(ImageError, match=r"^2 faces in the photo, and require_face is on"):
        images.prepare_bytes(data, crop="face", require_face=True)


def test_a_face_in_the_background_too_small_to_frame_does_not_count() -> None:
    # The second face is 10 % of the height: one usable face, whether it is seen or not.
    data = jpeg(on_canvas((1400, 900), [(1.4, (40, 80)), (1.0, (900, 300))]))

    prepared = images.prepare_bytes(data, crop="face", require_face=True)

    assert_framed(prepared.crop_box, eyes_at(1.4, (40, 80)))


def test_a_photo_without_a_face_is_centre_cropped_and_noted() -> None:
    data = COFFEE.read_bytes()  # 600x400

    prepared = images.prepare_bytes(data, crop="face")

    assert prepared.crop_box == (100.0, 0.0, 500.0, 400.0)
    assert (prepared.width, prepared.height) == (400, 400)
    assert prepared.quality_notes[0] == "no face found"
    with pytest.raises(ImageError, match=r"^no face found, and require_face is on; send a photo"):
        images.prepare_bytes(data, crop="face", require_face=True)
    with pytest.raises(ImageError, match="no face found"):
        images.prepare_bytes(data, require_face=True)  # without face framing too


def test_a_small_face_is_noted_and_is_not_a_usable_face() -> None:
    data = jpeg(on_canvas((1400, 1100), [(1.4, (300, 200))]))  # face 13 % of the height

    prepared = images.prepare_bytes(data, crop="face")

    assert prepared.quality_notes[0].startswith("face too small (")
    with pytest.raises(ImageError, match=r"^the face is too small \(\d+% of the frame"):
        images.prepare_bytes(data, crop="face", require_face=True)


def test_a_headshot_too_tight_for_the_circle_is_padded_with_its_edge_colour() -> None:
    with Image.open(ASTRONAUT) as im:
        tight = im.convert("RGB").crop((130, 30, 330, 230)).resize((600, 600))

    prepared = images.prepare_bytes(jpeg(tight), crop="face")

    assert prepared.crop_box is not None
    left, top, right, _bottom = prepared.crop_box
    assert left < 0 and right > 600 and top < 0  # the square is larger than the photo
    with Image.open(io.BytesIO(prepared.data)) as out:
        rgb = out.convert("RGB")
        top_left, source_corner = rgb.getpixel((2, 2)), tight.getpixel((0, 0))
    assert isinstance(top_left, tuple) and isinstance(source_corner, tuple)
    assert all(abs(a - b) <= 16 for a, b in zip(top_left, source_corner, strict=True))


def test_blur_and_exposure_are_noted() -> None:
    person = on_canvas((1800, 1200), [(2.0, (500, 100))])
    cases = {
        "sharp": person,
        "blurred": person.filter(ImageFilter.GaussianBlur(8)),
        "too dark": ImageEnhance.Brightness(person).enhance(0.25),
        "too bright": ImageEnhance.Brightness(person).enhance(1.6),
    }

    notes = {
        name: images.prepare_bytes(jpeg(im), crop="face").quality_notes
        for name, im in cases.items()
    }

    assert notes["sharp"] == ()
    assert [n.split(" (")[0] for n in notes["blurred"]] == ["blurred"]
    assert [n.split(" (")[0] for n in notes["too dark"]] == ["too dark"]
    assert [n.split(" (")[0] for n in notes["too bright"]] == ["too bright"]


# --- through a run: the ledger, runs show, require_face


def face_settings(settings: Settings, **changes: object) -> Settings:
    return dataclasses.replace(settings, crop="face", **changes)  # type: ignore[arg-type]


def test_a_run_records_the_notes_and_runs_show_prints_them(
    settings: Settings, emulator: GraphEmulator
) -> None:
    eileen = emulator.tenant.add_user("Eileen Collins", user_principal_name="eileen@contoso.com")
    cup = emulator.tenant.add_user("Cup Bearer", user_principal_name="cup@contoso.com")
    (settings.inbox_dir / "Eileen Collins.jpg").write_bytes(
        jpeg(on_canvas((1800, 1200), [(2.0, (500, 100))]))
    )
    (settings.inbox_dir / "Cup Bearer.png").write_bytes(COFFEE.read_bytes())

    summary, _ = app.reconcile(face_settings(settings))

    assert set(outcomes(summary).values()) == {Outcome.UPLOADED}
    notes = dict(ledger_rows(settings, "SELECT user_id, quality_notes FROM uploads"))
    assert json.loads(str(notes[cup]))[0] == "no face found"
    assert json.loads(str(notes[eileen])) == []
    stored = emulator.tenant.photo(eileen)
    assert stored is not None and stored.width == stored.height

    shown = CliRunner().invoke(main, ["runs", "show", str(summary.run_id), *cli_args(settings)])
    assert shown.exit_code == 0, shown.output
    assert "quality: no face found" in shown.stdout
    as_json = CliRunner().invoke(
        main, ["runs", "show", str(summary.run_id), "--json", *cli_args(settings)]
    )
    files = {f["file"]: f for f in json.loads(as_json.stdout)["files"]}
    assert files["Cup Bearer.png"]["quality_notes"][0] == "no face found"


def test_require_face_makes_a_photo_without_one_face_invalid_with_the_reason(
    settings: Settings, emulator: GraphEmulator
) -> None:
    emulator.tenant.add_user("Eileen Collins", user_principal_name="eileen@contoso.com")
    emulator.tenant.add_user("Cup Bearer", user_principal_name="cup@contoso.com")
    (settings.inbox_dir / "Eileen Collins.jpg").write_bytes(
        jpeg(on_canvas((1800, 1200), [(2.0, (500, 100))]))
    )
    (settings.inbox_dir / "Cup Bearer.png").write_bytes(COFFEE.read_bytes())

    summary, _ = app.reconcile(dataclasses.replace(settings, require_face=True))

    assert outcomes(summary) == {
        "Eileen Collins.jpg": Outcome.UPLOADED,
        "Cup Bearer.png": Outcome.INVALID,
    }
    reason = next(r.reason for r in summary.results if r.file == "Cup Bearer.png")
    assert reason.startswith("no face found, and require_face is on")
    assert (settings.failed_dir / "Cup Bearer.png").read_bytes() == COFFEE.read_bytes()
    report = CliRunner().invoke(
        main, ["report", "unmatched", "--format", "json", *cli_args(settings)]
    )
    rows = {row["file"]: row for row in json.loads(report.stdout)}
    assert rows["Cup Bearer.png"]["image_error"].startswith("no face found")


@pytest.mark.parametrize("setting", [["--crop", "face"], ["--require-face", "true"]])
def test_face_settings_without_the_extra_stop_at_configuration_with_the_install_command(
    settings: Settings, setting: list[str]
) -> None:
    # A Python where OpenCV cannot be imported, as after `pip install entra-photosync`.
    code = (
        "import sys\n"
        "sys.modules['cv2'] = None\n"
        "from reconciler.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "reconcile", *setting, *cli_args(settings)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 2, done.stderr
    assert "pip install 'entra-photosync[face]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (settings.failed_dir).exists()  # nothing was touched


def test_a_failed_upload_keeps_its_notes_in_the_report(
    settings: Settings, emulator: GraphEmulator
) -> None:
    cup = emulator.tenant.add_user("Cup Bearer", user_principal_name="cup@contoso.com")
    emulator.faults.fail_photo_users.add(cup)
    (settings.inbox_dir / "Cup Bearer.png").write_bytes(COFFEE.read_bytes())

    summary, _ = app.reconcile(face_settings(settings, retry_attempts=1))

    assert outcomes(summary) == {"Cup Bearer.png": Outcome.FAILED}
    args = ["report", "unmatched", *cli_args(settings)]
    rows = json.loads(CliRunner().invoke(main, [*args, "--format", "json"]).stdout)
    assert rows[0]["reason"] == "failed"
    assert rows[0]["quality_notes"][0] == "no face found"
    table = CliRunner().invoke(main, [*args, "--format", "table"]).stdout
    assert "[photo: no face found" in table


@pytest.mark.parametrize("size", [(6000, 4000), (4000, 6000), (4032, 3024), (1800, 1200)])
def test_face_framing_decodes_enough_pixels_for_the_smallest_usable_face(
    size: tuple[int, int],
) -> None:
    """The JPEG is decoded at the smallest DCT scale that still gives the square around a
    face of framing.SMALL_FACE all of max_dimension's pixels; the memory reservation is
    for that same scale."""
    header = jpeg(Image.new("RGB", (64, 64)))
    data = bytearray(header)
    frame = header.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", size[1], size[0])  # height, width
    request = images._face_draft_request(*size, 648)
    reduction = images._draft_reduction(size, request)

    with Image.open(io.BytesIO(bytes(data))) as im:
        im.draft("RGB", request)
        decoded = im.size

    assert decoded == (-(-size[0] // reduction), -(-size[1] // reduction))
    smallest_square = framing.HEAD_SIDES * framing.SMALL_FACE * min(size)
    assert smallest_square / reduction >= min(648, smallest_square)
    assert reduction > 1 or min(size) < 648 / (framing.HEAD_SIDES * framing.SMALL_FACE) * 2
