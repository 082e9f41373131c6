"""The Graph behaviours photosync relies on, pinned the same way against the emulator and,
when PHOTOSYNC_FIDELITY_* name one, a real tenant (see conftest.py and the README section
"Checking the emulator against your tenant"). Read-only unless a test says otherwise.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from PIL import Image, ImageStat

from tests.fidelity.helpers import AWKWARD_NAMES, Target, solid_jpeg

HIDDEN = ("accountEnabled", "userType", "employeeId", "mailNickname")
B2B = ("creationType", "externalUserState")


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def escaped(value: str) -> str:
    """An OData string literal: quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def other_case(value: str) -> str:
    """`value` with the case of each letter swapped where that keeps it one letter."""
    return "".join(c.swapcase() if len(c.swapcase()) == 1 else c for c in value)


# -- /users: paging, $top, $select --------------------------------------------------------


def test_listing_pages_follow_absolute_next_links(target: Target) -> None:
    pages = target.pages("users", params={"$select": "id", "$top": "2"}, limit=3)
    if len(pages) < 2:
        pytest.skip("the tenant has fewer than 3 users: nothing to page")
    for page in pages:
        assert len(page["value"]) <= 2
    for page in pages[:-1]:
        link = page["@odata.nextLink"]
        assert link.startswith(f"{target.graph_url}/v1.0/users?") and "$skiptoken=" in link
    ids = [u["id"] for p in pages for u in p["value"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("top", ["0", "1000"])
def test_top_outside_1_to_999_is_refused(target: Target, top: str) -> None:
    response = target.get("users", params={"$top": top})
    assert response.status_code == 400
    assert error_code(response) == "Request_UnsupportedQuery"


def test_hidden_properties_come_only_with_select(target: Target) -> None:
    plain = target.get("users", params={"$top": "5"})
    assert plain.status_code == 200, plain.text
    users = plain.json()["value"]
    assert users, "the tenant has no users"
    for user in users:
        assert {"id", "displayName", "userPrincipalName", "mail"} <= set(user)
        assert not set(HIDDEN + B2B) & set(user)
    select = ",".join(("id", *HIDDEN, *B2B))
    for user in target.some_users(select, count=5):
        assert set(user) == {"id", *HIDDEN, *B2B}  # asked for: present, null if unset


# -- /users/delta -------------------------------------------------------------------------


def _id_filter(ids: list[str]) -> str:
    return " or ".join(f"id eq '{i}'" for i in ids)


def test_delta_round_ends_with_a_delta_link(target: Target) -> None:
    ids = [u["id"] for u in target.some_users("id", count=3)]
    first = target.get(
        "users/delta", params={"$select": "displayName,accountEnabled", "$filter": _id_filter(ids)}
    )
    assert first.status_code == 200, first.text
    pages = [first.json()]
    while "@odata.nextLink" in pages[-1]:
        assert "@odata.deltaLink" not in pages[-1]
        assert "$skiptoken=" in pages[-1]["@odata.nextLink"]
        pages.append(target.get(pages[-1]["@odata.nextLink"]).json())
    link = pages[-1]["@odata.deltaLink"]
    assert link.startswith(f"{target.graph_url}/v1.0/users/delta?") and "$deltatoken=" in link
    items = [item for page in pages for item in page["value"]]
    assert {i["id"] for i in items} == set(ids)
    again = target.get(link)
    assert again.status_code == 200 and "@odata.deltaLink" in again.json()


def test_delta_items_leave_out_unset_properties(target: Target) -> None:
    users = target.some_users("id,employeeId,displayName", count=50)
    unset = [u["id"] for u in users if u["employeeId"] is None][:3]
    if not unset:
        pytest.skip("every listed user has an employeeId: no unset property to look at")
    items, _ = target.delta_round(
        "users/delta", params={"$select": "displayName,employeeId", "$filter": _id_filter(unset)}
    )
    assert {i["id"] for i in items} == set(unset)
    for item in items:
        assert "employeeId" not in item  # absent, not null: absence never means "cleared"


def test_delta_latest_returns_no_data(target: Target) -> None:
    response = target.get(
        "users/delta", params={"$select": "displayName,accountEnabled", "$deltatoken": "latest"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["value"] == [] and "@odata.nextLink" not in body
    assert "$deltatoken=" in body["@odata.deltaLink"]


@pytest.mark.emulator_only(reason="deletes users")
def test_removed_users_carry_the_reason(target: Target) -> None:
    soft, hard = target.tenant.add_users(2, prefix="Leaving")
    _, link = target.delta_round("users/delta", params={"$select": "displayName"})
    target.tenant.delete_user(soft)
    target.tenant.delete_user(hard, permanent=True)
    items, _ = target.delta_round(link)
    assert sorted(items, key=lambda i: i["id"] == hard) == [
        {"id": soft, "@removed": {"reason": "changed"}},
        {"id": hard, "@removed": {"reason": "deleted"}},
    ]


@pytest.mark.emulator_only(reason="changes a user")
def test_minimal_delta_items_carry_only_what_changed(target: Target) -> None:
    user = target.tenant.add_user("Changing Person", employee_id="C1")
    _, link = target.delta_round(
        "users/delta", params={"$select": "displayName,accountEnabled,employeeId"}
    )
    target.tenant.update_user(user, accountEnabled=False)
    items, _ = target.delta_round(link, headers={"Prefer": "return=minimal"})
    assert items == [{"id": user, "accountEnabled": False}]


# -- $filter: the expression limit and literals -------------------------------------------


def test_in_filter_allows_15_values_by_default_and_more_only_when_advanced(
    target: Target,
) -> None:
    values = [f"'fidelity-{n}-{uuid.uuid4().hex[:8]}@invalid.example'" for n in range(16)]
    fifteen = target.get("users", params={"$filter": f"mail in ({','.join(values[:15])})"})
    assert fifteen.status_code == 200, fifteen.text
    sixteen = {"$filter": f"mail in ({','.join(values)})"}
    refused = target.get("users", params=sixteen)
    assert refused.status_code == 400
    assert error_code(refused) == "Request_UnsupportedQuery"
    advanced = target.get(
        "users", params={**sixteen, "$count": "true"}, headers={"ConsistencyLevel": "eventual"}
    )
    assert advanced.status_code == 200, advanced.text
    assert advanced.json()["value"] == []


def test_literals_with_quotes_and_url_metacharacters_find_their_user(target: Target) -> None:
    users = target.some_users("id,displayName")
    awkward = [
        u
        for u in users
        if u["displayName"]
        and (set(u["displayName"]) & set("'#&+") or not u["displayName"].isascii())
    ][:5]
    if not awkward:
        pytest.skip(f"no listed user has a name like {AWKWARD_NAMES[0]!r} to look up")
    for user in awkward:
        name = user["displayName"]
        response = target.get(
            "users",
            params={"$filter": f"displayName eq {escaped(other_case(name))}", "$select": "id"},
        )
        assert response.status_code == 200, response.text
        assert user["id"] in {u["id"] for u in response.json()["value"]}, name


def test_a_doubled_quote_is_one_quote_not_a_syntax_error(target: Target) -> None:
    response = target.get(
        "users", params={"$filter": "displayName eq 'Nobody O''Nobody #&+ é'", "$select": "id"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["value"] == []


# -- users and photos ---------------------------------------------------------------------


def test_an_unknown_user_id_is_request_resource_not_found(target: Target) -> None:
    response = target.get(f"users/{uuid.uuid4()}")
    assert response.status_code == 404
    assert error_code(response) == "Request_ResourceNotFound"


def test_a_user_without_a_photo_is_image_not_found(target: Target) -> None:
    checked = []
    for user in target.some_users("id", count=20):
        response = target.get(f"users/{user['id']}/photo/$value")
        if response.status_code == 404:
            checked.append(user["id"])
            assert error_code(response) == "ImageNotFound"
    if not checked:
        pytest.skip("every listed user has a photo: no missing one to look at")


def _mean_colour(data: bytes) -> tuple[float, ...]:
    with Image.open(io.BytesIO(data)) as image:
        return tuple(ImageStat.Stat(image.convert("RGB")).mean)


def test_a_written_photo_reads_back_and_the_old_one_is_put_back(target: Target) -> None:
    user = target.write_user
    if user is None:
        pytest.skip("set PHOTOSYNC_FIDELITY_WRITE_USER to a test user whose photo may change")
    path = f"users/{user}/photo/$value"
    before = target.get(path)
    assert before.status_code in (200, 404), before.text
    upload = solid_jpeg((200, 40, 160))
    try:
        put = target.session.put(
            target.url(path), data=upload, headers={"Content-Type": "image/jpeg"}, timeout=60
        )
        assert 200 <= put.status_code < 300, put.text
        after = target.get(path)
        assert after.status_code == 200
        assert after.headers["Content-Type"].startswith("image/")
        # Graph may re-encode what it stores; the picture, not the bytes, must survive.
        colour = _mean_colour(after.content)
        assert all(abs(a - b) < 12 for a, b in zip(colour, (200, 40, 160), strict=True))
    finally:
        if before.status_code == 200:
            restored = target.session.put(
                target.url(path),
                data=before.content,
                headers={"Content-Type": before.headers.get("Content-Type", "image/jpeg")},
                timeout=60,
            )
        else:
            restored = target.session.delete(target.url(path), timeout=60)
        assert 200 <= restored.status_code < 300, restored.text
    assert target.get(path).content == before.content or before.status_code == 404
