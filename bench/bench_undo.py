"""Undo and drift against the loopback emulator.

(a) `photosync reconcile` of N photos for N users under a write quota (default 500, 40/s,
    50 ms latency), archive off and on: the archive adds 2 reads per upload, run beside
    the writes, so the run should stay within 1.2x of the rate bound N/rate either way.
(b) `photosync rollback` of that run, same quota: wall time against the same bound.
(c) `photosync verify` of U users (default 100,000) in a child process, so that its peak
    RSS is photosync's alone: requests (target <= ceil(U/20)), wall time, peak RSS; and
    the naive way, one metadata GET per user, timed on a sample of users in the same run
    and scaled to U.

    python bench/bench_undo.py [--photos 500] [--rate 40] [--latency 0.05] [--users 100000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from sqlalchemy import insert

from reconciler import app
from reconciler.config import Settings
from reconciler.emulator import Faults, GraphEmulator
from reconciler.graph.auth import TokenProvider, build_credential, token_scope
from reconciler.graph.client import GraphClient
from reconciler.ledger.db import Ledger
from reconciler.ledger.orm import InboxFileRow, RunRow, UploadRow, UserRow, utcnow
from reconciler.model import Outcome


def settings_for(emu: GraphEmulator, root: Path, **changes: object) -> Settings:
    inbox = root / "inbox"
    inbox.mkdir(exist_ok=True)
    values: dict[str, object] = {
        "graph_url": emu.url,
        "inbox_dir": inbox,
        "completed_dir": root / "done",
        "failed_dir": root / "failed",
        "database_url": f"sqlite:///{root}/ledger.db",
        "settle_seconds": 0,
        "retry_attempts": 10,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


def use_emulator(emu: GraphEmulator) -> None:
    os.environ.update(emu.client_environment(os.environ))


def write_photos(inbox: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        colour = (i % 256, (i // 256) % 256, 120)
        Image.new("RGB", (96, 96), colour).save(inbox / f"{name}.jpg", quality=85)


def reconcile_and_rollback(
    n: int, rate: float, latency: float, archive: bool
) -> tuple[float, int, float | None, int]:
    """(reconcile wall s, its requests, rollback wall s or None, users restored)."""
    faults = Faults(latency_s=latency, write_rate_per_s=rate)
    with GraphEmulator(faults=faults) as emu, tempfile.TemporaryDirectory() as tmp:
        use_emulator(emu)
        ids = emu.tenant.add_users(n, prefix="Bench Person")
        for i, uid in enumerate(ids):  # everyone starts with a photo of their own
            image = Image.new("RGB", (64, 64), (200, i % 256, 0))
            path = Path(tmp) / "own.jpg"
            image.save(path, quality=80)
            emu.change_photo_from_outside(uid, path.read_bytes())
        root = Path(tmp)
        settings = settings_for(emu, root, archive=archive)
        write_photos(settings.inbox_dir, [f"Bench Person {i + 1}" for i in range(n)])
        started = time.monotonic()
        summary, _ = app.reconcile(settings)
        wall = time.monotonic() - started
        assert summary.counts[Outcome.UPLOADED] == n, summary.counts
        if not archive:
            return wall, summary.graph_requests, None, 0
        started = time.monotonic()
        undone = app.rollback(settings, summary.run_id)
        rollback_wall = time.monotonic() - started
        return wall, summary.graph_requests, rollback_wall, undone.counts[Outcome.RESTORED]


# --- (c) verify of many users


def seed_verify(emu: GraphEmulator, root: Path, users: int, drifted: int) -> Settings:
    """U users with a photo photosync set and its ETag in the ledger, as after many runs;
    the first `drifted` then changed by someone else."""
    ids = emu.tenant.add_users(users, prefix="Verify Person")
    data = b"\xff\xd8 photo bytes are not decoded by the tenant store"
    settings = settings_for(emu, root)
    ledger = Ledger(settings.database_url)
    ledger.upgrade()
    now = utcnow()
    with ledger.session() as session:
        run = RunRow(command="reconcile", dry_run=False, counts={}, started_at=now, finished_at=now)
        session.add(run)
        session.flush()
        user_rows, file_rows, upload_rows = [], [], []
        for n, uid in enumerate(ids):
            photo = emu.tenant.store_photo(uid, data, "image/jpeg", (96, 96), "image/jpeg")
            name = f"Verify Person {n + 1}"
            user_rows.append(
                {"id": uid, "display_name": name, "account_enabled": True, "user_type": "Member"}
            )
            file_rows.append(
                {
                    "id": n + 1,
                    "name": f"{name}.jpg",
                    "path": str(settings.inbox_dir / f"{name}.jpg"),
                    "size": 1,
                    "mtime_ns": 0,
                    "ctime_ns": 0,
                    "inode": n,
                    "sha256": f"{n:064x}",
                    "location": "completed",
                    "first_seen_at": now,
                }
            )
            upload_rows.append(
                {
                    "run_id": run.id,
                    "file_id": n + 1,
                    "user_id": uid,
                    "source_sha256": f"{n:064x}",
                    "status": "succeeded",
                    "replaced_object": "none",
                    "uploaded_object": f"{n:064x}",
                    "etag_after": photo.etag,
                    "started_at": now,
                    "finished_at": now,
                    "attempts": 1,
                }
            )
        connection = session.connection()
        for table, rows in (
            (UserRow, user_rows),
            (InboxFileRow, file_rows),
            (UploadRow, upload_rows),
        ):
            for start in range(0, len(rows), 2000):
                connection.execute(insert(table), rows[start : start + 2000])
    ledger.dispose()
    for uid in ids[:drifted]:
        emu.change_photo_from_outside(uid, None)
    return settings


_CHILD = """
import json, sys, time
from reconciler import app
from reconciler.config import Settings
from pathlib import Path
args = json.loads(sys.argv[1])
settings = Settings(graph_url=args["url"], inbox_dir=Path(args["inbox"]),
                    completed_dir=Path(args["done"]), failed_dir=Path(args["failed"]),
                    database_url=args["db"], settle_seconds=0)
def hwm_kb():
    # VmHWM, not ru_maxrss: getrusage's peak survives execve, so it would be the parent's.
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
imported_kb = hwm_kb()
started = time.monotonic()
summary, drifts = app.verify(settings)
wall = time.monotonic() - started
rss_kb = hwm_kb()
print(json.dumps({"wall": wall, "requests": summary.graph_requests, "drifted": len(drifts),
                  "rss_mb": rss_kb / 1024, "imported_mb": imported_kb / 1024}))
"""


def verify_in_child(settings: Settings, emu: GraphEmulator) -> dict[str, float]:
    payload = {
        "url": emu.url,
        "inbox": str(settings.inbox_dir),
        "done": str(settings.completed_dir),
        "failed": str(settings.failed_dir),
        "db": settings.database_url,
    }
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(payload)],
        env=emu.client_environment(os.environ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def naive_seconds_per_user(emu: GraphEmulator, sample: list[str]) -> float:
    """One GET /users/{id}/photo per user, 4 at a time, as a script would do it."""
    tokens = TokenProvider(
        lambda: build_credential("managed-identity", graph_url=emu.url),
        mode="managed-identity",
        scope=token_scope(emu.url),
    )
    tokens.token()
    with GraphClient(emu.url, tokens, concurrency=4) as client:
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(client.photo_etag, sample))
        return (time.monotonic() - started) / len(sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--drifted", type=int, default=100)
    parser.add_argument("--naive-sample", type=int, default=5_000)
    args = parser.parse_args()
    n, rate = args.photos, args.rate
    bound = n / rate

    print(
        f"(a) reconcile of {n} photos, write quota {rate:g}/s, latency {args.latency * 1000:.0f} ms"
    )
    print(f"    rate bound {n}/{rate:g} = {bound:.1f} s; target <= 1.2x\n")
    off_wall, off_requests, _, _ = reconcile_and_rollback(n, rate, args.latency, archive=False)
    on_wall, on_requests, rollback_wall, restored = reconcile_and_rollback(
        n, rate, args.latency, archive=True
    )
    print(f"    {'archive':<8} {'wall':>7} {'x bound':>8} {'requests':>9} {'per upload':>11}")
    for label, wall, requests in (("off", off_wall, off_requests), ("on", on_wall, on_requests)):
        print(
            f"    {label:<8} {wall:>6.2f}s {wall / bound:>7.2f}x {requests:>9} "
            f"{requests / n:>11.2f}"
        )
    assert rollback_wall is not None
    print(f"\n(b) rollback of that run ({restored} photos put back), same quota")
    print(
        f"    wall {rollback_wall:.2f} s = {rollback_wall / bound:.2f}x "
        f"the rate bound {bound:.1f} s"
    )

    users = args.users
    print(f"\n(c) verify of {users:,} users ({args.drifted} changed outside), no latency\n")
    with GraphEmulator() as emu, tempfile.TemporaryDirectory() as tmp:
        use_emulator(emu)
        settings = seed_verify(emu, Path(tmp), users, args.drifted)
        result = verify_in_child(settings, emu)
        sample = [r.id for r in emu.tenant.records()[: args.naive_sample]]
        naive = naive_seconds_per_user(emu, sample) * users
    budget = math.ceil(users / 20)
    verdict = "ok" if result["requests"] <= budget else "OVER"
    print(f"    requests   {int(result['requests']):>8}  (ceil(U/20) = {budget}) {verdict}")
    print(f"    drifted    {int(result['drifted']):>8}")
    print(f"    wall       {result['wall']:>8.1f} s")
    print(
        f"    peak RSS   {result['rss_mb']:>8.0f} MB (child process; "
        f"{result['imported_mb']:.0f} MB of it after the imports, before verify)"
    )
    print(
        f"    naive, one GET per user (4 at a time, {len(sample):,}-user sample scaled): "
        f"{users:,} requests, {naive:.1f} s -> verify is {naive / result['wall']:.1f}x faster "
        f"with {users / result['requests']:.0f}x fewer requests"
    )


if __name__ == "__main__":
    main()
