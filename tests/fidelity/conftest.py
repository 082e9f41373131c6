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

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from reconciler.emulator import GraphEmulator, Tenant
from reconciler.graph.auth import TokenProvider, build_credential, token_scope

TENANT_VARIABLES = (
    "PHOTOSYNC_FIDELITY_TENANT_ID",
    "PHOTOSYNC_FIDELITY_CLIENT_ID",
    "PHOTOSYNC_FIDELITY_CLIENT_SECRET",
)
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
# Names whose characters a filter literal must carry intact (quote, URL metacharacters,
# non-ASCII); the emulator target has a user for each, a real tenant may have some.
AWKWARD_NAMES = ("Siobhán O'Brien", "Zoë #1 & Co", "A+B Müller", "Ünal Weiß", "李小龙")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulator_only(reason): the test creates or changes users, so it never runs against "
        "a real tenant; reason says why",
    )


class _Bearer(requests.auth.AuthBase):
    """A fresh (cached) token on every request, as the Graph client does."""

    def __init__(self, tokens: TokenProvider) -> None:
        self._tokens = tokens

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._tokens.token()}"
        return request


def solid_jpeg(color: tuple[int, int, int], size: int = 240) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG", quality=92)
    return buf.getvalue()


@dataclass
class Target:
    """Where the suite points: the Graph root, an authenticated session, and what it may do."""

    name: str  # "emulator" or "tenant"
    graph_url: str
    session: requests.Session
    emulator: GraphEmulator | None = None
    write_user: str | None = None  # id or UPN of a user whose photo may be written
    question_user: str | None = None  # id of the user an admin changes between two steps
    state_dir: Path | None = None

    def url(self, path: str) -> str:
        return f"{self.graph_url}/v1.0/{path}"

    def get(self, path_or_url: str, **kwargs: Any) -> requests.Response:
        url = path_or_url if path_or_url.startswith("http") else self.url(path_or_url)
        kwargs.setdefault("timeout", 60)
        return self.session.get(url, **kwargs)

    def pages(self, path_or_url: str, *, limit: int = 1000, **kwargs: Any) -> list[dict[str, Any]]:
        """The pages of a listing or delta round, in order (at most `limit`)."""
        pages: list[dict[str, Any]] = []
        url: str | None = path_or_url
        while url and len(pages) < limit:
            response = self.get(url, **kwargs)
            assert response.status_code == 200, response.text
            pages.append(response.json())
            url = pages[-1].get("@odata.nextLink")
            kwargs.pop("params", None)  # a nextLink carries the query
        return pages

    def delta_round(self, path_or_url: str, **kwargs: Any) -> tuple[list[dict[str, Any]], str]:
        pages = self.pages(path_or_url, **kwargs)
        items = [item for page in pages for item in page["value"]]
        return items, str(pages[-1]["@odata.deltaLink"])

    def some_users(self, select: str, count: int = 999) -> list[dict[str, Any]]:
        """Up to `count` users from the first page of the listing."""
        top = min(max(count, 1), 999)
        response = self.get("users", params={"$select": select, "$top": str(top)})
        assert response.status_code == 200, response.text
        users: list[dict[str, Any]] = response.json()["value"]
        return users

    @property
    def tenant(self) -> Tenant:
        """The emulated directory; only emulator_only tests and `on_emulator` may use it."""
        assert self.emulator is not None, "only the emulator target has a tenant to change"
        return self.emulator.tenant

    def on_emulator(self, action: Callable[[Tenant], object]) -> None:
        """Do to the emulated tenant what the docstring asks an admin to do to a real one."""
        if self.emulator is not None:
            action(self.emulator.tenant)

    def two_steps(
        self, question: str, first: Callable[[], str], between: Callable[[Tenant], object], how: str
    ) -> str:
        """The deltaLink `first` returns, followed after the change `between` makes.

        On the emulator both steps run at once. On a real tenant the first run saves the link
        and skips with `how` (what the admin must change in the portal); the next run uses
        the saved link and forgets it, so a third run starts over.
        """
        if self.emulator is not None:
            link = first()
            between(self.emulator.tenant)
            return link
        if self.state_dir is None or self.question_user is None:
            pytest.skip(
                "open question: set PHOTOSYNC_FIDELITY_STATE_DIR (a folder) and "
                "PHOTOSYNC_FIDELITY_QUESTION_USER (a test user's id) to settle it"
            )
        saved = self.state_dir / f"{question}.link"
        if saved.exists():
            link = saved.read_text(encoding="utf-8").strip()
            saved.unlink()
            return link
        self.state_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(first(), encoding="utf-8")
        pytest.skip(f"step 1 of 2 done; now {how}, wait a few minutes, and run the test again")


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
    session.auth = _Bearer(tokens)
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
    session.auth = _Bearer(tokens)
    writer, question = _seed(emu, session)
    emulated = Target("emulator", emu.url, session, emu, writer, question)
    yield from _run(emulated, tokens)


def _run(target: Target, tokens: TokenProvider) -> Iterator[Target]:
    try:
        yield target
    finally:
        target.session.close()
        tokens.close()
