"""Managed-identity token endpoints (App Service, Azure Arc, IMDS) and bearer-token checks.

Tokens are JWT-shaped (header.payload.signature) with Entra's claims, `roles` among them, so
`photosync doctor` can be tested reading the roles a managed identity was granted.

Wire formats follow what msal/azure-identity read (docs/graph-behaviour.md, "Managed identity
token endpoints"): App Service answers
`expires_on`, Arc and IMDS answer `expires_in`, and Arc first challenges with a key file
that only a local administrator could read.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reconciler.emulator.wire import GRAPH_ROOT, ApiError, EmuRequest, EmuResponse

ARC_TOKENS_DIR = Path("/var/opt/azcmagent/tokens")
BEARER_CHALLENGE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/'
    'authorize", client_id="00000003-0000-0000-c000-000000000000"'
)
# Managed-identity request parameters that name a user-assigned identity; Arc must echo them.
_IDENTITY_SELECTORS = ("client_id", "object_id", "msi_res_id", "mi_res_id")


# The app roles a token carries unless a test says otherwise: the two photosync needs.
DEFAULT_ROLES = ("User.Read.All", "ProfilePhoto.ReadWrite.All")
EMULATOR_TENANT_ID = "00000000-0000-0000-0000-00000000e1e1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_shaped(claims: Mapping[str, Any]) -> str:
    """header.payload.signature, each base64url without padding, as Entra ID's access tokens
    are. The signature is random bytes: nothing verifies it (Graph's own check is stood in
    for by TokenStore.check), but a client that decodes the payload reads real JSON."""
    header = {"typ": "JWT", "alg": "RS256", "kid": "graph-emulator"}
    return ".".join(
        (
            _b64url(json.dumps(header).encode()),
            _b64url(json.dumps(dict(claims)).encode()),
            _b64url(secrets.token_bytes(32)),
        )
    )


def token_roles(authorization: str | None) -> tuple[str, ...] | None:
    """The `roles` claim of an emulator token in an Authorization header; None when there
    is no token or it is not one of ours (the emulator runs without auth then)."""
    _scheme, _, token = (authorization or "").partition(" ")
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    roles = payload.get("roles") if isinstance(payload, dict) else None
    return tuple(str(r) for r in roles) if isinstance(roles, list) else ()


class TokenStore:
    """Bearer tokens with an expiry fixed when they are issued, JWT-shaped, carrying the
    `roles` claim `roles()` says at issue time."""

    def __init__(
        self, clock: Callable[[], float], roles: Callable[[], Sequence[str]] = lambda: DEFAULT_ROLES
    ) -> None:
        self._clock = clock
        self._roles = roles
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._issued: list[str] = []

    def issue(self, lifetime_s: int, audience: str = GRAPH_ROOT) -> tuple[str, int]:
        now = int(self._clock())
        expires_on = now + lifetime_s
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{EMULATOR_TENANT_ID}/",
            "iat": now,
            "nbf": now,
            "exp": expires_on,
            "idtyp": "app",
            "oid": str(uuid.uuid4()),
            "tid": EMULATOR_TENANT_ID,
            "roles": list(self._roles()),
            "uti": secrets.token_urlsafe(16),  # unique per token, as Entra's are
        }
        token = jwt_shaped(claims)
        with self._lock:
            self._expiry[token] = expires_on
            self._issued.append(token)
        return token, expires_on

    @property
    def issued(self) -> list[str]:
        with self._lock:
            return list(self._issued)

    def check(self, authorization: str | None) -> None:
        """Raise the 401 Graph would send for a missing, unknown or expired bearer token."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthenticated("Access token is empty.")
        with self._lock:
            expiry = self._expiry.get(token)
        if expiry is None:
            raise _unauthenticated("Access token validation failure.")
        if self._clock() >= expiry:
            raise _unauthenticated("Access token has expired or is not yet valid.")


def _unauthenticated(message: str) -> ApiError:
    headers = {"WWW-Authenticate": BEARER_CHALLENGE}
    return ApiError(401, "InvalidAuthenticationToken", message, headers=headers)


def _json(status: int, payload: Mapping[str, Any], headers: Mapping[str, str] = {}) -> EmuResponse:
    body = json.dumps(payload).encode()
    return EmuResponse(status, {"Content-Type": "application/json", **headers}, body)


class ArcKeyFiles:
    """Challenge key files under the Arc tokens directory.

    Creates only the directories that are missing, and on close removes exactly the files and
    directories it created, so a test leaves a real machine as it found it.
    """

    def __init__(self, directory: Path = ARC_TOKENS_DIR) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._created_dirs: list[Path] = []
        self._files: dict[str, Path] = {}  # secret -> key file

    def challenge(self) -> Path:
        secret = secrets.token_hex(32)
        with self._lock:
            self._make_dirs()
            path = self.directory / f"{secrets.token_hex(8)}.key"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            with os.fdopen(fd, "w") as handle:
                handle.write(secret)
            self._files[secret] = path
        return path

    def redeem(self, secret: str) -> bool:
        """A key is good for one token request, after which its file goes."""
        with self._lock:
            path = self._files.pop(secret, None)
        if path is None:
            return False
        path.unlink(missing_ok=True)
        return True

    def close(self) -> None:
        with self._lock:
            for path in self._files.values():
                path.unlink(missing_ok=True)
            self._files.clear()
            for directory in reversed(self._created_dirs):
                try:
                    directory.rmdir()
                except OSError:
                    break  # someone else put something there since: theirs now
            self._created_dirs.clear()

    def _make_dirs(self) -> None:
        missing: list[Path] = []
        for candidate in (self.directory, *self.directory.parents):
            if candidate.exists():
                break
            missing.append(candidate)
        for directory in reversed(missing):
            directory.mkdir(mode=0o755)
            self._created_dirs.append(directory)


class IdentityEndpoints:
    """The three managed-identity flows azure-identity can speak to over plain http."""

    def __init__(
        self,
        tokens: TokenStore,
        base_url: Callable[[], str],
        lifetime_s: Callable[[], int],
        clock: Callable[[], float],
        key_files: ArcKeyFiles | None = None,
    ) -> None:
        self.identity_header = secrets.token_urlsafe(24)
        self.system_client_id = str(uuid.uuid4())
        self.key_files = key_files or ArcKeyFiles()
        self._tokens = tokens
        self._base_url = base_url
        self._lifetime_s = lifetime_s
        self._clock = clock

    def app_service(self, req: EmuRequest) -> EmuResponse:
        if not secrets.compare_digest(req.header("X-IDENTITY-HEADER") or "", self.identity_header):
            return _json(
                401, {"statusCode": 401, "message": "Invalid or missing X-IDENTITY-HEADER."}
            )
        problem = self._bad_params(req, {"2019-08-01"})
        if problem:
            return _json(400, {"statusCode": 400, "message": problem})
        token, expires_on = self._tokens.issue(self._lifetime_s(), self._audience(req))
        payload = {
            "access_token": token,
            "expires_on": str(expires_on),
            "resource": req.query["resource"],
            "token_type": "Bearer",
            "client_id": req.query.get("client_id", self.system_client_id),
        }
        return _json(200, payload)

    def arc(self, req: EmuRequest) -> EmuResponse:
        problem = self._metadata_problem(req) or self._bad_params(req, {"2019-11-01", "2020-06-01"})
        if problem:
            return _json(400, {"error": "invalid_request", "error_description": problem})
        scheme, _, secret = (req.header("Authorization") or "").partition(" ")
        if scheme.lower() != "basic":
            return self._arc_challenge()
        if not self.key_files.redeem(secret):
            return _json(401, {"error": "unauthorized_client", "error_description": "Invalid key."})
        return self._expires_in_token(req)

    def imds(self, req: EmuRequest) -> EmuResponse:
        problem = self._metadata_problem(req) or self._bad_params(req, {"2018-02-01"})
        if problem:
            return _json(400, {"error": "invalid_request", "error_description": problem})
        return self._expires_in_token(req)

    def _arc_challenge(self) -> EmuResponse:
        try:
            path = self.key_files.challenge()
        except OSError as exc:
            message = f"cannot write the Arc challenge key file: {exc.strerror}"
            return _json(500, {"error": "server_error", "error_description": message})
        headers = {"WWW-Authenticate": f"Basic realm={path}"}
        return _json(
            401, {"error": "unauthorized_client", "error_description": "Challenge"}, headers
        )

    def _expires_in_token(self, req: EmuRequest) -> EmuResponse:
        lifetime = self._lifetime_s()
        token, expires_on = self._tokens.issue(lifetime, self._audience(req))
        payload = {
            "access_token": token,
            "expires_in": str(lifetime),
            "expires_on": str(expires_on),
            "ext_expires_in": str(lifetime),
            "not_before": str(expires_on - lifetime),
            "resource": req.query["resource"],
            "token_type": "Bearer",
        }
        payload.update({k: req.query[k] for k in _IDENTITY_SELECTORS if k in req.query})
        return _json(200, payload)

    def _audience(self, req: EmuRequest) -> str:
        return req.query.get("resource", GRAPH_ROOT).rstrip("/")

    def _metadata_problem(self, req: EmuRequest) -> str | None:
        if (req.header("Metadata") or "").lower() != "true":
            return "Required metadata header not specified"
        return None

    def _bad_params(self, req: EmuRequest, api_versions: set[str]) -> str | None:
        if req.query.get("api-version") not in api_versions:
            return f"api-version must be one of {sorted(api_versions)}"
        resource = req.query.get("resource", "").rstrip("/")
        if resource not in {self._base_url(), GRAPH_ROOT}:
            return f"resource '{resource}' is not Microsoft Graph or this emulator"
        return None
