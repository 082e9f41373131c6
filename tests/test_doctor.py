"""`photosync doctor` against the emulator, a real ledger and real folders: each check passes
on a ready machine and is made to fail once; doctor creates nothing and prints no token."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reconciler import app
from reconciler.cli import main
from reconciler.config import load_settings
from reconciler.doctor import (
    ASCII_MARKS,
    MARKS,
    FolderFacts,
    Status,
    folder_check,
    marks_for,
    roles_check,
)
from reconciler.emulator import GraphEmulator, identity_environment

ALL_ROLES = ("User.Read.All", "ProfilePhoto.ReadWrite.All", "PeopleSettings.Read.All")


def write_site(root: Path, graph_url: str, *, create: bool = True) -> Path:
    """A photosync.toml under `root` with its folders and ledger (or none of them)."""
    config = root / "photosync.toml"
    config.write_text(
        "[photosync]\n"
        f'graph_url = "{graph_url}"\n'
        'inbox_dir = "in"\ncompleted_dir = "done"\nfailed_dir = "failed"\n'
        'database_url = "sqlite:///photosync.db"\n',
        encoding="utf-8",
    )
    if create:
        for name in ("in", "done", "failed"):
            (root / name).mkdir()
        app.upgrade_database(load_settings(config, env={}))
    return config


@pytest.fixture
def site(tmp_path: Path, emulator: GraphEmulator) -> Path:
    emulator.tenant.add_user("Ada Lovelace")
    return write_site(tmp_path, emulator.url)


def doctor(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), "doctor", *args])


def statuses(result: Result) -> dict[str, dict[str, str]]:
    report = json.loads(result.stdout)
    return {check["name"]: check for check in report["checks"]}


def test_a_ready_machine_passes_every_check(site: Path, emulator: GraphEmulator) -> None:
    emulator.faults.token_roles = ALL_ROLES
    result = doctor(site)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(line.startswith("✓ ") for line in lines), result.stdout
    names = [line.split(":")[0][2:] for line in lines]
    assert names == [
        "config",
        "inbox_dir",
        "completed_dir",
        "failed_dir",
        "file system",
        "ledger",
        "credential",
        "app roles",
        "graph",
        "photo update settings",
    ]
    assert f"✓ config: {site} (from --config)" in lines
    assert emulator.issued_tokens  # a token was fetched...
    for token in emulator.issued_tokens:  # ...and never shown
        assert token not in result.output
        assert token.split(".")[1] not in result.output
    assert os.environ["IDENTITY_HEADER"] not in result.output


def test_json_says_ok_and_lists_every_check(site: Path, emulator: GraphEmulator) -> None:
    emulator.faults.token_roles = ALL_ROLES
    result = doctor(site, "--json")
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {c["status"] for c in report["checks"]} == {"pass"}


def test_without_people_settings_the_photo_setting_could_not_be_checked(site: Path) -> None:
    result = doctor(site, "--json")  # the emulator's default roles: photosync's two only
    check = statuses(result)["photo update settings"]
    assert check["status"] == "warn"
    assert "could not check" in check["detail"] and "PeopleSettings.Read.All" in check["detail"]
    assert result.exit_code == 0  # a warning does not fail the machine
    assert "WARNING" not in result.stderr  # the client's run advice stays out of it


def test_cloud_photo_updates_disabled_is_a_warning(site: Path, emulator: GraphEmulator) -> None:
    emulator.faults.token_roles = ALL_ROLES
    emulator.faults.photo_update_source = "onPremises"
    result = doctor(site)
    line = next(x for x in result.stdout.splitlines() if "photo update settings" in x)
    assert line.startswith("! ")
    assert "cloud photo updates are disabled (source is onPremises)" in line
    assert "fix: " in line


def test_a_missing_app_role_is_named(site: Path, emulator: GraphEmulator) -> None:
    emulator.faults.token_roles = ("User.Read.All",)
    result = doctor(site)
    assert result.exit_code == 1
    line = next(x for x in result.stdout.splitlines() if x.startswith("✗ app roles"))
    assert "lacks ProfilePhoto.ReadWrite.All" in line
    assert "grant-graph-roles.sh" in line


def test_no_token_fails_the_credential_and_skips_graph(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-emulators-header")
    result = doctor(site, "--json")
    assert result.exit_code == 1
    checks = statuses(result)
    assert checks["credential"]["status"] == "fail"
    assert "managed-identity" in checks["credential"]["detail"]
    assert checks["graph"]["status"] == "fail"
    assert "not checked" in checks["graph"]["detail"]
    assert "not-the-emulators-header" not in result.output


def test_graph_failing_is_a_failed_check(site: Path, emulator: GraphEmulator) -> None:
    emulator.faults.random_503_rate = 1.0
    emulator.faults.fractional_retry_after = True
    result = doctor(site, "--json")
    assert result.exit_code == 1
    check = statuses(result)["graph"]
    assert check["status"] == "fail"
    assert "cannot read users" in check["detail"] and "503" in check["detail"]


def test_doctor_creates_nothing_and_names_each_missing_thing(
    tmp_path: Path, emulator: GraphEmulator
) -> None:
    config = write_site(tmp_path, emulator.url, create=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = doctor(config, "--json")
    assert result.exit_code == 1
    checks = statuses(result)
    for name, folder in (("inbox_dir", "in"), ("completed_dir", "done"), ("failed_dir", "failed")):
        assert checks[name]["status"] == "fail"
        assert f"{tmp_path / folder} does not exist" == checks[name]["detail"]
        assert f"mkdir -p {tmp_path / folder}" in checks[name]["fix"]
    assert checks["ledger"]["status"] == "fail"
    assert str(tmp_path / "photosync.db") in checks["ledger"]["detail"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no folder, no ledger


def test_a_file_where_a_folder_should_be(site: Path) -> None:
    shutil.rmtree(site.parent / "failed")
    (site.parent / "failed").write_text("oops", encoding="utf-8")
    check = statuses(doctor(site, "--json"))["failed_dir"]
    assert check["status"] == "fail"
    assert check["detail"] == f"{site.parent / 'failed'} is not a folder"


def test_a_folder_this_account_cannot_write_is_a_failure() -> None:
    facts = FolderFacts(Path("/srv/photos/in"), exists=True, is_dir=True, writable=False, device=1)
    check = folder_check("inbox_dir", facts)
    assert check.status is Status.FAIL
    assert check.detail == "/srv/photos/in is not writable by this account"


@pytest.fixture
def other_file_system(tmp_path: Path) -> Iterator[Path]:
    """A folder on another file system than tmp_path (tmpfs /dev/shm), if this machine has one."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to put completed_dir on")
    folder = Path(tempfile.mkdtemp(dir=shm, prefix="photosync-doctor-"))
    yield folder
    shutil.rmtree(folder)


def test_completed_dir_on_another_file_system_is_a_warning(
    site: Path, other_file_system: Path
) -> None:
    result = doctor(site, "--completed-dir", str(other_file_system), "--json")
    check = statuses(result)["file system"]
    assert check["status"] == "warn"
    assert "another file system" in check["detail"]


def test_a_ledger_readable_by_others_fails_with_the_chmod(site: Path) -> None:
    ledger = site.parent / "photosync.db"
    ledger.chmod(0o644)
    check = statuses(doctor(site, "--json"))["ledger"]
    assert check["status"] == "fail"
    assert f"chmod 600 {ledger}" in check["detail"]


def test_a_ledger_newer_than_this_photosync_fails(site: Path) -> None:
    with sqlite3.connect(site.parent / "photosync.db") as connection:
        connection.execute("update alembic_version set version_num = '9999_from_the_future'")
    check = statuses(doctor(site, "--json"))["ledger"]
    assert check["status"] == "fail"
    assert "newer than this photosync" in check["detail"] and "upgrade photosync" in check["detail"]


def test_a_named_config_that_does_not_exist_stops_doctor_with_exit_2(tmp_path: Path) -> None:
    result = doctor(tmp_path / "missing.toml")
    assert result.exit_code == 2
    assert str(tmp_path / "missing.toml") in result.stderr


def test_no_config_file_anywhere_is_a_warning(
    tmp_path: Path, emulator: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHOTOSYNC_SYSCONFDIR", str(tmp_path / "etc"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = CliRunner().invoke(main, ["doctor", "--graph-url", emulator.url, "--json"])
    check = statuses(result)["config"]
    assert check["status"] == "warn"
    assert str(tmp_path / "etc" / "photosync" / "photosync.toml") in check["detail"]


def test_roles_of_a_token_that_is_not_a_jwt_cannot_be_read() -> None:
    assert roles_check(None).status is Status.WARN


def test_marks_fall_back_to_ascii_where_the_output_cannot_hold_them() -> None:
    assert marks_for("utf-8") == MARKS
    assert marks_for("cp1252") == ASCII_MARKS


# --- Azure Arc: the agent's key file. MSAL reads key files only under the agent's own folder,
# so these tests use it (created and removed by the emulator), as tests/test_auth.py does.

ARC_TOKENS = Path("/var/opt/azcmagent/tokens")


def needs_arc_folder() -> None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the Arc flow needs root to write /var/opt/azcmagent/tokens")
    if ARC_TOKENS.parent.exists():
        pytest.skip("an Azure Arc agent's folder is on this machine; leaving it alone")


def arc_environment(emu: GraphEmulator) -> dict[str, str]:
    env = identity_environment(os.environ, emu.arc_env())
    env.pop("IDENTITY_HEADER", None)
    return env


def test_on_arc_a_readable_key_file_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_arc_folder()
    with GraphEmulator() as emu:
        emu.tenant.add_user("Ada Lovelace")
        monkeypatch.delenv("IDENTITY_HEADER", raising=False)
        for name, value in arc_environment(emu).items():
            monkeypatch.setenv(name, value)
        checks = statuses(doctor(write_site(tmp_path, emu.url), "--json"))
    assert checks["azure arc"]["status"] == "pass"
    assert checks["credential"]["status"] == "pass"
    assert not ARC_TOKENS.parent.exists()  # the emulator took its folders with it


def test_on_arc_a_key_file_this_account_cannot_read_fails_with_the_fix(tmp_path: Path) -> None:
    needs_arc_folder()
    # The agent's folder as a real one is: its owner and group (himds) only. Without the
    # capabilities that let root ignore file permissions, root is shut out like a service
    # account outside the himds group.
    created = [d for d in (Path("/var/opt"), ARC_TOKENS.parent, ARC_TOKENS) if not d.exists()]
    for folder in created:
        folder.mkdir()
    os.chown(ARC_TOKENS, 65534, 65534)
    ARC_TOKENS.chmod(0o770)
    try:
        with GraphEmulator() as emu:
            emu.tenant.add_user("Ada Lovelace")
            config = write_site(tmp_path, emu.url)
            done = subprocess.run(
                [
                    "setpriv",
                    "--bounding-set",
                    "-dac_override,-dac_read_search",
                    sys.executable,
                    "-m",
                    "reconciler",
                    "--config",
                    str(config),
                    "doctor",
                    "--json",
                ],
                env=arc_environment(emu),
                capture_output=True,
                text=True,
                timeout=120,
            )
    finally:
        for key in ARC_TOKENS.glob("*.key"):
            key.unlink()
        for folder in reversed(created):
            folder.rmdir()
    assert done.returncode == 1, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["azure arc"]["status"] == "fail"
    assert "cannot read the agent's key file" in checks["azure arc"]["detail"]
    assert "himds group" in checks["azure arc"]["fix"]
    assert checks["credential"]["status"] == "fail"
