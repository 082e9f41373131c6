"""plan(observed files, recorded state, users) -> Plan. Pure: no I/O, no clock, no Graph.

Apply executes a plan and never re-decides, so everything a run will do, and why, is visible
here first: `reconcile --dry-run` prints exactly this.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath

from reconciler import names
from reconciler.matching import (
    MatchKind,
    UserIndex,
    classify,
    has_image_suffix,
    name_key,
    normalise,
    resolve,
)
from reconciler.model import (
    Action,
    ActionKind,
    FailedUpload,
    InboxFile,
    LedgerView,
    Outcome,
    Plan,
    UnreadableFile,
    User,
)

# Verdicts that mean "waiting for a user": a later change in the tenant can settle them, so
# a run with such files asks Graph what changed (docs/graph-behaviour.md, "Waiting files").
WAITING = frozenset({Outcome.UNMATCHED.value, Outcome.AMBIGUOUS.value, Outcome.INELIGIBLE.value})


def new_or_changed(files: Iterable[InboxFile], view: LedgerView) -> list[InboxFile]:
    """Files whose content the ledger has not seen at that path: only these justify asking
    Graph about users."""
    changed = []
    for file in files:
        recorded = view.files.get(file.key)
        if recorded is None or recorded.sha256 != file.sha256:
            changed.append(file)
    return changed


def waiting(files: Iterable[InboxFile], view: LedgerView) -> list[InboxFile]:
    """Files still in the inbox whose last verdict was waiting for a user."""
    return _with_verdict(files, view, lambda outcome: outcome in WAITING)


def undecided(files: Iterable[InboxFile], view: LedgerView) -> list[InboxFile]:
    """Files the ledger has seen but no run has decided about: the run that scanned them
    was killed before it could. They need users as much as a new file does, or the next run
    would plan them against a ledger that never learned their users."""
    return _with_verdict(files, view, lambda outcome: outcome is None)


def _with_verdict(
    files: Iterable[InboxFile], view: LedgerView, wanted: Callable[[str | None], bool]
) -> list[InboxFile]:
    """The files the ledger has a row for whose last verdict is `wanted`."""
    return [
        file
        for file in files
        if (recorded := view.files.get(file.key)) is not None and wanted(recorded.last_outcome)
    ]


def plan(
    files: Iterable[InboxFile],
    deferred: Iterable[InboxFile],
    view: LedgerView,
    index: UserIndex,
    overrides: Mapping[str, str],
    unreadable: Iterable[UnreadableFile] = (),
) -> Plan:
    actions: list[Action] = [
        Action(f, ActionKind.LEAVE, Outcome.DEFERRED, "modified moments ago; next run")
        for f in deferred
    ]
    # Not the photo's fault and not for HR to fix: it stays, and the run fails so that
    # whoever watches the schedule sees it.
    actions.extend(
        Action(u.file, ActionKind.LEAVE, Outcome.IGNORED, u.error)
        if u.ignored
        else Action(
            u.file,
            ActionKind.LEAVE,
            Outcome.FAILED,
            f"cannot be read ({u.error}); give the account that runs photosync read access",
        )
        for u in unreadable
    )
    decided = [_decide(f, view, index, overrides) for f in files]
    actions.extend(_refuse_competing_files(decided))
    return Plan(tuple(sorted(actions, key=lambda a: a.file.name)))


def _decide(
    file: InboxFile, view: LedgerView, index: UserIndex, overrides: Mapping[str, str]
) -> Action:
    if names.undecodable(file.path.name):
        # Nothing can store or show the name as it is; failed_dir keeps the real name.
        return Action(file, ActionKind.REJECT, Outcome.INVALID, names.NOT_UTF8)
    if not has_image_suffix(file.name):
        return Action(
            file,
            ActionKind.REJECT,
            Outcome.INVALID,
            "not a photo file type; save it as .jpg or .png named after the person",
        )
    recorded = view.files.get(file.key)
    if recorded and recorded.uploaded_to and recorded.sha256 == file.sha256:
        user = recorded.uploaded_to
        return _unchanged(file, user)

    result = resolve(name_key(file.name), index, overrides)
    if result.kind is MatchKind.UNIQUE and result.user is not None:
        user = result.user
        if view.last_upload_sha.get(user.id) == file.sha256:
            return _unchanged(file, user)
        how = " (overrides file)" if result.via_override else ""
        verb = "changed photo" if user.id in view.last_upload_sha else "new photo"
        return Action(
            file, ActionKind.UPLOAD, Outcome.UPLOADED, f"{verb} for {user.label}{how}", user
        )
    if result.kind is MatchKind.AMBIGUOUS:
        upns = tuple(u.label for u in result.candidates)
        return Action(file, ActionKind.LEAVE, Outcome.AMBIGUOUS, result.reason, None, upns)
    if result.kind is MatchKind.INELIGIBLE:
        return Action(file, ActionKind.LEAVE, Outcome.INELIGIBLE, result.reason, result.user)
    suggestions = () if result.via_override else tuple(index.suggestions(name_key(file.name)))
    reason = result.reason
    if suggestions:
        reason += "; did you mean " + " or ".join(suggestions) + "?"
    stray = names.stray_mark_hint(file.name)
    if stray is not None:
        reason += f"; {stray}"
    return Action(file, ActionKind.LEAVE, Outcome.UNMATCHED, reason, None, suggestions)


def _unchanged(file: InboxFile, user: User) -> Action:
    return Action(
        file,
        ActionKind.MOVE_UNCHANGED,
        Outcome.UNCHANGED,
        f"already uploaded to {user.label} with this content",
        user,
    )


def _refuse_competing_files(actions: list[Action]) -> list[Action]:
    """Two files for one person in the same inbox: uploading both would let whichever ran
    last win, so neither is uploaded until a person removes one."""
    by_user: dict[str, list[Action]] = defaultdict(list)
    for action in actions:
        if action.kind is ActionKind.UPLOAD and action.user is not None:
            by_user[action.user.id].append(action)
    competing = {id(a) for group in by_user.values() if len(group) > 1 for a in group}
    if not competing:
        return actions
    resolved = []
    for action in actions:
        if id(action) not in competing or action.user is None:
            resolved.append(action)
            continue
        others = sorted(
            a.file.name for a in by_user[action.user.id] if a.file.name != action.file.name
        )
        resolved.append(
            Action(
                action.file,
                ActionKind.LEAVE,
                Outcome.AMBIGUOUS,
                f"{', '.join(others)} is also for {action.user.label}; keep one file per person",
                action.user,
                (action.user.label,),
            )
        )
    return resolved


# --- retry-failed


def plan_retries(files: Iterable[InboxFile], failed: Mapping[str, FailedUpload]) -> Plan:
    """Upload again each file whose latest upload failed (`failed`, by path string), to the
    user that upload was for: no matching. A file whose content changed since the failure
    is reconcile's business, not a retry."""
    actions = []
    for file in files:
        target = failed.get(file.key)
        if target is None or target.source_sha256 != file.sha256:
            continue
        reason = f"retry of a failed upload for {target.user.label}"
        actions.append(Action(file, ActionKind.UPLOAD, Outcome.UPLOADED, reason, target.user))
    return Plan(tuple(actions))


# --- confirm before write


@dataclass(frozen=True, slots=True)
class Lookup:
    """How to ask Graph, just before writing, who a file's name means now."""

    graph_property: str  # the property to filter on
    value: str  # the literal to ask for, as the directory stores it
    key: str  # the normalised form every holder's value must have


def confirmation_lookups(
    the_plan: Plan, overrides: Mapping[str, str], match_on: str
) -> dict[str, Lookup]:
    """One lookup per planned upload, by the file's path string.

    The value asked for is the planned user's own spelling when it still normalises to the
    file's key (Graph compares case-insensitively, but knows nothing of our whitespace and
    Unicode folding), else the file's name as written.
    """
    lookups: dict[str, Lookup] = {}
    for action in the_plan.of_kind(ActionKind.UPLOAD):
        key = name_key(action.file.name)
        upn = overrides.get(key)
        if upn is not None:
            lookups[action.file.key] = Lookup("userPrincipalName", upn, normalise(upn))
            continue
        stored = action.user.value_of(match_on) if action.user else None
        if stored is None or normalise(stored) != key:
            stored = " ".join(PurePath(action.file.name).stem.split())
        lookups[action.file.key] = Lookup(match_on, stored, key)
    return lookups


def confirm(
    the_plan: Plan,
    lookups: Mapping[str, Lookup],
    found: Iterable[User],
    *,
    include_external: bool,
) -> Plan:
    """Keep an upload only if Graph's answer, read in this run, names exactly one eligible
    user for the file's key and that user is the planned one; every other upload becomes
    what Graph's answer implies. Never adds an upload."""
    users = list(found)
    confirmed: list[Action] = []
    for action in the_plan.actions:
        lookup = lookups.get(action.file.key)
        if action.kind is not ActionKind.UPLOAD or lookup is None or action.user is None:
            confirmed.append(action)
            continue
        holders = [
            u for u in users if normalise(u.value_of(lookup.graph_property) or "") == lookup.key
        ]
        confirmed.append(_as_confirmed(action, lookup, holders, include_external))
    return Plan(tuple(confirmed))


def _as_confirmed(
    action: Action, lookup: Lookup, holders: list[User], include_external: bool
) -> Action:
    assert action.user is not None
    planned = action.user
    asked = f"{lookup.graph_property} '{lookup.value}'"
    result = classify(holders, asked, include_external=include_external)
    if result.kind is MatchKind.UNIQUE and result.user is not None:
        if result.user.id == planned.id:
            return Action(
                action.file,
                action.kind,
                action.outcome,
                action.reason,
                result.user,
                action.candidates,
            )
        return Action(
            action.file,
            ActionKind.LEAVE,
            Outcome.DEFERRED,
            f"Graph, asked before writing, says {asked} is now {result.user.label}, not "
            f"{planned.label}; the next run matches the file afresh",
            None,
        )
    checked = "checked with Graph before writing: "
    if result.kind is MatchKind.AMBIGUOUS:
        upns = tuple(u.label for u in result.candidates)
        return Action(
            action.file, ActionKind.LEAVE, Outcome.AMBIGUOUS, checked + result.reason, None, upns
        )
    if result.kind is MatchKind.INELIGIBLE:
        return Action(
            action.file,
            ActionKind.LEAVE,
            Outcome.INELIGIBLE,
            checked + result.reason,
            result.user,
        )
    return Action(
        action.file,
        ActionKind.LEAVE,
        Outcome.UNMATCHED,
        checked + f"no user has {asked} any more",
        None,
    )
