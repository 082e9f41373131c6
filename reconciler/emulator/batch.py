"""`POST /$batch` (docs/graph-behaviour.md, "JSON batching"): validate the envelope as a
whole, then run each inner request through the same dispatcher as a top-level request."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.emulator.wire import (
    ApiError,
    EmuRequest,
    EmuResponse,
    RequestIds,
    bad_request,
    make_request,
)

MAX_REQUESTS = 20
# Per-request headers that belong to the outer response, not to each inner one.
_OUTER_ONLY = frozenset({"request-id", "client-request-id", "date"})

Dispatch = Callable[[EmuRequest, RequestIds], EmuResponse]


@dataclass(frozen=True)
class InnerRequest:
    id: str
    method: str
    url: str
    headers: Mapping[str, str]
    body: Any
    depends_on: tuple[str, ...]


def _invalid(message: str = "Invalid batch payload format.") -> ApiError:
    return bad_request(message, "BadRequest")


def _parse_item(item: Any) -> InnerRequest:
    if not isinstance(item, dict):
        raise _invalid()
    fields = (item.get("id"), item.get("method"), item.get("url"))
    if not all(isinstance(f, str) and f for f in fields):
        raise _invalid("Each request in a batch needs string 'id', 'method' and 'url'.")
    headers = item.get("headers") or {}
    depends = item.get("dependsOn") or []
    if not isinstance(headers, dict) or not isinstance(depends, list):
        raise _invalid()
    if "body" in item and not any(k.lower() == "content-type" for k in headers):
        raise _invalid("A request with a body must give its Content-Type in 'headers'.")
    return InnerRequest(
        str(item["id"]),
        str(item["method"]).upper(),
        str(item["url"]),
        {str(k): str(v) for k, v in headers.items()},
        item.get("body"),
        tuple(str(d) for d in depends),
    )


def parse_batch(body: bytes) -> list[InnerRequest]:
    """The inner requests in execution order; any envelope problem fails the whole batch."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _invalid() from exc
    items = payload.get("requests") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise _invalid()
    if len(items) > MAX_REQUESTS:
        raise _invalid(f"The number of batch requests must not exceed {MAX_REQUESTS}.")
    requests = [_parse_item(item) for item in items]
    ids = [r.id.lower() for r in requests]
    if len(set(ids)) != len(ids):
        raise _invalid("Batch request contains duplicate request ids.")
    return _in_dependency_order(requests, set(ids))


def _in_dependency_order(requests: list[InnerRequest], ids: set[str]) -> list[InnerRequest]:
    for request in requests:
        unknown = [d for d in request.depends_on if d.lower() not in ids or d == request.id]
        if unknown:
            raise _invalid(f"Request '{request.id}' depends on unknown request '{unknown[0]}'.")
    ordered: list[InnerRequest] = []
    done: set[str] = set()
    pending = list(requests)
    while pending:
        ready = [r for r in pending if all(d.lower() in done for d in r.depends_on)]
        if not ready:
            raise _invalid("The dependsOn graph of the batch has a cycle.")
        for request in ready:
            ordered.append(request)
            done.add(request.id.lower())
            pending.remove(request)
    return ordered


def _inner_body(inner: InnerRequest) -> bytes:
    """JSON bodies travel as JSON; anything else (an image) as base64 text."""
    if inner.body is None:
        return b""
    content_type = next(v for k, v in inner.headers.items() if k.lower() == "content-type")
    if "json" in content_type.lower():
        return json.dumps(inner.body).encode()
    if not isinstance(inner.body, str):
        raise bad_request("A non-JSON body must be a base64-encoded string.", "BadRequest")
    try:
        return base64.b64decode(inner.body, validate=True)
    except binascii.Error as exc:
        raise bad_request("The body is not valid base64.", "BadRequest") from exc


def _to_emu_request(inner: InnerRequest) -> EmuRequest:
    url = inner.url
    if "://" in url:
        raise bad_request("Batch request urls must be relative to the version root.", "BadRequest")
    path = "/v1.0/" + url.lstrip("/")
    if path.split("?")[0].rstrip("/").lower() == "/v1.0/$batch":
        raise bad_request("A batch cannot contain another batch.", "BadRequest")
    return make_request(inner.method, path, inner.headers, _inner_body(inner))


def _serialise(inner: InnerRequest, response: EmuResponse) -> dict[str, Any]:
    headers = {k: v for k, v in response.headers.items() if k.lower() not in _OUTER_ONLY}
    entry: dict[str, Any] = {"id": inner.id, "status": response.status, "headers": headers}
    if response.body:
        content_type = headers.get("Content-Type", "")
        if "json" in content_type:
            entry["body"] = json.loads(response.body)
        else:
            entry["body"] = base64.b64encode(response.body).decode()
    return entry


def _failed_dependency(ids: RequestIds) -> EmuResponse:
    return ApiError(
        424, "FailedDependency", "The request could not run because a request it depends on failed."
    ).to_response(ids)


def run_batch(
    req: EmuRequest,
    ids: RequestIds,
    dispatch: Dispatch,
    shuffle: Callable[[list[dict[str, Any]]], None],
) -> EmuResponse:
    if req.method != "POST":
        raise ApiError(405, "BadRequest", "Use POST for $batch.")
    answers: list[dict[str, Any]] = []
    failed: set[str] = set()
    response = EmuResponse(200, {"Content-Type": "application/json"})
    for inner in parse_batch(req.body):
        started = time.monotonic()
        try:
            emu_request = _to_emu_request(inner)
        except ApiError as exc:
            emu_request, result = (
                make_request(inner.method, inner.url, inner.headers),
                exc.to_response(ids),
            )
        else:
            if any(d.lower() in failed for d in inner.depends_on):
                result = _failed_dependency(ids)
            else:
                result = dispatch(emu_request, ids)
        if result.status >= 400:
            failed.add(inner.id.lower())
        response.inner.append((emu_request, result, started))
        answers.append(_serialise(inner, result))
    # Graph documents that responses may come back in any order; do so, so clients match by id.
    shuffle(answers)
    response.body = json.dumps({"responses": answers}).encode()
    return response
