"""Refreshing a large tenant's users into the ledger: wall time, Graph requests, peak memory.

The parent process runs the Graph emulator with --users users; every measurement runs in a
child process, so the emulator's own copy of the tenant never counts against the measured
peak RSS (ru_maxrss of the child, read at its end). Three children, in this order:

- baseline: what the PowerShell runbook does (Get-MgUser -All): page through /v1.0/users with
  the default page size and no $select, keeping every user in memory; plain requests, with a
  token from the same managed-identity credential;
- ours: reconciler.app.refresh_users(full=True) into a fresh, migrated SQLite ledger;
- delta: after 10 users change in the emulator, refresh_users(full=False) on that ledger.

Targets for ours: < 10 s and peak RSS < 250 MB.

    python bench/bench_refresh.py [--users 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from reconciler.emulator import identity_environment

REFRESH_TARGET_S = 10.0
RSS_TARGET_MB = 250.0
CHANGED_USERS = 10
CHILD_TIMEOUT_S = 240


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def own_peak_rss_mb() -> float:
    """VmHWM: the peak RSS of this process image alone. ru_maxrss also keeps the RSS of the
    image that exec replaced, which for a child spawned by a big parent is the parent's."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_for_go() -> None:
    """Children are spawned before the parent builds the tenant (see bench()); they wait
    here, imports done, until the parent says it is their turn."""
    sys.stdin.readline()


# --- children: each prints one JSON object on stdout


def child_ours(url: str, db: Path, *, full: bool) -> dict[str, Any]:
    from sqlalchemy import func, select

    from reconciler import app
    from reconciler.config import Settings
    from reconciler.ledger import orm, repository
    from reconciler.ledger.db import Ledger

    wait_for_go()
    ledger = Ledger(f"sqlite:///{db}")
    started = time.perf_counter()
    ledger.upgrade()
    upgrade_s = time.perf_counter() - started
    client = app.build_client(Settings(graph_url=url))
    try:
        started = time.perf_counter()
        app.refresh_users(client, ledger, full=full, progress=app.Progress())
        seconds = time.perf_counter() - started
        # Read before the checks below, which are the bench's, not the refresh's.
        peak, own_peak = peak_rss_mb(), own_peak_rss_mb()
        requests = client.request_count
    finally:
        client.close()
    with ledger.session() as session:
        users = repository.count_users(session)
        renamed = session.scalar(
            select(func.count()).where(orm.UserRow.display_name.startswith("Renamed "))
        )
    ledger.dispose()
    return {
        "seconds": seconds,
        "upgrade_s": upgrade_s,
        "requests": requests,
        "users": users,
        "renamed": renamed,
        "peak_rss_mb": peak,
        "own_peak_rss_mb": own_peak,
    }


def child_baseline(url: str) -> dict[str, Any]:
    import requests

    from reconciler.graph.auth import build_credential, token_scope

    wait_for_go()
    started = time.perf_counter()
    token = build_credential("managed-identity", graph_url=url).get_token(token_scope(url)).token
    users: list[dict[str, Any]] = []
    count = 0
    next_link: str | None = f"{url}/v1.0/users"
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        while next_link is not None:
            response = session.get(next_link, timeout=60)
            response.raise_for_status()
            count += 1
            page = response.json()
            users.extend(page["value"])
            next_link = page.get("@odata.nextLink")
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "requests": count,
        "users": len(users),
        "peak_rss_mb": peak_rss_mb(),
        "own_peak_rss_mb": own_peak_rss_mb(),
    }


# --- parent


def spawn_child(kind: str, url: str, db: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--child", kind, "--url", url, "--db", str(db)]
    return subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_child(kind: str, child: subprocess.Popen[str]) -> dict[str, Any]:
    """Let a waiting child go, and collect its one-line JSON report."""
    stdout, stderr = child.communicate("go\n", timeout=CHILD_TIMEOUT_S)
    if child.returncode != 0:
        raise SystemExit(f"the {kind} child failed ({child.returncode}):\n{stderr}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000, help="users in the tenant")
    parser.add_argument("--child", choices=("ours", "delta", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        if args.child == "baseline":
            result = child_baseline(args.url)
        else:
            result = child_ours(args.url, args.db, full=args.child == "ours")
        print(json.dumps(result))
        return 0
    return bench(args.users)


def bench(users: int) -> int:
    # Imported here, so the children (which import what they measure) do not pay for it.
    from reconciler.emulator import GraphEmulator

    with (
        tempfile.TemporaryDirectory(prefix="photosync-bench-refresh-") as tmp,
        GraphEmulator() as emu,
    ):
        db = Path(tmp) / "photosync.db"
        env = identity_environment(os.environ, emu.managed_identity_env())
        # Spawned while the parent is still small: a child's ru_maxrss starts from the RSS
        # of the parent it was forked from, and the tenant below is the parent's to hold.
        kinds = ("baseline", "ours", "delta")
        children = {kind: spawn_child(kind, emu.url, db, env) for kind in kinds}
        try:
            started = time.perf_counter()
            ids = emu.tenant.add_users(users)
            print(f"tenant of {users} users built in {time.perf_counter() - started:.1f} s")
            results: dict[str, dict[str, Any]] = {}
            for kind in kinds:
                if kind == "delta":
                    step = max(1, len(ids) // CHANGED_USERS)
                    for n, user_id in enumerate(ids[::step][:CHANGED_USERS]):
                        emu.tenant.update_user(user_id, displayName=f"Renamed {n}")
                emu.reset_log()
                results[kind] = run_child(kind, children[kind])
                results[kind]["seen_by_emulator"] = emu.graph_request_count
        finally:
            for child in children.values():
                if child.poll() is None:
                    child.kill()
                    child.wait()

    base, ours, delta = results["baseline"], results["ours"], results["delta"]
    for name, r in (("baseline (runbook way)", base), ("ours (refresh_users full)", ours)):
        print(
            f"{name:27s} {r['seconds']:6.2f} s  {r['requests']:5d} requests "
            f"(emulator saw {r['seen_by_emulator']})  peak RSS {r['peak_rss_mb']:6.1f} MB "
            f"(VmHWM {r['own_peak_rss_mb']:6.1f} MB)  users {r['users']}"
        )
    print(f"    ours: ledger upgrade before the refresh took {ours['upgrade_s']:.2f} s (not timed)")
    print(
        f"ratio baseline/ours: time {base['seconds'] / ours['seconds']:.1f}x, "
        f"requests {base['requests'] / ours['requests']:.1f}x, "
        f"peak RSS {base['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x"
    )
    print(
        f"delta refresh after {CHANGED_USERS} changes: {delta['seconds']:.2f} s, "
        f"{delta['requests']} requests (emulator saw {delta['seen_by_emulator']}), "
        f"peak RSS {delta['peak_rss_mb']:.1f} MB, renamed users in the ledger "
        f"{delta['renamed']}/{CHANGED_USERS}"
    )
    checks = {
        "every user in the ledger": ours["users"] == users and delta["users"] == users,
        f"ours < {REFRESH_TARGET_S:.0f} s": ours["seconds"] < REFRESH_TARGET_S,
        f"ours peak RSS < {RSS_TARGET_MB:.0f} MB": ours["peak_rss_mb"] < RSS_TARGET_MB,
        "delta picked up every change": delta["renamed"] == CHANGED_USERS,
    }
    for name, ok in checks.items():
        print(f"    {name}: {'MET' if ok else 'NOT MET'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
