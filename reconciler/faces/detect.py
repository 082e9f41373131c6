"""Find frontal faces in a photo with OpenCV's Haar cascade (the `face` extra).

Why a Haar cascade and not a neural detector such as YuNet: the detector must come from a
package on PyPI, and no well-kept package there ships YuNet's model file (the ones that use
it download it at run time, which photosync must never do); opencv-python-headless 4.x ships
its trained cascades inside the wheel (`cv2.data`), under OpenCV's licence. The frontal-face
"alt2" cascade finds upright faces turned up to about 30 degrees, which is what a profile
photo is; a face in profile is reported as "no face found" and the photo is centre-cropped.

Detection runs on a greyscale copy at most DETECT_SIDE pixels long (384): a face of
framing.SMALL_FACE of a 3:2 photo's shorter side is then 38 pixels, which the cascade finds
(tests/test_faces.py places tests/data/astronaut.png at 13 % to 40 %). Smaller faces may be
missed: "no face found". The cascade is most of what face framing costs (see
bench/bench_images.py, face case).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from reconciler.faces.framing import Box

if TYPE_CHECKING:
    import numpy as np

# The longest side of the copy the cascade looks at (docs: at most 640).
DETECT_SIDE = 384
# Cascade parameters: each step scales the window by 20 % (10 % costs 40 % more time and
# found no more of the tests' usable faces); a face must be found by 3 overlapping windows,
# which is what keeps patterned walls, cats and coffee cups from counting (checked on
# scikit-image's sample photos). The smallest window (24 px, 9 % of a 3:2 copy's shorter
# side) is where most of the time goes: a smaller one would look for faces too small to
# frame, at nearly twice the cost.
_SCALE_STEP = 1.2
_NEIGHBOURS = 3
_MIN_FACE = 24
_CASCADE = "haarcascade_frontalface_alt2.xml"

_local = threading.local()


def available() -> bool:
    """True when OpenCV (the `face` extra) can be imported."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


def _classifier() -> Any:
    # A CascadeClassifier keeps scratch buffers between calls, so each upload thread gets
    # its own; loading one takes a few milliseconds, once per thread.
    classifier = getattr(_local, "classifier", None)
    if classifier is None:
        import cv2

        # Prepares run on the upload threads already; OpenCV's own thread pool on top of
        # them would only make the threads fight over the same cores.
        cv2.setNumThreads(1)
        classifier = cv2.CascadeClassifier(str(Path(cv2.__file__).parent / "data" / _CASCADE))
        if classifier.empty():
            raise RuntimeError(f"OpenCV's {_CASCADE} could not be loaded")
        _local.classifier = classifier
    return classifier


def faces_in(image: Image.Image) -> list[Box]:
    """The faces in `image` (upright pixels, any working mode), in its own coordinates,
    largest first."""
    import numpy

    scale = min(1.0, DETECT_SIDE / max(image.size))
    # Grey first (one byte a pixel for the rest), then a whole-factor box reduction (cheap,
    # and it averages sensor noise away), then the small rest.
    small = image.convert("L") if image.mode != "L" else image
    if scale < 1.0:
        factor = max(1, int(1 / scale) // 2)
        if factor > 1:
            small = small.reduce(factor)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = small.resize(size, Image.Resampling.BILINEAR)
    # Equalised, so that a dark or washed-out photo still shows the cascade its contrasts.
    grey: np.ndarray[Any, Any] = numpy.asarray(ImageOps.equalize(small))
    import cv2

    try:
        found = _classifier().detectMultiScale(
            grey,
            scaleFactor=_SCALE_STEP,
            minNeighbors=_NEIGHBOURS,
            minSize=(_MIN_FACE, _MIN_FACE),
        )
    except cv2.error as exc:
        # images.prepare_bytes turns a RuntimeError into the file's one-line reason.
        raise RuntimeError(f"face detection failed: {exc}") from exc
    back = 1.0 / scale
    boxes = [
        Box(float(x) * back, float(y) * back, float(w) * back, float(h) * back)
        for x, y, w, h in found
    ]
    return sorted(boxes, key=lambda box: box.area, reverse=True)
