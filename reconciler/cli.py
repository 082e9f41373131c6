"""The `photosync` command line: parse, call one app function, render, map errors to exit codes.

Exit codes (contract): 0 every actionable file handled; 1 an upload failed or a file was
invalid; 2 usage or configuration error; 3 could not run (auth, Graph unreachable, lock).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from reconciler import __version__, app, logs
from reconciler.config import SETTINGS, Settings, load_settings
from reconciler.errors import (
    AuthError,
    ConfigError,
    GraphError,
    LedgerError,
    PhotosyncError,
)
from reconciler.model import FileResult, Outcome, Plan, RunSummary

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_CANNOT_RUN = 0, 1, 2, 3


def fail(message: str, code: int) -> None:
    click.echo(f"photosync: error: {message}", err=True)
    sys.exit(code)


def settings_options(command: F) -> F:
    """--config plus one flag per setting, all declared once in config.SETTINGS."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        config_file = kwargs.pop("config_file")
        flags = {spec.name: kwargs.pop(spec.name) for spec in SETTINGS if not spec.env_only}
        try:
            settings = load_settings(config_file, os.environ, flags)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        logs.configure(settings.log_level, settings.log_format, settings.log_file)
        return command(settings, *args, **kwargs)

    for spec in reversed(SETTINGS):
        if spec.env_only:
            continue
        if spec.name == "move_completed":
            option = click.option(
                "--move-completed/--mirror", "move_completed", default=None, help=spec.help
            )
        else:
            option = click.option(
                spec.flag,
                spec.name,
                default=None,
                metavar="VALUE",
                help=f"{spec.help} [env {spec.env_var}]",
            )
        wrapper = option(wrapper)
    wrapper = click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="TOML file with a [photosync] table of settings.",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


def guarded(command: F) -> F:
    """Turn our errors into one line and the contract's exit code; never a traceback."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            fail(str(exc), EXIT_USAGE)
        except (AuthError, LedgerError, GraphError) as exc:
            fail(str(exc), EXIT_CANNOT_RUN)
        except PhotosyncError as exc:
            fail(str(exc), EXIT_CANNOT_RUN)
        except KeyboardInterrupt:
            fail("interrupted; the next run picks up where this one stopped", EXIT_CANNOT_RUN)

    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="photosync")
def main() -> None:
    """Keep Microsoft Entra ID profile photos in sync with a folder of image files.

    \b
    Example:
      photosync reconcile --config /etc/photosync.toml
    """


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
}


def render_plan(plan: Plan) -> None:
    for action in plan.actions:
        user = action.user.label if action.user else "-"
        click.echo(
            f"{_VERB[action.outcome]:<10}  {action.file.name}  ->  {user}  ({action.reason})"
        )


def render_results(results: list[FileResult]) -> None:
    for result in sorted(results, key=lambda r: r.file):
        where = f"  => {result.destination}" if result.destination else ""
        click.echo(f"{result.outcome.value:<10}  {result.file}  ({result.reason}){where}")


def render_summary(summary: RunSummary) -> None:
    counts = ", ".join(f"{o.value} {n}" for o, n in summary.counts.items() if n)
    click.echo(
        f"run {summary.run_id}: {counts or 'nothing to do'}; "
        f"{summary.graph_requests} Graph requests in {summary.duration_s:.1f}s"
    )


def finish(summary: RunSummary, as_json: bool, lines: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        lines()
        render_summary(summary)
    sys.exit(summary.exit_code)


# --- commands


@main.command()
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing anywhere.")
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
    summary, plan = app.reconcile(settings, dry_run=dry_run, full_refresh=full_refresh)
    finish(
        summary, as_json, lambda: render_plan(plan) if dry_run else render_results(summary.results)
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
    summary, _plan = app.retry_failed(settings, include_permanent=include_permanent)
    finish(summary, as_json, lambda: render_results(summary.results))


@main.group()
def db() -> None:
    """Manage the ledger database.

    \b
    Example:
      photosync db upgrade --database-url sqlite:////var/lib/photosync/ledger.db
    """


@db.command()
@settings_options
@guarded
def upgrade(settings: Settings) -> None:
    """Apply the ledger's migrations (reconcile also does this on start).

    \b
    Example:
      photosync db upgrade
    """
    where, revision = app.upgrade_database(settings)
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
@settings_options
@guarded
def status(settings: Settings, runs: int, as_json: bool) -> None:
    """Show the last runs, the files waiting, failures and the ledger's state.

    \b
    Example:
      photosync status --json
    """
    info = app.status(settings, runs=runs)
    if as_json:
        click.echo(json.dumps(info, default=str))
        return
    click.echo(f"ledger: {info['ledger']} (schema {info['schema_revision']})")
    age = info["delta_token_age_s"]
    click.echo(
        f"users known: {info['users']}; delta token age: "
        f"{'none yet' if age is None else f'{age / 3600:.1f} h'}"
    )
    waiting = ", ".join(f"{k} {v}" for k, v in sorted(info["waiting"].items())) or "none"
    click.echo(f"files in the inbox: {waiting}")
    failures = ", ".join(f"{k} {v}" for k, v in sorted(info["failures"].items())) or "none"
    click.echo(f"failures: {failures}")
    click.echo("last runs:")
    for run in info["runs"]:
        counts = ", ".join(f"{k} {v}" for k, v in run["counts"].items() if v) or "-"
        duration = "running" if run["duration_s"] is None else f"{run['duration_s']}s"
        dry = " (dry run)" if run["dry_run"] else ""
        click.echo(
            f"  #{run['run_id']} {run['command']}{dry} {run['started_at']} {duration} "
            f"exit {run['exit_code']} graph {run['graph_requests']}: {counts}"
        )


@main.group()
def report() -> None:
    """Audit reports built from the ledger alone (no Graph call).

    \b
    Example:
      photosync report unmatched --format csv --output unmatched.csv
    """


@report.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write to this file instead of stdout.",
)
@settings_options
@guarded
def unmatched(settings: Settings, fmt: str, output: Path | None) -> None:
    """List every file that has not landed, with the reason and what to do.

    \b
    Example:
      photosync report unmatched --format json
    """
    from reconciler import report as report_module

    rows = app.report_unmatched(settings)
    text = {
        "table": report_module.to_table,
        "csv": report_module.to_csv,
        "json": report_module.to_json,
    }[fmt](rows)
    if output is None:
        click.echo(text)
    else:
        output.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
