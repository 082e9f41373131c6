"""The text a person reads: one line per file, the run's summary line, `status` and a run's
line in `status` and `runs`. `--json` output is each value's own to_json (model.py,
queries.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from reconciler.model import FAILS_RUN, UNDO_OUTCOMES, FileResult, Outcome, Plan, RunSummary
from reconciler.names import one_line, shown

if TYPE_CHECKING:  # only for the annotations: the ledger is imported when a command needs it
    from reconciler.queries import RunDetailsView, RunView, StatusView

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


def render_dry_run(plan: Plan, summary: RunSummary) -> None:
    render_predicted(summary)
    render_pruned(summary)


def render_pruned(summary: RunSummary) -> None:
    """What a dry run with prune would remove (or leave, and why)."""
    for result in summary.results:
        if result.outcome in (Outcome.REMOVED, Outcome.SKIPPED):
            line = f"{_VERB[result.outcome]:<10}  {result.file}  ->  {result.user_label}"
            click.echo(one_line(f"{line}  ({result.reason})"))


def run_line(run: RunView) -> str:
    counts = ", ".join(f"{o.value} {n}" for o, n in run.counts.items() if n) or "-"
    duration = "running" if run.duration_s is None else f"{run.duration_s}s"
    dry = " (dry run)" if run.dry_run else ""
    error = f" error: {run.error}" if run.error else ""
    return (
        f"#{run.run_id} {run.command}{dry} {run.started_at} {duration} "
        f"exit {run.exit_code} graph {run.graph_requests}: {counts}{error}"
    )


def render_status(status: StatusView) -> None:
    click.echo(f"ledger: {status.ledger} (schema {status.schema_revision})")
    age = status.delta_token_age_s
    listed = status.full_listing_age_s
    click.echo(
        f"users known: {status.users}; delta token age: "
        f"{'none yet' if age is None else f'{age / 3600:.1f} h'}; last full listing: "
        f"{'none yet' if listed is None else f'{listed / 3600:.1f} h ago'}"
    )
    waiting = ", ".join(f"{k} {v}" for k, v in sorted(status.waiting.items())) or "none"
    click.echo(f"files in the inbox: {waiting}")
    failures = ", ".join(f"{k} {v}" for k, v in sorted(status.failures.items())) or "none"
    click.echo(f"failures: {failures}")
    for failure in status.failure_reasons:
        click.echo(f"  {failure.outcome:<8} {failure.files:>4}  {failure.reason}")
    for entry in status.ignored:
        click.echo(one_line(f"  ignored  {entry.file}: {entry.reason}"))
    if status.drift.count:
        click.echo(
            f"photos changed outside photosync: {status.drift.count} (oldest first seen "
            f"{status.drift.oldest}); `photosync verify --fix` puts them back"
        )
    click.echo("last runs:" if status.runs else "last runs: none yet")
    for run in status.runs:
        click.echo("  " + run_line(run))


def render_run_details(details: RunDetailsView) -> None:
    click.echo(f"{run_line(details.run)} (host {details.host}, pid {details.pid})")
    for file in details.files:
        user = f"  ->  {file.user}" if file.user else ""
        where = f"  => {file.destination}" if file.destination else ""
        http = ""
        if file.http_status is not None:
            http = (
                f"  [HTTP {file.http_status}, {file.attempts} attempt(s), "
                f"client-request-id {file.client_request_id}]"
            )
        click.echo(one_line(f"{file.outcome:<10}  {file.file}{user}  ({file.reason}){where}{http}"))
        if file.quality_notes:
            click.echo(one_line("            quality: " + "; ".join(file.quality_notes)))
    for change in details.changes:
        line = f"{change.kind:<10}  {change.user}  {change.status} ({change.reason})"
        click.echo(one_line(line))
