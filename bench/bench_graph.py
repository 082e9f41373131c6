"""Graph client benchmark against the loopback emulator.

(a) Throughput under a write quota: 500 photo uploads, 50 ms latency, 40 writes/s allowed.
    Concurrent (4 threads through the AIMD limiter and pacer) against the rate bound
    500/40 = 12.5 s (target ≤ 1.2x), 429s as a share of writes (target ≤ 5 %), photos lost
    (target 0); and the same uploads one at a time.
(b) The whole `photosync reconcile` of 500 photos for 500 new users under the same quota:
    listing, confirm-before-write (one $filter lookup per 15 uploads), prepare, upload, move
    and ledger, against the same rate bound (target <= 1.2x).

Uploading through JSON $batch was measured here too and not adopted: docs/graph-behaviour.md,
"Uploading through $batch: measured, not adopted".

    python bench/bench_graph.py [--uploads 500] [--latency 0.05] [--rate 40]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from reconciler import app
from reconciler.config import Settings
from reconciler.emulator import Faults, GraphEmulator
from reconciler.errors import GraphError
from reconciler.graph.auth import TokenProvider, build_credential, token_scope
from reconciler.graph.client import GraphClient
from reconciler.model import Outcome, UploadReceipt

Items = list[tuple[str, bytes, str]]


@dataclass
class Result:
    name: str
    wall_s: float
    writes: int  # photo write requests that reached the emulator
    throttled: int
    lost: int
    sent_mb: float  # request bodies
    note: str = ""


def photo(n: int) -> bytes:
    """A small real JPEG, different for every n."""
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (n % 256, (n // 256) % 256, 120)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


@contextmanager
def emulator(faults: Faults) -> Iterator[GraphEmulator]:
    with GraphEmulator(faults=faults) as emu:
        for name in ("IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT"):
            os.environ.pop(name, None)
        os.environ.update(emu.client_environment(os.environ))
        os.environ["NO_PROXY"] = "127.0.0.1,localhost"
        yield emu


def client_for(emu: GraphEmulator, concurrency: int) -> GraphClient:
    tokens = TokenProvider(
        lambda: build_credential("managed-identity", graph_url=emu.url),
        mode="managed-identity",
        scope=token_scope(emu.url),
    )
    tokens.token()  # the token fetch is not what is being measured
    return GraphClient(emu.url, tokens, concurrency=concurrency, max_attempts=10)


def run(
    name: str,
    faults: Faults,
    n: int,
    upload: Callable[[GraphClient, Items], list[UploadReceipt | GraphError]],
    concurrency: int = 4,
) -> tuple[Result, GraphClient]:
    with emulator(faults) as emu:
        items = [(uid, photo(i), "image/jpeg") for i, uid in enumerate(emu.tenant.add_users(n))]
        graph = client_for(emu, concurrency)
        started = time.monotonic()
        outcomes = upload(graph, items)
        wall = time.monotonic() - started
        graph.close()
        writes = [
            r
            for top in emu.requests()
            for r in (top.inner or (top,))
            if r.method == "PUT" and r.path.endswith("/photo/$value")
        ]
        lost = sum(
            1
            for (uid, data, _), outcome in zip(items, outcomes, strict=True)
            if not isinstance(outcome, UploadReceipt)
            or (stored := emu.tenant.photo(uid)) is None
            or stored.data != data
        )
        throttled = sum(1 for r in writes if r.status == 429)
        sent_mb = sum(r.body_size for r in emu.requests() if not r.token_request) / 1e6
        return Result(name, wall, len(writes), throttled, lost, sent_mb), graph


def whole_run(n: int, latency: float, rate: float) -> Result:
    """`photosync reconcile` end to end: what an administrator's scheduled run costs."""
    faults = Faults(latency_s=latency, write_rate_per_s=rate)
    with emulator(faults) as emu, tempfile.TemporaryDirectory() as root:
        ids = emu.tenant.add_users(n, prefix="Bench Person")
        inbox = Path(root) / "inbox"
        inbox.mkdir()
        sources = {}
        for i, uid in enumerate(ids):
            data = photo(i)
            (inbox / f"Bench Person {i + 1}.jpg").write_bytes(data)
            sources[uid] = data
        settings = Settings(
            graph_url=emu.url,
            inbox_dir=inbox,
            completed_dir=Path(root) / "done",
            failed_dir=Path(root) / "failed",
            database_url=f"sqlite:///{root}/ledger.db",
            settle_seconds=0,
            retry_attempts=10,
        )
        started = time.monotonic()
        summary, _ = app.reconcile(settings)
        wall = time.monotonic() - started
        writes = [r for r in emu.requests() if r.method == "PUT"]
        lookups = [r for r in emu.requests() if "$filter" in r.query]
        lost = sum(
            1
            for uid, data in sources.items()
            if (stored := emu.tenant.photo(uid)) is None or stored.data != data
        )
        sent_mb = sum(r.body_size for r in emu.requests() if not r.token_request) / 1e6
        result = Result("photosync reconcile (whole run)", wall, len(writes), 0, lost, sent_mb)
        result.throttled = sum(1 for r in writes if r.status == 429)
        result.note = (
            f"{summary.graph_requests} requests, {len(lookups)} confirming lookups, "
            f"{summary.counts[Outcome.UPLOADED]} uploaded"
        )
        return result


def concurrent_puts(
    threads: int,
) -> Callable[[GraphClient, Items], list[UploadReceipt | GraphError]]:
    def upload(graph: GraphClient, items: Items) -> list[UploadReceipt | GraphError]:
        def one(item: tuple[str, bytes, str]) -> UploadReceipt | GraphError:
            try:
                return graph.upload_photo(*item)
            except GraphError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(one, items))

    return upload


def table(rows: list[Result], bound: float | None) -> None:
    head = f"{'scenario':<34}{'wall s':>8}{'x bound':>9}{'writes':>8}{'429s':>6}"
    head += f"{'429 %':>7}{'lost':>6}{'MB sent':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = f"{r.wall_s / bound:.2f}" if bound else "-"
        share = 100.0 * r.throttled / r.writes if r.writes else 0.0
        print(
            f"{r.name:<34}{r.wall_s:>8.2f}{ratio:>9}{r.writes:>8}{r.throttled:>6}"
            f"{share:>7.1f}{r.lost:>6}{r.sent_mb:>9.2f}  {r.note}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uploads", type=int, default=500)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rate", type=float, default=40.0)
    args = parser.parse_args()
    n, latency, rate = args.uploads, args.latency, args.rate
    bound = n / rate

    print(f"(a) {n} uploads, latency {latency * 1000:.0f} ms, write quota {rate:g}/s")
    print(f"    rate bound {n}/{rate:g} = {bound:.1f} s; targets: <= 1.2x, 429s <= 5 %, lost 0\n")
    quota = Faults(latency_s=latency, write_rate_per_s=rate)
    conc, graph = run("concurrent PUTs (4, AIMD+pacer)", quota, n, concurrent_puts(4))
    pace = graph.write_rate
    conc.note = f"final limit {graph.concurrency_limit}, pace {pace:.1f}/s" if pace else ""
    quota = Faults(latency_s=latency, write_rate_per_s=rate)
    seq, _ = run("sequential PUTs (1)", quota, n, concurrent_puts(1), concurrency=1)
    table([conc, seq], bound)
    print(f"\n    concurrent vs sequential: {seq.wall_s / conc.wall_s:.2f}x faster")

    print(f"\n(b) photosync reconcile, {n} new photos, write quota {rate:g}/s, with confirm\n")
    table([whole_run(n, latency, rate)], bound)


if __name__ == "__main__":
    main()
