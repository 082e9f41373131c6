"""The emulator's switches for Graph's weakest documented promises, driven over HTTP.

Each test shows the behaviour with its switch off and on, so it fails if the switch does
nothing; tests/test_emulator.py covers the friendly defaults.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from reconciler.emulator import GraphEmulator
from reconciler.emulator.tenant import DEFAULT_PROPERTIES
from tests.helpers import delta_round, error_of, follow, v1
from tests.test_emulator import graph

__all__ = ["graph"]  # the fixture, imported so pytest finds it here

SELECT = "id,displayName,userPrincipalName,mail,accountEnabled,userType"


def listed_ids(session: requests.Session, emulator: GraphEmulator, **params: str) -> set[str]:
    pages = follow(session, v1(emulator, "users"), params={"$select": "id", **params})
    return {u["id"] for p in pages for u in p["value"]}


def found(session: requests.Session, emulator: GraphEmulator, expression: str) -> list[str]:
    response = session.get(
        v1(emulator, "users"), params={"$filter": expression, "$select": "id,displayName"}
    )
    assert response.status_code == 200, response.text
    return [u["displayName"] for u in response.json()["value"]]


# -- delta_items ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["selected", "changed", "sparse"])
def test_delta_items_carry_what_the_mode_promises_for_updated_users(
    emulator: GraphEmulator, graph: requests.Session, mode: str
) -> None:
    tenant = emulator.tenant
    user = tenant.add_user("Ada Lovelace", mail="ada@contoso.com")
    _, link = delta_round(graph, v1(emulator, f"users/delta?$select={SELECT}"))
    emulator.faults.delta_items = mode
    tenant.update_user(user, accountEnabled=False, mail=None)
    changes, _ = delta_round(graph, link)  # no Prefer header
    if mode == "selected":
        assert changes == [
            {
                "id": user,
                "displayName": "Ada Lovelace",
                "userPrincipalName": "ada.lovelace@contoso.com",
                "mail": None,
                "accountEnabled": False,
                "userType": "Member",
            }
        ]
    else:
        assert changes == [{"id": user, "accountEnabled": False, "mail": None}]


@pytest.mark.parametrize("mode", ["changed", "sparse"])
def test_sparse_delta_items_give_new_users_only_an_id_and_a_name(
    emulator: GraphEmulator, graph: requests.Session, mode: str
) -> None:
    _, link = delta_round(graph, v1(emulator, f"users/delta?$select={SELECT}"))
    emulator.faults.delta_items = mode
    newcomer = emulator.tenant.add_user("Grace Hopper", user_type="Guest")
    changes, next_link = delta_round(graph, link)
    if mode == "changed":
        assert changes == [
            {
                "id": newcomer,
                "displayName": "Grace Hopper",
                "userPrincipalName": "grace.hopper@contoso.com",
                "accountEnabled": True,
                "userType": "Guest",
            }
        ]
    else:
        assert changes == [{"id": newcomer, "displayName": "Grace Hopper"}]
    # The rest is never sent unless it changes: /users/{id} is where to learn it.
    emulator.tenant.update_user(newcomer, accountEnabled=False)
    later, _ = delta_round(graph, next_link)
    assert later == [{"id": newcomer, "accountEnabled": False}]


def test_an_unknown_delta_items_mode_is_answered_with_a_500_naming_it(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    _, link = delta_round(graph, v1(emulator, "users/delta"))
    emulator.faults.delta_items = "everything"
    response = graph.get(link)
    assert response.status_code == 500
    assert "'everything'" in error_of(response)["message"]


# -- latest_forgets_select ----------------------------------------------------------------


@pytest.mark.parametrize("forgets", [False, True])
def test_latest_delta_link_may_forget_its_select(
    emulator: GraphEmulator, graph: requests.Session, forgets: bool
) -> None:
    tenant = emulator.tenant
    disabled, renamed = tenant.add_users(2)
    emulator.faults.latest_forgets_select = forgets
    latest = graph.get(v1(emulator, f"users/delta?$select={SELECT}&$deltatoken=latest")).json()
    assert latest["value"] == []
    tenant.update_user(disabled, accountEnabled=False)
    tenant.update_user(renamed, displayName="Renamed")
    changes, next_link = delta_round(graph, latest["@odata.deltaLink"])
    by_id = {c["id"]: c for c in changes}
    if not forgets:
        assert set(by_id) == {disabled, renamed}
        assert by_id[disabled]["accountEnabled"] is False
        assert by_id[renamed]["accountEnabled"] is True
        return
    assert set(by_id) == {renamed}
    assert set(by_id[renamed]) <= set(DEFAULT_PROPERTIES)
    assert by_id[renamed]["displayName"] == "Renamed"
    # ...and every round after it tracks the default properties only.
    tenant.update_user(renamed, userType="Guest", employeeId="E1", mailNickname="nick")
    tenant.update_user(disabled, accountEnabled=True)
    assert delta_round(graph, next_link)[0] == []


def test_forgetting_applies_only_to_links_from_latest(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    user = emulator.tenant.add_user("Ada Lovelace")
    emulator.faults.latest_forgets_select = True
    _, link = delta_round(graph, v1(emulator, f"users/delta?$select={SELECT}"))
    emulator.tenant.update_user(user, accountEnabled=False)
    changes, _ = delta_round(graph, link)
    assert [c["accountEnabled"] for c in changes] == [False]


# -- restores and hide_restores -----------------------------------------------------------


@pytest.mark.parametrize("hide", [False, True])
def test_a_restored_user_shows_in_delta_unless_restores_are_hidden(
    emulator: GraphEmulator, graph: requests.Session, hide: bool
) -> None:
    tenant = emulator.tenant
    user = tenant.add_user("Ada Lovelace", employee_id="E7", account_enabled=False)
    _, link = delta_round(graph, v1(emulator, f"users/delta?$select={SELECT},employeeId"))
    tenant.delete_user(user)
    removed, link = delta_round(graph, link)
    assert removed == [{"id": user, "@removed": {"reason": "changed"}}]
    assert graph.get(v1(emulator, f"users/{user}")).status_code == 404

    emulator.faults.hide_restores = hide
    tenant.restore_user(user)
    restored, link = delta_round(graph, link)
    if hide:
        assert restored == []
    else:
        assert restored == [
            {
                "id": user,
                "displayName": "Ada Lovelace",
                "userPrincipalName": "ada.lovelace@contoso.com",
                "accountEnabled": False,
                "userType": "Member",
                "employeeId": "E7",
            }
        ]
    # Listings, filters and the user itself show it either way, as it was when deleted.
    assert listed_ids(graph, emulator) == {user}
    assert found(graph, emulator, "employeeId eq 'E7'") == ["Ada Lovelace"]
    got = graph.get(v1(emulator, f"users/{user}?$select=accountEnabled,employeeId")).json()
    assert (got["id"], got["accountEnabled"], got["employeeId"]) == (user, False, "E7")
    # A later change surfaces as usual, hidden restore or not.
    tenant.update_user(user, displayName="Ada King")
    later, _ = delta_round(graph, link)
    assert [(c["id"], c["displayName"]) for c in later] == [(user, "Ada King")]


def test_restore_needs_a_soft_deleted_user_and_a_free_upn(emulator: GraphEmulator) -> None:
    tenant = emulator.tenant
    soft, hard = tenant.add_users(2)
    upn = str((tenant.user(soft) or {})["userPrincipalName"])
    tenant.delete_user(soft)
    tenant.delete_user(hard, permanent=True)
    with pytest.raises(KeyError):
        tenant.restore_user(hard)
    taken_by = tenant.add_user("Newcomer", user_principal_name=upn)
    with pytest.raises(ValueError, match=taken_by):
        tenant.restore_user(soft)
    tenant.delete_user(taken_by, permanent=True)
    tenant.restore_user(soft)
    assert tenant.user(soft) is not None
    with pytest.raises(KeyError):
        tenant.restore_user(soft)  # not deleted any more


# -- replication_lag_s --------------------------------------------------------------------


@pytest.mark.parametrize("lag", [0.0, 30.0])
def test_a_user_is_invisible_until_replicated(
    emulator: GraphEmulator, graph: requests.Session, lag: float
) -> None:
    tenant = emulator.tenant
    old = tenant.add_user("Old Timer")
    emulator.faults.replication_lag_s = lag
    emulator.advance_clock(lag + 1)  # the old user has replicated
    _, link = delta_round(graph, v1(emulator, f"users/delta?$select={SELECT}"))
    young = tenant.add_user("Young Blood", mail="young@contoso.com")

    listed = listed_ids(graph, emulator)
    filtered = found(graph, emulator, "displayName in ('Young Blood','Old Timer')")
    single = graph.get(v1(emulator, f"users/{young}"))
    changes, link = delta_round(graph, link)  # this deltaLink is issued while it is invisible
    if lag == 0:
        assert listed == {old, young} and sorted(filtered) == ["Old Timer", "Young Blood"]
        assert single.status_code == 200
        assert [c["id"] for c in changes] == [young]
        return
    assert listed == {old} and filtered == ["Old Timer"]
    assert single.status_code == 404
    assert error_of(single)["code"] == "Request_ResourceNotFound"
    assert changes == []

    emulator.advance_clock(lag)
    assert listed_ids(graph, emulator) == {old, young}
    assert graph.get(v1(emulator, f"users/{young}")).status_code == 200
    shown, link = delta_round(graph, link)
    assert shown == [
        {
            "id": young,
            "displayName": "Young Blood",
            "userPrincipalName": "young.blood@contoso.com",
            "mail": "young@contoso.com",
            "accountEnabled": True,
            "userType": "Member",
        }
    ]
    assert delta_round(graph, link)[0] == []  # reported once


def test_lagging_users_reach_latest_and_initial_rounds_once_replicated(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    emulator.faults.replication_lag_s = 60
    young = emulator.tenant.add_user("Young Blood")
    latest = graph.get(v1(emulator, f"users/delta?$select={SELECT}&$deltatoken=latest")).json()
    initial, initial_link = delta_round(graph, v1(emulator, f"users/delta?$select={SELECT}"))
    assert initial == []
    emulator.tenant.update_user(young, jobTitle="Not tracked")  # touched while invisible
    emulator.advance_clock(61)
    for link in (latest["@odata.deltaLink"], initial_link):
        changes, _ = delta_round(graph, link)
        assert [(c["id"], c["displayName"]) for c in changes] == [(young, "Young Blood")]


def test_a_user_deleted_while_replicating_is_reported_removed(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    emulator.faults.replication_lag_s = 60
    _, link = delta_round(graph, v1(emulator, "users/delta"))
    young = emulator.tenant.add_user("Young Blood")
    _, link = delta_round(graph, link)
    emulator.tenant.delete_user(young, permanent=True)
    emulator.advance_clock(61)
    changes, _ = delta_round(graph, link)
    assert changes == [{"id": young, "@removed": {"reason": "deleted"}}]


# -- external members ---------------------------------------------------------------------

EXTERNAL_SELECT = "id,userPrincipalName,userType,creationType,externalUserState"


def test_external_members_look_like_cross_tenant_synchronised_accounts(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    tenant = emulator.tenant
    jane = tenant.add_user("Jane Doe", mail="jane@fabrikam.com", external=True)
    local = tenant.add_user("Ada Lovelace")
    default = graph.get(v1(emulator, f"users/{jane}")).json()
    assert "creationType" not in default and "externalUserState" not in default
    selected = {
        u["id"]: u
        for u in graph.get(v1(emulator, "users"), params={"$select": EXTERNAL_SELECT}).json()[
            "value"
        ]
    }
    assert selected[jane] == {
        "id": jane,
        "userPrincipalName": "jane_fabrikam.com#EXT#@contoso.com",
        "userType": "Member",
        "creationType": "Invitation",
        "externalUserState": "Accepted",
    }
    assert selected[local]["creationType"] is None
    assert selected[local]["externalUserState"] is None
    # The #EXT# UPN works as a key, URL-encoded as requests does.
    assert found(graph, emulator, "userPrincipalName eq 'JANE_fabrikam.com#EXT#@contoso.com'") == [
        "Jane Doe"
    ]
    assert (
        graph.get(v1(emulator, "users/jane_fabrikam.com%23EXT%23@contoso.com")).json()["id"] == jane
    )


def test_delta_tracks_the_external_properties(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    jane = emulator.tenant.add_user("Jane Doe", external=True)
    initial, link = delta_round(graph, v1(emulator, f"users/delta?$select={EXTERNAL_SELECT}"))
    assert initial[0]["userPrincipalName"] == "jane.doe#EXT#@contoso.com"
    emulator.tenant.update_user(jane, externalUserState="PendingAcceptance")
    changes, _ = delta_round(graph, link, headers={"Prefer": "return=minimal"})
    assert changes == [{"id": jane, "externalUserState": "PendingAcceptance"}]


# -- filters used to confirm a user before writing ----------------------------------------

KEY_PROPERTIES = {
    "displayName": "display_name",
    "userPrincipalName": "user_principal_name",
    "mail": "mail",
    "mailNickname": "mail_nickname",
    "employeeId": "employee_id",
}


@pytest.mark.parametrize("prop", list(KEY_PROPERTIES))
def test_in_and_or_filters_on_every_key_without_advanced_parameters(
    emulator: GraphEmulator, graph: requests.Session, prop: str
) -> None:
    values = {"Ada": "Ada Lovelace", "Grace": "Grace Hopper", "Alan": "Alan Turing"}
    ids: dict[str, str] = {}
    for n, (short, name) in enumerate(values.items()):
        keys: dict[str, Any] = {
            "user_principal_name": f"{short.lower()}@contoso.com",
            "mail": f"{short.lower()}.mail@contoso.com",
            "mail_nickname": f"{short.lower()}nick",
            "employee_id": f"E{n}",
        }
        ids[short] = emulator.tenant.add_user(name, **keys)

    def key_of(short: str) -> str:
        got = graph.get(v1(emulator, f"users/{ids[short]}?$select={prop}")).json()
        return str(got[prop])

    wanted = [key_of("Ada").upper(), key_of("Alan")]  # case does not matter
    quoted = [f"'{v}'" for v in wanted]
    for expression in (
        f"{prop} in ({','.join(quoted)})",
        " or ".join(f"{prop} eq {q}" for q in quoted),
    ):
        pages = follow(
            graph,
            v1(emulator, "users"),
            params={"$filter": expression, "$select": f"id,{prop}", "$top": "1"},
        )
        assert [len(p["value"]) for p in pages] == [1, 1]
        assert {u["id"] for p in pages for u in p["value"]} == {ids["Ada"], ids["Alan"]}


@pytest.mark.parametrize(
    "name",
    ["Siobhán O'Brien", "Zoë #1 & Co", "A+B Müller", "Ünal Weiß", "李小龙", "Ada  Two Spaces"],
)
def test_literals_arrive_intact_whatever_their_characters(
    emulator: GraphEmulator, graph: requests.Session, name: str
) -> None:
    emulator.tenant.add_user(name)
    emulator.tenant.add_user("Decoy")
    literal = name.replace("'", "''")
    # Upper-cased letter by letter: str.upper() would turn ß into SS, another name.
    shouted = "".join(c.upper() if len(c.upper()) == 1 else c for c in literal)
    assert found(graph, emulator, f"displayName eq '{literal}'") == [name]
    assert found(graph, emulator, f"displayName in ('{shouted}','nobody')") == [name]


def test_query_decoding_reads_plus_as_space_and_percent_2b_as_plus(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    emulator.tenant.add_user("A B")
    emulator.tenant.add_user("A+B")

    def raw(query: str) -> list[str]:
        response = graph.get(v1(emulator, f"users?$select=displayName&{query}"))
        assert response.status_code == 200, response.text
        return [u["displayName"] for u in response.json()["value"]]

    assert raw("$filter=displayName+eq+'A+B'") == ["A B"]
    assert raw("$filter=displayName%20eq%20'A%2BB'") == ["A+B"]


def test_case_is_ignored_letter_by_letter(emulator: GraphEmulator, graph: requests.Session) -> None:
    emulator.tenant.add_user("Johann Strauß")
    emulator.tenant.add_user("ÉLODIE DURAND")
    assert found(graph, emulator, "displayName eq 'JOHANN STRAUß'") == ["Johann Strauß"]
    assert found(graph, emulator, "displayName eq 'Johann Strauss'") == []  # ß is not ss
    assert found(graph, emulator, "displayName eq 'élodie durand'") == ["ÉLODIE DURAND"]


@pytest.mark.parametrize(
    ("expression", "count"),
    [
        ("userPrincipalName in ({values})", 16),
        ("displayName in ({values8}) or {eq8}", 16),
        ("accountEnabled eq true and displayName in ({values15})", 16),
    ],
)
def test_more_than_15_expressions_need_advanced_parameters(
    emulator: GraphEmulator, graph: requests.Session, expression: str, count: int
) -> None:
    emulator.tenant.add_user("User 3", user_principal_name="u3@contoso.com")
    upns = [f"'u{n}@contoso.com'" for n in range(16)]
    names = [f"'User {n}'" for n in range(16)]
    text = expression.format(
        values=",".join(upns),
        values8=",".join(names[:8]),
        eq8=" or ".join(f"displayName eq {n}" for n in names[8:]),
        values15=",".join(names[:15]),
    )
    refused = graph.get(v1(emulator, "users"), params={"$filter": text})
    assert refused.status_code == 400
    assert error_of(refused)["code"] == "Request_UnsupportedQuery"
    assert f"{count}. Max allowed: 15" in error_of(refused)["message"]

    advanced = graph.get(
        v1(emulator, "users"),
        params={"$filter": text, "$count": "true"},
        headers={"ConsistencyLevel": "eventual"},
    )
    assert advanced.status_code == 200, advanced.text
    assert [u["displayName"] for u in advanced.json()["value"]] == ["User 3"]


def test_exactly_15_expressions_work_by_default(
    emulator: GraphEmulator, graph: requests.Session
) -> None:
    emulator.tenant.add_user("User 3")
    names = ",".join(f"'User {n}'" for n in range(15))
    assert found(graph, emulator, f"displayName in ({names})") == ["User 3"]
