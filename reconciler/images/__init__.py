"""Turn whatever HR drops into the inbox into a photo Graph will take, or say why not.

Every file ends one of two ways: `prepare` returns the JPEG bytes to upload, or raises
ImageError with one line a helpdesk person can act on. The source file is read once and never
written; all work happens on the bytes in memory.

The route through `prepare`:

1. identify by content (the extension proves nothing), reject what is empty, not an image,
   implausibly large (a decompression bomb) or too small to be a face;
2. a JPEG that already fits, needs no rotation or colour conversion, goes out as it is
   ("original"), or with every segment not on the allow-list of picture segments cut out at
   the marker level ("stripped"; see _jpeg.cleaned);
3. anything else is decoded once, at the smallest JPEG DCT scale that still covers the target
   size (`Image.draft`), flattened to 8-bit RGB, centre-cropped if asked, resampled with
   Lanczos, colour-managed into sRGB, turned upright from its EXIF orientation, and encoded as
   JPEG at the best quality that fits under max_bytes ("reencoded"), with no metadata at all.
   With crop = "face" the decoded pixels are turned upright first, the faces are found in
   them, and the square is framed around the largest (reconciler/faces).

Every prepared photo carries its quality notes (blur, exposure and, when faces are looked
for, what was found), measured on the pixels that will be uploaded.

Either way the full image data is decoded before anything is returned, because a truncated or
corrupt file must be rejected here rather than shown to the whole company as a grey smear.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import functools
import hashlib
import math
import struct
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

from PIL import ExifTags, Image, ImageCms, UnidentifiedImageError

from reconciler.errors import ImageError
from reconciler.faces import cut, detect, framing
from reconciler.faces import quality as photo_quality
from reconciler.images import _budget, _color, _jpeg
from reconciler.model import IMAGE_SUFFIXES, PreparedImage

SUPPORTED_SUFFIXES = IMAGE_SUFFIXES

MIN_DIMENSION = 48

# The decompression-bomb cap. 64 megapixels admits every phone's full-resolution mode (48-50 MP)
# and 61 MP full-frame cameras. A JPEG that large costs little, as it is decoded at 1/8 scale,
# but a PNG or TIFF must be decoded whole: 64 MP of RGBA is already 256 MB, and that is the
# figure that bounds our memory. Pillow's own limit (89 MP warning, 179 MP error) is looser and
# process-wide; this check is ours, made from the header before any pixel is decoded.
MAX_PIXELS = 64_000_000

CONTENT_TYPE = "image/jpeg"

# Quality steps when the encoded photo is over max_bytes. 90 is visually lossless for a face;
# below 50 blocking shows, so that is where we stop and say the limit cannot be met.
QUALITIES = (90, 85, 80, 75, 70, 60, 50)

# Pillow formats we accept; HEIF files go to pillow-heif's opener alone. Naming them keeps
# Image.open away from formats we never want to parse from an untrusted file (EPS would start
# Ghostscript) or cannot upload sensibly. AVIF and JPEG 2000 are still photos Pillow decodes
# with libavif and OpenJPEG when it was built with them (PIL.features); a Photoshop file
# gives its flattened composite image, never its layers.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "AVIF", "JPEG2000", "PSD")

_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)

_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# What Pillow, its plugins and pillow-heif raise on malformed input. It is a zoo because each
# format parser fails in its own way; all of them mean "this file is damaged".
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    ArithmeticError,
    struct.error,
    RuntimeError,
    MemoryError,
    ImageCms.PyCMSError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)

# Pillow's own guard against decompression bombs: an error above twice Image.MAX_IMAGE_PIXELS,
# a warning (made an error by _pillow_warnings) above it. It can fire in open() or in load().
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)

_Path = Literal["original", "stripped", "reencoded"]

# The budget for decoded pixels, shared by every thread that prepares a photo (see
# _budget.py and docs/reliability.md). 384 MiB lets four 12-megapixel photos decode at once,
# while a 63-megapixel PNG (252 MB as pixels, 504 MB with alpha) takes most or all of it: four
# of those at the default concurrency peak at 0.54 GB instead of 1.6 GB (bench/bench_images.py).
# Replace it with another MemoryBudget to change the capacity.
DECODE_BUDGET = _budget.MemoryBudget(384 * 2**20)
_budget.return_large_blocks_to_the_os()

# What a decoder holds per pixel besides Pillow's image. Pillow reads every WebP through
# libwebp's animation decoder, which keeps a frame and a canvas of its own and hands over a
# copy (measured: 16 bytes a pixel in all for RGB); libheif decodes into planes that are then
# converted and copied (measured: 7); libtiff may buffer a whole strip or tile set.
# libavif holds YUV planes of up to 16 bits a sample, as libheif does; OpenJPEG decodes into
# a 32-bit integer per sample, four samples at most.
_DECODER_BYTES_PER_PIXEL = {"WEBP": 12, "HEIF": 8, "TIFF": 4, "AVIF": 8, "JPEG2000": 16}

# Resampling first reduces by a whole factor to about three times the output size
# (reducing_gap=3.0), so it holds up to 9 output-sized RGB images (36 bytes an output pixel)
# plus a one-direction pass; 40 covers both.
_RESAMPLE_BYTES_PER_OUTPUT_PIXEL = 40

_HEIF_HINT = "pip install 'photosync[heif]'"

_EMPTY = "the file is empty (0 bytes); copy the photo into the folder again"


def prepare(
    source: Path,
    *,
    max_bytes: int = 4_194_304,
    max_dimension: int = 648,
    crop: Literal["square", "face"] | None = None,
    require_face: bool = False,
) -> PreparedImage:
    """The JPEG to upload for `source`. Raises ImageError (and nothing else) if it is unusable.

    A max_bytes or max_dimension below 1 is the caller's mistake: ValueError.
    """
    return prepare_bytes(
        _read(source),
        max_bytes=max_bytes,
        max_dimension=max_dimension,
        crop=crop,
        require_face=require_face,
    )


def prepare_bytes(
    data: bytes,
    *,
    max_bytes: int = 4_194_304,
    max_dimension: int = 648,
    crop: str | None = None,
    require_face: bool = False,
) -> PreparedImage:
    """The JPEG to upload for a file whose content is `data`; what `prepare` gives for it.

    For a caller that has already read the file (to hash it), so the upload is made from
    exactly the bytes it hashed. Raises ImageError (and nothing else) if they are unusable,
    which with `require_face` includes a photo without exactly one usable face; a max_bytes
    or max_dimension below 1, or a crop other than "square", "face" or None, is the
    caller's mistake: ValueError. "face" and `require_face` need the `face` extra.
    """
    if max_bytes < 1 or max_dimension < 1:
        raise ValueError(
            f"max_bytes and max_dimension must be positive: {max_bytes}, {max_dimension}"
        )
    if crop not in (None, "square", "face"):
        raise ValueError(f"crop must be 'square', 'face' or None, not {crop!r}")
    if not data:
        raise ImageError(_EMPTY)
    try:
        # Only the header is read before the reservation; the pixels are decoded under it,
        # and it is held until they are freed (see _budget.py).
        with (
            _pillow_warnings(),
            _open(data) as im,
            DECODE_BUDGET.reserve(_decode_cost(im, max_dimension, crop)),
        ):
            try:
                return _prepare_opened(im, data, max_bytes, max_dimension, crop, require_face)
            except BaseException as exc:
                # The failed frames' locals may hold full-size pixels: free them while the
                # reservation still covers them, not whenever the exception is dropped.
                traceback.clear_frames(exc.__traceback__)
                raise
            finally:
                im.close()
    except _BOMB as exc:
        raise ImageError(_bomb(exc)) from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(_damaged(exc)) from exc


def _prepare_opened(
    im: Image.Image,
    data: bytes,
    max_bytes: int,
    max_dimension: int,
    crop: str | None,
    require_face: bool = False,
) -> PreparedImage:
    photo = _inspect(im)
    passthrough = _passthrough(photo, data, max_bytes, max_dimension, crop)
    if passthrough is not None:
        return _with_notes(passthrough, require_face)
    if crop == "face":
        return _reencode_face(im, photo, data, max_bytes, max_dimension, require_face)
    return _reencode(im, photo, data, max_bytes, max_dimension, crop, require_face)


@functools.cache
def heif_available() -> bool:
    """True when pillow-heif is installed; registers its HEIC/HEIF opener on first call."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


@contextlib.contextmanager
def _pillow_warnings() -> Iterator[None]:
    """Pillow warns, rather than fails, between its two decompression-bomb limits, so that
    warning is made an error (MAX_PIXELS, checked from the header, is the guard that does not
    depend on this). Its complaints about malformed metadata are silenced: the metadata is
    dropped anyway, and they would otherwise escape as exceptions under `-W error`.

    catch_warnings is process-wide before Python 3.14; racing threads can at worst leave the
    "error" filter installed, which is the policy we want anyway.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@dataclass(frozen=True, slots=True)
class _Photo:
    """What the header and metadata say, before any pixel is decoded."""

    format: str
    mode: str
    width: int  # as stored, before orientation
    height: int
    orientation: int  # 1 (upright) to 8
    icc_profile: bytes | None
    metadata_readable: bool

    @property
    def upright_size(self) -> tuple[int, int]:
        swapped = self.orientation >= 5
        return (self.height, self.width) if swapped else (self.width, self.height)


def _read(source: Path) -> bytes:
    try:
        data = source.read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ImageError(
            f"the file could not be read ({reason}); check it is not open elsewhere or "
            "restricted, then try again"
        ) from exc
    if not data:
        raise ImageError(_EMPTY)
    return data


def _open(data: bytes) -> Image.Image:
    """Identify the image from its header and check its size, without decoding pixels."""
    heif = _is_heif(data)
    if heif and not heif_available():
        raise ImageError(
            "a HEIC/HEIF photo, and HEIC support is not installed; ask the administrator to run "
            f"{_HEIF_HINT}, or save the photo as JPEG"
        )
    try:
        im = Image.open(BytesIO(data), formats=("HEIF",) if heif else _FORMATS)
    except UnidentifiedImageError as exc:
        raise ImageError(_damaged(exc) if heif else _unrecognised(data)) from exc
    except _BOMB as exc:
        raise ImageError(_bomb(exc)) from exc
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise ImageError(_too_large(f"{width}x{height}, {width * height / 1e6:.0f} megapixels"))
    if width < MIN_DIMENSION or height < MIN_DIMENSION:
        im.close()
        raise ImageError(
            f"the image is only {width}x{height} pixels; a profile photo needs at least "
            f"{MIN_DIMENSION}x{MIN_DIMENSION}, so send a larger photo"
        )
    return im


def _inspect(im: Image.Image) -> _Photo:
    if im.format != "JPEG":
        # Only JPEG is ever decoded at reduced scale, so anything else can be decoded now.
        # It must be: PNG reads EXIF after the pixels (eXIf may follow the image data), and a
        # decode failure there must reject the file, not pass for unreadable metadata.
        im.load()
    orientation, readable = _orientation(im)
    icc = im.info.get("icc_profile")
    return _Photo(
        format=im.format or "",
        mode=im.mode,
        width=im.width,
        height=im.height,
        orientation=orientation,
        icc_profile=icc if isinstance(icc, bytes) and icc else None,
        metadata_readable=readable,
    )


def _orientation(im: Image.Image) -> tuple[int, bool]:
    """EXIF (or XMP) orientation, 1 when absent; and whether the metadata could be parsed.

    Broken metadata does not make a photo unusable: it is treated as upright, and the
    metadata is dropped by re-encoding.
    """
    try:
        value = im.getexif().get(ExifTags.Base.Orientation, 1)
    except _DECODE_ERRORS:
        return 1, False
    return (value, True) if isinstance(value, int) and 1 <= value <= 8 else (1, True)


# Passthrough: the JPEG as it is, or without its metadata.


def _passthrough(
    photo: _Photo, data: bytes, max_bytes: int, max_dimension: int, crop: str | None
) -> PreparedImage | None:
    """The source JPEG (or it minus metadata) when nothing about its pixels must change."""
    if not (
        photo.format == "JPEG"
        and photo.mode in ("RGB", "L")
        and photo.orientation == 1
        and photo.metadata_readable
        and max(photo.width, photo.height) <= max_dimension
        and (crop is None or (crop == "square" and photo.width == photo.height))
        and _color.is_srgb(photo.icc_profile, photo.mode)
    ):
        return None
    layout = _jpeg_layout(data)
    if layout.frame_marker not in _jpeg.PORTABLE_FRAMES:
        return None
    if _jpeg.frame_precision(data, layout) != 8:
        return None
    out = _jpeg.cleaned(data, layout)
    if out is None or len(out) > max_bytes:
        return None
    _verify_decodes(out, (photo.width, photo.height))
    path: _Path = "original" if out == data else "stripped"
    return _prepared(out, (photo.width, photo.height), photo, len(data), path)


def _prepared(
    out: bytes, size: tuple[int, int], photo: _Photo, source_bytes: int, path: _Path
) -> PreparedImage:
    source_width, source_height = photo.upright_size
    return PreparedImage(
        data=out,
        content_type=CONTENT_TYPE,
        sha256=hashlib.sha256(out).hexdigest(),
        width=size[0],
        height=size[1],
        source_width=source_width,
        source_height=source_height,
        source_bytes=source_bytes,
        path=path,
    )


def _jpeg_layout(data: bytes) -> _jpeg.Layout:
    """The JPEG's segments, checked before any pixel is decoded: complete, and not a bomb."""
    try:
        layout = _jpeg.walk(data)
    except _jpeg.JpegStructureError as exc:
        raise ImageError(_damaged(exc)) from exc
    scans = _jpeg.scan_count(layout)
    if scans > _jpeg.MAX_SCANS:
        raise ImageError(
            f"the JPEG is made of {scans} scans, where a photo has at most a few dozen, and "
            "would take minutes to decode; open it and save it again as a standard JPEG"
        )
    return layout


def _verify_decodes(data: bytes, size: tuple[int, int]) -> None:
    """Decode the bytes we would upload, at 1/8 scale: the entropy decoder still reads every
    coded block, which is what catches corruption, while the inverse DCT is 1/64 of the work."""
    with Image.open(BytesIO(data), formats=("JPEG",)) as im:
        if im.size != size:
            raise ImageError(_damaged(ValueError("the image changed size when decoded")))
        im.draft(None, (max(1, size[0] // 8), max(1, size[1] // 8)))
        im.load()


# Re-encode: decode once, normalise, resample, encode.


def _reencode(
    im: Image.Image,
    photo: _Photo,
    data: bytes,
    max_bytes: int,
    max_dimension: int,
    crop: str | None,
    require_face: bool = False,
) -> PreparedImage:
    stored_out = _output_size(photo.width, photo.height, max_dimension, square=crop == "square")
    if photo.format == "JPEG":
        # The end-of-image check is what catches a file cut short and padded with zeros, which
        # libjpeg decodes without complaint.
        _jpeg_layout(data)
        im.draft("RGB", _draft_request(photo.width, photo.height, stored_out, crop == "square"))
    im.load()
    pixels = _color.to_working_mode(im)
    box = _centre_square(pixels.size) if crop == "square" else _whole(pixels.size)
    resized = pixels.resize(stored_out, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    rgb = _color.to_srgb(resized, photo.icc_profile)
    upright = _apply_orientation(rgb, photo.orientation)
    notes = _notes(upright, require_face)
    encoded = _encode_within(upright, max_bytes)
    prepared = _prepared(encoded, upright.size, photo, len(data), "reencoded")
    used = framing.centre_square(photo.upright_size) if crop == "square" else None
    return dataclasses.replace(
        prepared, quality_notes=notes, crop_box=used.as_tuple() if used else None
    )


# Face framing (crop = "face"): decode, turn upright, find faces, frame, resample.


def _reencode_face(
    im: Image.Image,
    photo: _Photo,
    data: bytes,
    max_bytes: int,
    max_dimension: int,
    require_face: bool,
) -> PreparedImage:
    if photo.format == "JPEG":
        _jpeg_layout(data)  # the end-of-image check, as in _reencode
        im.draft("RGB", _face_draft_request(photo.width, photo.height, max_dimension))
    im.load()
    # Upright before detection: the cascade finds upright faces only, and the eye line must
    # be measured in the picture as people will see it.
    upright = _apply_orientation(_color.to_working_mode(im), photo.orientation)
    found = detect.faces_in(upright)
    face_notes = _face_verdict(found, upright.size, require_face)
    face = framing.largest(found)
    square = (
        framing.face_square(upright.size, face) if face else framing.centre_square(upright.size)
    )
    to_source = photo.upright_size[0] / upright.width
    # Never enlarged: the side is at most the square's size in the source's own pixels.
    side = max(1, min(max_dimension, math.floor(square.width * to_source)))
    framed = _color.to_srgb(cut.cut_square(upright, square, side), photo.icc_profile)
    del upright
    to_output = side / square.width
    face_out = (
        framing.Box(
            (face.left - square.left) * to_output,
            (face.top - square.top) * to_output,
            face.width * to_output,
            face.height * to_output,
        )
        if face
        else None
    )
    notes = (*face_notes, *photo_quality.picture_notes(framed, face_out))
    encoded = _encode_within(framed, max_bytes)
    prepared = _prepared(encoded, framed.size, photo, len(data), "reencoded")
    return dataclasses.replace(
        prepared, quality_notes=notes, crop_box=square.scaled(to_source).as_tuple()
    )


def _face_draft_request(width: int, height: int, max_dimension: int) -> tuple[int, int]:
    """The size to ask Image.draft for when framing a face: large enough that the square
    around the smallest face worth framing (framing.SMALL_FACE of the shorter side, in a
    square HEAD_SIDES times its height) still holds max_dimension pixels."""
    smallest_square = framing.HEAD_SIDES * framing.SMALL_FACE
    scale = min(1.0, max_dimension / smallest_square / min(width, height))
    return math.ceil(width * scale), math.ceil(height * scale)


def _face_verdict(
    found: list[framing.Box], size: tuple[int, int], require_face: bool
) -> tuple[str, ...]:
    """The notes on the faces found; with require_face, an ImageError unless exactly one
    face is large enough to frame."""
    notes = tuple(photo_quality.face_notes(found, size))
    if not require_face:
        return notes
    usable = photo_quality.usable_faces(found, size)
    if not found:
        raise ImageError(
            "no face found, and require_face is on; send a photo of the person facing the "
            "camera, with the face clearly visible"
        )
    if usable == 0:
        share = max(face.height for face in found) / min(size)
        raise ImageError(
            f"the face is too small ({share:.0%} of the frame, under "
            f"{framing.SMALL_FACE:.0%}), and require_face is on; send a closer photo of "
            "the person"
        )
    if usable > 1:
        raise ImageError(
            f"{usable} faces in the photo, and require_face is on; send a photo of this "
            "person alone"
        )
    return notes


def _notes(picture: Image.Image, require_face: bool) -> tuple[str, ...]:
    """The quality notes on an upright picture as it will be uploaded; faces are looked for
    only when require_face asks for them (crop = "face" finds them itself)."""
    if not require_face:
        return tuple(photo_quality.picture_notes(picture))
    found = detect.faces_in(picture)
    face_notes = _face_verdict(found, picture.size, require_face)
    return (*face_notes, *photo_quality.picture_notes(picture, framing.largest(found)))


def _with_notes(prepared: PreparedImage, require_face: bool) -> PreparedImage:
    """A photo going out as it is, with the notes on its pixels (a decode of at most
    max_dimension pixels, a few milliseconds)."""
    with Image.open(BytesIO(prepared.data), formats=("JPEG",)) as im:
        im.load()
        notes = _notes(im, require_face)
    return dataclasses.replace(prepared, quality_notes=notes)


def _output_size(width: int, height: int, max_dimension: int, *, square: bool) -> tuple[int, int]:
    """Size of the result, in stored (not yet upright) orientation; never enlarged."""
    if square:
        side = min(width, height, max_dimension)
        return side, side
    scale = min(1.0, max_dimension / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _draft_request(width: int, height: int, out: tuple[int, int], square: bool) -> tuple[int, int]:
    """The size to ask Image.draft for: the whole image at the output's scale.

    draft() picks the largest DCT reduction (1/2, 1/4, 1/8) that leaves at least this size,
    so the region we resample from is never smaller than the output.
    """
    region = min(width, height) if square else max(width, height)
    scale = (out[0] if square else max(out)) / region
    return math.ceil(width * scale), math.ceil(height * scale)


def _draft_reduction(size: tuple[int, int], request: tuple[int, int]) -> int:
    """The DCT reduction Image.draft will choose for `request`: as Pillow's JPEG plugin
    decides it, the largest of 8, 4, 2 and 1 that the size divides into at least `request`."""
    fits = min(size[0] // max(1, request[0]), size[1] // max(1, request[1]))
    return next(s for s in (8, 4, 2, 1) if fits >= s or s == 1)


# Memory.


def _decode_cost(im: Image.Image, max_dimension: int, crop: str | None) -> int:
    """Bytes the decode of `im` holds at its peak, known from the header alone: the decoded
    pixels, the full-size copies the pipeline makes of them, the decoder's own buffers and
    the resampler's, plus a sixteenth for what is too small to name (line buffers, zlib)."""
    out = _output_size(im.width, im.height, max_dimension, square=crop in ("square", "face"))
    resample = _RESAMPLE_BYTES_PER_OUTPUT_PIXEL * out[0] * out[1]
    return (_decoded_cost(im, out, crop) + resample) * 17 // 16


def _decoded_cost(im: Image.Image, out: tuple[int, int], crop: str | None) -> int:
    """The decoded pixels (at the draft scale for a JPEG), their working copies and the
    decoder's buffers. Checked against the peak RSS of preparing 24-megapixel files of each
    format and mode: every estimate was at or above it (a progressive 4:2:0 JPEG about twice)."""
    transparency = "transparency" in im.info
    if im.format != "JPEG":
        per_pixel = (
            _color.pixel_bytes(im.mode)
            + _color.working_bytes_per_pixel(im.mode, transparency=transparency)
            + _DECODER_BYTES_PER_PIXEL.get(im.format or "", 0)
            # Face framing turns the working pixels upright before it crops: one more copy.
            + (_color.pixel_bytes(im.mode) if crop == "face" else 0)
        )
        return im.width * im.height * per_pixel
    request = (
        _face_draft_request(im.width, im.height, max(out))
        if crop == "face"
        else _draft_request(im.width, im.height, out, crop == "square")
    )
    reduction = _draft_reduction(im.size, request)
    decoded = math.ceil(im.width / reduction) * math.ceil(im.height / reduction)
    mode = "RGB" if im.mode == "YCbCr" else im.mode
    per_decoded_pixel = _color.pixel_bytes(mode) + _color.working_bytes_per_pixel(
        mode, transparency=transparency
    )
    # A progressive JPEG is decoded from a coefficient buffer covering the full-size image,
    # whatever the draft scale: two bytes per sample, at most one sample per band per pixel.
    coefficients = 2 * len(im.getbands()) * im.width * im.height if _progressive(im) else 0
    # Face framing turns the decoded pixels upright before it crops: one more copy.
    upright_copy = decoded * _color.pixel_bytes(mode) if crop == "face" else 0
    return decoded * per_decoded_pixel + coefficients + upright_copy


def _progressive(im: Image.Image) -> bool:
    return bool(im.info.get("progressive") or im.info.get("progression"))


def _whole(size: tuple[int, int]) -> tuple[float, float, float, float]:
    return 0.0, 0.0, float(size[0]), float(size[1])


def _centre_square(size: tuple[int, int]) -> tuple[float, float, float, float]:
    # Fractional edges keep the square exactly centred, so cropping commutes with the
    # orientation flip applied afterwards.
    width, height = size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def _apply_orientation(im: Image.Image, orientation: int) -> Image.Image:
    # Applied last, to the small image: cropping a centred square and resampling commute with
    # the eight flips and rotations, and transposing 648 pixels is cheaper than 6000.
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


def _encode_within(im: Image.Image, max_bytes: int) -> bytes:
    # Copied info (EXIF, ICC, comments) rides along through resize and transpose, and the JPEG
    # encoder writes a comment from it; an empty dict guarantees nothing but pixels goes out.
    im.info = {}
    size = 0
    for quality in QUALITIES:
        buffer = BytesIO()
        im.save(buffer, "JPEG", quality=quality, optimize=True)
        size = buffer.tell()
        if size <= max_bytes:
            return buffer.getvalue()
    raise ImageError(
        f"the photo does not fit the upload limit: at {im.width}x{im.height} and JPEG quality "
        f"{QUALITIES[-1]} it is {size:,} bytes, over max_bytes ({max_bytes:,}); raise max_bytes "
        "or lower max_dimension"
    )


# Reasons, in words for the person who dropped the file.


def _is_heif(data: bytes) -> bool:
    """ISO base media file with a HEIF brand (the box header is size, b"ftyp", major brand)."""
    if data[4:8] != b"ftyp":
        return False
    box_end = min(len(data), int.from_bytes(data[:4], "big") or len(data))
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, box_end - 3, 4)]
    return any(b in _HEIF_BRANDS for b in brands) and b"avif" not in brands


# Why an image file photosync recognises is still refused, and what to save instead. AVIF,
# JPEG 2000 and PSD land here only when Pillow could not open them: built without libavif
# or OpenJPEG (PIL.features), or a file damaged from its first bytes.
_WHY_REFUSED = {
    "a Windows icon (ICO) image": "which holds small icons, not a photo; save the photo "
    "itself as JPEG or PNG",
    "an AVIF image": "which the Pillow installed here cannot read (built without AVIF "
    "support) or which is damaged; run pip install -U pillow, or save the photo as JPEG",
    "a JPEG 2000 image": "which the Pillow installed here cannot read (built without "
    "OpenJPEG) or which is damaged; run pip install -U pillow, or save the photo as JPEG",
    "a Photoshop (PSD) image": "whose flattened image could not be read (damaged, or saved "
    "without a composite image); save it from Photoshop as JPEG or PNG",
    "a PostScript (EPS) image": "which photosync never opens (reading one runs a program); "
    "save it as JPEG or PNG",
    "an SVG drawing": "a drawing, not a photo; export it as PNG at 648 pixels or more",
}


def _unrecognised(data: bytes) -> str:
    kind = _describe_content(data)
    if kind in _WHY_REFUSED:
        return f"{kind}, {_WHY_REFUSED[kind]}"
    if kind.endswith(" image"):
        return f"{kind}, which photosync cannot use; save it as JPEG or PNG"
    return f"not an image (the file's content is {kind}); save it as JPEG or PNG"


def _describe_content(data: bytes) -> str:
    head = data[:1024]
    known = {
        b"%PDF": "a PDF document",
        b"PK\x03\x04": "a ZIP archive or an Office document",
        b"8BPS": "a Photoshop (PSD) image",
        b"\x00\x00\x01\x00": "a Windows icon (ICO) image",
        b"Rar!": "a RAR archive",
        b"\x00\x00\x00\x0cjP  \r\n\x87\n": "a JPEG 2000 image",
        b"\xff\x4f\xff\x51": "a JPEG 2000 image",
        b"%!PS": "a PostScript (EPS) image",
        b"\xc5\xd0\xd3\xc6": "a PostScript (EPS) image",
    }
    for magic, kind in known.items():
        if head.startswith(magic):
            return kind
    if head[4:8] == b"ftyp" and b"avif" in head[8:64]:
        return "an AVIF image"
    if b"<svg" in head.lower():
        return "an SVG drawing"
    if _looks_like_text(head):
        return "text"
    return "not in any image format photosync knows"


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        # Incremental, so a multi-byte character cut at the 1 KB boundary is not an error.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _too_large(detail: str) -> str:
    return (
        f"the image is too large to process safely ({detail}; the limit is "
        f"{MAX_PIXELS // 1_000_000} megapixels); save a smaller copy, e.g. 4000 pixels wide"
    )


def _bomb(exc: BaseException) -> str:
    # Pillow's words ("Image size (N pixels) exceeds limit of M pixels, could be decompression
    # bomb DOS attack.") up to the comma: the sizes are what the helpdesk can act on.
    detail = " ".join(str(exc).split(",")[0].split())[:120] or "Pillow's decompression-bomb check"
    return (
        f"the image is too large to process safely ({detail}); save a smaller copy, "
        "e.g. 4000 pixels wide"
    )


def _damaged(exc: BaseException) -> str:
    detail = " ".join(str(exc).split())[:120] or type(exc).__name__
    return f"the image is damaged or incomplete ({detail}); copy the original photo again"
