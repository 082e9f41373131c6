"""Progress on stderr for a person at a terminal; a scheduled run's stderr stays empty."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar

    from reconciler.app import Progress
    from reconciler.model import FileResult


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

    def hooks(self) -> Progress:
        return _progress_class()(
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
def progress_hooks() -> Iterator[Progress]:
    """Bars only for a person at a terminal; a scheduled run's stderr stays empty."""
    if not sys.stderr.isatty():
        yield _progress_class()()
        return
    terminal = TerminalProgress()
    try:
        with terminal.bars:
            yield terminal.hooks()
    finally:
        terminal.end_users_line()


def _progress_class() -> type[Progress]:
    """app.Progress, imported when a run starts rather than with the command line."""
    from reconciler.app import Progress

    return Progress
