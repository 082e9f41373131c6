"""`reconcile --dry-run`: what a real run would do with a plan, found without changing
anything anywhere.

A real run decides some outcomes only when it handles a file: an upload is prepared from
the bytes it reads, and a file that cannot be prepared (empty, truncated, too large to
decode) is `invalid`; a file that changed since the scan is `deferred`; one that cannot be
read is `failed`. So the dry run reads and prepares every planned upload too, in memory,
with the same `prepare` the executor gets (app.prepare_options) and the same checks
(executor.is_as_planned), and its counts and exit code are the real run's. Nothing is
uploaded, moved or recorded here.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from reconciler.errors import ImageError
from reconciler.executor import CHANGED, is_as_planned
from reconciler.model import Action, ActionKind, FileResult, Outcome, Plan, PreparedImage
from reconciler.names import shown
from reconciler.scanner import NotAPlainFile, read_snapshot

# As in the executor: the name no longer leads to the file the scan saw.
_REPLACED_ERRNOS = frozenset({errno.ENOENT, errno.ELOOP, errno.ENOTDIR})


def predict(
    plan: Plan, prepare: Callable[[bytes], PreparedImage], concurrency: int
) -> list[FileResult]:
    """Each file's outcome as a real run of `plan` would record it."""
    results = [_as_planned(a) for a in plan.actions if a.kind is not ActionKind.UPLOAD]
    uploads = plan.of_kind(ActionKind.UPLOAD)
    if uploads:
        # Preparing is decoding and encoding images: in parallel, as a real run does.
        with ThreadPoolExecutor(concurrency, "photosync-dry-run") as pool:
            results += pool.map(lambda action: _predict_upload(action, prepare), uploads)
    return results


def _as_planned(action: Action, outcome: Outcome | None = None, reason: str = "") -> FileResult:
    user = action.user
    return FileResult(
        action.file.name,
        outcome or action.outcome,
        reason or action.reason,
        user.id if user else None,
        user.label if user else None,
    )


def _predict_upload(action: Action, prepare: Callable[[bytes], PreparedImage]) -> FileResult:
    try:
        snapshot = read_snapshot(action.file.path)
    except NotAPlainFile:
        return _as_planned(action, Outcome.DEFERRED, CHANGED)
    except OSError as exc:
        if exc.errno in _REPLACED_ERRNOS:
            return _as_planned(action, Outcome.DEFERRED, CHANGED)
        where = f": {shown(str(exc.filename))}" if exc.filename else ""
        reason = (
            f"cannot be read ({exc.strerror or exc}{where}); give the account that runs "
            "photosync read access"
        )
        return _as_planned(action, Outcome.FAILED, reason)
    if not is_as_planned(snapshot, action.file.stat, action.file.sha256):
        return _as_planned(action, Outcome.DEFERRED, CHANGED)
    try:
        prepare(snapshot.data)
    except ImageError as exc:
        return _as_planned(action, Outcome.INVALID, str(exc))
    return _as_planned(action)
