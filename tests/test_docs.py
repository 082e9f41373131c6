"""The help and the README say what the code does: every command and option has help, every
command an example, and the README's tables match the settings and the report's fields."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reconciler import __version__
from reconciler.cli import main
from reconciler.config import SETTINGS, Settings
from reconciler.report import COLUMNS

README_PATH = Path(__file__).parent.parent / "README.md"
README = README_PATH.read_text(encoding="utf-8")


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, click.Command]]:
    found = [(" ".join(("photosync", *path)), command)]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            found += walk(sub, (*path, name))
    return found


COMMANDS = walk(main)


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_and_option_has_help_and_an_example(
    name: str, command: click.Command
) -> None:
    assert command.help, f"{name} has no help text"
    text = inspect.cleandoc(command.help)
    assert "\nExample:\n" in text, f"{name}'s help has no 'Example:' block"
    example = text.split("Example:\n", 1)[1]
    assert name in example, f"{name}'s example does not show the command"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts[0]} has no help text"


def test_help_renders_the_example_as_written() -> None:
    result = CliRunner().invoke(main, ["report", "unmatched", "--help"])
    assert result.exit_code == 0
    assert "  photosync report unmatched --format csv --output unmatched.csv" in result.output


def test_every_command_is_in_the_readme() -> None:
    section = readme_section("Commands")
    for name, command in COMMANDS:
        if not isinstance(command, click.Group):
            assert f"`{name}" in section, f"{name} is missing from the README's Commands"


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"photosync, version {__version__}\n"


def readme_section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def documented_default(field: dataclasses.Field[object]) -> str:
    if field.name == "database_url":  # depends on the machine: the README names the rule
        return "sqlite:///<user data dir>/photosync.db"
    value = field.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def test_configuration_reference_matches_the_settings() -> None:
    rows = {}
    for line in readme_section("Configuration reference").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = cells
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert set(rows) == set(fields) == {spec.name for spec in SETTINGS}
    for spec in SETTINGS:
        _name, env, flag, default, meaning = rows[spec.name]
        assert env == f"`{spec.env_var}`"
        assert flag == ("(env only)" if spec.env_only else flag)
        if not spec.env_only:
            assert f"`{spec.flag}`" in flag
        assert default == f"`{documented_default(fields[spec.name])}`", spec.name
        assert meaning, spec.name


def test_report_formats_lists_every_field_in_order() -> None:
    section = readme_section("Report formats")
    documented = re.findall(r"^\| `(\w+)` \|", section, re.M)
    assert tuple(documented) == COLUMNS


def test_readme_sections_come_in_the_promised_order() -> None:
    titles = re.findall(r"^## (.+)$", README, re.M)
    wanted = [
        "Quick start",
        "Setup with a managed identity (Azure Arc server or Automation hybrid worker)",
        "Configuration reference",
        "Outcomes and exit codes",
        "Commands",
        "Report formats",
        "Troubleshooting",
    ]
    assert [t for t in titles if t in wanted] == wanted
    assert README.index("# photosync\n") < README.index("## Quick start")


def test_quick_start_is_exactly_the_demo_command_and_the_test_command() -> None:
    section = README[
        README.index("## Quick start") : README.index("\n## ", README.index("## Quick start") + 1)
    ]
    commands = [line for line in section.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2
    assert commands[0].endswith("photosync demo")
    assert "pytest" in commands[1]
    ci = (README_PATH.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert f'TEST_COMMAND="{commands[1]}"' in ci  # CI runs exactly what the README says


def test_every_path_the_code_and_docs_cite_is_in_the_repository() -> None:
    """Comments and docs cite files of this repository (docs/…, reconciler/…), never notes
    kept elsewhere; a file that moves takes its citations with it."""
    root = Path(__file__).resolve().parent.parent
    cited = re.compile(
        r"(?<![\w/.-])((?:docs|reconciler|tests|bench|migrations|deploy)/[\w./-]*\w)"
    )
    sources = [
        *root.glob("reconciler/**/*.py"),
        *root.glob("migrations/**/*.py"),
        *root.glob("bench/*.py"),
        *root.glob("tests/**/*.py"),
        *root.glob("docs/*.md"),
        root / "README.md",
    ]
    missing = {
        f"{source.relative_to(root)}: {match.group(1)}"
        for source in sources
        for match in cited.finditer(source.read_text(encoding="utf-8", errors="replace"))
        # the wheel's name for migrations/ (setup.py), not a path in the repository
        if not match.group(1).startswith("reconciler/_migrations")
        and not (root / match.group(1).split("::")[0]).exists()
    }
    assert not missing


def test_every_section_the_code_and_docs_cite_exists() -> None:
    """A citation such as (docs/reliability.md, "Crash campaign") or (README, "Logs") names
    a heading of that file, or the bold label that opens one of its paragraphs."""
    root = Path(__file__).resolve().parent.parent

    def places(document: Path) -> list[str]:
        text = document.read_text(encoding="utf-8")
        headings = [line.lstrip("#").strip() for line in text.splitlines() if line[:1] == "#"]
        labels = re.findall(r"^\*\*(.+?)\*\*", text, flags=re.MULTILINE)
        return [place.lower() for place in headings + labels]

    known = {"README": places(root / "README.md")}
    known |= {f"docs/{doc.name}": places(doc) for doc in (root / "docs").glob("*.md")}
    citation = re.compile(r"(README|docs/[\w-]+\.md)(?:\.md)?[,:;]? (?:section )?\"([^\"]+)\"")
    sources = [*root.glob("reconciler/**/*.py"), *root.glob("docs/*.md"), root / "README.md"]
    missing = []
    for source in sources:
        # Comments wrap: read each file as one line, comment marks and indents aside.
        flat = re.sub(r"\s*\n\s*(?:#\s*)?", " ", source.read_text(encoding="utf-8"))
        for document, place in citation.findall(flat):
            if not any(place.lower() in known_place for known_place in known[document]):
                missing.append(f"{source.relative_to(root)}: {document}, {place!r}")
    assert not missing
