"""Make the README's before/after pair from tests/data/astronaut.png.

A portrait HR shot (the astronaut near the top of a tall frame) prepared as a run would
prepare it with crop = "square" (before) and crop = "face" (after), each shown as Teams and
Outlook show a profile photo: in a circle, here 240 pixels wide on white.

    .venv/bin/python tests/data/make_readme_pair.py
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from reconciler import images

HERE = Path(__file__).parent
OUT = HERE.parent.parent / "docs" / "images"
SIDE = 240


def portrait() -> bytes:
    with Image.open(HERE / "astronaut.png") as im:
        person = im.convert("RGB").resize((1024, 1024), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (1200, 1800), (214, 206, 200))
    canvas.paste(person, (120, 60))
    buffer = io.BytesIO()
    canvas.save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def in_circle(jpeg: bytes) -> Image.Image:
    with Image.open(io.BytesIO(jpeg)) as im:
        photo = im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    mask = Image.new("L", (SIDE * 4, SIDE * 4), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, SIDE * 4 - 1, SIDE * 4 - 1), fill=255)
    shown = Image.new("RGB", (SIDE, SIDE), (255, 255, 255))
    shown.paste(photo, (0, 0), mask.resize((SIDE, SIDE), Image.Resampling.LANCZOS))
    return shown


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    data = portrait()
    for name, crop in (("face-before.png", "square"), ("face-after.png", "face")):
        in_circle(images.prepare_bytes(data, crop=crop).data).save(OUT / name, optimize=True)
        print(OUT / name)


if __name__ == "__main__":
    main()
