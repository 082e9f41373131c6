"""`photosync config show`: every effective setting with where it came from, secrets masked.

The values are the ones a run would use (relative paths already taken from the config file's
folder); a secret shows only whether it is set, and a database URL never shows its password.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from reconciler.config import SETTINGS, SettingSpec, load_settings_with_sources
from reconciler.discovery import ConfigChoice

MASKED = "(set, hidden)"


@dataclass(frozen=True)
class ShownSetting:
    name: str
    value: str | int | float | bool | None
    source: str


def shown_value(spec: SettingSpec, value: object) -> str | int | float | bool | None:
    """What may be printed of a setting's value."""
    if value is None:
        return None
    if spec.secret:
        return MASKED
    if spec.name == "database_url":
        return make_url(str(value)).render_as_string(hide_password=True)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def effective_settings(
    choice: ConfigChoice, env: Mapping[str, str], flags: Mapping[str, object]
) -> list[ShownSetting]:
    """Every setting in config.SETTINGS order; ConfigError as a run would raise it."""
    settings, sources = load_settings_with_sources(choice.path, env, flags)
    return [
        ShownSetting(spec.name, shown_value(spec, getattr(settings, spec.name)), sources[spec.name])
        for spec in SETTINGS
    ]


def as_json(choice: ConfigChoice, shown: list[ShownSetting]) -> dict[str, Any]:
    return {
        "config_file": None if choice.path is None else str(choice.path),
        "config_source": choice.source,
        "settings": {s.name: {"value": s.value, "source": s.source} for s in shown},
    }


def as_lines(choice: ConfigChoice, shown: list[ShownSetting]) -> list[str]:
    width = max(len(s.name) for s in shown)
    lines = [f"config file: {choice.describe()}"]
    for setting in shown:
        value = "none" if setting.value is None else setting.value
        if isinstance(value, bool):
            value = str(value).lower()
        lines.append(f"{setting.name:<{width}} = {value}  ({setting.source})")
    return lines
