"""Where to cut the square for a face: pure geometry, no pixels (README, "Photos as people
will see them").

Teams, Outlook and SharePoint show a profile photo in the circle inscribed in the square we
upload. The square is placed so that the face is centred horizontally, the eye line lies at
EYE_LINE of the side from the top, and the side is HEAD_SIDES face heights: enough room that
the circle holds the whole head (hair included) and the top of the shoulders.

All coordinates are in pixels of the upright image, as floats: the resampler takes
fractional boxes, so nothing is rounded until the pixels are cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The square's side in face heights. A detector's face box runs from the brows' top to just
# under the mouth; the head reaches about 0.35 box heights above it and the chin 0.15 below.
# At 2.5 the top of the head, 0.75 box heights above the eyes, sits 0.25 box heights inside
# the square, where the inscribed circle is already wider than the head.
HEAD_SIDES = 2.5

# The eye line, as a fraction of the square's side from its top: the portrait convention
# that leaves headroom above and shoulders below.
EYE_LINE = 0.40

# Where the eyes lie in a face box, as a fraction of its height from its top (frontal-face
# detectors' boxes; measured on tests/data/astronaut.png).
EYES_IN_FACE_BOX = 0.40

# A face whose box is shorter than this fraction of the photo's shorter side is "too small":
# framing it means enlarging a few dozen pixels into the whole picture.
SMALL_FACE = 0.15


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned rectangle: left, top, width, height."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def centre(self) -> tuple[float, float]:
        return self.left + self.width / 2, self.top + self.height / 2

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, factor: float) -> Box:
        return Box(self.left * factor, self.top * factor, self.width * factor, self.height * factor)

    def intersection(self, width: float, height: float) -> Box:
        """The part of this box inside an image of `width` x `height`."""
        left, top = max(0.0, self.left), max(0.0, self.top)
        right, bottom = min(width, self.right), min(height, self.bottom)
        return Box(left, top, max(0.0, right - left), max(0.0, bottom - top))

    def as_tuple(self) -> tuple[float, float, float, float]:
        """(left, top, right, bottom), as Pillow takes a box."""
        return self.left, self.top, self.right, self.bottom


def largest(faces: Sequence[Box]) -> Box | None:
    """The face to frame when there are several: the largest (the person the photo is of;
    the others are in the background)."""
    return max(faces, key=lambda face: face.area, default=None)


def face_square(size: tuple[float, float], face: Box, eye_y: float | None = None) -> Box:
    """The square to upload for `face` in an image of `size`.

    `eye_y` is the eye line when the detector gives one, else it is estimated from the box.
    The square is moved back inside the image where it sticks out, which shifts the face
    off-centre only as far as the image's edge forces; it extends past an edge (to be
    padded with the edge colour) only where it is larger than the image itself.
    """
    width, height = size
    side = HEAD_SIDES * face.height
    eyes = face.top + EYES_IN_FACE_BOX * face.height if eye_y is None else eye_y
    centre_x, _ = face.centre
    left = _fit(centre_x - side / 2, side, width)
    top = _fit(eyes - EYE_LINE * side, side, height)
    return Box(left, top, side, side)


def centre_square(size: tuple[float, float]) -> Box:
    """The largest centred square: what crop = "square" cuts, and "face" when there is none."""
    width, height = size
    side = min(width, height)
    return Box((width - side) / 2, (height - side) / 2, side, side)


def is_small(face: Box, size: tuple[float, float]) -> bool:
    return face.height < SMALL_FACE * min(size)


def _fit(start: float, side: float, extent: float) -> float:
    """Where a span of `side` starting at `start` should start in [0, extent]: moved inside
    when it fits, else covering the whole extent, with the overhang where `start` put it."""
    if side <= extent:
        return min(max(start, 0.0), extent - side)
    return min(max(start, extent - side), 0.0)
