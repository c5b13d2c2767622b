"""What the machine did over a load point, read from /proc: the arithmetic on fixed
/proc texts, and a reading of this machine's own /proc."""

from __future__ import annotations

from pathlib import Path

from idnode.loadtest import host_stats

STAT = "cpu  {u} 0 {s} {i} {w} 0 0 {st} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"
DISKS = (
    "   7       0 loop0 9 0 99 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    " 254       0 vda {r} 0 {sec} 5213 25114 23876 2276312 10232 0 4628 16340\n"
    " 254       1 vda1 {r} 0 {sec} 5213 25114 23876 2276312 10232 0 4628 16340\n"
    " 259       0 nvme0n1 {r} 0 {sec} 1 1 1 1 1 0 1 1\n"
    " 259       1 nvme0n1p1 {r} 0 {sec} 1 1 1 1 1 0 1 1\n"
)


def proc(tmp: Path, *, u: int, s: int, i: int, w: int, st: int, r: int, sec: int) -> Path:
    tmp.mkdir(exist_ok=True)
    (tmp / "stat").write_text(STAT.format(u=u, s=s, i=i, w=w, st=st))
    (tmp / "diskstats").write_text(DISKS.format(r=r, sec=sec))
    return tmp


def test_steal_iowait_and_whole_disk_reads(tmp_path: Path) -> None:
    a = host_stats.read(proc(tmp_path / "a", u=100, s=50, i=800, w=40, st=10, r=10, sec=2000))
    b = host_stats.read(proc(tmp_path / "b", u=300, s=100, i=1400, w=140, st=60, r=25, sec=6000))
    got = host_stats.between(a, b)
    # 1,000 ticks passed in all: 50 of them stolen, 100 waiting on the disk
    assert got["steal_pct"] == 5.0 and got["iowait_pct"] == 10.0, got
    # two whole disks (vda, nvme0n1), their partitions and loop devices not counted again
    assert got["disk_reads"] == 30, got
    assert got["disk_read_mb"] == round(2 * 4000 * 512 / 1e6, 1), got
    line = host_stats.summary(got)
    assert "steal 5.0%" in line and "iowait 10.0%" in line and "disk read 4.1 MB" in line


def test_nothing_to_say_without_proc(tmp_path: Path) -> None:
    a = host_stats.read(tmp_path / "none")
    assert a.cpu == () and a.disk_sectors == 0
    assert host_stats.between(a, a) == {} and host_stats.summary({}) == ""


def test_this_machine() -> None:
    a = host_stats.read()
    sum(i * i for i in range(200_000))  # some CPU time passes
    b = host_stats.read()
    got = host_stats.between(a, b)
    if len(a.cpu) < 8:  # not Linux: nothing is read, nothing is claimed
        assert got == {}
        return
    assert 0 <= got["steal_pct"] <= 100 and 0 <= got["iowait_pct"] <= 100, got
    assert got["disk_reads"] >= 0 and got["seconds"] >= 0, got
