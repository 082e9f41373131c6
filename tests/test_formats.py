"""Every still format the installed Pillow decodes safely is accepted: AVIF, JPEG 2000 and a
Photoshop file's composite image, on real files; the formats still refused say why and what
to save instead."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageStat, features

from reconciler import app, images
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.errors import ImageError
from reconciler.matching import name_key
from reconciler.model import IMAGE_SUFFIXES, Outcome
from tests.helpers import outcomes

DATA = Path(__file__).parent / "data"
PSD = DATA / "hopper.psd"  # Pillow's test image (tests/data/README.md)


def astronaut() -> Image.Image:
    with Image.open(DATA / "astronaut.png") as im:
        return im.convert("RGB")


def saved(im: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255, after scaling b to a's size."""
    b = b.convert("RGB").resize(a.size, Image.Resampling.BILINEAR)
    diff = Image.frombytes(
        "RGB", a.size, bytes(abs(x - y) for x, y in zip(a.tobytes(), b.tobytes(), strict=True))
    )
    return sum(ImageStat.Stat(diff).mean) / 3


def uploaded_pixels(data: bytes) -> Image.Image:
    prepared = images.prepare_bytes(data)
    assert prepared.content_type == "image/jpeg"
    with Image.open(io.BytesIO(prepared.data)) as out:
        assert out.format == "JPEG"
        return out.convert("RGB")


@pytest.mark.parametrize(
    ("fmt", "feature", "params"),
    [
        ("AVIF", "avif", {"quality": 90}),
        ("JPEG2000", "jpg_2000", {"quality_mode": "dB", "quality_layers": [45]}),
    ],
)
def test_avif_and_jpeg_2000_photos_are_uploaded_as_the_same_picture(
    fmt: str, feature: str, params: dict[str, object]
) -> None:
    assert features.check(feature), f"this Pillow cannot {fmt}; the test needs it"
    source = astronaut()

    out = uploaded_pixels(saved(source, fmt, **params))

    assert out.size == (512, 512)
    assert mean_difference(out, source) < 4  # the same portrait, not a grey smear


def test_a_photoshop_file_gives_its_composite_image() -> None:
    with Image.open(PSD) as psd:
        assert psd.format == "PSD" and getattr(psd, "n_frames", 1) > 1  # it has layers
        composite = psd.convert("RGB")

    out = uploaded_pixels(PSD.read_bytes())

    assert out.size == composite.size
    assert mean_difference(out, composite) < 4


def test_the_new_suffixes_count_as_photos_and_are_stripped_for_matching() -> None:
    for suffix in (".avif", ".jp2", ".j2k", ".jpf", ".jpx", ".psd"):
        assert suffix in IMAGE_SUFFIXES
        assert name_key(f"Eileen Collins{suffix.upper()}") == name_key("Eileen Collins")


def test_a_run_uploads_avif_jpeg_2000_and_psd_files(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = [emulator.tenant.add_user(name) for name in ("Ada Avif", "Jon Jp2", "Pat Psd")]
    source = astronaut()
    (settings.inbox_dir / "Ada Avif.avif").write_bytes(saved(source, "AVIF", quality=80))
    (settings.inbox_dir / "Jon Jp2.jp2").write_bytes(saved(source, "JPEG2000"))
    (settings.inbox_dir / "Pat Psd.psd").write_bytes(PSD.read_bytes())

    summary, _ = app.reconcile(settings)

    assert outcomes(summary) == {
        "Ada Avif.avif": Outcome.UPLOADED,
        "Jon Jp2.jp2": Outcome.UPLOADED,
        "Pat Psd.psd": Outcome.UPLOADED,
    }
    for user_id in ids:
        stored = emulator.tenant.photo(user_id)
        assert stored is not None and stored.detected_type == "image/jpeg"


def icon() -> bytes:
    return saved(astronaut().resize((64, 64)), "ICO")


@pytest.mark.parametrize(
    ("data", "starts", "advice"),
    [
        (icon(), "a Windows icon (ICO) image, which holds small icons", "JPEG or PNG"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n", "a PostScript (EPS)", "JPEG"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9"/>',
            "an SVG drawing, a drawing, not a photo",
            "export it as PNG",
        ),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(60), "a JPEG 2000 image, which", "JPEG"),
        (b"8BPS\x00\x01" + bytes(40), "a Photoshop (PSD) image, whose flattened", "JPEG or PNG"),
    ],
    ids=["ico", "eps", "svg", "damaged-jp2", "damaged-psd"],
)
def test_formats_still_refused_say_why_and_what_to_save_instead(
    data: bytes, starts: str, advice: str
) -> None:
    with pytest.raises(ImageError) as caught:
        images.prepare_bytes(data)

    reason = str(caught.value)
    assert reason.startswith(starts), reason
    assert advice in reason.split(";")[-1], reason
    assert "\n" not in reason
