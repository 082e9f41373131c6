"""The packages the wheel ships, found rather than listed: every package under reconciler/
(a new subpackage cannot be left out), and migrations/, kept at the repository root where
Alembic users expect it, shipped as reconciler._migrations so an installed photosync can
upgrade its own ledger. Everything else is in pyproject.toml; tests/test_install.py builds
the wheel and checks every module and migration is in it."""

from setuptools import find_packages, setup

MIGRATIONS = {"reconciler._migrations": "migrations"}

setup(
    packages=[
        *find_packages(include=["reconciler", "reconciler.*"]),
        *MIGRATIONS,
        *(
            f"{package}.{sub}"
            for package, folder in MIGRATIONS.items()
            for sub in find_packages(folder)
        ),
    ],
    package_dir=MIGRATIONS,
)
