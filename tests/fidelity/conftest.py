"""One fidelity suite, two targets: the bundled emulator (always) and a real tenant (when the
PHOTOSYNC_FIDELITY_* variables name one).

Every test takes the `target` fixture and runs unchanged against both. Against a real tenant
the suite is read-only, except tests that write a photo, which run only when
PHOTOSYNC_FIDELITY_WRITE_USER names a test user and put back what was there. Tests that must
create, change or delete users carry `@pytest.mark.emulator_only(reason=...)`.

The open questions (test_open_questions.py) need an admin to change something in the portal
between two runs; `Target.two_steps` keeps the deltaLink of the first run in
PHOTOSYNC_FIDELITY_STATE_DIR for the second.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from reconciler.emulator import GraphEmulator
from reconciler.graph.auth import TokenProvider, build_credential, token_scope
from tests.fidelity.helpers import AWKWARD_NAMES, Bearer, Target, solid_jpeg

TENANT_VARIABLES = (
    "PHOTOSYNC_FIDELITY_TENANT_ID",
    "PHOTOSYNC_FIDELITY_CLIENT_ID",
    "PHOTOSYNC_FIDELITY_CLIENT_SECRET",
)
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulator_only(reason): the test creates or changes users, so it never runs against "
        "a real tenant; reason says why",
    )


def _tenant_session(graph_url: str) -> tuple[requests.Session, TokenProvider]:
    tenant_id, client_id, secret = (os.environ[name] for name in TENANT_VARIABLES)
    tokens = TokenProvider(
        lambda: build_credential(
            "client-secret",
            graph_url=graph_url,
            tenant_id=tenant_id,
            client_id=client_id,
            client_secret=secret,
        ),
        mode="client-secret",
        scope=token_scope(graph_url),
    )
    session = requests.Session()
    session.auth = Bearer(tokens)
    return session, tokens


def _seed(emu: GraphEmulator, session: requests.Session) -> tuple[str, str]:
    """A small tenant with what the read-only tests look for: enough users to page, awkward
    names, unset properties, users without a photo and one with. Returns (writer, question)."""
    tenant = emu.tenant
    tenant.add_users(5, prefix="Fidelity")
    for n, name in enumerate(AWKWARD_NAMES):
        tenant.add_user(name, employee_id=f"F{n}")
    tenant.add_user("Jane Doe", mail="jane@fabrikam.com", external=True)
    question = tenant.add_user("Question User", employee_id="Q1")
    writer = tenant.add_user("Photo Writer", employee_id="W1")
    response = session.put(
        f"{emu.url}/v1.0/users/{writer}/photo/$value",
        data=solid_jpeg((20, 120, 200)),
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return writer, question


@pytest.fixture(params=["emulator", "tenant"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    marker = request.node.get_closest_marker("emulator_only")
    if request.param == "tenant":
        missing = [name for name in TENANT_VARIABLES if not os.environ.get(name)]
        if missing:
            pytest.skip(f"no real tenant to check against: set {', '.join(missing)}")
        if marker is not None:
            pytest.skip(f"emulator only: {marker.kwargs.get('reason', 'changes users')}")
        graph_url = os.environ.get("PHOTOSYNC_FIDELITY_GRAPH_URL", DEFAULT_GRAPH_URL).rstrip("/")
        session, tokens = _tenant_session(graph_url)
        state = os.environ.get("PHOTOSYNC_FIDELITY_STATE_DIR")
        real = Target(
            "tenant",
            graph_url,
            session,
            write_user=os.environ.get("PHOTOSYNC_FIDELITY_WRITE_USER") or None,
            question_user=os.environ.get("PHOTOSYNC_FIDELITY_QUESTION_USER") or None,
            state_dir=Path(state) if state else None,
        )
        yield from _run(real, tokens)
        return
    emu: GraphEmulator = request.getfixturevalue("emulator")
    tokens = TokenProvider(
        lambda: build_credential("managed-identity", graph_url=emu.url),
        mode="managed-identity",
        scope=token_scope(emu.url),
    )
    session = requests.Session()
    session.auth = Bearer(tokens)
    writer, question = _seed(emu, session)
    emulated = Target("emulator", emu.url, session, emu, writer, question)
    yield from _run(emulated, tokens)


def _run(target: Target, tokens: TokenProvider) -> Iterator[Target]:
    try:
        yield target
    finally:
        target.session.close()
        tokens.close()
