"""The planner (reconciler/planner.py): what a run will do with each file, for whom and why,
decided from model values alone; and the check with Graph's answer just before writing.
Pure functions, no I/O: every test builds real model values and reads the real plan."""

from __future__ import annotations

from pathlib import Path

from reconciler.matching import UserIndex
from reconciler.model import (
    Action,
    ActionKind,
    FileStat,
    InboxFile,
    LedgerView,
    Outcome,
    Plan,
    RecordedFile,
    UnreadableFile,
    User,
)
from reconciler.planner import (
    Lookup,
    confirm,
    confirmation_lookups,
    new_or_changed,
    plan,
    undecided,
    waiting,
)
from tests.helpers import GUEST, INDEX, JANE, LEE1, LEE2, OFF

# A B2B account synchronised from another tenant: userType Member, but an #EXT# UPN.
EXTERNAL = User("7", "Eve External", "eve_fabrikam.com#EXT#@contoso.onmicrosoft.com")
JOHN = User("8", "John Smith", "john@contoso.com")


def file(name: str, sha: str = "a" * 64) -> InboxFile:
    return InboxFile(name, Path("/in") / name, FileStat(1, 1, 1, 1), sha)


EMPTY = LedgerView(files={}, last_upload_sha={})


def by_name(the_plan: Plan) -> dict[str, Action]:
    return {a.file.name: a for a in the_plan.actions}


# --- moved from tests/test_matching.py, unchanged


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


# --- plan: one verdict per file


def test_a_new_file_is_uploaded_to_the_one_eligible_user_it_names() -> None:
    the_plan = plan([file("jane  DOE.JPG")], [], EMPTY, INDEX, {})

    assert the_plan.actions == (
        Action(
            file("jane  DOE.JPG"),
            ActionKind.UPLOAD,
            Outcome.UPLOADED,
            "new photo for jane@contoso.com",
            JANE,
        ),
    )
    assert the_plan.has_graph_work


def test_new_content_for_a_user_with_an_earlier_upload_is_a_changed_photo() -> None:
    view = LedgerView(files={}, last_upload_sha={JANE.id: "b" * 64})

    action = plan([file("Jane Doe.jpg")], [], view, INDEX, {}).actions[0]

    assert (action.kind, action.outcome, action.user) == (
        ActionKind.UPLOAD,
        Outcome.UPLOADED,
        JANE,
    )
    assert action.reason == "changed photo for jane@contoso.com"


def test_two_eligible_users_with_the_name_leave_the_file_ambiguous() -> None:
    the_plan = plan([file("Lee Gu.jpg")], [], EMPTY, INDEX, {})

    action = the_plan.actions[0]
    assert (action.kind, action.outcome, action.user) == (
        ActionKind.LEAVE,
        Outcome.AMBIGUOUS,
        None,
    )
    # The disabled third Lee Gu is no candidate: only eligible users make a name ambiguous.
    assert action.candidates == ("lee1@contoso.com", "lee2@contoso.com")
    assert action.reason.startswith(
        "2 users match displayName 'lee gu' (lee1@contoso.com, lee2@contoso.com)"
    )
    assert "overrides file" in action.reason
    assert not the_plan.has_graph_work and the_plan.of_kind(ActionKind.UPLOAD) == []


def test_a_disabled_users_file_is_ineligible_and_names_the_rule() -> None:
    action = plan([file("Dana Off.jpg")], [], EMPTY, INDEX, {}).actions[0]

    assert (action.kind, action.outcome, action.user) == (
        ActionKind.LEAVE,
        Outcome.INELIGIBLE,
        OFF,
    )
    assert action.reason == (
        "the only match, dana@contoso.com, is not eligible (disabled); photos go to enabled "
        "members of this tenant only"
    )


def test_an_external_member_is_ineligible_unless_external_members_are_included() -> None:
    files = [file("Eve External.jpg")]

    strict = plan(files, [], EMPTY, UserIndex([EXTERNAL], "displayName"), {}).actions[0]
    lenient_index = UserIndex([EXTERNAL], "displayName", include_external=True)
    lenient = plan(files, [], EMPTY, lenient_index, {}).actions[0]

    assert (strict.kind, strict.outcome, strict.user) == (
        ActionKind.LEAVE,
        Outcome.INELIGIBLE,
        EXTERNAL,
    )
    assert "(external (B2B) account)" in strict.reason
    assert (lenient.kind, lenient.outcome, lenient.user) == (
        ActionKind.UPLOAD,
        Outcome.UPLOADED,
        EXTERNAL,
    )


def test_content_already_uploaded_to_the_user_is_only_moved() -> None:
    view = LedgerView(files={}, last_upload_sha={JANE.id: "a" * 64})

    action = plan([file("Jane Doe.jpg")], [], view, INDEX, {}).actions[0]

    assert (action.kind, action.outcome, action.user) == (
        ActionKind.MOVE_UNCHANGED,
        Outcome.UNCHANGED,
        JANE,
    )
    assert action.reason == "already uploaded to jane@contoso.com with this content"


def test_a_recorded_upload_of_other_content_does_not_spare_the_file_a_match() -> None:
    # The ledger uploaded this path's *earlier* content to Jane; the bytes now differ, so the
    # name decides afresh (and names nobody).
    view = LedgerView(
        files={"/in/Old Name.jpg": RecordedFile("b" * 64, JANE, "uploaded")}, last_upload_sha={}
    )

    action = plan([file("Old Name.jpg")], [], view, INDEX, {}).actions[0]

    assert (action.kind, action.outcome, action.user) == (
        ActionKind.LEAVE,
        Outcome.UNMATCHED,
        None,
    )


def test_two_files_for_one_person_are_both_refused_and_name_each_other() -> None:
    files = [file("Jane Doe.jpg"), file("jane doe.png", "b" * 64), file("Gus Guest.jpg")]
    index = UserIndex([JANE, GUEST, JOHN], "displayName")

    the_plan = plan([*files, file("John Smith.jpg", "c" * 64)], [], EMPTY, index, {})

    actions = by_name(the_plan)
    jpg, png = actions["Jane Doe.jpg"], actions["jane doe.png"]
    for action, other in ((jpg, "jane doe.png"), (png, "Jane Doe.jpg")):
        assert (action.kind, action.outcome, action.user) == (
            ActionKind.LEAVE,
            Outcome.AMBIGUOUS,
            JANE,
        )
        assert action.reason == f"{other} is also for jane@contoso.com; keep one file per person"
        assert action.candidates == ("jane@contoso.com",)
    # Only Jane's files compete: John's upload stands.
    assert [a.file.name for a in the_plan.of_kind(ActionKind.UPLOAD)] == ["John Smith.jpg"]


def test_an_override_settles_an_ambiguous_name() -> None:
    overrides = {"lee gu": "LEE2@contoso.com"}

    action = plan([file("Lee Gu.jpg")], [], EMPTY, INDEX, overrides).actions[0]

    assert (action.kind, action.outcome, action.user) == (
        ActionKind.UPLOAD,
        Outcome.UPLOADED,
        LEE2,
    )
    assert action.reason == "new photo for lee2@contoso.com (overrides file)"


def test_an_override_naming_nobody_in_the_tenant_is_unmatched_without_guesses() -> None:
    overrides = {"jane doe": "gone@contoso.com"}

    action = plan([file("Jane Doe.jpg")], [], EMPTY, INDEX, overrides).actions[0]

    assert (action.kind, action.outcome, action.user, action.candidates) == (
        ActionKind.LEAVE,
        Outcome.UNMATCHED,
        None,
        (),
    )
    assert action.reason == (
        "the overrides file names gone@contoso.com, who is not in the tenant; fix the CSV line"
    )


def test_an_unmatched_name_suggests_near_names_and_names_a_stray_dot() -> None:
    index = UserIndex([JOHN, JANE], "displayName")

    actions = by_name(plan([file("Jon Smith.jpg"), file("Jane Doe..jpg")], [], EMPTY, index, {}))

    jon = actions["Jon Smith.jpg"]
    assert (jon.outcome, jon.candidates) == (Outcome.UNMATCHED, ("John Smith",))
    assert jon.reason == "no user has displayName 'jon smith'; did you mean John Smith?"
    dotted = actions["Jane Doe..jpg"]
    assert dotted.outcome is Outcome.UNMATCHED
    assert dotted.reason.endswith(
        "the name has a dot before the extension: rename it 'Jane Doe.jpg'"
    )


def test_files_that_are_no_photo_or_no_text_are_rejected() -> None:
    undecodable = file("Jane\udcff.jpg")

    actions = by_name(plan([file("Jane Doe.pdf"), undecodable], [], EMPTY, INDEX, {}))

    pdf = actions["Jane Doe.pdf"]
    assert (pdf.kind, pdf.outcome, pdf.user) == (ActionKind.REJECT, Outcome.INVALID, None)
    assert pdf.reason.startswith("not a photo file type")
    bad_name = actions[undecodable.name]
    assert (bad_name.kind, bad_name.outcome) == (ActionKind.REJECT, Outcome.INVALID)
    assert bad_name.reason == "rename this file: its name is not valid UTF-8"


def test_unreadable_files_stay_failed_and_ignored_entries_are_only_reported() -> None:
    locked = UnreadableFile(file("Jane Doe.jpg", sha=""), "Permission denied")
    link = UnreadableFile(file("Lee Gu.jpg", sha=""), "a symbolic link; not followed", True)

    actions = by_name(plan([], [], EMPTY, INDEX, {}, [locked, link]))

    jane = actions["Jane Doe.jpg"]
    assert (jane.kind, jane.outcome) == (ActionKind.LEAVE, Outcome.FAILED)
    assert jane.reason == (
        "cannot be read (Permission denied); give the account that runs photosync read access"
    )
    lee = actions["Lee Gu.jpg"]
    assert (lee.kind, lee.outcome, lee.reason) == (
        ActionKind.LEAVE,
        Outcome.IGNORED,
        "a symbolic link; not followed",
    )


def test_the_plan_lists_every_file_once_by_name() -> None:
    files = [file("Nobody.jpg"), file("Jane Doe.jpg"), file("Gus Guest.jpg")]

    the_plan = plan(files, [file("Lee Gu.jpg", sha="")], EMPTY, INDEX, {})

    assert [a.file.name for a in the_plan.actions] == [
        "Gus Guest.jpg",
        "Jane Doe.jpg",
        "Lee Gu.jpg",
        "Nobody.jpg",
    ]
    deferred = by_name(the_plan)["Lee Gu.jpg"]
    assert (deferred.kind, deferred.outcome) == (ActionKind.LEAVE, Outcome.DEFERRED)


# --- which files need users from Graph


def test_waiting_and_undecided_files_by_their_last_verdict() -> None:
    view = LedgerView(
        files={
            "/in/a.jpg": RecordedFile("a" * 64, last_outcome="unmatched"),
            "/in/b.jpg": RecordedFile("a" * 64, last_outcome="ambiguous"),
            "/in/c.jpg": RecordedFile("a" * 64, last_outcome="ineligible"),
            "/in/d.jpg": RecordedFile("a" * 64, last_outcome="failed"),
            "/in/e.jpg": RecordedFile("a" * 64, last_outcome=None),
        },
        last_upload_sha={},
    )
    a, b, c, d, e, new = (file(f"{n}.jpg") for n in "abcdef")

    assert waiting([a, b, c, d, e, new], view) == [a, b, c]
    # Seen by a run that was killed before it decided: not new, but it needs users too.
    assert undecided([a, b, c, d, e, new], view) == [e]
    assert new_or_changed([a, b, c, d, e, new], view) == [new]


# --- confirm before write


def uploads_to(*pairs: tuple[str, User]) -> Plan:
    """A plan of uploads, as `plan` makes them, of file name -> user."""
    return Plan(
        tuple(
            Action(file(name), ActionKind.UPLOAD, Outcome.UPLOADED, "new photo", user)
            for name, user in pairs
        )
    )


def test_each_planned_upload_gets_one_lookup_and_nothing_else_does() -> None:
    the_plan = Plan(
        (
            *uploads_to(("jane  DOE.jpg", JANE), ("Lee Gu.jpg", LEE2)).actions,
            Action(file("Nobody.jpg"), ActionKind.LEAVE, Outcome.UNMATCHED, "no user"),
        )
    )

    lookups = confirmation_lookups(the_plan, {"lee gu": "lee2@contoso.com"}, "displayName")

    assert lookups == {
        # The user's own spelling, which still normalises to the file's key.
        "/in/jane  DOE.jpg": Lookup("displayName", "Jane Doe", "jane doe"),
        # An override asks by the UPN it names.
        "/in/Lee Gu.jpg": Lookup("userPrincipalName", "lee2@contoso.com", "lee2@contoso.com"),
    }


def test_a_lookup_asks_for_the_file_name_when_the_users_spelling_no_longer_fits() -> None:
    renamed = User("1", "Jane Smith", "jane@contoso.com")  # the ledger's copy, renamed since

    lookups = confirmation_lookups(uploads_to((" Jane   Doe .jpg", renamed)), {}, "displayName")

    assert lookups == {"/in/ Jane   Doe .jpg": Lookup("displayName", "Jane Doe", "jane doe")}


def test_one_lookup_per_upload_however_many_share_a_property() -> None:
    # Graph is asked at most 15 values a request (FILTER_VALUES_LIMIT, chunked by the
    # caller: tests/test_graph_client.py); the planner hands it one value per upload.
    staff = [User(str(n), f"Staff {n}", f"staff{n}@contoso.com") for n in range(40)]

    lookups = confirmation_lookups(
        uploads_to(*((f"Staff {u.id}.jpg", u) for u in staff)), {}, "displayName"
    )

    assert len(lookups) == 40
    assert {lookup.graph_property for lookup in lookups.values()} == {"displayName"}
    assert sorted(lookup.value for lookup in lookups.values()) == sorted(
        f"Staff {n}" for n in range(40)
    )


def confirmed(found: list[User], *, include_external: bool = False) -> Action:
    the_plan = uploads_to(("Jane Doe.jpg", JANE))
    lookups = confirmation_lookups(the_plan, {}, "displayName")
    result = confirm(the_plan, lookups, found, include_external=include_external)
    assert len(result.actions) == 1
    return result.actions[0]


def test_confirm_keeps_an_upload_when_graph_names_exactly_the_planned_user() -> None:
    now = User("1", "Jane Doe", "jane@contoso.com", mail="jane@contoso.com")
    other = User("9", "Someone Else", "else@contoso.com")  # another lookup's answer

    action = confirmed([other, now])

    assert (action.kind, action.outcome, action.reason) == (
        ActionKind.UPLOAD,
        Outcome.UPLOADED,
        "new photo",
    )
    assert action.user == now  # as Graph has it now, not the ledger's copy


def test_confirm_turns_an_upload_unmatched_when_graph_has_nobody_by_that_name() -> None:
    action = confirmed([User("9", "Someone Else", "else@contoso.com")])

    assert (action.kind, action.outcome, action.user) == (
        ActionKind.LEAVE,
        Outcome.UNMATCHED,
        None,
    )
    assert action.reason == (
        "checked with Graph before writing: no user has displayName 'Jane Doe' any more"
    )


def test_confirm_turns_an_upload_ambiguous_when_a_namesake_appeared() -> None:
    namesake = User("9", "JANE DOE", "jane.doe@contoso.com")

    action = confirmed([JANE, namesake])

    assert (action.kind, action.outcome, action.user) == (
        ActionKind.LEAVE,
        Outcome.AMBIGUOUS,
        None,
    )
    assert action.candidates == ("jane@contoso.com", "jane.doe@contoso.com")
    assert action.reason.startswith("checked with Graph before writing: 2 users match")


def test_confirm_turns_an_upload_ineligible_when_the_user_was_disabled() -> None:
    disabled = User("1", "Jane Doe", "jane@contoso.com", account_enabled=False)

    action = confirmed([disabled])

    assert (action.kind, action.outcome, action.user) == (
        ActionKind.LEAVE,
        Outcome.INELIGIBLE,
        disabled,
    )
    assert action.reason.startswith("checked with Graph before writing: the only match")
    assert "(disabled)" in action.reason


def test_confirm_respects_include_external_for_an_external_holder() -> None:
    external_jane = User("1", "Jane Doe", "jane_fabrikam.com#EXT#@contoso.onmicrosoft.com")

    refused = confirmed([external_jane])
    kept = confirmed([external_jane], include_external=True)

    assert (refused.kind, refused.outcome) == (ActionKind.LEAVE, Outcome.INELIGIBLE)
    assert "external (B2B) account" in refused.reason
    assert (kept.kind, kept.user) == (ActionKind.UPLOAD, external_jane)


def test_confirm_defers_an_upload_when_the_name_now_belongs_to_someone_else() -> None:
    successor = User("9", "Jane Doe", "jane.new@contoso.com")

    action = confirmed([successor])

    assert (action.kind, action.outcome, action.user) == (
        ActionKind.LEAVE,
        Outcome.DEFERRED,
        None,
    )
    assert action.reason == (
        "Graph, asked before writing, says displayName 'Jane Doe' is now jane.new@contoso.com, "
        "not jane@contoso.com; the next run matches the file afresh"
    )


def test_confirm_never_adds_an_upload() -> None:
    left = Action(file("Lee Gu.jpg"), ActionKind.LEAVE, Outcome.AMBIGUOUS, "2 users", None)
    moved = Action(file("Old.jpg"), ActionKind.MOVE_UNCHANGED, Outcome.UNCHANGED, "same", JANE)
    the_plan = Plan((left, moved))

    # Graph now knows exactly one Lee Gu; the plan's verdicts stand all the same.
    lookups = confirmation_lookups(the_plan, {}, "displayName")
    result = confirm(the_plan, lookups, [LEE1], include_external=False)

    assert result == the_plan
