"""plan(observed files, recorded state, users) -> Plan. Pure: no I/O, no clock, no Graph.

Apply executes a plan and never re-decides, so everything a run will do, and why, is visible
here first: `reconcile --dry-run` prints exactly this.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.matching import MatchKind, UserIndex, has_image_suffix, name_key, resolve
from reconciler.model import Action, ActionKind, InboxFile, Outcome, Plan, UnreadableFile, User


@dataclass(frozen=True, slots=True)
class RecordedFile:
    """What the ledger remembers of a file at this inbox path."""

    sha256: str | None
    # A user this exact content was successfully uploaded to from this file, if any: lets a
    # run finish a move that a crash interrupted without matching the name again.
    uploaded_to: User | None = None


@dataclass(frozen=True, slots=True)
class LedgerView:
    files: Mapping[str, RecordedFile]  # by path string, files still in the inbox
    last_upload_sha: Mapping[str, str]  # user id -> source sha256 of the last successful upload


def new_or_changed(files: Iterable[InboxFile], view: LedgerView) -> list[InboxFile]:
    """Files whose content the ledger has not seen at that path: only these justify asking
    Graph about users."""
    changed = []
    for file in files:
        recorded = view.files.get(str(file.path))
        if recorded is None or recorded.sha256 != file.sha256:
            changed.append(file)
    return changed


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
        Action(
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
    if not has_image_suffix(file.name):
        return Action(
            file,
            ActionKind.REJECT,
            Outcome.INVALID,
            "not a photo file type; save it as .jpg or .png named after the person",
        )
    recorded = view.files.get(str(file.path))
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
