"""`idnode loadtest peer`: idnode beside the reference server (HANDLE.NET 7.3.1) and a bare
echo, on the same hot path, with the same generator and the same identifiers.

In one run, inside one loopback-only network namespace (the reference server reaches for
the global Handle root otherwise), three servers run pinned to the server core while the
same UDP / persistent-TCP generator (loadtest/generators.py) drives one of them at a time
from the load core, closed loop, uniform over the same N identifiers (doors: ``udp``;
``tcp``, one persistent pipelined connection, which the reference server does not offer:
it closes a connection after one answer; ``tcp1``, a connection per request, as the
reference's own clients connect):

1. the echo ceiling (loadtest/ceilings.py: a bare uvloop UDP or TCP echo);
2. idnode serve, one worker, a throwaway SQLite registry of the N identifiers, L1 warmed
   by resolving every identifier once before the clock starts (a node started afresh
   for each door);
3. the reference server, its own storage seeded offline with the same identifiers and
   values (loadtest/reference.py), started once for every door, its JIT warmed on each
   door by a load phase that is not reported.

The machine these runs share is noisy: measured one after another, a minute apart, the
servers' ratio moved with whatever else ran (idnode/reference 0.65 in one run, 1.32 in
another). So, for each door, all three are started first and stay up, and the door is
measured in ``rounds``: in each round the echo, idnode and the reference server one
after another (the order rotated each round, so none always goes first), each for the
same seconds; the idle two cost the core nothing. Each ratio is computed within a round,
of figures taken seconds apart, and the report gives every round's figures, the median
of each ratio and its spread (min, max), and per server the round of median answers/s.

A sample of identifiers is then asked of idnode and the reference server and their
answers compared with the values the registry holds: a faster server that answers
wrongly is not faster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import reference
from .ceilings import DESCRIPTIONS
from .generators import Job, handle_frames
from .keyspace import handle, values
from .processes import NodeProcess, ProcessError, free_port, pinned, stop, wait_port, wait_udp

Progress = Callable[[str], None]
# tcp: one persistent connection, pipelined (idnode's own clients and the generator);
# tcp1: one connection per request, as the reference server's clients do (it closes
# the connection after each answer, so "persistent TCP" cannot be asked of it).
HOT_DOORS = ("udp", "tcp", "tcp1")
# Connections opened at a time on tcp1: more overflow the servers' listen backlogs
# (asyncio's is 100), and a dropped SYN is retried after a second, a latency that is
# the kernel's, not the server's.
TCP1_WINDOW = 32
PERSISTENT_UNSUPPORTED = (
    "the reference server closes a TCP connection after one answer: see door tcp1 "
    "(a connection per request) for its TCP figure"
)
SERVERS = ("echo", "idnode", "reference")
# Each ratio: its name in the report, the server measured, the one it is set against.
RATIOS = (
    ("idnode_to_reference", "idnode", "reference"),
    ("idnode_to_echo", "idnode", "echo"),
    ("reference_to_echo", "reference", "echo"),
)
# idnode's L1 lifetime in this run: the node stays up through the reference's JIT
# warm-up and every round of its door (minutes), and an entry expiring on the default
# 60 s would have later rounds measure SQLite rather than L1. The values' own TTL
# (a day, loadtest/keyspace.py) still bounds it.
L1_TTL = 86_400


@dataclass
class PeerConfig:
    reference_jars: str
    handles: int = 100_000
    seconds: float = 10.0
    warmup: float = 2.0
    jit_warmup: float = 15.0  # the reference server's JIT: load it this long, unreported
    doors: list[str] = field(default_factory=lambda: ["udp", "tcp", "tcp1"])
    window: int = 256
    server_cpu: int = 0
    load_cpu: int = 1
    sample: int = 200  # identifiers asked of both servers and checked
    l1_mb: int = 256  # idnode's L1: enough for every identifier of the run
    draws: int = 0  # identifiers a generator draws beforehand (0: enough never to reuse)
    rounds: int = 3  # each door measured this many times, the servers interleaved

    def check(self) -> None:
        for d in self.doors:
            if d not in HOT_DOORS:
                raise ValueError(f"unknown door {d!r}: peer compares {', '.join(HOT_DOORS)}")
        if not self.doors:
            raise ValueError("--doors names no door")
        if self.handles < 1 or self.seconds <= 0 or self.window < 1:
            raise ValueError("--handles, --seconds and --window must be positive")
        if self.handles > 2_000_000:
            raise ValueError("--handles is at most 2,000,000 (seeding is held in memory)")
        if self.seconds > 120 or self.jit_warmup > 300:
            raise ValueError("--seconds is at most 120 and --jit-warmup at most 300")
        if not 1 <= self.rounds <= 10:
            raise ValueError("--rounds is from 1 to 10")


def missing(cfg: PeerConfig) -> str | None:
    """Why the run cannot happen here, or None."""
    why = reference.missing(Path(cfg.reference_jars))
    if why:
        return why
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return (
                f"{tool} is not installed (util-linux, iproute2): the run needs a network namespace"
            )
    if os.geteuid() != 0 and not reference.in_namespace():
        return "a loopback-only network namespace needs root (unshare -n)"
    if len(os.sched_getaffinity(0)) < 2:
        return "server and load need a core each: this process may use only one CPU"
    return None


# --- outside: into the namespace -------------------------------------------------------


def run(cfg: PeerConfig, say: Progress = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    """The whole comparison; re-runs itself inside a fresh loopback-only namespace unless
    it already is in one."""
    cfg.check()
    why = missing(cfg)
    if why:
        raise ValueError(why)
    if reference.in_namespace():
        return inside(cfg, say)
    with tempfile.TemporaryDirectory(prefix="idnode-peer-") as tmp:
        conf, out = Path(tmp) / "config.json", Path(tmp) / "report.json"
        conf.write_text(json.dumps(asdict(cfg)))
        say("entering a loopback-only network namespace (unshare -n)")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        # The same shape as ../shared/clients/in-netns: a new namespace, loopback up.
        p = subprocess.run(
            [
                "unshare",
                "-n",
                "sh",
                "-c",
                'ip link set lo up && exec "$@"',
                "in-netns",
                sys.executable,
                "-m",
                "idnode.loadtest.peer",
                str(conf),
                str(out),
            ],
            env=env,
            timeout=_bound(cfg),
            check=False,
        )
        if not out.exists():
            raise RuntimeError(f"the namespace run wrote no report (exit {p.returncode})")
        report: dict[str, Any] = json.loads(out.read_text())
    if "error" in report:
        raise RuntimeError(report["error"])
    return report


def _bound(cfg: PeerConfig) -> float:
    """The longest the whole run may take: seeding, starts, every phase, with room."""
    per_door = cfg.rounds * len(SERVERS) * (cfg.seconds + cfg.warmup + 5) + cfg.jit_warmup
    phases = len(cfg.doors) * per_door
    return 600 + phases + cfg.handles / 500


# --- inside the namespace ----------------------------------------------------------------


def _jobs(cfg: PeerConfig, door: str, port: int, seconds: float, warmup: float) -> list[Job]:
    return [
        Job(
            door=door,
            host="127.0.0.1",
            port=port,
            mode="closed",
            seconds=seconds,
            warmup=warmup,
            window=cfg.window,
            registry_size=cfg.handles,
            distribution="uniform",
            seed=1,
            draws=cfg.draws,
            cpu=cfg.load_cpu,
        )
    ]


def measure(
    cfg: PeerConfig, door: str, port: int, seconds: float = 0, warmup: float = -1
) -> dict[str, Any]:
    from .run import run_point

    secs, warm = seconds or cfg.seconds, cfg.warmup if warmup < 0 else warmup
    if door == "tcp1":
        got = connection_per_request(cfg, port, secs, warm)
    else:
        got = run_point(_jobs(cfg, door, port, secs, warm), None)["reads"]
    answered = got["answered"]
    got["all_success"] = answered > 0 and got["codes"].get("1", 0) == got["ops"]
    return dict(got)


# --- tcp1: a connection per request ------------------------------------------------------


def connection_per_request(
    cfg: PeerConfig, port: int, seconds: float, warmup: float
) -> dict[str, Any]:
    """Closed loop over ``cfg.window`` connections at a time, each carrying one request
    and its answer; in a process of its own on the load core."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (
        port,
        cfg.handles,
        min(cfg.window, TCP1_WINDOW),
        seconds,
        warmup,
        cfg.load_cpu,
        cfg.draws,
        queue,
    )
    proc = ctx.Process(target=_tcp1_main, args=args)
    proc.start()
    try:
        result: dict[str, Any] = queue.get(timeout=seconds + warmup + 300)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
    if "error" in result:
        raise RuntimeError(f"the tcp1 generator failed: {result['error']}")
    return result


def _tcp1_main(
    port: int,
    size: int,
    window: int,
    seconds: float,
    warmup: float,
    cpu: int,
    draws: int,
    queue: Any,
) -> None:
    try:
        os.sched_setaffinity(0, {cpu})
        queue.put(_tcp1(port, size, window, seconds, warmup, draws))
    except Exception as exc:  # reported to the parent, which raises it
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _tcp1(
    port: int, size: int, window: int, seconds: float, warmup: float, cfg_draws: int
) -> dict[str, Any]:
    import selectors
    import struct

    from idnode.resolver.codec import FrameBuffer

    from .generators import Tally, draw

    job = Job(
        "tcp", "127.0.0.1", port, "closed", seconds, registry_size=size, distribution="uniform"
    )
    frames = handle_frames(draw(job, cfg_draws or 200_000, 3))
    sel = selectors.DefaultSelector()
    linger = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT for a million ports
    clock = time.perf_counter
    tally = Tally()
    state = {"n": 0, "measuring": False}

    def open_one() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # connecting: writable when done
            s.connect(("127.0.0.1", port))
        frame = frames[state["n"] % len(frames)]
        state["n"] += 1
        sel.register(s, selectors.EVENT_WRITE, [clock(), bytes(frame), FrameBuffer(), False])

    def finish(s: socket.socket, started: float, code: int | str) -> None:
        sel.unregister(s)
        s.close()
        if state["measuring"]:
            tally.done(clock() - started, code, started)
        open_one()

    for _ in range(window):
        open_one()
    t0 = clock()
    measure_at, end = t0 + warmup, t0 + warmup + seconds
    cpu0 = 0.0
    while True:
        now = clock()
        if not state["measuring"] and now >= measure_at:
            state["measuring"], cpu0, tally.sent = True, time.process_time(), 0
        if now >= end:
            break
        for key, _ in sel.select(0.05):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            started, frame, buf, sent = key.data
            try:
                if not sent:
                    s.send(frame)
                    key.data[3] = True
                    if state["measuring"]:
                        tally.sent += 1
                    sel.modify(s, selectors.EVENT_READ, key.data)
                    continue
                chunk = s.recv(65535)
            except OSError as exc:
                finish(s, started, type(exc).__name__)
                continue
            if not chunk:
                finish(s, started, "closed before answering")
                continue
            msgs = list(buf.feed(chunk))
            if msgs:
                m = msgs[0]
                finish(s, started, struct.unpack_from(">I", m, 24)[0] if len(m) >= 28 else -1)
    tally.cpu = time.process_time() - cpu0
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    r = tally.result(seconds, False)
    hist = tally.hist
    r["per_s"] = round(tally.ops / seconds)
    r["generators"] = 1
    r["generator_saturated"] = tally.cpu / seconds >= 0.9
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        r[f"{name}_us"] = hist.get_value_at_percentile(q) if hist.get_total_count() else None
    r.pop("histogram")
    return r


def ask(port: int, indices: list[int], door: str) -> list[str]:
    """Ask each identifier once over ``door`` (udp, tcp: one connection, tcp1: one per
    request); what is wrong with each answer (nothing: all right)."""
    from idnode.resolver.codec import FrameBuffer, ResolutionResponse, ResponseCode, decode

    wrong: list[str] = []
    frames = handle_frames([handle(i) for i in indices])
    tcp = door != "udp"

    def connect() -> socket.socket:
        if tcp:
            return socket.create_connection(("127.0.0.1", port), timeout=5)
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    conn = connect()
    conn.settimeout(5)
    buf = FrameBuffer()
    try:
        for i, frame in zip(indices, frames, strict=True):
            if door == "tcp1":
                conn.close()
                conn, buf = connect(), FrameBuffer()
            if tcp:
                conn.sendall(frame)
                msgs: list[bytes] = []
                while not msgs:
                    chunk = conn.recv(65535)
                    if not chunk:
                        raise ConnectionError("closed before answering")
                    msgs = list(buf.feed(chunk))
                data = msgs[0]
            else:
                conn.sendto(frame, ("127.0.0.1", port))
                data = conn.recv(65535)
            m = decode(data)
            if m.response_code != ResponseCode.SUCCESS or not isinstance(
                m.body, ResolutionResponse
            ):
                wrong.append(f"{handle(i)}: response code {m.response_code}")
                continue
            got = [(v.index, v.type, v.data) for v in m.body.values]
            want = [(v.index, v.type, v.data) for v in values(i)]
            if sorted(got) != sorted(want):
                wrong.append(f"{handle(i)}: values {got} (want {want})")
    finally:
        conn.close()
    return wrong


def _summary(name: str, door: str, r: dict[str, Any]) -> str:
    return (
        f"  {door} {name}: {r['per_s']:,}/s p50 {r['p50_us']} us p99 {r['p99_us']} us"
        + ("" if r["all_success"] else f"; codes {r['codes']}")
        + ("; the generator was saturated (a floor)" if r.get("generator_saturated") else "")
    )


def _order(servers: Sequence[str], k: int) -> list[str]:
    """Round ``k``'s order: the servers rotated by ``k``. None always goes first (after a
    pause rather than after load on the same core) nor always last (furthest into any
    drift of the round)."""
    s = k % len(servers)
    return [*servers[s:], *servers[:s]]


def _spread(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(xs), 3), "min": min(xs), "max": max(xs)}


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A door's figures from its rounds (each ``{"order": [...], server: measurement}``).

    Per server: ``per_s`` median/min/max over the rounds, ``all_success`` in every round,
    and under its own name the measurement of its median round (the lower middle one of an
    even count; ``round_index`` says which), so its p50/p99 go with its median rate.
    Per ratio: its value in each round, of two figures taken seconds apart on the same
    machine state, then their median/min/max; the median is also the ratio's top-level
    value. A ratio with a server missing (the reference on ``tcp``) is None.
    """
    out: dict[str, Any] = {"per_s": {}, "all_success": {}, "ratios": {}}
    for who in SERVERS:
        if not all(who in r for r in rounds):
            continue
        xs = [r[who]["per_s"] for r in rounds]
        middle = sorted(range(len(xs)), key=xs.__getitem__)[(len(xs) - 1) // 2]
        out[who] = {**rounds[middle][who], "round_index": middle}
        out["per_s"][who] = _spread(xs)
        out["all_success"][who] = all(r[who]["all_success"] for r in rounds)
    for name, a, b in RATIOS:
        each = [_ratio(r[a]["per_s"], r[b]["per_s"]) if a in r and b in r else None for r in rounds]
        out["ratios"][name] = {"rounds": each, **_spread([x for x in each if x is not None])}
        out[name] = out["ratios"][name]["median"]
    out["rounds"] = rounds
    return out


def _door(
    cfg: PeerConfig, door: str, url: str, ref_port: int, sample: list[int], tmp: Path, say: Progress
) -> tuple[dict[str, Any], list[str], list[str] | None]:
    """One door: its echo and a fresh idnode node started beside the running reference
    server and warmed, then all measured in interleaved rounds. The door's figures, and
    what idnode and the reference server (None on ``tcp``) answered wrongly of the
    sample."""
    from .run import Target, prefill, start_ceiling

    core = [cfg.server_cpu]
    servers = ("echo", "idnode") if door == "tcp" else SERVERS
    echo = "udp" if door == "udp" else "tcp"
    jit_per_s: int | None = None
    rounds: list[dict[str, Any]] = []
    with contextlib.ExitStack() as up:
        say(f"{door}: echo ceiling ({DESCRIPTIONS[echo]}) on CPU {cfg.server_cpu}")
        proc, echo_port = start_ceiling(echo, core)
        up.callback(stop, proc)
        # A node started afresh for each door (as `loadtest run` does), so no door runs
        # on what an earlier one left behind.
        say(f"{door} idnode: 1 worker on CPU {cfg.server_cpu}, SQLite, L1 {cfg.l1_mb} MB")
        node = NodeProcess(
            url,
            workers=1,
            extra=(
                *("--l1-max-mb", str(cfg.l1_mb), "--l1-ttl", str(L1_TTL)),
                *("--log-level", "warning"),
            ),
            log=tmp / f"node-{door}.log",
            cpus=core,
        )
        up.callback(node.stop)
        node.wait_ready(timeout=60)
        t0 = time.perf_counter()
        target = Target("127.0.0.1", node.handle_port, node.http_port, node.grpc_port)
        asyncio.run(prefill(target, cfg.handles))
        took = time.perf_counter() - t0
        say(f"{door} idnode: L1 warmed with {cfg.handles:,} identifiers in {took:.1f} s")
        if "reference" in servers and cfg.jit_warmup > 0:
            say(f"{door} reference: {cfg.jit_warmup:g} s of load to warm its JIT")
            w = measure(cfg, door, ref_port, seconds=cfg.jit_warmup, warmup=0)
            jit_per_s = w["per_s"]
        ports = {"echo": echo_port, "idnode": node.handle_port, "reference": ref_port}
        for k in range(cfg.rounds):
            figures: dict[str, Any] = {"order": _order(servers, k)}
            for who in figures["order"]:
                r = measure(cfg, door, ports[who])
                if who == "echo":
                    r["all_success"] = r["answered"] > 0  # an echo answers with the request
                figures[who] = r
                say(_summary(f"round {k + 1}/{cfg.rounds} {who}", door, r))
            rounds.append(figures)
        wrong_idnode = ask(node.handle_port, sample, door)
        wrong_reference = ask(ref_port, sample, door) if "reference" in servers else None
    d = aggregate(rounds)
    if "reference" not in servers:
        d["reference"] = {"unsupported": PERSISTENT_UNSUPPORTED}
    if jit_per_s is not None:
        d["reference_jit_warmup_per_s"] = jit_per_s
    return d, wrong_idnode, wrong_reference


def inside(cfg: PeerConfig, say: Progress) -> dict[str, Any]:
    from idnode.registry.migrate import upgrade

    from .populate import populate_sqlite

    jars = Path(cfg.reference_jars).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="idnode-peer-"))
    report: dict[str, Any] = {
        "harness": "idnode loadtest peer",
        "config": asdict(cfg),
        "machine": {"cpus": os.cpu_count()},
        "doors": {d: {} for d in cfg.doors},
        "sample_idnode": {},
        "sample_reference": {},
    }
    core = [cfg.server_cpu]
    try:
        url = f"sqlite:///{tmp}/registry.db"
        upgrade(url)
        t0 = time.perf_counter()
        populate_sqlite(str(tmp / "registry.db"), 0, cfg.handles)
        say(f"idnode registry: {cfg.handles:,} identifiers in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        ref_port = free_port()
        server_dir = reference.prepare(tmp, jars, cfg.handles, ref_port)
        report["reference_seed_seconds"] = round(time.perf_counter() - t0, 1)
        seeded = report["reference_seed_seconds"]
        say(f"reference storage: {cfg.handles:,} identifiers in {seeded} s")
        sample = random.Random(7).sample(range(cfg.handles), min(cfg.sample, cfg.handles))

        # The reference server, started once for every door: it idles (costing the
        # core nothing) while the others are measured.
        say(f"reference server: HANDLE.NET from {jars} on CPU {cfg.server_cpu}")
        log = tmp / "reference.log"
        with log.open("wb") as f:
            ref = subprocess.Popen(
                reference.command(jars, server_dir),
                cwd=server_dir,
                stdout=f,
                stderr=subprocess.STDOUT,
                preexec_fn=pinned(core),
            )
        try:
            wait_port(ref_port, proc=ref, log=log, timeout=120)
            wait_udp(ref_port, bytes(handle_frames([handle(0)])[0]), proc=ref, log=log, timeout=60)
            for door in cfg.doors:
                d, wrong_idnode, wrong_reference = _door(cfg, door, url, ref_port, sample, tmp, say)
                report["doors"][door] = d
                report["sample_idnode"][door] = wrong_idnode
                if wrong_reference is not None:
                    report["sample_reference"][door] = wrong_reference
        finally:
            stop(ref, 30)
        report["sample_size"] = len(sample)
        report["answers_agree"] = not any(
            wrong for k in ("sample_idnode", "sample_reference") for wrong in report[k].values()
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _ratio_text(label: str, r: dict[str, Any]) -> str:
    if r["median"] is None:
        return f"{label} n/a"
    return f"{label} {r['median']} ({r['min']}–{r['max']})"


def _rate(per_s: dict[str, Any], who: str) -> str:
    return f"{per_s[who]['median']:,.0f}/s" if who in per_s else "n/a"


def summary(report: dict[str, Any]) -> str:
    lines = []
    for door, d in report["doors"].items():
        per_s = d["per_s"]
        ratios = "; ".join(_ratio_text(f"{a}/{b}", d["ratios"][name]) for name, a, b in RATIOS)
        lines.append(
            f"{door}, median of {len(d['rounds'])} rounds: idnode {_rate(per_s, 'idnode')} "
            f"(p99 {d['idnode']['p99_us']} us), reference {_rate(per_s, 'reference')}, "
            f"echo {_rate(per_s, 'echo')}; {ratios} (min–max over the rounds)"
        )
        for who in per_s:
            failed = [i + 1 for i, r in enumerate(d["rounds"]) if not r[who]["all_success"]]
            if failed:
                codes = [d["rounds"][i - 1][who]["codes"] for i in failed]
                lines.append(f"  {who}: not every answer SUCCESS in rounds {failed}: {codes}")
            floors = [i + 1 for i, r in enumerate(d["rounds"]) if r[who].get("generator_saturated")]
            if floors:
                lines.append(f"  {who}: the generator was saturated in rounds {floors} (a floor)")
        if "unsupported" in d["reference"]:
            lines.append(f"  {d['reference']['unsupported']}")
    lines.append(
        f"answers: {report['sample_size']} identifiers asked of both, "
        + ("all SUCCESS with the registry's values" if report["answers_agree"] else "WRONG answers")
    )
    return "\n".join(lines)


def _inner_main(argv: list[str]) -> int:
    """Inside the namespace: read the config, run, write the report (or the error)."""
    p = argparse.ArgumentParser(description="the part of idnode loadtest peer inside the namespace")
    p.add_argument("config")
    p.add_argument("out")
    args = p.parse_args(argv)
    cfg = PeerConfig(**json.loads(Path(args.config).read_text()))
    try:
        report = inside(cfg, lambda m: print(m, file=sys.stderr))
    except (RuntimeError, ValueError, OSError, ProcessError) as exc:
        report = {"error": f"{type(exc).__name__}: {exc}"}
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(_inner_main(sys.argv[1:]))
