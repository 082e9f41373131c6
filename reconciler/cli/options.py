"""The command-line flag for each setting, built from config.SETTINGS: its metavar shows
the choices (or the kind of value), its help the environment variable and the default.

A command lists in its --help only the settings it reads (the per-command tuples below);
the flags of the others are still accepted, hidden, so one wrapper script can pass the same
flags to every command. A command without a tuple (`None`) lists every setting.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import click

from reconciler import discovery, logs
from reconciler.cli.exits import EXIT_USAGE, F, fail
from reconciler.config import SETTINGS, Settings, SettingSpec, load_settings
from reconciler.errors import ConfigError

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


def settings_options(command: F) -> F:
    """--config plus one flag per setting, all declared once in config.SETTINGS; the
    command's help lists every setting (settings_options_using lists fewer)."""
    return _with_settings(command, None)


def settings_options_using(*uses: str) -> Callable[[F], F]:
    """settings_options for a command that reads only the settings `uses`: its --help lists
    those alone; the other flags are accepted, hidden (the tuples above)."""
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
        wrapper = setting_option(spec, hidden=hidden)(wrapper)
    wrapper = click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="TOML file with a [photosync] table of settings.",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


GROUP_CONFIG = "photosync.group_config"


def chosen_config(command_flag: Path | None) -> discovery.ConfigChoice:
    """The config file a command reads: its own --config, else one given before the command
    name, else the discovery ladder (reconciler/discovery.py)."""
    ctx = click.get_current_context(silent=True)
    group_flag = ctx.meta.get(GROUP_CONFIG) if ctx is not None else None
    return discovery.choose(command_flag or group_flag, os.environ)
