"""A crash campaign: real `photosync reconcile` processes SIGKILLed at random moments, each
followed by a run that is allowed to finish, with the promises checked after every round.

Used by tests/test_crash_campaign.py (30+ kills in CI) and bench/bench_crash_soak.py (200+).
The Graph side is the emulator in this process; photosync runs as a child process, as a
scheduler would start it. See docs/reliability.md, "Crash campaign".
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from PIL import Image

from reconciler.emulator import GraphEmulator

PHASES = ("start or scan", "users", "upload", "move or record")


def small_jpeg(seed: int) -> bytes:
    """A real JPEG that photosync uploads byte for byte (small, no metadata)."""
    buf = io.BytesIO()
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    Image.new("RGB", (64 + seed % 7, 64), colour).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Campaign:
    emulator: GraphEmulator
    root: Path
    completed_dir: Path
    rng: Random
    concurrency: int = 2
    # file name -> the bytes of the version that must end on its user
    wanted: dict[str, bytes] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # file name -> user id
    stored: list[tuple[str, str]] = field(default_factory=list)  # (user id, sha256) Graph kept
    kills: int = 0
    uploads_needed: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    run_seconds: float = 2.0  # a finished run's duration, learned as the campaign goes
    requests_per_run: int = 4  # the most Graph requests a finished run sent, likewise
    _after_store: tuple[int, float, subprocess.Popen[bytes]] | None = None
    _serial: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.inbox = self.root / "inbox"
        self.failed = self.root / "failed"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.ledger = self.root / "ledger" / "photosync.db"
        self.emulator.faults.after_photo_stored = self._on_stored

    def _on_stored(self, user_id: str) -> None:
        photo = self.emulator.tenant.photo(user_id)
        assert photo is not None
        with self._lock:
            self.stored.append((user_id, sha256(photo.data)))
            count = len(self.stored)
        armed = self._after_store
        if armed is not None and count == armed[0]:
            _nth, delay, child = armed
            if delay:
                threading.Timer(delay, self._kill, (child,)).start()
            else:
                self._kill(child)  # before Graph's answer leaves: stored, not yet told

    # -- work for the next run

    def drop_new_people(self, count: int) -> None:
        for _ in range(count):
            self._serial += 1
            name = f"Crash Person {self._serial}.jpg"
            self.users[name] = self.emulator.tenant.add_user(name.removesuffix(".jpg"))
            self._drop(name)

    def change_someone(self) -> None:
        """A new version of a photo that already landed: uploaded again, older kept aside."""
        landed = [n for n in self.users if not (self.inbox / n).exists()]
        if landed:
            self._drop(self.rng.choice(sorted(landed)))

    def _drop(self, name: str) -> None:
        self._serial += 1
        data = small_jpeg(self._serial)
        (self.inbox / name).write_bytes(data)
        self.wanted[name] = data
        self.uploads_needed += 1

    # -- runs

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "reconciler",
            "reconcile",
            "--json",
            "--graph-url",
            self.emulator.url,
            "--inbox-dir",
            str(self.inbox),
            "--completed-dir",
            str(self.completed_dir),
            "--failed-dir",
            str(self.failed),
            "--database-url",
            f"sqlite:///{self.ledger}",
            "--settle-seconds",
            "0",
            "--concurrency",
            str(self.concurrency),
        ]

    def environment(self) -> dict[str, str]:
        return self.emulator.client_environment(os.environ)

    def killed_run(self) -> None:
        """Start a run and SIGKILL it at a random moment. A third of the kills come at a random
        time of what a whole run takes (mostly start-up and scan), a third at a random Graph
        request of the run (users, lookups, photo reads), a third a random 0-200 ms after a
        random photo is stored (Graph has it, the run may not know yet; then the moves)."""
        writes_before = len(self.stored)
        requests_before = len(self.emulator.requests())  # token requests included
        child = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        mode = self.rng.choice(("time", "request", "stored"))
        deadline = self.rng.uniform(0.0, self.run_seconds) if mode == "time" else None
        pending = sum(1 for name in self.wanted if (self.inbox / name).exists())
        self._arm(child, mode, pending, writes_before)
        try:
            child.wait(timeout=deadline or self.run_seconds * 4)  # a random moment, not a sync
        except subprocess.TimeoutExpired:
            self._kill(child)
        finally:
            self.emulator.faults.before_request = None
            self._after_store = None
        if child.returncode == -signal.SIGKILL:
            self.kills += 1
            self.phases[self._phase(requests_before, writes_before)] += 1

    def _arm(self, child: subprocess.Popen[bytes], mode: str, pending: int, before: int) -> None:
        if mode == "request":
            target = self.rng.randint(1, max(1, self.requests_per_run))
            seen = [0]

            def on_request(_method: str, path: str) -> None:
                if path.startswith("/v1.0/"):
                    seen[0] += 1
                    if seen[0] == target:
                        self._kill(child)

            self.emulator.faults.before_request = on_request
        elif mode == "stored" and pending:
            nth = before + self.rng.randint(1, pending)
            delay = self.rng.choice((0.0, self.rng.uniform(0.0, 0.2)))
            self._after_store = (nth, delay, child)

    def _kill(self, child: subprocess.Popen[bytes]) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)

    def _phase(self, requests_before: int, writes_before: int) -> str:
        """Where the killed run was, as far as Graph saw it."""
        sent = [r for r in self.emulator.requests()[requests_before:] if not r.token_request]
        if not sent:
            return PHASES[0]
        if not any(r.method == "PUT" for r in sent):
            return PHASES[1]
        pending = sum(1 for name in self.wanted if (self.inbox / name).exists())
        return PHASES[2] if len(self.stored) - writes_before < pending else PHASES[3]

    def finishing_run(self) -> int:
        started = time.monotonic()
        requests_before = self.emulator.graph_request_count
        done = subprocess.run(
            self.command(), env=self.environment(), capture_output=True, text=True, timeout=300
        )
        self.run_seconds = max(0.5, time.monotonic() - started)
        sent = self.emulator.graph_request_count - requests_before
        self.requests_per_run = max(self.requests_per_run, sent)
        return done.returncode

    # -- the promises

    def violations(self) -> list[str]:
        found: list[str] = []
        tenant = self.emulator.tenant
        for name, data in self.wanted.items():
            photo = tenant.photo(self.users[name])
            if photo is None or photo.data != data:
                found.append(f"{name}: its user does not have the latest version")
        where: dict[str, list[Path]] = {}
        for folder in (self.inbox, self.completed_dir, self.failed):
            if not folder.exists():
                continue
            for entry in folder.iterdir():
                if entry.name.startswith("."):
                    found.append(f"{entry}: a leftover temporary file")
                    continue
                where.setdefault(sha256(entry.read_bytes()), []).append(entry)
        for name, data in self.wanted.items():
            places = where.get(sha256(data), [])
            if len(places) != 1:
                found.append(f"{name}: its latest version is in {len(places)} places")
        kept = self.completed_dir.iterdir() if self.completed_dir.exists() else iter(())
        completed = [p for p in kept if not p.name.startswith(".")]
        if len({sha256(p.read_bytes()) for p in completed}) != len(completed):
            found.append("completed_dir holds two copies of one photo")
        received = set(self.stored)
        with sqlite3.connect(self.ledger) as ledger:
            claimed = ledger.execute(
                "SELECT user_id, uploaded_sha256 FROM uploads WHERE status = 'succeeded'"
            ).fetchall()
        for user_id, uploaded in claimed:
            if (user_id, uploaded) not in received:
                found.append(f"the ledger claims an upload Graph never received ({user_id})")
        bound = self.uploads_needed + self.kills * self.concurrency
        if len(self.stored) > bound:
            found.append(f"{len(self.stored)} uploads for {self.uploads_needed} files (> {bound})")
        return found

    def round(self) -> list[str]:
        """One round: new work, a run killed at a random moment, a run that finishes."""
        self.drop_new_people(self.rng.randint(1, 4))
        if self.rng.random() < 0.3:
            self.change_someone()
        self.killed_run()
        code = self.finishing_run()
        problems = self.violations()
        if code != 0:
            problems.append(f"the run after the kill exited {code}")
        return problems
