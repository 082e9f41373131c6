"""Pixels into plain 8-bit sRGB, for reconciler.images (private to it).

An uploaded photo carries no colour profile, and every viewer then assumes sRGB. So pixels
described by another profile (an iPhone's Display P3, Adobe RGB, a print shop's CMYK) are
converted with that profile, or they would look washed out or oversaturated in Outlook and
Teams. Transparency has no meaning in a profile photo; it is flattened onto white, the
background the photo is shown against.
"""

from __future__ import annotations

import functools
from io import BytesIO

from PIL import Image, ImageCms

WHITE = (255, 255, 255)

# Modes the resampler and the colour transforms work in directly.
WORKING_MODES = frozenset({"RGB", "L", "CMYK"})

_ICC_SPACE_FOR_MODE = {"RGB": "RGB ", "L": "GRAY", "CMYK": "CMYK"}

_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))

# How far (in 8-bit steps) a profile may move any probe colour and still count as sRGB: real
# sRGB profiles differ in their curve tables by rounding, which moves no colour by more than 1.
_SRGB_TOLERANCE = 2


def to_working_mode(im: Image.Image) -> Image.Image:
    """RGB, L or CMYK pixels, 8 bits per sample, any transparency flattened onto white."""
    if im.mode in WORKING_MODES and "transparency" not in im.info:
        return im
    if im.mode.startswith("I") or im.mode == "F":
        return _to_8bit_grey(im)
    if im.mode == "1":
        return im.convert("L")
    if im.has_transparency_data:
        return flatten_onto_white(im)
    return im.convert("RGB")


def flatten_onto_white(im: Image.Image) -> Image.Image:
    # Pasted straight from RGBA (its alpha is the mask): no RGB copy and no alpha band made,
    # which for a 60-megapixel image is 500 MB fewer (see docs/reliability.md).
    rgba = im if im.mode == "RGBA" else im.convert("RGBA")
    flat = Image.new("RGB", im.size, WHITE)
    flat.paste(rgba, mask=rgba)
    return flat


# Bytes Pillow allocates per pixel, by mode: three-band modes are stored padded to four.
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})


def pixel_bytes(mode: str) -> int:
    return _PIXEL_BYTES.get(mode, 4)


def working_bytes_per_pixel(mode: str, *, transparency: bool) -> int:
    """What `to_working_mode` allocates per pixel on top of the decoded image: the full-size
    copies it holds at once before anything is resampled. Mirrors its branches."""
    if mode in WORKING_MODES and not transparency:
        return 0
    if mode.startswith("I") or mode == "F":
        return 4 + 4 + 1  # widened to 32 bits, scaled, then 8-bit grey
    if mode == "1":
        return 1
    if transparency or mode in _ALPHA_MODES:
        return (0 if mode == "RGBA" else 4) + 4  # RGBA unless it is already, then the RGB
    return 4


def _to_8bit_grey(im: Image.Image) -> Image.Image:
    """Greyscale deeper than 8 bits: scale to 0-255 (converting directly would clip at 255)."""
    if im.mode.startswith("I;16"):
        peak = 65535.0
    else:
        # 32-bit integer or float greyscale carries no bit depth; scale by the brightest pixel
        # when it is out of 8-bit range (16-bit PNGs come this way from some Pillow versions).
        extrema = im.getextrema()
        high = float(extrema[1]) if isinstance(extrema[1], int | float) else 255.0
        peak = 255.0 if high <= 255 else 65535.0 if high <= 65535 else high
    wide = im if im.mode in ("I", "F") else im.convert("I")
    factor = 255.0 / peak
    return wide.point(lambda v: v * factor).convert("L")


def to_srgb(im: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """RGB pixels in sRGB; `im` is in a working mode, described by `icc_profile` if given."""
    transform = _transform_to_srgb(icc_profile, im.mode) if icc_profile else None
    if transform is not None:
        converted = ImageCms.applyTransform(im, transform)
        assert converted is not None  # only None when transforming in place
        return converted
    return im if im.mode == "RGB" else im.convert("RGB")


def is_srgb(icc_profile: bytes | None, mode: str) -> bool:
    """True when `mode` pixels tagged with this profile need no conversion to be shown as
    sRGB. The mode matters: a grey JPEG's profile is a grey one, and passing it to the RGB
    check would call every grey profile "not RGB, so take the pixels as they are"."""
    return icc_profile is None or _transform_to_srgb(icc_profile, mode) is None


@functools.lru_cache(maxsize=16)
def _transform_to_srgb(icc_profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform into sRGB, or None when the profile is sRGB already, unusable, or
    describes another colour space than the pixels (then the pixels are taken as they are).

    Cached: a batch of photos from one phone carries the same profile, and building a
    transform costs more than applying it to a 648-pixel image.
    """
    try:
        profile = ImageCms.ImageCmsProfile(BytesIO(icc_profile))
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError):
        return None
    if profile.profile.xcolor_space != _ICC_SPACE_FOR_MODE.get(mode):
        return None
    try:
        transform = ImageCms.buildTransform(profile, _SRGB, mode, "RGB")
    except (OSError, ImageCms.PyCMSError, ValueError, TypeError):
        return None
    if _moves_no_colour(transform, mode):
        return None
    return transform


def _moves_no_colour(transform: ImageCms.ImageCmsTransform, mode: str) -> bool:
    """Decide "is this sRGB?" by behaviour, not by name: profile descriptions vary by vendor
    and language, while what a profile does to a grid of colours does not. A grey profile
    passes when every level comes out as the same sRGB grey; CMYK never does."""
    levels = (0, 32, 64, 96, 128, 160, 192, 224, 255)
    if mode == "RGB":
        probe = bytes(c for r in levels for g in levels for b in levels for c in (r, g, b))
        expected = probe
    elif mode == "L":
        probe = bytes(range(256))
        expected = bytes(level for level in probe for _channel in range(3))
    else:
        return False
    bytes_per_pixel = 3 if mode == "RGB" else 1
    image = Image.frombytes(mode, (len(probe) // bytes_per_pixel, 1), probe)
    out = ImageCms.applyTransform(image, transform)
    assert out is not None
    return all(abs(a - b) <= _SRGB_TOLERANCE for a, b in zip(expected, out.tobytes(), strict=True))
