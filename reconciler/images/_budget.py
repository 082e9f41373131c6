"""A process-wide memory budget for decoding images, for reconciler.images (private to it).

The executor prepares several photos at once, and a decoded photo is far larger than its file:
a 63-megapixel PNG of a few megabytes becomes 250 MB of pixels, plus the copies the pipeline
makes. Four of those at once would need gigabytes. So every decode first reserves what it will
need from one shared budget and waits while others hold it; small photos still decode in
parallel, large ones take turns.

Guarantees (see docs/reliability.md):
- the sum of reservations held at once never exceeds the capacity;
- a reservation larger than the whole capacity is granted the whole capacity, so it runs alone
  rather than never;
- requests are granted in arrival order, so a large one is not starved by a stream of small
  ones that would each fit (the cost is that small ones queue behind a large one);
- a reservation is released however its holder leaves, error or not, and a waiter that is
  interrupted leaves the queue.

A budget on allocations only bounds memory if freed pixels go back to the operating system.
With glibc they often do not: its threshold for serving an allocation with its own mapping
rises to the size of the last one freed (up to 32 MiB), so Pillow's 16 MiB pixel blocks soon
come from per-thread heaps, which keep the memory after it is freed; four threads taking turns
then hold four decodes' worth of RSS anyway. `return_large_blocks_to_the_os` pins that
threshold (measured by bench/bench_images.py: 4 x 63 MP RGBA PNGs, one at a time, peak at
1.6 GB without it and 0.55 GB with it).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BudgetStats:
    """A snapshot of the counters, for tests and benchmarks to check the guarantees."""

    capacity: int
    reserved: int  # bytes held now
    holders: int  # reservations held now
    waiting: int  # requests queued now
    peak_reserved: int  # most bytes ever held at once
    peak_holders: int  # most reservations ever held at once
    granted: int  # reservations granted so far


class MemoryBudget:
    """Bytes of decoded image that may exist at once, shared by every thread."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a memory budget must be positive: {capacity}")
        self.capacity = capacity
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()
        self._reserved = 0
        self._holders = 0
        self._peak_reserved = 0
        self._peak_holders = 0
        self._granted = 0

    @contextlib.contextmanager
    def reserve(self, amount: int) -> Iterator[int]:
        """Hold `amount` bytes (at most the whole capacity) for the duration of the block;
        yields what was granted."""
        granted = max(0, min(amount, self.capacity))
        self._acquire(granted)
        try:
            yield granted
        finally:
            self._release(granted)

    def stats(self) -> BudgetStats:
        with self._changed:
            return BudgetStats(
                capacity=self.capacity,
                reserved=self._reserved,
                holders=self._holders,
                waiting=len(self._queue),
                peak_reserved=self._peak_reserved,
                peak_holders=self._peak_holders,
                granted=self._granted,
            )

    def _acquire(self, amount: int) -> None:
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            try:
                self._changed.wait_for(
                    lambda: self._queue[0] is ticket and self._reserved + amount <= self.capacity
                )
            except BaseException:
                # Interrupted while queued (KeyboardInterrupt): leave the queue, or everyone
                # behind this ticket would wait for ever.
                self._queue.remove(ticket)
                self._changed.notify_all()
                raise
            self._queue.popleft()
            self._reserved += amount
            self._holders += 1
            self._granted += 1
            self._peak_reserved = max(self._peak_reserved, self._reserved)
            self._peak_holders = max(self._peak_holders, self._holders)
            # The next in line may fit in what is left.
            self._changed.notify_all()

    def _release(self, amount: int) -> None:
        with self._changed:
            self._reserved -= amount
            self._holders -= 1
            self._changed.notify_all()


# glibc's mallopt parameter for the size from which an allocation gets a mapping of its own,
# which free() returns to the system at once. Below Pillow's 16 MiB pixel blocks, above
# everything small and frequent.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 2**20


@functools.cache
def return_large_blocks_to_the_os() -> bool:
    """Make large allocations (decoded pixels) go back to the system when freed, on glibc;
    elsewhere (Windows, macOS, musl) do nothing. True if the setting was made.

    Process-wide by nature, and harmless to everything else in the process: only allocations
    of 4 MiB and more are affected, and they cost a mapping each, which is small next to
    filling 4 MiB.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
