"""The ledger on PostgreSQL: migrations, the advisory run lock and a whole reconcile.

Runs when PHOTOSYNC_TEST_POSTGRES_URL names a database (CI starts one with
.ci/start-postgres); everything in that database's public schema is dropped first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from reconciler import app
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.errors import RunLockedError
from reconciler.ledger.db import Ledger, migrations_config
from reconciler.ledger.revision import HEAD_REVISION
from reconciler.model import Outcome
from tests.helpers import lock_holder, write_jpeg

URL = os.environ.get("PHOTOSYNC_TEST_POSTGRES_URL")
if URL is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI must run the PostgreSQL tests: set PHOTOSYNC_TEST_POSTGRES_URL")
    pytest.skip(
        "PHOTOSYNC_TEST_POSTGRES_URL is not set (.ci/start-postgres starts one)",
        allow_module_level=True,
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    assert URL is not None
    engine = create_engine(URL)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    yield URL


def test_upgrade_and_models_agree_on_postgres(pg_url: str) -> None:
    ledger = Ledger(pg_url)
    ledger.upgrade()
    assert ledger.revision() == HEAD_REVISION
    command.check(migrations_config(ledger.engine))
    ledger.dispose()


def test_advisory_lock_names_the_holder_and_dies_with_it(pg_url: str) -> None:
    holder = lock_holder(pg_url)
    ledger = Ledger(pg_url)
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"), ledger.run_lock():
        pass
    holder.kill()
    holder.wait()
    with ledger.run_lock():
        pass
    ledger.dispose()


def test_reconcile_with_a_postgres_ledger(
    pg_url: str, emulator: GraphEmulator, tmp_path: Path
) -> None:
    jane = emulator.tenant.add_user("Jane Doe")
    emulator.tenant.add_users(2500)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    data = write_jpeg(inbox / "Jane Doe.jpg")
    settings = Settings(
        graph_url=emulator.url,
        inbox_dir=inbox,
        completed_dir=tmp_path / "done",
        failed_dir=tmp_path / "failed",
        database_url=pg_url,
        settle_seconds=0,
    )

    first, _ = app.reconcile(settings)
    second, _ = app.reconcile(settings)

    assert first.counts[Outcome.UPLOADED] == 1
    photo = emulator.tenant.photo(jane)
    assert photo is not None and photo.data == data
    assert second.graph_requests == 0
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        users = connection.execute(text("SELECT count(*) FROM users")).scalar()
        status = connection.execute(text("SELECT status FROM uploads")).scalars().all()
    engine.dispose()
    assert users == 2501 and status == ["succeeded"]
