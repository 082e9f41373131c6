"""Throttling decisions for the Graph client, kept apart from HTTP so they can be tested alone.

- parse_retry_after / backoff_delay: how long to wait before a retry.
- NotBefore: the one moment, shared by every thread, before which nothing goes to Graph.
- Aimd + AdaptiveLimiter: how many uploads may be in flight, halved on throttling and grown
  back slowly (additive increase, multiplicative decrease).
- Pacer: the write rate learned from 429s, so a steady quota is met without bouncing off it.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

log = logging.getLogger("reconciler.graph")

# A Retry-After longer than this is treated as this: an unattended run should come back and
# ask rather than sleep for hours on one odd header (Graph answers early requests with a
# fresh Retry-After, so asking early costs one request).
RETRY_AFTER_CAP_S: Final = 300.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait, from a Retry-After header: integer or fractional seconds, or HTTP-date.

    `now` is the wall-clock time (epoch seconds) an HTTP-date is measured from. Returns None
    when there is no usable value, so the caller falls back to its own backoff.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until_http_date(text, time.time() if now is None else now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), RETRY_AFTER_CAP_S)


def _seconds_until_http_date(text: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with full jitter, for the retry after failed attempt `attempt` (1-based).

    Full jitter (uniform over [0, min(cap, base·2^(n-1))]) spreads threads that failed together
    so they do not come back together.
    """
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    return rand() * ceiling


class NotBefore:
    """A shared 'no request before T' moment, on the monotonic clock. Only moves forward."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._until = -math.inf

    def defer(self, seconds: float) -> None:
        """Nothing may be sent for `seconds` from now (unless a later moment is already set)."""
        until = self._clock() + seconds
        with self._lock:
            self._until = max(self._until, until)

    def remaining(self) -> float:
        return max(0.0, self._until - self._clock())

    def wait(self) -> None:
        """Return once the moment has passed; re-checks, since another thread may push it."""
        while (left := self.remaining()) > 0:
            self._sleep(left)


class Signal(enum.Enum):
    """What one request told the limiter about congestion."""

    OK = "ok"
    THROTTLED = "throttled"
    NEUTRAL = "neutral"  # an error that says nothing about load (404, a reset...)


@dataclass(slots=True)
class Aimd:
    """The adaptive concurrency limit. Pure state; AdaptiveLimiter adds the locking.

    `epoch` counts decreases. A request remembers the epoch it was sent in; a 429 for a
    request sent before the latest decrease belongs to the congestion already acted on, so
    it does not halve the limit again (one decrease per congestion event, as in TCP).
    """

    ceiling: int
    limit: int
    growth: float = 8.0  # successes per +1 = limit * growth
    epoch: int = 0
    streak: int = 0

    def on_success(self) -> bool:
        """Count a success; True when the limit grew."""
        self.streak += 1
        if self.limit >= self.ceiling or self.streak < self.limit * self.growth:
            return False
        self.limit += 1
        self.streak = 0
        return True

    def on_throttle(self, sent_epoch: int) -> bool:
        """Halve the limit (min 1) unless this 429 is from before the last decrease."""
        self.streak = 0
        if sent_epoch < self.epoch:
            return False
        self.limit = max(1, self.limit // 2)
        self.epoch += 1
        return True


class AdaptiveLimiter:
    """Gates concurrent uploads by the Aimd limit; threads beyond it wait on a condition.

    With a Pacer, each slot also waits for its paced send time, and the limiter tells the
    pacer about each congestion event (a decrease).
    """

    def __init__(self, ceiling: int, *, growth: float = 8.0, pacer: Pacer | None = None) -> None:
        ceiling = max(1, ceiling)
        self._state = Aimd(ceiling=ceiling, limit=ceiling, growth=growth)
        self._cond = threading.Condition()
        self._in_flight = 0
        self._pacer = pacer

    @property
    def limit(self) -> int:
        with self._cond:
            return self._state.limit

    @contextmanager
    def slot(self, writes: int = 1) -> Iterator[Ticket]:
        """Hold one in-flight slot for one request carrying `writes` photo writes; report
        its outcome on the ticket."""
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight < self._state.limit)
            self._in_flight += 1
            ticket = Ticket(self._state.epoch)
        try:
            if self._pacer is not None:
                self._pacer.wait(writes)
            yield ticket
        finally:
            with self._cond:
                self._in_flight -= 1
                self._apply(ticket)
                self._cond.notify_all()

    def _apply(self, ticket: Ticket) -> None:
        if ticket.signal is Signal.OK:
            self._state.on_success()
        elif ticket.signal is Signal.THROTTLED:
            before = self._state.limit
            if not self._state.on_throttle(ticket.epoch):
                return
            if self._state.limit != before:
                log.info("throttled: upload concurrency %d -> %d", before, self._state.limit)
            if self._pacer is not None:
                self._pacer.on_congestion()


class Ticket:
    """One request's pass through the limiter: its send epoch and, once known, its outcome."""

    __slots__ = ("epoch", "signal")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.signal = Signal.NEUTRAL


class Pacer:
    """A write rate learned from 429s, applied on top of AIMD concurrency.

    Why: under a token-bucket write quota, concurrency alone keeps bouncing off the limit —
    each AIMD probe drains the bucket, and every 429 then costs a whole Retry-After in which
    nothing is sent; and once latency is short, even one request in flight can outrun the
    quota. A 429 means the bucket is empty, so from the first congestion event on, the writes
    sent per second of wall time (stalls included: the bucket refills during them) converge
    on the quota. Sent, not accepted: Graph counts throttled requests against the quota too,
    and pacing on successes alone would halve the rate whenever half the writes fail.

    At later congestion events — at most one per `min_span_s`, so a burst of 429s is one
    lesson, not many — the pacer spaces writes at `headroom` times the measured rate, then
    creeps up by `increase_per_s` every second, probing for a larger quota. Until the first
    lesson it does not pace at all: a run that is never throttled is never slowed.
    """

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        min_span_s: float = 1.0,
        headroom: float = 0.95,
        increase_per_s: float = 0.5,
        min_rate: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._window = window_s
        self._min_span = min_span_s
        self._headroom = headroom
        self._increase = increase_per_s
        self._min_rate = min_rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()  # send slots since measuring began
        self._since: float | None = None  # the first congestion event: measuring starts
        self._last_lesson = -math.inf
        self._rate: float | None = None
        self._rate_set_at = 0.0
        self._next_slot = -math.inf

    @property
    def rate(self) -> float | None:
        """Writes per second currently allowed; None while not pacing."""
        with self._lock:
            return self._current_rate(self._clock())

    def delay(self, writes: int = 1) -> float:
        """Reserve send slots for `writes` writes; the seconds to wait before sending.

        A multi-write request goes at its first slot and pushes the next sender back by the
        rest, like a token bucket letting a small burst through and charging for it.
        """
        with self._lock:
            now = self._clock()
            rate = self._current_rate(now)
            slot = now if rate is None else max(now, self._next_slot + 1.0 / rate)
            if rate is not None:
                self._next_slot = slot + (writes - 1) / rate
            if self._since is not None:
                self._sent.extend([slot] * writes)
                self._forget_before(now - self._window)
            return slot - now

    def wait(self, writes: int = 1) -> None:
        if (seconds := self.delay(writes)) > 0:
            self._sleep(seconds)

    def on_congestion(self) -> None:
        """A new congestion event (one per AIMD decrease): (re)learn the rate."""
        with self._lock:
            now = self._clock()
            if self._since is None:
                self._since = now  # the bucket is empty now: a clean start for measuring
                return
            span = min(self._window, now - self._since)
            if span < self._min_span or now - self._last_lesson < self._min_span:
                return
            self._forget_before(now - self._window)
            measured = len(self._sent) / span
            self._rate = max(self._min_rate, self._headroom * measured)
            self._last_lesson = self._rate_set_at = self._next_slot = now
            log.info("throttled: pacing uploads at %.1f/s", self._rate)

    def _forget_before(self, oldest: float) -> None:
        # Only the last window of sends is ever measured; without this a run throttled once
        # would keep one entry per write until it ended.
        while self._sent and self._sent[0] < oldest:
            self._sent.popleft()

    def _current_rate(self, now: float) -> float | None:
        if self._rate is None:
            return None
        return self._rate + self._increase * max(0.0, now - self._rate_set_at)
