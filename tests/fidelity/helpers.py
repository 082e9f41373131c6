"""What the fidelity tests share besides their fixture: the target (the emulator or a real
tenant) they send requests to, and the names and photos they use."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from reconciler.emulator import GraphEmulator, Tenant
from reconciler.graph.auth import TokenProvider

# Names whose characters a filter literal must carry intact (quote, URL metacharacters,
# non-ASCII); the emulator target has a user for each, a real tenant may have some.
AWKWARD_NAMES = ("Siobhán O'Brien", "Zoë #1 & Co", "A+B Müller", "Ünal Weiß", "李小龙")


class Bearer(requests.auth.AuthBase):
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
