"""The command-line flag for each setting, built from config.SETTINGS: its metavar shows
the choices (or the kind of value), its help the environment variable and the default.

A command lists in its --help only the settings it reads (the per-command tuples below);
the flags of the others are still accepted, hidden, so one wrapper script can pass the same
flags to every command. A command without a tuple (`None`) lists every setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from reconciler.config import Settings, SettingSpec

# Every command that opens a ledger reads these.
LEDGER = ("database_url", "log_level", "log_format", "log_file")
# status and report: the ledger, and whether an external account counts as ineligible.
LEDGER_REPORT = (*LEDGER, "include_external_members")
# runs and db upgrade: the ledger alone.
LEDGER_ONLY = LEDGER

# A value no parser accepts: what each one says about it names what it does accept.
_PROBE = "\0"


def choices_of(spec: SettingSpec) -> tuple[str, ...] | None:
    """The values a setting accepts, when it is a choice; taken from the parser's own
    words ("one of a, b, c"; "true or false"), so the help cannot drift from config.py."""
    try:
        spec.parse(_PROBE)
    except ValueError as exc:
        words = str(exc)
    else:
        return None
    if words.startswith("one of "):
        return tuple(words.removeprefix("one of ").split(", "))
    if words == "true or false":
        return ("true", "false")
    return None


def default_of(name: str) -> object:
    field = next(f for f in dataclasses.fields(Settings) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def shown_default(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_METAVARS = {"Path": "PATH", "int": "INTEGER", "float": "NUMBER", "str": "TEXT"}


def metavar_of(spec: SettingSpec) -> str:
    choices = choices_of(spec)
    if choices:
        return "[" + "|".join(choices) + "]"
    if spec.name.endswith("_url"):
        return "URL"
    if spec.name.endswith("_seconds"):
        return "SECONDS"
    if spec.name.endswith("_hours"):
        return "HOURS"
    field = next(f for f in dataclasses.fields(Settings) if f.name == spec.name)
    kind = str(field.type).split(" | ")[0]
    return _METAVARS.get(kind, "VALUE")


def setting_option(spec: SettingSpec, *, hidden: bool) -> Callable[[Any], Any]:
    """The click option for one setting (`--move-completed/--mirror` for move_completed)."""
    default = shown_default(default_of(spec.name))
    if spec.name == "move_completed":
        return click.option(
            "--move-completed/--mirror",
            "move_completed",
            default=None,
            hidden=hidden,
            help=f"{spec.help} [env {spec.env_var}; default: --move-completed]",
        )
    return click.option(
        spec.flag,
        spec.name,
        default=None,
        hidden=hidden,
        metavar=metavar_of(spec),
        help=f"{spec.help} [env {spec.env_var}; default: {default}]",
    )
