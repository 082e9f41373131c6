"""reconciler.images on a corpus generated here with Pillow: every assertion is about the
decoded output bytes (what Graph would receive), never about tags or intermediate state."""

from __future__ import annotations

import io
import random
import resource
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageCms, ImageOps

from reconciler import app, images
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.errors import ImageError
from reconciler.images import SUPPORTED_SUFFIXES, heif_available, prepare, prepare_bytes
from reconciler.images import _jpeg as images_jpeg
from reconciler.images._budget import MemoryBudget
from reconciler.model import PreparedImage
from tests.helpers import ledger_rows

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

# What a viewer does NOT do: the transform that turns the upright picture into the stored one
# for each EXIF orientation, written from the EXIF spec's definitions (the inverse of what
# the viewer applies; for 6 and 8 it differs from the viewer's own rotation).
STORED_FROM_UPRIGHT: dict[int, Image.Transpose | None] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # viewer turns it 90 degrees clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # viewer turns it 90 degrees counter-clockwise
}


# Corpus builders.


def marked(size: tuple[int, int] = (1500, 1000)) -> Image.Image:
    """Upright picture: white, red block top-left, blue block top-right (no symmetry)."""
    w, h = size
    im = Image.new("RGB", size, WHITE)
    im.paste(RED, (0, 0, w // 4, h // 4))
    im.paste(BLUE, (w - w // 4, 0, w, h // 4))
    return im


def encode(im: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def exif_bytes(**tags: object) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhotoCam"  # Make
    exif[0x0132] = "2024:05:01 10:00:00"  # DateTime
    if "orientation" in tags:
        exif[0x0112] = tags["orientation"]
    if tags.get("gps"):
        gps = exif.get_ifd(0x8825)
        gps[1] = "N"
        gps[2] = (52.0, 22.0, 12.0)
        gps[3] = "E"
        gps[4] = (4.0, 53.0, 24.0)
    return exif.tobytes()


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def _srgb_curve() -> bytes:
    def srgb_to_linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    points = [round(srgb_to_linear(i / 1023) * 65535) for i in range(1024)]
    return b"curv" + bytes(4) + struct.pack(">I", 1024) + struct.pack(">1024H", *points)


def _gamma_curve(gamma: float) -> bytes:
    return b"curv" + bytes(4) + struct.pack(">I", 1) + struct.pack(">H", round(gamma * 256))


def _icc(colour_space: bytes, name: str, tags: list[tuple[bytes, bytes]]) -> bytes:
    """An ICC v2 display profile built tag by tag: ImageCms can only create sRGB, LAB and
    XYZ profiles."""
    text = name.encode() + b"\x00"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        *tags,
        (b"cprt", b"text" + bytes(4) + b"none\x00"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, blobs = b"", b""
    for sig, blob in tags:
        padded = blob + bytes(-len(blob) % 4)
        table += sig + struct.pack(">II", offset + len(blobs), len(blob))
        blobs += padded
    body = struct.pack(">I", len(tags)) + table + blobs
    header = bytearray(128)
    struct.pack_into(">I", header, 0, 128 + len(body))
    header[8:12] = b"\x02\x10\x00\x00"
    header[12:24] = b"mntr" + colour_space + b"XYZ "
    header[36:40] = b"acsp"
    header[68:80] = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    return bytes(header) + body


def display_p3_icc() -> bytes:
    """Display P3's D50-adapted primaries with the sRGB curve."""
    curve = _srgb_curve()
    return _icc(
        b"RGB ",
        "Display P3 (test)",
        [
            (b"rXYZ", _xyz(0.5151, 0.2412, -0.0011)),
            (b"gXYZ", _xyz(0.2920, 0.6922, 0.0419)),
            (b"bXYZ", _xyz(0.1571, 0.0666, 0.7841)),
            (b"rTRC", curve),
            (b"gTRC", curve),
            (b"bTRC", curve),
        ],
    )


def grey_icc(curve: bytes) -> bytes:
    """A grey profile, as Photoshop embeds in every greyscale JPEG ("Dot Gain 20%", "Gray
    Gamma 2.2"); its tone curve decides how light each level is."""
    return _icc(b"GRAY", "Grey (test)", [(b"kTRC", curve)])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims the given size, with a token of compressed data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(1000)))
        + chunk(b"IEND", b"")
    )


# Output inspection.


def opened(path: Path) -> Image.Image:
    """The source as Pillow sees it, without leaving a file handle open."""
    return Image.open(io.BytesIO(path.read_bytes()))


def decoded(prepared: PreparedImage) -> Image.Image:
    im = Image.open(io.BytesIO(prepared.data))
    im.load()
    return im


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def metadata_markers(data: bytes) -> list[int]:
    """Every marker in the output that is not part of the picture itself."""
    layout = images_jpeg.walk(data)
    assert layout.trailing_bytes == 0
    return [s.marker for s in layout.segments if s.marker >= 0xE1 or s.marker == 0xFE]


def assert_clean(prepared: PreparedImage) -> None:
    """Uploaded bytes: a JPEG with no EXIF, XMP, ICC, IPTC, comment or trailing data."""
    assert prepared.content_type == "image/jpeg"
    im = decoded(prepared)
    assert im.format == "JPEG"
    assert im.mode in ("RGB", "L")
    assert not im.getexif()
    for key in ("exif", "xmp", "icc_profile", "comment", "photoshop"):
        assert key not in im.info, key
    assert metadata_markers(prepared.data) == []


# Orientation: all eight, checked on pixels.


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("size", [(1500, 1000), (300, 200)], ids=["draft", "small"])
def test_orientation_lands_upright(tmp_path: Path, orientation: int, size: tuple[int, int]) -> None:
    upright = marked(size)
    method = STORED_FROM_UPRIGHT[orientation]
    stored = upright if method is None else upright.transpose(method)
    data = encode(stored, quality=95, exif=exif_bytes(orientation=orientation))
    path = write(tmp_path, "p.jpg", data)

    prepared = prepare(path)
    out = decoded(prepared)

    expected_size = (648, 432) if size[0] > 648 else size
    assert out.size == expected_size == (prepared.width, prepared.height)
    assert (prepared.source_width, prepared.source_height) == size
    w, h = out.size
    assert near(out.getpixel((w // 8, h // 8)), RED)  # type: ignore[arg-type]
    assert near(out.getpixel((w - w // 8, h // 8)), BLUE)  # type: ignore[arg-type]
    assert near(out.getpixel((w // 8, h - h // 8)), WHITE)  # type: ignore[arg-type]
    assert near(out.getpixel((w - w // 8, h - h // 8)), WHITE)  # type: ignore[arg-type]
    # Pillow's own exif_transpose, as an independent reference, agrees.
    reference = ImageOps.exif_transpose(opened(path))
    assert reference.size == size
    assert_clean(prepared)
    assert prepared.path == ("stripped" if orientation == 1 and size[0] <= 648 else "reencoded")


# Modes and formats.


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (200, 200), (0, 255, 255, 0))  # red ink: magenta + yellow
    path = write(tmp_path, "cmyk.jpg", encode(cmyk, quality=95))
    assert opened(path).mode == "CMYK"

    prepared = prepare(path)

    out = decoded(prepared)
    assert out.mode == "RGB" and prepared.path == "reencoded"
    assert near(out.getpixel((100, 100)), RED, 20)  # type: ignore[arg-type]


def test_png_alpha_is_flattened_onto_white(tmp_path: Path) -> None:
    im = Image.new("RGBA", (200, 100), (0, 0, 0, 0))  # transparent black
    im.paste((0, 0, 255, 255), (100, 0, 200, 100))
    im.paste((255, 0, 0, 128), (0, 0, 50, 50))  # half-transparent red
    path = write(tmp_path, "alpha.png", encode(im, "PNG"))

    out = decoded(prepare(path))

    assert out.mode == "RGB"
    assert near(out.getpixel((75, 75)), WHITE, 4)  # type: ignore[arg-type]
    assert near(out.getpixel((150, 50)), BLUE)  # type: ignore[arg-type]
    assert near(out.getpixel((25, 25)), (255, 127, 127))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["LA", "P"])
def test_other_transparent_modes_flatten_onto_white(tmp_path: Path, mode: str) -> None:
    im = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    im.paste((0, 0, 0, 255), (50, 0, 100, 100))
    source = im.convert("LA") if mode == "LA" else im.convert("P", palette=Image.Palette.ADAPTIVE)
    if mode == "P":
        source.info["transparency"] = source.getpixel((0, 0))
    path = write(tmp_path, f"{mode}.png", encode(source, "PNG"))
    assert opened(path).mode == mode

    out = decoded(prepare(path))

    assert near(out.getpixel((25, 50)), WHITE, 4)  # type: ignore[arg-type]
    assert near(out.getpixel((75, 50)), (0, 0, 0), 4)  # type: ignore[arg-type]


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (120, 120), c) for c in (RED, (0, 255, 0), BLUE)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    path = write(tmp_path, "anim.gif", data)
    assert opened(path).n_frames == 3  # type: ignore[attr-defined]

    out = decoded(prepare(path))

    assert out.size == (120, 120)
    assert near(out.getpixel((60, 60)), RED)  # type: ignore[arg-type]


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    row = struct.pack("<100H", *([20000] * 50 + [60000] * 50))
    grey16 = Image.frombytes("I;16", (100, 100), row * 100)
    path = write(tmp_path, "deep.png", encode(grey16, "PNG"))

    out = decoded(prepare(path))

    # 20000/65535 and 60000/65535 of full scale; clipping would give 255 for both.
    assert near(out.getpixel((25, 50)), (78, 78, 78), 3)  # type: ignore[arg-type]
    assert near(out.getpixel((75, 50)), (233, 233, 233), 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fmt", "suffix", "params"),
    [
        ("BMP", ".bmp", {}),
        ("WEBP", ".webp", {"lossless": True}),
        ("TIFF", ".tiff", {"compression": "tiff_lzw"}),
        ("PNG", ".png", {}),
    ],
)
def test_other_formats_are_reencoded_as_jpeg(
    tmp_path: Path, fmt: str, suffix: str, params: dict[str, object]
) -> None:
    path = write(tmp_path, "photo" + suffix, encode(marked((800, 400)), fmt, **params))

    prepared = prepare(path)

    out = decoded(prepared)
    assert prepared.path == "reencoded"
    assert out.size == (648, 324)
    assert near(out.getpixel((40, 40)), RED)  # type: ignore[arg-type]
    assert_clean(prepared)


def test_content_decides_not_the_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "actually-a-png.jpg", encode(marked((200, 100)), "PNG"))
    assert near(decoded(prepare(path)).getpixel((10, 10)), RED)  # type: ignore[arg-type]


def test_supported_suffixes() -> None:
    assert {
        ".jpg",
        ".jpeg",
        ".png",
        ".gif",
        ".bmp",
        ".webp",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        # AVIF, JPEG 2000 and Photoshop (tests/test_formats.py)
        ".avif",
        ".jp2",
        ".j2k",
        ".j2c",
        ".jpf",
        ".jpx",
        ".psd",
    } == SUPPORTED_SUFFIXES


# Invalid files: each gives a reason a person can act on.


def reason_for(path: Path) -> str:
    with pytest.raises(ImageError) as caught:
        prepare(path)
    message = str(caught.value)
    assert "\n" not in message and "; " in message  # one line: what is wrong; what to do
    return message


def test_too_small(tmp_path: Path) -> None:
    path = write(tmp_path, "tiny.jpg", encode(Image.new("RGB", (10, 10), RED)))
    assert "10x10" in reason_for(path) and "48x48" in reason_for(path)


def full_jpeg(progressive: bool = False) -> bytes:
    rng = random.Random(7)
    noise = Image.frombytes("RGB", (400, 300), rng.randbytes(400 * 300 * 3))
    return encode(noise, quality=90, progressive=progressive)


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[: len(d) // 2],
        lambda d: d[: len(d) - 300],
        # An interrupted copy into a preallocated file: the right length, zeros at the end.
        # libjpeg decodes the zeros as valid data, so only the missing end marker tells.
        lambda d: d[: len(d) // 2] + bytes(len(d) - len(d) // 2),
    ],
    ids=["half", "tail-missing", "zero-padded"],
)
def test_truncated_jpeg(
    tmp_path: Path, progressive: bool, damage: Callable[[bytes], bytes]
) -> None:
    data = full_jpeg(progressive)
    assert "damaged or incomplete" in reason_for(write(tmp_path, "cut.jpg", damage(data)))


def test_truncated_large_jpeg_on_the_draft_path(tmp_path: Path) -> None:
    data = encode(marked((2000, 1500)).effect_spread(30), quality=90)
    for cut in (data[: len(data) * 2 // 3], data[:-200] + bytes(200)):
        assert "damaged or incomplete" in reason_for(write(tmp_path, "cut.jpg", cut))


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "WEBP", "TIFF"])
def test_truncated_other_formats(tmp_path: Path, fmt: str) -> None:
    data = encode(marked((300, 200)).effect_spread(20), fmt)
    assert "damaged or incomplete" in reason_for(write(tmp_path, "cut", data[: len(data) // 2]))


def test_zero_bytes(tmp_path: Path) -> None:
    assert "empty" in reason_for(write(tmp_path, "empty.jpg", b""))


def test_text_named_jpg(tmp_path: Path) -> None:
    reason = reason_for(write(tmp_path, "notes.jpg", "Jane Doe — photo to follow\n".encode()))
    assert reason == "not an image (the file's content is text); save it as JPEG or PNG"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(40), "Office"),
        (b"8BPS\x00\x01" + bytes(40), "Photoshop"),
        (bytes(range(256)) * 4, "not an image"),
    ],
)
def test_other_content_is_named(tmp_path: Path, data: bytes, words: str) -> None:
    assert words in reason_for(write(tmp_path, "x.jpg", data))


def test_missing_file(tmp_path: Path) -> None:
    assert "could not be read" in reason_for(tmp_path / "gone.jpg")


@pytest.mark.parametrize(
    "size",
    [(100_000, 100_000), (12_000, 12_000), (9_000, 9_000)],
    ids=["pillow-error", "pillow-warning", "our-cap"],
)
def test_huge_header_is_rejected_before_decoding(tmp_path: Path, size: tuple[int, int]) -> None:
    path = write(tmp_path, "bomb.png", png_header_only(*size))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()

    assert "too large" in reason_for(path)

    assert time.perf_counter() - started < 1.0
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kb < 50_000  # decoding even the smallest of these would take 243 MB


# Metadata and colour.


def test_gps_exif_leaves_no_exif(tmp_path: Path) -> None:
    data = encode(marked((1000, 800)), quality=90, exif=exif_bytes(gps=True, orientation=1))
    path = write(tmp_path, "gps.jpg", data)
    assert opened(path).getexif().get_ifd(0x8825)

    prepared = prepare(path)

    assert prepared.path == "reencoded"
    assert_clean(prepared)
    assert b"Exif" not in prepared.data


def test_gps_exif_on_a_small_photo_is_stripped_losslessly(tmp_path: Path) -> None:
    data = encode(marked((400, 300)), quality=90, exif=exif_bytes(gps=True))
    path = write(tmp_path, "gps-small.jpg", data)

    prepared = prepare(path)

    assert prepared.path == "stripped"
    assert_clean(prepared)
    assert b"Exif" not in prepared.data


def p3_photo() -> tuple[Image.Image, bytes]:
    return Image.new("RGB", (300, 200), (200, 90, 60)), display_p3_icc()


def test_display_p3_is_converted_to_srgb(tmp_path: Path) -> None:
    im, icc = p3_photo()
    path = write(tmp_path, "p3.jpg", encode(im, quality=95, icc_profile=icc))
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    reference = ImageCms.profileToProfile(im, profile, ImageCms.createProfile("sRGB"))
    assert reference is not None
    expected = reference.getpixel((0, 0))
    assert isinstance(expected, tuple)
    # The conversion moves the colour visibly: passing the numbers through would look wrong.
    assert max(abs(a - b) for a, b in zip(expected, (200, 90, 60), strict=True)) >= 10

    prepared = prepare(path)

    assert prepared.path == "reencoded"  # small enough to pass through, but not sRGB
    assert near(decoded(prepared).getpixel((150, 100)), expected, 3)  # type: ignore[arg-type]
    assert_clean(prepared)


def test_srgb_icc_is_just_stripped(tmp_path: Path) -> None:
    data = encode(marked((400, 300)), quality=90, icc_profile=srgb_icc())
    prepared = prepare(write(tmp_path, "srgb.jpg", data))
    assert prepared.path == "stripped"
    assert_clean(prepared)


def test_a_grey_profile_is_converted_even_when_the_photo_could_pass_through(
    tmp_path: Path,
) -> None:
    # Linear grey: level 128 means a much lighter grey than sRGB's 128.
    icc = grey_icc(_gamma_curve(1.0))
    im = Image.new("L", (400, 400), 128)
    path = write(tmp_path, "grey.jpg", encode(im, quality=95, icc_profile=icc))
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    reference = ImageCms.profileToProfile(
        im, profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
    )
    assert reference is not None
    expected = reference.getpixel((0, 0))
    assert isinstance(expected, tuple) and expected[0] - 128 >= 10

    prepared = prepare(path)

    assert prepared.path == "reencoded"
    assert near(decoded(prepared).convert("RGB").getpixel((200, 200)), expected, 3)  # type: ignore[arg-type]
    assert_clean(prepared)


def test_a_grey_profile_with_the_srgb_curve_is_just_stripped(tmp_path: Path) -> None:
    data = encode(Image.new("L", (400, 300), 128), quality=90, icc_profile=grey_icc(_srgb_curve()))
    prepared = prepare(write(tmp_path, "srgb-grey.jpg", data))
    assert prepared.path == "stripped"
    assert_clean(prepared)


# Size.


@pytest.mark.parametrize(
    ("size", "crop", "expected"),
    [
        ((3000, 1500), None, (648, 324)),
        ((1500, 3000), None, (324, 648)),
        ((3000, 1500), "square", (648, 648)),
        ((1500, 3000), "square", (648, 648)),
        ((500, 300), "square", (300, 300)),
        ((500, 300), None, (500, 300)),
    ],
)
def test_resize_and_crop(
    tmp_path: Path, size: tuple[int, int], crop: str | None, expected: tuple[int, int]
) -> None:
    im = Image.new("RGB", size, RED)
    side = min(size)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    im.paste(BLUE, (left, top, left + side, top + side))  # the centre square is blue
    path = write(tmp_path, "big.jpg", encode(im, quality=90))

    prepared = prepare(path, crop="square" if crop else None)

    out = decoded(prepared)
    assert out.size == expected == (prepared.width, prepared.height)
    if crop:
        for corner in [(2, 2), (expected[0] - 3, expected[1] - 3)]:
            assert near(out.getpixel(corner), BLUE, 20)  # type: ignore[arg-type]


def test_square_crop_of_a_rotated_photo(tmp_path: Path) -> None:
    upright = marked((1200, 800))
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    path = write(tmp_path, "r.jpg", encode(stored, quality=95, exif=exif_bytes(orientation=6)))

    out = decoded(prepare(path, crop="square"))

    # The upright centre square spans x 200-1000 of 1200: it keeps the inner 100 pixels of
    # each block (81 after scaling by 648/800), and the blocks still sit at the top.
    assert out.size == (648, 648)
    assert near(out.getpixel((30, 30)), RED)  # type: ignore[arg-type]
    assert near(out.getpixel((620, 30)), BLUE)  # type: ignore[arg-type]
    assert near(out.getpixel((324, 30)), WHITE)  # type: ignore[arg-type]
    assert near(out.getpixel((30, 400)), WHITE)  # type: ignore[arg-type]
    assert near(out.getpixel((110, 30)), WHITE)  # type: ignore[arg-type]


# The three paths.


def test_a_jpeg_that_fits_goes_out_unchanged(tmp_path: Path) -> None:
    data = encode(marked((600, 400)), quality=90)
    path = write(tmp_path, "fits.jpg", data)
    mtime = path.stat().st_mtime_ns

    prepared = prepare(path)

    assert prepared.path == "original"
    assert prepared.data == data
    assert prepared.source_bytes == len(data)
    assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime  # source untouched
    assert_clean(prepared)


def test_harmless_metadata_is_stripped_without_reencoding(tmp_path: Path) -> None:
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    source = marked((640, 480)).effect_spread(10)
    data = encode(source, quality=88, exif=exif_bytes(orientation=1), comment=b"from HR", xmp=xmp)
    # A phone's MPF preview appended after the end of the image (with its own EXIF).
    data += encode(Image.new("RGB", (64, 48), RED), exif=exif_bytes(gps=True))
    path = write(tmp_path, "meta.jpg", data)

    prepared = prepare(path)

    assert prepared.path == "stripped"
    assert len(prepared.data) < len(data)
    assert_clean(prepared)
    original_pixels = opened(path).tobytes()
    assert decoded(prepared).tobytes() == original_pixels  # lossless: identical pixels


def test_progressive_jpeg_with_comment_is_stripped(tmp_path: Path) -> None:
    data = encode(marked((500, 300)), quality=85, progressive=True, comment=b"hello")
    prepared = prepare(write(tmp_path, "prog.jpg", data))
    assert prepared.path == "stripped"
    assert decoded(prepared).tobytes() == Image.open(io.BytesIO(data)).tobytes()
    assert_clean(prepared)


def test_over_max_bytes_is_reencoded_to_fit(tmp_path: Path) -> None:
    data = encode(marked((600, 400)).effect_spread(40), quality=100)
    limit = len(data) // 2
    prepared = prepare(write(tmp_path, "heavy.jpg", data), max_bytes=limit)
    assert prepared.path == "reencoded" and len(prepared.data) <= limit
    assert decoded(prepared).size == (600, 400)


def test_cannot_fit_max_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "p.jpg", encode(marked((600, 400)).effect_spread(40)))
    assert "max_bytes" in reason_for_with(path, max_bytes=2_000)


def reason_for_with(path: Path, **options: int) -> str:
    with pytest.raises(ImageError) as caught:
        prepare(path, **options)  # type: ignore[arg-type]
    return str(caught.value)


def test_sha256_and_content_type(tmp_path: Path) -> None:
    import hashlib

    prepared = prepare(write(tmp_path, "a.png", encode(marked((300, 300)), "PNG")))
    assert prepared.sha256 == hashlib.sha256(prepared.data).hexdigest()
    assert prepared.content_type == "image/jpeg"


def test_corrupt_exif_does_not_reject_a_good_photo(tmp_path: Path) -> None:
    data = encode(marked((400, 300)), quality=90, exif=b"Exif\x00\x00MM\x00*\xff\xff\xff\xff")
    prepared = prepare(write(tmp_path, "badexif.jpg", data))
    assert_clean(prepared)
    assert near(decoded(prepared).getpixel((20, 20)), RED)  # type: ignore[arg-type]


def test_nonsense_options_are_the_callers_mistake(tmp_path: Path) -> None:
    path = write(tmp_path, "a.jpg", encode(marked((300, 200))))
    with pytest.raises(ValueError, match="positive"):
        prepare(path, max_dimension=0)


def test_concurrent_calls_give_the_same_bytes(tmp_path: Path) -> None:
    # The executor prepares photos on several threads at once.
    from concurrent.futures import ThreadPoolExecutor

    sources = [
        write(tmp_path, f"{i}.png", encode(marked((700 + 10 * i, 500)), "PNG")) for i in range(4)
    ]
    p3, icc = p3_photo()
    sources.append(write(tmp_path, "p3.jpg", encode(p3, quality=95, icc_profile=icc)))
    sequential = [prepare(p).data for p in sources]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(lambda p: prepare(p).data, sources * 3))
    assert concurrent == sequential * 3


# From bytes already read: the executor hashes a file and uploads from exactly those bytes.


@pytest.mark.parametrize(
    ("name", "data", "crop"),
    [
        ("fits.jpg", encode(marked((600, 400)), quality=90), None),
        ("meta.jpg", encode(marked((600, 400)), quality=90, comment=b"from HR"), None),
        ("big.png", encode(marked((1500, 1000)), "PNG"), "square"),
    ],
)
def test_prepare_bytes_gives_what_prepare_gives(
    tmp_path: Path, name: str, data: bytes, crop: str | None
) -> None:
    from_file = prepare(write(tmp_path, name, data), crop="square" if crop else None)
    from_bytes = prepare_bytes(data, max_bytes=4_194_304, max_dimension=648, crop=crop)
    assert from_bytes == from_file
    assert from_bytes.source_bytes == len(data)


def test_prepare_bytes_rejects_empty_and_unknown_crop() -> None:
    with pytest.raises(ImageError, match="empty"):
        prepare_bytes(b"", max_bytes=1000, max_dimension=100, crop=None)
    with pytest.raises(ValueError, match="crop"):
        prepare_bytes(b"x", max_bytes=1000, max_dimension=100, crop="circle")


# HEIC/HEIF.


def heif_looking_bytes() -> bytes:
    ftyp = b"ftypheic" + bytes(4) + b"mif1heic"
    return struct.pack(">I", 8 + len(ftyp)) + ftyp + bytes(200)


def test_heic_without_pillow_heif_names_the_extra(tmp_path: Path) -> None:
    # A fresh interpreter in which importing pillow_heif genuinely fails, whether or not it
    # happens to be installed in this environment.
    path = write(tmp_path, "IMG_0001.HEIC", heif_looking_bytes())
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from pathlib import Path\n"
        "from reconciler.errors import ImageError\n"
        "from reconciler.images import heif_available, prepare\n"
        "assert not heif_available()\n"
        "try:\n"
        f"    prepare(Path({str(path)!r}))\n"
        "except ImageError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'photosync[heif]'" in result.stdout
    assert "HEIC" in result.stdout


def test_heic_with_pillow_heif(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    assert heif_available()
    # Stored turned on its side with EXIF orientation 6, as a phone held upright writes it;
    # pillow-heif turns that into the container's rotation and applies it when decoding.
    stored = marked((800, 600)).transpose(STORED_FROM_UPRIGHT[6] or Image.Transpose.ROTATE_90)
    heif = pillow_heif.from_pillow(stored)
    buf = io.BytesIO()
    heif.save(buf, quality=90, exif=exif_bytes(orientation=6))
    path = write(tmp_path, "IMG_0002.heic", buf.getvalue())

    prepared = prepare(path)

    out = decoded(prepared)
    assert prepared.path == "reencoded" and out.size == (648, 486)
    assert near(out.getpixel((30, 30)), RED, 20)  # type: ignore[arg-type]
    assert near(out.getpixel((618, 30)), BLUE, 20)  # type: ignore[arg-type]
    assert_clean(prepared)


def test_damaged_heic_with_pillow_heif(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    buf = io.BytesIO()
    pillow_heif.from_pillow(marked((300, 200))).save(buf, quality=50)
    path = write(tmp_path, "cut.heic", buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "damaged or incomplete" in reason_for(path)


# Nothing but ImageError, whatever the bytes.


def fuzz_sources() -> list[tuple[str, bytes]]:
    base = marked((96, 64)).effect_spread(5)
    return [
        ("jpg", encode(base, quality=80, exif=exif_bytes(orientation=3))),
        ("jpg", encode(base, quality=80, progressive=True)),
        ("png", encode(base.convert("RGBA"), "PNG")),
        ("gif", encode(base, "GIF")),
        ("bmp", encode(base, "BMP")),
        ("webp", encode(base, "WEBP")),
        ("tif", encode(base, "TIFF")),
    ]


def test_damaged_bytes_only_ever_raise_image_error(tmp_path: Path) -> None:
    rng = random.Random(1234)
    outcomes = {"ok": 0, "rejected": 0}
    for suffix, original in fuzz_sources():
        for _ in range(40):
            data = bytearray(original)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if rng.random() < 0.3:
                data = data[: rng.randrange(1, len(data))]
            path = write(tmp_path, f"fuzz.{suffix}", bytes(data))
            try:
                prepare(path)
                outcomes["ok"] += 1
            except ImageError:
                outcomes["rejected"] += 1
    assert outcomes["ok"] > 0 and outcomes["rejected"] > 0


# Metadata by allow-list: GPS hidden where a deny-list would not look never reaches Graph.

SECRET = b"GPS-SECRET-48.8584N-2.2945E"


def secret_exif() -> bytes:
    """A real EXIF block (b"Exif\\0\\0" + TIFF) whose GPS IFD carries the secret."""
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 30.24)
    gps[3], gps[4] = "E", (2.0, 17.0, 40.2)
    gps[0x1B] = SECRET  # GPSProcessingMethod
    data = exif.tobytes()
    assert SECRET in data
    return data


def jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + (len(body) + 2).to_bytes(2, "big") + body


JFIF_HEADER = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01"  # version 1.1, no units, 1:1


def hiding_places() -> dict[str, tuple[bytes, str]]:
    """name -> (a JPEG with the secret hidden in one place, the path it must take)."""
    base = encode(marked((320, 240)).effect_spread(6), quality=90)
    assert base[2:4] == b"\xff\xe0" and base[4:6] == b"\x00\x10"  # Pillow's canonical JFIF
    soi, jfif, rest = base[:2], base[2:20], base[20:]
    thumb = SECRET.ljust(30, b"\x00")  # 10x1 RGB thumbnail pixels
    exif = secret_exif()
    return {
        "jfif thumbnail": (
            soi + jpeg_segment(0xE0, JFIF_HEADER + bytes((10, 1)) + thumb) + rest,
            "stripped",
        ),
        "jfif extra bytes": (
            soi + jpeg_segment(0xE0, JFIF_HEADER + b"\x00\x00" + exif) + rest,
            "stripped",
        ),
        "adobe app14": (
            soi + jfif + jpeg_segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x01" + exif) + rest,
            "stripped",
        ),
        "dnl": (base[:-2] + jpeg_segment(0xDC, b"\x00\xf0" + exif) + base[-2:], "stripped"),
        "comment": (soi + jfif + jpeg_segment(0xFE, SECRET) + rest, "stripped"),
        "app2 not icc": (soi + jfif + jpeg_segment(0xE2, b"FPXR\x00" + exif) + rest, "stripped"),
        "after eoi": (base + exif + SECRET, "stripped"),
        # A quantisation table no scan uses: 64 free bytes inside an allow-listed segment.
        "unused dqt table": (
            soi + jfif + jpeg_segment(0xDB, b"\x03" + SECRET.ljust(64, b"\x01")) + rest,
            "reencoded",
        ),
        # The same, sharing one segment with a table the scans do use.
        "unused table beside a used one": (
            soi + jfif + with_extra_quant_table(rest, b"\x03" + SECRET.ljust(64, b"\x01")),
            "reencoded",
        ),
        # No JFIF, and an Adobe segment saying "no colour transform": without it the decoder
        # would read the same components as YCbCr, so dropping it would change the colours.
        "adobe rgb transform": (
            soi + jpeg_segment(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00" + exif) + rest,
            "reencoded",
        ),
    }


def with_extra_quant_table(segments: bytes, table: bytes) -> bytes:
    """`segments` (starting with a DQT) with `table` appended inside that first DQT."""
    assert segments[:2] == b"\xff\xdb"
    end = 2 + int.from_bytes(segments[2:4], "big")
    return jpeg_segment(0xDB, segments[4:end] + table) + segments[end:]


def test_hidden_metadata_never_reaches_graph(settings: Settings, emulator: GraphEmulator) -> None:
    places = hiding_places()
    users = {}
    for index, (place, (data, _path)) in enumerate(places.items()):
        name = f"Hidden {chr(ord('A') + index)}"
        users[place] = emulator.tenant.add_user(name, user_principal_name=f"h{index}@contoso.com")
        (settings.inbox_dir / f"{name}.jpg").write_bytes(data)
        assert Image.open(io.BytesIO(data)).size == (320, 240)  # each source is a valid JPEG

    summary, _plan = app.reconcile(settings)

    assert summary.exit_code == 0
    paths = dict(ledger_rows(settings, "SELECT user_id, prepare_path FROM uploads"))
    for place, (data, expected_path) in places.items():
        photo = emulator.tenant.photo(users[place])
        assert photo is not None, place
        assert b"GPS-SECRET" not in photo.data, place
        assert b"Exif" not in photo.data, place
        assert paths[users[place]] == expected_path, place
        source = Image.open(io.BytesIO(data)).convert("RGB")
        uploaded = Image.open(io.BytesIO(photo.data))
        assert uploaded.format == "JPEG" and uploaded.size == source.size, place
        if expected_path == "stripped":
            assert uploaded.tobytes() == source.tobytes(), place  # lossless: same pixels
        else:
            # Re-encoded from what the source decodes to, so colours are kept, within JPEG loss.
            assert mean_difference(uploaded.convert("RGB"), source) < 4, place


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    pairs = zip(a.tobytes(), b.tobytes(), strict=True)
    return sum(abs(x - y) for x, y in pairs) / (a.width * a.height * 3)


def test_a_canonical_jpeg_keeps_its_bytes_and_its_jfif_header() -> None:
    data = encode(marked((320, 240)), quality=90)
    prepared = prepare_bytes(data, max_bytes=10**6, max_dimension=648, crop=None)
    assert prepared.path == "original" and prepared.data == data


# The memory budget: decodes across threads share one budget of decoded bytes.


def budget_corpus(count: int, size: tuple[int, int] = (400, 300)) -> list[bytes]:
    return [encode(marked((size[0] + i, size[1])).effect_spread(3), "PNG") for i in range(count)]


def prepare_all(sources: list[bytes], workers: int = 4) -> list[bytes]:
    from concurrent.futures import ThreadPoolExecutor

    def one(data: bytes) -> bytes:
        return prepare_bytes(data, max_bytes=10**6, max_dimension=200, crop=None).data

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, sources))


def reservation_for(monkeypatch: pytest.MonkeyPatch, data: bytes) -> int:
    """What preparing `data` reserves, seen through a budget too large to constrain it."""
    budget = MemoryBudget(2**40)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    prepare_bytes(data, max_bytes=10**6, max_dimension=200, crop=None)
    return budget.stats().peak_reserved


def test_decodes_in_flight_never_exceed_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = budget_corpus(8)
    one_decode = reservation_for(monkeypatch, sources[-1])  # the largest of them
    assert one_decode >= 407 * 300 * 4  # at least the RGB pixels, at 4 bytes each
    budget = MemoryBudget(int(one_decode * 2.5))  # room for two at a time, not three
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    sequential = [
        prepare_bytes(d, max_bytes=10**6, max_dimension=200, crop=None).data for d in sources
    ]

    concurrent = prepare_all(sources * 2)

    assert concurrent == sequential * 2
    stats = budget.stats()
    assert stats.granted == len(sequential) * 3
    assert stats.peak_holders <= 2
    assert stats.peak_reserved <= budget.capacity
    assert (stats.reserved, stats.holders, stats.waiting) == (0, 0, 0)


def test_a_photo_over_the_whole_budget_is_processed_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget = MemoryBudget(100_000)  # smaller than any one of these decodes
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    sources = budget_corpus(5) + budget_corpus(1, size=(1200, 900))

    results = prepare_all(sources)

    assert [Image.open(io.BytesIO(r)).size for r in results][-1] == (200, 150)
    stats = budget.stats()
    assert stats.granted == 6 and stats.peak_holders == 1
    assert stats.peak_reserved == budget.capacity


def test_the_budget_is_released_when_a_photo_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = MemoryBudget(10**7)
    monkeypatch.setattr(images, "DECODE_BUDGET", budget)
    good = encode(marked((400, 300)).effect_spread(40), "PNG")
    failures = [good[: len(good) // 2], good]  # a damaged PNG; a photo that cannot fit
    for data in failures:
        with pytest.raises(ImageError):
            prepare_bytes(data, max_bytes=500, max_dimension=400, crop=None)
    stats = budget.stats()
    assert stats.granted == 2 and (stats.reserved, stats.holders) == (0, 0)


def test_the_budget_serves_in_arrival_order() -> None:
    """A large request is not starved by small ones that would fit around it."""
    import threading

    budget = MemoryBudget(100)
    order: list[str] = []

    def take(name: str, amount: int) -> None:
        with budget.reserve(amount):
            order.append(name)

    def wait_until_waiting(count: int) -> None:
        deadline = time.monotonic() + 10
        while budget.stats().waiting < count:
            assert time.monotonic() < deadline, "a request never queued"
            threading.Event().wait(0.001)

    with budget.reserve(99):
        large = threading.Thread(target=take, args=("large", 100))
        large.start()
        wait_until_waiting(1)
        small = threading.Thread(target=take, args=("small", 1))
        small.start()
        wait_until_waiting(2)
        assert budget.stats().holders == 1  # the small one fits, yet waits its turn
    large.join(10)
    small.join(10)
    assert order == ["large", "small"]


@pytest.mark.parametrize("size", [(6000, 4000), (4000, 6000), (1000, 700), (700, 650), (5000, 90)])
@pytest.mark.parametrize("crop", [None, "square"])
def test_the_jpeg_reservation_is_for_the_size_draft_decodes(
    size: tuple[int, int], crop: str | None
) -> None:
    """The budget reserves for a JPEG's draft size from the header, so it must predict the
    reduction Pillow will choose; a mismatch would under- or over-reserve."""
    header = encode(Image.new("RGB", (64, 64)), quality=50)
    data = bytearray(header)
    frame = header.index(b"\xff\xc0")
    data[frame + 5 : frame + 9] = struct.pack(">HH", size[1], size[0])  # height, width
    with Image.open(io.BytesIO(bytes(data))) as im:
        out = images._output_size(*size, 648, square=crop == "square")
        request = images._draft_request(*size, out, crop == "square")
        reduction = images._draft_reduction(size, request)
        im.draft("RGB", request)
        assert im.size == (-(-size[0] // reduction), -(-size[1] // reduction))
