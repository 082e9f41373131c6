"""Can the stat cache vouch for a file's content without reading it? Pure.

A recorded hash is trusted only if size, mtime_ns, ctime_ns and inode are all unchanged and
the file's timestamps were already safely in the past when it was hashed. A file written in
the same timestamp tick as (or after) the hash could change again without moving its mtime,
so, as in git's "racy git" rule and borg's files cache, such an entry is hashed again.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.model import FileStat

# Coarsest timestamp granularity we expect on an inbox: FAT and some SMB shares keep 2 s.
RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class CachedFingerprint:
    stat: FileStat
    sha256: str
    hashed_at_ns: int


def can_trust(cached: CachedFingerprint | None, current: FileStat) -> bool:
    if cached is None or cached.stat != current:
        return False
    newest_change = max(current.mtime_ns, current.ctime_ns)
    return cached.hashed_at_ns - newest_change > RACY_WINDOW_NS


def is_settled(stat: FileStat, now_ns: int, settle_seconds: float) -> bool:
    """A file changed within settle_seconds may still be being copied in. ctime counts too:
    a copy that preserves the original mtime (robocopy, cp -p) still has a fresh ctime."""
    newest_change = max(stat.mtime_ns, stat.ctime_ns)
    return now_ns - newest_change >= settle_seconds * 1_000_000_000
