"""The crash campaign in CI: at least 30 SIGKILLs at random moments (scan, user refresh,
upload, move), with completed_dir on the inbox's file system and on another one, and a run
that finishes after each kill. After every round: each photo is on its user, each file is in
exactly one place, the ledger claims no upload Graph did not receive, and uploads stay within
files + kills x concurrency. The longer soak is bench/bench_crash_soak.py."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from random import Random

from reconciler.emulator import GraphEmulator
from tests.crash_campaign import Campaign

ROUNDS = 16  # per file-system layout: 32 kills in all


def campaign_rounds(emulator: GraphEmulator, root: Path, completed: Path, seed: int) -> Campaign:
    emulator.faults.latency_s = 0.01  # so a run lasts long enough to be caught mid-upload
    campaign = Campaign(emulator, root, completed, Random(seed))
    campaign.drop_new_people(3)
    assert campaign.finishing_run() == 0
    assert campaign.violations() == []
    while campaign.kills < ROUNDS:
        problems = campaign.round()
        assert problems == [], f"after {campaign.kills} kills: {problems}"
    return campaign


def test_random_kills_with_completed_dir_on_the_same_file_system(
    emulator: GraphEmulator, tmp_path: Path
) -> None:
    campaign = campaign_rounds(emulator, tmp_path / "run", tmp_path / "completed", seed=20261202)
    assert campaign.kills >= ROUNDS
    assert len(campaign.stored) >= campaign.uploads_needed  # every photo reached Graph


def test_random_kills_with_completed_dir_on_another_file_system(
    emulator: GraphEmulator, tmp_path: Path, other_fs: Path
) -> None:
    campaign = campaign_rounds(emulator, tmp_path / "run", other_fs / "completed", seed=1202)
    assert campaign.kills >= ROUNDS
    assert len(campaign.stored) >= campaign.uploads_needed


def test_a_run_killed_between_scan_and_user_refresh_does_not_strand_its_files(
    emulator: GraphEmulator, tmp_path: Path
) -> None:
    """Found by the soak: the killed run had recorded the new files' hashes, so the next
    run saw nothing new, asked Graph nothing, and called the files unmatched for good."""
    campaign = Campaign(emulator, tmp_path / "run", tmp_path / "completed", Random(1))
    campaign.drop_new_people(2)
    child = subprocess.Popen(campaign.command(), env=campaign.environment())
    killed = threading.Event()

    def kill_at_the_first_users_request(method: str, path: str) -> None:
        if path.startswith("/v1.0/users") and not killed.is_set():
            killed.set()
            child.send_signal(signal.SIGKILL)

    emulator.faults.before_request = kill_at_the_first_users_request
    assert child.wait(timeout=120) == -signal.SIGKILL
    emulator.faults.before_request = None

    assert campaign.finishing_run() == 0
    assert campaign.violations() == []
