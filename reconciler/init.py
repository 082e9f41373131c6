"""`photosync init [DIR]`: a commented photosync.toml, the three folders and the ledger.

The file lists every setting of config.SETTINGS with its help, so it never drifts from what
photosync understands. Paths left at their defaults are written relative to DIR (a TOML's
relative paths are taken from its own folder), so the whole setup can be moved as one.
An existing photosync.toml is never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from reconciler import app
from reconciler.config import SETTINGS, SPECS_BY_NAME, Settings, load_settings
from reconciler.discovery import CONFIG_ENV, FILE_NAME, search_path
from reconciler.errors import ConfigError, LedgerError, PhotosyncError

# What init writes uncommented, relative to DIR unless the caller chose otherwise.
DEFAULT_LAYOUT = {
    "inbox_dir": "InProgress",
    "completed_dir": "Completed",
    "failed_dir": "Failed",
    "database_url": "sqlite:///photosync.db",
}
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph's own app id
ROLES = ("User.Read.All", "ProfilePhoto.ReadWrite.All")


@dataclass(frozen=True)
class InitResult:
    config_file: Path
    folders: tuple[Path, ...]
    ledger: str
    revision: str | None


def toml_value(value: object) -> str:
    """A Python default as a TOML literal (TOML's basic strings accept JSON's escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return '""'  # an empty value means "none" for every optional setting
    return json.dumps(str(value))


def _defaults() -> dict[str, object]:
    defaults: dict[str, object] = {}
    for field in dataclasses.fields(Settings):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return defaults


def config_text(chosen: dict[str, str]) -> str:
    """The commented photosync.toml: `chosen` settings set, every other one shown with its
    default and commented out."""
    defaults = _defaults()
    lines = [
        "# photosync settings, written by `photosync init`. Every setting photosync knows is",
        "# listed; a line starting with # keeps the default shown. Relative paths are taken",
        "# from this file's folder. Precedence: default < this file < PHOTOSYNC_* variable",
        "# < command-line flag. `photosync config show` prints what is in effect and why.",
        "[photosync]",
    ]
    for spec in SETTINGS:
        lines.append("")
        lines.append(f"# {spec.help}")
        if spec.env_only:
            lines.append(
                f"# {spec.name}: environment only ({spec.env_var}); never put it in this file."
            )
            continue
        lines.append(f"# (variable {spec.env_var}, flag {spec.flag})")
        if spec.name in chosen:
            lines.append(f"{spec.name} = {json.dumps(chosen[spec.name])}")
        else:
            lines.append(f"# {spec.name} = {toml_value(defaults.get(spec.name))}")
    return "\n".join(lines) + "\n"


def layout(directory: Path, overrides: dict[str, str | None]) -> dict[str, str]:
    """The values init writes: the caller's (paths made absolute, since relative ones would
    otherwise be read against DIR) or DEFAULT_LAYOUT's relative ones."""
    chosen = dict(DEFAULT_LAYOUT)
    for name, value in overrides.items():
        if value is None:
            continue
        chosen[name] = value if name == "database_url" else os.path.abspath(value)
    return chosen


def initialise(directory: Path, overrides: dict[str, str | None]) -> InitResult:
    """Write DIR/photosync.toml, create the folders, bring the ledger to head. Refuses
    (ConfigError, nothing created) when the file already exists."""
    config_file = directory / FILE_NAME
    if config_file.exists() or config_file.is_symlink():
        raise ConfigError(
            "config",
            f"{config_file} already exists and is never overwritten; edit it, or run "
            "`photosync init` with another folder",
        )
    chosen = layout(directory, overrides)
    for name, value in chosen.items():  # refuse a bad value before anything is written
        try:
            SPECS_BY_NAME[name].parse(value)
        except ValueError as exc:
            raise ConfigError(name, f"expected {exc}, got {value!r}") from None
    text = config_text(chosen)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with config_file.open("x", encoding="utf-8") as handle:  # "x": never over a file
            handle.write(text)
    except OSError as exc:
        raise ConfigError("config", f"cannot write {config_file}: {exc.strerror}") from None
    settings = load_settings(config_file, env={})
    folders = (settings.inbox_dir, settings.completed_dir, settings.failed_dir)
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("init", f"cannot create {folder}: {exc.strerror}") from None
    try:
        ledger, revision = app.upgrade_database(settings)
    except PhotosyncError as exc:
        # The file and folders stay (init never overwrites, so a rerun would refuse): say
        # how to finish once the ledger's problem is fixed.
        problem = exc.problem if isinstance(exc, ConfigError) else str(exc)
        finish = (
            f"wrote {config_file} and the folders, but the ledger could not be set up: "
            f"{problem}; "
            f"fix that, then run `photosync --config {config_file} db upgrade`"
        )
        if isinstance(exc, ConfigError):
            raise ConfigError("database_url", finish) from exc
        raise LedgerError(finish) from exc
    return InitResult(config_file, folders, ledger, revision)


def next_steps(result: InitResult) -> list[str]:
    config = result.config_file.absolute()
    system_file = search_path(os.environ)[0]
    roles = " ".join(ROLES)
    return [
        f"Wrote {config} (every setting, commented).",
        *(f"Folder ready: {folder}" for folder in result.folders),
        f"Ledger ready: {result.ledger} (revision {result.revision}).",
        "",
        "Next steps:",
        f"1. Review {config}.",
        "2. Let every photosync command find it without --config: put it (or a link to it)",
        f"   at {system_file}, or set {CONFIG_ENV}={config}.",
        "3. Grant the machine's managed identity the two Microsoft Graph app roles (an admin,",
        "   once). From a checkout: bash deploy/grant-graph-roles.sh <principal id>",
        "   (or deploy/Grant-GraphRoles.ps1). With the Azure CLI:",
        "     MI=<principal id of the managed identity>",
        f"     GRAPH=$(az ad sp show --id {GRAPH_APP_ID} --query id -o tsv)",
        f"     for ROLE in {roles}; do",
        f"       ROLE_ID=$(az ad sp show --id {GRAPH_APP_ID} \\",
        "         --query \"appRoles[?value=='$ROLE'].id\" -o tsv)",
        "       az rest --method POST \\",
        '         --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$MI/'
        'appRoleAssignments" \\',
        '         --body "{\\"principalId\\":\\"$MI\\",\\"resourceId\\":\\"$GRAPH\\",'
        '\\"appRoleId\\":\\"$ROLE_ID\\"}"',
        "     done",
        f"4. Check everything: photosync --config {config} doctor",
        f"5. Try a run: photosync --config {config} reconcile --dry-run",
        "6. Schedule it: deploy/ has a systemd service and timer and a Task Scheduler task.",
    ]
