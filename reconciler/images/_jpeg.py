"""JPEG at the marker level, for reconciler.images (private to it).

A JPEG file is a chain of marker segments. Only some of them describe the picture (tables,
frame, scans); the rest are metadata that a camera or an editor put there: EXIF (with GPS),
XMP, Photoshop/IPTC, comments, ICC profiles, MPF preview images appended after the end. Keeping
only the segments on an allow-list (`cleaned`) leaves the compressed picture untouched, so it
decodes to the same pixels with no generation loss, and costs a byte scan instead of a decode
and an encode. It is an allow-list, not a deny-list, because metadata also hides where a
deny-list does not look: a JFIF thumbnail, bytes after a header, an unknown segment (see
docs/reliability.md).

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


# A progressive JPEG has about ten scans, one optimised by mozjpeg a few dozen. Each scan is a
# pass over the whole image, and one can be a few bytes (a single end-of-band run), so a small
# crafted file with thousands of them takes minutes to decode: a decompression bomb in time.
MAX_SCANS = 100


def scan_count(layout: Layout) -> int:
    return sum(1 for s in layout.segments if s.marker == SOS)


def frame_precision(data: bytes, layout: Layout) -> int | None:
    """Bits per sample of the frame (8 for everything a browser shows; 12 exists)."""
    frame = next((s for s in layout.segments if s.marker in _FRAMES), None)
    if frame is None or frame.start + 4 >= frame.end:
        return None
    return data[frame.start + 4]


# The allow-list: what may pass through untouched. Tables, frame, restart interval, scans,
# restart markers and the start and end markers carry the picture and nothing else (given
# their lengths are exact, which `_tables_are_tight` checks); every other segment is dropped.
DQT = 0xDB
DHT = 0xC4
DRI = 0xDD
_RESTARTS = frozenset(range(0xD0, 0xD8))
_PICTURE = frozenset({SOI, EOI, SOS, DQT, DHT, DRI, *_FRAMES, *_RESTARTS})

# A JFIF header with no thumbnail: b"JFIF\0", version (2), units (1), densities (2 + 2), and a
# 0x0 thumbnail. The header matters to decoding (it says "these three components are YCbCr"),
# so it is kept, rebuilt to exactly this length so nothing can ride along after it.
_JFIF_ID = b"JFIF\x00"
_JFIF_LENGTH = 14
_ADOBE_ID = b"Adobe"
_ADOBE_LENGTH = 12  # b"Adobe", version, flags0, flags1, transform: shorter ones are ignored

_RGB_COMPONENT_IDS = (ord("R"), ord("G"), ord("B"))


def cleaned(data: bytes, layout: Layout) -> bytes | None:
    """The JPEG with only allow-listed segments and nothing after EOI: the same pixels, and no
    byte that could carry metadata. None when dropping what is not allow-listed would change
    how the picture decodes, or a picture segment has room for more than the picture (an
    over-long table, a table no scan uses): the caller must re-encode instead.
    """
    frame = _frame(data, layout)
    if frame is None or not _tables_are_tight(data, layout, frame):
        return None
    jfif = _canonical_jfif(data, layout)
    adobe_transform = _adobe_transform(data, layout)
    if adobe_transform is not None and not _adobe_is_redundant(
        frame, adobe_transform, jfif_kept=jfif is not None
    ):
        return None
    parts = [data[0:2]]  # SOI
    if jfif is not None:
        parts.append(jfif)
    parts += [data[s.start : s.end] for s in layout.segments[1:] if s.marker in _PICTURE]
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class _Frame:
    component_ids: tuple[int, ...]
    quant_table_of: dict[int, int]  # component id -> quantisation table id


def _frame(data: bytes, layout: Layout) -> _Frame | None:
    """The frame header, when it is exactly as long as its components say (libjpeg rejects
    any other length, so a longer one cannot be a picture we would pass through)."""
    segment = next((s for s in layout.segments if s.marker in _FRAMES), None)
    if segment is None:
        return None
    body = data[segment.start + 4 : segment.end]
    if len(body) < 6 or len(body) != 6 + 3 * body[5]:
        return None
    components = [body[6 + 3 * i : 9 + 3 * i] for i in range(body[5])]
    return _Frame(tuple(c[0] for c in components), {c[0]: c[2] for c in components})


def _canonical_jfif(data: bytes, layout: Layout) -> bytes | None:
    """The first JFIF APP0 rebuilt without thumbnail or extra bytes, or None if there is none
    (a decoder ignores a JFIF segment shorter than the header, so it counts as none)."""
    for segment in (s for s in layout.segments if s.marker == APP0):
        body = data[segment.start + 4 : segment.end]
        if len(body) >= _JFIF_LENGTH and body.startswith(_JFIF_ID):
            header = body[: _JFIF_LENGTH - 2] + b"\x00\x00"
            return b"\xff\xe0" + (_JFIF_LENGTH + 2).to_bytes(2, "big") + header
    return None


def _adobe_transform(data: bytes, layout: Layout) -> int | None:
    """The colour transform of the last Adobe APP14 segment (as libjpeg reads it), or None."""
    transform = None
    for segment in (s for s in layout.segments if s.marker == APP14):
        body = data[segment.start + 4 : segment.end]
        if len(body) >= _ADOBE_LENGTH and body.startswith(_ADOBE_ID):
            transform = body[11]
    return transform


def _adobe_is_redundant(frame: _Frame, transform: int, *, jfif_kept: bool) -> bool:
    """Whether the decoder reads the components in the same colour space without the Adobe
    segment. It decides, for three components: JFIF present means YCbCr; else Adobe transform
    0 means RGB and anything else YCbCr; else component ids "R", "G", "B" mean RGB and anything
    else YCbCr. One component is grey whatever Adobe says; four (CMYK/YCCK) never passes."""
    components = len(frame.component_ids)
    if components == 1:
        return True
    if components != 3:
        return False
    if jfif_kept:
        return True
    with_adobe = "RGB" if transform == 0 else "YCbCr"
    without = "RGB" if frame.component_ids == _RGB_COMPONENT_IDS else "YCbCr"
    return with_adobe == without


def _tables_are_tight(data: bytes, layout: Layout, frame: _Frame) -> bool:
    """Every DQT and DHT segment holds whole tables and nothing more, every table it defines
    is used by a later scan, and every SOS and DRI header is exactly as long as it says.

    Without this an allow-listed segment could still carry a payload: bytes after the last
    table, or a table no scan reads (its 64 to 256 entries are free for anything).
    """
    # A definition is (segment index, position in the segment): one segment may define
    # several tables, and each must be read by a scan before it is replaced.
    current: dict[tuple[str, int], tuple[int, int]] = {}  # (kind, table id) -> definition
    defined: set[tuple[int, int]] = set()
    used: set[tuple[int, int]] = set()
    for index, segment in enumerate(layout.segments):
        # An SOS segment runs on through its entropy-coded data; only its header is read.
        body = b"" if segment.marker == SOS else data[segment.start + 4 : segment.end]
        if segment.marker in (DQT, DHT):
            keys = _quant_table_keys(body) if segment.marker == DQT else _huffman_table_keys(body)
            if keys is None:
                return False
            for position, key in enumerate(keys):
                current[key] = (index, position)
                defined.add((index, position))
        elif segment.marker == DRI and len(body) != 2:
            return False
        elif segment.marker == SOS:
            references = _scan_references(data, segment, frame.quant_table_of)
            if references is None:
                return False
            used.update(current[key] for key in references if key in current)
    return defined <= used


def _quant_table_keys(body: bytes) -> list[tuple[str, int]] | None:
    keys, pos = [], 0
    while pos < len(body):
        precision, table = body[pos] >> 4, body[pos] & 0x0F
        if precision > 1 or table > 3:
            return None
        keys.append(("q", table))
        pos += 1 + 64 * (precision + 1)
    return keys if keys and pos == len(body) else None


def _huffman_table_keys(body: bytes) -> list[tuple[str, int]] | None:
    keys, pos = [], 0
    while pos < len(body):
        kind, table = body[pos] >> 4, body[pos] & 0x0F
        if kind > 1 or table > 3 or pos + 17 > len(body):
            return None
        keys.append(("ac" if kind else "dc", table))
        pos += 17 + sum(body[pos + 1 : pos + 17])
    return keys if keys and pos == len(body) else None


def _scan_references(
    data: bytes, segment: Segment, quant_of: dict[int, int]
) -> list[tuple[str, int]] | None:
    """The tables a scan reads: each component's quantisation table, its DC table when the
    scan codes DC (spectral start 0) and its AC table when it codes AC (spectral end > 0)."""
    length = int.from_bytes(data[segment.start + 2 : segment.start + 4], "big")
    header = data[segment.start + 4 : segment.start + 2 + length]
    if not header or len(header) != 4 + 2 * header[0]:
        return None
    count = header[0]
    spectral_start, spectral_end = header[1 + 2 * count], header[2 + 2 * count]
    references: list[tuple[str, int]] = []
    for i in range(count):
        component, tables = header[1 + 2 * i], header[2 + 2 * i]
        if component not in quant_of:
            return None
        references.append(("q", quant_of[component]))
        if spectral_start == 0:
            references.append(("dc", tables >> 4))
        if spectral_end > 0:
            references.append(("ac", tables & 0x0F))
    return references
