"""Pure value types shared by every layer. No I/O here."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

from reconciler import names

# User properties a file name may be matched against (the `match_on` setting).
MATCH_PROPERTIES: tuple[str, ...] = (
    "displayName",
    "userPrincipalName",
    "mail",
    "mailNickname",
    "employeeId",
)

# File suffixes HR staff use for photos: matching ignores them (in any case), and images
# accepts these formats. Content, not the suffix, decides whether a file really is one.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".heif"}
    # Still formats Pillow decodes too (docs: README, "Accepted formats"): AVIF, JPEG 2000
    # (.jp2 file, .j2k/.j2c codestream, .jpf/.jpx extended) and Photoshop's composite image.
    | {".avif", ".jp2", ".j2k", ".j2c", ".jpf", ".jpx", ".psd"}
)

# What photosync asks Graph for: the match properties plus what eligibility needs.
# accountEnabled, userType, mailNickname, employeeId, creationType and externalUserState are
# only returned when selected (docs/graph-behaviour.md, "Properties").
ELIGIBILITY_PROPERTIES: tuple[str, ...] = (
    "accountEnabled",
    "userType",
    "creationType",
    "externalUserState",
)
USER_SELECT: tuple[str, ...] = ("id", *MATCH_PROPERTIES, *ELIGIBILITY_PROPERTIES)


def _field_of(graph_property: str) -> str:
    """The User field, and users column (ledger/orm.py), that holds a Graph property: its
    name in snake_case."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", graph_property).lower()


# Graph property -> User field, for every property photosync selects: reading Graph's answers
# and writing and reading the ledger's users rows all go by this. A new property is named in
# one of the two lists above, then given a User field and a users column (and a migration).
USER_FIELDS: Mapping[str, str] = {p: _field_of(p) for p in USER_SELECT if p != "id"}

# Marks a B2B account's userPrincipalName, whatever its userType (cross-tenant
# synchronisation creates external *members*; docs/graph-behaviour.md, "External accounts").
EXTERNAL_UPN_MARK = "#EXT#"
# externalUserState values of an invited account; null for the tenant's own people.
_INVITED_STATES = frozenset({"pendingacceptance", "accepted"})


@dataclass(frozen=True, slots=True)
class User:
    """A tenant user, as much of it as photosync needs.

    account_enabled and user_type are None when Graph has not told us: never assume a user
    is enabled or a member (docs/graph-behaviour.md, "Delta items are patches").
    """

    id: str
    display_name: str | None = None
    user_principal_name: str | None = None
    mail: str | None = None
    mail_nickname: str | None = None
    employee_id: str | None = None
    account_enabled: bool | None = True
    user_type: str | None = "Member"
    creation_type: str | None = None
    external_user_state: str | None = None

    @property
    def is_external(self) -> bool:
        """A B2B account: invited, or synchronised from another tenant (#EXT# UPN)."""
        upn = (self.user_principal_name or "").upper()
        return (
            EXTERNAL_UPN_MARK in upn
            or (self.creation_type or "").lower() == "invitation"
            or (self.external_user_state or "").lower() in _INVITED_STATES
        )

    def ineligibility(self, *, include_external: bool = False) -> str | None:
        """Why this user may not receive a photo, naming the rule; None if eligible.

        Only enabled members of this tenant get photos: a guest's or external account's
        photo belongs to its home directory.
        """
        reasons = []
        if self.account_enabled is None:
            reasons.append("enabled state unknown (Graph has not said)")
        elif not self.account_enabled:
            reasons.append("disabled")
        if self.user_type is None:
            reasons.append("userType unknown (Graph has not said)")
        elif self.user_type != "Member":
            reasons.append(self.user_type.lower())
        if self.is_external and not include_external:
            reasons.append("external (B2B) account")
        return " and ".join(reasons) or None

    def is_eligible(self, *, include_external: bool = False) -> bool:
        return self.ineligibility(include_external=include_external) is None

    @property
    def label(self) -> str:
        """How a person recognises this user in a report line."""
        return self.user_principal_name or self.display_name or self.id

    def value_of(self, graph_property: str) -> str | None:
        """The value of one of MATCH_PROPERTIES, by its Graph name."""
        if graph_property not in MATCH_PROPERTIES:
            raise KeyError(graph_property)
        value: str | None = getattr(self, USER_FIELDS[graph_property])
        return value

    @classmethod
    def from_graph(cls, item: Mapping[str, Any]) -> User:
        """Build from a complete Graph user object (a listing or GET with USER_SELECT):
        a property that is missing or null is unset, and an unknown accountEnabled or
        userType stays unknown."""
        values = {field: item.get(name) for name, field in USER_FIELDS.items()}
        enabled = values["account_enabled"]
        values["account_enabled"] = None if enabled is None else bool(enabled)
        return cls(id=str(item["id"]), **values)


# The ledger builds a User from a users row positionally, in USER_FIELDS' order (faster than
# by keyword when it loads 100,000 users), so that order must be User's own after id.
if tuple(f.name for f in fields(User)) != ("id", *USER_FIELDS.values()):
    raise TypeError("User's fields after id must be USER_FIELDS' values, in their order")


@dataclass(frozen=True, slots=True)
class UserPatch:
    """One delta item for one user: its id and only the properties the item carried, by
    Graph name. Graph promises only "at least the changed properties", so a property that
    is absent is unchanged, never null (docs/graph-behaviour.md, "Delta items are patches")."""

    id: str
    properties: Mapping[str, Any]

    @property
    def is_complete(self) -> bool:
        """Carries every property photosync selects: enough to build a User on its own."""
        return all(p in self.properties for p in USER_SELECT if p != "id")


@dataclass(frozen=True, slots=True)
class UserChanges:
    """One delta round: users added or changed, ids removed, and where to resume next time."""

    upserted: tuple[UserPatch, ...]
    removed: tuple[str, ...]
    delta_link: str


@dataclass(frozen=True, slots=True)
class FileStat:
    """What os.stat says of a file: the stat-cache key."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    # Not part of the cache key (the ledger does not keep it, and a remounted share may
    # renumber it): the executor compares it to make sure it reads the file the scan saw.
    device: int = field(default=0, compare=False)

    def is_same_file(self, other: FileStat) -> bool:
        """The same file, unchanged: same device and inode, same size and mtime."""
        return (self.device, self.inode, self.size, self.mtime_ns) == (
            other.device,
            other.inode,
            other.size,
            other.mtime_ns,
        )


@dataclass(frozen=True, slots=True)
class InboxFile:
    """A file directly in the inbox, as the scanner observed it."""

    name: str
    path: Path
    stat: FileStat
    # None only for files deferred before hashing (still being written) or unreadable.
    sha256: str | None

    @property
    def key(self) -> str:
        """The path as the ledger stores it: escaped when the real one holds bytes that are
        not UTF-8 or control characters (reconciler/names.py); `path` stays the real one."""
        return names.shown(str(self.path))


@dataclass(frozen=True, slots=True)
class UnreadableFile:
    """A file the scan could not read, e.g. copied in with permissions that shut us out."""

    file: InboxFile
    error: str  # the operating system's words, e.g. "Permission denied"
    # An entry photosync never reads by rule (a symbolic link, a folder named like a
    # photo): reported `ignored` with `error` as its whole reason, and left where it is.
    ignored: bool = False


class ObservedInbox(Protocol):
    """What one scan of the inbox saw, as the ledger records it (scanner.ScanResult)."""

    @property
    def files(self) -> Sequence[InboxFile]: ...  # settled and hashed

    @property
    def deferred(self) -> Sequence[InboxFile]: ...  # too new, or changed while read

    @property
    def hashed(self) -> Sequence[InboxFile]: ...  # the subset of files read this time

    @property
    def unreadable(self) -> Sequence[UnreadableFile]: ...

    @property
    def started_ns(self) -> int: ...  # when the scan began: the hashes' timestamp


@dataclass(frozen=True, slots=True)
class RecordedFile:
    """What the ledger remembers of a file at this inbox path."""

    sha256: str | None
    # A user this exact content was successfully uploaded to from this file, if any: lets a
    # run finish a move that a crash interrupted without matching the name again.
    uploaded_to: User | None = None
    last_outcome: str | None = None  # the verdict of the last run that decided about it


@dataclass(frozen=True, slots=True)
class LedgerView:
    files: Mapping[str, RecordedFile]  # by path string, files still in the inbox
    last_upload_sha: Mapping[str, str]  # user id -> source sha256 of the last successful upload


@dataclass(frozen=True, slots=True)
class FailedUpload:
    """The latest upload of a file still in the inbox, which failed: the content it sent,
    and the user it was for."""

    source_sha256: str
    user: User


class Outcome(enum.StrEnum):
    """What happened to a file in one run. The values are the contract's words."""

    UPLOADED = "uploaded"
    UNCHANGED = "unchanged"
    UNMATCHED = "unmatched"
    AMBIGUOUS = "ambiguous"
    INELIGIBLE = "ineligible"
    INVALID = "invalid"
    FAILED = "failed"
    DEFERRED = "deferred"
    # Not a photo photosync may read (a link, a folder): reported, left alone, not a failure.
    IGNORED = "ignored"
    # Per user, for rollback, prune and verify (reconciler/undo.py): the photo before a
    # run put back; a photo removed; a change not made because someone else changed the
    # photo since; a photo found changed or removed outside photosync.
    RESTORED = "restored"
    REMOVED = "removed"
    SKIPPED = "skipped"
    DRIFTED = "drifted"


# Per-user outcomes of rollback, prune and verify: in --json only for those commands, or
# when a reconcile pruned, so a plain reconcile prints exactly the contract's keys.
UNDO_OUTCOMES = frozenset({Outcome.RESTORED, Outcome.REMOVED, Outcome.SKIPPED, Outcome.DRIFTED})

# Outcomes that make the run exit 1.
FAILS_RUN = frozenset({Outcome.FAILED, Outcome.INVALID})


class UploadStatus(enum.StrEnum):
    """Where one upload stands (the ledger's uploads.status; the values are stored)."""

    PENDING = "pending"  # the intent, recorded before the photo is sent
    SUCCEEDED = "succeeded"
    FAILED_TRANSIENT = "failed-transient"  # retry-failed sends it again
    FAILED_PERMANENT = "failed-permanent"  # only retry-failed --include-permanent does
    INTERRUPTED = "interrupted"  # an intent whose run died before its result was known


FAILED_STATUSES = frozenset({UploadStatus.FAILED_TRANSIENT, UploadStatus.FAILED_PERMANENT})
# An intent without a result: its write may or may not have reached Graph.
UNFINISHED_STATUSES = frozenset({UploadStatus.PENDING, UploadStatus.INTERRUPTED})


class FileLocation(enum.StrEnum):
    """Where a file that entered the inbox is now (the ledger's inbox_files.location)."""

    INBOX = "inbox"
    COMPLETED = "completed"  # uploaded (or unchanged) and moved to completed_dir
    FAILED = "failed"  # unusable and moved to failed_dir
    GONE = "gone"  # removed from the inbox by someone else


class WriteKind(enum.StrEnum):
    """What wrote a user's photo: an upload, or a change that is not one (the ledger's
    photo_changes.kind holds the last three)."""

    UPLOAD = "upload"
    ROLLBACK = "rollback"
    PRUNE = "prune"
    FIX = "fix"  # verify --fix


class ChangeStatus(enum.StrEnum):
    """Where one rollback, prune or fix stands (the ledger's photo_changes.status)."""

    PENDING = "pending"  # the intent, recorded before the photo is written
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"  # decided against, e.g. the photo was changed since by someone else
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # a pending change a later run finished


class DriftState(enum.StrEnum):
    """How a photo photosync set differs from what Graph shows now."""

    CHANGED = "changed"
    REMOVED = "removed"


class ActionKind(enum.StrEnum):
    """What apply will do with a file."""

    UPLOAD = "upload"  # prepare, upload, move to completed_dir
    MOVE_UNCHANGED = "move-unchanged"  # already uploaded with this content: just move
    REJECT = "reject"  # not usable: move to failed_dir
    LEAVE = "leave"  # nothing to do now: stays in the inbox


@dataclass(frozen=True, slots=True)
class Action:
    """One line of a plan: what to do with one file, for whom, and why."""

    file: InboxFile
    kind: ActionKind
    outcome: Outcome  # the outcome if apply goes as planned
    reason: str
    user: User | None = None
    # UPNs of the candidate users (ambiguous), or did-you-mean names (unmatched).
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...]

    def of_kind(self, kind: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind is kind]

    @property
    def has_graph_work(self) -> bool:
        return any(a.kind is ActionKind.UPLOAD for a in self.actions)


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """The bytes photosync will upload for one source file, and how they were made."""

    data: bytes
    content_type: str  # "image/jpeg" or "image/png"
    sha256: str  # of `data`
    width: int
    height: int
    source_width: int
    source_height: int
    source_bytes: int
    # "original": the source bytes, unchanged (nothing to strip, orient, convert or shrink);
    # "stripped": the source JPEG's entropy-coded data with metadata segments removed, lossless;
    # "reencoded": decoded, normalised and encoded again.
    path: Literal["original", "stripped", "reencoded"]
    # What a person should know about the photo as it will be seen (reconciler/faces/quality.py):
    # "no face found", "blurred (...)"... Recorded with the upload and shown in reports.
    quality_notes: tuple[str, ...] = ()
    # The part of the upright source that was uploaded, (left, top, right, bottom) in its
    # pixels; it may reach past an edge where the face framing had to pad. None: the whole.
    crop_box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True, slots=True)
class UploadReceipt:
    """What a successful upload cost."""

    attempts: int
    http_status: int
    client_request_id: str


@dataclass(frozen=True, slots=True)
class FileResult:
    """The final word on one file in one run."""

    file: str
    outcome: Outcome
    reason: str
    user_id: str | None = None
    user_label: str | None = None
    destination: Path | None = None  # where the file now is, when it moved


@dataclass(slots=True)
class RunSummary:
    """The contract's --json summary."""

    run_id: int
    counts: dict[Outcome, int] = field(default_factory=lambda: {o: 0 for o in Outcome})
    graph_requests: int = 0
    duration_s: float = 0.0
    results: list[FileResult] = field(default_factory=list)
    # Why the run exits 1 when no single file says so (e.g. prune refused by prune_max).
    refusals: list[str] = field(default_factory=list)
    # A rollback or verify run: its --json always carries the UNDO_OUTCOMES keys.
    per_user: bool = False
    # True for `reconcile --dry-run`: the counts say what a real run would do.
    dry_run: bool = False

    def add(self, result: FileResult) -> None:
        self.results.append(result)
        self.counts[result.outcome] += 1

    @property
    def exit_code(self) -> int:
        return 1 if any(self.counts[o] for o in FAILS_RUN) or self.refusals else 0

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"run_id": self.run_id}
        data.update(
            {
                o.value: self.counts[o]
                for o in Outcome
                if o not in UNDO_OUTCOMES or self.per_user or self.counts[o]
            }
        )
        data["graph_requests"] = self.graph_requests
        data["duration_s"] = round(self.duration_s, 3)
        data["dry_run"] = self.dry_run
        if self.refusals:
            data["refused"] = list(self.refusals)
        return data
