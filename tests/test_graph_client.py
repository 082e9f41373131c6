"""GraphClient against the live loopback emulator, with the real ManagedIdentityCredential.

Nothing here mocks requests or our modules: every call crosses a socket to the emulator, and
tokens come from azure-identity's App Service flow pointed at the emulator's token endpoint.
The pure parsing/classification helpers are tested directly at the top.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import socket
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from azure.core.credentials import AccessToken

from reconciler.emulator import Faults, GraphEmulator, RecordedRequest
from reconciler.errors import (
    AuthError,
    DeltaResyncRequired,
    GraphError,
    GraphUnreachableError,
    PermanentGraphError,
    TransientGraphError,
)
from reconciler.graph.auth import TokenProvider, build_credential, token_scope
from reconciler.graph.client import (
    GraphClient,
    classify_status,
    is_resync,
    network_reason,
    parse_error_body,
)
from reconciler.model import UploadReceipt
from tests.helpers import jpeg_bytes

# -- pure helpers -------------------------------------------------------------------------


def test_parse_error_body_reads_both_inner_error_spellings() -> None:
    body = (
        b'{"error":{"code":"Request_ResourceNotFound","message":"gone",'
        b'"innerError":{"request-id":"r1"}}}'
    )
    envelope = parse_error_body(body, fallback="x")
    assert (envelope.code, envelope.message, envelope.request_id) == (
        "Request_ResourceNotFound",
        "gone",
        "r1",
    )
    inner = {"error": {"code": "c", "message": "m", "innererror": {"request-id": "r2"}}}
    assert parse_error_body(inner, fallback="x").request_id == "r2"


@pytest.mark.parametrize("body", [b"", b"<html>Bad gateway</html>", b"[1]", b'{"error":"x"}'])
def test_parse_error_body_tolerates_odd_bodies(body: bytes) -> None:
    envelope = parse_error_body(body, fallback="Bad Gateway")
    assert envelope.code is None and envelope.message in {"Bad Gateway", "<html>Bad gateway</html>"}


@pytest.mark.parametrize(
    ("status", "kind"),
    [(429, TransientGraphError), (503, TransientGraphError), (504, TransientGraphError)]
    + [(s, PermanentGraphError) for s in (400, 403, 404, 413, 501)],
)
def test_classify_status(status: int, kind: type[GraphError]) -> None:
    assert classify_status(status) is kind


@pytest.mark.parametrize(
    ("status", "code", "resync"),
    [
        (400, "syncStateNotFound", True),
        (400, "SyncStateNotFound", True),
        (400, "resyncRequired", True),
        (410, None, True),
        (400, "Request_UnsupportedQuery", False),
        (404, "syncStateNotFound", False),
    ],
)
def test_is_resync(status: int, code: str | None, resync: bool) -> None:
    assert is_resync(PermanentGraphError("m", status=status, code=code)) is resync


def test_network_reason_names_no_url() -> None:
    reason = network_reason(requests.ConnectionError(ConnectionResetError(104, "reset")))
    assert reason == "connection failed (ConnectionResetError)"
    assert network_reason(requests.ReadTimeout()) == "read timed out"


# -- helpers for the live tests -----------------------------------------------------------


def mi_tokens(emulator: GraphEmulator) -> TokenProvider:
    return TokenProvider(
        lambda: build_credential("managed-identity", graph_url=emulator.url),
        mode="managed-identity",
        scope=token_scope(emulator.url),
    )


def make_client(emulator: GraphEmulator, max_attempts: int = 6) -> GraphClient:
    """A client with the real MI credential and millisecond backoff, to keep tests fast."""
    return GraphClient(
        emulator.url,
        mi_tokens(emulator),
        max_attempts=max_attempts,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
    )


@pytest.fixture
def client(emulator: GraphEmulator) -> Iterator[GraphClient]:
    with make_client(emulator) as graph:
        yield graph


def configure(faults: Faults, **settings: Any) -> None:
    """Set fault knobs on a running emulator (it reads them afresh on every request)."""
    for name, value in settings.items():
        assert hasattr(faults, name), name
        setattr(faults, name, value)


def photo_requests(emulator: GraphEmulator) -> dict[str, list[RecordedRequest]]:
    """Photo PUTs by user. The user comes from the path: requests the emulator's gateway
    faults (drops, injected 429/503) never reach the route that fills in `user_id`."""
    by_user: dict[str, list[RecordedRequest]] = defaultdict(list)
    for r in emulator.requests():
        match = PHOTO_PATH.match(r.path)
        if match and r.method == "PUT":
            by_user[match.group(1)].append(r)
    return by_user


PHOTO_PATH = re.compile(r"^/v1\.0/users/([^/]+)/photo/\$value$")


def upload_all(graph: GraphClient, items: list[tuple[str, bytes]]) -> list[Any]:
    def one(item: tuple[str, bytes]) -> UploadReceipt | GraphError:
        try:
            return graph.upload_photo(item[0], item[1], "image/jpeg")
        except GraphError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, items))


# -- users --------------------------------------------------------------------------------


def test_list_users_streams_pages_of_999(emulator: GraphEmulator, client: GraphClient) -> None:
    emulator.tenant.add_users(2500)
    pages = client.list_users()
    first = next(pages)
    assert len(first) == 999 and client.request_count == 1  # later pages not fetched yet
    sizes = [len(first)] + [len(p) for p in pages]
    assert sizes == [999, 999, 502]
    assert client.request_count == emulator.graph_request_count == math.ceil(2500 / 999)
    listed = emulator.requests()[-3:]
    assert all(r.path == "/v1.0/users" for r in listed)
    assert "accountEnabled" in listed[0].query["$select"] and listed[0].query["$top"] == "999"


def test_list_users_maps_selected_properties(emulator: GraphEmulator, client: GraphClient) -> None:
    uid = emulator.tenant.add_user(
        "Grace Hopper", user_principal_name="grace@contoso.com", account_enabled=False
    )
    (user,) = [u for page in client.list_users() for u in page]
    assert (user.id, user.display_name, user.user_principal_name) == (
        uid,
        "Grace Hopper",
        "grace@contoso.com",
    )
    assert user.account_enabled is False and user.user_type == "Member"


def test_delta_reports_renames_disables_and_removals(
    emulator: GraphEmulator, client: GraphClient
) -> None:
    a, b, c, d = emulator.tenant.add_users(4)
    link = client.delta_latest()
    assert "$deltatoken=" in link and client.request_count == 1
    emulator.tenant.update_user(a, displayName="Ada Renamed")
    emulator.tenant.update_user(b, accountEnabled=False)
    emulator.tenant.delete_user(c)
    emulator.tenant.update_user(d, displayName="first")
    emulator.tenant.update_user(d, displayName="second")
    changes = client.delta(link)
    by_id = {u.id: u.properties for u in changes.upserted}
    assert set(by_id) == {a, b, d}
    assert by_id[a]["displayName"] == "Ada Renamed"
    assert by_id[b]["accountEnabled"] is False
    assert by_id[d]["displayName"] == "second"
    assert changes.removed == (c,)
    assert changes.delta_link != link
    again = client.delta(changes.delta_link)
    assert again.upserted == () and again.removed == ()


def test_delta_follows_next_links_across_pages(
    emulator: GraphEmulator, client: GraphClient
) -> None:
    link = client.delta_latest()
    ids = emulator.tenant.add_users(450)  # users/delta pages hold at most 200
    changes = client.delta(link)
    assert {u.id for u in changes.upserted} == set(ids)
    assert client.request_count == 1 + 3


def test_expired_delta_token_means_resync(emulator: GraphEmulator, client: GraphClient) -> None:
    link = client.delta_latest()
    emulator.expire_delta_tokens()
    with pytest.raises(DeltaResyncRequired) as caught:
        client.delta(link)
    assert caught.value.status == 400 and caught.value.code == "syncStateNotFound"
    assert caught.value.attempts == 1


def test_gone_delta_means_resync(emulator: GraphEmulator, client: GraphClient) -> None:
    link = client.delta_latest()
    emulator.faults.delta_gone_once = True
    with pytest.raises(DeltaResyncRequired) as caught:
        client.delta(link)
    assert caught.value.status == 410


# -- photos -------------------------------------------------------------------------------


def test_uploads_land_byte_exact(emulator: GraphEmulator, client: GraphClient) -> None:
    ids = emulator.tenant.add_users(3)
    photos = {uid: jpeg_bytes(color=(40 * n, 90, 200)) for n, uid in enumerate(ids)}
    for uid, data in photos.items():
        receipt = client.upload_photo(uid, data, "image/jpeg")
        assert (receipt.attempts, receipt.http_status) == (1, 200)
    for uid, data in photos.items():
        stored = emulator.tenant.photo(uid)
        assert stored is not None and stored.data == data and stored.content_type == "image/jpeg"
        assert client.get_photo(uid) == data
    sent = [r for r in emulator.requests() if r.method == "PUT"]
    assert len({r.client_request_id for r in sent}) == 3
    assert all(r.headers["user-agent"].startswith("photosync/") for r in sent)


def test_get_photo_none_when_absent_error_when_no_user(
    emulator: GraphEmulator, client: GraphClient
) -> None:
    (uid,) = emulator.tenant.add_users(1)
    assert client.get_photo(uid) is None
    with pytest.raises(PermanentGraphError) as caught:
        client.get_photo("00000000-0000-0000-0000-000000000000")
    assert caught.value.code == "Request_ResourceNotFound"


def _assert_retry_after_honoured(
    by_user: dict[str, list[tuple[float, RecordedRequest]]],
) -> None:
    """No request about a user arrives before the Retry-After its previous one was given.

    Each entry is (arrival time, request): a $batch's inner requests arrive with their batch.
    """
    checked = 0
    for history in by_user.values():
        history.sort(key=lambda pair: pair[0])
        for (at, before), (next_at, _) in itertools.pairwise(history):
            if before.retry_after is not None:
                assert next_at >= at + before.retry_after
                checked += 1
    assert checked, "no Retry-After was given: the test exercised nothing"


def test_faults_storm_every_photo_lands_and_retry_after_is_honoured(
    emulator: GraphEmulator,
) -> None:
    configure(
        emulator.faults,
        random_429_rate=0.3,
        random_503_rate=0.1,
        drop_connection_rate=0.1,
        fractional_retry_after=True,
        seed=1234,
    )
    ids = emulator.tenant.add_users(40)
    items = [(uid, jpeg_bytes(color=(n, 50, 50))) for n, uid in enumerate(ids)]
    with make_client(emulator, max_attempts=15) as graph:
        results = upload_all(graph, items)
    assert [type(r) for r in results] == [UploadReceipt] * len(items)
    for uid, data in items:
        stored = emulator.tenant.photo(uid)
        assert stored is not None and stored.data == data
    history = photo_requests(emulator)
    statuses = {r.status for rs in history.values() for r in rs}
    assert {0, 429, 503, 200} <= statuses  # drops, both throttles and successes happened
    _assert_retry_after_honoured(
        {uid: [(r.arrived_at, r) for r in rs] for uid, rs in history.items()}
    )


def test_short_token_lifetime_is_refreshed_without_failures(emulator: GraphEmulator) -> None:
    # 5-s tokens are renewed half-way through their life; 0.15 s latency x 24 sequential
    # uploads makes the run ~3.6 s, so at least one renewal happens mid-run.
    configure(emulator.faults, token_lifetime_s=5, latency_s=0.15)
    ids = emulator.tenant.add_users(24)
    with make_client(emulator) as graph:
        for n, uid in enumerate(ids):
            assert graph.upload_photo(uid, jpeg_bytes(color=(n, 1, 1)), "image/jpeg")
    graph_requests = [r for r in emulator.requests() if not r.token_request]
    assert len(emulator.issued_tokens) >= 2
    assert all(r.status == 200 for r in graph_requests)
    used = {r.headers["authorization"] for r in graph_requests}
    assert len(used) >= 2


def test_user_deleted_mid_run_is_permanent_404(emulator: GraphEmulator) -> None:
    (uid,) = emulator.tenant.add_users(1)
    emulator.faults.delete_user_on_photo_write = {uid}
    with make_client(emulator) as graph, pytest.raises(PermanentGraphError) as caught:
        graph.upload_photo(uid, jpeg_bytes(), "image/jpeg")
        assert graph.request_count == 1
    error = caught.value
    assert (error.status, error.code, error.attempts) == (404, "Request_ResourceNotFound", 1)
    assert error.client_request_id and error.request_id


def test_server_error_spends_the_retry_budget(
    emulator: GraphEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    (uid,) = emulator.tenant.add_users(1)
    emulator.faults.fail_photo_users = {uid}
    caplog.set_level(logging.INFO, logger="reconciler.graph")
    with (
        make_client(emulator, max_attempts=4) as graph,
        pytest.raises(TransientGraphError) as caught,
    ):
        graph.upload_photo(uid, jpeg_bytes(), "image/jpeg")
    assert (caught.value.status, caught.value.attempts) == (500, 4)
    assert len(photo_requests(emulator)[uid]) == 4
    failures = [r for r in caplog.records if getattr(r, "http_status", None) == 500]
    assert len(failures) == 4
    assert {r.user_id for r in failures} == {uid}  # type: ignore[attr-defined]
    assert len({r.client_request_id for r in failures}) == 4  # type: ignore[attr-defined]


def test_401_refreshes_once_and_rebuilds_a_credential_that_repeats_its_token(
    emulator: GraphEmulator, client: GraphClient
) -> None:
    emulator.tenant.add_users(1)
    list(client.list_users())
    # The emulator now considers that token expired, while MSAL (and we) still cache it.
    emulator.advance_clock(7200)
    assert [len(page) for page in client.list_users()] == [1]
    statuses = [r.status for r in emulator.requests() if not r.token_request]
    assert statuses == [200, 401, 200]
    assert len(emulator.issued_tokens) == 2


class RejectedTokens:
    """A stand-in credential whose tokens Graph does not know (new ones each time)."""

    def __init__(self) -> None:
        self.issued = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.issued += 1
        return AccessToken(f"forged-{self.issued}", 4102444800)


def test_second_401_is_an_auth_error(emulator: GraphEmulator) -> None:
    tokens = TokenProvider(RejectedTokens, mode="managed-identity", scope=token_scope(emulator.url))
    with (
        GraphClient(emulator.url, tokens, backoff_base_s=0.01) as graph,
        pytest.raises(AuthError, match="managed-identity") as caught,
    ):
        list(graph.list_users())
        assert graph.request_count == 2
    assert "forged" not in str(caught.value)


def test_wrong_identity_header_is_an_auth_error_naming_the_mode(
    emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    with make_client(emulator) as graph, pytest.raises(AuthError) as caught:
        list(graph.list_users())
        assert graph.request_count == 0
    message = str(caught.value)
    assert message.startswith("auth 'managed-identity' failed: ") and "\n" not in message
    assert "not-the-header" not in message


def test_missing_identity_env_is_an_auth_error(
    emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDENTITY_HEADER")
    with pytest.raises(AuthError, match=r"^auth 'managed-identity' failed: no managed identity"):
        mi_tokens(emulator).token()


def test_no_token_ever_reaches_logs_or_errors(
    emulator: GraphEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ids = emulator.tenant.add_users(3)
    emulator.faults.fail_photo_users = {ids[1]}
    emulator.faults.delete_user_on_photo_write = {ids[2]}
    messages: list[str] = []
    with make_client(emulator, max_attempts=2) as graph:
        for uid in ids:
            try:
                graph.upload_photo(uid, jpeg_bytes(), "image/jpeg")
            except GraphError as exc:
                messages.append(str(exc))
        emulator.advance_clock(7200)  # force a 401 and a refresh
        list(graph.list_users())
    assert len(messages) == 2 and len(emulator.issued_tokens) >= 2
    text = caplog.text + "\n".join(messages)
    for token in emulator.issued_tokens:
        assert token not in text


# -- reaching Graph -----------------------------------------------------------------------


def test_nothing_listening_is_graph_unreachable(emulator: GraphEmulator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening
        with (
            GraphClient(dead, mi_tokens(emulator)) as graph,
            pytest.raises(GraphUnreachableError, match="Graph unreachable at http://127"),
        ):
            list(graph.list_users())
            assert graph.request_count == 1


def test_unknown_host_is_graph_unreachable(emulator: GraphEmulator) -> None:
    # .invalid never resolves (RFC 2606), so this fails in DNS without leaving the machine.
    with (
        GraphClient("http://photosync-nowhere.invalid", mi_tokens(emulator)) as graph,
        pytest.raises(GraphUnreachableError, match=r"NameResolutionError.*check graph_url"),
    ):
        graph.upload_photo("someone", b"x", "image/jpeg")


def test_requests_wait_for_the_shared_retry_after(emulator: GraphEmulator) -> None:
    """A 429 given to one upload holds back every thread, reads included."""
    emulator.faults.write_rate_per_s = 4  # a bucket of 4: the 5th quick write is throttled
    emulator.faults.fractional_retry_after = True
    ids = emulator.tenant.add_users(5)
    with make_client(emulator) as graph:
        for uid in ids:
            graph.upload_photo(uid, jpeg_bytes(), "image/jpeg")
        list(graph.list_users())
    log = [r for r in emulator.requests() if not r.token_request]
    throttled = [r for r in log if r.status == 429]
    assert throttled
    last = throttled[-1]
    assert last.retry_after is not None
    after = [r for r in log if r.arrived_at > last.arrived_at]
    assert after and all(r.arrived_at >= last.arrived_at + last.retry_after for r in after)


def test_a_delta_link_for_another_host_means_resync(client: GraphClient) -> None:
    with pytest.raises(DeltaResyncRequired, match=r"not for http://127\.0\.0\.1"):
        client.delta("https://graph.microsoft.com/v1.0/users/delta?$deltatoken=abc")
    assert client.request_count == 0


def test_a_next_link_to_another_host_is_not_followed(emulator: GraphEmulator) -> None:
    emulator.tenant.add_users(3)
    # Same server, other name: the emulator's nextLinks say 127.0.0.1, we asked localhost.
    other_name = emulator.url.replace("127.0.0.1", "localhost")
    with GraphClient(other_name, mi_tokens(emulator)) as graph:
        pages = graph.list_users(page_size=2)
        assert len(next(pages)) == 2
        with pytest.raises(PermanentGraphError, match="link to another host"):
            next(pages)
        assert graph.request_count == 1


# -- single users and lookups (get_user, find_users) --------------------------------------


def test_get_user_returns_the_selected_properties_nulls_included(
    emulator: GraphEmulator, client: GraphClient
) -> None:
    uid = emulator.tenant.add_user("Ada Lovelace", employee_id=None, account_enabled=False)
    user = client.get_user(uid, ["id", "displayName", "employeeId", "accountEnabled"])
    assert user is not None
    assert (user["id"], user["displayName"], user["accountEnabled"]) == (uid, "Ada Lovelace", False)
    assert "employeeId" in user and user["employeeId"] is None
    [sent] = [r for r in emulator.requests() if r.path == f"/v1.0/users/{uid}"]
    assert sent.query["$select"] == "id,displayName,employeeId,accountEnabled"


def test_get_user_none_for_a_user_not_in_the_tenant(
    emulator: GraphEmulator, client: GraphClient
) -> None:
    (uid,) = emulator.tenant.add_users(1)
    emulator.tenant.delete_user(uid)
    assert client.get_user(uid, ["id"]) is None
    assert client.request_count == 1


SPECIAL_NAMES = ["O'Brien", "AT&T Desk", "C# Team", "A+B", "José Ñúñez", "李小龙", "Two  Spaces"]


@pytest.mark.parametrize("name", SPECIAL_NAMES)
def test_find_users_round_trips_quotes_and_url_characters(
    emulator: GraphEmulator, client: GraphClient, name: str
) -> None:
    # Decoys a broken encoding would match instead: a truncated name, a space for a plus.
    for decoy in {"O", "AT", "C", "A B", "A", "Jos", "Two Spaces"} - {name}:
        emulator.tenant.add_user(decoy)
    wanted = emulator.tenant.add_user(name)
    found = client.find_users("displayName", [name], ["displayName", "userPrincipalName"])
    assert [(u["id"], u["displayName"]) for u in found] == [(wanted, name)]
    assert set(found[0]) >= {"id", "displayName", "userPrincipalName"}


def test_find_users_sends_15_values_a_request_without_advanced_queries(
    emulator: GraphEmulator, client: GraphClient
) -> None:
    ids = emulator.tenant.add_users(40, prefix="Staff")
    names = [f"Staff {n}" for n in range(1, 41)]
    # Duplicates and a name nobody has cost nothing extra and return nothing extra.
    found = client.find_users("displayName", [*names, "Staff 3", "Nobody Here"], ["displayName"])
    assert sorted(u["id"] for u in found) == sorted(ids)
    assert client.request_count == math.ceil(41 / 15)
    lookups = [r for r in emulator.requests() if r.path == "/v1.0/users"]
    for r in lookups:
        assert r.status == 200 and r.query["$top"] == "999"
        assert r.query["$filter"].startswith("displayName in (")
        assert r.query["$filter"].count("'") <= 2 * 15
        assert "consistencylevel" not in r.headers and "$count" not in r.query


def test_find_users_follows_next_links_and_keeps_each_user_once(
    emulator: GraphEmulator, client: GraphClient
) -> None:
    ids = [emulator.tenant.add_user("Twin") for _ in range(1001)]
    emulator.tenant.add_user("Twine")
    # Graph compares case-insensitively: both spellings name the same 1001 users.
    found = client.find_users("displayName", ["Twin", "twin"], ["displayName"])
    assert sorted(u["id"] for u in found) == sorted(ids)
    assert client.request_count == 2  # one filter request, one nextLink


def test_find_users_with_no_values_sends_nothing(client: GraphClient) -> None:
    assert client.find_users("mail", [], ["mail"]) == []
    assert client.request_count == 0
