"""Graph errors explained by Graph's code, not only the status.

The advice table is a pure function and is tested directly; then each case runs end to end: a
real `photosync reconcile --json` (click's runner on the real CLI) against the emulator, which
answers the photo write with the status and code a tenant would, and the ledger, the report
and `runs show` are read back as a user would read them.
"""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.errors import GraphOperation, PermanentGraphError, graph_advice
from reconciler.graph.auth import TokenProvider, build_credential, token_scope
from reconciler.graph.client import GraphClient
from tests.helpers import cli_args, jpeg_bytes, ledger_rows, write_jpeg

WRITE, READ, USERS = GraphOperation.PHOTO_WRITE, GraphOperation.PHOTO_READ, GraphOperation.USER_READ

# -- the advice table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "operation", "needle"),
    [
        (403, "Authorization_RequestDenied", WRITE, "lacks the ProfilePhoto.ReadWrite.All"),
        (403, "ErrorAccessDenied", WRITE, "lacks the ProfilePhoto.ReadWrite.All"),
        (403, "accessDenied", READ, "lacks the ProfilePhoto.ReadWrite.All"),
        (403, "Authorization_RequestDenied", USERS, "lacks the User.Read.All"),
        (403, "Forbidden", USERS, "lacks the User.Read.All"),
        (403, "Forbidden", WRITE, "GET /admin/people/photoUpdateSettings"),
        (403, None, WRITE, "photo updates from the cloud are disabled"),
        (404, "MailboxNotHostedInExchangeOnline", WRITE, "not hosted in Exchange Online"),
        (400, "MailboxNotHostedInExchangeOnline", READ, "not hosted in Exchange Online"),
        (404, "ErrorItemNotFound", WRITE, "no mailbox item to hold this user's photo"),
        (404, "ImageNotFound", WRITE, "holds no photo record for this user"),
        (404, "ImageNotFound", READ, "has no photo"),
        (404, "Request_ResourceNotFound", USERS, "may have been deleted"),
    ],
)
def test_advice_follows_the_code_and_the_operation(
    status: int, code: str | None, operation: GraphOperation, needle: str
) -> None:
    advice = graph_advice(status, code, operation)
    assert advice is not None and needle in advice


def test_a_write_404_is_explained_by_whether_the_user_is_still_there() -> None:
    gone = graph_advice(404, "Request_ResourceNotFound", WRITE, user_exists=False)
    there = graph_advice(404, "Request_ResourceNotFound", WRITE, user_exists=True)
    assert gone is not None and "no longer exists in the tenant" in gone
    assert there is not None
    assert "Graph has no photo store for this user (Request_ResourceNotFound)" in there
    # A deleted user explains any 404 code; an existing one leaves the code's own sentence.
    no_mailbox = graph_advice(404, "ErrorItemNotFound", WRITE, user_exists=False)
    assert no_mailbox == gone
    assert graph_advice(404, "ErrorItemNotFound", WRITE, user_exists=True) == graph_advice(
        404, "ErrorItemNotFound", WRITE
    )


def test_a_permission_403_on_a_write_is_not_taken_for_the_tenant_policy() -> None:
    role = graph_advice(403, "ErrorAccessDenied", WRITE)
    policy = graph_advice(403, "Forbidden", WRITE)
    assert role is not None and policy is not None
    assert "photoUpdateSettings" not in role and "ProfilePhoto.ReadWrite.All" in role
    assert "photoUpdateSettings" in policy


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_statuses_get_no_advice(status: int) -> None:
    assert graph_advice(status, "TooManyRequests", WRITE) is None


def test_the_advice_keeps_status_code_ids_and_attempts() -> None:
    error = PermanentGraphError(
        "Access is denied.",
        status=403,
        code="ErrorAccessDenied",
        request_id="r-1",
        client_request_id="c-1",
        attempts=2,
        advice="grant it",
    )
    again = error.advised("another sentence")
    assert isinstance(again, PermanentGraphError)
    assert (again.status, again.code, again.request_id, again.client_request_id) == (
        403,
        "ErrorAccessDenied",
        "r-1",
        "c-1",
    )
    assert again.attempts == 2 and again.graph_message == "Access is denied. — another sentence"
    assert "grant it" not in str(again)


# -- the client asks once whether a user answered 404 for still exists --------------------


def make_client(emulator: GraphEmulator) -> GraphClient:
    tokens = TokenProvider(
        lambda: build_credential("managed-identity", graph_url=emulator.url),
        mode="managed-identity",
        scope=token_scope(emulator.url),
    )
    return GraphClient(emulator.url, tokens, backoff_base_s=0.01, backoff_cap_s=0.05)


def test_a_write_404_for_a_deleted_user_says_so_after_one_lookup(emulator: GraphEmulator) -> None:
    (uid,) = emulator.tenant.add_users(1)
    emulator.faults.delete_user_on_photo_write = {uid}
    with make_client(emulator) as graph, pytest.raises(PermanentGraphError) as caught:
        graph.upload_photo(uid, jpeg_bytes(), "image/jpeg")
    error = caught.value
    assert (error.status, error.code) == (404, "Request_ResourceNotFound")
    assert error.advice is not None and "no longer exists in the tenant" in error.advice
    sent = [(r.method, r.path, r.query.get("$select")) for r in emulator.requests()]
    sent = [s for s in sent if s[1].startswith("/v1.0/")]
    assert sent == [
        ("PUT", f"/v1.0/users/{uid}/photo/$value", None),
        ("GET", f"/v1.0/users/{uid}", "id"),
    ]


def test_a_write_404_for_a_user_still_there_means_no_photo_store(
    emulator: GraphEmulator,
) -> None:
    (uid,) = emulator.tenant.add_users(1)
    emulator.faults.photo_errors[uid] = (404, "ResourceNotFound")
    with make_client(emulator) as graph, pytest.raises(PermanentGraphError) as caught:
        graph.upload_photo(uid, jpeg_bytes(), "image/jpeg")
    error = caught.value
    assert isinstance(error, PermanentGraphError)
    assert error.advice is not None
    assert "Graph has no photo store for this user (ResourceNotFound)" in error.advice
    assert emulator.tenant.photo(uid) is None
    lookups = [r for r in emulator.requests() if r.path == f"/v1.0/users/{uid}"]
    assert len(lookups) == 1  # one per failed write, never more


# -- end to end: a real reconcile run, then what the ledger, report and runs show say ---


CASES = [
    pytest.param(403, "Forbidden", "GET /admin/people/photoUpdateSettings", id="tenant-policy"),
    pytest.param(
        403, "ErrorAccessDenied", "lacks the ProfilePhoto.ReadWrite.All", id="missing-role"
    ),
    pytest.param(
        404, "MailboxNotHostedInExchangeOnline", "not hosted in Exchange Online", id="no-mailbox"
    ),
    pytest.param(404, "ErrorItemNotFound", "no mailbox item", id="no-store-item"),
]


@pytest.mark.parametrize(("status", "code", "advice"), CASES)
def test_reconcile_reports_the_code_and_what_to_do(
    settings: Settings, emulator: GraphEmulator, status: int, code: str, advice: str
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    john = emulator.tenant.add_user("John Roe")
    emulator.faults.photo_errors[jane] = (status, code)
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    john_bytes = write_jpeg(settings.inbox_dir / "John Roe.jpg", color=(0, 0, 200))
    runner = CliRunner()

    run = runner.invoke(main, ["reconcile", "--json", *cli_args(settings)])

    assert run.exit_code == 1, run.output
    summary = json.loads(run.stdout)
    assert (summary["uploaded"], summary["failed"]) == (1, 1)
    assert emulator.tenant.photo(jane) is None
    johns = emulator.tenant.photo(john)
    assert johns is not None and johns.data == john_bytes
    assert (settings.inbox_dir / "Jane Doe.jpg").exists()
    assert not (settings.completed_dir / "Jane Doe.jpg").exists()
    [(http_status, ledger_code, message)] = ledger_rows(
        settings,
        "SELECT u.http_status, u.graph_error_code, u.graph_error_message FROM uploads u "
        "JOIN inbox_files f ON f.id = u.file_id WHERE f.name = 'Jane Doe.jpg'",
    )
    assert (http_status, ledger_code) == (status, code) and advice in str(message)

    report = runner.invoke(main, ["report", "unmatched", "--format", "json", *cli_args(settings)])
    assert report.exit_code == 0, report.output
    [row] = [r for r in json.loads(report.stdout) if r["file"] == "Jane Doe.jpg"]
    assert row["reason"] == "failed" and row["graph_error_code"] == code
    assert advice in row["graph_error_message"]
    table = runner.invoke(main, ["report", "unmatched", *cli_args(settings)])
    assert re.search(rf"Jane Doe\.jpg\s+failed\s+.*{code}: .*{re.escape(advice)}", table.stdout)

    shown = runner.invoke(main, ["runs", "show", str(summary["run_id"]), *cli_args(settings)])
    assert shown.exit_code == 0, shown.output
    [line] = [x for x in shown.stdout.splitlines() if "Jane Doe.jpg" in x]
    assert f"HTTP {status} {code}" in line and advice in line
    assert "grant the app User.Read.All and" not in line  # the old catch-all hint is gone
