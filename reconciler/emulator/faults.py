"""Injected trouble: throttling, outages, dropped connections, doomed users."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from reconciler.emulator.wire import ApiError


@dataclass
class Faults:
    """Mutable at runtime by tests; each field is read once per request, so no lock is needed.

    latency and the random faults act on top-level /v1.0 requests (a $batch is one request,
    whose inner requests add one latency per round of 4, as Graph processes them);
    the write rate and the doomed-user sets act on every photo write, inner ones included.
    Token requests see none of them.
    """

    latency_s: float = 0.0
    write_rate_per_s: float | None = None
    fractional_retry_after: bool = False
    random_429_rate: float = 0.0
    random_503_rate: float = 0.0
    drop_connection_rate: float = 0.0
    fail_photo_users: set[str] = field(default_factory=set)
    delete_user_on_photo_write: set[str] = field(default_factory=set)
    # user id -> (status, Graph error code) answered to every photo read and write for that
    # user, with the message Graph sends for that code (see photos.photo_error).
    photo_errors: dict[str, tuple[int, str]] = field(default_factory=dict)
    token_lifetime_s: int = 3600
    # The `roles` claim of tokens issued from now on (photosync needs both defaults; reading
    # photoUpdateSettings also needs PeopleSettings.Read.All), and the tenant's photo
    # update source there: "cloud" or "onPremises" (cloud updates disabled).
    token_roles: tuple[str, ...] = ("User.Read.All", "ProfilePhoto.ReadWrite.All")
    photo_update_source: str = "cloud"
    delta_gone_once: bool = False
    seed: int | None = None
    # Called with the user id after a photo is stored and before the response is sent: lets
    # a test kill the client at the exact instant "uploaded, but not yet told so".
    after_photo_stored: Callable[[str], None] | None = None
    # Called with (method, path) when a /v1.0 request arrives, before it is answered: lets
    # a test kill the client at an exact point of its conversation with Graph.
    before_request: Callable[[str, str], None] | None = None
    # The same for a photo removed (DELETE .../photo/$value), before the 204 is sent.
    after_photo_deleted: Callable[[str], None] | None = None
    # The next this many photo reads inside a $batch are answered 429 with a Retry-After of
    # their own, as Graph throttles inner requests one by one (docs/graph-behaviour.md).
    throttle_batch_photo_reads: int = 0
    # Graph's weakest documented promises (see the emulator module docstring and
    # docs/graph-behaviour.md): "selected" | "changed" | "sparse".
    delta_items: str = "selected"
    latest_forgets_select: bool = False
    hide_restores: bool = False
    replication_lag_s: float = 0.0


def retry_after_value(seconds: float, fractional: bool) -> tuple[str, float]:
    """The header text and the number it means. Graph documents whole seconds; older docs
    show "2.128", so clients must parse both."""
    if fractional:
        value = max(round(seconds, 3), 0.001)
        return f"{value:.3f}", value
    whole = max(math.ceil(seconds), 1)
    return str(whole), float(whole)


def throttled(faults: Faults, seconds: float, *, code: str = "TooManyRequests") -> ApiError:
    text, value = retry_after_value(seconds, faults.fractional_retry_after)
    status, message = (
        (429, "Please retry again later.")
        if code == "TooManyRequests"
        else (503, "Service is temporarily unavailable. Please retry later.")
    )
    return ApiError(status, code, message, headers={"Retry-After": text}, retry_after=value)


class WriteLimiter:
    """A token bucket over photo writes holding one second of the configured rate.

    As Entra documents, a write sent while throttled is not processed, still accrues usage
    and gets a fresh Retry-After, so a client that ignores Retry-After keeps itself throttled.
    The debt is capped at one bucket so a well-behaved client always recovers.
    """

    def __init__(self, faults: Faults, clock: Callable[[], float] = time.monotonic) -> None:
        self._faults = faults
        self._clock = clock
        self._lock = threading.Lock()
        self._rate: float | None = None
        self._tokens = 0.0
        self._stamp = 0.0

    def admit(self) -> None:
        """Return if the write may proceed, else raise the 429 to send."""
        rate = self._faults.write_rate_per_s
        if rate is None:
            return
        capacity = max(rate, 1.0)
        with self._lock:
            now = self._clock()
            if rate != self._rate:  # configured afresh: start with a full bucket
                self._rate, self._tokens, self._stamp = rate, capacity, now
            self._tokens = min(capacity, self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            allowed = self._tokens >= 1.0
            self._tokens = max(self._tokens - 1.0, -capacity)
            wait = (1.0 - self._tokens) / rate
        if not allowed:
            raise throttled(self._faults, wait)


Verdict = Literal["ok", "429", "503", "drop"]
T = TypeVar("T")


class FaultDice:
    """Seeded random faults for plain Graph requests."""

    def __init__(self, faults: Faults) -> None:
        self._faults = faults
        self._lock = threading.Lock()
        self._seed = faults.seed
        self._rng = random.Random(faults.seed)

    def roll(self) -> Verdict:
        faults = self._faults
        with self._lock:
            if faults.seed != self._seed:  # a test re-seeded mid-run: make that reproducible
                self._seed = faults.seed
                self._rng = random.Random(faults.seed)
            draw = self._rng.random()
        odds: tuple[tuple[Verdict, float], ...] = (
            ("drop", faults.drop_connection_rate),
            ("429", faults.random_429_rate),
            ("503", faults.random_503_rate),
        )
        for verdict, rate in odds:
            if draw < rate:
                return verdict
            draw -= rate
        return "ok"

    def shuffle(self, items: list[T]) -> None:
        with self._lock:
            self._rng.shuffle(items)
