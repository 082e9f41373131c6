"""Never the wrong person: real `photosync` CLI runs against the emulator with Graph's
awkward, documented behaviours switched on (docs/graph-behaviour.md).

What every test checks is what an administrator would: which users received a photo (the
emulator's tenant), the bytes they received, the per-file outcome, and what the ledger says.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.matching import normalise
from tests.helpers import cli_args, ledger_rows, write_jpeg


class WriteAudit:
    """Checks, at the instant Graph stores each photo, that the user written to is the one
    eligible user whose displayName equals some inbox file's name at that moment."""

    def __init__(self, emulator: GraphEmulator, settings: Settings) -> None:
        self.emulator = emulator
        self.settings = settings
        self.written: list[str] = []
        self.violations: list[str] = []

    def __call__(self, user_id: str) -> None:
        self.written.append(user_id)
        tenant = self.emulator.tenant
        user = tenant.user(user_id)
        if user is None:
            self.violations.append(f"{user_id}: written after it was deleted")
            return
        key = normalise(user["displayName"] or "")
        files = {normalise(Path(p.name).stem) for p in self.settings.inbox_dir.iterdir()}
        holders = [
            record.props
            for record in tenant.records()
            if normalise(str(record.props.get("displayName") or "")) == key
        ]
        eligible = [props for props in holders if _eligible(props)]
        if key not in files:
            self.violations.append(f"{user['displayName']}: no inbox file has that name")
        if [p["id"] for p in eligible] != [user_id]:
            self.violations.append(
                f"{user['displayName']}: {len(eligible)} eligible holders at write time"
            )


def _eligible(props: dict[str, Any]) -> bool:
    upn = str(props.get("userPrincipalName") or "")
    return (
        props.get("accountEnabled") is True
        and props.get("userType") == "Member"
        and "#EXT#" not in upn.upper()
        and props.get("creationType") != "Invitation"
    )


@pytest.fixture
def audit(emulator: GraphEmulator, settings: Settings) -> Iterator[WriteAudit]:
    watcher = WriteAudit(emulator, settings)
    emulator.faults.after_photo_stored = watcher
    yield watcher
    assert watcher.violations == []


def run(settings: Settings, *extra: str, command: str = "reconcile") -> dict[str, Any]:
    result = CliRunner().invoke(main, [command, "--json", *cli_args(settings), *extra])
    assert result.exit_code in (0, 1), result.output
    summary: dict[str, Any] = json.loads(result.stdout)
    summary["exit_code"] = result.exit_code
    return summary


def verdicts(settings: Settings) -> dict[str, tuple[str, str]]:
    """file name -> (last outcome, reason), as the ledger records them."""
    rows = ledger_rows(settings, "SELECT name, last_outcome, last_reason FROM inbox_files")
    return {str(name): (str(outcome), str(reason)) for name, outcome, reason in rows}


def settle_a_first_run(settings: Settings) -> None:
    """A first run that lists every user and saves a delta link, as a scheduled job would
    have done before the photos below arrive."""
    write_jpeg(settings.inbox_dir / "Someone Else.jpg", color=(1, 2, 3))
    run(settings)
    (settings.inbox_dir / "Someone Else.jpg").unlink()


def test_delta_items_that_carry_only_changes_keep_what_the_ledger_knew(
    settings: Settings, emulator: GraphEmulator, audit: WriteAudit
) -> None:
    tenant = emulator.tenant
    jane_a = tenant.add_user("Jane Doe", user_principal_name="jane.a@contoso.com")
    jane_b = tenant.add_user("Jane Doe", user_principal_name="jane.b@contoso.com")
    guest = tenant.add_user("Gus Guest", user_type="Guest")
    off = tenant.add_user("Dana Off", account_enabled=False)
    settle_a_first_run(settings)
    emulator.faults.delta_items = "changed"
    for user_id in (jane_a, jane_b, guest, off):
        tenant.update_user(user_id, mail=f"{user_id}@contoso.com")  # only mail changes
    for name in ("Jane Doe", "Gus Guest", "Dana Off"):
        write_jpeg(settings.inbox_dir / f"{name}.jpg")

    summary = run(settings)

    assert (summary["ambiguous"], summary["ineligible"], summary["uploaded"]) == (1, 2, 0)
    assert audit.written == []
    assert verdicts(settings)["Jane Doe.jpg"][0] == "ambiguous"
    stored = ledger_rows(
        settings, f"SELECT display_name, mail FROM users WHERE id IN ('{jane_a}', '{jane_b}')"
    )
    assert sorted(stored) == sorted(
        [("Jane Doe", f"{jane_a}@contoso.com"), ("Jane Doe", f"{jane_b}@contoso.com")]
    )


def test_a_new_user_known_only_by_name_is_read_in_full_before_matching(
    settings: Settings, emulator: GraphEmulator, audit: WriteAudit
) -> None:
    tenant = emulator.tenant
    settle_a_first_run(settings)
    emulator.faults.delta_items = "sparse"  # a new user arrives as id + displayName only
    ned = tenant.add_user("Ned New")
    tenant.add_user("Gail Guest", user_type="Guest")
    tenant.add_user("Nora Off", account_enabled=False)
    ned_bytes = write_jpeg(settings.inbox_dir / "Ned New.jpg", color=(10, 200, 10))
    write_jpeg(settings.inbox_dir / "Gail Guest.jpg")
    write_jpeg(settings.inbox_dir / "Nora Off.jpg")

    summary = run(settings)

    assert (summary["uploaded"], summary["ineligible"]) == (1, 2)
    assert audit.written == [ned]
    photo = tenant.photo(ned)
    assert photo is not None and photo.data == ned_bytes
    assert "guest" in verdicts(settings)["Gail Guest.jpg"][1]
    assert "disabled" in verdicts(settings)["Nora Off.jpg"][1]


def test_a_leaver_disabled_after_a_forgetful_latest_link_is_never_written(
    settings: Settings, emulator: GraphEmulator, audit: WriteAudit
) -> None:
    emulator.faults.latest_forgets_select = True
    tenant = emulator.tenant
    leaver = tenant.add_user("Lee Leaver")
    settle_a_first_run(settings)  # the delta link it saves tracks no eligibility
    tenant.update_user(leaver, accountEnabled=False)
    write_jpeg(settings.inbox_dir / "Lee Leaver.jpg")

    summary = run(settings)

    assert (summary["uploaded"], summary["ineligible"]) == (0, 1)
    assert audit.written == [] and tenant.photo(leaver) is None
    reason = verdicts(settings)["Lee Leaver.jpg"][1]
    assert reason.startswith("checked with Graph before writing") and "disabled" in reason
    # The ledger learned what Graph said, so the next run knows without asking again.
    assert ledger_rows(settings, f"SELECT account_enabled FROM users WHERE id = '{leaver}'") == [
        (0,)
    ]


def test_a_restored_twin_that_delta_never_shows_makes_the_name_ambiguous(
    settings: Settings, emulator: GraphEmulator, audit: WriteAudit
) -> None:
    emulator.faults.hide_restores = True
    tenant = emulator.tenant
    rob = tenant.add_user("Rob Twin", user_principal_name="rob.one@contoso.com")
    twin = tenant.add_user("Rob Twin", user_principal_name="rob.two@contoso.com")
    tenant.delete_user(twin)
    settle_a_first_run(settings)
    tenant.restore_user(twin)
    write_jpeg(settings.inbox_dir / "Rob Twin.jpg")

    summary = run(settings)

    assert (summary["uploaded"], summary["ambiguous"]) == (0, 1)
    assert audit.written == [] and tenant.photo(rob) is None and tenant.photo(twin) is None
    # Learned from the confirming lookup: later runs see both twins without confirming.
    again = run(settings)
    assert again["ambiguous"] == 1 and audit.written == []


def test_a_full_listing_catches_a_restore_within_full_refresh_hours(
    settings: Settings, emulator: GraphEmulator
) -> None:
    emulator.faults.hide_restores = True
    tenant = emulator.tenant
    tenant.add_user("Rob Twin", user_principal_name="rob.one@contoso.com")
    twin = tenant.add_user("Rob Twin", user_principal_name="rob.two@contoso.com")
    tenant.delete_user(twin)
    write_jpeg(settings.inbox_dir / "Unknown Person.jpg")  # waits: later runs need users
    run(settings)
    tenant.restore_user(twin)

    live_twin = f"SELECT COUNT(*) FROM users WHERE id = '{twin}' AND deleted_at IS NULL"
    run(settings)  # within the bound: one delta round, which does not show the restore
    assert ledger_rows(settings, live_twin) == [(0,)]
    run(settings, "--full-refresh-hours", "0")  # the bound has passed: a full listing

    assert ledger_rows(settings, live_twin) == [(1,)]
    status = CliRunner().invoke(main, ["status", "--json", *cli_args(settings)])
    age = json.loads(status.stdout)["full_listing_age_s"]
    assert age is not None and 0 <= age < 60


def test_a_new_hires_photo_lands_on_the_first_run_after_the_account_is_visible(
    settings: Settings, emulator: GraphEmulator, audit: WriteAudit
) -> None:
    emulator.faults.replication_lag_s = 600
    tenant = emulator.tenant
    zed_bytes = write_jpeg(settings.inbox_dir / "Zed Unknown.jpg", color=(20, 20, 220))
    first = run(settings)
    assert first["unmatched"] == 1
    zed = tenant.add_user("Zed Unknown")  # created, but not yet visible to readers

    waiting = run(settings)
    assert (waiting["unmatched"], waiting["graph_requests"]) == (1, 1)  # one delta round

    emulator.advance_clock(601)
    landed = run(settings)

    assert landed["uploaded"] == 1
    photo = tenant.photo(zed)
    assert photo is not None and photo.data == zed_bytes
    assert audit.written == [zed]
    assert not (settings.inbox_dir / "Zed Unknown.jpg").exists()


def test_external_members_are_ineligible_unless_the_setting_opts_in(
    settings: Settings, emulator: GraphEmulator
) -> None:
    tenant = emulator.tenant
    erna = tenant.add_user("Erna Extern", mail="erna@fabrikam.com", external=True)
    data = write_jpeg(settings.inbox_dir / "Erna Extern.jpg")

    refused = run(settings)
    assert (refused["ineligible"], refused["uploaded"]) == (1, 0)
    assert tenant.photo(erna) is None
    report = CliRunner().invoke(
        main, ["report", "unmatched", "--format", "json", *cli_args(settings)]
    )
    (row,) = json.loads(report.stdout)
    assert row["ineligible_because"] == "external (B2B) account"

    allowed = run(settings, "--include-external-members", "true")
    assert allowed["uploaded"] == 1
    photo = tenant.photo(erna)
    assert photo is not None and photo.data == data


def test_retry_failed_rechecks_eligibility_before_writing(
    settings: Settings, emulator: GraphEmulator, audit: WriteAudit
) -> None:
    tenant = emulator.tenant
    jane = tenant.add_user("Jane Doe")
    emulator.faults.fail_photo_users.add(jane)
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    failed = run(settings, "--retry-attempts", "1")
    assert failed["failed"] == 1
    emulator.faults.fail_photo_users.clear()
    tenant.update_user(jane, accountEnabled=False, userType="Guest")

    summary = run(settings, command="retry-failed")

    assert (summary["uploaded"], summary["ineligible"]) == (0, 1)
    assert audit.written == [] and tenant.photo(jane) is None


def test_every_awkward_behaviour_at_once(
    settings: Settings, emulator: GraphEmulator, audit: WriteAudit
) -> None:
    faults = emulator.faults
    tenant = emulator.tenant
    faults.latest_forgets_select = True
    jane_a = tenant.add_user("Jane Doe", user_principal_name="jane.a@contoso.com")
    jane_b = tenant.add_user("Jane Doe", user_principal_name="jane.b@contoso.com")
    leaver = tenant.add_user("Lee Leaver")
    rob = tenant.add_user("Rob Twin", user_principal_name="rob.one@contoso.com")
    twin = tenant.add_user("Rob Twin", user_principal_name="rob.two@contoso.com")
    tenant.delete_user(twin)
    tenant.add_user("Erna Extern", mail="erna@fabrikam.com", external=True)
    settle_a_first_run(settings)

    faults.delta_items = "sparse"
    faults.hide_restores = True
    emulator.advance_clock(3600)  # everyone so far is long replicated
    faults.replication_lag_s = 300
    for user_id in (jane_a, jane_b):
        tenant.update_user(user_id, mail=f"{user_id}@contoso.com")
    tenant.update_user(leaver, accountEnabled=False)
    tenant.restore_user(twin)
    zed = tenant.add_user("Zed Unknown")
    names = ("Jane Doe", "Lee Leaver", "Rob Twin", "Erna Extern", "Zed Unknown")
    for n, name in enumerate(names):
        write_jpeg(settings.inbox_dir / f"{name}.jpg", color=(n * 40, 100, 100))

    first = run(settings)
    assert first["uploaded"] == 0 and audit.written == []
    emulator.advance_clock(301)
    second = run(settings)

    assert audit.written == [zed]
    assert second["uploaded"] == 1
    outcomes = {name: outcome for name, (outcome, _) in verdicts(settings).items()}
    assert outcomes["Jane Doe.jpg"] == "ambiguous"
    assert outcomes["Lee Leaver.jpg"] == "ineligible"
    assert outcomes["Rob Twin.jpg"] == "ambiguous"
    assert outcomes["Erna Extern.jpg"] == "ineligible"
    assert tenant.photo(rob) is None and tenant.photo(leaver) is None
