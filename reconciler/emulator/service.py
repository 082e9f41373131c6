"""A loopback Microsoft Graph and managed-identity token endpoint, for tests, benchmarks and
`photosync demo`.

It serves what photosync uses (users, users/delta, profile photos, $batch) the way Graph does,
errors and throttling included, as written down in docs/graph-behaviour.md: passing against the
emulator should mean passing against Graph. Only the standard library and Pillow.

    with GraphEmulator() as emu:
        emu.tenant.add_user("Ada Lovelace")
        os.environ.update(emu.managed_identity_env())
        ...  # point graph_url at emu.url

Modules of this package, one job each: `wire` (request/response values), `tenant` (the
directory), `odata` (query options), `users`, `photos`, `batch`, `admin` (routes), `router`,
`auth` (tokens), `faults` (injected trouble), `server` (the socket side), and this one, which
puts them together.

Graph's weakest documented promises, as switches on `emu.faults` (all off by default, so the
emulator behaves like Graph's friendliest examples until a test asks otherwise; each may be
changed while the emulator runs; docs/graph-behaviour.md says where each comes from):

- `delta_items` ("selected"): how much a user item in a delta round after the first carries.
  "selected" = every selected property it has, plus changed ones cleared to null. "changed" =
  only `id` and the properties changed since the last round (cleared ones as null), whatever
  the Prefer header says. "sparse" = like "changed", and a user created since the last round
  carries only `id` and `displayName`.
- `latest_forgets_select` (False): a deltaLink from `$deltatoken=latest` tracks only the
  default properties, whatever `$select` it was asked with: changes to accountEnabled,
  userType, employeeId, mailNickname never surface in the rounds that follow it, and its
  items carry default properties only.
- `hide_restores` (False): a user brought back with `emu.tenant.restore_user(id)` never shows
  in a delta round from an earlier deltaLink (a fresh initial round lists it, as it lists
  every current user); `/users`, `$filter` and `/users/{id}` show it at once.
  Off, the restore arrives in the next round as an ordinary object without `@removed`.
- `replication_lag_s` (0.0): a user created less than this many seconds ago by `emu.now()`
  (move it with `emu.advance_clock()`) is invisible to `/users`, `$filter`, `$count`,
  `/users/{id}` (404 Request_ResourceNotFound) and delta; once visible it is in the listing
  and in the first delta round that follows, whenever the deltaLink was issued.

External (B2B) members: `emu.tenant.add_user(name, mail=..., external=True)` gives the
`mail_fabrikam.com#EXT#@domain` UPN, creationType "Invitation", externalUserState "Accepted"
(both returned only with `$select`, null for everyone else).

Always on, as Graph: a `$filter` of more than 15 expressions (each value of an `in` list, each
operand of `and`/`or`) is refused with 400 Request_UnsupportedQuery unless advanced query
parameters (ConsistencyLevel: eventual and $count=true) are present; string comparison
ignores case without folding one letter into two (ß is not ss); query strings decode `+` as
a space and `%2B` as a plus.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from reconciler.emulator.auth import ArcKeyFiles, IdentityEndpoints, TokenStore
from reconciler.emulator.faults import FaultDice, Faults, throttled
from reconciler.emulator.photos import decode_image
from reconciler.emulator.router import GraphRouter
from reconciler.emulator.server import LoopbackServer
from reconciler.emulator.tenant import StoredPhoto, Tenant
from reconciler.emulator.wire import (
    ApiError,
    EmuRequest,
    EmuResponse,
    RequestIds,
)

__all__ = ["Faults", "GraphEmulator", "RecordedRequest", "StoredPhoto", "Tenant"]

_DIAGNOSTIC = '{"ServerInfo":{"DataCenter":"Loopback","Slice":"E","Ring":"0","RoleInstance":"EMU"}}'


# Variables that would steer azure-identity to another managed-identity flow than ours.
OTHER_IDENTITY_VARIABLES = frozenset(
    {
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IDENTITY_SERVER_THUMBPRINT",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        "AZURE_CLIENT_ID",
    }
)


def identity_environment(base: Mapping[str, str], identity: Mapping[str, str]) -> dict[str, str]:
    """`base` without any other managed-identity flow's variables, plus `identity`, with
    loopback exempt from any proxy `base` names."""
    env = {k: v for k, v in base.items() if k not in OTHER_IDENTITY_VARIABLES}
    env.update(identity)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body_size: int
    arrived_at: float  # time.monotonic()
    status: int  # 0: the connection was dropped without an answer
    client_request_id: str | None
    retry_after: float | None  # what we told the client, if anything
    user_id: str | None  # for photo requests
    token_request: bool
    # For a $batch: its inner requests, recorded the same way.
    inner: tuple[RecordedRequest, ...] = ()


def _record(
    req: EmuRequest, response: EmuResponse | None, arrived_at: float, *, token: bool = False
) -> RecordedRequest:
    return RecordedRequest(
        method=req.method,
        path=req.path,
        query=dict(req.query_pairs),
        headers=dict(req.headers),
        body_size=len(req.body),
        arrived_at=arrived_at,
        status=response.status if response else 0,
        client_request_id=req.header("client-request-id"),
        retry_after=response.retry_after if response else None,
        user_id=response.user_id if response else None,
        token_request=token,
        inner=tuple(_record(r, a, t) for r, a, t in (response.inner if response else [])),
    )


class GraphEmulator:
    def __init__(
        self,
        *,
        faults: Faults | None = None,
        require_auth: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        arc_key_files: ArcKeyFiles | None = None,
    ) -> None:
        self._clock_offset = 0.0
        # The tenant stamps users with the emulator's clock, so replication lag follows
        # advance_clock() as token expiry does.
        self.tenant = Tenant(clock=self.now)
        self.faults = faults or Faults()
        self.require_auth = require_auth
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._log: list[RecordedRequest] = []
        self._graph_requests = 0
        self._server: LoopbackServer | None = None
        self._dice = FaultDice(self.faults)
        self._tokens = TokenStore(self.now, lambda: self.faults.token_roles)
        self._identity = IdentityEndpoints(
            self._tokens,
            lambda: self.url,
            lambda: self.faults.token_lifetime_s,
            self.now,
            arc_key_files,
        )
        self._router = GraphRouter(self.tenant, self.faults, lambda: self.url, self.now, self._dice)
        self._token_routes = {
            "/msi/token": self._identity.app_service,
            "/arc/token": self._identity.arc,
            "/metadata/identity/oauth2/token": self._identity.imds,
        }

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is None:
            self._server = LoopbackServer((self._host, self._port), self.handle)
            self._server.start()

    def stop(self) -> None:
        """Close every connection and remove any Arc key files; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        self._identity.key_files.close()

    def __enter__(self) -> GraphEmulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- environment for azure-identity ---------------------------------------------------

    def managed_identity_env(self) -> dict[str, str]:
        """App Service / Functions / Automation flow."""
        return {
            "IDENTITY_ENDPOINT": f"{self.url}/msi/token",
            "IDENTITY_HEADER": self._identity.identity_header,
        }

    def client_environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` made to send the real ManagedIdentityCredential to this emulator: the
        variables of every other managed-identity flow removed, the App Service ones added,
        and loopback exempt from any proxy `base` names."""
        return identity_environment(base, self.managed_identity_env())

    def arc_env(self) -> dict[str, str]:
        """Azure Arc challenge flow (writes key files under /var/opt/azcmagent/tokens)."""
        return {"IDENTITY_ENDPOINT": f"{self.url}/arc/token", "IMDS_ENDPOINT": self.url}

    def imds_env(self) -> dict[str, str]:
        """Azure VM / AKS IMDS flow; the other managed-identity variables must be unset."""
        return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": self.url}

    # -- time -----------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's wall clock (epoch seconds), which tests may move forward."""
        return time.time() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move time on for token expiry and delta-token age, without sleeping."""
        self._clock_offset += seconds

    def change_photo_from_outside(self, user_id: str, data: bytes | None) -> None:
        """Play the user, Teams or the admin centre setting (None: removing) a user's photo:
        a new ETag, and not counted as a photo write of photosync's."""
        size = decode_image(data)[0] if data is not None else (0, 0)
        self.tenant.change_photo_from_outside(user_id, data, size)

    def expire_delta_tokens(self) -> None:
        """Make every delta token issued so far older than Graph's 7-day limit."""
        self._router.users.expire_delta_tokens()

    # -- inspection -----------------------------------------------------------------------

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    @property
    def graph_request_count(self) -> int:
        """Requests to /v1.0 since start or reset_log (token requests not counted)."""
        with self._lock:
            return self._graph_requests

    @property
    def issued_tokens(self) -> list[str]:
        return self._tokens.issued

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._graph_requests = 0

    # -- request handling -----------------------------------------------------------------

    def handle(self, req: EmuRequest) -> EmuResponse | None:
        """Answer one top-level request; None means drop the connection without answering."""
        arrived_at = time.monotonic()
        token_route = self._token_routes.get(req.path.rstrip("/"))
        if token_route is not None:
            response: EmuResponse | None = token_route(req)
            self._append(_record(req, response, arrived_at, token=True), graph=False)
            return response
        response = self._handle_graph(req)
        self._append(_record(req, response, arrived_at), graph=req.path.startswith("/v1.0/"))
        return response

    def _handle_graph(self, req: EmuRequest) -> EmuResponse | None:
        request_id = str(uuid.uuid4())
        ids = RequestIds(request_id, req.header("client-request-id") or request_id)
        if self.faults.before_request is not None:
            self.faults.before_request(req.method, req.path)
        if self.faults.latency_s > 0:
            time.sleep(self.faults.latency_s)
        try:
            response = self._admit(req, ids)
        except ApiError as exc:
            response = exc.to_response(ids)
        if response is None:
            return None
        response.headers.update(ids.headers())
        response.headers["x-ms-ags-diagnostic"] = _DIAGNOSTIC
        return response

    def _admit(self, req: EmuRequest, ids: RequestIds) -> EmuResponse | None:
        """Gateway checks (auth, injected faults) before the request reaches a route."""
        if not req.path.startswith("/v1.0/"):
            raise ApiError(400, "BadRequest", "Invalid version: only /v1.0 is served.")
        if self.require_auth:
            self._tokens.check(req.header("Authorization"))
        verdict = self._dice.roll()
        if verdict == "drop":
            return None
        if verdict != "ok":
            wait = 0.05 if self.faults.fractional_retry_after else 1.0
            code = "TooManyRequests" if verdict == "429" else "serviceNotAvailable"
            raise throttled(self.faults, wait, code=code)
        return self._router.dispatch(req, ids)

    def _append(self, record: RecordedRequest, *, graph: bool) -> None:
        with self._lock:
            self._log.append(record)
            self._graph_requests += graph
