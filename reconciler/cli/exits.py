"""Exit codes (contract): 0 every actionable file handled; 1 an upload failed or a file was
invalid; 2 usage or configuration error; 3 could not run (auth, Graph unreachable, lock).
Every error becomes one line on stderr and one of these codes, never a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click

from reconciler import logs
from reconciler.errors import ConfigError, PhotosyncError
from reconciler.names import one_line

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
