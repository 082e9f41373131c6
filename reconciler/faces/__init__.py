"""Faces: find them, frame a profile photo around one, and say what is wrong with a photo.

- framing: the pure geometry of the square around a face;
- detect: OpenCV's frontal-face cascade (the optional `face` extra);
- quality: the notes recorded per upload (no face, several, too small, blurred, exposure).
"""

from __future__ import annotations

from reconciler.faces.detect import available

INSTALL_HINT = "pip install 'entra-photosync[face]'"

__all__ = ["INSTALL_HINT", "available"]
