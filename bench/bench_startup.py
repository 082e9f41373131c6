"""How fast photosync starts: whole-process wall time and peak RSS, median of 7 runs each,
against `python -c pass` measured in the same run.

    python bench/bench_startup.py [--runs 7]

Cases (targets from issue 12):
- `photosync --version`                               <= 0.15 s
- `photosync --help`                                  <= 0.25 s
- an idle `photosync reconcile` (empty inbox, a ledger with nothing left over)
                                                      <= 0.30 s and < 45 MB
- for scale, the same reconcile taken the full way: before each run an unfinished run row
  (what a killed run leaves) is added, which the idle path leaves to the full one.

Each case runs the installed `photosync` entry point (the console script beside this
Python), so the figures include what a scheduler pays: interpreter start, imports, work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHOTOSYNC = str(Path(sys.executable).with_name("photosync"))
TARGETS = {
    "photosync --version": (0.15, None),
    "photosync --help": (0.25, None),
    "idle photosync reconcile": (0.30, 45.0),
}


def measure(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process running argv to its end."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.stderr is not None
    errors = process.stderr.read().decode()
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {process.returncode}: {errors}")
    return wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def median_of(runs: int, argv: list[str], cwd: Path) -> tuple[float, float]:
    samples = [measure(argv, cwd) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def workspace(root: Path) -> Path:
    """A config with an empty inbox and a ledger made by one first run."""
    for folder in ("inbox", "completed", "failed"):
        (root / folder).mkdir()
    (root / "photosync.toml").write_text(
        "[photosync]\n"
        'inbox_dir = "inbox"\ncompleted_dir = "completed"\nfailed_dir = "failed"\n'
        'database_url = "sqlite:///ledger.db"\n'
        'tenant_id = "00000000-0000-0000-0000-000000000000"\n'
    )
    measure([PHOTOSYNC, "reconcile", "--config", "photosync.toml"], root)
    return root / "photosync.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = workspace(root)
        reconcile = [PHOTOSYNC, "reconcile", "--config", str(config)]
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "photosync --version": [PHOTOSYNC, "--version"],
            "photosync --help": [PHOTOSYNC, "--help"],
            "idle photosync reconcile": reconcile,
        }
        results = {name: median_of(args.runs, argv, root) for name, argv in cases.items()}
        # A killed run's unfinished row sends the next run the full way, which closes it.
        full = []
        for _ in range(args.runs):
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import sqlite3; c = sqlite3.connect('ledger.db'); c.execute(\"INSERT INTO "
                    "runs (command, dry_run, started_at, counts, graph_requests) VALUES "
                    "('reconcile', 0, '2026-01-01 00:00:00.000000', '{}', 0)\"); c.commit()",
                ],
                cwd=root,
                check=True,
            )
            full.append(measure(reconcile, root))
        results["same reconcile, full path"] = (
            statistics.median(s[0] for s in full),
            statistics.median(s[1] for s in full),
        )
    base_wall, base_rss = results["python -c pass"]
    print(f"median of {args.runs} runs each; baseline `python -c pass` measured in this run")
    print(f"{'case':<28} {'wall s':>7} {'x base':>7} {'peak MB':>8} {'x base':>7}  target")
    for name, (wall, rss) in results.items():
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            wall_ok = wall <= target[0]
            rss_ok = target[1] is None or rss < target[1]
            limits = f"<= {target[0]} s" + (f", < {target[1]:.0f} MB" if target[1] else "")
            verdict = f"{limits}: {'met' if wall_ok and rss_ok else 'MISSED'}"
        print(
            f"{name:<28} {wall:7.3f} {wall / base_wall:7.1f} {rss:8.1f} {rss / base_rss:7.1f}"
            f"  {verdict}"
        )


if __name__ == "__main__":
    main()
