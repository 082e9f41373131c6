"""`photosync preview`: a contact sheet of what the next reconcile would upload.

The plan is a dry run's (app.reconcile with dry_run=True: users refreshed as a dry run does,
no photo written, nothing recorded as done), and every photo is prepared by the function a
real run uses (app.prepare_options: images.prepare_bytes with the same crop, limits and
require_face), from one no-follow read of the file, as the executor reads it. So the sheet
shows each person as Teams and Outlook will: in a circle at 48 and 240 pixels, beside the
original with the part that was kept marked on it, with who it goes to (or why nobody) and
the quality notes.

Like the HTML report (reconciler/report.py) the page is one self-contained file: inline
styles, images as data URIs, a Content-Security-Policy that forbids every fetch, and every
name HTML-escaped.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

from reconciler import app, images
from reconciler.config import Settings
from reconciler.errors import ImageError
from reconciler.model import FileResult, Outcome, PreparedImage
from reconciler.names import one_line
from reconciler.scanner import NotAPlainFile, read_snapshot

# The circles as the Microsoft 365 apps draw them: the avatar beside a chat message or in a
# people list (48), and the profile card (240).
CIRCLES = (48, 240)
ORIGINAL_PIXELS = 320  # the longest side of the original beside the circles
CROP_COLOUR = "#e81123"  # the rectangle drawn on the original; the rendering test finds it
PAGE_BACKGROUND = "#f3f2f1"

# The order the sheet lists files in: what will be uploaded first, what waits last.
_ORDER = (
    Outcome.UPLOADED,
    Outcome.UNCHANGED,
    Outcome.UNMATCHED,
    Outcome.AMBIGUOUS,
    Outcome.INELIGIBLE,
    Outcome.INVALID,
    Outcome.FAILED,
    Outcome.DEFERRED,
)

_HEADLINE = {
    Outcome.UPLOADED: "will be uploaded",
    Outcome.UNCHANGED: "already uploaded, unchanged",
    Outcome.UNMATCHED: "no one in the directory has this name",
    Outcome.AMBIGUOUS: "more than one person could be meant",
    Outcome.INELIGIBLE: "this person cannot get a photo here",
    Outcome.INVALID: "cannot be used",
    Outcome.FAILED: "cannot be read",
    Outcome.DEFERRED: "still changing; the next run looks again",
}


@dataclass(frozen=True)
class Entry:
    """One file on the sheet."""

    file: str
    outcome: Outcome  # what the next reconcile would do with it
    reason: str
    user: str | None  # the matched user, when there is one
    quality_notes: tuple[str, ...] = ()
    image_error: str | None = None
    # The prepared photo (what Graph would get), its sha256, and the whole original,
    # upright, as JPEG.
    prepared: bytes | None = None
    sha256: str | None = None
    original: bytes | None = None
    # The part of the original that was kept, as fractions of its width and height:
    # left, top, width, height (may reach past 0..1 where the framing pads).
    crop: tuple[float, float, float, float] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "file": one_line(self.file),
            "outcome": self.outcome.value,
            "reason": one_line(self.reason),
            "user": self.user,
            "quality_notes": list(self.quality_notes),
            "image_error": self.image_error,
            # What the run would send: the sha256 the ledger records as uploaded_sha256.
            "sha256": self.sha256,
            "crop": list(self.crop) if self.crop else None,
        }


def collect(
    settings: Settings, *, client_factory: app.ClientFactory = app.build_client
) -> list[Entry]:
    """What the next reconcile would do with each file in the inbox, with its photos."""
    summary, plan = app.reconcile(settings, dry_run=True, client_factory=client_factory)
    predicted = {result.file: result for result in summary.results}
    prepare = app.prepare_options(settings).prepare
    entries = []
    for action in plan.actions:
        result = predicted.get(action.file.name)
        if result is None or result.outcome is Outcome.IGNORED:
            continue  # a link or a folder: never read, not a photo
        # A file still being written is not read: the next run looks at it again.
        reading = result.outcome is not Outcome.DEFERRED
        entries.append(_entry(action.file.path, result, prepare if reading else None))
    return sorted(entries, key=lambda e: (_ORDER.index(e.outcome), e.file))


def _entry(
    path: Path, result: FileResult, prepare: Callable[[bytes], PreparedImage] | None
) -> Entry:
    base = Entry(result.file, result.outcome, result.reason, result.user_label)
    if prepare is None:
        return base
    try:
        data = read_snapshot(path).data
    except (OSError, NotAPlainFile):
        return base
    try:
        prepared = prepare(data)
        original = images.prepare_bytes(data, max_dimension=ORIGINAL_PIXELS)
    except ImageError as exc:
        return dataclasses.replace(base, image_error=str(exc))
    return Entry(
        result.file,
        result.outcome,
        result.reason,
        result.user_label,
        quality_notes=prepared.quality_notes,
        prepared=prepared.data,
        sha256=prepared.sha256,
        original=original.data,
        crop=crop_fractions(prepared),
    )


def crop_fractions(prepared: PreparedImage) -> tuple[float, float, float, float]:
    """The kept part of the original as fractions of its upright size (the whole when the
    photo was not cropped)."""
    if prepared.crop_box is None:
        return 0.0, 0.0, 1.0, 1.0
    left, top, right, bottom = prepared.crop_box
    width, height = prepared.source_width, prepared.source_height
    return left / width, top / height, (right - left) / width, (bottom - top) / height


# --- HTML


def _data_uri(jpeg: bytes, longest: int) -> str:
    """A JPEG no larger than `longest` pixels, as a data URI: the page stays small."""
    with Image.open(io.BytesIO(jpeg)) as im:
        im.load()
        small = im.convert("RGB")
    small.thumbnail((longest, longest), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = f"""
body {{ font: 15px/1.45 system-ui, "Segoe UI", Roboto, Arial, sans-serif; color: #1d1d1d;
  background: {PAGE_BACKGROUND}; margin: 24px auto; max-width: 1100px; padding: 0 16px; }}
h1 {{ font-size: 24px; margin: 0 0 4px; }}
.meta {{ color: #555; margin: 0 0 20px; }}
article {{ display: flex; gap: 28px; align-items: center; background: #fff;
  border-radius: 8px; padding: 16px 20px; margin: 0 0 16px; }}
.circles {{ display: flex; gap: 20px; align-items: flex-end; flex: none; }}
img.circle {{ border-radius: 50%; object-fit: cover; display: block; }}
img.c48 {{ width: 48px; height: 48px; }}
img.c240 {{ width: 240px; height: 240px; }}
.original {{ position: relative; flex: none; line-height: 0; }}
.original img {{ display: block; max-width: {ORIGINAL_PIXELS}px; max-height: {ORIGINAL_PIXELS}px; }}
.crop {{ position: absolute; border: 2px solid {CROP_COLOUR}; box-sizing: border-box; }}
.info {{ flex: 1; min-width: 0; overflow-wrap: anywhere; }}
.file {{ font-weight: 600; }}
.what {{ margin-top: 4px; }}
.user {{ color: #0b5394; }}
.why {{ color: #555; }}
ul.notes {{ margin: 6px 0 0; padding-left: 18px; color: #8a5a00; }}
.none {{ color: #555; font-style: italic; }}
"""


def _photos_html(entry: Entry) -> str:
    esc = html.escape
    if entry.prepared is None or entry.original is None:
        what = entry.image_error or "no photo to show"
        return f'<div class="circles none">{esc(what)}</div>'
    circle = _data_uri(entry.prepared, max(CIRCLES))
    alt = esc(one_line(entry.file))
    circles = "".join(
        f'<img class="circle c{size}" src="{circle}" width="{size}" height="{size}" '
        f'alt="{alt} at {size} pixels">'
        for size in sorted(CIRCLES, reverse=True)
    )
    left, top, width, height = entry.crop or (0.0, 0.0, 1.0, 1.0)
    rectangle = (
        f'<div class="crop" style="left:{left:.2%};top:{top:.2%};'
        f'width:{width:.2%};height:{height:.2%}"></div>'
    )
    original = (
        f'<div class="original"><img src="{_data_uri(entry.original, ORIGINAL_PIXELS)}" '
        f'alt="original of {alt}">{rectangle}</div>'
    )
    return f'<div class="circles">{circles}</div>{original}'


def _entry_html(entry: Entry) -> str:
    esc = html.escape
    if entry.user:
        who = f'<span class="user">{esc(entry.user)}</span>'
    else:
        who = f'<span class="why">{esc(one_line(entry.reason))}</span>'
    headline = _HEADLINE.get(entry.outcome, entry.outcome.value)
    notes = "".join(f"<li>{esc(note)}</li>" for note in entry.quality_notes)
    notes_html = f'<ul class="notes">{notes}</ul>' if notes else ""
    error = (
        f'<div class="why">{esc(entry.image_error)}</div>'
        if entry.image_error and entry.outcome is not Outcome.INVALID
        else ""
    )
    return (
        f'<article class="{entry.outcome.value}">{_photos_html(entry)}'
        f'<div class="info"><div class="file">{esc(one_line(entry.file))}</div>'
        f'<div class="what">{esc(headline)}: {who}</div>{error}{notes_html}</div></article>'
    )


def to_html(entries: Sequence[Entry], generated_at: datetime) -> str:
    uploads = sum(1 for e in entries if e.outcome is Outcome.UPLOADED)
    summary = (
        f"{uploads} photo{'s' if uploads != 1 else ''} would be uploaded; "
        f"{len(entries)} file{'s' if len(entries) != 1 else ''} in the inbox"
    )
    body = "".join(_entry_html(e) for e in entries) or '<p class="none">The inbox is empty.</p>'
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>photosync: preview of the next run</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Photos as people will see them</h1>"
        f'<p class="meta">{summary}; preview made {generated_at:%Y-%m-%d %H:%M} UTC. Nothing '
        "has been uploaded.</p>"
        f"{body}</body></html>\n"
    )
