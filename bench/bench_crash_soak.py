"""Crash soak: 200+ SIGKILLs at random moments of real `photosync reconcile` runs against the
emulator, half with completed_dir on the inbox's file system and half on a tmpfs (when run
as root), each kill followed by a run that finishes, the promises checked after every round
(tests/crash_campaign.py; docs/reliability.md, "Crash campaign").

Prints the kills per phase, the violations (target 0), and uploads against the files that
needed one (the baseline: an uninterrupted schedule uploads each file exactly once; the
promise is at most files + kills x concurrency).

    python bench/bench_crash_soak.py [--kills 200] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from random import Random

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.emulator import GraphEmulator
from tests.crash_campaign import PHASES, Campaign


def tmpfs(stack: ExitStack, where: Path) -> Path | None:
    if os.geteuid() != 0:
        return None
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], check=False
    )
    if mounted.returncode != 0:
        return None
    stack.callback(subprocess.run, ["umount", "-l", str(where)], check=False)
    return where


def soak(kills: int, completed: Path, root: Path, seed: int) -> tuple[Campaign, list[str], float]:
    with GraphEmulator() as emulator:
        os.environ.update(emulator.client_environment(os.environ))
        emulator.faults.latency_s = 0.01
        campaign = Campaign(emulator, root, completed, Random(seed))
        campaign.drop_new_people(3)
        campaign.finishing_run()
        started = time.monotonic()
        problems: list[str] = []
        while campaign.kills < kills and not problems:
            problems = campaign.round()
        return campaign, problems, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp, ExitStack() as stack:
        base = Path(temp)
        other = tmpfs(stack, base / "other-fs")
        layouts = [("same file system", base / "same" / "completed")]
        if other is not None:
            layouts.append(("completed_dir on a tmpfs", other / "completed"))
        share = -(-args.kills // len(layouts))
        phases: Counter[str] = Counter()
        print(
            f"{'layout':<28}{'kills':>6}{'rounds s':>10}{'needed':>8}{'uploads':>8}"
            f"{'bound':>7}{'ratio':>7}  violations"
        )
        for n, (label, completed) in enumerate(layouts):
            root = base / f"run{n}"
            campaign, problems, seconds = soak(share, completed, root, args.seed + n)
            phases.update(campaign.phases)
            bound = campaign.uploads_needed + campaign.kills * campaign.concurrency
            ratio = len(campaign.stored) / campaign.uploads_needed
            print(
                f"{label:<28}{campaign.kills:>6}{seconds:>10.1f}{campaign.uploads_needed:>8}"
                f"{len(campaign.stored):>8}{bound:>7}{ratio:>7.2f}  {len(problems)}"
            )
            for problem in problems:
                print(f"    {problem}")
        print("\nkills by phase (as far as Graph saw it):")
        for phase in PHASES:
            print(f"  {phase:<16}{phases[phase]:>5}")


if __name__ == "__main__":
    main()
