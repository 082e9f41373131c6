"""User refresh through delta query, as a whole run sees it: the fewest Graph requests, and
every tenant change between runs picked up."""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from reconciler import app
from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.model import Outcome
from tests.helpers import cli_args, outcomes, write_jpeg


def graph_calls(emulator: GraphEmulator) -> list[str]:
    """Method and path of each Graph request since the last reset, with delta marked."""
    calls = []
    for request in emulator.requests():
        if request.token_request:
            continue
        token = "latest" if request.query.get("$deltatoken") == "latest" else ""
        calls.append(f"{request.method} {request.path} {token}".strip())
    return calls


def test_first_run_asks_for_latest_before_listing_then_later_runs_use_delta(
    settings: Settings, emulator: GraphEmulator
) -> None:
    ids = emulator.tenant.add_users(2500)
    first_user = emulator.tenant.user(ids[0])
    assert first_user is not None
    write_jpeg(settings.inbox_dir / f"{first_user['displayName']}.jpg")

    app.reconcile(settings)

    calls = graph_calls(emulator)
    assert calls[0] == "GET /v1.0/users/delta latest"
    assert calls[1:4] == ["GET /v1.0/users"] * 3  # 2,500 users at 999 a page
    # The lookup confirming the user just before the write, the archive's read of the photo
    # it replaces, the write, and the read of its ETag.
    assert calls[4:] == [
        "GET /v1.0/users",
        f"GET /v1.0/users/{ids[0]}/photo/$value",
        f"PUT /v1.0/users/{ids[0]}/photo/$value",
        f"GET /v1.0/users/{ids[0]}/photo",
    ]

    # Between runs: one user renamed, one disabled, one deleted.
    emulator.tenant.update_user(ids[1], displayName="Renamed Person")
    emulator.tenant.update_user(ids[2], accountEnabled=False)
    gone = emulator.tenant.user(ids[3])
    assert gone is not None
    emulator.tenant.delete_user(ids[3])
    disabled = emulator.tenant.user(ids[2])
    assert disabled is not None
    write_jpeg(settings.inbox_dir / "Renamed Person.jpg")
    write_jpeg(settings.inbox_dir / f"{disabled['displayName']}.jpg")
    write_jpeg(settings.inbox_dir / f"{gone['displayName']}.jpg")
    emulator.reset_log()

    summary, _ = app.reconcile(settings)

    assert graph_calls(emulator) == [
        "GET /v1.0/users/delta",
        "GET /v1.0/users",  # the lookup confirming the renamed person before writing
        f"GET /v1.0/users/{ids[1]}/photo/$value",  # the archive keeps what was there
        f"PUT /v1.0/users/{ids[1]}/photo/$value",
        f"GET /v1.0/users/{ids[1]}/photo",  # the ETag after the write
    ]
    assert outcomes(summary) == {
        "Renamed Person.jpg": Outcome.UPLOADED,
        f"{disabled['displayName']}.jpg": Outcome.INELIGIBLE,
        f"{gone['displayName']}.jpg": Outcome.UNMATCHED,
    }


@pytest.mark.parametrize("how", ["expired", "gone"])
def test_lost_delta_state_falls_back_to_a_full_listing(
    settings: Settings, emulator: GraphEmulator, how: str
) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    app.reconcile(settings)
    late = emulator.tenant.add_user("Late Joiner")
    if how == "expired":
        emulator.expire_delta_tokens()
    else:
        emulator.faults.delta_gone_once = True
    write_jpeg(settings.inbox_dir / "Late Joiner.jpg")
    emulator.reset_log()

    summary, _ = app.reconcile(settings)

    calls = graph_calls(emulator)
    assert calls[0] == "GET /v1.0/users/delta"  # refused: 400 syncStateNotFound or 410
    assert calls[1:3] == ["GET /v1.0/users/delta latest", "GET /v1.0/users"]
    assert outcomes(summary) == {"Late Joiner.jpg": Outcome.UPLOADED}
    assert emulator.tenant.photo(late) is not None


def test_full_refresh_flag_lists_everyone_and_forgets_deleted_users(
    settings: Settings, emulator: GraphEmulator
) -> None:
    keep = emulator.tenant.add_user("Keep Me")
    drop = emulator.tenant.add_user("Drop Me")
    write_jpeg(settings.inbox_dir / "Keep Me.jpg")
    app.reconcile(settings)
    emulator.tenant.delete_user(drop, permanent=True)
    emulator.reset_log()

    result = CliRunner().invoke(main, ["reconcile", "--full-refresh", *cli_args(settings)])

    assert result.exit_code == 0, result.output
    assert "GET /v1.0/users" in graph_calls(emulator)
    db = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as connection:
        rows = dict(connection.execute("SELECT id, deleted_at IS NOT NULL FROM users"))
    assert rows == {keep: 0, drop: 1}


def test_user_deleted_after_the_listing_is_a_permanent_failure_and_the_run_goes_on(
    settings: Settings, emulator: GraphEmulator
) -> None:
    doomed = emulator.tenant.add_user("Doomed User")
    fine = emulator.tenant.add_user("Fine User")
    emulator.faults.delete_user_on_photo_write.add(doomed)
    write_jpeg(settings.inbox_dir / "Doomed User.jpg")
    write_jpeg(settings.inbox_dir / "Fine User.jpg")

    summary, _ = app.reconcile(settings)

    assert outcomes(summary) == {
        "Doomed User.jpg": Outcome.FAILED,
        "Fine User.jpg": Outcome.UPLOADED,
    }
    assert emulator.tenant.photo(fine) is not None
    db = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as connection:
        row = connection.execute(
            "SELECT status, http_status, graph_error_code FROM uploads WHERE user_id = ?",
            (doomed,),
        ).fetchone()
    assert row == ("failed-permanent", 404, "Request_ResourceNotFound")
    assert (settings.inbox_dir / "Doomed User.jpg").exists()

    # The next run learns of the deletion through delta and reports the file unmatched.
    second, _ = app.reconcile(settings)
    assert outcomes(second) == {"Doomed User.jpg": Outcome.UNMATCHED}


def test_auth_failure_exits_3_naming_the_mode(
    settings: Settings, emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "wrong-secret")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")

    result = CliRunner().invoke(main, ["reconcile", *cli_args(settings)])

    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "managed-identity" in lines[0]
    assert "wrong-secret" not in result.output
    assert (settings.inbox_dir / "Jane Doe.jpg").exists()


def test_unreachable_graph_exits_3(settings: Settings, emulator: GraphEmulator) -> None:
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    args = cli_args(settings)
    args[args.index("--graph-url") + 1] = "http://127.0.0.1:9"  # discard port: nothing listens
    result = CliRunner().invoke(main, ["reconcile", *args])
    assert result.exit_code == 3
    assert "127.0.0.1:9" in result.output
