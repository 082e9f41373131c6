"""Cut a framing square out of a picture, padding with the edge colour where it must."""

from __future__ import annotations

from PIL import Image

from reconciler.faces.framing import Box


def cut_square(image: Image.Image, square: Box, side: int) -> Image.Image:
    """The part of `image` under `square`, resampled to `side` x `side`.

    Where the square reaches past the image (framing.face_square lets it only when the
    square is larger than the image), the missing strip repeats the nearest edge row or
    column: a plain studio background continues as itself, which a flat fill would not.
    """
    inside = square.intersection(image.width, image.height)
    scale = side / square.width
    pad_left = min(side - 1, max(0, round((inside.left - square.left) * scale)))
    pad_top = min(side - 1, max(0, round((inside.top - square.top) * scale)))
    width = max(1, min(side - pad_left, round(inside.width * scale)))
    height = max(1, min(side - pad_top, round(inside.height * scale)))
    region = image.resize(
        (width, height), Image.Resampling.LANCZOS, box=inside.as_tuple(), reducing_gap=3.0
    )
    if region.size == (side, side):
        return region
    canvas = Image.new(image.mode, (side, side))
    canvas.paste(region, (pad_left, pad_top))
    pad_right = side - pad_left - width
    pad_bottom = side - pad_top - height
    # Columns first, then rows over the full width, so the corners take the corner colour.
    if pad_left:
        canvas.paste(region.crop((0, 0, 1, height)).resize((pad_left, height)), (0, pad_top))
    if pad_right:
        edge = region.crop((width - 1, 0, width, height)).resize((pad_right, height))
        canvas.paste(edge, (pad_left + width, pad_top))
    if pad_top:
        canvas.paste(canvas.crop((0, pad_top, side, pad_top + 1)).resize((side, pad_top)), (0, 0))
    if pad_bottom:
        row = pad_top + height - 1
        edge = canvas.crop((0, row, side, row + 1)).resize((side, pad_bottom))
        canvas.paste(edge, (0, pad_top + height))
    return canvas
