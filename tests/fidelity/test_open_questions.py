"""Questions Graph's documentation leaves open, each answered by the emulator's default and
each settled for a real tenant by an admin in two runs.

How to settle one against a test tenant: set the PHOTOSYNC_FIDELITY_* variables (README,
"Checking the emulator against your tenant"), PHOTOSYNC_FIDELITY_STATE_DIR to an empty folder
and PHOTOSYNC_FIDELITY_QUESTION_USER to the object id of a test user nobody else touches.
Run the one test (`pytest tests/fidelity -k <name>`): the first run saves a deltaLink and
skips, telling you what to change in the Entra admin portal. Change it, wait a few minutes for
replication, run the test again. A pass means the emulator's default is right for your
tenant; a failure names the emulator switch that reproduces what your tenant did, so the
end-to-end tests can be run with it.
"""

from __future__ import annotations

import pytest

from reconciler.emulator import Tenant
from tests.fidelity.helpers import Target

SELECT = "id,displayName,userPrincipalName,accountEnabled,jobTitle"


def _latest_link(target: Target) -> str:
    response = target.get("users/delta", params={"$select": SELECT, "$deltatoken": "latest"})
    assert response.status_code == 200, response.text
    return str(response.json()["@odata.deltaLink"])


def _item_for(target: Target, link: str, user: str) -> dict[str, object] | None:
    items, _ = target.delta_round(link)
    mine = [i for i in items if i["id"] == user]
    return mine[-1] if mine else None


def test_a_latest_delta_link_keeps_its_select(target: Target) -> None:
    """Does a deltaLink from `$deltatoken=latest` keep tracking the `$select` it was asked
    with? Between the two runs: disable (or enable) the question user's sign-in
    (accountEnabled) in the portal, changing nothing else. If the second run fails, the link
    forgot $select: run photosync's tests with `faults.latest_forgets_select = True`."""
    user = target.question_user
    assert user is not None

    def toggle(tenant: Tenant) -> None:
        tenant.update_user(user, accountEnabled=False)

    link = target.two_steps(
        "latest-keeps-select",
        lambda: _latest_link(target),
        toggle,
        "toggle 'Account enabled' of the question user in the portal",
    )
    item = _item_for(target, link, user)
    assert item is not None, (
        "the accountEnabled change did not surface: the link tracks default properties only "
        "(latest_forgets_select), or the change had not replicated yet (run both steps again)"
    )
    assert "accountEnabled" in item


def test_an_updated_users_delta_item_carries_its_unchanged_selected_properties(
    target: Target,
) -> None:
    """Without `Prefer: return=minimal`, does a changed user's item carry every selected
    property, or only what changed? Between the two runs: change only the question user's
    job title in the portal. If the second run fails, items carry only what changed: run
    photosync's tests with `faults.delta_items = "changed"` (or "sparse")."""
    user = target.question_user
    assert user is not None

    def retitle(tenant: Tenant) -> None:
        tenant.update_user(user, jobTitle="Fidelity check")

    link = target.two_steps(
        "items-carry-selected",
        lambda: _latest_link(target),
        retitle,
        "change only the job title of the question user in the portal",
    )
    item = _item_for(target, link, user)
    if item is None:
        pytest.fail("the job title change has not surfaced yet: run both steps again later")
    assert "jobTitle" in item
    assert "userPrincipalName" in item, f"only the changed properties came: {sorted(item)}"


def test_a_restored_user_shows_in_a_delta_round_with_select(target: Target) -> None:
    """Does restoring a deleted user from deleted items surface in a delta round that uses
    `$select` (docs issue #5821 says it may not)? Before the first run: delete the question
    user (it goes to Deleted users). Between the two runs: restore it from Deleted users. If
    the second run fails, restores are invisible to delta: run photosync's tests with
    `faults.hide_restores = True`."""
    user = target.question_user
    assert user is not None
    target.on_emulator(lambda tenant: tenant.delete_user(user))

    def restore(tenant: Tenant) -> None:
        tenant.restore_user(user)

    link = target.two_steps(
        "restore-surfaces",
        lambda: _latest_link(target),
        restore,
        "restore the question user from 'Deleted users' in the portal",
    )
    item = _item_for(target, link, user)
    assert item is not None, (
        "the restore did not surface (hide_restores), or it had not replicated yet (run both "
        "steps again)"
    )
    assert "@removed" not in item
