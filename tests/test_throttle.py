"""The Graph client's throttling decisions, as pure units (fake clocks, no HTTP)."""

from __future__ import annotations

import threading
from email.utils import formatdate

import pytest

from reconciler.graph.throttle import (
    RETRY_AFTER_CAP_S,
    AdaptiveLimiter,
    Aimd,
    NotBefore,
    Pacer,
    Signal,
    backoff_delay,
    parse_retry_after,
)


class FakeClock:
    """A clock that only moves when slept on, so waits are exact and instant."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# -- Retry-After --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [("10", 10.0), ("2.128", 2.128), (" 0 ", 0.0), ("0.001", 0.001), ("-3", 0.0)],
)
def test_retry_after_seconds(header: str, expected: float) -> None:
    assert parse_retry_after(header) == pytest.approx(expected)


def test_retry_after_http_date_is_measured_from_now() -> None:
    now = 1_700_000_000.0
    header = formatdate(now + 7, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(7.0)
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0


@pytest.mark.parametrize("header", [None, "", "soon", "nan", "inf", "Tue, 99 Foo 2020"])
def test_retry_after_unusable_means_none(header: str | None) -> None:
    assert parse_retry_after(header) is None


def test_retry_after_is_capped() -> None:
    assert parse_retry_after("86400") == RETRY_AFTER_CAP_S


# -- backoff ------------------------------------------------------------------------------


def test_backoff_is_full_jitter_over_an_exponential_ceiling() -> None:
    top = [backoff_delay(n, base=0.5, cap=30.0, rand=lambda: 1.0) for n in range(1, 9)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff_delay(5, base=0.5, cap=30.0, rand=lambda: 0.0) == 0.0
    assert backoff_delay(3, base=0.5, cap=30.0, rand=lambda: 0.25) == 0.5


# -- the shared gate ----------------------------------------------------------------------


def test_not_before_waits_until_the_latest_deadline() -> None:
    clock = FakeClock()
    gate = NotBefore(clock=clock, sleep=clock.sleep)
    gate.wait()
    assert clock.slept == []
    gate.defer(2.0)
    gate.defer(0.5)  # an earlier deadline never shortens the wait
    assert gate.remaining() == 2.0
    gate.wait()
    assert clock.now == 1002.0


def test_not_before_rechecks_when_pushed_during_the_wait() -> None:
    clock = FakeClock()
    gate = NotBefore(clock=clock, sleep=clock.sleep)
    gate.defer(1.0)
    pushed = False

    def sleep(seconds: float) -> None:
        nonlocal pushed
        clock.sleep(seconds)
        if not pushed:  # another thread got a 429 while we slept
            pushed = True
            gate.defer(3.0)

    gate._sleep = sleep
    gate.wait()
    assert clock.now == 1004.0


# -- AIMD ---------------------------------------------------------------------------------


def test_aimd_halves_once_per_congestion_event() -> None:
    state = Aimd(ceiling=8, limit=8)
    sent_before = state.epoch
    assert state.on_throttle(sent_before) is True
    assert state.limit == 4
    # the other requests that were in flight when the first 429 came back
    assert state.on_throttle(sent_before) is False
    assert state.on_throttle(sent_before) is False
    assert state.limit == 4
    assert state.on_throttle(state.epoch) is True  # sent after the cut: a new event
    assert state.limit == 2


def test_aimd_never_goes_below_one() -> None:
    state = Aimd(ceiling=2, limit=1)
    state.on_throttle(state.epoch)
    assert state.limit == 1


def test_aimd_grows_by_one_after_a_run_of_successes_up_to_the_ceiling() -> None:
    state = Aimd(ceiling=3, limit=1, growth=2.0)
    assert [state.on_success() for _ in range(2)] == [False, True]  # limit 1 * growth 2
    assert state.limit == 2
    assert [state.on_success() for _ in range(4)] == [False, False, False, True]
    assert state.limit == 3
    assert not any(state.on_success() for _ in range(50))
    assert state.limit == 3


def test_aimd_throttle_resets_the_success_run() -> None:
    state = Aimd(ceiling=4, limit=2, growth=2.0, epoch=1)
    for _ in range(3):
        state.on_success()
    state.on_throttle(0)  # an old 429: no cut, but the run of successes is broken
    assert (state.limit, state.streak) == (2, 0)
    assert [state.on_success() for _ in range(4)] == [False, False, False, True]


def test_limiter_gates_threads_at_the_limit() -> None:
    limiter = AdaptiveLimiter(2)
    inside = threading.Semaphore(0)
    release = threading.Event()
    entered: list[int] = []
    peak = 0
    lock = threading.Lock()
    active = 0

    def worker(n: int) -> None:
        nonlocal peak, active
        with limiter.slot() as ticket:
            with lock:
                active += 1
                peak = max(peak, active)
                entered.append(n)
            inside.release()
            release.wait(5)
            ticket.signal = Signal.OK
            with lock:
                active -= 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    assert inside.acquire(timeout=5) and inside.acquire(timeout=5)
    assert not inside.acquire(timeout=0.2)  # a third cannot enter while two hold slots
    release.set()
    for t in threads:
        t.join(5)
    assert peak == 2 and sorted(entered) == [0, 1, 2, 3, 4]


def test_limiter_throttle_halves_and_stale_throttle_is_ignored() -> None:
    limiter = AdaptiveLimiter(4)
    with limiter.slot() as a, limiter.slot() as b:
        a.signal = b.signal = Signal.THROTTLED
    assert limiter.limit == 2  # both were sent in the same epoch: one cut


# -- pacing -------------------------------------------------------------------------------


def learned(clock: FakeClock, pacer: Pacer, sends: int, over: float) -> None:
    """Drive a pacer through a first congestion event, `sends` writes over `over` seconds,
    and a second event: the second one teaches it a rate."""
    pacer.on_congestion()
    for _ in range(sends):
        clock.now += over / sends
        pacer.delay()
    pacer.on_congestion()


def test_pacer_does_not_pace_until_it_has_learned() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    assert pacer.delay() == 0.0 and pacer.rate is None
    pacer.on_congestion()  # first event: start measuring, no rate yet
    assert pacer.rate is None and pacer.delay() == 0.0


def test_pacer_learns_the_send_rate_and_spaces_writes() -> None:
    clock = FakeClock()
    pacer = Pacer(headroom=0.9, increase_per_s=0.0, clock=clock, sleep=clock.sleep)
    learned(clock, pacer, sends=40, over=2.0)  # 20 writes a second
    assert pacer.rate == pytest.approx(18.0)
    delays = [pacer.delay() for _ in range(3)]
    assert delays == pytest.approx([1 / 18, 2 / 18, 3 / 18])
    pacer.wait()
    assert clock.slept == pytest.approx([4 / 18])


def test_pacer_probes_upward_between_congestion_events() -> None:
    clock = FakeClock()
    pacer = Pacer(headroom=1.0, increase_per_s=0.5, clock=clock, sleep=clock.sleep)
    learned(clock, pacer, sends=10, over=1.0)
    assert pacer.rate == pytest.approx(10.0)
    clock.now += 4
    assert pacer.rate == pytest.approx(12.0)


def test_pacer_learns_at_most_once_per_min_span() -> None:
    clock = FakeClock()
    pacer = Pacer(min_span_s=1.0, headroom=1.0, increase_per_s=0.0, clock=clock)
    pacer.on_congestion()
    clock.now += 0.2
    pacer.on_congestion()  # too soon after measuring began to trust a rate
    assert pacer.rate is None
    learned(clock, pacer, sends=10, over=1.0)
    first = pacer.rate
    for _ in range(5):  # a burst of 429s right after the lesson: ignored
        clock.now += 0.1
        pacer.on_congestion()
    assert pacer.rate == first


def test_pacer_has_a_floor() -> None:
    clock = FakeClock()
    pacer = Pacer(min_rate=0.5, clock=clock)
    pacer.on_congestion()
    clock.now += 10
    pacer.on_congestion()  # nothing sent at all
    assert pacer.rate == 0.5


def test_pacer_charges_a_batch_for_all_its_writes() -> None:
    clock = FakeClock()
    pacer = Pacer(headroom=1.0, increase_per_s=0.0, clock=clock)
    pacer.on_congestion()
    clock.now += 2
    pacer.delay(writes=20)
    pacer.on_congestion()
    assert pacer.rate == pytest.approx(10.0)
    assert pacer.delay(writes=20) == pytest.approx(0.1)  # goes at its first slot...
    assert pacer.delay() == pytest.approx(0.1 + 2.0)  # ...and the next waits out all 20


def test_limiter_feeds_the_pacer_once_per_event() -> None:
    clock = FakeClock()
    pacer = Pacer(increase_per_s=0.0, clock=clock, sleep=clock.sleep)
    limiter = AdaptiveLimiter(4, pacer=pacer)
    with limiter.slot() as first:
        first.signal = Signal.THROTTLED  # event 1: measuring starts
    for _ in range(30):
        with limiter.slot() as ok:
            clock.now += 0.1
            ok.signal = Signal.OK
    with limiter.slot() as second, limiter.slot() as also_in_flight:
        second.signal = also_in_flight.signal = Signal.THROTTLED
    # 32 writes went out since the first event (30 + the two throttled), over 3 s
    assert pacer.rate == pytest.approx(0.95 * 32 / 3.0)
    assert limiter.limit == 1  # 4, halved to 2, grown to 3 after 16 successes, halved to 1


def test_pacer_remembers_only_one_window_of_sends() -> None:
    # Throttled once, then 10,000 writes over 100 s: a long run must not keep a send time
    # per write until it ends, only the last window's, which is all it ever measures.
    clock = FakeClock()
    pacer = Pacer(window_s=10.0, clock=clock, sleep=clock.sleep)
    pacer.on_congestion()
    for _ in range(10_000):
        clock.now += 0.01
        pacer.delay()
    assert len(pacer._sent) <= 1_001
