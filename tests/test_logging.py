"""--log-level / --log-format / --log-file on a real reconcile: structured JSON lines, and
never a token or the managed identity's secret header anywhere a run writes."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from tests.helpers import cli_args, ledger_rows, write_jpeg


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI reconfigures the 'reconciler' logger; later tests expect it as it was."""
    logger = logging.getLogger("reconciler")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_json_log_lines_carry_the_run_and_never_a_secret(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    emulator.tenant.add_user("Jane Doe", user_principal_name="jane@contoso.com")
    bob = emulator.tenant.add_user("Bob Bell", user_principal_name="bob@contoso.com")
    emulator.faults.fail_photo_users.add(bob)
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    write_jpeg(settings.inbox_dir / "Bob Bell.jpg")
    log_file = tmp_path / "logs" / "photosync.jsonl"

    result = CliRunner().invoke(
        main,
        [
            "reconcile",
            "--json",
            "--retry-attempts",
            "1",
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "--log-file",
            str(log_file),
            *cli_args(settings),
        ],
    )

    assert result.exit_code == 1, result.output
    run_id = json.loads(result.stdout)["run_id"]
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert entries and all(e["run_id"] == run_id for e in entries)
    [uploaded] = [e for e in entries if e["message"].startswith("uploaded Jane Doe.jpg")]
    [(user_id, request_id)] = ledger_rows(
        settings, "SELECT user_id, client_request_id FROM uploads WHERE status = 'succeeded'"
    )
    assert uploaded["level"] == "info"
    assert (uploaded["file"], uploaded["action"], uploaded["http_status"]) == (
        "Jane Doe.jpg",
        "upload",
        200,
    )
    assert (uploaded["user_id"], uploaded["client_request_id"]) == (user_id, request_id)
    [failed] = [e for e in entries if e.get("file") == "Bob Bell.jpg"]
    assert (failed["level"], failed["user_id"], failed["http_status"]) == ("warning", bob, 500)

    secrets = [*emulator.issued_tokens, emulator.managed_identity_env()["IDENTITY_HEADER"]]
    assert emulator.issued_tokens  # the run did authenticate
    database = Path(settings.database_url.removeprefix("sqlite:///"))
    written = [log_file.read_bytes(), result.stdout.encode(), result.stderr.encode()]
    written += [p.read_bytes() for p in database.parent.iterdir() if p.is_file()]
    for secret in secrets:
        assert all(secret.encode() not in data for data in written)


def test_text_log_level_filters_and_goes_to_the_file(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path
) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    write_jpeg(settings.inbox_dir / "Ann Other.jpg", color=(1, 2, 3))
    info_log, warning_log = tmp_path / "info.log", tmp_path / "warning.log"

    result = CliRunner().invoke(
        main, ["reconcile", "--log-level", "info", "--log-file", str(info_log), *cli_args(settings)]
    )
    assert result.exit_code == 0, result.output
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg", color=(9, 9, 9))
    result = CliRunner().invoke(
        main, ["reconcile", "--log-file", str(warning_log), *cli_args(settings)]
    )

    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # logs went to the file, not the terminal
    assert " INFO reconciler.executor: uploaded Jane Doe.jpg to " in info_log.read_text()
    assert warning_log.read_text() == ""  # the default level, warning, hides the upload line


def test_info_logs_the_start_with_settings_but_no_secret_each_upload_and_the_summary(
    settings: Settings, emulator: GraphEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    monkeypatch.setenv("PHOTOSYNC_CLIENT_SECRET", "never-in-a-log-0xC0FFEE")
    log_file = tmp_path / "info.log"

    result = CliRunner().invoke(
        main,
        [
            "reconcile",
            "--json",
            "--log-level",
            "info",
            "--log-file",
            str(log_file),
            *cli_args(settings),
        ],
    )

    assert result.exit_code == 0, result.output
    run_id = json.loads(result.stdout)["run_id"]
    text = log_file.read_text()
    lines = text.splitlines()
    [start] = [line for line in lines if f"run {run_id} started: reconcile with " in line]
    assert f"inbox_dir={settings.inbox_dir}" in start and "log_level=info" in start
    assert f"graph_url={settings.graph_url}" in start
    assert any("uploaded Jane Doe.jpg to " in line for line in lines)
    [end] = [line for line in lines if f"run {run_id} finished: " in line]
    assert "exit 0; uploaded 1;" in end
    assert lines.index(start) < lines.index(end)
    assert "never-in-a-log-0xC0FFEE" not in text and "client_secret" not in text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_fatal_error_reaches_the_log_file_in_its_format(tmp_path: Path, fmt: str) -> None:
    corrupt = tmp_path / "photosync.db"
    corrupt.write_text("not a ledger")
    log_file = tmp_path / "photosync.log"

    result = CliRunner().invoke(
        main,
        [
            "status",
            "--database-url",
            f"sqlite:///{corrupt}",
            "--log-file",
            str(log_file),
            "--log-format",
            fmt,
        ],
    )

    assert result.exit_code == 2
    [said] = result.stderr.splitlines()
    [logged] = log_file.read_text().splitlines()
    message = said.removeprefix("photosync: error: ")
    assert "is not a readable photosync ledger" in message
    if fmt == "json":
        entry = json.loads(logged)
        assert (entry["level"], entry["message"]) == ("error", message)
    else:
        assert logged.endswith(f" ERROR reconciler: {message}")
