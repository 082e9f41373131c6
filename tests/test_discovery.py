"""Where the config file comes from (--config after or before the command, PHOTOSYNC_CONFIG,
the system-wide file, the user's file), relative paths in it, and `photosync config show`.

The system-wide rung is pointed at a temporary folder with PHOTOSYNC_SYSCONFDIR and the
user rung with XDG_CONFIG_HOME, so no test writes to /etc or to a real home."""

from __future__ import annotations

import json
import os
from pathlib import Path, PureWindowsPath

import pytest
from click.testing import CliRunner, Result

from reconciler.cli import main
from reconciler.config import load_settings
from reconciler.discovery import CONFIG_ENV, SYSCONFDIR_ENV, search_path, system_config_file


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An environment with no PHOTOSYNC_* variable, the system folder and the user config
    folder both under tmp_path (empty), and a working directory of its own."""
    for name in list(os.environ):
        if name.startswith("PHOTOSYNC_"):
            monkeypatch.delenv(name)
    etc, xdg, cwd = tmp_path / "etc", tmp_path / "xdg", tmp_path / "cwd"
    for folder in (etc, xdg, cwd):
        folder.mkdir()
    monkeypatch.setenv(SYSCONFDIR_ENV, str(etc))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.chdir(cwd)
    return {
        "system": etc / "photosync" / "photosync.toml",
        "user": xdg / "photosync" / "photosync.toml",
        "root": tmp_path,
    }


def write_config(path: Path, inbox: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[photosync]\ninbox_dir = "{inbox}"\n', encoding="utf-8")
    return path


def show(*args: str) -> dict[str, object]:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    shown: dict[str, object] = json.loads(result.stdout)
    return shown


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def inbox_of(shown: dict[str, object]) -> object:
    settings = shown["settings"]
    assert isinstance(settings, dict)
    return settings["inbox_dir"]


def test_config_after_the_command_name(places: dict[str, Path]) -> None:
    config = write_config(places["root"] / "a.toml", "/from/flag")
    shown = show("config", "show", "--json", "--config", str(config))
    assert shown["config_file"] == str(config)
    assert shown["config_source"] == "--config"
    assert inbox_of(shown) == {"value": "/from/flag", "source": str(config)}


def test_config_before_the_command_name(places: dict[str, Path]) -> None:
    config = write_config(places["root"] / "a.toml", "/from/group")
    shown = show("--config", str(config), "config", "show", "--json")
    assert shown["config_file"] == str(config)
    assert inbox_of(shown) == {"value": "/from/group", "source": str(config)}


def test_config_after_the_command_wins_over_one_before_it(places: dict[str, Path]) -> None:
    before = write_config(places["root"] / "before.toml", "/before")
    after = write_config(places["root"] / "after.toml", "/after")
    shown = show("--config", str(before), "config", "show", "--json", "--config", str(after))
    assert shown["config_file"] == str(after)


def test_the_flag_beats_the_variable_which_beats_the_files(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(places["system"], "/system")
    write_config(places["user"], "/user")
    named = write_config(places["root"] / "named.toml", "/named")
    monkeypatch.setenv(CONFIG_ENV, str(named))
    shown = show("config", "show", "--json")
    assert (shown["config_file"], shown["config_source"]) == (str(named), CONFIG_ENV)
    assert inbox_of(shown) == {"value": "/named", "source": str(named)}
    flag = write_config(places["root"] / "flag.toml", "/flag")
    assert show("config", "show", "--json", "--config", str(flag))["config_file"] == str(flag)


def test_the_system_file_comes_before_the_users(places: dict[str, Path]) -> None:
    write_config(places["system"], "/system")
    write_config(places["user"], "/user")
    shown = show("config", "show", "--json")
    assert shown["config_file"] == str(places["system"])
    assert shown["config_source"] == f"found at {places['system']}"
    assert inbox_of(shown) == {"value": "/system", "source": str(places["system"])}


def test_the_users_file_when_there_is_no_system_file(places: dict[str, Path]) -> None:
    write_config(places["user"], "/user")
    shown = show("config", "show", "--json")
    assert shown["config_file"] == str(places["user"])
    assert inbox_of(shown) == {"value": "/user", "source": str(places["user"])}


def test_no_file_anywhere_means_defaults_and_says_where_it_looked(
    places: dict[str, Path],
) -> None:
    shown = show("config", "show", "--json")
    assert shown["config_file"] is None
    assert inbox_of(shown) == {"value": "/Photos/InProgress", "source": "default"}
    text = invoke("config", "show").output
    assert f"no config file (looked at {places['system']}, {places['user']})" in text


def test_a_named_file_that_does_not_exist_is_one_line_and_exit_2(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = places["root"] / "nowhere" / "photosync.toml"
    monkeypatch.setenv(CONFIG_ENV, str(missing))
    result = invoke("status")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert str(missing) in result.stderr and CONFIG_ENV in result.stderr


def test_a_run_command_uses_the_discovered_file_and_its_folder(places: dict[str, Path]) -> None:
    places["system"].parent.mkdir(parents=True)
    places["system"].write_text(
        '[photosync]\ndatabase_url = "sqlite:///state/ledger.db"\n', encoding="utf-8"
    )
    result = invoke("db", "upgrade")  # from a working directory elsewhere
    assert result.exit_code == 0, result.output
    ledger = places["system"].parent / "state" / "ledger.db"
    assert ledger.is_file()
    assert str(ledger) in result.output


def test_windows_looks_under_programdata_then_the_user_folder() -> None:
    env = {"ProgramData": r"D:\Data"}
    system = system_config_file(env, "nt")
    assert system == PureWindowsPath(r"D:\Data\photosync\photosync.toml")
    assert search_path(env, "nt")[0] == system
    assert search_path(env, "nt")[1].name == "photosync.toml"


# --- relative paths


def test_relative_paths_in_a_file_are_taken_from_its_folder(places: dict[str, Path]) -> None:
    folder = places["root"] / "conf"
    folder.mkdir()
    config = folder / "photosync.toml"
    config.write_text(
        "[photosync]\n"
        'inbox_dir = "photos/in"\n'
        'completed_dir = "/abs/done"\n'
        'overrides_file = "overrides.csv"\n'
        'database_url = "sqlite:///data/ledger.db"\n',
        encoding="utf-8",
    )
    settings = load_settings(config, env={})  # the working directory is places' own cwd
    assert settings.inbox_dir == folder / "photos" / "in"
    assert settings.completed_dir == Path("/abs/done")
    assert settings.overrides_file == folder / "overrides.csv"
    assert settings.database_url == f"sqlite:///{folder / 'data' / 'ledger.db'}"


def test_relative_paths_from_variables_stay_relative_to_the_working_directory(
    places: dict[str, Path],
) -> None:
    config = write_config(places["root"] / "conf" / "photosync.toml", "in")
    settings = load_settings(config, env={"PHOTOSYNC_INBOX_DIR": "elsewhere"})
    assert settings.inbox_dir == Path("elsewhere")


def test_a_linked_file_means_the_real_files_neighbours(places: dict[str, Path]) -> None:
    real = write_config(places["root"] / "kept" / "photosync.toml", "in")
    link = places["root"] / "link.toml"
    link.symlink_to(real)
    assert load_settings(link, env={}).inbox_dir == real.parent / "in"


def test_memory_and_absolute_sqlite_urls_are_left_alone(places: dict[str, Path]) -> None:
    config = places["root"] / "photosync.toml"
    for url in ("sqlite://", "sqlite:////var/lib/photosync/photosync.db"):
        config.write_text(f'[photosync]\ndatabase_url = "{url}"\n', encoding="utf-8")
        assert load_settings(config, env={}).database_url == url


# --- config show


def test_config_show_names_every_source_and_never_prints_a_secret(
    places: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(places["root"] / "photosync.toml", "in")
    monkeypatch.setenv("PHOTOSYNC_CLIENT_SECRET", "s3cret-Value-42")
    monkeypatch.setenv(
        "PHOTOSYNC_DATABASE_URL", "postgresql+psycopg://photosync:pa55-Word@db.example/photos"
    )
    args = ("config", "show", "--config", str(config), "--concurrency", "2")
    text = invoke(*args)
    shown = show(*args, "--json")
    for output in (text.output, json.dumps(shown)):
        assert "s3cret-Value-42" not in output
        assert "pa55-Word" not in output
    settings = shown["settings"]
    assert isinstance(settings, dict)
    assert settings["client_secret"] == {
        "value": "(set, hidden)",
        "source": "PHOTOSYNC_CLIENT_SECRET",
    }
    assert settings["database_url"]["source"] == "PHOTOSYNC_DATABASE_URL"
    assert "db.example" in settings["database_url"]["value"]
    assert settings["concurrency"] == {"value": 2, "source": "--concurrency"}
    assert settings["inbox_dir"] == {"value": str(config.parent / "in"), "source": str(config)}
    assert settings["match_on"] == {"value": "displayName", "source": "default"}
    assert "client_secret" in text.output and "(set, hidden)  (PHOTOSYNC_CLIENT_SECRET)" in (
        text.output
    )


def test_config_show_with_a_bad_value_is_one_line_and_exit_2(places: dict[str, Path]) -> None:
    result = invoke("config", "show", "--concurrency", "many")
    assert result.exit_code == 2
    assert "concurrency" in result.stderr and result.stderr.count("\n") == 1
