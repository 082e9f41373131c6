"""Transport-neutral request/response values for the Graph emulator.

Top-level HTTP requests and the inner requests of a `$batch` both become an `EmuRequest` and
are answered with an `EmuResponse`, so every route is written once and behaves the same way
whichever door the request came through.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

# What Graph sends for JSON bodies (docs/graph-behaviour.md, "Listing users: pages and
# response shape"); clients must not depend on the
# parameters, but an emulator that sends the plain form would hide a parser that does.
ODATA_JSON = (
    "application/json;odata.metadata=minimal;odata.streaming=true;"
    "IEEE754Compatible=false;charset=utf-8"
)
# Error bodies come back with the plain type (docs/graph-behaviour.md, "Reading a photo").
ERROR_JSON = "application/json"
GRAPH_ROOT = "https://graph.microsoft.com"


@dataclass(frozen=True)
class EmuRequest:
    """One request, already parsed: query keys are decoded, header names lower-cased."""

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    # The query as the client sent it, in order, so a nextLink can repeat it.
    query_pairs: tuple[tuple[str, str], ...] = ()

    def option(self, name: str) -> str | None:
        """An OData system query option (`$top`), whatever case the client spelled it in."""
        return self.query.get(name.lower())

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class EmuResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # Bookkeeping for RecordedRequest; never sent.
    retry_after: float | None = None
    user_id: str | None = None
    # For a $batch: each inner request, its answer and when it started (time.monotonic()).
    inner: list[tuple[EmuRequest, EmuResponse, float]] = field(default_factory=list)


@dataclass(frozen=True)
class RequestIds:
    """The ids every Graph answer carries, and that error bodies repeat in innerError."""

    request_id: str
    client_request_id: str

    def headers(self) -> dict[str, str]:
        return {"request-id": self.request_id, "client-request-id": self.client_request_id}


class ApiError(Exception):
    """Raised by a route to answer with Graph's error envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.retry_after = retry_after

    def to_response(self, ids: RequestIds) -> EmuResponse:
        envelope = {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                    "request-id": ids.request_id,
                    "client-request-id": ids.client_request_id,
                },
            }
        }
        headers = {"Content-Type": ERROR_JSON, **self.headers}
        body = json.dumps(envelope).encode()
        return EmuResponse(self.status, headers, body, retry_after=self.retry_after)


def bad_request(message: str, code: str = "Request_BadRequest") -> ApiError:
    return ApiError(400, code, message)


def unsupported_query(message: str) -> ApiError:
    return ApiError(400, "Request_UnsupportedQuery", message)


def method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "Request_BadRequest",
        "The specified HTTP method is not allowed for the request target.",
    )


def json_response(payload: Mapping[str, Any], status: int = 200) -> EmuResponse:
    return raw_json_response(json.dumps(payload).encode(), status)


def raw_json_response(body: bytes, status: int = 200) -> EmuResponse:
    headers = {"Content-Type": ODATA_JSON, "OData-Version": "4.0", "Cache-Control": "no-cache"}
    return EmuResponse(status, headers, body)


def encode_query(pairs: tuple[tuple[str, str], ...]) -> str:
    """A query string that keeps `$`, quotes and parentheses readable, as Graph's links do."""
    return "&".join(quote(k, safe="$") + "=" + quote(v, safe="'$(),") for k, v in pairs)


def make_request(
    method: str, target: str, headers: Mapping[str, str], body: bytes = b""
) -> EmuRequest:
    """Parse a request target (`/v1.0/users?$top=5`) into an EmuRequest."""
    parts = urlsplit(target)
    pairs = tuple(parse_qsl(parts.query, keep_blank_values=True))
    # OData system query options are case-insensitive ($deltaToken, $skipToken...).
    query = {(k.lower() if k.startswith("$") else k): v for k, v in pairs}
    lowered = {k.lower(): v for k, v in headers.items()}
    return EmuRequest(method.upper(), unquote(parts.path), query, lowered, body, pairs)
