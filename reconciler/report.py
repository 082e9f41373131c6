"""The audit report of files that have not landed: table, CSV, JSON and one self-contained
HTML page. Built from the ledger alone: no Graph call. The CSV and JSON formats are stable
and documented in the README ("Report formats"); tests hold the two together.

One word differs from the rest of the CLI on purpose: here `reason` is the category
(unmatched, ambiguous...), as the interface contract fixes it for this report, and the
sentence is `detail`; `status` and `runs` call the category `outcome` and the sentence
`reason`. The CSV written to a file starts with a UTF-8 byte order mark (cli/commands.py), which
Excel needs to read it as UTF-8."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from reconciler import images
from reconciler.errors import ImageError
from reconciler.names import one_line

# Stable field order of the CSV columns and JSON keys.
COLUMNS = (
    "file",
    "reason",
    "detail",
    "suggestions",
    "candidates",
    "ineligible_because",
    "image_error",
    "graph_error_code",
    "graph_error_message",
    "http_status",
    "attempts",
    "user",
    "first_seen",
    "last_attempt",
    "location",
    "path",
    "quality_notes",
)

# In the order a person should deal with them: what they can fix first, what waits last.
REASONS = (
    "unmatched",
    "ambiguous",
    "ineligible",
    "invalid",
    "failed",
    "deferred",
    "ignored",
    # A photo photosync set that `verify` found changed or removed outside photosync.
    "drifted",
)

# What each reason means and what to do, in words for the HR staff who read the HTML report.
EXPLANATIONS: dict[str, tuple[str, str]] = {
    "unmatched": (
        "Nobody in the directory has the name in the file name.",
        "Check the spelling against the person's name in Outlook or Teams (the suggestions "
        "help), then rename the file. A name that cannot be a file name goes in the "
        "overrides file.",
    ),
    "ambiguous": (
        "More than one person has this name, or two files are for the same person. "
        "photosync never guesses.",
        "Add the file to the overrides file with the right person's sign-in address, or "
        "remove the extra file.",
    ),
    "ineligible": (
        "The only person with this name has a disabled account or is a guest from another "
        "organisation, so they cannot get a photo here.",
        "Check it is the right person. If the account is enabled again the next run uploads "
        "the photo; otherwise delete the file.",
    ),
    "invalid": (
        "The file is not a photo photosync can use (not an image, damaged, too small or "
        "too large). It was moved to the failed folder.",
        "Save the photo again as a JPEG or PNG, at least 48 x 48 pixels, and put it in the inbox.",
    ),
    "failed": (
        "Microsoft Graph refused the upload or did not answer, or photosync could not read "
        "the file. The file stays in the inbox.",
        "Usually nothing: the next run tries again. If it keeps failing, give IT the error "
        "code and the sentence beside it, which says what that code means for this person "
        "('cannot be read': the file's permissions shut photosync out).",
    ),
    "deferred": (
        "The file was still changing when photosync looked; it may have been copying.",
        "Nothing: the next run takes it.",
    ),
    "ignored": (
        "Not a photo file: a shortcut (symbolic link) or a folder. photosync never follows "
        "links, so that it only ever sends photos that are really in the inbox.",
        "Put the photo file itself in the inbox, then delete the link or folder.",
    ),
}

NO_DETAIL = "—"


@dataclass(frozen=True)
class ReportRow:
    file: str
    reason: str  # one of REASONS
    detail: str  # the ledger's sentence about the last decision
    suggestions: list[str]  # unmatched: up to 3 similar names from the tenant
    candidates: list[str]  # ambiguous: the UPNs of the users the name could mean
    ineligible_because: str | None  # ineligible: disabled / guest / disabled and guest
    image_error: str | None  # invalid: what is wrong with the file
    graph_error_code: str | None  # failed: Graph's error code
    graph_error_message: str | None  # failed: Graph's message
    http_status: int | None  # failed: the last HTTP status, if Graph answered
    attempts: int | None  # failed: requests sent for the last upload
    user: str | None  # the user the file was matched to, when there was one
    first_seen: datetime | None
    last_attempt: datetime | None
    location: str  # inbox / failed
    path: str  # where the file is now
    # Notes on the photo as prepared for its last upload (reconciler/faces/quality.py).
    quality_notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("first_seen", "last_attempt"):
            value = data[key]
            data[key] = value.isoformat(timespec="seconds") if value else None
        for key in ("file", "detail", "path"):
            data[key] = one_line(data[key])  # a row per line, whatever a name holds
        return {key: data[key] for key in COLUMNS}

    @property
    def what(self) -> str:
        """The reason's own detail in one line, as the issue tracker asks for it."""
        if self.reason == "unmatched":
            if self.suggestions:
                return "did you mean " + " or ".join(self.suggestions) + "?"
            return "no similar name in the directory"
        if self.reason == "ambiguous":
            return "could be " + ", ".join(self.candidates) if self.candidates else self.detail
        if self.reason == "ineligible" and self.ineligible_because:
            return f"{self.user or 'the user'}: {self.ineligible_because} account"
        if self.reason == "invalid" and self.image_error:
            return self.image_error
        if self.reason == "failed" and (self.graph_error_code or self.graph_error_message):
            code = self.graph_error_code or (
                f"HTTP {self.http_status}" if self.http_status else "no answer"
            )
            return f"{code}: {self.graph_error_message or ''} ({self.attempts or 0} attempts)"
        if self.reason == "deferred":
            return NO_DETAIL
        return self.detail or NO_DETAIL


def to_json(rows: Sequence[ReportRow]) -> str:
    return json.dumps([row.as_dict() for row in rows], indent=2, ensure_ascii=False)


def to_csv(rows: Sequence[ReportRow]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        data = row.as_dict()
        data["suggestions"] = "; ".join(row.suggestions)
        data["candidates"] = "; ".join(row.candidates)
        data["quality_notes"] = "; ".join(row.quality_notes)
        writer.writerow(data)
    return buffer.getvalue()


def _date(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else NO_DETAIL


def to_table(rows: Sequence[ReportRow]) -> str:
    if not rows:
        return "Every file has landed."
    header = ("FILE", "REASON", "FIRST SEEN", "LAST ATTEMPT", "DETAIL")
    cells = [
        (one_line(r.file), r.reason, _date(r.first_seen), _date(r.last_attempt), _detail(r))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(4)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(line[:4], widths, strict=True)), line[4]])
        for line in [header, *cells]
    )


# --- HTML

THUMBNAIL_PIXELS = 96
HEADER_BAND = "#0b5394"  # the table header colour; the rendering test looks for it

# A grey head-and-shoulders: what a row shows when its file is gone or is no image at all.
PLACEHOLDER = "data:image/svg+xml;base64," + base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96">'
    b'<rect width="96" height="96" fill="#e3e3e3"/><circle cx="48" cy="36" r="18" '
    b'fill="#b5b5b5"/><rect x="18" y="60" width="60" height="36" rx="18" fill="#b5b5b5"/>'
    b"</svg>"
).decode("ascii")


def thumbnail(path: Path) -> str:
    """A small JPEG (or PNG, when the file is already that small) of the photo as a data URI;
    the placeholder when the file is missing or cannot be decoded. images.prepare already
    orients, flattens and downscales exactly as an upload would, so the page shows what
    Graph would get."""
    if path.is_symlink():
        return PLACEHOLDER  # photosync never follows links, not even for a thumbnail
    try:
        small = images.prepare(path, max_bytes=64 * 1024, max_dimension=THUMBNAIL_PIXELS)
    except ImageError:
        return PLACEHOLDER
    return f"data:{small.content_type};base64,{base64.b64encode(small.data).decode('ascii')}"


_STYLE = f"""
body {{ font: 15px/1.45 system-ui, "Segoe UI", Roboto, Arial, sans-serif; color: #1d1d1d;
  margin: 24px auto; max-width: 1100px; padding: 0 16px; }}
h1 {{ font-size: 24px; margin: 0 0 4px; }}
.meta {{ color: #555; margin: 0 0 20px; }}
section {{ margin: 0 0 28px; }}
h2 {{ font-size: 19px; margin: 0 0 6px; }}
.explain, .todo {{ margin: 2px 0; }}
.todo strong {{ color: #0b5394; }}
table {{ border-collapse: collapse; width: 100%; margin-top: 10px; table-layout: fixed; }}
col.photo {{ width: {THUMBNAIL_PIXELS + 24}px; }}
col.file {{ width: 26%; }}
col.date {{ width: 150px; }}
th {{ background: {HEADER_BAND}; color: #fff; text-align: left; padding: 10px 12px;
  font-weight: 600; }}
td {{ border-bottom: 1px solid #ddd; padding: 8px 12px; vertical-align: top;
  overflow-wrap: anywhere; }}
td.photo img {{ width: {THUMBNAIL_PIXELS}px; height: {THUMBNAIL_PIXELS}px; object-fit: cover;
  border-radius: 6px; display: block; }}
.file {{ font-weight: 600; }}
.user {{ color: #555; }}
ul {{ margin: 4px 0 0; padding-left: 18px; }}
.date {{ color: #444; }}
.notes {{ color: #8a5a00; margin-top: 4px; }}
"""


def _detail(row: ReportRow) -> str:
    """The table's DETAIL cell: the reason's detail, then the photo's quality notes."""
    notes = f" [photo: {'; '.join(row.quality_notes)}]" if row.quality_notes else ""
    return one_line(row.what + notes)


def _notes_html(row: ReportRow) -> str:
    if not row.quality_notes:
        return ""
    return f'<div class="notes">Photo: {html.escape("; ".join(row.quality_notes))}</div>'


def _what_html(row: ReportRow) -> str:
    esc = html.escape
    if row.reason == "unmatched" and row.suggestions:
        items = "".join(f"<li>{esc(name)}</li>" for name in row.suggestions)
        return f"Did you mean:<ul>{items}</ul>"
    if row.reason == "ambiguous" and len(row.candidates) > 1:
        items = "".join(f"<li>{esc(upn)}</li>" for upn in row.candidates)
        return f"Could be any of:<ul>{items}</ul>"
    return esc(row.what)


def _row_html(row: ReportRow, thumbnail_of: Callable[[Path], str]) -> str:
    esc = html.escape
    user = f'<div class="user">{esc(row.user)}</div>' if row.user else ""
    # An ignored entry is a link or a folder: reading it would follow the link.
    picture = PLACEHOLDER if row.reason == "ignored" else thumbnail_of(Path(row.path))
    return (
        "<tr>"
        f'<td class="photo"><img src="{picture}" alt="photo in '
        f'{esc(row.file)}"></td>'
        f'<td><div class="file">{esc(row.file)}</div>{user}</td>'
        f"<td>{_what_html(row)}{_notes_html(row)}</td>"
        f'<td class="date">{_date(row.first_seen)}</td>'
        f'<td class="date">{_date(row.last_attempt)}</td>'
        "</tr>"
    )


def to_html(
    rows: Sequence[ReportRow],
    generated_at: datetime,
    thumbnail_of: Callable[[Path], str] = thumbnail,
) -> str:
    """One file an HR person can open and mail around: inline CSS, photos as data URIs, and
    a Content-Security-Policy that forbids the page any network fetch."""
    sections = []
    for reason in REASONS:
        group = [r for r in rows if r.reason == reason]
        if not group:
            continue
        meaning, todo = EXPLANATIONS[reason]
        count = f"{len(group)} file{'s' if len(group) != 1 else ''}"
        body = "".join(_row_html(r, thumbnail_of) for r in group)
        sections.append(
            f'<section id="{reason}"><h2>{reason.capitalize()}: {count}</h2>'
            f'<p class="explain">{html.escape(meaning)}</p>'
            f'<p class="todo"><strong>What to do:</strong> {html.escape(todo)}</p>'
            '<table><colgroup><col class="photo"><col class="file"><col>'
            '<col class="date"><col class="date"></colgroup>'
            "<thead><tr><th>Photo</th><th>File</th><th>Details</th>"
            "<th>First seen (UTC)</th><th>Last attempt (UTC)</th></tr></thead>"
            f"<tbody>{body}</tbody></table></section>"
        )
    summary = (
        f"{len(rows)} file{'s' if len(rows) != 1 else ''} not uploaded yet"
        if rows
        else "Every file has landed."
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>photosync: photos not uploaded yet</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>Photos not uploaded yet</h1>"
        f'<p class="meta">{summary}; report made {_date(generated_at)} from the photosync '
        "ledger.</p>"
        f"{''.join(sections)}</body></html>\n"
    )
