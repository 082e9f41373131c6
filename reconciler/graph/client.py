"""The Microsoft Graph client: the only code that talks HTTP to Graph.

It returns our model types and raises our error types (reconciler.errors); nothing above it
sees requests or Graph's JSON. It needs only User.Read.All and ProfilePhoto.ReadWrite.All.

Retries. Every logical call (one page, one upload) is retried here on transient failures
(429, 408, 500/502/503/504, resets, timeouts) up to `max_attempts` HTTP attempts, waiting the
Retry-After Graph names or else exponential backoff with full jitter. Each HTTP attempt
carries its own fresh client-request-id: Microsoft support traces single requests by that id,
so giving a retry the id of the attempt that failed would merge two requests into one trace.
Every failed attempt is logged with its own id, and the error raised carries the last one.

Throttling. A Retry-After from any response sets one not-before moment shared by all threads
(NotBefore): nothing is sent to Graph before it. Uploads additionally pass an AIMD limiter
(concurrency halved on a 429, grown back slowly) and a Pacer (a write rate learned from 429s).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from reconciler import DISTRIBUTION
from reconciler.errors import (
    AuthError,
    DeltaResyncRequired,
    GraphError,
    GraphOperation,
    GraphUnreachableError,
    PermanentGraphError,
    TransientGraphError,
    graph_advice,
)
from reconciler.graph.auth import TokenProvider
from reconciler.graph.throttle import (
    AdaptiveLimiter,
    NotBefore,
    Pacer,
    Signal,
    Ticket,
    backoff_delay,
    parse_retry_after,
)
from reconciler.model import USER_SELECT, UploadReceipt, User, UserChanges, UserPatch

log = logging.getLogger("reconciler.graph")

TRANSIENT_STATUSES: Final = frozenset({408, 429, 500, 502, 503, 504})
_RESYNC_CODES: Final = frozenset({"syncstatenotfound", "resyncrequired"})
_NO_PHOTO_CODES: Final = frozenset({"imagenotfound", "errorentitynotfound"})
BATCH_LIMIT: Final = 20
# Graph's default limit on expressions in one $filter (each value of an `in` list counts);
# see docs/graph-behaviour.md, "Filter expression limit".
FILTER_VALUES_LIMIT: Final = 15
_USER_GONE_CODES: Final = frozenset({"request_resourcenotfound"})


def _user_agent() -> str:
    try:
        return f"photosync/{version(DISTRIBUTION)}"
    except PackageNotFoundError:
        return "photosync/0+unknown"


@dataclass(frozen=True, slots=True)
class ErrorEnvelope:
    """What a Graph error body says, parsed leniently (bodies are not always JSON)."""

    code: str | None
    message: str
    request_id: str | None


def parse_error_body(body: Any, *, fallback: str) -> ErrorEnvelope:
    """Parse `{"error": {"code", "message", "innerError"|"innererror": {"request-id"}}}`.

    `body` may be bytes, str or an already-decoded JSON value ($batch inner responses).
    """
    data = body
    if isinstance(body, bytes | str):
        try:
            data = json.loads(body) if body else None
        except ValueError:
            text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
            return ErrorEnvelope(None, " ".join(text.split())[:200] or fallback, None)
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return ErrorEnvelope(None, fallback, None)
    inner = error.get("innerError") or error.get("innererror") or {}
    request_id = inner.get("request-id") if isinstance(inner, dict) else None
    code = error.get("code")
    message = error.get("message")
    return ErrorEnvelope(
        code if isinstance(code, str) else None,
        message if isinstance(message, str) and message else fallback,
        request_id if isinstance(request_id, str) else None,
    )


def classify_status(status: int) -> type[GraphError]:
    """Which of our error types an HTTP error status becomes (401 is handled before this)."""
    if status in TRANSIENT_STATUSES:
        return TransientGraphError
    return PermanentGraphError


def graph_error(
    status: int,
    envelope: ErrorEnvelope,
    *,
    client_request_id: str,
    attempts: int,
    retry_after: float | None,
    operation: GraphOperation,
    request_id: str | None = None,
) -> GraphError:
    """Our error for one failed response, with the advice its status and code call for."""
    return classify_status(status)(
        envelope.message,
        status=status,
        code=envelope.code,
        request_id=envelope.request_id or request_id,
        client_request_id=client_request_id,
        attempts=attempts,
        retry_after=retry_after,
        advice=graph_advice(status, envelope.code, operation),
    )


def odata_string(value: str) -> str:
    """`value` as an OData string literal: quoted, with each `'` doubled. Percent-encoding
    (`#`, `&`, `+`, spaces, non-ASCII) is left to the URL layer."""
    return "'" + value.replace("'", "''") + "'"


def in_filter(match_property: str, values: Sequence[str]) -> str:
    """`prop in ('a','b')`: one expression per value, as Graph counts them."""
    return f"{match_property} in ({','.join(odata_string(v) for v in values)})"


def chunked(values: Sequence[str], size: int) -> list[Sequence[str]]:
    """`values` in runs of at most `size`, in order, duplicates dropped."""
    unique = list(dict.fromkeys(values))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


def is_resync(error: GraphError) -> bool:
    """True when a delta request failed because its token is gone (docs/graph-behaviour.md,
    "Delta tokens expire")."""
    if error.status == 410:
        return True
    return error.status == 400 and (error.code or "").lower() in _RESYNC_CODES


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps, outermost first: requests wraps urllib3, which keeps the
    socket error in MaxRetryError.reason or in ProtocolError's args."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException):
            wrapped = (a for a in reversed(current.args) if isinstance(a, BaseException))
            nested = next(wrapped, None)
        current = nested


def network_reason(exc: requests.RequestException) -> str:
    """A short, URL-free description of a failure below HTTP."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timed out"
    if isinstance(exc, requests.Timeout):
        return "read timed out"
    *_, root = _causes(exc)
    return f"connection failed ({type(root).__name__})"


def is_unreachable(exc: requests.RequestException) -> bool:
    """Refused connection, DNS failure or connect timeout: nothing answers at graph_url."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    # NewConnectionError covers refused connections and (as NameResolutionError) DNS.
    return any(isinstance(cause, NewConnectionError) for cause in _causes(exc))


@dataclass(frozen=True, slots=True)
class _Call:
    """One logical Graph call: what to send and how to describe it in logs."""

    method: str
    url: str
    what: str
    user_id: str | None = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    data: bytes | None = None
    json_body: Any = None
    writes: int = 0  # photo writes carried: gates the request through the AIMD limiter
    # Statuses that answer the question rather than fail it (404 for "has no photo").
    expected: frozenset[int] = frozenset()
    # What the call does, for the advice on its failures (user reads unless said otherwise).
    operation: GraphOperation = GraphOperation.USER_READ


@dataclass(frozen=True, slots=True)
class _Done:
    response: requests.Response
    attempts: int
    client_request_id: str


class GraphClient:
    """Microsoft Graph for photosync: list and track users, upload and read profile photos."""

    def __init__(
        self,
        graph_url: str,
        tokens: TokenProvider,
        *,
        concurrency: int = 4,
        max_attempts: int = 6,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.graph_url = graph_url.rstrip("/")
        self._api = f"{self.graph_url}/v1.0"
        self._tokens = tokens
        self._max_attempts = max(1, max_attempts)
        self._timeout = (connect_timeout, read_timeout)
        self._backoff = (backoff_base_s, backoff_cap_s)
        self._session = session or self._new_session(concurrency)
        self._user_agent = _user_agent()
        self._gate = NotBefore()
        self._pacer = Pacer()
        self._limiter = AdaptiveLimiter(concurrency, pacer=self._pacer)
        self._count_lock = threading.Lock()
        self._count = 0
        self._reached = False

    @staticmethod
    def _new_session(concurrency: int) -> requests.Session:
        session = requests.Session()
        # Retries are ours (they must honour Retry-After and our budget); the pool must
        # hold a connection per upload thread or urllib3 discards and reopens them.
        # Three pools may share it: uploads, the archive's reads before them and the ETag
        # reads after them (reconciler/executor.py).
        adapter = HTTPAdapter(pool_maxsize=max(10, concurrency * 3), max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    @property
    def request_count(self) -> int:
        """HTTP requests sent to Graph by this client (token requests not included)."""
        with self._count_lock:
            return self._count

    @property
    def concurrency_limit(self) -> int:
        """The AIMD limit on uploads in flight right now."""
        return self._limiter.limit

    @property
    def write_rate(self) -> float | None:
        """The write rate learned from 429s (per second); None before the first 429."""
        return self._pacer.rate

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- users ---------------------------------------------------------------------------

    def list_users(
        self, select: Sequence[str] = USER_SELECT, *, page_size: int = 999
    ) -> Iterator[list[User]]:
        """Every user, one page at a time as Graph sends them (memory stays flat)."""
        params: dict[str, str] | None = {"$select": ",".join(select), "$top": str(page_size)}
        url: str | None = f"{self._api}/users"
        while url is not None:
            page = self._get_json(url, "list users", params)
            params = None  # nextLink carries the query; it is used verbatim
            yield [User.from_graph(item) for item in page.get("value", [])]
            next_link = page.get("@odata.nextLink")
            url = self._own_link(next_link, "list users") if next_link else None

    def delta_latest(self, select: Sequence[str] = USER_SELECT) -> str:
        """A delta link for 'from now on', without downloading any users."""
        params = {"$select": ",".join(select), "$deltatoken": "latest"}
        return self.delta(self._with_query(f"{self._api}/users/delta", params)).delta_link

    def delta(self, delta_link: str) -> UserChanges:
        """The users changed and removed since `delta_link`, and the link to resume from."""
        if not self._is_own(delta_link):
            # Saved while graph_url pointed elsewhere (another cloud, an emulator): its state
            # means nothing here, and following it would send our token to that host.
            raise DeltaResyncRequired(f"the saved delta link is not for {self.graph_url}")
        upserted: dict[str, UserPatch] = {}
        removed: dict[str, None] = {}  # an ordered set
        url = delta_link
        while True:
            page = self._delta_page(url)
            for item in page.get("value", []):
                _apply_delta_item(item, upserted, removed)
            if "@odata.deltaLink" in page:
                return UserChanges(
                    tuple(upserted.values()), tuple(removed), page["@odata.deltaLink"]
                )
            if "@odata.nextLink" not in page:
                raise TransientGraphError("user delta: a page with neither nextLink nor deltaLink")
            url = self._own_link(page["@odata.nextLink"], "user delta")

    def _delta_page(self, url: str) -> dict[str, Any]:
        try:
            return self._get_json(url, "user delta", None)
        except (PermanentGraphError, TransientGraphError) as exc:
            if is_resync(exc):
                raise DeltaResyncRequired.of(exc.details) from exc
            raise

    # -- single users and lookups -----------------------------------------------------

    def get_user(self, user_id: str, select: Sequence[str]) -> dict[str, Any] | None:
        """`GET /users/{id}?$select=…`: the user as Graph sends it, every selected property
        present (None when unset); None when Graph answers 404 Request_ResourceNotFound.
        One request."""
        call = _Call(
            "GET",
            f"{self._api}/users/{quote(user_id, safe='@')}",
            "get user",
            user_id=user_id,
            params={"$select": ",".join(select)},
            expected=frozenset({404}),
        )
        try:
            done = self._execute(call)
        except PermanentGraphError as exc:
            if exc.status == 404 and (exc.code or "").lower() in _USER_GONE_CODES:
                return None
            raise
        return _with_selected(self._json_object(done, "get user"), select)

    def photo_update_settings(self) -> dict[str, Any]:
        """`GET /admin/people/photoUpdateSettings`: whether the tenant lets cloud services
        change photos (`source`); needs PeopleSettings.Read.All (docs/graph-behaviour.md).
        One request; used by `photosync doctor`."""
        return self._get_json(
            f"{self._api}/admin/people/photoUpdateSettings", "read photo update settings", None
        )

    def find_users(
        self, match_property: str, values: Sequence[str], select: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The users whose `match_property` equals any of `values`, as Graph sends them (every
        selected property present, `id` always selected), each user once.

        Uses `$filter=<prop> in (...)`, which Graph serves without advanced query parameters
        for the properties photosync matches on, in requests of at most FILTER_VALUES_LIMIT
        values. Cost: ⌈k/15⌉ requests for k distinct values, plus one per nextLink when a
        request matches more than 999 users. Graph compares strings case-insensitively.
        """
        wanted = ["id", *(name for name in select if name != "id")]
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunked(values, FILTER_VALUES_LIMIT):
            params: dict[str, str] | None = {
                "$filter": in_filter(match_property, chunk),
                "$select": ",".join(wanted),
                "$top": "999",
            }
            url: str | None = f"{self._api}/users"
            while url is not None:
                page = self._get_json(url, "find users", params)
                params = None  # nextLink carries the query; it is used verbatim
                for item in page.get("value", []):
                    if isinstance(item, dict) and item.get("id") is not None:
                        found.setdefault(str(item["id"]), _with_selected(item, wanted))
                next_link = page.get("@odata.nextLink")
                url = self._own_link(next_link, "find users") if next_link else None
        return list(found.values())

    def _explain_write_404(self, user_id: str, error: PermanentGraphError) -> GraphError:
        """A photo write answered 404: ask Graph once whether the user is still there, so the
        advice says "deleted" or "no photo store" instead of guessing between them."""
        if error.status != 404:
            return error
        try:
            exists: bool | None = self.get_user(user_id, ["id"]) is not None
        except (AuthError, GraphUnreachableError):
            raise
        except GraphError:
            exists = None  # could not tell: the advice says what both cases would mean
        advice = graph_advice(404, error.code, GraphOperation.PHOTO_WRITE, user_exists=exists)
        return error.advised(advice)

    # -- photos --------------------------------------------------------------------------

    def upload_photo(self, user_id: str, data: bytes, content_type: str) -> UploadReceipt:
        """PUT the photo bytes as they are; Graph keeps what it is sent."""
        call = _Call(
            "PUT",
            f"{self._photo_url(user_id)}/$value",
            "upload photo",
            user_id=user_id,
            headers={"Content-Type": content_type},
            data=data,
            writes=1,
            operation=GraphOperation.PHOTO_WRITE,
        )
        try:
            done = self._execute(call)
        except PermanentGraphError as exc:
            raise self._explain_write_404(user_id, exc) from None
        return UploadReceipt(done.attempts, done.response.status_code, done.client_request_id)

    def get_photo(self, user_id: str) -> bytes | None:
        """The user's photo bytes, or None when the user has none."""
        call = _Call(
            "GET",
            f"{self._photo_url(user_id)}/$value",
            "get photo",
            user_id=user_id,
            expected=frozenset({404}),
            operation=GraphOperation.PHOTO_READ,
        )
        try:
            return self._execute(call).response.content
        except PermanentGraphError as exc:
            if exc.status == 404 and (exc.code or "").lower() in _NO_PHOTO_CODES:
                return None
            raise

    def photo_etag(self, user_id: str) -> str | None:
        """The ETag of the user's photo (`@odata.mediaEtag` of the photo metadata), or None
        when the user has none. Graph gives a new one on every write, whoever made it, so
        it tells whether a photo is still the one photosync set (docs/graph-behaviour.md,
        "Photo ETags")."""
        call = _Call(
            "GET",
            self._photo_url(user_id),
            "get photo metadata",
            user_id=user_id,
            expected=frozenset({404}),
            operation=GraphOperation.PHOTO_READ,
        )
        try:
            done = self._execute(call)
        except PermanentGraphError as exc:
            if exc.status == 404 and (exc.code or "").lower() in _NO_PHOTO_CODES:
                return None
            raise
        return _media_etag(self._json_object(done, "get photo metadata"))

    def delete_photo(self, user_id: str) -> bool:
        """Remove the user's photo; False when there was none to remove."""
        call = _Call(
            "DELETE",
            f"{self._photo_url(user_id)}/$value",
            "delete photo",
            user_id=user_id,
            expected=frozenset({404}),
            writes=1,
            operation=GraphOperation.PHOTO_WRITE,
        )
        try:
            self._execute(call)
        except PermanentGraphError as exc:
            if exc.status == 404 and (exc.code or "").lower() in _NO_PHOTO_CODES:
                return False
            raise self._explain_write_404(user_id, exc) from None
        return True

    def photo_etags_batch(self, user_ids: Sequence[str]) -> dict[str, str | GraphError | None]:
        """The photo ETag of each user (None: no photo), BATCH_LIMIT metadata reads per JSON
        $batch. Inner 429/5xx are sent again after their Retry-After, up to max_attempts;
        other inner failures are returned for that user. ceil(U/20) requests for U users
        when nothing is throttled."""
        results: dict[str, str | GraphError | None] = {}
        attempts: dict[str, int] = dict.fromkeys(user_ids, 0)
        pending = list(dict.fromkeys(user_ids))
        while pending:
            chunk, pending = pending[:BATCH_LIMIT], pending[BATCH_LIMIT:]
            pending = self._send_etag_batch(chunk, attempts, results) + pending
        return results

    def _send_etag_batch(
        self,
        chunk: list[str],
        attempts: dict[str, int],
        results: dict[str, str | GraphError | None],
    ) -> list[str]:
        entries = [
            {"id": str(i), "method": "GET", "url": f"/users/{quote(u, safe='@')}/photo"}
            for i, u in enumerate(chunk)
        ]
        call = _Call(
            "POST",
            f"{self._api}/$batch",
            "photo metadata batch",
            json_body={"requests": entries},
            operation=GraphOperation.PHOTO_READ,
        )
        try:
            done = self._execute(call)
        except (AuthError, GraphUnreachableError):
            raise
        except GraphError as exc:
            for user_id in chunk:
                results[user_id] = exc
            return []
        retry: list[str] = []
        answered: set[str] = set()
        for inner in _batch_responses(done.response):
            index = int(inner["id"])
            if not 0 <= index < len(chunk):
                continue
            user_id = chunk[index]
            answered.add(user_id)
            attempts[user_id] += 1
            status = int(inner.get("status", 0))
            if 200 <= status < 300:
                body = inner.get("body")
                results[user_id] = _media_etag(body if isinstance(body, dict) else {})
                continue
            headers = {str(k).lower(): str(v) for k, v in (inner.get("headers") or {}).items()}
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is not None:
                self._gate.defer(retry_after)
            envelope = parse_error_body(inner.get("body"), fallback=f"HTTP {status}")
            if status == 404 and (envelope.code or "").lower() in _NO_PHOTO_CODES:
                results[user_id] = None
                continue
            error = graph_error(
                status,
                envelope,
                client_request_id=done.client_request_id,
                attempts=attempts[user_id],
                retry_after=retry_after,
                operation=GraphOperation.PHOTO_READ,
            )
            if isinstance(error, TransientGraphError) and attempts[user_id] < self._max_attempts:
                retry.append(user_id)
            else:
                self._log_failure(error, "photo metadata batch item", user_id)
                results[user_id] = error
        for user_id in chunk:
            if user_id not in answered:
                results[user_id] = TransientGraphError(
                    f"photo metadata batch: no response for user {user_id}"
                )
        if retry:
            told = 0.0 if self._gate.remaining() > 0 else None
            self._backoff_wait(max(attempts[u] for u in retry), told)
        return retry

    # -- the request engine --------------------------------------------------------------

    def _is_own(self, url: str) -> bool:
        ours, theirs = urlsplit(self.graph_url.lower()), urlsplit(url.lower())
        return (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc)

    def _own_link(self, url: str, what: str) -> str:
        """A nextLink, used verbatim — but only on our Graph host: it gets our bearer token."""
        if not self._is_own(url):
            raise PermanentGraphError(
                f"{what}: Graph sent a link to another host ({urlsplit(url).netloc}); "
                "not following it"
            )
        return url

    def _photo_url(self, user_id: str) -> str:
        return f"{self._api}/users/{quote(user_id, safe='@')}/photo"

    @staticmethod
    def _with_query(url: str, params: Mapping[str, str]) -> str:
        prepared = requests.Request("GET", url, params=params).prepare()
        return str(prepared.url)

    def _get_json(self, url: str, what: str, params: Mapping[str, str] | None) -> dict[str, Any]:
        return self._json_object(self._execute(_Call("GET", url, what, params=params)), what)

    @staticmethod
    def _json_object(done: _Done, what: str) -> dict[str, Any]:
        try:
            payload = done.response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            # Like every error we raise, it carries the ids Microsoft support asks for.
            raise TransientGraphError(
                f"{what}: Graph sent a body that is not a JSON object",
                status=done.response.status_code,
                client_request_id=done.client_request_id,
                attempts=done.attempts,
            )
        return payload

    def _execute(self, call: _Call) -> _Done:
        """Send `call` until it succeeds, fails for good, or the retry budget is spent."""
        attempts = 0
        refreshed = False
        while True:
            attempts += 1
            crid = str(uuid.uuid4())
            error: GraphError
            try:
                response, token = self._send(call, crid)
            except requests.RequestException as exc:
                error = self._network_error(exc, call, crid, attempts)
            else:
                if 200 <= response.status_code < 300:  # redirects are not followed: errors
                    return _Done(response, attempts, crid)
                if response.status_code == 401:
                    self._on_unauthorized(response, call, crid, refreshed, token)
                    refreshed = True
                    continue
                error = self._response_error(response, call, crid, attempts)
            quiet = error.status in call.expected
            self._log_failure(error, call.what, call.user_id, quiet=quiet)
            if not isinstance(error, TransientGraphError) or attempts >= self._max_attempts:
                raise error
            self._backoff_wait(attempts, error.retry_after)

    def _send(self, call: _Call, crid: str) -> tuple[requests.Response, str]:
        """One HTTP attempt, after the shared gate (and, for writes, limiter and pacer).

        Returns the response and the token it carried. The token is taken after the waits,
        so a long Retry-After cannot leave it stale.
        """
        gate: AbstractContextManager[Any] = (
            self._limiter.slot(call.writes) if call.writes else nullcontext()
        )
        with gate as ticket:
            self._gate.wait()
            token = self._tokens.token()
            with self._count_lock:
                self._count += 1
            response = self._session.request(
                call.method,
                call.url,
                params=call.params,
                data=call.data,
                json=call.json_body,
                headers=self._headers(call, token, crid),
                timeout=self._timeout,
                allow_redirects=False,
            )
            self._reached = True
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and response.status_code >= 400:
                self._gate.defer(retry_after)
            if isinstance(ticket, Ticket):
                _report(ticket, response)
            return response, token

    def _headers(self, call: _Call, token: str, crid: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "User-Agent": self._user_agent,
            "client-request-id": crid,
            "return-client-request-id": "true",
            **call.headers,
        }

    def _backoff_wait(self, attempts: int, retry_after: float | None) -> None:
        """Wait before the next attempt: Graph's Retry-After (already on the shared gate),
        else our own exponential backoff with jitter."""
        if retry_after is None:
            base, cap = self._backoff
            time.sleep(backoff_delay(attempts, base=base, cap=cap))
        self._gate.wait()

    def _on_unauthorized(
        self,
        response: requests.Response,
        call: _Call,
        crid: str,
        refreshed: bool,
        token: str,
    ) -> None:
        envelope = parse_error_body(response.content, fallback="unauthorized")
        self._log(logging.WARNING, call.what, call.user_id, 401, envelope.code, crid)
        if refreshed:
            raise AuthError(
                f"auth '{self._tokens.mode}' failed: Microsoft Graph rejected a fresh token "
                f"(HTTP 401 {envelope.code or ''}, client-request-id {crid}); check that the "
                "identity is in this tenant and that graph_url matches its cloud"
            )
        self._tokens.refresh(token)

    def _response_error(
        self, response: requests.Response, call: _Call, crid: str, attempts: int
    ) -> GraphError:
        envelope = parse_error_body(response.content, fallback=response.reason or "error")
        return graph_error(
            response.status_code,
            envelope,
            client_request_id=crid,
            attempts=attempts,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            operation=call.operation,
            request_id=response.headers.get("request-id"),
        )

    def _network_error(
        self, exc: requests.RequestException, call: _Call, crid: str, attempts: int
    ) -> TransientGraphError:
        reason = network_reason(exc)
        if not self._reached and is_unreachable(exc):
            raise GraphUnreachableError(
                f"Graph unreachable at {self.graph_url} ({reason}); check graph_url/network",
                client_request_id=crid,
                attempts=attempts,
            ) from exc
        return TransientGraphError(
            f"{call.what}: {reason}", client_request_id=crid, attempts=attempts
        )

    def _log_failure(
        self, error: GraphError, what: str, user_id: str | None, *, quiet: bool = False
    ) -> None:
        # 429s are the normal price of a big run; the AIMD/pacer lines tell the story.
        level = logging.INFO if error.status == 429 else logging.WARNING
        level = logging.DEBUG if quiet else level
        self._log(level, what, user_id, error.status, error.code, error.client_request_id, error)

    @staticmethod
    def _log(
        level: int,
        what: str,
        user_id: str | None,
        status: int | None,
        code: str | None,
        crid: str | None,
        error: GraphError | None = None,
    ) -> None:
        log.log(
            level,
            "%s failed: HTTP %s %s (client-request-id %s)%s",
            what,
            status if status is not None else "-",
            code or "",
            crid,
            f": {error.graph_message}" if error is not None else "",
            extra={"client_request_id": crid, "http_status": status, "user_id": user_id},
        )


def _report(ticket: Ticket, response: requests.Response) -> None:
    """Tell the limiter what a write request says about load."""
    if response.status_code == 429:
        ticket.signal = Signal.THROTTLED
    elif 200 <= response.status_code < 300:
        ticket.signal = Signal.OK


def _apply_delta_item(
    item: Mapping[str, Any], upserted: dict[str, UserPatch], removed: dict[str, None]
) -> None:
    """Fold one delta entry in. An item is a patch (only what it carries changed), so two
    items for one id in a round merge, the later one winning per property; a removal
    forgets what came before it, and a later item after a removal is a restore."""
    user_id = str(item["id"])
    if "@removed" in item:
        upserted.pop(user_id, None)
        removed[user_id] = None
        return
    removed.pop(user_id, None)
    carried = {k: v for k, v in item.items() if k != "id" and not k.startswith("@")}
    earlier = upserted.pop(user_id, None)  # re-insert so order follows the latest change
    merged = {**earlier.properties, **carried} if earlier is not None else carried
    upserted[user_id] = UserPatch(user_id, merged)


def _batch_responses(response: requests.Response) -> list[Mapping[str, Any]]:
    payload = response.json()
    inner = payload.get("responses") if isinstance(payload, dict) else None
    return [r for r in inner or [] if isinstance(r, dict) and "id" in r]


def _with_selected(item: Mapping[str, Any], select: Sequence[str]) -> dict[str, Any]:
    """`item` with every selected property present: Graph may leave an unset one out."""
    return {**dict.fromkeys(select), **item}


def _media_etag(metadata: Mapping[str, Any]) -> str:
    etag = metadata.get("@odata.mediaEtag")
    if not isinstance(etag, str) or not etag:
        raise TransientGraphError("photo metadata: Graph sent no @odata.mediaEtag")
    return etag
