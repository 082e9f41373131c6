"""Where the config file comes from, when a command is not told.

The ladder (first match wins): `--config PATH` (after or before the command name), the
`PHOTOSYNC_CONFIG` variable, then the first file that exists of the system-wide file
(`/etc/photosync/photosync.toml`; on Windows `%ProgramData%\\photosync\\photosync.toml`) and
the user config folder's `photosync/photosync.toml` (platformdirs). A path given by flag or
variable must exist; a missing system or user file just means "look further".

`choose` is pure over its inputs (environment, OS name, an `exists` test), so every rung
is tested without touching /etc.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath

import platformdirs

from reconciler.errors import ConfigError

CONFIG_ENV = "PHOTOSYNC_CONFIG"
# Where the system-wide file is looked for on POSIX (default /etc). Packagers who install under
# another prefix set it; the tests set it so that they never need to write to /etc.
SYSCONFDIR_ENV = "PHOTOSYNC_SYSCONFDIR"
FILE_NAME = "photosync.toml"
FLAG_SOURCE = "--config"


@dataclass(frozen=True)
class ConfigChoice:
    """The config file a command reads (None: defaults, variables and flags only), how it
    was found, and every place that was looked at, for messages."""

    path: Path | None
    source: str
    looked_at: tuple[PurePath, ...] = ()

    def describe(self) -> str:
        if self.path is None:
            where = ", ".join(str(p) for p in self.looked_at) or "nowhere"
            return f"no config file (looked at {where})"
        return f"{self.path} (from {self.source})"


def system_config_file(env: Mapping[str, str], os_name: str = os.name) -> PurePath:
    """The machine-wide file: /etc/photosync/photosync.toml, or under %ProgramData%."""
    if os_name == "nt":
        program_data = env.get("ProgramData") or env.get("PROGRAMDATA") or r"C:\ProgramData"
        return PureWindowsPath(program_data, "photosync", FILE_NAME)
    return Path(env.get(SYSCONFDIR_ENV) or "/etc", "photosync", FILE_NAME)


def user_config_file() -> Path:
    """The account's own file, in the user config folder (e.g. ~/.config/photosync on Linux,
    following XDG_CONFIG_HOME)."""
    return Path(platformdirs.user_config_dir("photosync", appauthor=False), FILE_NAME)


def search_path(env: Mapping[str, str], os_name: str = os.name) -> tuple[PurePath, ...]:
    """The files looked for, in order, when neither the flag nor the variable names one."""
    return (system_config_file(env, os_name), user_config_file())


def choose(
    flag: Path | None,
    env: Mapping[str, str],
    *,
    os_name: str = os.name,
    exists: Callable[[PurePath], bool] = lambda p: Path(p).is_file(),
) -> ConfigChoice:
    """The config file for this command; ConfigError when a named file is missing."""
    if flag is not None:
        return _named(Path(flag), FLAG_SOURCE, exists)
    named = env.get(CONFIG_ENV, "").strip()
    if named:
        return _named(Path(os.path.expanduser(named)), CONFIG_ENV, exists)
    candidates = search_path(env, os_name)
    for candidate in candidates:
        if exists(candidate):
            return ConfigChoice(Path(candidate), f"found at {candidate}", candidates)
    return ConfigChoice(None, "none found", candidates)


def _named(path: Path, source: str, exists: Callable[[PurePath], bool]) -> ConfigChoice:
    if not exists(path):
        raise ConfigError(
            "config",
            f"file {path} (from {source}) does not exist; create it with `photosync init "
            f"{path.parent}` or point {source} at your photosync.toml",
        )
    return ConfigChoice(path.absolute(), source, (path,))
