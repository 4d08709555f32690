"""What /proc tells of a test's daemon processes."""

from __future__ import annotations

from pathlib import Path


def rss_kib(pid: int) -> int:
    """The resident memory of process pid, in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"process {pid} has no VmRSS")
