"""`photosync status` and `photosync runs show`, read from a ledger a real reconcile wrote."""

from __future__ import annotations

import json
import sqlite3

from click.testing import CliRunner

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.ledger.db import Ledger
from reconciler.ledger.revision import HEAD_REVISION
from tests.helpers import cli_args, every_reason


def invoke(settings: Settings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [*args, *cli_args(settings)])
    return result.exit_code, result.output


def test_status_json_shows_runs_waiting_failures_token_age_and_ledger(
    settings: Settings, emulator: GraphEmulator
) -> None:
    scenario = every_reason(settings, emulator)
    path = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:  # the delta link was saved two hours ago
        db.execute(
            "UPDATE sync_state SET updated_at = datetime('now', '-2 hours') "
            "WHERE key = 'users.delta_link'"
        )

    code, output = invoke(settings, "status", "--json")

    assert code == 0, output
    assert emulator.requests() == []
    info = json.loads(output)
    assert info["ledger"] == settings.database_url
    ledger = Ledger(settings.database_url)
    assert info["schema_revision"] == HEAD_REVISION is not None
    ledger.dispose()
    assert 7190 <= info["delta_token_age_s"] <= 7260
    [run] = info["runs"]
    assert run["run_id"] == scenario.run_id
    assert run["exit_code"] == 1 and run["duration_s"] >= 0
    # delta "latest", one users page, the confirming lookup, a PUT and its retry, and
    # the archive's read of the photo the PUT would replace (archive = true)
    assert run["graph_requests"] == 6
    # The same flat counts `reconcile --json` printed for that run.
    assert run["unmatched"] == 2 and run["failed"] == 1 and run["dry_run"] is False
    assert info["waiting"] == {"unmatched": 2, "ambiguous": 1, "ineligible": 2, "failed": 1}
    assert info["failures"] == {"failed": 1, "invalid": 1}
    reasons = {(f["outcome"], f["reason"]): f["files"] for f in info["failure_reasons"]}
    assert reasons[("failed", "generalException (HTTP 500)")] == 1
    invalid = next(reason for outcome, reason in reasons if outcome == "invalid")
    assert invalid.startswith("not a photo file type")


def test_status_text_is_readable(settings: Settings, emulator: GraphEmulator) -> None:
    scenario = every_reason(settings, emulator)

    code, output = invoke(settings, "status")

    assert code == 0, output
    lines = output.splitlines()
    head = HEAD_REVISION
    assert lines[0] == f"ledger: {settings.database_url} (schema {head})"
    assert "delta token age: 0.0 h" in lines[1]
    assert "files in the inbox: ambiguous 1, failed 1, ineligible 2, unmatched 2" in lines
    assert any(line.split()[:3] == ["failed", "1", "generalException"] for line in lines)
    assert any(line.strip().startswith(f"#{scenario.run_id} reconcile ") for line in lines)


def test_runs_show_lists_what_one_run_did_file_by_file(
    settings: Settings, emulator: GraphEmulator
) -> None:
    scenario = every_reason(settings, emulator)

    code, output = invoke(settings, "runs", "show", str(scenario.run_id), "--json")

    assert code == 0, output
    details = json.loads(output)
    assert details["run_id"] == scenario.run_id and details["command"] == "reconcile"
    files = {f["file"]: f for f in details["files"]}
    assert {name: f["outcome"] for name, f in files.items()} == {
        "Ann <Admin> & Co.jpg": "unmatched",
        "Dana Disabled.jpg": "ineligible",
        "Gus Guest.jpg": "ineligible",
        "Jane Doe.jpg": "failed",
        "Jon Smith.jpg": "unmatched",
        "Lee Gu.jpg": "ambiguous",
        "notes.txt": "invalid",
    }
    jane = files["Jane Doe.jpg"]
    assert (jane["user_id"], jane["user"]) == (scenario.jane, "jane@contoso.com")
    assert (jane["http_status"], jane["attempts"]) == (500, 2)
    assert jane["client_request_id"]
    assert files["notes.txt"]["destination"].startswith(str(settings.failed_dir))

    code, text = invoke(settings, "runs", "show", str(scenario.run_id))
    assert code == 0
    assert any(
        line.startswith("failed") and "Jane Doe.jpg" in line and "HTTP 500, 2 attempt(s)" in line
        for line in text.splitlines()
    )


def test_runs_show_unknown_run_is_a_one_line_usage_error(
    settings: Settings, emulator: GraphEmulator
) -> None:
    every_reason(settings, emulator)
    code, output = invoke(settings, "runs", "show", "999")
    assert code == 2
    assert output.splitlines() == [
        "photosync: error: no run 999 in the ledger; `photosync runs list` lists the last runs"
    ]
