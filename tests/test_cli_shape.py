"""One CLI shape: --json wherever a command prints, a run shown the same way everywhere,
help that lists only the settings a command reads (with choices and defaults), the exit
codes in `photosync --help`, and CSV that Excel opens as written."""

from __future__ import annotations

import csv
import io
import json

import click
import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.cli.options import LEDGER_ONLY, LEDGER_REPORT, choices_of
from reconciler.config import SETTINGS, Settings
from reconciler.emulator import GraphEmulator
from tests.helpers import cli_args, write_jpeg


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            found += walk(sub, (*path, name))
    return found


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


COMMANDS = [p for p in walk(main) if p and not isinstance(command_at(p), click.Group)]
# The settings each of these commands reads; the rest of the commands read them all, or
# are not ours to narrow.
READS = {
    ("status",): LEDGER_REPORT,
    ("report", "unmatched"): LEDGER_REPORT,
    ("runs", "list"): LEDGER_ONLY,
    ("runs", "show"): LEDGER_ONLY,
    ("db", "upgrade"): LEDGER_ONLY,
    ("reconcile",): tuple(s.name for s in SETTINGS),
    ("retry-failed",): tuple(s.name for s in SETTINGS),
}
# Commands whose output is not a record to parse: a walkthrough (demo), a server's own
# settings while it runs (emulator), the next steps after setting up (init).
NO_JSON = {("demo",), ("emulator",), ("init",)}


def help_of(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(main, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_bare_photosync_prints_help_with_the_exit_codes_and_exits_0() -> None:
    result = CliRunner().invoke(main, [])

    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ")
    assert "Exit codes:" in result.stdout
    for code in ("0", "1", "2", "3"):
        assert f"\n    {code}  " in result.stdout, code
    assert result.stdout == CliRunner().invoke(main, ["--help"]).stdout


def option_blocks(text: str) -> dict[str, str]:
    """Each option's first flag -> its whole entry in the help, wrapped lines joined."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].split("/")[0]
            blocks[current] = line.strip()
        elif current is not None and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


def reads_settings(path: tuple[str, ...]) -> bool:
    return any(p.name == "log_level" for p in command_at(path).params)


@pytest.mark.parametrize("path", [p for p in COMMANDS if reads_settings(p)], ids=" ".join)
def test_help_lists_the_settings_a_command_reads_with_choices_and_defaults(
    path: tuple[str, ...],
) -> None:
    blocks = option_blocks(help_of(path))
    listed = [s for s in SETTINGS if not s.env_only and s.flag in blocks]
    if path in READS:
        assert {s.name for s in listed} == set(READS[path]) - {
            s.name for s in SETTINGS if s.env_only
        }
    for spec in listed:
        entry = blocks[spec.flag]
        assert f"[env {spec.env_var}; default: " in entry, entry
        assert " VALUE " not in entry
        choices = choices_of(spec)
        if choices and spec.name != "move_completed":
            assert entry.startswith(f"{spec.flag} [{'|'.join(choices)}]"), entry


def test_a_setting_a_command_does_not_read_is_still_accepted(
    settings: Settings, emulator: GraphEmulator
) -> None:
    # One wrapper script may pass the same flags to every command.
    CliRunner().invoke(main, ["db", "upgrade", *cli_args(settings)])
    assert "--inbox-dir" not in help_of(("status",))

    result = CliRunner().invoke(main, ["status", *cli_args(settings)])

    assert result.exit_code == 0, result.output


def test_help_shows_auth_choices_and_the_ledger_default() -> None:
    text = help_of(("reconcile",))
    assert "--auth [managed-identity|client-secret|certificate|azure-cli|default]" in text
    assert "default: managed-identity]" in text
    assert f"default: {Settings().database_url}]" in text
    assert "--log-level [debug|info|warning|error]" in help_of(("status",))


@pytest.mark.parametrize("path", [p for p in COMMANDS if p not in NO_JSON], ids=" ".join)
def test_every_command_that_prints_takes_json(path: tuple[str, ...]) -> None:
    assert "--json" in help_of(path)


def test_a_run_is_the_same_object_in_reconcile_status_and_runs(
    settings: Settings, emulator: GraphEmulator
) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    write_jpeg(settings.inbox_dir / "Nobody Known.jpg", color=(1, 2, 3))
    runner = CliRunner()
    printed = json.loads(runner.invoke(main, ["reconcile", "--json", *cli_args(settings)]).stdout)

    status = json.loads(runner.invoke(main, ["status", "--json", *cli_args(settings)]).stdout)
    listed = json.loads(runner.invoke(main, ["runs", "list", "--json", *cli_args(settings)]).stdout)
    shown = json.loads(
        runner.invoke(
            main, ["runs", "show", str(printed["run_id"]), "--json", *cli_args(settings)]
        ).stdout
    )

    [in_status] = status["runs"]
    [in_list] = listed
    for view in (in_status, in_list, shown):
        # Every key reconcile printed, with the same value; the ledger's duration is whole
        # seconds from the recorded start and end, the process's is its own clock.
        assert {k: view[k] for k in printed if k != "duration_s"} == {
            k: v for k, v in printed.items() if k != "duration_s"
        }
        assert view["duration_s"] >= 0
        assert (view["command"], view["exit_code"], view["error"]) == ("reconcile", 0, None)
        assert "counts" not in view  # one shape: the counts are flat, as reconcile prints them
    assert printed["uploaded"] == 1 and printed["unmatched"] == 1


def test_runs_list_text_and_limit(settings: Settings, emulator: GraphEmulator) -> None:
    runner = CliRunner()
    for _ in range(3):
        assert runner.invoke(main, ["reconcile", *cli_args(settings)]).exit_code == 0

    result = runner.invoke(main, ["runs", "list", "--limit", "2", *cli_args(settings)])

    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()] == [
        ["#3", "reconcile"],
        ["#2", "reconcile"],
    ]


def test_report_json_is_format_json(settings: Settings, emulator: GraphEmulator) -> None:
    write_jpeg(settings.inbox_dir / "José Núñez.jpg")
    runner = CliRunner()
    runner.invoke(main, ["reconcile", *cli_args(settings)])

    as_json = runner.invoke(main, ["report", "unmatched", "--json", *cli_args(settings)])
    as_format = runner.invoke(
        main, ["report", "unmatched", "--format", "json", *cli_args(settings)]
    )

    assert as_json.exit_code == 0, as_json.output
    assert as_json.stdout == as_format.stdout
    assert [row["file"] for row in json.loads(as_json.stdout)] == ["José Núñez.jpg"]


def test_csv_opens_in_excel_and_ends_with_one_newline(
    settings: Settings, emulator: GraphEmulator
) -> None:
    write_jpeg(settings.inbox_dir / "José Núñez.jpg")
    runner = CliRunner()
    runner.invoke(main, ["reconcile", *cli_args(settings)])
    written = settings.inbox_dir.parent / "unmatched.csv"

    plain = runner.invoke(main, ["report", "unmatched", "--format", "csv", *cli_args(settings)])
    excel = runner.invoke(main, ["report", "unmatched", "--excel", *cli_args(settings)])
    to_file = runner.invoke(
        main,
        ["report", "unmatched", "--format", "csv", "--output", str(written), *cli_args(settings)],
    )

    assert plain.exit_code == excel.exit_code == to_file.exit_code == 0
    assert plain.stdout_bytes.endswith(b"\n") and not plain.stdout_bytes.endswith(b"\n\n")
    assert not plain.stdout_bytes.startswith(b"\xef\xbb\xbf")  # a pipe gets plain UTF-8
    # Excel takes a file as UTF-8 only when it starts with the byte order mark.
    for data in (excel.stdout_bytes, written.read_bytes()):
        assert data.startswith(b"\xef\xbb\xbffile,reason,")
        assert data == b"\xef\xbb\xbf" + plain.stdout_bytes
        [row] = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        assert row["file"] == "José Núñez.jpg"


def test_table_and_json_on_stdout_end_with_one_newline(
    settings: Settings, emulator: GraphEmulator
) -> None:
    write_jpeg(settings.inbox_dir / "Nobody Known.jpg")
    runner = CliRunner()
    runner.invoke(main, ["reconcile", *cli_args(settings)])
    for fmt in ("table", "json", "html"):
        result = runner.invoke(main, ["report", "unmatched", "--format", fmt, *cli_args(settings)])
        assert result.exit_code == 0, result.output
        assert result.stdout.endswith("\n") and not result.stdout.endswith("\n\n"), fmt


def test_a_verify_run_is_shown_as_verify_printed_it(
    settings: Settings, emulator: GraphEmulator
) -> None:
    emulator.tenant.add_user("Jane Doe")
    write_jpeg(settings.inbox_dir / "Jane Doe.jpg")
    runner = CliRunner()
    assert runner.invoke(main, ["reconcile", *cli_args(settings)]).exit_code == 0
    verified = runner.invoke(main, ["verify", "--json", *cli_args(settings)])
    assert verified.exit_code == 0, verified.output
    printed = json.loads(verified.stdout)

    shown = json.loads(
        runner.invoke(
            main, ["runs", "show", str(printed["run_id"]), "--json", *cli_args(settings)]
        ).stdout
    )

    assert "drifted" in printed  # a per-user run prints those counts even when 0
    assert {k: shown[k] for k in printed if k != "duration_s"} == {
        k: v for k, v in printed.items() if k != "duration_s"
    }
    assert shown["command"] == "verify"
