"""`/users`, `/users/{id}`, `/users/$count` and `/users/delta`.

Paging state lives on the server behind opaque tokens: a listing snapshots the matching users
once, and every page is a slice of that snapshot joined from per-user cached JSON, so a page
costs its own size whatever the tenant's.

The switches in `Faults` that make these routes keep only Graph's weakest promises act here:
`replication_lag_s` (young users are invisible everywhere), `delta_items` (how much a later
delta item carries), `hide_restores` and `latest_forgets_select`. See docs/graph-behaviour.md.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from reconciler.emulator.faults import Faults
from reconciler.emulator.odata import (
    DEFAULT_ORDERBY,
    Node,
    check_expression_limit,
    check_filter,
    id_filter,
    is_advanced,
    is_eventual,
    matches,
    parse_filter,
    parse_orderby,
    parse_select,
)
from reconciler.emulator.tenant import (
    DEFAULT_PROPERTIES,
    Change,
    Tenant,
    Tombstone,
    UserRecord,
)
from reconciler.emulator.wire import (
    ApiError,
    EmuRequest,
    EmuResponse,
    bad_request,
    encode_query,
    json_response,
    raw_json_response,
    unsupported_query,
)

DEFAULT_PAGE = 100
MAX_PAGE = 999
DELTA_PAGE = 200
DELTA_TOKEN_LIFETIME_S = 7 * 24 * 3600
DELTA_ITEM_MODES = frozenset({"selected", "changed", "sparse"})

T = TypeVar("T")


class TokenTable(Generic[T]):
    """Opaque token -> server state, forgetting the oldest beyond `limit` (None: never)."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._items: OrderedDict[str, T] = OrderedDict()

    def put(self, state: T) -> str:
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._items[token] = state
            if self._limit is not None and len(self._items) > self._limit:
                self._items.popitem(last=False)
        return token

    def get(self, token: str) -> T | None:
        with self._lock:
            return self._items.get(token)

    def update_all(self, change: Callable[[T], T]) -> None:
        with self._lock:
            for token, state in self._items.items():
                self._items[token] = change(state)


def _page_token(cursor: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{cursor}:{offset}".encode()).decode().rstrip("=")


def _read_page_token(token: str) -> tuple[str, int] | None:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        cursor, _, offset = text.rpartition(":")
        return cursor, int(offset)
    except ValueError:
        return None


def _envelope(head: dict[str, Any], items: Sequence[bytes]) -> EmuResponse:
    """A collection body whose items are pre-serialised JSON objects."""
    prefix = json.dumps(head)[:-1].encode()
    return raw_json_response(prefix + b',"value":[' + b",".join(items) + b"]}")


def _context(base: str, select: tuple[str, ...]) -> str:
    suffix = "" if select == DEFAULT_PROPERTIES else f"({','.join(select)})"
    return f"{base}/v1.0/$metadata#users{suffix}"


def _prefer(req: EmuRequest) -> dict[str, str]:
    prefs: dict[str, str] = {}
    for part in (req.header("Prefer") or "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            prefs[name.lower()] = value.strip().strip('"')
    return prefs


def not_found(key: str) -> ApiError:
    return ApiError(
        404,
        "Request_ResourceNotFound",
        f"Resource '{key}' does not exist or one of its queried reference-property objects "
        "are not present.",
    )


@dataclass(frozen=True)
class ListCursor:
    records: list[UserRecord]
    select: tuple[str, ...]


@dataclass(frozen=True)
class DeltaState:
    """What a deltaLink remembers: where the last round ended and what it tracked."""

    seq: int
    select: tuple[str, ...]
    ids: tuple[str, ...]
    issued_at: float
    # Users created by `seq` but still invisible (replication lag) when the round ended: the
    # next round must report them once they show, although their changes are older than `seq`.
    pending: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DeltaCursor:
    changes: list[Change]
    since: int | None  # None: the initial round
    select: tuple[str, ...]
    ids: tuple[str, ...]
    end_seq: int
    minimal: bool = False
    items: str = "selected"  # Faults.delta_items when the round started
    hide_restores: bool = False
    # Users that were pending and are visible now: reported as new objects.
    fresh: frozenset[str] = frozenset()
    pending: frozenset[str] = frozenset()


def _sync_state_not_found() -> ApiError:
    return ApiError(
        400,
        "syncStateNotFound",
        "The sync state generation is not found. The delta token is expired and data must be "
        "synchronized again.",
    )


class UserRoutes:
    def __init__(
        self,
        tenant: Tenant,
        faults: Faults,
        base_url: Callable[[], str],
        clock: Callable[[], float],
    ) -> None:
        self._tenant = tenant
        self._faults = faults
        self._base_url = base_url
        self._clock = clock
        self._lists: TokenTable[ListCursor] = TokenTable(limit=64)
        self._delta_pages: TokenTable[DeltaCursor] = TokenTable(limit=64)
        self._delta_states: TokenTable[DeltaState] = TokenTable(limit=None)
        self._gone_lock = threading.Lock()

    # -- /users ---------------------------------------------------------------------------

    def list_users(self, req: EmuRequest) -> EmuResponse:
        top = self._page_size(req)
        advanced = is_advanced(req)
        select = parse_select(req.option("$select"))
        node = self._filter(req, advanced)
        order = self._orderby(req, advanced, filtered=node is not None)
        self._refuse_search(req)
        token = req.option("$skiptoken")
        if token is not None:
            cursor_id, cursor, offset = self._resume_list(token)
        else:
            cursor = self._snapshot(node, order, select)
            cursor_id, offset = self._lists.put(cursor), 0
        return self._list_page(req, cursor_id, cursor, offset, top, advanced and token is None)

    def count(self, req: EmuRequest) -> EmuResponse:
        if not is_eventual(req):
            raise bad_request("$count is not currently supported.")
        node = self._filter(req, advanced=True)
        total = sum(1 for r in self._visible_records() if node is None or matches(node, r.props))
        return EmuResponse(200, {"Content-Type": "text/plain"}, str(total).encode())

    def get_user(self, req: EmuRequest, key: str) -> EmuResponse:
        record = self._tenant.resolve(key)
        if record is None or not self._is_visible(record):
            raise not_found(key)
        select = parse_select(req.option("$select"), collection=False)
        payload = {"@odata.context": f"{_context(self._base_url(), select)}/$entity"}
        payload.update(record.project(select))
        return json_response(payload)

    def _page_size(self, req: EmuRequest) -> int:
        raw = req.option("$top")
        if raw is None:
            return DEFAULT_PAGE
        try:
            top = int(raw)
        except ValueError:
            top = -1
        if not 1 <= top <= MAX_PAGE:
            raise unsupported_query(
                f"Invalid page size specified: '{raw}'. Must be between 1 and {MAX_PAGE} inclusive."
            )
        return top

    def _filter(self, req: EmuRequest, advanced: bool) -> Node | None:
        text = req.option("$filter")
        if text is None or not text.strip():
            return None
        node = parse_filter(text)
        check_filter(node, advanced=advanced)
        check_expression_limit(node, advanced=advanced)
        return node

    def _orderby(
        self, req: EmuRequest, advanced: bool, *, filtered: bool
    ) -> tuple[str, bool] | None:
        raw = req.option("$orderby")
        if raw is None:
            return None
        prop, descending = parse_orderby(raw)
        if not advanced and (filtered or prop not in DEFAULT_ORDERBY):
            raise unsupported_query("Sorting not supported for current query.")
        return prop, descending

    def _refuse_search(self, req: EmuRequest) -> None:
        if req.option("$search") is None:
            return
        if not is_eventual(req):
            raise unsupported_query(
                "Request with $search query parameter only works through MSGraph with a special "
                "request header: 'ConsistencyLevel: eventual'"
            )
        raise ApiError(501, "NotImplemented", "$search is not implemented by the emulator.")

    def _snapshot(
        self, node: Node | None, order: tuple[str, bool] | None, select: tuple[str, ...]
    ) -> ListCursor:
        records = self._visible_records()
        if node is not None:
            records = [r for r in records if matches(node, r.props)]
        if order is not None:
            prop, descending = order
            # Nulls sort last either way, as the directory does.
            present = [r for r in records if r.props.get(prop) is not None]
            present.sort(key=lambda r: str(r.props[prop]).casefold(), reverse=descending)
            records = present + [r for r in records if r.props.get(prop) is None]
        return ListCursor(records, select)

    def _resume_list(self, token: str) -> tuple[str, ListCursor, int]:
        parsed = _read_page_token(token)
        cursor = self._lists.get(parsed[0]) if parsed is not None else None
        if parsed is None or cursor is None:
            raise bad_request("The $skiptoken is invalid or has expired.")
        cursor_id, offset = parsed
        return cursor_id, cursor, offset

    def _list_page(
        self,
        req: EmuRequest,
        cursor_id: str,
        cursor: ListCursor,
        offset: int,
        top: int,
        with_count: bool,
    ) -> EmuResponse:
        base = self._base_url()
        page = cursor.records[offset : offset + top]
        head: dict[str, Any] = {"@odata.context": _context(base, cursor.select)}
        if with_count:
            head["@odata.count"] = len(cursor.records)
        if offset + top < len(cursor.records):
            skip = _page_token(cursor_id, offset + top)
            pairs = tuple(p for p in req.query_pairs if p[0].lower() != "$skiptoken")
            query = encode_query((*pairs, ("$skiptoken", skip)))
            head["@odata.nextLink"] = f"{base}/v1.0/users?{query}"
        return _envelope(head, [r.json_for(cursor.select) for r in page])

    # -- replication lag ------------------------------------------------------------------

    def _visible_since(self) -> float | None:
        """Users created after this moment are not replicated yet; None: no lag."""
        lag = self._faults.replication_lag_s
        return self._clock() - lag if lag > 0 else None

    def _is_visible(self, record: UserRecord) -> bool:
        cutoff = self._visible_since()
        return cutoff is None or record.created_at <= cutoff

    def _visible_records(self) -> list[UserRecord]:
        records = self._tenant.records()
        cutoff = self._visible_since()
        if cutoff is None:
            return records
        return [r for r in records if r.created_at <= cutoff]

    def _invisible_ids(self) -> frozenset[str]:
        cutoff = self._visible_since()
        if cutoff is None:
            return frozenset()
        return frozenset(r.id for r in self._tenant.records() if r.created_at > cutoff)

    # -- /users/delta ---------------------------------------------------------------------

    def delta(self, req: EmuRequest) -> EmuResponse:
        if self._take_gone_once():
            raise self._gone(req)
        skiptoken = req.option("$skiptoken")
        deltatoken = req.option("$deltatoken")
        if skiptoken is not None:
            cursor_id, _, offset = skiptoken.partition(".")
            cursor = self._delta_pages.get(cursor_id)
            if cursor is None or not offset.isdigit():
                raise _sync_state_not_found()
            return self._delta_page(req, cursor, cursor_id, int(offset))
        if deltatoken and deltatoken.lower() == "latest":
            # No changes, only a deltaLink from now on: an empty round that ends at once.
            select, ids = self._delta_scope(req)
            if self._faults.latest_forgets_select:
                select = DEFAULT_PROPERTIES
            end = self._tenant.seq
            pending = self._invisible_ids()
            cursor = DeltaCursor([], None, select, ids, end, pending=pending)
        elif deltatoken:
            cursor = self._next_round(req, self._delta_state(deltatoken))
        else:
            cursor = self._initial_round(req)
        return self._delta_page(req, cursor, None, 0)

    def _take_gone_once(self) -> bool:
        """Exactly one request sees the injected 410, however many arrive together."""
        with self._gone_lock:
            if not self._faults.delta_gone_once:
                return False
            self._faults.delta_gone_once = False
            return True

    def expire_delta_tokens(self) -> None:
        """Age every delta token past the 7-day limit: the next use gets syncStateNotFound."""
        self._delta_states.update_all(lambda s: replace(s, issued_at=-math.inf))

    def _delta_scope(self, req: EmuRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
        select = parse_select(req.option("$select"))
        text = req.option("$filter")
        ids = id_filter(parse_filter(text)) if text and text.strip() else ()
        return select, ids

    def _delta_state(self, token: str) -> DeltaState:
        state = self._delta_states.get(token)
        if state is None or self._clock() - state.issued_at > DELTA_TOKEN_LIFETIME_S:
            raise _sync_state_not_found()
        return state

    def _initial_round(self, req: EmuRequest) -> DeltaCursor:
        select, ids = self._delta_scope(req)
        changes, end = self._tenant.initial_round()
        if ids:
            wanted = set(ids)
            changes = [c for c in changes if c.id in wanted]
        shown, pending = self._split_visible(changes)
        return DeltaCursor(shown, None, select, ids, end, pending=pending)

    def _next_round(self, req: EmuRequest, state: DeltaState) -> DeltaCursor:
        # A new $select on a deltaLink is allowed for directory objects
        # (docs/graph-behaviour.md, "Delta tokens expire").
        select = parse_select(req.option("$select")) if req.option("$select") else state.select
        items = self._faults.delta_items
        if items not in DELTA_ITEM_MODES:
            raise ApiError(
                500,
                "generalException",
                f"Emulator setting delta_items is {items!r}; use selected, changed or sparse.",
            )
        hide = self._faults.hide_restores
        changes, end = self._tenant.changes_since(state.seq)
        touched = {c.id for c in changes}
        # Users that were still replicating when the last round ended, untouched since.
        late = [
            r
            for user_id in state.pending
            if user_id not in touched and (r := self._tenant.record(user_id)) is not None
        ]
        wanted = set(state.ids)
        candidates = [
            c
            for c in [*late, *changes]
            if (not wanted or c.id in wanted)
            and (c.id in state.pending or _surfaces(c, select, state.seq, hide))
        ]
        shown, pending = self._split_visible(candidates)
        fresh = frozenset(c.id for c in shown if c.id in state.pending)
        minimal = _prefer(req).get("return") == "minimal"
        return DeltaCursor(
            shown,
            state.seq,
            select,
            state.ids,
            end,
            minimal=minimal,
            items=items,
            hide_restores=hide,
            fresh=fresh,
            pending=pending,
        )

    def _split_visible(self, changes: list[Change]) -> tuple[list[Change], frozenset[str]]:
        """The changes a round may show, and the ids of the users still replicating."""
        cutoff = self._visible_since()
        if cutoff is None:
            return changes, frozenset()
        shown: list[Change] = []
        hidden: set[str] = set()
        for change in changes:
            if isinstance(change, UserRecord) and change.created_at > cutoff:
                hidden.add(change.id)
            else:
                shown.append(change)
        return shown, frozenset(hidden)

    def _delta_page(
        self, req: EmuRequest, cursor: DeltaCursor, cursor_id: str | None, offset: int
    ) -> EmuResponse:
        size = DELTA_PAGE
        asked = _prefer(req).get("odata.maxpagesize", "")
        if asked.isdigit() and int(asked) > 0:
            size = min(size, int(asked))  # the server may lower its page size, never raise it
        end = offset + size
        items = [_render(c, cursor) for c in cursor.changes[offset:end]]
        head: dict[str, Any] = {"@odata.context": _context(self._base_url(), cursor.select)}
        if end < len(cursor.changes):
            cursor_id = cursor_id or self._delta_pages.put(cursor)
            head["@odata.nextLink"] = self._delta_url("$skiptoken", f"{cursor_id}.{end}")
        else:
            state = DeltaState(
                cursor.end_seq, cursor.select, cursor.ids, self._clock(), cursor.pending
            )
            head["@odata.deltaLink"] = self._delta_url("$deltatoken", self._delta_states.put(state))
        return _envelope(head, items)

    def _delta_url(self, name: str, token: str) -> str:
        return f"{self._base_url()}/v1.0/users/delta?{name}={token}"

    def _gone(self, req: EmuRequest) -> ApiError:
        """A synchronisation reset: Location is the initial query with an empty token."""
        token = req.option("$deltatoken") or ""
        state = self._delta_states.get(token)
        select = state.select if state else parse_select(req.option("$select"))
        pairs: tuple[tuple[str, str], ...] = ()
        if select != DEFAULT_PROPERTIES:
            pairs = (("$select", ",".join(select)),)
        location = (
            f"{self._base_url()}/v1.0/users/delta?{encode_query((*pairs, ('$deltatoken', '')))}"
        )
        return ApiError(
            410,
            "resyncRequired",
            "The delta token is no longer valid, and the app must reset the sync state.",
            headers={"Location": location},
        )


def _surfaces(change: Change, select: tuple[str, ...], since: int, hide_restores: bool) -> bool:
    """Only tracked (selected) properties make a user show up in a later round; with
    `hide_restores`, a restore from deleted items does not either (docs/graph-behaviour.md)."""
    if isinstance(change, Tombstone):
        return True
    return bool(change.changed_since(select, since, hide_restore=hide_restores))


def _render(change: Change, cursor: DeltaCursor) -> bytes:
    if isinstance(change, Tombstone):
        return json.dumps({"id": change.id, "@removed": {"reason": change.reason}}).encode()
    if cursor.since is None:
        return change.json_for(cursor.select, omit_null=True)
    since = cursor.since
    created = change.id in cursor.fresh or change.created_seq > since
    if created and cursor.items == "sparse":
        # Graph promises a new object "at least" its changed properties; the weakest reading
        # is an id and a name, the rest to be looked up.
        sparse = [p for p in ("id", "displayName") if p in cursor.select or p == "id"]
        return json.dumps(change.project(sparse, omit_null=True)).encode()
    if change.id in cursor.fresh:
        # Never reported before (it was still replicating): everything it has.
        return change.json_for(cursor.select, omit_null=True)
    changed = change.changed_since(cursor.select, since, hide_restore=cursor.hide_restores)
    if cursor.minimal or cursor.items != "selected":
        payload = change.project(["id", *changed])
    else:
        # All selected properties that have a value, plus those just cleared to null.
        payload = change.project(cursor.select, omit_null=True)
        payload.update({p: None for p in changed if p not in change.props})
    return json.dumps(payload).encode()
