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
say what to do. They never contain a token or a secret.
"""

from __future__ import annotations


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

    def __init__(self, holder: str) -> None:
        self.holder = holder
        super().__init__(
            f"another photosync run holds the lock ({holder}); "
            "wait for it to finish, or stop it if it is stuck"
        )


class AuthError(PhotosyncError):
    """No access token could be obtained for Microsoft Graph."""


class GraphError(PhotosyncError):
    """Microsoft Graph answered a request with an error, or could not be reached.

    Carries what Graph said (status, error code, message) and the ids an administrator
    needs to quote to Microsoft support (request-id, client-request-id).
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
    ) -> None:
        self.status = status
        self.code = code
        self.graph_message = message
        self.request_id = request_id
        self.client_request_id = client_request_id
        self.attempts = attempts
        self.retry_after = retry_after
        super().__init__(self._render())

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
