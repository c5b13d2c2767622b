"""What the machine did while a load point ran: the time the hypervisor took (steal), the
time the cores waited on the disk (iowait) and what was read from the disk.

A tail in a miss-path point has two likely causes that the node's own figures cannot
tell apart from its own slowness: registry pages read from the disk (PostgreSQL waiting
in DataFileRead until a batch times out), and a shared VM's cores taken away for
milliseconds at a time (the echo ceiling's p99 moves with it). Both are read here from
/proc over the point, and reported beside its p99, so a figure says which it was.
Linux only; elsewhere every reading is empty and the report says nothing.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A whole disk, not its partitions (whose reads the disk's line counts already):
# virtio (vda), SCSI/SATA (sda), Xen (xvda), NVMe namespaces (nvme0n1).
WHOLE_DISK = re.compile(r"^(?:[shv]d[a-z]+|xvd[a-z]+|nvme\d+n\d+)$")
SECTOR = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size


@dataclass(frozen=True)
class HostReading:
    at: float
    cpu: tuple[int, ...]  # /proc/stat's "cpu" line: user nice system idle iowait irq softirq steal
    disk_reads: int  # completed reads, all whole disks
    disk_sectors: int  # sectors read, all whole disks


def _cpu_line(text: str) -> tuple[int, ...]:
    for line in text.splitlines():
        if line.startswith("cpu "):
            return tuple(int(x) for x in line.split()[1:9])
    return ()


def _disk_reads(text: str) -> tuple[int, int]:
    reads = sectors = 0
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 6 and WHOLE_DISK.match(f[2]):
            reads += int(f[3])
            sectors += int(f[5])
    return reads, sectors


def read(root: Path = Path("/proc")) -> HostReading:
    """The counters now (zeros where /proc cannot be read)."""
    try:
        cpu = _cpu_line((root / "stat").read_text())
    except OSError:
        cpu = ()
    try:
        reads, sectors = _disk_reads((root / "diskstats").read_text())
    except OSError:
        reads = sectors = 0
    return HostReading(time.monotonic(), cpu, reads, sectors)


def between(before: HostReading, after: HostReading) -> dict[str, Any]:
    """Steal and iowait as a share of all CPU time over the interval (every core), and
    the disk reads in it; {} when /proc gave nothing."""
    if len(before.cpu) < 8 or len(after.cpu) < 8:
        return {}
    d = [b - a for a, b in zip(before.cpu, after.cpu, strict=True)]
    total = sum(d)
    if total <= 0:
        return {}
    return {
        "steal_pct": round(100 * d[7] / total, 2),
        "iowait_pct": round(100 * d[4] / total, 2),
        "disk_reads": after.disk_reads - before.disk_reads,
        "disk_read_mb": round((after.disk_sectors - before.disk_sectors) * SECTOR / 1e6, 1),
        "seconds": round(after.at - before.at, 2),
        "cores": os.cpu_count(),
    }


def summary(host: dict[str, Any] | None) -> str:
    """One clause for a point's line of progress ("" when there is nothing to say)."""
    if not host:
        return ""
    return (
        f"; host: steal {host['steal_pct']}%, iowait {host['iowait_pct']}%, "
        f"disk read {host['disk_read_mb']} MB"
    )
