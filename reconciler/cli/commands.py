"""The commands of `photosync`: each parses its flags, calls one app or queries function and
renders what came back. Heavy modules (the ledger, Graph, Pillow) are imported inside the
command that needs them, so `--version` and `--help` import none of them."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from reconciler.report import ReportRow

from reconciler import __version__, logs
from reconciler.cli.exits import EXIT_CODES_HELP, EXIT_USAGE, OneLineErrors, fail, fatal, guarded
from reconciler.cli.options import (
    GROUP_CONFIG,
    LEDGER_ONLY,
    LEDGER_REPORT,
    chosen_config,
    json_option,
    settings_options,
    settings_options_using,
)
from reconciler.cli.progress import on_terminal, progress_hooks
from reconciler.cli.render import (
    finish,
    render_dry_run,
    render_results,
    render_run_details,
    render_status,
    run_line,
)
from reconciler.config import SETTINGS, Settings
from reconciler.model import Outcome
from reconciler.names import one_line


@click.group(
    cls=OneLineErrors,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, prog_name="photosync")
@click.option(
    "--config",
    "group_config_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML settings file for the command that follows (also accepted after it).",
)
@click.pass_context
def main(ctx: click.Context, group_config_file: Path | None) -> None:
    """Keep Microsoft Entra ID profile photos in sync with a folder of image files.

    \b
    Example:
      photosync reconcile --config /etc/photosync.toml
    """
    ctx.meta[GROUP_CONFIG] = group_config_file  # read by chosen_config()
    if ctx.invoked_subcommand is None:  # a bare `photosync` is a request for help
        click.echo(ctx.get_help())
        ctx.exit(0)


@main.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Say what a real run would do, each image checked; upload, move and record nothing.",
)
@click.option("--full-refresh", is_flag=True, help="List every user instead of using delta.")
@json_option
@settings_options
@guarded
def reconcile(settings: Settings, dry_run: bool, full_refresh: bool, as_json: bool) -> None:
    """Upload new and changed photos from the inbox, then file them away.

    \b
    Example:
      photosync reconcile --inbox-dir /Photos/InProgress --dry-run
    """
    from reconciler import idle

    # Most scheduled runs: an empty inbox and nothing left over, recorded in milliseconds.
    quiet = None if dry_run or full_refresh else idle.run_if_idle(settings)
    if quiet is not None:
        finish(quiet, as_json, lambda: None)
    from reconciler import app

    with progress_hooks() as progress:
        summary, plan = app.reconcile(
            settings, dry_run=dry_run, full_refresh=full_refresh, progress=progress
        )
    everything = on_terminal()
    finish(
        summary,
        as_json,
        lambda: (
            render_dry_run(plan, summary)
            if dry_run
            else render_results(summary.results, everything=everything)
        ),
    )


@main.command()
@click.argument("run_id", type=int)
@click.option("--user", "upn", default=None, metavar="UPN", help="Only this user's photo.")
@click.option("--dry-run", is_flag=True, help="Say what would be put back; change nothing.")
@json_option
@settings_options
@guarded
def rollback(
    settings: Settings, run_id: int, upn: str | None, dry_run: bool, as_json: bool
) -> None:
    """Put back the photos run RUN_ID replaced (or remove the ones it added).

    A user whose photo was changed since by someone else is skipped.

    \b
    Example:
      photosync rollback 42 --dry-run
    """
    from reconciler import app
    from reconciler.undo import UsageError

    try:
        summary = app.rollback(settings, run_id, upn=upn, dry_run=dry_run)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    if not summary.results and not as_json:
        click.echo(f"run {run_id} changed no photo: nothing to roll back")
    finish(summary, as_json, lambda: render_results(summary.results, everything=True))


@main.command()
@click.option("--fix", is_flag=True, help="Put photosync's photo back for each user who drifted.")
@json_option
@settings_options
@guarded
def verify(settings: Settings, fix: bool, as_json: bool) -> None:
    """Check that the photos photosync set are still the ones Graph shows.

    \b
    Example:
      photosync verify --fix
    """
    from reconciler import app

    # The run object, like every command; who drifted and since when is in the lines
    # printed without --json and in `report unmatched` (reason "drifted").
    summary, _drifts = app.verify(settings, fix=fix)
    shown_outcomes = (Outcome.DRIFTED, Outcome.FAILED, Outcome.UPLOADED, Outcome.SKIPPED)
    finish(
        summary,
        as_json,
        lambda: render_results(
            [r for r in summary.results if r.outcome in shown_outcomes], everything=True
        ),
    )


@main.command("retry-failed")
@click.option(
    "--include-permanent",
    is_flag=True,
    help="Also retry uploads Graph refused (400/403/404), e.g. after fixing a permission.",
)
@json_option
@settings_options
@guarded
def retry_failed(settings: Settings, include_permanent: bool, as_json: bool) -> None:
    """Retry the uploads whose last outcome was a retryable failure, without listing users.

    \b
    Example:
      photosync retry-failed --json
    """
    from reconciler import app

    with progress_hooks() as progress:
        summary, _plan = app.retry_failed(
            settings, include_permanent=include_permanent, progress=progress
        )
    everything = on_terminal()
    finish(summary, as_json, lambda: render_results(summary.results, everything=everything))


@main.command()
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("preview.html"),
    show_default=True,
    help="Where to write the contact sheet: one self-contained HTML file.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Also print one JSON object: the sheet's path and each file's outcome, user and notes.",
)
@settings_options
@guarded
def preview(settings: Settings, output: Path, as_json: bool) -> None:
    """Show, before anything is uploaded, how each person will look in Teams and Outlook.

    Writes a contact sheet of what the next reconcile would do: each photo prepared exactly
    as the run will prepare it, in a circle at 48 and 240 pixels, beside the original with
    the part kept marked on it, the matched user (or why there is none) and the quality
    notes. Refreshes users as a dry run does; uploads, moves and records nothing.

    \b
    Example:
      photosync preview --crop face --output preview.html
    """
    from reconciler import preview as preview_module

    entries = preview_module.collect(settings)
    page = preview_module.to_html(entries, datetime.now(UTC))
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}; choose another --output", EXIT_USAGE)
    if as_json:
        files = [entry.as_json() for entry in entries]
        click.echo(json.dumps({"output": str(output), "files": files}))
        return
    for entry in entries:
        notes = f"  [{'; '.join(entry.quality_notes)}]" if entry.quality_notes else ""
        who = entry.user or entry.reason
        click.echo(one_line(f"{entry.outcome.value:<10}  {entry.file}  ->  {who}{notes}"))
    click.echo(f"contact sheet of {len(entries)} file(s) written to {output}")


@main.group()
def db() -> None:
    """Manage the ledger database.

    \b
    Example:
      photosync db upgrade --database-url sqlite:////var/lib/photosync/ledger.db
    """


@db.command()
@json_option
@settings_options_using(*LEDGER_ONLY)
@guarded
def upgrade(settings: Settings, as_json: bool) -> None:
    """Apply the ledger's migrations (reconcile also does this on start).

    \b
    Example:
      photosync db upgrade
    """
    from reconciler import app

    where, revision = app.upgrade_database(settings)
    if as_json:
        click.echo(json.dumps({"ledger": where, "schema_revision": revision}))
    else:
        click.echo(f"ledger {where} is at revision {revision}")


@main.command()
@click.option(
    "--keep",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Build the demo in this folder and keep it, instead of a temporary one.",
)
@guarded
def demo(keep: Path | None) -> None:
    """Run a full reconcile against the bundled Graph emulator, offline, in seconds.

    \b
    Example:
      photosync demo
    """
    from reconciler import demo as demo_module

    demo_module.run(keep, echo=click.echo)


@main.command()
@click.option("--runs", default=10, show_default=True, help="How many recent runs to show.")
@json_option
@settings_options_using(*LEDGER_REPORT)
@guarded
def status(settings: Settings, runs: int, as_json: bool) -> None:
    """Show the last runs, the files waiting, failures by reason and the ledger's state.

    Reads the ledger only: never creates, migrates, locks or writes it. With --json, each
    run is the object `reconcile --json` printed, plus command, started_at, exit_code and
    error.

    \b
    Example:
      photosync status --config /etc/photosync.toml --runs 5
    """
    from reconciler import queries

    info = queries.status(settings, runs=runs)
    if as_json:
        click.echo(json.dumps(info.to_json(), default=str))
        return
    render_status(info)


@main.group()
def runs() -> None:
    """Look into past runs recorded in the ledger (read-only).

    \b
    Example:
      photosync runs list --limit 5
      photosync runs show 42
    """


@runs.command("list")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="How many runs to list, newest first.",
)
@json_option
@settings_options_using(*LEDGER_ONLY)
@guarded
def runs_list(settings: Settings, limit: int, as_json: bool) -> None:
    """List the last runs, newest first; --json prints a list of the objects `reconcile
    --json` printed, each with command, started_at, exit_code and error.

    \b
    Example:
      photosync runs list --limit 5 --json
    """
    from reconciler import queries

    listed = queries.runs_list(settings, limit=limit)
    if as_json:
        click.echo(json.dumps([run.to_json() for run in listed], default=str))
        return
    if not listed:
        click.echo("no runs yet")
    for run in listed:
        click.echo(run_line(run))


@runs.command()
@click.argument("run_id", type=int)
@json_option
@settings_options_using(*LEDGER_ONLY)
@guarded
def show(settings: Settings, run_id: int, as_json: bool) -> None:
    """Show what run RUN_ID did, file by file (`photosync status` lists the run ids).

    \b
    Example:
      photosync runs show 42 --json
    """
    from reconciler import queries

    details = queries.run_details(settings, run_id)
    if details is None:
        fail(
            f"no run {run_id} in the ledger; `photosync runs list` lists the last runs", EXIT_USAGE
        )
    if as_json:
        click.echo(json.dumps(details.to_json(), default=str))
        return
    render_run_details(details)


@main.group()
def report() -> None:
    """Audit reports built from the ledger alone (no Graph call).

    \b
    Example:
      photosync report unmatched --format html --output unmatched.html
    """


REPORT_FORMATS = ("table", "csv", "json", "html")


def render_report(rows: list[ReportRow], fmt: str) -> str:
    from reconciler import report as report_module

    if fmt == "html":
        return report_module.to_html(rows, datetime.now(UTC))
    renderers = {"table": report_module.to_table, "csv": report_module.to_csv}
    return renderers.get(fmt, report_module.to_json)(rows)


@report.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(REPORT_FORMATS),
    default=None,
    show_default="table",
    help="table for a terminal; csv and json are stable (README, Report formats); "
    "html is one self-contained page with the photos, for HR.",
)
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@click.option(
    "--excel",
    is_flag=True,
    help="CSV for Excel on stdout too: --format csv with a UTF-8 byte order mark (a CSV "
    "written with --output always has one).",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to this file instead of stdout.",
)
@settings_options_using(*LEDGER_REPORT)
@guarded
def unmatched(
    settings: Settings, fmt: str | None, as_json: bool, excel: bool, output: Path | None
) -> None:
    """List every file that has not landed, with the reason and its detail. Reads the
    ledger only: never creates, migrates, locks or writes it.

    \b
    Example:
      photosync report unmatched --format csv --output unmatched.csv
    """
    from reconciler import queries

    chosen = report_format(fmt, as_json=as_json, excel=excel)
    text = render_report(queries.report_unmatched(settings), chosen)
    if not text.endswith("\n"):
        text += "\n"
    # Excel reads a CSV without a byte order mark as the local code page: "José" garbled.
    bom = chosen == "csv" and (excel or output is not None)
    if output is None:
        click.echo(("\ufeff" if bom else "") + text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8-sig" if bom else "utf-8")
    except OSError as exc:
        fatal(
            f"cannot write the report to {output} ({exc.strerror or exc}); --output needs a "
            "file in a folder that exists and this account can write",
            EXIT_USAGE,
            exc,
        )


def report_format(fmt: str | None, *, as_json: bool, excel: bool) -> str:
    """The one format --format, --json and --excel ask for together; conflicting asks are
    a usage error."""
    asked = {name for name, flag in (("json", as_json), ("csv", excel)) if flag}
    if fmt is not None:
        asked.add(fmt)
    if len(asked) > 1:
        raise click.UsageError(
            "--format " + (fmt or "") + ", --json and --excel ask for different formats; "
            "give one of them"
        )
    return asked.pop() if asked else "table"


@main.command()
@click.argument(
    "directory", type=click.Path(path_type=Path, file_okay=False), default=".", required=False
)
@click.option("--inbox-dir", default=None, help="Inbox folder (default: DIR/InProgress).")
@click.option("--completed-dir", default=None, help="Completed folder (default: DIR/Completed).")
@click.option("--failed-dir", default=None, help="Failed folder (default: DIR/Failed).")
@click.option(
    "--database-url", default=None, help="Ledger URL (default: sqlite:///DIR/photosync.db)."
)
@guarded
def init(
    directory: Path,
    inbox_dir: str | None,
    completed_dir: str | None,
    failed_dir: str | None,
    database_url: str | None,
) -> None:
    """Write DIR/photosync.toml (every setting, commented), create the folders and the
    ledger, and print the next steps. An existing photosync.toml is never overwritten.

    \b
    Example:
      photosync init /srv/photosync
    """
    from reconciler import init as init_module

    logs.configure("warning", "text", None)  # no settings here: warnings go to stderr
    result = init_module.initialise(
        directory,
        {
            "inbox_dir": inbox_dir,
            "completed_dir": completed_dir,
            "failed_dir": failed_dir,
            "database_url": database_url,
        },
    )
    for line in init_module.next_steps(result):
        click.echo(line)


@main.group("config")
def config_group() -> None:
    """Look at the settings photosync runs with.

    \b
    Example:
      photosync config show
    """


@config_group.command("show")
@json_option
@settings_options
@guarded
def config_show(settings: Settings, as_json: bool) -> None:
    """Print every effective setting and where it came from (default, the config file, a
    PHOTOSYNC_* variable, a flag); secrets are masked.

    \b
    Example:
      photosync config show --json
    """
    from reconciler import settings_view

    params = click.get_current_context().params
    choice = chosen_config(params["config_file"])
    flags = {spec.name: params[spec.name] for spec in SETTINGS if not spec.env_only}
    shown = settings_view.effective_settings(choice, os.environ, flags)
    if as_json:
        click.echo(json.dumps(settings_view.as_json(choice, shown)))
    else:
        for line in settings_view.as_lines(choice, shown):
            click.echo(one_line(line))


@main.command()
@json_option
@settings_options
@guarded
def doctor(settings: Settings, as_json: bool) -> None:
    """Check this machine: config, folders, ledger, credential and app roles, Graph, the
    tenant's photo setting. One line per check with its fix; exit 0 only if none fails.
    Creates nothing.

    \b
    Example:
      photosync doctor --config /etc/photosync/photosync.toml
    """
    from reconciler import doctor as doctor_module

    choice = chosen_config(click.get_current_context().params["config_file"])
    checks = doctor_module.run_checks(settings, choice, os.environ)
    if as_json:
        click.echo(json.dumps(doctor_module.render_json(checks)))
    else:
        marks = doctor_module.marks_for(getattr(sys.stdout, "encoding", None))
        for line in doctor_module.render_lines(checks, marks):
            click.echo(line)
    sys.exit(doctor_module.exit_code(checks))


@main.command()
@click.option(
    "--users", default=20, show_default=True, type=click.IntRange(1, 100_000), help="Tenant size."
)
@click.option(
    "--port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port on 127.0.0.1 (0: any free one).",
)
@guarded
def emulator(users: int, port: int) -> None:
    """Serve the bundled Graph emulator with a generated tenant until Ctrl+C, and print the
    settings that point photosync at it, for trying every command offline.

    \b
    Example:
      photosync emulator --users 50 --port 8642
    """
    from reconciler import demo as demo_module

    logs.configure("warning", "text", None)  # no settings here: warnings go to stderr
    demo_module.serve(users, port, echo=click.echo)
