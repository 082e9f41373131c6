"""Matching file names to users: pure functions, no I/O. The planner that uses them is
tested in tests/test_planner.py."""

from __future__ import annotations

import unicodedata

import pytest

from reconciler.matching import MatchKind, UserIndex, match, name_key, normalise, parse_overrides
from reconciler.model import User
from tests.helpers import INDEX, JANE


def test_normalise_folds_case_unicode_and_spaces() -> None:
    nfd = unicodedata.normalize("NFD", "  ZOË\tÅngström ")
    assert normalise(nfd) == normalise("zoë ångström") == "zoë ångström"
    assert name_key("Jane Doe.JPEG") == name_key("jane  doe.png") == "jane doe"
    assert name_key("notes.txt") == "notes.txt"  # not an image suffix: nothing stripped


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("jane doe", MatchKind.UNIQUE),
        ("lee gu", MatchKind.AMBIGUOUS),
        ("gus guest", MatchKind.INELIGIBLE),
        ("dana off", MatchKind.INELIGIBLE),
        ("nobody", MatchKind.NONE),
    ],
)
def test_match_kinds(name: str, kind: MatchKind) -> None:
    assert match(name, INDEX).kind is kind


def test_disabled_namesake_does_not_make_a_unique_match_ambiguous() -> None:
    index = UserIndex(
        [JANE, User("9", "Jane Doe", "old@contoso.com", account_enabled=False)], "displayName"
    )
    result = match("jane doe", index)
    assert result.kind is MatchKind.UNIQUE and result.user == JANE


def test_suggestions_find_near_names() -> None:
    index = UserIndex(
        [User("1", "John Smith"), User("2", "Joan Smythe"), User("3", "Zed")], "displayName"
    )
    assert index.suggestions("jon smith")[0] == "John Smith"
    assert "Zed" not in index.suggestions("jon smith")


def test_match_on_another_property() -> None:
    index = UserIndex([User("1", "Jane Doe", "jane@contoso.com", employee_id="E123")], "employeeId")
    assert match(name_key("e123.jpg"), index).kind is MatchKind.UNIQUE


def test_overrides_parsing() -> None:
    rows = [["filename", "userPrincipalName"], ["Lee Gu (Sales).jpg", "lee2@contoso.com"], []]
    assert parse_overrides(rows) == {"lee gu (sales)": "lee2@contoso.com"}
    with pytest.raises(ValueError, match="line 2"):
        parse_overrides([["filename", "userPrincipalName"], ["x.jpg", "not-an-upn"]])
