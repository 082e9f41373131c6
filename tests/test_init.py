"""`photosync init [DIR]`: a commented photosync.toml naming every setting, the folders, a
ledger at head, the next steps; never over an existing file."""

from __future__ import annotations

import os
import sqlite3
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import main
from reconciler.config import SETTINGS, load_settings
from reconciler.ledger.db import Ledger
from reconciler.ledger.revision import HEAD_REVISION


def init(*args: str) -> Result:
    return CliRunner().invoke(main, ["init", *args])


def test_init_writes_every_setting_creates_folders_and_a_ledger_at_head(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = init(str(site))
    assert result.exit_code == 0, result.output

    config = site / "photosync.toml"
    text = config.read_text(encoding="utf-8")
    for spec in SETTINGS:  # every setting photosync knows, named in the file
        assert spec.name in text, spec.name
        assert spec.help in text, spec.name
    assert "client_secret = " not in text  # a secret is never offered a line in the file
    tomllib.loads(text)  # valid TOML, comments and all

    settings = load_settings(config, env={})
    assert settings.inbox_dir == site / "InProgress"
    assert settings.completed_dir == site / "Completed"
    assert settings.failed_dir == site / "Failed"
    for folder in (settings.inbox_dir, settings.completed_dir, settings.failed_dir):
        assert folder.is_dir()

    ledger_file = site / "photosync.db"
    assert stat.S_IMODE(ledger_file.stat().st_mode) == 0o600
    ledger = Ledger(settings.database_url, read_only=True)
    try:
        assert ledger.revision() == HEAD_REVISION
    finally:
        ledger.dispose()

    assert "Next steps:" in result.output
    assert "User.Read.All" in result.output and "ProfilePhoto.ReadWrite.All" in result.output
    assert "appRoleAssignments" in result.output  # the grant commands themselves
    assert f"photosync --config {config} doctor" in result.output


def test_every_commented_default_is_a_value_photosync_accepts(tmp_path: Path) -> None:
    """Uncommenting any line of the written file gives a file that still loads."""
    assert init(str(tmp_path)).exit_code == 0
    config = tmp_path / "photosync.toml"
    names = tuple(f"# {spec.name} = " for spec in SETTINGS if not spec.env_only)
    lines = config.read_text(encoding="utf-8").splitlines()
    uncommented = [line[2:] if line.startswith(names) else line for line in lines]
    assert len(uncommented) == len(lines)
    set_lines = {line.split(" = ")[0] for line in uncommented if not line.startswith("#")}
    assert set_lines - {"", "[photosync]"} == {s.name for s in SETTINGS if not s.env_only}
    config.write_text("\n".join(uncommented) + "\n", encoding="utf-8")
    load_settings(config, env={})


def test_init_never_overwrites_and_creates_nothing_when_it_refuses(tmp_path: Path) -> None:
    config = tmp_path / "photosync.toml"
    config.write_text("[photosync]\n# mine\n", encoding="utf-8")
    result = init(str(tmp_path))
    assert result.exit_code == 2
    assert str(config) in result.stderr and "never overwritten" in result.stderr
    assert result.stderr.count("\n") == 1
    assert config.read_text(encoding="utf-8") == "[photosync]\n# mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photosync.toml"]


def test_chosen_folders_are_written_as_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = init(
        "conf",
        "--inbox-dir",
        "photos/in",
        "--database-url",
        f"sqlite:///{tmp_path / 'state' / 'ledger.db'}",
    )
    assert result.exit_code == 0, result.output
    settings = load_settings(tmp_path / "conf" / "photosync.toml", env={})
    assert settings.inbox_dir == tmp_path / "photos" / "in"  # from the working directory
    assert settings.inbox_dir.is_dir()
    assert settings.completed_dir == tmp_path / "conf" / "Completed"
    with sqlite3.connect(tmp_path / "state" / "ledger.db") as connection:
        assert connection.execute("select version_num from alembic_version").fetchone()


def test_a_folder_that_cannot_be_created_is_one_line_and_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    result = init(str(tmp_path / "conf"), "--inbox-dir", str(blocker / "inbox"))
    assert result.exit_code == 2
    assert str(blocker / "inbox") in result.stderr
    assert result.stderr.count("\n") == 1


def test_init_without_a_folder_uses_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert init().exit_code == 0
    assert (tmp_path / "photosync.toml").is_file()
    assert (tmp_path / "InProgress").is_dir()
    assert os.access(tmp_path / "photosync.db", os.R_OK)


def test_a_bad_value_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    result = init(str(tmp_path / "conf"), "--database-url", "not a url")
    assert result.exit_code == 2
    assert "database_url" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "conf").exists()


def test_a_ledger_that_cannot_be_set_up_says_how_to_finish(tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.db"
    stranger.write_bytes(b"this is not a SQLite database, just bytes" * 100)
    stranger.chmod(0o600)
    result = init(str(tmp_path / "conf"), "--database-url", f"sqlite:///{stranger}")
    assert result.exit_code == 2
    config = tmp_path / "conf" / "photosync.toml"
    assert config.is_file()
    assert f"photosync --config {config} db upgrade" in result.stderr
    assert result.stderr.count("\n") == 1
