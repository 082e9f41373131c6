"""`photosync doctor`: is this machine ready to run photosync? One line per check, each
with its fix.

Doctor only looks: it creates no folder and no ledger (the ledger is opened read-only, and
only when it exists), and it never prints a token. The checks, in order: the config file and
where it came from; the three folders; the ledger; on Azure Arc, the agent's key file; the
credential and the app roles in its token; Graph and one user; the tenant's photo update
setting. A check passes (✓), warns (!, the exit code stays 0) or fails (✗, exit 1).

The decisions are pure functions over facts gathered at the edges (`gather_*`), so every
branch is tested without a broken machine.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import requests
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from reconciler.config import Settings
from reconciler.discovery import ConfigChoice
from reconciler.errors import AuthError, ConfigError, GraphError, LedgerError
from reconciler.graph import auth
from reconciler.graph.client import GraphClient
from reconciler.ledger.db import Ledger, sqlite_path

REQUIRED_ROLES = ("User.Read.All", "ProfilePhoto.ReadWrite.All")
GRANT_FIX = (
    "grant the identity the missing Microsoft Graph app role(s) with "
    "deploy/grant-graph-roles.sh (az CLI) or deploy/Grant-GraphRoles.ps1 (README, 'Setup'); "
    "a managed identity's tokens keep their old roles until they expire (up to 24 hours)"
)
# Default endpoint of the Azure Connected Machine agent, used when IDENTITY_ENDPOINT is unset.
ARC_DEFAULT_ENDPOINT = "http://localhost:40342/metadata/identity/oauth2/token"
DOCTOR_ATTEMPTS = 2  # a check should answer in seconds, not wait out a run's retry budget


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


MARKS = {Status.PASS: "✓", Status.WARN: "!", Status.FAIL: "✗"}
# For an output that cannot hold ✓ and ✗: Windows writes redirected output (a scheduled
# task's log file) in the ANSI code page unless Python runs in UTF-8 mode.
ASCII_MARKS = {Status.PASS: "ok", Status.WARN: "!", Status.FAIL: "FAIL"}


def marks_for(encoding: str | None) -> dict[Status, str]:
    try:
        "".join(MARKS.values()).encode(encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII_MARKS
    return MARKS


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


def exit_code(checks: list[Check]) -> int:
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


def render_lines(checks: list[Check], marks: Mapping[Status, str] = MARKS) -> list[str]:
    lines = []
    for check in checks:
        line = f"{marks[check.status]} {check.name}: {check.detail}"
        if check.fix and check.status is not Status.PASS:
            line += f" — fix: {check.fix}"
        lines.append(" ".join(line.split()))  # one line each, whatever a message held
    return lines


def render_json(checks: list[Check]) -> dict[str, Any]:
    return {"ok": exit_code(checks) == 0, "checks": [asdict(c) for c in checks]}


# --- config


def config_check(choice: ConfigChoice) -> Check:
    if choice.path is None:
        return Check(
            "config",
            Status.WARN,
            f"{choice.describe()}; settings come from defaults, PHOTOSYNC_* variables and flags",
            "photosync init DIR writes one; put it where photosync looks, or pass --config",
        )
    return Check("config", Status.PASS, choice.describe())


# --- folders


@dataclass(frozen=True)
class FolderFacts:
    path: Path
    exists: bool
    is_dir: bool
    writable: bool  # may create, rename and delete entries (write and search permission)
    device: int | None


def gather_folder(path: Path) -> FolderFacts:
    try:
        info = path.stat()
    except OSError:
        return FolderFacts(path, False, False, False, None)
    is_dir = path.is_dir()
    writable = is_dir and os.access(path, os.R_OK | os.W_OK | os.X_OK)
    return FolderFacts(path, True, is_dir, writable, info.st_dev)


def folder_check(name: str, facts: FolderFacts) -> Check:
    if not facts.exists:
        return Check(
            name,
            Status.FAIL,
            f"{facts.path} does not exist",
            f"create it (mkdir -p {facts.path}, or photosync init) for the account that runs "
            "photosync, or point the setting at the right folder",
        )
    if not facts.is_dir:
        return Check(name, Status.FAIL, f"{facts.path} is not a folder", f"point {name} at one")
    if not facts.writable:
        return Check(
            name,
            Status.FAIL,
            f"{facts.path} is not writable by this account",
            f"give the account that runs photosync read and write access to {facts.path}",
        )
    return Check(name, Status.PASS, f"{facts.path} exists and is writable")


def same_file_system_check(inbox: FolderFacts, completed: FolderFacts) -> Check | None:
    """A move across file systems is a copy and a delete: slower, and not atomic."""
    if inbox.device is None or completed.device is None:
        return None  # a missing folder has its own ✗ already
    if inbox.device != completed.device:
        return Check(
            "file system",
            Status.WARN,
            f"completed_dir {completed.path} is on another file system than inbox_dir "
            f"{inbox.path}: every move is a copy and a delete",
            "put completed_dir on the inbox's file system",
        )
    return Check("file system", Status.PASS, "completed_dir is on the inbox's file system")


def folder_checks(settings: Settings, gather: Callable[[Path], FolderFacts]) -> list[Check]:
    inbox = gather(settings.inbox_dir)
    completed = gather(settings.completed_dir)
    checks = [folder_check("inbox_dir", inbox)]
    if settings.move_completed:
        checks.append(folder_check("completed_dir", completed))
    checks.append(folder_check("failed_dir", gather(settings.failed_dir)))
    if settings.move_completed:
        same = same_file_system_check(inbox, completed)
        if same is not None:
            checks.append(same)
    return checks


# --- ledger


def ledger_check(database_url: str) -> Check:
    """Reachable, at this photosync's head revision (not behind, not newer), and a SQLite
    file readable by its owner only. Opens an existing ledger read-only; never creates one."""
    try:
        ledger = Ledger(database_url, read_only=True)
    except ConfigError as exc:
        return Check("ledger", Status.FAIL, exc.problem, "photosync db upgrade creates it")
    except LedgerError as exc:
        return Check("ledger", Status.FAIL, str(exc), "check database_url and that it is up")
    try:
        ledger.require_usable(migrating=False)
        warnings = ledger.file_warnings()
        where = ledger.describe()
    except ConfigError as exc:  # LedgerUnusable: its message says what to do
        return Check("ledger", Status.FAIL, exc.problem)
    except LedgerError as exc:
        return Check("ledger", Status.FAIL, str(exc), "check database_url and that it is up")
    finally:
        ledger.dispose()
    if warnings:
        return Check("ledger", Status.FAIL, "; ".join(warnings))
    return Check("ledger", Status.PASS, f"{where} is at the current revision")


def ledger_missing(database_url: str) -> bool:
    """A SQLite ledger whose file does not exist yet (read-only opening would say so too,
    but doctor's fix is different: the first run or `init` creates it)."""
    try:
        path = sqlite_path(make_url(database_url))
    except (ArgumentError, ValueError):  # an unparsable URL: ledger_check names it
        return False
    return path is not None and not path.exists()


# --- token and roles


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, decoded WITHOUT verifying its signature, or None if `token` is
    not a JWT. Not verifying is deliberate: the token has just come from the identity
    endpoint, doctor only reports what it claims, and Graph verifies it on every request;
    checking the signature here would need the tenant's signing keys and prove nothing more."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return payload if isinstance(payload, dict) else None


def roles_check(claims: dict[str, Any] | None) -> Check:
    if claims is None:
        return Check(
            "app roles",
            Status.WARN,
            "could not read the token's roles (it is not a JWT)",
            "check the grants in the Entra admin centre: Enterprise applications > the "
            "identity > Permissions",
        )
    roles = claims.get("roles")
    held = {str(r) for r in roles} if isinstance(roles, list) else set()
    missing = [role for role in REQUIRED_ROLES if role not in held]
    if missing:
        return Check(
            "app roles",
            Status.FAIL,
            f"the token lacks {' and '.join(missing)}",
            GRANT_FIX,
        )
    return Check("app roles", Status.PASS, f"the token holds {' and '.join(REQUIRED_ROLES)}")


# --- Graph


def graph_check(read_one_user: Callable[[], list[Any]], graph_url: str) -> Check:
    try:
        users = read_one_user()
    except (AuthError, GraphError) as exc:
        return Check(
            "graph",
            Status.FAIL,
            f"cannot read users from {graph_url}: {exc}",
            "check graph_url, the network path (proxy, firewall) and the User.Read.All grant",
        )
    if not users:
        return Check(
            "graph",
            Status.WARN,
            f"{graph_url} answered but lists no users",
            "check that graph_url and the identity belong to the right tenant",
        )
    return Check("graph", Status.PASS, f"{graph_url} answered and one user could be read")


def photo_settings_check(read: Callable[[], dict[str, Any]]) -> Check:
    name = "photo update settings"
    try:
        payload = read()
    except GraphError as exc:
        if exc.status in (401, 403):
            detail = (
                "could not check: reading photoUpdateSettings needs PeopleSettings.Read.All, "
                "which photosync itself does not need"
            )
        else:
            detail = f"could not check: {exc}"
        return Check(
            name,
            Status.WARN,
            detail,
            "an admin can see it in the Microsoft 365 admin centre (Settings > Org settings > "
            "People) or with GET /admin/people/photoUpdateSettings",
        )
    source = str(payload.get("source") or "")
    if source.lower() != "cloud":
        return Check(
            name,
            Status.WARN,
            f"cloud photo updates are disabled (source is {source or 'unset'}): Graph will "
            "refuse every upload",
            "an admin sets photoUpdateSettings source to 'cloud' (takes up to 24 hours)",
        )
    return Check(name, Status.PASS, "cloud photo updates are allowed (source is cloud)")


# --- Azure Arc


def arc_key_check(endpoint: str, resource: str, read: Callable[[str], bytes]) -> Check:
    """Ask the Arc agent for a challenge, as MSAL does, and read the key file it names."""
    name = "azure arc"
    try:
        answer = requests.get(
            endpoint,
            params={"api-version": "2020-06-01", "resource": resource},
            headers={"Metadata": "true"},
            timeout=5,
        )
    except requests.RequestException as exc:
        return Check(
            name,
            Status.FAIL,
            f"the Arc agent at {endpoint} did not answer ({type(exc).__name__})",
            "check that the Azure Connected Machine agent (himds) is running",
        )
    challenge = answer.headers.get("WWW-Authenticate", "")
    scheme, _, realm = challenge.partition(" ")
    key_file = realm.removeprefix("realm=").strip()
    if answer.status_code != 401 or scheme.lower() != "basic" or not key_file:
        return Check(
            name,
            Status.FAIL,
            f"the Arc agent at {endpoint} sent no key-file challenge (HTTP {answer.status_code})",
            "check that the Azure Connected Machine agent is up to date and connected",
        )
    try:
        read(key_file)
    except OSError:
        return Check(
            name,
            Status.FAIL,
            f"this account cannot read the agent's key file {key_file}",
            auth.ARC_KEY_UNREADABLE,
        )
    return Check(name, Status.PASS, "this account can read the Arc agent's key files")


def _read_bytes(path: str) -> bytes:
    return Path(path).read_bytes()


# --- the whole run


def run_checks(settings: Settings, choice: ConfigChoice, env: Mapping[str, str]) -> list[Check]:
    checks = [config_check(choice)]
    checks += folder_checks(settings, gather_folder)
    if ledger_missing(settings.database_url):
        checks.append(
            Check(
                "ledger",
                Status.FAIL,
                f"no ledger at {sqlite_path(make_url(settings.database_url))}",
                "photosync db upgrade (or photosync init) creates it; so does the first run",
            )
        )
    else:
        checks.append(ledger_check(settings.database_url))
    # The agent's install path is how MSAL itself recognises an Arc machine (auth.py).
    himds_installed = any(p.exists() for p in auth._HIMDS_PATHS)
    if settings.auth == "managed-identity" and auth.is_azure_arc(env, himds_installed):
        endpoint = env.get("IDENTITY_ENDPOINT") or ARC_DEFAULT_ENDPOINT
        checks.append(arc_key_check(endpoint, settings.graph_url, _read_bytes))
    checks += _identity_and_graph_checks(settings)
    return checks


@contextmanager
def _graph_warnings_muted() -> Iterator[None]:
    """The client logs each failed request as a warning with a run's advice (a 403 reads as a
    missing User.Read.All); doctor reports the failure itself, with the advice that fits the
    check. Asked-for info or debug logging is left alone."""
    logger = logging.getLogger("reconciler.graph")
    if logger.getEffectiveLevel() < logging.WARNING:
        yield
        return
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _identity_and_graph_checks(settings: Settings) -> list[Check]:
    try:
        credential = auth.build_credential(
            settings.auth,
            graph_url=settings.graph_url,
            client_id=settings.client_id,
            tenant_id=settings.tenant_id,
            certificate_path=str(settings.certificate_path) if settings.certificate_path else None,
            client_secret=settings.client_secret,
        )
    except ConfigError as exc:
        return [Check("credential", Status.FAIL, str(exc), "set the settings it names")]
    tokens = auth.TokenProvider(
        lambda: credential, mode=settings.auth, scope=auth.token_scope(settings.graph_url)
    )
    try:
        token = tokens.token()
    except AuthError as exc:
        tokens.close()
        return [
            Check("credential", Status.FAIL, str(exc)),
            Check("graph", Status.FAIL, "not checked: no token", "fix the credential first"),
        ]
    checks = [
        Check("credential", Status.PASS, f"auth '{settings.auth}' yields a token"),
        roles_check(jwt_claims(token)),
    ]
    client = GraphClient(
        settings.graph_url,
        tokens,
        concurrency=1,
        max_attempts=min(settings.retry_attempts, DOCTOR_ATTEMPTS),
    )
    with client, _graph_warnings_muted():
        checks.append(
            graph_check(
                lambda: next(iter(client.list_users(("id", "displayName"), page_size=1)), []),
                settings.graph_url,
            )
        )
        checks.append(photo_settings_check(client.photo_update_settings))
    tokens.close()
    return checks
