"""Quality notes on a photo as it will be uploaded: the words a person reads in the
ledger, `photosync runs show`, the reports and the preview (README, "Quality notes").

The measures are taken on the pixels people will see (the prepared image), in the face
when one is known, else over the whole picture, resampled to MEASURE_SIDE pixels so that
the thresholds mean the same at every resolution. Pillow alone: these notes are made with
or without the `face` extra.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageFilter, ImageStat

from reconciler.faces import framing
from reconciler.faces.framing import Box

MEASURE_SIDE = 128

# Sharpness: the variance of the Laplacian of the grey pixels, at MEASURE_SIDE. A sharp
# face measures 290 to 400 (tests/data/astronaut.png at several sizes), the same face under
# a Gaussian blur of 1 % of its height about 145, of 2 to 4 % 120 to 135 (the face's own
# shapes keep it above 100): under 160 is "blurred".
BLUR_THRESHOLD = 160.0
# Mean grey level (0-255) of the face (or the picture): under 60 is "too dark", over 200
# "too bright" (a well-exposed face measures 110 to 170).
DARK_THRESHOLD = 60.0
BRIGHT_THRESHOLD = 200.0

NO_FACE = "no face found"

# The 3x3 Laplacian; the offset keeps its negative half inside Pillow's 0-255 range.
_LAPLACIAN = ImageFilter.Kernel((3, 3), (0, 1, 0, 1, -4, 1, 0, 1, 0), scale=1, offset=128)


def face_notes(faces: Sequence[Box], size: tuple[float, float]) -> list[str]:
    """What the detector's findings mean for a profile photo of `size`."""
    if not faces:
        return [NO_FACE]
    notes = []
    if len(faces) > 1:
        notes.append(f"several faces ({len(faces)}); the largest was framed")
    face = framing.largest(faces)
    assert face is not None
    if framing.is_small(face, size):
        share = face.height / min(size)
        notes.append(
            f"face too small ({share:.0%} of the frame, under {framing.SMALL_FACE:.0%}); "
            "a closer photo will look sharper"
        )
    return notes


def usable_faces(faces: Sequence[Box], size: tuple[float, float]) -> int:
    """How many faces are large enough to frame (require_face wants exactly one)."""
    return sum(1 for face in faces if not framing.is_small(face, size))


def picture_notes(image: Image.Image, face: Box | None = None) -> list[str]:
    """Blur and exposure of `image` (upright, as uploaded), measured in `face` if given."""
    region = image.crop(face.as_tuple()) if face else image
    if region.width < 2 or region.height < 2:
        region = image
    grey = region.convert("L").resize((MEASURE_SIDE, MEASURE_SIDE), Image.Resampling.BOX)
    notes = []
    sharpness = ImageStat.Stat(grey.filter(_LAPLACIAN)).var[0]
    if sharpness < BLUR_THRESHOLD:
        notes.append(f"blurred (sharpness {sharpness:.0f}, under {BLUR_THRESHOLD:.0f})")
    brightness = ImageStat.Stat(grey).mean[0]
    if brightness < DARK_THRESHOLD:
        notes.append(f"too dark (brightness {brightness:.0f} of 255, under {DARK_THRESHOLD:.0f})")
    elif brightness > BRIGHT_THRESHOLD:
        notes.append(
            f"too bright (brightness {brightness:.0f} of 255, over {BRIGHT_THRESHOLD:.0f})"
        )
    return notes
