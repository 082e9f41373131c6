"""Graph requests per run: photosync against the PowerShell runbook's way, same tenant.

For N users and k new photos per run, measured against the emulator (which counts every
request it receives):

    first run                                  at most ceil(N/999) + 2 + 3k + ceil(k/15)
    next run (k more photos, 10 user changes)  at most 2 + 3k + ceil(k/15)
    a run with nothing new and nothing waiting 0
    a run with only waiting files, no change   1  (one delta round)

ceil(k/15) is confirm-before-write: one $filter lookup per 15 planned uploads
(docs/graph-behaviour.md, "Confirm before write"). 3k is the upload with the archive on
(the default): the current photo read before the PUT, the PUT, its ETag read after; with
`archive = false` an upload is 1 request. The last two rows measure both.

The runbook lists every user at the default page size (100) and uploads one file per
request on every run: ceil(N/100) + k. Run: python bench/bench_requests.py [--users N]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from reconciler import app
from reconciler.config import Settings
from reconciler.emulator import GraphEmulator
from reconciler.model import Outcome


def write_photos(inbox: Path, names: list[str], shade: int) -> None:
    for number, name in enumerate(names):
        colour = (shade, number % 256, (number * 7) % 256)
        Image.new("RGB", (96, 96), colour).save(inbox / f"{name}.jpg", quality=90)


def run(settings: Settings, emulator: GraphEmulator) -> tuple[int, int, float]:
    before = emulator.graph_request_count
    started = time.perf_counter()
    summary, _ = app.reconcile(settings)
    elapsed = time.perf_counter() - started
    assert summary.graph_requests == emulator.graph_request_count - before
    return summary.graph_requests, summary.counts[Outcome.UPLOADED], elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--photos", type=int, default=50)
    args = parser.parse_args()
    n, k = args.users, args.photos

    with tempfile.TemporaryDirectory() as root, GraphEmulator() as emulator:
        os.environ.update(emulator.client_environment(os.environ))
        ids = emulator.tenant.add_users(n)
        names = [str((emulator.tenant.user(i) or {})["displayName"]) for i in ids[: 4 * k + 10]]
        inbox = Path(root) / "inbox"
        inbox.mkdir()
        settings = Settings(
            graph_url=emulator.url,
            inbox_dir=inbox,
            completed_dir=Path(root) / "done",
            failed_dir=Path(root) / "failed",
            database_url=f"sqlite:///{root}/ledger.db",
            settle_seconds=0,
        )

        write_photos(inbox, names[:k], 10)
        first = run(settings, emulator)
        for user_id in ids[2 * k : 2 * k + 10]:
            emulator.tenant.update_user(user_id, jobTitle="changed", displayName=f"Moved {user_id}")
        write_photos(inbox, names[k : 2 * k], 200)
        second = run(settings, emulator)
        idle = run(settings, emulator)
        write_photos(inbox, ["Nobody Known"], 90)
        run(settings, emulator)  # a new file: its first verdict is "unmatched"
        waiting = run(settings, emulator)
        # The archive's cost: k new photos with it off, k more with it on.
        write_photos(inbox, names[2 * k + 10 : 3 * k + 10], 30)
        archive_off = run(dataclasses.replace(settings, archive=False), emulator)
        write_photos(inbox, names[3 * k + 10 : 4 * k + 10], 60)
        archive_on = run(settings, emulator)

    runbook = math.ceil(n / 100) + k
    confirm = math.ceil(k / 15)
    rows = [
        ("first run", first, math.ceil(n / 999) + 2 + 3 * k + confirm),
        (f"next run (+{k} photos, 10 user changes)", second, 2 + 3 * k + confirm),
        ("nothing new, nothing waiting", idle, 0),
        ("only a waiting file, no tenant change", waiting, 1),
        (f"+{k} photos, archive = false", archive_off, 1 + k + confirm),
        (f"+{k} photos, archive = true", archive_on, 1 + 3 * k + confirm),
    ]
    print(f"N = {n:,} users, k = {k} photos per run\n")
    print(
        f"{'run':<40} {'requests':>8} {'bound':>6} {'uploads':>7} {'time':>7} "
        f"{'runbook':>8} {'runbook/ours':>12}"
    )
    for label, (requests, uploads, seconds), bound in rows:
        book = runbook if uploads or label.startswith("first") else math.ceil(n / 100)
        ratio = f"{book / requests:.1f}x" if requests else "inf"
        verdict = "ok" if requests <= bound else "OVER"
        print(
            f"{label:<40} {requests:>8} {bound:>6} {uploads:>7} {seconds:>6.1f}s "
            f"{book:>8} {ratio:>12}  {verdict}"
        )
    extra = (archive_on[0] - archive_off[0]) / k
    print(
        f"\nrequests per upload: 1 with archive = false, {1 + extra:.2f} with archive = true "
        "(the photo read before the write, the ETag read after)"
    )


if __name__ == "__main__":
    main()
