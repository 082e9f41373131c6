"""The `photosync` command line: parse, call one app function, render, map errors to exit codes.

Exit codes (contract): 0 every actionable file handled; 1 an upload failed or a file was
invalid; 2 usage or configuration error; 3 could not run (auth, Graph unreachable, lock).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from reconciler import __version__, app, cli_options, discovery, logs
from reconciler import report as report_module
from reconciler.config import SETTINGS, Settings, load_settings
from reconciler.errors import (
    ConfigError,
    PhotosyncError,
)
from reconciler.model import FAILS_RUN, UNDO_OUTCOMES, FileResult, Outcome, Plan, RunSummary
from reconciler.names import one_line, shown

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

F = TypeVar("F", bound=Callable[..., Any])

# 0 and 1 come from the run's own summary (RunSummary.exit_code).
EXIT_USAGE, EXIT_CANNOT_RUN = 2, 3
EXIT_CODES_HELP = """\b
Exit codes:
  0  every actionable file handled (unmatched, ambiguous, ineligible, deferred do not fail)
  1  an upload failed or a file was invalid
  2  usage or configuration error (a bad setting, a missing or unusable ledger)
  3  could not run: authentication failed, Graph unreachable, or another run holds the lock"""


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"photosync: error: {message}", err=True)
    sys.exit(code)


def settings_options(command: F) -> F:
    """--config plus one flag per setting, all declared once in config.SETTINGS; the
    command's help lists every setting (settings_options_using lists fewer)."""
    return _with_settings(command, None)


def settings_options_using(*uses: str) -> Callable[[F], F]:
    """settings_options for a command that reads only the settings `uses`: its --help lists
    those alone; the other flags are accepted, hidden (reconciler/cli_options.py)."""
    return lambda command: _with_settings(command, uses)


def _with_settings(command: F, uses: tuple[str, ...] | None) -> F:
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        config_file = kwargs.pop("config_file")
        flags = {spec.name: kwargs.pop(spec.name) for spec in SETTINGS if not spec.env_only}
        try:
            settings = load_settings(chosen_config(config_file).path, os.environ, flags)
            logs.configure(settings.log_level, settings.log_format, settings.log_file)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        return command(settings, *args, **kwargs)

    for spec in reversed(SETTINGS):
        if spec.env_only:
            continue
        hidden = uses is not None and spec.name not in uses
        wrapper = cli_options.setting_option(spec, hidden=hidden)(wrapper)
    wrapper = click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="TOML file with a [photosync] table of settings.",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


def guarded(command: F) -> F:
    """Turn our errors into one line and the contract's exit code; never a traceback. The
    line also goes to the log (so a --log-file has it), with the traceback at debug."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            fatal(str(exc), EXIT_USAGE, exc)
        except PhotosyncError as exc:
            fatal(str(exc), EXIT_CANNOT_RUN, exc)
        except KeyboardInterrupt as exc:
            fatal("interrupted; the next run picks up where this one stopped", EXIT_CANNOT_RUN, exc)
        except (click.ClickException, click.exceptions.Exit):
            raise
        except Exception as exc:  # a photosync bug: still one line, the traceback at debug
            fatal(
                f"unexpected {type(exc).__name__}: {exc}; run again with --log-level debug "
                "for the traceback, and report it",
                EXIT_CANNOT_RUN,
                exc,
            )

    return wrapper  # type: ignore[return-value]


def fatal(message: str, code: int, exc: BaseException) -> NoReturn:
    """The last word of a command that cannot go on: logged (reaching --log-file, in its
    format; with the traceback at debug), then one line on stderr."""
    log = logging.getLogger("reconciler")
    debug = log.isEnabledFor(logging.DEBUG)
    if debug or not logs.to_stderr():  # else the line below is already on stderr
        log.error("%s", one_line(message), exc_info=exc if debug else None)
    fail(one_line(message), code)


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


class OneLineErrors(click.Group):
    """The `photosync` group: a usage mistake (unknown option, bad choice, missing argument)
    is one line on stderr naming what is wrong, with exit code 2, like every other
    operator mistake; never click's three-line block."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # `photosync runs`: help, not a mistake
            click.echo(exc.format_message())
            sys.exit(0)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "photosync"
            fail(f"{exc.format_message().rstrip('.')} (see `{where} --help`)", EXIT_USAGE)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("interrupted", EXIT_CANNOT_RUN)
        sys.exit(code if isinstance(code, int) else 0)


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


GROUP_CONFIG = "photosync.group_config"


def chosen_config(command_flag: Path | None) -> discovery.ConfigChoice:
    """The config file a command reads: its own --config, else one given before the command
    name, else the discovery ladder (reconciler/discovery.py)."""
    ctx = click.get_current_context(silent=True)
    group_flag = ctx.meta.get(GROUP_CONFIG) if ctx is not None else None
    return discovery.choose(command_flag or group_flag, os.environ)


# --- rendering


_VERB = {
    Outcome.UPLOADED: "upload",
    Outcome.UNCHANGED: "unchanged",
    Outcome.UNMATCHED: "unmatched",
    Outcome.AMBIGUOUS: "ambiguous",
    Outcome.INELIGIBLE: "ineligible",
    Outcome.INVALID: "invalid",
    Outcome.FAILED: "failed",
    Outcome.DEFERRED: "deferred",
    Outcome.IGNORED: "ignored",
    Outcome.RESTORED: "restore",
    Outcome.REMOVED: "remove",
    Outcome.SKIPPED: "skip",
    Outcome.DRIFTED: "drifted",
}


def render_predicted(summary: RunSummary) -> None:
    """A dry run's line per file: what a real run would record (reconciler/dry_run.py)."""
    for result in sorted(summary.results, key=lambda r: r.file):
        if result.outcome in UNDO_OUTCOMES:
            continue  # render_pruned shows those
        verb = "would upload" if result.outcome is Outcome.UPLOADED else result.outcome.value
        user = f"  ->  {result.user_label}" if result.user_label else ""
        click.echo(one_line(f"{verb:<12}  {result.file}{user}  ({result.reason})"))


def render_results(results: list[FileResult], *, everything: bool) -> None:
    """Every file for a person at a terminal; off a terminal (a scheduled run) only the files
    that make the run exit 1, so the mail or journal entry says why and stays short."""
    for result in sorted(results, key=lambda r: r.file):
        if not everything and result.outcome not in FAILS_RUN:
            continue
        where = f"  => {shown(str(result.destination))}" if result.destination else ""
        click.echo(one_line(f"{result.outcome.value:<10}  {result.file}  ({result.reason}){where}"))


def render_summary(summary: RunSummary) -> None:
    counts = ", ".join(f"{o.value} {n}" for o, n in summary.counts.items() if n)
    dry = " (dry run: what a real run would do; nothing was changed)" if summary.dry_run else ""
    click.echo(
        f"run {summary.run_id}{dry}: {counts or 'nothing to do'}; "
        f"{summary.graph_requests} Graph requests in {summary.duration_s:.1f}s"
    )


def finish(summary: RunSummary, as_json: bool, lines: Callable[[], None]) -> None:
    for refusal in summary.refusals:  # e.g. prune refused: one line each, on stderr
        click.echo(f"photosync: {one_line(refusal)}", err=True)
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        lines()
        render_summary(summary)
    sys.exit(summary.exit_code)


def on_terminal() -> bool:
    return sys.stdout.isatty()


_STAGES = {
    "scan": "Scanning the inbox",
    "users": "Refreshing users from Graph",
    "upload": "Handling files",
}


class TerminalProgress:
    """Progress on stderr for a person watching: a line per stage, a running count of users
    refreshed, a bar over the files. file_done arrives from the upload threads, hence the
    lock."""

    def __init__(self) -> None:
        self.bars = ExitStack()  # the open progress bars, closed when the run ends
        self._bar: ProgressBar[int] | None = None
        self._users = 0
        self._lock = threading.Lock()

    def hooks(self) -> app.Progress:
        return app.Progress(
            stage=self.stage,
            users=self.users,
            uploads_total=self.uploads_total,
            file_done=self.file_done,
        )

    def stage(self, name: str) -> None:
        self.end_users_line()
        click.echo(f"{_STAGES.get(name, name)}...", err=True)

    def users(self, count: int) -> None:
        self._users += count
        click.echo(f"\r  users refreshed: {self._users}", err=True, nl=False)

    def uploads_total(self, total: int) -> None:
        self._bar = self.bars.enter_context(
            click.progressbar(length=total, label="  files", show_pos=True, file=sys.stderr)
        )

    def file_done(self, _result: FileResult) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(1)

    def end_users_line(self) -> None:
        if self._users:
            click.echo(err=True)
            self._users = 0


@contextmanager
def progress_hooks() -> Iterator[app.Progress]:
    """Bars only for a person at a terminal; a scheduled run's stderr stays empty."""
    if not sys.stderr.isatty():
        yield app.Progress()
        return
    terminal = TerminalProgress()
    try:
        with terminal.bars:
            yield terminal.hooks()
    finally:
        terminal.end_users_line()


# --- commands


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


def render_dry_run(plan: Plan, summary: RunSummary) -> None:
    render_predicted(summary)
    render_pruned(summary)


def render_pruned(summary: RunSummary) -> None:
    """What a dry run with prune would remove (or leave, and why)."""
    for result in summary.results:
        if result.outcome in (Outcome.REMOVED, Outcome.SKIPPED):
            line = f"{_VERB[result.outcome]:<10}  {result.file}  ->  {result.user_label}"
            click.echo(one_line(f"{line}  ({result.reason})"))


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
@settings_options_using(*cli_options.LEDGER_ONLY)
@guarded
def upgrade(settings: Settings, as_json: bool) -> None:
    """Apply the ledger's migrations (reconcile also does this on start).

    \b
    Example:
      photosync db upgrade
    """
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
@settings_options_using(*cli_options.LEDGER_REPORT)
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
    info = app.status(settings, runs=runs)
    # Links and folders in the inbox, each with what to do: nothing else lists them.
    info["ignored"] = [
        {"file": row.file, "reason": row.detail}
        for row in app.report_unmatched(settings)
        if row.reason == "ignored"
    ]
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    click.echo(f"ledger: {info['ledger']} (schema {info['schema_revision']})")
    age = info["delta_token_age_s"]
    listed = info["full_listing_age_s"]
    click.echo(
        f"users known: {info['users']}; delta token age: "
        f"{'none yet' if age is None else f'{age / 3600:.1f} h'}; last full listing: "
        f"{'none yet' if listed is None else f'{listed / 3600:.1f} h ago'}"
    )
    waiting = ", ".join(f"{k} {v}" for k, v in sorted(info["waiting"].items())) or "none"
    click.echo(f"files in the inbox: {waiting}")
    failures = ", ".join(f"{k} {v}" for k, v in sorted(info["failures"].items())) or "none"
    click.echo(f"failures: {failures}")
    for failure in info["failure_reasons"]:
        click.echo(f"  {failure['outcome']:<8} {failure['files']:>4}  {failure['reason']}")
    for entry in info["ignored"]:
        click.echo(one_line(f"  ignored  {entry['file']}: {entry['reason']}"))
    drift = info.get("drift") or {}
    if drift.get("count"):
        click.echo(
            f"photos changed outside photosync: {drift['count']} (oldest first seen "
            f"{drift['oldest']}); `photosync verify --fix` puts them back"
        )
    click.echo("last runs:" if info["runs"] else "last runs: none yet")
    for run in info["runs"]:
        click.echo("  " + run_line(run))


def run_line(run: dict[str, Any]) -> str:
    counts = ", ".join(f"{o.value} {run[o.value]}" for o in Outcome if run.get(o.value)) or "-"
    duration = "running" if run["duration_s"] is None else f"{run['duration_s']}s"
    dry = " (dry run)" if run["dry_run"] else ""
    error = f" error: {run['error']}" if run["error"] else ""
    return (
        f"#{run['run_id']} {run['command']}{dry} {run['started_at']} {duration} "
        f"exit {run['exit_code']} graph {run['graph_requests']}: {counts}{error}"
    )


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
@settings_options_using(*cli_options.LEDGER_ONLY)
@guarded
def runs_list(settings: Settings, limit: int, as_json: bool) -> None:
    """List the last runs, newest first; --json prints a list of the objects `reconcile
    --json` printed, each with command, started_at, exit_code and error.

    \b
    Example:
      photosync runs list --limit 5 --json
    """
    listed = app.runs_list(settings, limit=limit)
    if as_json:
        click.echo(json.dumps(listed, default=str))
        return
    if not listed:
        click.echo("no runs yet")
    for run in listed:
        click.echo(run_line(run))


@runs.command()
@click.argument("run_id", type=int)
@json_option
@settings_options_using(*cli_options.LEDGER_ONLY)
@guarded
def show(settings: Settings, run_id: int, as_json: bool) -> None:
    """Show what run RUN_ID did, file by file (`photosync status` lists the run ids).

    \b
    Example:
      photosync runs show 42 --json
    """
    details = app.run_details(settings, run_id)
    if details is None:
        fail(
            f"no run {run_id} in the ledger; `photosync runs list` lists the last runs", EXIT_USAGE
        )
    if as_json:
        click.echo(json.dumps(details, default=str))
        return
    click.echo(f"{run_line(details)} (host {details['host']}, pid {details['pid']})")
    for file in details["files"]:
        user = f"  ->  {file['user']}" if file["user"] else ""
        where = f"  => {file['destination']}" if file["destination"] else ""
        http = ""
        if file["http_status"] is not None:
            http = (
                f"  [HTTP {file['http_status']}, {file['attempts']} attempt(s), "
                f"client-request-id {file['client_request_id']}]"
            )
        line = f"{file['outcome']:<10}  {file['file']}{user}  ({file['reason']}){where}{http}"
        click.echo(one_line(line))
        if file.get("quality_notes"):
            click.echo(one_line("            quality: " + "; ".join(file["quality_notes"])))
    for change in details.get("changes", []):
        line = f"{change['kind']:<10}  {change['user']}  {change['status']} ({change['reason']})"
        click.echo(one_line(line))


@main.group()
def report() -> None:
    """Audit reports built from the ledger alone (no Graph call).

    \b
    Example:
      photosync report unmatched --format html --output unmatched.html
    """


_RENDERERS: dict[str, Callable[[list[report_module.ReportRow]], str]] = {
    "table": report_module.to_table,
    "csv": report_module.to_csv,
    "json": report_module.to_json,
    "html": lambda rows: report_module.to_html(rows, datetime.now(UTC)),
}


@report.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(_RENDERERS)),
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
@settings_options_using(*cli_options.LEDGER_REPORT)
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
    chosen = report_format(fmt, as_json=as_json, excel=excel)
    text = _RENDERERS[chosen](app.report_unmatched(settings))
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


# --- setting up and checking a machine (init, config show, doctor, emulator)


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
