"""Getting an access token for Microsoft Graph.

build_credential() turns the `auth` setting into an azure-identity credential; TokenProvider
is what the Graph client asks for a bearer token. TokenProvider owns caching and the
translation of every azure-identity/azure-core failure into one AuthError line that names the
mode and says what to do, so the CLI can print it as is and exit 3.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, TokenCredential
from azure.identity import (
    AzureAuthorityHosts,
    AzureCliCredential,
    CertificateCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)

from reconciler.config import AUTH_MODES
from reconciler.errors import AuthError, ConfigError

log = logging.getLogger("reconciler.graph")

# Graph host → Entra authority host (docs/graph-behaviour.md, "National clouds"). GCC
# (moderate) uses the global hosts.
_AUTHORITIES: Final = {
    "graph.microsoft.com": AzureAuthorityHosts.AZURE_PUBLIC_CLOUD,
    "graph.microsoft.us": AzureAuthorityHosts.AZURE_GOVERNMENT,
    "dod-graph.microsoft.us": AzureAuthorityHosts.AZURE_GOVERNMENT,
    "microsoftgraph.chinacloudapi.cn": AzureAuthorityHosts.AZURE_CHINA,
}

# What to do when a mode fails; the reason from azure-identity goes in front of it.
_FIX_HINTS: Final = {
    "managed-identity": (
        "run on an Azure Arc server / Automation hybrid worker / Azure VM with a managed "
        "identity (set client_id for a user-assigned one), or set auth = 'client-secret'"
    ),
    "client-secret": (
        "check tenant_id, client_id and PHOTOSYNC_CLIENT_SECRET (secrets expire) and that the "
        "app registration is in that tenant"
    ),
    "certificate": (
        "check tenant_id, client_id and certificate_path, and that the certificate (with its "
        "private key) is uploaded to the app registration and not expired"
    ),
    "azure-cli": (
        "run 'az login' as the account that runs photosync (az cloud set for national "
        "clouds), or choose another auth mode"
    ),
    "default": (
        "configure one DefaultAzureCredential source (AZURE_* environment variables, a "
        "managed identity or 'az login'), or choose an explicit auth mode"
    ),
}

# A refresh that fails while the old token still has this much life is not fatal.
_MIN_USEFUL_LIFE_S: Final = 30.0
# How long to keep using a still-valid token after a failed refresh before asking again.
_RETRY_REFRESH_AFTER_S: Final = 30.0


def token_scope(graph_url: str) -> str:
    """The one scope to ask for: the Graph root's `.default` (its app permissions)."""
    return f"{graph_url.rstrip('/')}/.default"


def authority_host(graph_url: str) -> str:
    """The Entra ID login host of the cloud that `graph_url` belongs to.

    An unknown host (a loopback emulator, a proxy) gets the public cloud: the authority is
    only used by the non-managed modes, and a wrong cloud there fails loudly at token time.
    """
    host = (urlsplit(graph_url).hostname or "").lower()
    return _AUTHORITIES.get(host, AzureAuthorityHosts.AZURE_PUBLIC_CLOUD)


def build_credential(
    mode: str,
    *,
    graph_url: str,
    client_id: str | None = None,
    tenant_id: str | None = None,
    certificate_path: str | None = None,
    client_secret: str | None = None,
) -> TokenCredential:
    """The azure-identity credential for the `auth` setting; ConfigError names what is missing."""
    authority = authority_host(graph_url)
    if mode == "managed-identity":
        # client_id picks a user-assigned identity; None means the system-assigned one.
        return ExplainedManagedIdentityCredential(client_id=client_id)
    if mode == "client-secret":
        tenant, app = _require_app(mode, tenant_id, client_id)
        secret = _require(mode, "client_secret", client_secret, "set PHOTOSYNC_CLIENT_SECRET")
        return _constructed(
            "tenant_id",
            lambda: ClientSecretCredential(tenant, app, secret, authority=authority),
        )
    if mode == "certificate":
        tenant, app = _require_app(mode, tenant_id, client_id)
        path = _require(
            mode, "certificate_path", certificate_path, "set it to a PEM or PKCS12 file"
        )
        return _constructed(
            "certificate_path",
            lambda: CertificateCredential(tenant, app, certificate_path=path, authority=authority),
        )
    if mode == "azure-cli":
        return AzureCliCredential(tenant_id=tenant_id or "")
    if mode == "default":
        return DefaultAzureCredential(authority=authority, managed_identity_client_id=client_id)
    raise ConfigError("auth", f"unknown mode {mode!r}; use one of {', '.join(AUTH_MODES)}")


# Where the Connected Machine agent installs himds: MSAL treats such a host as Azure Arc even
# without the environment variables (docs/graph-behaviour.md, "Azure Arc").
_HIMDS_PATHS: Final = (
    Path("/opt/azcmagent/bin/himds"),
    Path(os.path.expandvars(r"%ProgramFiles%\AzureConnectedMachineAgent\himds.exe")),
)
ARC_KEY_UNREADABLE: Final = (
    "this account cannot read Azure Arc's token key file; add this account to the himds "
    "group (Linux) or run as an administrator (Windows), then run again"
)
ARC_SYSTEM_ASSIGNED_ONLY: Final = (
    "Azure Arc offers only the system-assigned identity on this machine (its agent did not "
    "issue a token for client_id {client_id}); remove client_id, or update the Azure Connected "
    "Machine agent to one that serves user-assigned identities"
)
# How MSAL and azure-identity word "Arc gave (or can give) no token for that user-assigned
# identity": the fail-closed check of msal 1.39+, and the refusal of older releases.
_ARC_USER_ASSIGNED_REFUSED: Final = re.compile(r"(?i)user-assigned|system-assigned")


def is_azure_arc(env: Mapping[str, str], himds_installed: bool = False) -> bool:
    """True when ManagedIdentityCredential will use the Azure Arc flow: IDENTITY_ENDPOINT
    and IMDS_ENDPOINT without IDENTITY_HEADER, or (no managed-identity variable at all) a
    host with the Arc agent installed."""
    if env.get("IDENTITY_ENDPOINT"):
        return bool(env.get("IMDS_ENDPOINT")) and not env.get("IDENTITY_HEADER")
    return himds_installed and not env.get("MSI_ENDPOINT")


def arc_failure(exc: BaseException, client_id: str | None) -> str | None:
    """What an Azure Arc token failure means, when it is one we can name; None otherwise."""
    if any(isinstance(cause, PermissionError) for cause in _chain(exc)):
        return ARC_KEY_UNREADABLE
    if client_id and _ARC_USER_ASSIGNED_REFUSED.search(str(exc)):
        return ARC_SYSTEM_ASSIGNED_ONLY.format(client_id=client_id)
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


class ExplainedManagedIdentityCredential(ManagedIdentityCredential):
    """ManagedIdentityCredential whose Azure Arc failures say what to do on an Arc server.

    azure-identity lets a PermissionError from reading Arc's key file escape as it is, and
    reports an agent that cannot serve a user-assigned identity in MSAL's words; both become
    one AuthError line that names the fix.
    """

    def __init__(self, *, client_id: str | None = None) -> None:
        super().__init__(client_id=client_id)
        self._photosync_client_id = client_id

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        try:
            token: AccessToken = super().get_token(*scopes, **kwargs)
        except Exception as exc:
            arc = is_azure_arc(os.environ, any(path.exists() for path in _HIMDS_PATHS))
            meaning = arc_failure(exc, self._photosync_client_id) if arc else None
            if meaning is None:
                raise
            raise AuthError(f"auth 'managed-identity' failed: {meaning}") from exc
        return token


def _require(mode: str, setting: str, value: str | None, how: str) -> str:
    if not value:
        raise ConfigError(setting, f"auth '{mode}' needs {setting}; {how}")
    return value


def _require_app(mode: str, tenant_id: str | None, client_id: str | None) -> tuple[str, str]:
    tenant = _require(mode, "tenant_id", tenant_id, "set it to the directory (tenant) id")
    app = _require(mode, "client_id", client_id, "set it to the app registration's client id")
    return tenant, app


def _constructed(setting: str, make: Callable[[], TokenCredential]) -> TokenCredential:
    """Construct a credential, turning azure-identity's input validation into ConfigError."""
    try:
        return make()
    except (ValueError, OSError) as exc:
        # Certificate parsing errors and tenant-id validation; neither echoes the secret.
        raise ConfigError(setting, describe_failure(exc)) from exc


_REDACTIONS: Final = (
    # JWTs (access tokens) and anything following "Bearer".
    re.compile(r"eyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?"),
    re.compile(r"(?i)bearer\s+\S+"),
    # access_token / client_secret style key=value or "key": "value" pairs.
    re.compile(r"(?i)(access_token|secret|password)(\"?\s*[=:]\s*\"?)[^\s,;\"']+"),
)
# azure-identity appends troubleshooting links; our hint replaces them.
_BOILERPLATE: Final = re.compile(r"(?i)\s*(visit|to mitigate|for more)\b.*$")
_MAX_REASON: Final = 240


def describe_failure(exc: BaseException) -> str:
    """One short, secret-free line saying why azure-identity failed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _BOILERPLATE.sub("", text)
    for pattern in _REDACTIONS:
        text = pattern.sub(_redacted, text)
    text = text.rstrip(" .")
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 1].rstrip() + "…"
    return _lower_first(text)


def _lower_first(text: str) -> str:
    """'No endpoint found' → 'no endpoint found' (it follows a colon), but leave names
    such as 'App Service …' or 'AADSTS7000215: …' alone."""
    words = text.split(maxsplit=2)
    if len(words) < 2 or not words[0].istitle() or not words[1][:1].islower():
        return text
    return text[:1].lower() + text[1:]


def _redacted(match: re.Match[str]) -> str:
    if match.lastindex and match.lastindex >= 2 and match.group(2):
        return f"{match.group(1)}{match.group(2)}[redacted]"
    return "[redacted]"


def auth_error(mode: str, exc: BaseException) -> AuthError:
    """The AuthError for a failed token request: mode, reason, fix — one line."""
    hint = _FIX_HINTS.get(mode, "check the auth settings")
    return AuthError(f"auth '{mode}' failed: {describe_failure(exc)}; {hint}")


def refresh_at(fetched_at: float, expires_on: float) -> float:
    """When to ask for a new token: 5 min before expiry, or half-way for short-lived tokens.

    Half-way keeps a short token (an emulator's 5 s, a CAE-less test tenant's 10 min) from
    being refreshed on every call while still leaving slack for the request it is used for.
    """
    lifetime = max(0.0, expires_on - fetched_at)
    return expires_on - min(300.0, lifetime / 2)


@dataclass(frozen=True, slots=True)
class _Cached:
    token: str
    expires_on: float
    refresh_at: float


class TokenProvider:
    """Bearer tokens for the Graph client: cached, refreshed early, one fetch at a time.

    Thread-safe. Concurrent callers that find the cache stale queue on one lock, and the first
    of them fetches; the rest find the fresh token when they get the lock (single flight).
    """

    def __init__(
        self,
        credential_factory: Callable[[], TokenCredential],
        *,
        mode: str,
        scope: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._factory = credential_factory
        self.mode = mode
        self.scope = scope
        self._clock = clock
        self._lock = threading.Lock()
        self._credential: TokenCredential | None = None
        self._cached: _Cached | None = None
        self.fetches = 0  # token requests made through the credential (diagnostics, tests)

    def token(self) -> str:
        cached = self._cached
        if cached is not None and self._clock() < cached.refresh_at:
            return cached.token
        with self._lock:
            cached = self._cached
            now = self._clock()
            if cached is not None and now < cached.refresh_at:
                return cached.token
            try:
                self._cached = self._fetch()
            except AuthError as exc:
                return self._fallback(cached, now, exc)
            return self._cached.token

    def refresh(self, rejected: str) -> str:
        """A token other than `rejected`, which Graph has just answered 401 to."""
        with self._lock:
            cached = self._cached
            if cached is not None and cached.token != rejected:
                return cached.token  # another thread already replaced it
            fresh = self._fetch()
            if fresh.token == rejected:
                # The credential served the rejected token from its own cache (MSAL caches
                # until 5 min before expiry); a new credential has an empty cache.
                log.info("auth %r: credential re-served a rejected token; rebuilding", self.mode)
                _close(self._credential)
                self._credential = None
                fresh = self._fetch()
            if fresh.token == rejected:
                raise AuthError(
                    f"auth '{self.mode}' failed: Microsoft Graph rejected the token and the "
                    "identity issued the same one again; check that the identity belongs to "
                    "this tenant and cloud (graph_url)"
                )
            self._cached = fresh
            return fresh.token

    def close(self) -> None:
        with self._lock:
            credential, self._credential = self._credential, None
        _close(credential)

    def _fallback(self, cached: _Cached | None, now: float, exc: AuthError) -> str:
        """Keep a still-usable token when an early refresh fails; retry the refresh later."""
        if cached is None or cached.expires_on - now < _MIN_USEFUL_LIFE_S:
            raise exc
        log.warning("%s; using the current token until it nears expiry", exc)
        retry = min(now + _RETRY_REFRESH_AFTER_S, cached.expires_on - _MIN_USEFUL_LIFE_S)
        self._cached = _Cached(cached.token, cached.expires_on, retry)
        return cached.token

    def _fetch(self) -> _Cached:
        """Ask the credential (building it first if needed). Caller holds the lock."""
        try:
            if self._credential is None:
                self._credential = self._factory()
            self.fetches += 1
            fetched_at = self._clock()
            access: AccessToken = self._credential.get_token(self.scope)
        except AuthError:
            raise
        except Exception as exc:
            # The boundary to azure-identity/MSAL/azure-core: their failures range over
            # ClientAuthenticationError, CredentialUnavailableError, ValueError and OSError.
            raise auth_error(self.mode, exc) from exc
        expires = float(access.expires_on)
        return _Cached(access.token, expires, refresh_at(fetched_at, expires))


def _close(credential: TokenCredential | None) -> None:
    # azure-identity credentials hold an HTTP transport; TokenCredential's protocol does not
    # promise close(), so only call it where it exists.
    close = getattr(credential, "close", None)
    if callable(close):
        close()
