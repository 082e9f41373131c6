"""Matching and planning: pure functions, no I/O."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from reconciler.matching import MatchKind, UserIndex, match, name_key, normalise, parse_overrides
from reconciler.model import ActionKind, FileStat, InboxFile, Outcome, User
from reconciler.planner import LedgerView, RecordedFile, new_or_changed, plan

JANE = User("1", "Jane Doe", "jane@contoso.com")
LEE1 = User("2", "Lee Gu", "lee1@contoso.com")
LEE2 = User("3", "Lee Gu", "lee2@contoso.com")
GUEST = User("4", "Gus Guest", "gus@x.com", user_type="Guest")
OFF = User("5", "Dana Off", "dana@contoso.com", account_enabled=False)
LEE_OFF = User("6", "Lee Gu", "lee3@contoso.com", account_enabled=False)
INDEX = UserIndex([JANE, LEE1, LEE2, GUEST, OFF, LEE_OFF], "displayName")


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


def file(name: str, sha: str = "a" * 64) -> InboxFile:
    return InboxFile(name, Path("/in") / name, FileStat(1, 1, 1, 1), sha)


EMPTY = LedgerView(files={}, last_upload_sha={})


def test_plan_outcomes_and_reasons() -> None:
    files = [
        file("Jane Doe.jpg"),
        file("Lee Gu.jpg"),
        file("Gus Guest.jpg"),
        file("Nobody.jpg"),
        file("readme.txt"),
    ]
    the_plan = plan(files, [file("Late.jpg", sha="")], EMPTY, INDEX, {})
    by_name = {a.file.name: a for a in the_plan.actions}
    assert by_name["Jane Doe.jpg"].kind is ActionKind.UPLOAD
    assert by_name["Jane Doe.jpg"].user == JANE
    assert by_name["Lee Gu.jpg"].outcome is Outcome.AMBIGUOUS
    assert by_name["Lee Gu.jpg"].candidates == ("lee1@contoso.com", "lee2@contoso.com")
    assert by_name["Gus Guest.jpg"].outcome is Outcome.INELIGIBLE
    assert "guest" in by_name["Gus Guest.jpg"].reason
    assert by_name["Nobody.jpg"].outcome is Outcome.UNMATCHED
    assert by_name["readme.txt"].kind is ActionKind.REJECT
    assert by_name["Late.jpg"].outcome is Outcome.DEFERRED


def test_plan_skips_content_already_uploaded_to_that_user() -> None:
    view = LedgerView(files={}, last_upload_sha={JANE.id: "a" * 64})
    the_plan = plan([file("Jane Doe.jpg")], [], view, INDEX, {})
    assert the_plan.actions[0].kind is ActionKind.MOVE_UNCHANGED
    changed = plan([file("Jane Doe.jpg", sha="b" * 64)], [], view, INDEX, {})
    assert changed.actions[0].kind is ActionKind.UPLOAD


def test_recorded_success_is_moved_even_if_the_name_no_longer_matches() -> None:
    view = LedgerView(files={"/in/Old Name.jpg": RecordedFile("a" * 64, JANE)}, last_upload_sha={})
    the_plan = plan([file("Old Name.jpg")], [], view, INDEX, {})
    assert the_plan.actions[0].kind is ActionKind.MOVE_UNCHANGED
    assert the_plan.actions[0].user == JANE


def test_new_or_changed() -> None:
    view = LedgerView(files={"/in/a.jpg": RecordedFile("a" * 64)}, last_upload_sha={})
    same, changed, new = file("a.jpg"), file("a.jpg", "b" * 64), file("b.jpg")
    assert new_or_changed([same, changed, new], view) == [changed, new]
