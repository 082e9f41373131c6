"""Settings: built-in defaults < TOML file < PHOTOSYNC_* environment < command-line flags.

Every setting is declared once, in SETTINGS below: its default, how a text value is parsed,
and its help text. The CLI builds its flags from the same table and the README's reference
is tested against it, so the three can never drift apart.
"""

from __future__ import annotations

import csv
import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from reconciler.errors import ConfigError
from reconciler.ledger.url import plain_sqlite_file, with_file
from reconciler.matching import parse_overrides
from reconciler.model import MATCH_PROPERTIES

AUTH_MODES = ("managed-identity", "client-secret", "certificate", "azure-cli", "default")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
# Graph rejects larger photo bodies (docs/graph-behaviour.md, "Uploading a photo").
GRAPH_PHOTO_LIMIT = 4 * 1024 * 1024
ENV_PREFIX = "PHOTOSYNC_"


def default_database_url() -> str:
    data_dir = Path(platformdirs.user_data_dir("photosync", appauthor=False))
    return f"sqlite:///{data_dir / 'photosync.db'}"


@dataclass(frozen=True)
class Settings:
    graph_url: str = "https://graph.microsoft.com"
    auth: str = "managed-identity"
    client_id: str | None = None
    tenant_id: str | None = None
    certificate_path: Path | None = None
    client_secret: str | None = dataclasses.field(default=None, repr=False)
    inbox_dir: Path = Path("/Photos/InProgress")
    completed_dir: Path = Path("/Photos/Completed")
    failed_dir: Path = Path("/Photos/Failed")
    database_url: str = dataclasses.field(default_factory=default_database_url)
    match_on: str = "displayName"
    max_bytes: int = GRAPH_PHOTO_LIMIT
    max_dimension: int = 648
    concurrency: int = 4
    settle_seconds: float = 30.0
    move_completed: bool = True
    overrides_file: Path | None = None
    crop: str | None = None
    require_face: bool = False
    full_refresh_hours: float = 24.0
    include_external_members: bool = False
    retry_attempts: int = 6
    archive: bool = True
    # None: a folder `archive` beside a SQLite ledger (archive.default_archive_dir).
    archive_dir: Path | None = None
    archive_keep: int = 3
    prune: bool = False
    prune_max: int = 10
    log_level: str = "warning"
    log_format: str = "text"
    log_file: Path | None = None

    def require_folders(self) -> None:
        """Checks that only the commands touching files need (status and report don't)."""
        if not self.inbox_dir.is_dir():
            raise ConfigError(
                "inbox_dir",
                f"folder {self.inbox_dir} does not exist; create it or point inbox_dir at "
                "the folder where photos arrive",
            )
        inbox = self.inbox_dir.resolve()
        for name in ("completed_dir", "failed_dir"):
            folder: Path = getattr(self, name)
            if folder.resolve() == inbox:
                raise ConfigError(
                    name, f"must be a different folder from inbox_dir ({self.inbox_dir})"
                )
            if folder.exists() and not folder.is_dir():
                raise ConfigError(name, f"{folder} exists and is not a folder")
        if self.overrides_file is not None and not self.overrides_file.is_file():
            raise ConfigError(
                "overrides_file",
                f"file {self.overrides_file} does not exist; create the CSV or unset the setting",
            )


# --- parsers: text (env, flag) or TOML-typed value -> Python value; raise ValueError(expected)


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty text value")
    return value.strip()


def _optional_text(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _text(value)


def _path(value: object) -> Path:
    return Path(os.path.expanduser(_text(value)))


def _optional_path(value: object) -> Path | None:
    text = _optional_text(value)
    return None if text is None else Path(os.path.expanduser(text))


def _integer(minimum: int, maximum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        expected = f"a whole number from {minimum} to {maximum}"
        if isinstance(value, bool):
            raise ValueError(expected)
        try:
            number = int(value) if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            raise ValueError(expected) from None
        if not minimum <= number <= maximum:
            raise ValueError(expected)
        return number

    return parse


def _number(expected: str, maximum: float = float("inf")) -> Callable[[object], float]:
    """A parser for a finite number from 0 to `maximum`; `expected` is what the error says."""

    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise ValueError(expected)
        try:
            number = float(value) if isinstance(value, int | float) else float(str(value).strip())
        except ValueError:
            raise ValueError(expected) from None
        if not 0 <= number <= maximum or number == float("inf"):
            raise ValueError(expected)
        return number

    return parse


_seconds = _number("a number of seconds, 0 or more")
_hours = _number(
    "a number of hours from 0 to 8760 (0 = list all users whenever users are needed)", 8760
)


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError("true or false")


def _choice(options: tuple[str, ...], *, optional: bool = False) -> Callable[[object], Any]:
    def parse(value: object) -> str | None:
        if optional and (value is None or str(value).strip().lower() in ("", "none")):
            return None
        text = str(value).strip()
        for option in options:
            if text.lower() == option.lower():
                return option
        allowed = ", ".join(options) + (", none" if optional else "")
        raise ValueError(f"one of {allowed}")

    return parse


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _graph_url(value: object) -> str:
    expected = (
        "an https URL such as https://graph.microsoft.com (http only for a loopback emulator)"
    )
    text = _text(value).rstrip("/")
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise ValueError(expected) from None
    if not host or parts.query or parts.fragment or parts.path not in ("",):
        raise ValueError(expected)
    # A bearer token must never cross a network in clear text.
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host)):
        return text
    raise ValueError(expected)


def _without_password(text: str) -> str:
    """A URL's password (scheme://user:password@host) masked, for error messages."""
    return re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)


def _database_url(value: object) -> str:
    text = _text(value)
    if plain_sqlite_file(text) is not None:
        return text  # read without SQLAlchemy (reconciler/ledger/url.py)
    expected = (
        "a SQLAlchemy URL such as sqlite:///C:/photosync/ledger.db or postgresql+psycopg://..."
    )
    if "://" not in text:  # no URL at all (and --help's probe): no need to load SQLAlchemy
        raise ValueError(expected)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ValueError(expected) from None
    return text


@dataclass(frozen=True)
class SettingSpec:
    name: str
    parse: Callable[[object], Any]
    help: str
    env_only: bool = False
    secret: bool = False

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("graph_url", _graph_url, "Graph root: a national cloud, or a local emulator."),
    SettingSpec("auth", _choice(AUTH_MODES), "How to get a token: " + " / ".join(AUTH_MODES) + "."),
    SettingSpec(
        "client_id",
        _optional_text,
        "App (client) id for the non-managed modes; for managed-identity, picks a "
        "user-assigned identity.",
    ),
    SettingSpec(
        "tenant_id", _optional_text, "Directory (tenant) id, for client-secret/certificate."
    ),
    SettingSpec("certificate_path", _optional_path, "PEM/PFX certificate file, for certificate."),
    SettingSpec(
        "client_secret",
        _optional_text,
        "Client secret, for client-secret. Environment only: PHOTOSYNC_CLIENT_SECRET.",
        env_only=True,
        secret=True,
    ),
    SettingSpec("inbox_dir", _path, "Folder where photos arrive."),
    SettingSpec(
        "completed_dir", _path, "Where a photo goes after it is uploaded or found unchanged."
    ),
    SettingSpec("failed_dir", _path, "Where an unusable file goes (not an image, corrupt...)."),
    SettingSpec("database_url", _database_url, "The ledger: any SQLAlchemy URL."),
    SettingSpec(
        "match_on",
        _choice(MATCH_PROPERTIES),
        "User property a file name is matched against: " + ", ".join(MATCH_PROPERTIES) + ".",
    ),
    SettingSpec(
        "max_bytes",
        _integer(16 * 1024, GRAPH_PHOTO_LIMIT),
        "Largest upload in bytes (Graph's limit is 4194304); larger images are re-encoded.",
    ),
    SettingSpec(
        "max_dimension",
        _integer(48, 10_000),
        "Longest side of the uploaded image in pixels; larger images are downscaled.",
    ),
    SettingSpec(
        "concurrency",
        _integer(1, 64),
        "Parallel uploads (upper bound; backs off on throttling).",
    ),
    SettingSpec(
        "settle_seconds",
        _seconds,
        "A file modified less than this many seconds ago is deferred to a later run.",
    ),
    SettingSpec(
        "move_completed",
        _boolean,
        "false = mirror mode: files stay in the inbox; the ledger alone decides what changed.",
    ),
    SettingSpec(
        "overrides_file",
        _optional_path,
        "CSV 'filename,userPrincipalName' of explicit matches.",
    ),
    SettingSpec(
        "crop",
        _choice(("square", "face"), optional=True),
        "'square' = centre-crop to a square; 'face' = a square framed around the largest "
        "face (needs the face extra).",
    ),
    SettingSpec(
        "require_face",
        _boolean,
        "true = a photo without exactly one usable face is invalid (needs the face extra).",
    ),
    SettingSpec(
        "full_refresh_hours",
        _hours,
        "A run that needs users lists them all when the last full listing is older than "
        "this; catches what delta rounds miss, such as restored users.",
    ),
    SettingSpec(
        "include_external_members",
        _boolean,
        "true = external (B2B) accounts, invited or synchronised from another tenant, may "
        "receive photos.",
    ),
    SettingSpec(
        "retry_attempts",
        _integer(1, 20),
        "Attempts per Graph request before a transient failure is recorded.",
    ),
    SettingSpec(
        "archive",
        _boolean,
        "true = before every photo write, keep the photo it replaces and the bytes sent "
        "(for rollback and verify --fix); 2 more Graph reads per upload.",
    ),
    SettingSpec(
        "archive_dir",
        _optional_path,
        "Folder of the archive (created mode 0700); default: 'archive' beside a SQLite "
        "ledger, else in the user data folder.",
    ),
    SettingSpec("archive_keep", _integer(1, 1000), "Photo versions kept per user in the archive."),
    SettingSpec(
        "prune",
        _boolean,
        "Mirror mode only: a file removed from the inbox removes the photo it set.",
    ),
    SettingSpec(
        "prune_max",
        _integer(0, 1_000_000),
        "A run that would prune more users than this prunes none and exits 1 (an unmounted "
        "share looks like everyone left).",
    ),
    SettingSpec("log_level", _choice(LOG_LEVELS), "Log level: " + ", ".join(LOG_LEVELS) + "."),
    SettingSpec("log_format", _choice(LOG_FORMATS), "Log format: text, or json lines."),
    SettingSpec("log_file", _optional_path, "Write logs to this file instead of stderr."),
)
SPECS_BY_NAME = {spec.name: spec for spec in SETTINGS}


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("config", f"file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("config", f"cannot read {path}: {exc}") from None
    table = document.get("photosync")
    if table is None:
        raise ConfigError("config", f"{path} has no [photosync] table; put settings under it")
    if not isinstance(table, dict):
        raise ConfigError("config", f"{path}: 'photosync' must be a table")
    return table


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> Settings:
    """Merge every source and validate; raises ConfigError naming the first bad setting."""
    return load_settings_with_sources(config_file, env, flags)[0]


# Where a setting's value came from when no file, variable or flag set it (`config show`).
DEFAULT_SOURCE = "default"


def load_settings_with_sources(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """load_settings, and for every setting its source: DEFAULT_SOURCE, the file's path, the
    environment variable or the flag. Relative paths in the file are taken from the file's
    own folder, so a run means the same files whatever its working directory."""
    env = os.environ if env is None else env
    raw: dict[str, tuple[object, str]] = {}
    if config_file is not None:
        for key, value in _read_toml(config_file).items():
            spec = SPECS_BY_NAME.get(key)
            if spec is None:
                raise ConfigError(
                    key,
                    f"unknown setting in {config_file}; known settings are "
                    + ", ".join(s.name for s in SETTINGS if not s.env_only),
                )
            if spec.env_only:
                raise ConfigError(
                    key,
                    f"is a secret and is read only from {spec.env_var}; remove it from the file",
                )
            raw[key] = (value, str(config_file))
    for spec in SETTINGS:
        if spec.env_var in env:
            raw[spec.name] = (env[spec.env_var], spec.env_var)
    for name, value in (flags or {}).items():
        if value is not None:
            raw[name] = (value, SPECS_BY_NAME[name].flag)

    values: dict[str, object] = {}
    for name, (value, source) in raw.items():
        spec = SPECS_BY_NAME[name]
        try:
            values[name] = spec.parse(value)
            if config_file is not None and source == str(config_file):
                values[name] = _from_file_folder(spec, values[name], config_file)
        except ValueError as exc:
            shown = "(hidden)" if spec.secret else _without_password(repr(value))
            raise ConfigError(name, f"expected {exc}, got {shown} (from {source})") from None
    settings = Settings(**values)  # type: ignore[arg-type]
    check_prune(settings)
    check_face_extra(settings)
    sources = {
        spec.name: raw[spec.name][1] if spec.name in raw else DEFAULT_SOURCE for spec in SETTINGS
    }
    return settings, sources


def config_folder(config_file: Path) -> Path:
    """The folder a TOML file's relative paths are taken from: where the file really is
    (symlinks followed), so a link in /etc/photosync to a file kept elsewhere still means
    that file's neighbours."""
    return Path(os.path.realpath(config_file)).parent


def _from_file_folder(spec: SettingSpec, value: object, config_file: Path) -> object:
    """A path-valued setting read from `config_file`, made absolute against its folder."""
    folder = config_folder(config_file)
    if isinstance(value, Path) and spec.parse in (_path, _optional_path):
        return value if value.is_absolute() else folder / value
    if spec.name == "database_url" and isinstance(value, str):
        plain = plain_sqlite_file(value)
        if plain is not None:
            return value if Path(plain).is_absolute() else with_file(str(folder / plain))
        from sqlalchemy.engine import make_url

        url = make_url(value)
        database = url.database or ""
        if url.get_backend_name() != "sqlite" or database in ("", ":memory:"):
            return value
        if database.startswith("file:") or Path(database).is_absolute():
            return value
        return url.set(database=str(folder / database)).render_as_string(hide_password=False)
    return value


def check_prune(settings: Settings) -> None:
    """prune needs mirror mode: with move_completed a file leaves the inbox on every
    upload, and that must never read as "removed"."""
    if settings.prune and settings.move_completed:
        raise ConfigError(
            "prune",
            "needs mirror mode; set move_completed = false (files stay in the inbox) or "
            "prune = false",
        )


def check_face_extra(settings: Settings) -> None:
    """crop = "face" and require_face find faces with OpenCV, an optional extra: without it
    the run must stop here, not fail every photo."""
    if settings.crop == "face":
        wanted = "crop"
    elif settings.require_face:
        wanted = "require_face"
    else:
        return
    from reconciler import faces

    if not faces.available():
        raise ConfigError(
            wanted,
            f"needs face detection, which is not installed; run {faces.INSTALL_HINT}",
        )


def load_overrides(settings: Settings) -> dict[str, str]:
    """The overrides file's file name -> user pairs (README, `overrides_file`). Every run
    reads it, so a broken file is a configuration error (exit 2) even with nothing to do."""
    if settings.overrides_file is None:
        return {}
    try:
        with settings.overrides_file.open(newline="", encoding="utf-8-sig") as handle:
            return parse_overrides(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            "overrides_file", f"cannot read {settings.overrides_file}: {exc}"
        ) from None
    except ValueError as exc:
        raise ConfigError("overrides_file", f"{settings.overrides_file} {exc}") from None


def checked_for_reconcile(settings: Settings) -> dict[str, str]:
    """What every reconcile checks before it opens the ledger, whether or not it will find
    work (the folders, prune, the overrides file); the overrides it read."""
    settings.require_folders()
    check_prune(settings)
    return load_overrides(settings)
