"""The text a person reads: one line per file, the run's summary line, a run's line in
`status` and `runs`. `--json` output is each value's own to_json (model.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from reconciler.model import FAILS_RUN, UNDO_OUTCOMES, FileResult, Outcome, Plan, RunSummary
from reconciler.names import one_line, shown

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


def run_line(run: dict[str, Any]) -> str:
    counts = ", ".join(f"{o.value} {run[o.value]}" for o in Outcome if run.get(o.value)) or "-"
    duration = "running" if run["duration_s"] is None else f"{run['duration_s']}s"
    dry = " (dry run)" if run["dry_run"] else ""
    error = f" error: {run['error']}" if run["error"] else ""
    return (
        f"#{run['run_id']} {run['command']}{dry} {run['started_at']} {duration} "
        f"exit {run['exit_code']} graph {run['graph_requests']}: {counts}{error}"
    )
