"""JPEG at the marker level, for reconciler.images (private to it).

A JPEG file is a chain of marker segments. Only some of them describe the picture (tables,
frame, scans); the rest are metadata that a camera or an editor put there: EXIF (with GPS),
XMP, Photoshop/IPTC, comments, ICC profiles, MPF preview images appended after the end. Dropping
metadata segments leaves the compressed picture untouched, so it decodes to the same pixels
with no generation loss, and costs a byte scan instead of a decode and an encode.

The walk also answers "is the compressed picture complete?": a baseline JPEG cut short and
padded with zeros decodes without complaint in libjpeg (zeros are valid Huffman codes), but its
scan never reaches the end-of-image marker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SOI = 0xD8
EOI = 0xD9
SOS = 0xDA
COM = 0xFE
APP0 = 0xE0
APP14 = 0xEE
APP15 = 0xEF

# Sequential and progressive Huffman-coded frames: what every browser and Graph's own thumbnail
# pipeline decode. Lossless, hierarchical and arithmetic-coded frames are legal JPEG but poorly
# supported, so such files are re-encoded rather than passed through.
PORTABLE_FRAMES = frozenset({0xC0, 0xC1, 0xC2})
_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # minus DHT, JPG, DAC

# Markers that stand alone, with no length field: TEM and the restart markers.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})

# Inside entropy-coded data a 0xFF byte is followed by 0x00 (a stuffed byte), by a restart
# marker, or by another 0xFF (fill). Anything else is the next real marker.
_NEXT_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class JpegStructureError(ValueError):
    """The marker chain is broken or ends before the end-of-image marker."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One marker and its payload; for SOS, the entropy-coded data that follows it too."""

    marker: int
    start: int  # offset of the marker's 0xFF
    end: int  # offset just past the segment


@dataclass(frozen=True, slots=True)
class Layout:
    """The primary image's segments from SOI to EOI, and what follows EOI."""

    segments: tuple[Segment, ...]
    end: int  # offset just past EOI
    trailing_bytes: int  # after EOI: MPF previews, gain maps, padding

    @property
    def frame_marker(self) -> int | None:
        return next((s.marker for s in self.segments if s.marker in _FRAMES), None)


def walk(data: bytes) -> Layout:
    """Segment the primary image. Raises JpegStructureError if it is malformed or incomplete."""
    if not data.startswith(b"\xff\xd8"):
        raise JpegStructureError("no JPEG start marker")
    segments = [Segment(SOI, 0, 2)]
    pos = 2
    size = len(data)
    while True:
        if pos >= size or data[pos] != 0xFF:
            raise _ended_early(pos, size, "a marker")
        while pos + 1 < size and data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos + 1 >= size:
            raise _ended_early(pos, size, "a marker")
        start, marker = pos, data[pos + 1]
        pos += 2
        if marker == EOI:
            segments.append(Segment(EOI, start, pos))
            return Layout(tuple(segments), pos, size - pos)
        if marker in _STANDALONE:
            segments.append(Segment(marker, start, pos))
            continue
        if pos + 2 > size:
            raise _ended_early(pos, size, "a segment length")
        end = pos + int.from_bytes(data[pos : pos + 2], "big")
        if end < pos + 2 or end > size:
            raise _ended_early(pos, size, "a segment")
        if marker == SOS:
            found = _NEXT_MARKER_IN_SCAN.search(data, end)
            if found is None:
                raise _ended_early(end, size, "the end of the image data")
            end = found.start()
        segments.append(Segment(marker, start, end))
        pos = end


def _ended_early(pos: int, size: int, what: str) -> JpegStructureError:
    if pos >= size - 1:
        return JpegStructureError(f"the file ends before {what}")
    return JpegStructureError(f"expected {what} at byte {pos}, found something else")


def frame_precision(data: bytes, layout: Layout) -> int | None:
    """Bits per sample of the frame (8 for everything a browser shows; 12 exists)."""
    frame = next((s for s in layout.segments if s.marker in _FRAMES), None)
    if frame is None or frame.start + 4 >= frame.end:
        return None
    return data[frame.start + 4]


def is_metadata(data: bytes, segment: Segment) -> bool:
    """True for segments that describe the photo rather than encode it.

    APP0 JFIF and APP14 Adobe stay: the first is the format's own header, and the second tells
    the decoder which colour transform the scans use, so dropping it could change the pixels.
    Every other APPn (EXIF, XMP, ICC, MPF, Photoshop/IPTC, maker data) and COM goes.
    """
    if segment.marker == COM:
        return True
    if not APP0 <= segment.marker <= APP15:
        return False
    payload = data[segment.start + 4 : segment.start + 10]
    if segment.marker == APP0:
        return not payload.startswith(b"JFIF\x00")
    if segment.marker == APP14:
        return not payload.startswith(b"Adobe")
    return True


def has_metadata(data: bytes, layout: Layout) -> bool:
    return layout.trailing_bytes > 0 or any(is_metadata(data, s) for s in layout.segments)


def strip_metadata(data: bytes, layout: Layout) -> bytes:
    """The same JPEG without metadata segments and without anything after EOI."""
    return b"".join(data[s.start : s.end] for s in layout.segments if not is_metadata(data, s))
