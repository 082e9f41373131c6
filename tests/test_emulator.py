"""The Graph emulator, driven the way clients drive Graph: plain `requests` for the API and
the real azure-identity ManagedIdentityCredential for tokens."""

from __future__ import annotations

import base64
import http.client
import io
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential
from PIL import Image

from reconciler.emulator import GraphEmulator, identity_environment
from tests.helpers import delta_round, error_of, follow, jpeg_bytes, v1

SELECT = "id,displayName,userPrincipalName,accountEnabled,userType"
ADVANCED_HINT = "ConsistencyLevel:eventual"


def png_bytes(size: tuple[int, int] = (120, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, (10, 200, 10, 128)).save(buf, "PNG")
    return buf.getvalue()


def bearer(emulator: GraphEmulator) -> str:
    token: str = ManagedIdentityCredential().get_token(f"{emulator.url}/.default").token
    return token


@pytest.fixture
def graph(emulator: GraphEmulator) -> Iterator[requests.Session]:
    """A session authenticated the production way, against the emulator."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {bearer(emulator)}"
        yield session


# -- tokens and auth ----------------------------------------------------------------------


def test_app_service_token_from_azure_identity_is_accepted(emulator: GraphEmulator) -> None:
    token = bearer(emulator)
    response = requests.get(v1(emulator, "users"), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert token in emulator.issued_tokens
    token_call = next(r for r in emulator.requests() if r.token_request)
    assert token_call.query["api-version"] == "2019-08-01"
    assert token_call.query["resource"] == emulator.url
    assert emulator.graph_request_count == 1  # the token request is not a Graph request


def test_wrong_identity_header_is_refused(
    emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-secret")
    with pytest.raises(ClientAuthenticationError, match="X-IDENTITY-HEADER"):
        ManagedIdentityCredential().get_token(f"{emulator.url}/.default")
    assert emulator.issued_tokens == []


def test_arc_challenge_flow_leaves_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("Arc flow needs root to write /var/opt/azcmagent/tokens")
    watched = [Path("/var/opt/azcmagent/tokens"), Path("/var/opt/azcmagent"), Path("/var/opt")]
    before = {p: p.exists() and sorted(os.listdir(p)) for p in watched}
    for name in ("IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with GraphEmulator() as emu:
        for name, value in emu.arc_env().items():
            monkeypatch.setenv(name, value)
        client_id = str(uuid.uuid4())
        token = ManagedIdentityCredential(client_id=client_id).get_token(f"{emu.url}/.default")
        arc_calls = [r for r in emu.requests() if r.path == "/arc/token"]
        assert [r.status for r in arc_calls] == [401, 200]
        assert arc_calls[1].headers["authorization"].startswith("Basic ")
        assert arc_calls[1].query["client_id"] == client_id
        ok = requests.get(
            f"{emu.url}/v1.0/users", headers={"Authorization": f"Bearer {token.token}"}
        )
        assert ok.status_code == 200
    assert {p: p.exists() and sorted(os.listdir(p)) for p in watched} == before


def test_imds_token_from_azure_identity_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    # An Azure VM or a hybrid worker on one: the credential asks IMDS, which the emulator
    # stands in for through the authority host azure-identity lets us point elsewhere.
    with GraphEmulator() as emu:
        wanted = identity_environment(os.environ, emu.imds_env())
        for name in set(os.environ) - set(wanted):
            monkeypatch.delenv(name)
        for name, value in wanted.items():
            monkeypatch.setenv(name, value)
        token = ManagedIdentityCredential().get_token(f"{emu.url}/.default")
        [imds_call] = [r for r in emu.requests() if r.token_request]
        assert imds_call.path == "/metadata/identity/oauth2/token"
        assert imds_call.headers["metadata"] == "true"
        assert imds_call.query["resource"] == emu.url
        ok = requests.get(
            f"{emu.url}/v1.0/users", headers={"Authorization": f"Bearer {token.token}"}
        )
        assert ok.status_code == 200


def test_missing_and_unknown_tokens_get_graphs_401(emulator: GraphEmulator) -> None:
    missing = requests.get(v1(emulator, "users"))
    unknown = requests.get(v1(emulator, "users"), headers={"Authorization": "Bearer emu.forged"})
    for response in (missing, unknown):
        assert response.status_code == 401
        assert error_of(response)["code"] == "InvalidAuthenticationToken"
        assert response.headers["WWW-Authenticate"].startswith("Bearer realm=")


def test_expired_token_is_refused(emulator: GraphEmulator) -> None:
    emulator.faults.token_lifetime_s = 600
    headers = {"Authorization": f"Bearer {bearer(emulator)}"}
    assert requests.get(v1(emulator, "users"), headers=headers).status_code == 200
    emulator.advance_clock(601)
    response = requests.get(v1(emulator, "users"), headers=headers)
    assert response.status_code == 401
    assert error_of(response)["message"] == "Access token has expired or is not yet valid."


# -- envelope -----------------------------------------------------------------------------


def test_every_answer_carries_request_ids(emulator: GraphEmulator, graph: requests.Session) -> None:
    echoed = graph.get(v1(emulator, "users"), headers={"client-request-id": "abc-123"})
    assert echoed.headers["client-request-id"] == "abc-123"
    uuid.UUID(echoed.headers["request-id"])
    assert "Date" in echoed.headers
    assert echoed.headers["Content-Type"].startswith("application/json;odata.metadata=minimal")

    failed = graph.get(v1(emulator, "users/" + str(uuid.uuid4())))
    assert failed.status_code == 404
    inner = error_of(failed)["innerError"]
    assert failed.headers["client-request-id"] == failed.headers["request-id"]
    assert inner["request-id"] == failed.headers["request-id"]
    assert inner["client-request-id"] == failed.headers["request-id"]
    assert error_of(failed)["code"] == "Request_ResourceNotFound"


def test_keep_alive_serves_many_requests_on_one_connection(emulator: GraphEmulator) -> None:
    emulator.require_auth = False
    conn = http.client.HTTPConnection(emulator.url.removeprefix("http://"), timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/v1.0/users?$top=1")
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        conn.request("PUT", "/v1.0/users/nobody@contoso.com/photo/$value", body=b"x" * 1000)
        assert conn.getresponse().status == 404
    finally:
        conn.close()


def test_stop_is_prompt_with_an_idle_keep_alive_connection() -> None:
    emu = GraphEmulator(require_auth=False)
    emu.start()
    with requests.Session() as session:
        session.get(f"{emu.url}/v1.0/users")
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 2


# -- /users -------------------------------------------------------------------------------


def test_listing_pages_by_100_with_absolute_next_links(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    ids = set(emulator.tenant.add_users(250))
    pages = follow(graph, v1(emulator, f"users?$select={SELECT}"))
    assert [len(p["value"]) for p in pages] == [100, 100, 50]
    next_link = pages[0]["@odata.nextLink"]
    assert next_link.startswith(f"{emulator.url}/v1.0/users?")
    assert "$select=" in next_link and "$skiptoken=" in next_link
    assert {u["id"] for p in pages for u in p["value"]} == ids


@pytest.mark.parametrize("top", ["0", "1000", "ten"])
def test_top_outside_1_to_999_is_rejected(
    emulator: GraphEmulator, graph: requests.Session, top: str
) -> None:
    response = graph.get(v1(emulator, f"users?$top={top}"))
    assert response.status_code == 400
    assert error_of(response) | {"innerError": None} == {
        "code": "Request_UnsupportedQuery",
        "message": f"Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive.",
        "innerError": None,
    }


def test_top_999_pages_100k_users_quickly(emulator: GraphEmulator, graph: requests.Session) -> None:
    emulator.tenant.add_users(100_000)
    started = time.monotonic()
    pages = follow(graph, v1(emulator, f"users?$top=999&$select={SELECT}"))
    assert time.monotonic() - started < 10
    assert len(pages) == 101
    assert sum(len(p["value"]) for p in pages) == 100_000


def test_select_controls_hidden_and_null_properties(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    emulator.tenant.add_user("Ada Lovelace", employee_id="E1", account_enabled=False)
    default = graph.get(v1(emulator, "users")).json()["value"][0]
    assert "accountEnabled" not in default and "employeeId" not in default
    assert default["displayName"] == "Ada Lovelace" and default["jobTitle"] is None

    selected = graph.get(v1(emulator, "users?$select=accountEnabled,employeeId,mail")).json()
    assert selected["value"] == [
        {
            "id": selected["value"][0]["id"],
            "accountEnabled": False,
            "employeeId": "E1",
            "mail": None,
        }
    ]
    assert selected["@odata.context"].endswith("#users(id,accountEnabled,employeeId,mail)")


def test_default_filters_need_no_advanced_parameters(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    tenant = emulator.tenant
    ada = tenant.add_user("Ada Lovelace", employee_id="E100")
    grace = tenant.add_user("Grace Hopper", user_type="Guest")
    alan = tenant.add_user("Alan Turing", account_enabled=False)

    def found(expression: str) -> set[str]:
        response = graph.get(v1(emulator, "users"), params={"$filter": expression})
        assert response.status_code == 200, response.text
        return {u["id"] for u in response.json()["value"]}

    assert found("accountEnabled eq true and userType eq 'Member'") == {ada}
    assert found("startsWith(displayName,'a')") == {ada, alan}  # ignores case, like Entra
    assert found("userType in ('Guest') or (employeeId eq 'E100' and accountEnabled eq true)") == {
        ada,
        grace,
    }
    assert found("userPrincipalName eq 'ALAN.TURING@contoso.com'") == {alan}


@pytest.mark.parametrize(
    "expression",
    [
        "accountEnabled ne false",
        "not(userType eq 'Guest')",
        "endsWith(userPrincipalName,'@contoso.com')",
        "employeeId eq null",
    ],
)
def test_advanced_filters_need_consistency_level_and_count(
    emulator: GraphEmulator, graph: requests.Session, expression: str
) -> None:
    emulator.tenant.add_user("Ada Lovelace")
    plain = graph.get(v1(emulator, "users"), params={"$filter": expression})
    assert plain.status_code == 400
    assert error_of(plain)["code"] == "Request_UnsupportedQuery"
    assert ADVANCED_HINT in error_of(plain)["message"]

    header_only = graph.get(
        v1(emulator, "users"),
        params={"$filter": expression},
        headers={"ConsistencyLevel": "eventual"},
    )
    assert header_only.status_code == 400

    advanced = graph.get(
        v1(emulator, "users"),
        params={"$filter": expression, "$count": "true"},
        headers={"ConsistencyLevel": "eventual"},
    )
    assert advanced.status_code == 200, advanced.text
    assert advanced.json()["@odata.count"] == len(advanced.json()["value"]) == 1


def test_count_without_header_is_ignored_and_orderby_with_filter_is_advanced(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    emulator.tenant.add_users(3)
    counted = graph.get(v1(emulator, "users?$count=true"))
    assert counted.status_code == 200 and "@odata.count" not in counted.json()

    sorted_filtered = graph.get(
        v1(emulator, "users"),
        params={"$filter": "accountEnabled eq true", "$orderby": "displayName desc"},
    )
    assert sorted_filtered.status_code == 400
    ordered = graph.get(v1(emulator, "users"), params={"$orderby": "displayName desc"}).json()
    assert [u["displayName"] for u in ordered["value"]] == ["User 3", "User 2", "User 1"]


def test_unknown_select_property_is_a_bad_request(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    assert graph.get(v1(emulator, "users?$select=favouriteColour")).status_code == 400
    assert graph.get(v1(emulator, "users?$select=aboutMe")).status_code == 501


# -- /users/delta -------------------------------------------------------------------------


def test_delta_rounds_report_changes_disables_and_deletions(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    tenant = emulator.tenant
    renamed, disabled, soft, hard, untouched = tenant.add_users(5)
    initial, link = delta_round(graph, v1(emulator, f"users/delta?$select={SELECT}"))
    assert {u["id"] for u in initial} == {renamed, disabled, soft, hard, untouched}
    assert "$deltatoken=" in link and "$select" not in link

    nothing, next_link = delta_round(graph, link)
    assert nothing == [] and next_link != link

    tenant.update_user(renamed, displayName="Renamed")
    tenant.update_user(disabled, accountEnabled=False)
    tenant.update_user(untouched, jobTitle="Not selected, so not tracked")
    tenant.delete_user(soft)
    tenant.delete_user(hard, permanent=True)
    changes, _ = delta_round(graph, next_link)
    by_id = {c["id"]: c for c in changes}
    assert set(by_id) == {renamed, disabled, soft, hard}
    assert by_id[renamed]["displayName"] == "Renamed"
    assert by_id[renamed]["userType"] == "Member"  # all selected properties by default
    assert by_id[disabled]["accountEnabled"] is False
    assert by_id[soft]["@removed"] == {"reason": "changed"}
    assert by_id[hard]["@removed"] == {"reason": "deleted"}


def test_delta_minimal_returns_only_changed_properties(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    user = emulator.tenant.add_user("Ada Lovelace")
    _, link = delta_round(graph, v1(emulator, f"users/delta?$select={SELECT}"))
    emulator.tenant.update_user(user, accountEnabled=False)
    changes, _ = delta_round(graph, link, headers={"Prefer": "return=minimal"})
    assert changes == [{"id": user, "accountEnabled": False}]


def test_delta_pages_hold_at_most_200_and_honour_smaller_preference(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    emulator.tenant.add_users(450)
    url = v1(emulator, "users/delta?$select=displayName&$top=999")  # $top is ignored
    assert [len(p["value"]) for p in follow(graph, url)] == [200, 200, 50]
    larger = follow(graph, url, headers={"Prefer": "odata.maxpagesize=1000"})
    assert [len(p["value"]) for p in larger] == [200, 200, 50]
    smaller = follow(graph, url, headers={"Prefer": "odata.maxpagesize=150"})
    assert [len(p["value"]) for p in smaller] == [150, 150, 150]


def test_delta_latest_starts_from_now(emulator: GraphEmulator, graph: requests.Session) -> None:
    emulator.tenant.add_users(3)
    for spelling in ("$deltatoken", "$deltaToken"):
        latest = graph.get(v1(emulator, f"users/delta?$select={SELECT}&{spelling}=latest")).json()
        assert latest["value"] == [] and "@odata.nextLink" not in latest
    newcomer = emulator.tenant.add_user("Newcomer")
    changes, _ = delta_round(graph, latest["@odata.deltaLink"])
    assert [c["id"] for c in changes] == [newcomer]
    assert changes[0]["accountEnabled"] is True  # $select travelled inside the token


def test_expired_or_unknown_delta_token_needs_a_full_sync(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    _, link = delta_round(graph, v1(emulator, "users/delta"))
    emulator.expire_delta_tokens()
    for url in (link, v1(emulator, "users/delta?$deltatoken=made-up")):
        response = graph.get(url)
        assert response.status_code == 400
        assert error_of(response)["code"] == "syncStateNotFound"


def test_delta_gone_once_answers_410_with_a_fresh_start_location(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    emulator.tenant.add_users(2)
    _, link = delta_round(graph, v1(emulator, f"users/delta?$select={SELECT}"))
    emulator.faults.delta_gone_once = True
    gone = graph.get(link)
    assert gone.status_code == 410
    location = gone.headers["Location"]
    assert location.startswith(v1(emulator, "users/delta?")) and location.endswith("$deltatoken=")
    restarted, _ = delta_round(graph, location)
    assert len(restarted) == 2 and "accountEnabled" in restarted[0]


def test_delta_filter_accepts_only_id_equality(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    ids = emulator.tenant.add_users(3)
    by_ids = " or ".join(f"id eq '{i}'" for i in ids[:2])
    changes, _ = delta_round(graph, v1(emulator, "users/delta"), params={"$filter": by_ids})
    assert {c["id"] for c in changes} == set(ids[:2])
    too_many = " or ".join(f"id eq '{uuid.uuid4()}'" for _ in range(51))
    for expression in (too_many, "startsWith(displayName,'U')"):
        response = graph.get(v1(emulator, "users/delta"), params={"$filter": expression})
        assert response.status_code == 400
        assert error_of(response)["code"] == "Request_UnsupportedQuery"


# -- photos -------------------------------------------------------------------------------


def test_photo_upload_then_read_back(emulator: GraphEmulator, graph: requests.Session) -> None:
    user = emulator.tenant.add_user("Ada Lovelace")
    missing = graph.get(v1(emulator, f"users/{user}/photo/$value"))
    assert missing.status_code == 404 and error_of(missing)["code"] == "ImageNotFound"

    data = jpeg_bytes((300, 200))
    put = graph.put(
        v1(emulator, f"users/{user}/photo/$value"),
        data=data,
        headers={"Content-Type": "image/jpeg"},
    )
    assert (put.status_code, put.content) == (200, b"")
    meta = graph.get(v1(emulator, f"users/{user}/photo")).json()
    assert (meta["@odata.mediaContentType"], meta["width"], meta["height"]) == (
        "image/jpeg",
        300,
        200,
    )
    got = graph.get(v1(emulator, f"users/{user}/photo/$value"))
    assert got.content == data and got.headers["Content-Type"] == "image/jpeg"

    by_upn = graph.patch(
        v1(emulator, "users/ada.lovelace@contoso.com/photo/$value"),
        data=png_bytes(),
        headers={"Content-Type": "image/png"},
    )
    assert by_upn.status_code == 200
    stored = emulator.tenant.photo(user)
    assert stored is not None
    assert (stored.content_type, stored.detected_type, stored.uploads) == ("image/png",) * 2 + (2,)
    assert emulator.tenant.photo_writes(user) == 2
    assert emulator.requests()[-1].user_id == user

    assert graph.delete(v1(emulator, f"users/{user}/photo/$value")).status_code == 204
    assert graph.get(v1(emulator, f"users/{user}/photo")).status_code == 404


def test_photo_uploads_are_validated(emulator: GraphEmulator, graph: requests.Session) -> None:
    user = emulator.tenant.add_user("Ada Lovelace")
    url = v1(emulator, f"users/{user}/photo/$value")

    def put(data: bytes, content_type: str = "image/jpeg") -> requests.Response:
        return graph.put(url, data=data, headers={"Content-Type": content_type})

    too_big = put(b"\xff\xd8" + os.urandom(4 * 1024 * 1024))
    assert too_big.status_code == 413
    too_small = put(jpeg_bytes((40, 40)))
    assert too_small.status_code == 400
    assert error_of(too_small)["code"] == "ValidationWidthTooSmall"
    assert put(jpeg_bytes(), "image/gif").status_code == 400
    assert put(b"not an image at all").status_code == 400
    assert put(jpeg_bytes()[:300]).status_code == 400  # truncated
    assert emulator.tenant.photo_writes(user) == 0

    nobody = graph.put(
        v1(emulator, f"users/{uuid.uuid4()}/photo/$value"),
        data=jpeg_bytes(),
        headers={"Content-Type": "image/jpeg"},
    )
    assert nobody.status_code == 404 and error_of(nobody)["code"] == "Request_ResourceNotFound"


# -- $batch -------------------------------------------------------------------------------


def photo_put(request_id: str, user: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "id": request_id,
        "method": "PUT",
        "url": f"/users/{user}/photo/$value",
        "headers": {"Content-Type": "image/jpeg"},
        "body": base64.b64encode(data).decode(),
        **extra,
    }


def test_batch_runs_inner_requests_like_top_level_ones(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    ada, grace = emulator.tenant.add_users(2)
    data = jpeg_bytes()
    batch = {
        "requests": [
            photo_put("1", ada, data),
            {"id": "2", "method": "GET", "url": f"users/{ada}/photo/$value", "dependsOn": ["1"]},
            {"id": "3", "method": "GET", "url": f"users?$select={SELECT}"},
            photo_put("4", str(uuid.uuid4()), data),
            photo_put("5", grace, data, dependsOn=["4"]),
        ]
    }
    response = graph.post(v1(emulator, "$batch"), json=batch)
    assert response.status_code == 200
    answers = {a["id"]: a for a in response.json()["responses"]}
    assert answers["1"]["status"] == 200
    assert base64.b64decode(answers["2"]["body"]) == data
    assert answers["2"]["headers"]["Content-Type"] == "image/jpeg"
    assert {u["id"] for u in answers["3"]["body"]["value"]} == {ada, grace}
    assert answers["4"]["status"] == 404
    assert answers["4"]["body"]["error"]["code"] == "Request_ResourceNotFound"
    assert answers["5"]["status"] == 424
    assert emulator.tenant.photo_writes(ada) == 1 and emulator.tenant.photo_writes(grace) == 0
    assert sorted(r.status for r in emulator.requests()[-1].inner) == [200, 200, 200, 404, 424]


@pytest.mark.parametrize(
    "requests_list",
    [
        [{"id": str(i), "method": "GET", "url": "/users"} for i in range(21)],
        [{"id": "a", "method": "GET", "url": "/users"}, {"id": "A", "method": "GET", "url": "/me"}],
        [{"id": "1", "method": "PUT", "url": "/users/x/photo/$value", "body": "aGk="}],
    ],
    ids=["over-20", "duplicate-id", "body-without-content-type"],
)
def test_malformed_batches_fail_whole(
    emulator: GraphEmulator, graph: requests.Session, requests_list: list[dict[str, Any]]
) -> None:
    response = graph.post(v1(emulator, "$batch"), json={"requests": requests_list})
    assert response.status_code == 400


def test_batch_writes_over_the_rate_get_inner_429s(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    emulator.faults.write_rate_per_s = 2
    users = emulator.tenant.add_users(5)
    batch = {"requests": [photo_put(str(i), u, jpeg_bytes()) for i, u in enumerate(users)]}
    answers = graph.post(v1(emulator, "$batch"), json=batch).json()["responses"]
    throttled = [a for a in answers if a["status"] == 429]
    assert len(throttled) == 3
    assert all(a["headers"]["Retry-After"].isdigit() for a in throttled)
    assert sum(emulator.tenant.photo_writes(u) for u in users) == 2


# -- faults -------------------------------------------------------------------------------


def test_write_rate_throttles_with_retry_after(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    user = emulator.tenant.add_user("Ada Lovelace")
    url = v1(emulator, f"users/{user}/photo/$value")
    emulator.faults.write_rate_per_s = 1
    headers = {"Content-Type": "image/jpeg"}
    assert graph.put(url, data=jpeg_bytes(), headers=headers).status_code == 200
    throttled = graph.put(url, data=jpeg_bytes(), headers=headers)
    assert throttled.status_code == 429
    assert error_of(throttled)["code"] == "TooManyRequests"
    assert throttled.headers["Retry-After"] in {"1", "2"}
    assert emulator.requests()[-1].retry_after == float(throttled.headers["Retry-After"])
    assert emulator.tenant.photo_writes(user) == 1  # the throttled write was not processed

    emulator.faults.fractional_retry_after = True
    again = graph.put(url, data=jpeg_bytes(), headers=headers)
    assert again.status_code == 429 and "." in again.headers["Retry-After"]


def test_random_faults(emulator: GraphEmulator, graph: requests.Session) -> None:
    emulator.faults.random_429_rate = 1.0
    throttled = graph.get(v1(emulator, "users"))
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "1")

    emulator.faults.random_429_rate, emulator.faults.random_503_rate = 0.0, 1.0
    unavailable = graph.get(v1(emulator, "users"))
    assert unavailable.status_code == 503
    assert error_of(unavailable)["code"] == "serviceNotAvailable"
    assert "Retry-After" in unavailable.headers

    emulator.faults.random_503_rate, emulator.faults.drop_connection_rate = 0.0, 1.0
    with pytest.raises(requests.ConnectionError):
        graph.get(v1(emulator, "users"))
    assert emulator.requests()[-1].status == 0


def test_doomed_users(emulator: GraphEmulator, graph: requests.Session) -> None:
    failing, vanishing = emulator.tenant.add_users(2)
    emulator.faults.fail_photo_users.add(failing)
    emulator.faults.delete_user_on_photo_write.add(vanishing)
    headers = {"Content-Type": "image/jpeg"}

    failed = graph.put(
        v1(emulator, f"users/{failing}/photo/$value"), data=jpeg_bytes(), headers=headers
    )
    assert failed.status_code == 500 and error_of(failed)["code"] == "generalException"

    gone = graph.put(
        v1(emulator, f"users/{vanishing}/photo/$value"), data=jpeg_bytes(), headers=headers
    )
    assert gone.status_code == 404 and error_of(gone)["code"] == "Request_ResourceNotFound"
    assert emulator.tenant.user(vanishing) is None
    assert emulator.requests()[-1].user_id == vanishing
