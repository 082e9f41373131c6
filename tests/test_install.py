"""Installing photosync: our own name on the package index (entra-photosync; `photosync` there
is an unrelated project), the command still `photosync`, and a hash-pinned lock file that
covers every runtime dependency. `.ci/run` installs from the lock in a fresh venv as the
README says; these tests keep the README, the lock and pyproject.toml telling the same story."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from reconciler import DISTRIBUTION, __version__

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK = (ROOT / "requirements.lock").read_text(encoding="utf-8")

# `pip install` (any options) followed somewhere on the line by the bare name `photosync`,
# with or without extras or a version: the unrelated project on the index.
_BARE_INSTALL = re.compile(r"pip3?\s+install\b.*?(?<![\w./-])photosync(?![\w.-])")


def installs_the_wrong_project(line: str) -> bool:
    return _BARE_INSTALL.search(line) is not None


@pytest.mark.parametrize(
    ("line", "wrong"),
    [
        ("pip install photosync", True),
        ("/opt/photosync/bin/pip install -q 'photosync[heif]'", True),
        ("python3 -m pip install --upgrade photosync==0.1.0", True),
        ("pip install entra-photosync", False),
        ("/opt/photosync/bin/pip install --no-deps .", False),
        ("pip install --require-hashes -r requirements.lock", False),
        ("pip install 'entra-photosync[postgres]'", False),
    ],
)
def test_the_wrong_project_is_recognised(line: str, wrong: bool) -> None:
    assert installs_the_wrong_project(line) is wrong


def test_no_document_tells_anyone_to_pip_install_photosync() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    documents += sorted(p for p in (ROOT / "deploy").iterdir() if p.is_file())
    for document in documents:
        for number, line in enumerate(document.read_text(encoding="utf-8").splitlines(), 1):
            assert not installs_the_wrong_project(line), f"{document.name}:{number}: {line}"


def test_the_distribution_is_entra_photosync_and_installs_the_photosync_command() -> None:
    assert PYPROJECT["project"]["name"] == DISTRIBUTION == "entra-photosync"
    installed = distribution(DISTRIBUTION)
    assert installed.version == __version__
    scripts = {e.name: e.value for e in installed.entry_points if e.group == "console_scripts"}
    assert scripts == {"photosync": "reconciler.cli:main"}


def locked_pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from requirements.lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for block in re.split(r"\n(?=\S)", LOCK):
        first = block.split("\n", 1)[0]
        match = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", first)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            pins[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return pins


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    pins = locked_pins()
    assert pins, "requirements.lock pins nothing"
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no hash"
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name][0]}, outside {requirement.specifier}"
        )


def test_the_lock_names_no_machine_of_ours() -> None:
    for line in LOCK.splitlines():
        assert not line.startswith(("--find-links", "--index-url", "--extra-index-url", "-f ")), (
            line
        )
        assert "file://" not in line


def test_the_readme_installs_from_the_lock_and_says_how_to_regenerate_it() -> None:
    assert "pip install --require-hashes -r requirements.lock" in README
    assert "pip install --no-deps ." in README
    assert "pip-compile --generate-hashes" in README


def test_every_module_and_migration_ships_in_the_wheel(tmp_path: Path) -> None:
    """A module the wheel leaves out works in an editable install and breaks every real one
    (`pip install .`) with ModuleNotFoundError; a missing migration leaves a ledger behind.
    So the wheel is built, as `pip install .` builds it, and read."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("entra_photosync-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "reconciler").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    expected |= {
        "reconciler/_migrations/" + path.relative_to(ROOT / "migrations").as_posix()
        for path in (ROOT / "migrations").rglob("*")
        if path.suffix in (".py", ".mako") and "__pycache__" not in path.parts
    }
    assert len(expected) > 60 and any("versions/0005" in name for name in expected)
    assert expected - shipped == set()
    assert "reconciler/py.typed" in shipped
