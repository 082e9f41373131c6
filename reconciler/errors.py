"""The photosync error tree.

Every failure the tool can meet is translated into one of these at the boundary where it
happens (config parsing, the database, HTTP, Pillow), so the layers above branch on our
types rather than on requests/SQLAlchemy/Pillow internals.

    PhotosyncError
    ├── ConfigError              a bad setting; the CLI exits 2
    ├── LedgerError              the database cannot be opened or migrated; exit 3
    │   └── RunLockedError       another run holds the lock; exit 3
    ├── AuthError                no token could be obtained; exit 3
    ├── GraphError               Microsoft Graph answered with an error (or did not answer)
    │   ├── TransientGraphError  429, 5xx, resets, timeouts: worth retrying later
    │   │   └── GraphUnreachableError  no connection at all; the run cannot proceed (exit 3)
    │   ├── PermanentGraphError  400, 403, 404...: retrying the same request will not help
    │   └── DeltaResyncRequired  the delta token is gone (syncStateNotFound / 410): list afresh
    └── ImageError               a file is not a usable image; it goes to failed_dir

Messages are written for the person reading one line in a log: they name the thing and
say what to do. They never contain a token or a secret. What a Graph failure means is decided
in one place, graph_advice(status, code, operation), from Graph's error code rather than the
status alone (docs/graph-behaviour.md has a section per code).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final


class PhotosyncError(Exception):
    """Base of every error photosync raises on purpose."""


class ConfigError(PhotosyncError):
    """A setting is missing or has a value we cannot use."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"setting '{setting}': {problem}")


class LedgerError(PhotosyncError):
    """The ledger database could not be opened, migrated or written."""


class RunLockedError(LedgerError):
    """Another photosync run holds the ledger's run lock."""

    def __init__(self, holder: str, lock: str | None = None) -> None:
        self.holder = holder
        self.lock = lock
        where = f" {lock}" if lock else ""
        super().__init__(
            f"another photosync run holds the lock{where} ({holder}); "
            "wait for it to finish, or stop it if it is stuck"
        )


class AuthError(PhotosyncError):
    """No access token could be obtained for Microsoft Graph."""


@dataclass(frozen=True, slots=True)
class GraphFailure:
    """What Graph said about one failed request: the one value a GraphError carries, and
    what the ledger records for a failed upload or photo change. `said` is Graph's own words
    (or ours when Graph said nothing); `advice` is what photosync adds about what to do."""

    said: str
    status: int | None = None
    code: str | None = None
    advice: str | None = None
    request_id: str | None = None
    client_request_id: str | None = None
    attempts: int = 1
    retry_after: float | None = None

    @property
    def message(self) -> str:
        """What the ledger and the report show: Graph's words with the advice."""
        return f"{self.said} — {self.advice}" if self.advice else self.said


class GraphError(PhotosyncError):
    """Microsoft Graph answered a request with an error, or could not be reached.

    Carries what Graph said (status, error code, message) and the ids an administrator
    needs to quote to Microsoft support (request-id, client-request-id), as one frozen
    GraphFailure in `details`; the attributes below read it.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
        client_request_id: str | None = None,
        attempts: int = 1,
        retry_after: float | None = None,
        advice: str | None = None,
    ) -> None:
        self.details = GraphFailure(
            message, status, code, advice, request_id, client_request_id, attempts, retry_after
        )
        super().__init__(self._render())

    @classmethod
    def of(cls, details: GraphFailure) -> GraphError:
        """An error of this type carrying `details` as they are."""
        error = cls.__new__(cls)
        error.details = details
        PhotosyncError.__init__(error, error._render())
        return error

    def advised(self, advice: str | None) -> GraphError:
        """The same error (same type, ids and attempts) with `advice` instead of its own."""
        return type(self).of(replace(self.details, advice=advice))

    @property
    def status(self) -> int | None:
        return self.details.status

    @property
    def code(self) -> str | None:
        return self.details.code

    @property
    def said(self) -> str:
        return self.details.said

    @property
    def advice(self) -> str | None:
        return self.details.advice

    @property
    def graph_message(self) -> str:
        return self.details.message

    @property
    def request_id(self) -> str | None:
        return self.details.request_id

    @property
    def client_request_id(self) -> str | None:
        return self.details.client_request_id

    @property
    def attempts(self) -> int:
        return self.details.attempts

    @property
    def retry_after(self) -> float | None:
        return self.details.retry_after

    def _render(self) -> str:
        parts = []
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(self.code)
        head = " ".join(parts)
        text = f"{head}: {self.graph_message}" if head else self.graph_message
        if self.client_request_id:
            text += f" (client-request-id {self.client_request_id})"
        return text


class TransientGraphError(GraphError):
    """Throttling, a server error, a reset or a timeout: the same request may work later."""


class GraphUnreachableError(TransientGraphError):
    """Graph could not be reached at all (DNS, refused connection): the run cannot go on."""


class PermanentGraphError(GraphError):
    """Graph refused the request for a reason that retrying will not change."""


class DeltaResyncRequired(GraphError):
    """The saved delta link is no longer valid; the users must be listed in full again."""


class ImageError(PhotosyncError):
    """A file is not a usable photo. The message is the reason shown to HR staff."""


class GraphOperation(StrEnum):
    """What a failed Graph call was doing: the advice for one status and code depends on it."""

    PHOTO_WRITE = "photo write"
    PHOTO_READ = "photo read"
    USER_READ = "user read"


# The application permission each operation needs (least privileged; docs/graph-behaviour.md).
REQUIRED_ROLE: Final = {
    GraphOperation.PHOTO_WRITE: "ProfilePhoto.ReadWrite.All",
    GraphOperation.PHOTO_READ: "ProfilePhoto.ReadWrite.All",
    GraphOperation.USER_READ: "User.Read.All",
}
# Codes Graph answers a 403 with when the caller lacks a permission: Entra's directory code
# and Exchange's, and the generic one (docs/graph-behaviour.md, "Access denied").
ACCESS_DENIED_CODES: Final = frozenset(
    {"authorization_requestdenied", "erroraccessdenied", "accessdenied"}
)
_NO_MAILBOX: Final = (
    "this user's mailbox is not hosted in Exchange Online (it is on-premises or on another "
    "server), so Graph cannot set their photo; set it where the mailbox lives, or move the "
    "mailbox to Exchange Online and run `photosync retry-failed --include-permanent`"
)
_NO_STORE_ITEM: Final = (
    "Exchange Online found no mailbox item to hold this user's photo (a new or newly "
    "licensed mailbox can take hours to be provisioned); check the user has an Exchange "
    "Online licence, then run `photosync retry-failed --include-permanent`"
)
_POLICY: Final = (
    "photo updates from the cloud are disabled in this tenant; check the tenant's photo "
    "update settings (GET /admin/people/photoUpdateSettings must say source 'cloud', or see "
    "Settings > Org settings in the Microsoft 365 admin centre); if they allow cloud updates, "
    "grant the app ProfilePhoto.ReadWrite.All"
)


def graph_advice(
    status: int | None,
    code: str | None,
    operation: GraphOperation,
    *,
    user_exists: bool | None = None,
) -> str | None:
    """What a failed Graph call means for the user concerned and what to do, in one sentence;
    None when there is nothing to add to what Graph said.

    `user_exists` answers "is the user still in the tenant?" for a 404 on a photo write
    (the client asks Graph once); None when nobody asked.
    """
    folded = (code or "").lower()
    if operation is GraphOperation.PHOTO_WRITE and status == 404 and user_exists is False:
        return (
            "the user no longer exists in the tenant (deleted since the users were listed); "
            "the next run re-checks and reports the file unmatched"
        )
    if folded == "mailboxnothostedinexchangeonline":
        return _NO_MAILBOX
    if folded == "erroritemnotfound":
        return _NO_STORE_ITEM
    if folded == "imagenotfound":
        if operation is GraphOperation.PHOTO_READ:
            return "the user has no photo in Graph yet"
        return (
            "Graph's photo service holds no photo record for this user and refused to create "
            "one; check the user has an Exchange Online licence, then run "
            "`photosync retry-failed --include-permanent`"
        )
    if status == 403:
        role = REQUIRED_ROLE[operation]
        if folded in ACCESS_DENIED_CODES or operation is not GraphOperation.PHOTO_WRITE:
            return (
                f"the app lacks the {role} application permission; grant it with admin "
                "consent (for a managed identity, assign the app role to its service "
                "principal) and run again"
            )
        return _POLICY
    if status == 404:
        if operation is GraphOperation.PHOTO_WRITE and user_exists:
            return (
                f"Graph has no photo store for this user ({code or 'HTTP 404'}); check the "
                "user has an Exchange Online licence, then run "
                "`photosync retry-failed --include-permanent`"
            )
        if operation is not GraphOperation.PHOTO_READ:
            return "the user may have been deleted; the next run re-checks"
    return None
