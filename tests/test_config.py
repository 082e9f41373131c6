"""Settings: precedence, and one clear line (exit 2) for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli import main
from reconciler.config import load_settings
from reconciler.errors import ConfigError


def write_toml(path: Path, body: str) -> Path:
    path.write_text("[photosync]\n" + body, encoding="utf-8")
    return path


def test_precedence_defaults_toml_env_flags(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "p.toml", 'concurrency = 2\nmatch_on = "mail"\nsettle_seconds = 5\n'
    )
    env = {"PHOTOSYNC_CONCURRENCY": "3", "PHOTOSYNC_SETTLE_SECONDS": "7"}
    settings = load_settings(config, env, {"concurrency": "9"})
    assert settings.concurrency == 9  # flag beats env beats TOML
    assert settings.settle_seconds == 7  # env beats TOML
    assert settings.match_on == "mail"  # TOML beats default
    assert settings.max_dimension == 648  # default
    assert settings.move_completed is True


def test_client_secret_comes_only_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(None, {"PHOTOSYNC_CLIENT_SECRET": "s3cr3t"}, {})
    assert settings.client_secret == "s3cr3t"
    assert "s3cr3t" not in repr(settings)
    config = write_toml(tmp_path / "p.toml", 'client_secret = "s3cr3t"\n')
    with pytest.raises(ConfigError, match="PHOTOSYNC_CLIENT_SECRET") as caught:
        load_settings(config, {}, {})
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "env", "flags", "names"),
    [
        ('colour = "blue"\n', {}, {}, "colour"),
        ("", {"PHOTOSYNC_GRAPH_URL": "graph.microsoft.com"}, {}, "graph_url"),
        ("", {"PHOTOSYNC_GRAPH_URL": "http://graph.microsoft.com"}, {}, "graph_url"),
        ("", {}, {"concurrency": "0"}, "concurrency"),
        ("concurrency = 1.5\n", {}, {}, "concurrency"),
        ("", {}, {"match_on": "surname"}, "match_on"),
        ("", {}, {"auth": "password"}, "auth"),
        ("", {}, {"max_bytes": "5000000"}, "max_bytes"),
        ("", {"PHOTOSYNC_MOVE_COMPLETED": "maybe"}, {}, "move_completed"),
        ("", {}, {"database_url": "not a url"}, "database_url"),
        ("", {}, {"crop": "circle"}, "crop"),
    ],
)
def test_bad_values_name_the_setting(
    tmp_path: Path, toml: str, env: dict[str, str], flags: dict[str, str], names: str
) -> None:
    config = write_toml(tmp_path / "p.toml", toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env, flags)
    assert caught.value.setting == names
    assert "\n" not in str(caught.value)


def test_a_bad_database_url_is_shown_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {}, {"database_url": "postgresql+psycopg://svc:s3cret@db:port/x"})
    assert caught.value.setting == "database_url"
    assert "s3cret" not in str(caught.value) and "svc:***@db" in str(caught.value)


def test_loopback_http_is_allowed_for_an_emulator() -> None:
    settings = load_settings(None, {}, {"graph_url": "http://127.0.0.1:8080/"})
    assert settings.graph_url == "http://127.0.0.1:8080"


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_cli_exits_2_with_one_line_for_bad_settings(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db = f"sqlite:///{tmp_path / 'l.db'}"
    cases = [
        (["--concurrency", "0"], "setting 'concurrency'"),
        (["--inbox-dir", str(tmp_path / "missing")], "setting 'inbox_dir'"),
        (["--completed-dir", str(inbox)], "setting 'completed_dir'"),
        (["--graph-url", "ftp://x"], "setting 'graph_url'"),
        (["--config", str(write_toml(tmp_path / "bad.toml", "inbox = 1\n"))], "setting 'inbox'"),
        (["--overrides-file", str(tmp_path / "nope.csv")], "setting 'overrides_file'"),
    ]
    for extra, expected in cases:
        code, output = run_cli("reconcile", "--inbox-dir", str(inbox), "--database-url", db, *extra)
        assert code == 2, (extra, output)
        lines = output.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], output


def test_bad_overrides_csv_is_a_config_error(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    overrides = tmp_path / "o.csv"
    overrides.write_text("filename,userPrincipalName\nJane.jpg\n")
    code, output = run_cli(
        "reconcile",
        "--inbox-dir",
        str(inbox),
        "--database-url",
        f"sqlite:///{tmp_path}/l.db",
        "--overrides-file",
        str(overrides),
    )
    assert code == 2 and "line 2" in output


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "deploy" / "photosync.toml.example"
    settings = load_settings(example, {}, {})
    assert settings.database_url == "sqlite:////var/lib/photosync/photosync.db"
