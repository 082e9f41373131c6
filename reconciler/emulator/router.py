"""Maps a `/v1.0` request to its route and turns raised ApiErrors into Graph error bodies.

The one entry point `dispatch` serves top-level requests and `$batch` inner requests alike.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable

from reconciler.emulator.admin import PHOTO_UPDATE_SETTINGS, AdminRoutes
from reconciler.emulator.batch import run_batch
from reconciler.emulator.faults import FaultDice, Faults, WriteLimiter, throttled
from reconciler.emulator.photos import PhotoRoutes
from reconciler.emulator.tenant import Tenant
from reconciler.emulator.users import UserRoutes
from reconciler.emulator.wire import (
    ApiError,
    EmuRequest,
    EmuResponse,
    RequestIds,
    method_not_allowed,
)

BATCH_INNER_CONCURRENCY = 4
_PHOTO = re.compile(r"^/v1\.0/users/([^/]+)/photo(/\$value)?$")
_USER = re.compile(r"^/v1\.0/users/([^/]+)$")


class GraphRouter:
    def __init__(
        self,
        tenant: Tenant,
        faults: Faults,
        base_url: Callable[[], str],
        clock: Callable[[], float],
        dice: FaultDice,
    ) -> None:
        self._tenant = tenant
        self._faults = faults
        self._dice = dice
        self._throttle_lock = threading.Lock()
        self.users = UserRoutes(tenant, faults, base_url, clock)
        self.admin = AdminRoutes(faults, base_url)
        self.photos = PhotoRoutes(tenant, faults, WriteLimiter(faults), base_url)

    def dispatch(self, req: EmuRequest, ids: RequestIds) -> EmuResponse:
        user_id = self.photo_user(req)
        try:
            response = self._route(req, ids)
        except ApiError as exc:
            response = exc.to_response(ids)
        response.user_id = user_id
        return response

    def _dispatch_inner(self, req: EmuRequest, ids: RequestIds) -> EmuResponse:
        """An inner request of a $batch; photo reads may be throttled one by one."""
        if req.method == "GET" and _PHOTO.match(req.path.rstrip("/")) and self._take_throttle():
            response = throttled(self._faults, 1.0).to_response(ids)
            response.user_id = self.photo_user(req)
            return response
        return self.dispatch(req, ids)

    def _take_throttle(self) -> bool:
        with self._throttle_lock:
            if self._faults.throttle_batch_photo_reads <= 0:
                return False
            self._faults.throttle_batch_photo_reads -= 1
            return True

    def _charge_inner_latency(self, inner_count: int) -> None:
        # Graph hands a batch's photo requests to the Outlook-backed profile service at most
        # 4 at a time (docs/graph-behaviour.md, "JSON batching"): 20 inner uploads cost 5
        # service round trips, not one.
        # The top-level latency already paid for the first round.
        rounds = math.ceil(inner_count / BATCH_INNER_CONCURRENCY)
        if self._faults.latency_s > 0 and rounds > 1:
            time.sleep(self._faults.latency_s * (rounds - 1))

    def photo_user(self, req: EmuRequest) -> str | None:
        """The id a photo request is about, resolved before the request can delete the user."""
        match = _PHOTO.match(req.path.rstrip("/"))
        if match is None:
            return None
        record = self._tenant.resolve(match.group(1))
        return record.id if record is not None else match.group(1)

    def _route(self, req: EmuRequest, ids: RequestIds) -> EmuResponse:
        path = req.path.rstrip("/")
        if path == "/v1.0/$batch":
            response = run_batch(req, ids, self._dispatch_inner, self._dice.shuffle)
            self._charge_inner_latency(len(response.inner))
            return response
        photo = _PHOTO.match(path)
        if photo is not None:
            return self.photos.handle(req, photo.group(1), value=photo.group(2) is not None)
        if req.method != "GET":
            raise method_not_allowed()
        collection = {
            PHOTO_UPDATE_SETTINGS: self.admin.photo_update_settings,
            "/v1.0/users": self.users.list_users,
            "/v1.0/users/delta": self.users.delta,
            "/v1.0/users/$count": self.users.count,
        }.get(path)
        if collection is not None:
            return collection(req)
        user = _USER.match(path)
        if user is not None:
            return self.users.get_user(req, user.group(1))
        if path == "/v1.0/me" or path.startswith("/v1.0/me/"):
            raise ApiError(
                400, "BadRequest", "/me request is only valid with delegated authentication flow."
            )
        segment = path.removeprefix("/v1.0/").split("/")[0]
        raise ApiError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
