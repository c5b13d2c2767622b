"""Hostile clients against one real node: its memory and a valid client's latency during
each attack (issue 12); not a test.

    python -m idnode.loadtest.attack_bench [--attacks a,b,...] [--seconds 5] [--probes 200]
        [--workers 1] [--json]

Starts one `idnode serve` on loopback over a scratch SQLite registry holding a small
handle, a 7 KB one and a 64 KB one (60 values), then runs the attacks one after another
against it. For each attack:

- baseline: a well-behaved client (from 127.0.3.1) resolves the small handle over UDP,
  Handle TCP (a new connection each time) and REST (``GET /api/handles/<handle>``, a new
  connection each time), in turn, one at a time, ``--probes`` per door, paced over the
  attack's probing window, with no attack; latencies in HdrHistogram (p50, p99);
- during: the same probes while the attack runs (probing starts after a short ramp);
- the node's resident memory (VmRSS of the node and every process under it) before,
  the peak while the attack runs (sampled every 0.2 s) and 2 s after it stopped;
- whether the node and its workers are alive and the same processes as before.

Latencies are reported as ratios to the baseline measured just before, in the same run:
the machines are noisy. The attacker runs in its own process; with two or more cores the
node is pinned to one and the attacker and probe to another (they share theirs). Every
attacker sends from its own loopback network (127.N.x.y), apart from the probe's, so
per-address and per-network bounds count them apart as they would on the internet. The
node runs with its defaults except ``--udp-rrl-exempt ::1/128``: the default exempts all
of 127.0.0.0/8 from the UDP response-rate limit (loopback cannot be spoofed), which would
exempt every attacker here.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, cast

from hdrh.histogram import HdrHistogram

from idnode.loadtest.auth_abuse_bench import first_answer
from idnode.loadtest.generators import new_histogram
from idnode.loadtest.processes import IDNODE, NodeProcess
from idnode.loadtest.udp_flood_bench import HANDLE as SMALL
from idnode.loadtest.udp_flood_bench import fragment
from idnode.resolver.client import resolution_request
from idnode.resolver.codec import (
    CreateHandleRequest,
    FrameBuffer,
    HandleValue,
    Message,
    OpCode,
    ResponseCode,
    decode,
    encode,
)
from idnode.resolver.codec.auth import MAC_HMAC_SHA256, SecretKeyMac, encode_secret_key_mac
from idnode.resolver.codec.bodies import VerifyAuthRequest
from idnode.resolver.codec.digest import RequestDigest

MID = "88.166.7/mid"  # 7 values, about 7 KB: 15 datagrams, under the default UDP cap of 16
BIG = "88.166.7/big60"  # 60 values, about 64 KB: refused over UDP, 64 KB over TCP
PROBE_SOURCE = "127.0.3.1"
PROBE_TIMEOUT = 2.0
ADMIN_SECRET = "s3cret"
DOORS = ("udp", "tcp", "rest")
RRL_BYTES = 262_144  # the node's default UDP answer rate per network, bytes/s


# --- the node ------------------------------------------------------------------------------


def _values(n: int, size: int) -> list[dict[str, object]]:
    return [
        {"index": i + 1, "type": "DESC", "data": f"{i:04d}" + "v" * (size - 4)} for i in range(n)
    ]


def make_registry(tmp: Path) -> tuple[str, str]:
    """A scratch SQLite registry homing 88.166 (admin ``300:0.NA/88.166``) with the small,
    mid and big handles: its URL and node key file."""
    url, key = f"sqlite:///{tmp}/r.db", str(tmp / "node.key")
    init = ["init", "--prefix", "88.166", "--admin-secret", ADMIN_SECRET]
    subprocess.run(
        [IDNODE, *init, "--database-url", url, "--secret-key-file", key],
        check=True,
        capture_output=True,
        cwd=tmp,
    )
    rows = [
        {"handle": SMALL, "values": _values(1, 40)},
        {"handle": MID, "values": _values(7, 1000)},
        {"handle": BIG, "values": _values(60, 1024)},
    ]
    (tmp / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    subprocess.run(
        [IDNODE, "import", str(tmp / "in.jsonl"), "--database-url", url],
        check=True,
        capture_output=True,
    )
    return url, key


def descendants(pid: int) -> list[int]:
    """Every process under ``pid`` (workers, and whatever they start), from /proc."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids = [int(c) for c in children.read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def node_rss_mib(pid: int) -> float:
    """Resident memory of the node: its process and every process under it, MiB."""
    return sum(rss_kib(p) for p in [pid, *descendants(pid)]) / 1024


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class RssSampler:
    """The node's largest resident size while it runs, sampled every ``interval`` s."""

    def __init__(self, pid: int, first: float, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak = first
        self.samples = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, node_rss_mib(self.pid))
            self.samples += 1

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, node_rss_mib(self.pid))
        return self.peak


def udp_gauges(http_port: int) -> dict[str, float]:
    """The node's idnode_udp_* series from /metrics (summed over labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("idnode_udp_"):
            name, _, value = line.rpartition(" ")
            name = name.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


# --- the well-behaved client ---------------------------------------------------------------


class Probe:
    """A valid client resolving the small handle on each door, one request at a time."""

    def __init__(self, handle_port: int, http_port: int, source: str = PROBE_SOURCE) -> None:
        self.handle_port, self.http_port, self.source = handle_port, http_port, source
        self.udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_sock.bind((source, 0))

    def close(self) -> None:
        self.udp_sock.close()

    def udp(self) -> bool:
        req = resolution_request(SMALL)
        deadline = time.monotonic() + PROBE_TIMEOUT
        self.udp_sock.sendto(encode(req), ("127.0.0.1", self.handle_port))
        while (left := deadline - time.monotonic()) > 0:
            self.udp_sock.settimeout(left)
            try:
                m = decode(self.udp_sock.recv(65535))
            except TimeoutError:
                return False
            if m.request_id == req.request_id:
                return m.response_code == ResponseCode.SUCCESS
        return False

    def tcp(self) -> bool:
        req = resolution_request(SMALL)
        with socket.create_connection(
            ("127.0.0.1", self.handle_port), PROBE_TIMEOUT, source_address=(self.source, 0)
        ) as s:
            s.sendall(encode(req))
            frames = FrameBuffer()
            while True:
                data = s.recv(65536)
                if not data:
                    return False
                for frame in frames.feed(data):
                    m = decode(frame)
                    if m.request_id == req.request_id:
                        return m.response_code == ResponseCode.SUCCESS

    def rest(self) -> bool:
        c = http.client.HTTPConnection(
            "127.0.0.1", self.http_port, PROBE_TIMEOUT, source_address=(self.source, 0)
        )
        try:
            c.request("GET", f"/api/handles/{SMALL}")
            r = c.getresponse()
            r.read()
            return r.status == 200
        finally:
            c.close()


@dataclass
class DoorTally:
    hist: HdrHistogram
    answered: int = 0
    failed: int = 0  # no answer within PROBE_TIMEOUT, an error, or a wrong answer

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {"answered": self.answered, "failed": self.failed}
        if self.answered:
            out["p50_ms"] = self.hist.get_value_at_percentile(50) / 1000
            out["p99_ms"] = self.hist.get_value_at_percentile(99) / 1000
        return out


def probe_window(probe: Probe, count: int, seconds: float) -> dict[str, dict[str, object]]:
    """Up to ``count`` probes per door, a round (UDP, TCP, REST) every seconds/count,
    for at most ``seconds``."""
    tallies = {d: DoorTally(new_histogram()) for d in DOORS}
    calls: dict[str, Callable[[], bool]] = {"udp": probe.udp, "tcp": probe.tcp, "rest": probe.rest}
    start = time.monotonic()
    end = start + seconds
    interval = seconds / max(1, count)
    for i in range(count):
        at = start + i * interval
        now = time.monotonic()
        if now >= end:
            break
        if at > now:
            time.sleep(at - now)
        for door in DOORS:
            t0 = time.perf_counter()
            try:
                ok = calls[door]()
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
            took_us = int((time.perf_counter() - t0) * 1e6)
            if ok:
                tallies[door].answered += 1
                tallies[door].hist.record_value(max(1, took_us))
            else:
                tallies[door].failed += 1
    return {d: t.summary() for d, t in tallies.items()}


# --- the attacks (each runs in its own process until ``stop`` is set) ----------------------


@dataclass(frozen=True)
class Target:
    handle_port: int
    http_port: int
    net: int  # this attack's loopback network: it sends from 127.<net>.x.y
    seconds: float

    def addr(self, i: int) -> str:
        return f"127.{self.net}.{1 + (i // 250) % 250}.{1 + i % 250}"


def _connect(port: int, source: str, timeout: float = 2.0) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout, source_address=(source, 0))
    except OSError:
        return None


def _connections(
    port: int, t: Target, count: int, sources: int, stop: Event
) -> list[socket.socket]:
    """Up to ``count`` connections to ``port``, round robin from ``sources`` addresses
    (under the node's 256 per address); fewer if ``stop`` comes first."""
    out = []
    for i in range(count):
        if stop.is_set():
            break
        s = _connect(port, t.addr(i % sources))
        if s is not None:
            out.append(s)
    return out


def _closed_by_node(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the node has closed (EOF or reset); reads what they got."""
    n = 0
    for s in socks:
        try:
            readable, _, _ = select.select([s], [], [], 0)
            if readable and not s.recv(1 << 20, socket.MSG_DONTWAIT):
                n += 1
        except BlockingIOError:
            pass
        except (OSError, ValueError):
            n += 1
    return n


def _push(socks: list[socket.socket], data: bytes, stop: Event, limit: float) -> int:
    """Send ``data`` on every socket without blocking on any (a node that stops reading
    one does not hold up the others), until all is sent, ``stop`` or ``limit`` s. The
    bytes sent in all."""
    left = {s.fileno(): memoryview(data) for s in socks}
    by_fd = {s.fileno(): s for s in socks}
    for s in socks:
        s.setblocking(False)
    sent = 0
    deadline = time.monotonic() + limit
    while left and not stop.is_set() and time.monotonic() < deadline:
        _, writable, _ = select.select([], [by_fd[fd] for fd in list(left)[:1000]], [], 0.05)
        for s in writable:
            fd = s.fileno()
            try:
                n = s.send(left[fd][: 1 << 20])
            except BlockingIOError:
                continue
            except OSError:  # closed by the node: over a bound
                del left[fd]
                continue
            sent += n
            left[fd] = left[fd][n:]
            if not left[fd]:
                del left[fd]
    return sent


def attack_udp_reassembly(t: Target, stop: Event) -> dict[str, object]:
    """First datagrams of 200 KB requests that never complete, from 256 source addresses
    (beyond the per-client bound), paced at 4,000 datagrams/s."""
    socks = []
    for i in range(256):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((t.addr(i), 0))
        socks.append(s)
    rate = 4000.0
    sent, rid = 0, 1
    start = time.monotonic()
    gauges: dict[str, float] = {}
    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            socks[sent % len(socks)].sendto(fragment(rid, 200_000), ("127.0.0.1", t.handle_port))
            sent += 1
            rid += 1
        if time.monotonic() - start > t.seconds - 1.0 and not gauges:
            try:  # the door sets these once a second
                gauges = udp_gauges(t.http_port)
            except OSError:
                gauges = {}
        time.sleep(0.005)
    for s in socks:
        s.close()
    return {
        "datagrams_sent": sent,
        "pending_held": gauges.get("idnode_udp_reassembly_pending"),
        "pending_bytes": gauges.get("idnode_udp_reassembly_bytes"),
        "pending_clients": gauges.get("idnode_udp_reassembly_clients"),
        "given_up_total": gauges.get("idnode_udp_reassembly_dropped_total"),
    }


def attack_challenge_flood(t: Target, stop: Event) -> dict[str, object]:
    """Unauthenticated CREATE_HANDLEs with a 250 KB value (the node answers 402 and keeps
    the request for the challenge answer), one per connection, from 20 addresses."""
    value = os.urandom(125_000).hex().encode()
    codes: Counter[str] = Counter()
    i = 0
    while not stop.is_set():
        i += 1
        m = Message(
            op_code=OpCode.CREATE_HANDLE,
            request_id=i,
            body=CreateHandleRequest(f"88.166/flood{t.net}-{i}", (HandleValue(1, "URL", value),)),
        )
        s = _connect(t.handle_port, t.addr(i % 20), 5.0)
        if s is None:
            codes["connect refused"] += 1
            continue
        try:
            s.sendall(encode(m))
            codes[f"RC {first_answer(s, FrameBuffer()).response_code}"] += 1
        except (OSError, ConnectionError):
            codes["closed"] += 1
        finally:
            s.close()
    return {"requests": i, "answers": dict(codes)}


def attack_tcp_no_read(t: Target, stop: Event) -> dict[str, object]:
    """8 connections pipelining lookups of the 64 KB handle (up to 3,000 each, answers of
    190 MB a connection) that never read an answer (small receive buffers)."""
    one = encode(resolution_request(BIG))
    socks = []
    for _ in range(8):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.bind((t.addr(0), 0))
        try:
            s.connect(("127.0.0.1", t.handle_port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    sent = _push(socks, one * 3000, stop, t.seconds + 5)
    stop.wait(t.seconds + 5)
    closed = _closed_by_node(socks)
    for s in socks:
        s.close()
    return {
        "connections": len(socks),
        "lookups_sent": sent // len(one),
        "answer_mb_asked": round(sent // len(one) * 64_000 / 1e6),
        "closed_by_node": closed,
    }


def attack_tcp_partial_frames(t: Target, stop: Event) -> dict[str, object]:
    """600 connections from 3 addresses, each sending an envelope that declares a 256 KiB
    message and all but 1 KiB of it (about 150 MB held if the node kept them all)."""
    length = 262_144
    head = struct.pack(">BBHIIII", 2, 10, 0, 0, 1, 0, length)
    part = b"\0" * (length - 1024)
    t0 = time.monotonic()
    socks = _connections(t.handle_port, t, 600, 3, stop)
    connect_s = round(time.monotonic() - t0, 2)
    sent = _push(socks, head + part, stop, t.seconds + 5)
    stop.wait(t.seconds + 5)
    closed = _closed_by_node(socks)
    for s in socks:
        s.close()
    return {
        "connections": len(socks),
        "connect_s": connect_s,
        "mb_sent": round(sent / 1e6, 1),
        "closed_by_node": closed,
    }


def attack_tunnel_slow_body(t: Target, stop: Event) -> dict[str, object]:
    """150 POSTs to the Handle-over-HTTP tunnel declaring 1 MiB and stopping 1 byte short
    (about 157 MB held if the node kept them all), from 2 addresses."""
    size = 1 << 20
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-hdl-message\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    t0 = time.monotonic()
    socks = _connections(t.http_port, t, 150, 2, stop)
    connect_s = round(time.monotonic() - t0, 2)
    sent = _push(socks, head + b"\0" * (size - 1), stop, t.seconds + 5)
    stop.wait(t.seconds + 5)
    statuses: Counter[str] = Counter()
    for s in socks:
        try:
            readable, _, _ = select.select([s], [], [], 0)
            data = s.recv(4096, socket.MSG_DONTWAIT) if readable else None
        except OSError:
            data = b""
        if data is None:
            statuses["still open"] += 1
        elif data.startswith(b"HTTP/1.1 "):
            statuses[data[9:12].decode()] += 1
        else:
            statuses["closed"] += 1
        s.close()
    return {
        "posts": len(socks),
        "connect_s": connect_s,
        "mb_sent": round(sent / 1e6, 1),
        "answers": dict(statuses),
    }


def attack_slowloris(t: Target, stop: Event) -> dict[str, object]:
    """1,000 HTTP connections from 5 addresses, each sending an unfinished request head
    and then one byte every 2 s."""
    t0 = time.monotonic()
    socks = _connections(t.http_port, t, 1000, 5, stop)
    connect_s = round(time.monotonic() - t0, 2)
    for s in socks:
        s.setblocking(False)
        with suppress(OSError):
            s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    while not stop.wait(2.0):
        for s in socks:
            with suppress(OSError):
                s.send(b"X")
    closed = _closed_by_node(socks)
    for s in socks:
        s.close()
    return {"connections": len(socks), "connect_s": connect_s, "closed_by_node": closed}


def attack_udp_amplification(t: Target, stop: Event) -> dict[str, object]:
    """Lookups of the 64 KB handle (over the UDP answer cap) and of the 7 KB one (under
    it), 500 a second each, each from its own network; what comes back to the sender
    (the address a spoofer would name) against what it sent."""
    out: dict[str, object] = {}
    socks: dict[str, socket.socket] = {}
    for k, handle in enumerate((BIG, MID)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((f"127.{t.net}.{k + 1}.1", 0))
        s.setblocking(False)
        socks[handle] = s
    bytes_in = dict.fromkeys(socks, 0)
    bytes_out = dict.fromkeys(socks, 0)
    grams = dict.fromkeys(socks, 0)
    asked = dict.fromkeys(socks, 0)
    rate = 500.0
    start = time.monotonic()

    def drain() -> None:
        for h, s in socks.items():
            while True:
                try:
                    data = s.recv(65535)
                except BlockingIOError:
                    break
                bytes_out[h] += len(data)
                grams[h] += 1

    while not stop.is_set():
        due = int((time.monotonic() - start) * rate)
        for h, s in socks.items():
            while asked[h] < due:
                wire = encode(resolution_request(h))
                s.sendto(wire, ("127.0.0.1", t.handle_port))
                bytes_in[h] += len(wire)
                asked[h] += 1
        drain()
        time.sleep(0.002)
    took = time.monotonic() - start
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        drain()
        time.sleep(0.01)
    for h, s in socks.items():
        s.close()
        name = "big_64kb" if h == BIG else "mid_7kb"
        out[name] = {
            "requests": asked[h],
            "bytes_in": bytes_in[h],
            "bytes_out": bytes_out[h],
            "datagrams_out": grams[h],
            "amplification": round(bytes_out[h] / max(1, bytes_in[h]), 2),
            "out_bytes_per_s": round(bytes_out[h] / took),
        }
    out["rrl_bytes_per_s"] = RRL_BYTES
    return out


def _wrong_verify(i: int) -> bytes:
    mac = encode_secret_key_mac(SecretKeyMac(MAC_HMAC_SHA256, os.urandom(32)))
    body = VerifyAuthRequest(
        "0.NA/88.166", 300, os.urandom(16), RequestDigest(2, os.urandom(20)), mac
    )
    return encode(Message(op_code=OpCode.VERIFY_RESPONSE, request_id=i, body=body))


def attack_guess_handle(t: Target, stop: Event) -> dict[str, object]:
    """Wrong VERIFY_RESPONSE answers for 300:0.NA/88.166 over one Handle TCP connection
    from one address (reconnecting if the node closes it), as fast as answered."""
    codes: Counter[str] = Counter()
    s: socket.socket | None = None
    frames = FrameBuffer()
    i = 0
    while not stop.is_set():
        if s is None:
            s, frames = _connect(t.handle_port, t.addr(0), 5.0), FrameBuffer()
            if s is None:
                codes["connect refused"] += 1
                stop.wait(0.1)
                continue
        i += 1
        try:
            s.sendall(_wrong_verify(i))
            rc = first_answer(s, frames).response_code
            codes["verdict (RC 1)" if rc == 1 else f"RC {rc}"] += 1
        except (OSError, ConnectionError):
            codes["closed"] += 1
            s.close()
            s = None
    if s is not None:
        s.close()
    return {"guesses": i, "answers": dict(codes)}


def attack_guess_rest(t: Target, stop: Event) -> dict[str, object]:
    """Wrong REST Basic secrets for 300:0.NA/88.166 over one keep-alive connection from
    one address, as fast as answered."""
    statuses: Counter[str] = Counter()
    c: http.client.HTTPConnection | None = None
    i = 0
    while not stop.is_set():
        if c is None:
            c = http.client.HTTPConnection(
                "127.0.0.1", t.http_port, 5, source_address=(t.addr(0), 0)
            )
        i += 1
        token = base64.b64encode(f"300%3A0.NA/88.166:guess{i}".encode()).decode()
        try:
            c.request("GET", f"/api/handles/{SMALL}", headers={"Authorization": f"Basic {token}"})
            r = c.getresponse()
            r.read()
            statuses[str(r.status)] += 1
        except (OSError, http.client.HTTPException):
            statuses["closed"] += 1
            c.close()
            c = None
    if c is not None:
        c.close()
    return {"guesses": i, "answers": dict(statuses)}


AttackFn = Callable[[Target, Event], dict[str, object]]
ATTACKS: dict[str, AttackFn] = {
    "udp_reassembly": attack_udp_reassembly,
    "challenge_flood": attack_challenge_flood,
    "tcp_no_read": attack_tcp_no_read,
    "tcp_partial_frames": attack_tcp_partial_frames,
    "tunnel_slow_body": attack_tunnel_slow_body,
    "slowloris": attack_slowloris,
    "udp_amplification": attack_udp_amplification,
    "guess_handle": attack_guess_handle,
    "guess_rest": attack_guess_rest,
}


def _attack_process(name: str, t: Target, stop: Event, started: Event, results: Any) -> None:
    started.set()  # imports done: the attack's clock starts now
    try:
        results.put(ATTACKS[name](t, stop))
    except Exception as exc:  # reported in the row, not lost in a child's stderr
        results.put({"attacker_error": f"{type(exc).__name__}: {exc}"})


# --- one run -------------------------------------------------------------------------------


def run_attack(
    name: str, node: NodeProcess, net: int, seconds: float, probes: int
) -> dict[str, object]:
    pid = node.proc.pid
    ramp = min(1.0, seconds / 4)
    window = seconds - ramp
    probe = Probe(node.handle_port, node.http_port)
    try:
        workers = sorted(descendants(pid))
        baseline = probe_window(probe, probes, window)
        before = node_rss_mib(pid)
        ctx = multiprocessing.get_context("spawn")
        stop, started = ctx.Event(), ctx.Event()
        results = ctx.Queue()
        t = Target(node.handle_port, node.http_port, net, seconds)
        attacker = ctx.Process(target=_attack_process, args=(name, t, stop, started, results))
        sampler = RssSampler(pid, before)
        attacker.start()
        started.wait(60)
        t0 = time.monotonic()
        time.sleep(ramp)
        during = probe_window(probe, probes, max(0.1, t0 + seconds - time.monotonic()))
        left = t0 + seconds - time.monotonic()
        if left > 0:
            time.sleep(left)
        stop.set()
        try:
            facts = results.get(timeout=30)
        except Exception:  # queue.Empty: the attacker hung or died
            facts = {"attacker_error": "no result within 30 s"}
        attacker.join(10)
        if attacker.is_alive():
            attacker.kill()
            attacker.join()
        peak = sampler.stop()
        time.sleep(2.0)
        after = node_rss_mib(pid)
        workers_after = sorted(descendants(pid))
        up = node.proc.poll() is None and all(alive(w) for w in workers_after)
        try:
            healthy = node.health()["status"] == "ok"
        except OSError:
            healthy = False
    finally:
        probe.close()
    return {
        "attack": name,
        "doc": (ATTACKS[name].__doc__ or "").split("\n\n")[0].replace("\n   ", ""),
        "seconds": seconds,
        "baseline": baseline,
        "during": during,
        "rss_mib": {
            "before": round(before, 1),
            "peak": round(peak, 1),
            "after": round(after, 1),
            "samples": sampler.samples,
        },
        "alive": up and healthy,
        "workers_unchanged": workers == workers_after,
        "workers": len(workers_after),
        "facts": facts,
    }


def run(
    attacks: list[str], seconds: float, probes: int, workers: int = 1, keep: bool = False
) -> dict[str, object]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # slowloris holds 1,000 sockets; the node inherits the same limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cores = sorted(os.sched_getaffinity(0))
    node_cpus = load_cpus = None
    if len(cores) >= 2:
        node_cpus, load_cpus = [cores[0]], {cores[1]}
        os.sched_setaffinity(0, load_cpus)  # the attacker processes inherit it
    tmp = Path(tempfile.mkdtemp(prefix="attack-bench-"))
    url, key = make_registry(tmp)
    node = NodeProcess(
        url,
        workers=workers,
        extra=("--secret-key-file", key, "--udp-rrl-exempt", "::1/128"),
        log=tmp / "node.log",
        cpus=node_cpus,
    )
    rows = []
    try:
        node.wait_ready()
        warm = Probe(node.handle_port, node.http_port)
        probe_window(warm, 20, 0.2)  # every door has answered before the first baseline
        warm.close()
        for k, name in enumerate(attacks):
            rows.append(run_attack(name, node, 20 + k, seconds, probes))
            if node.proc.poll() is not None:
                break
    finally:
        code = node.stop()
        ok = code == 0 and all(r["alive"] for r in rows)
        if ok and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "node": {
            "workers": workers,
            "node_cpus": node_cpus,
            "load_cpus": sorted(load_cpus) if load_cpus else None,
            "flags": "defaults, --udp-rrl-exempt ::1/128 (the default exempts 127.0.0.0/8)",
            "exit_code": code,
            "log": None if ok and not keep else str(tmp / "node.log"),
        },
        "probe": {
            "source": PROBE_SOURCE,
            "handle": SMALL,
            "per_door": probes,
            "timeout_s": PROBE_TIMEOUT,
            "doors": "udp; tcp and rest: a new connection per probe",
        },
        "attacks": rows,
    }


# --- the report ----------------------------------------------------------------------------


def _ratio(during: object, base: object) -> str:
    if not isinstance(during, float) or not isinstance(base, float) or base <= 0:
        return "-"
    return f"{during / base:.1f}x"


def _ms(x: object) -> str:
    return f"{x:.2f}" if isinstance(x, float) else "-"


def table(report: dict[str, Any]) -> str:
    lines = [
        f"node: {report['node']['flags']}; workers {report['node']['workers']}; "
        f"node on CPU {report['node']['node_cpus']}, attacker and probe on "
        f"{report['node']['load_cpus']}",
        f"probe: {report['probe']['handle']} from {report['probe']['source']}, "
        f"{report['probe']['per_door']} per door ({report['probe']['doors']}), "
        f"{report['probe']['timeout_s']:g} s timeout; latency during/baseline of the same run",
        "",
        f"{'attack':<19}{'door':<5}{'p50 ratio':>10}{'p99 ratio':>10}"
        f"{'p50 ms base->during':>22}{'p99 ms base->during':>22}{'answered/failed':>17}",
    ]
    for row in report["attacks"]:
        for door in DOORS:
            b, d = row["baseline"][door], row["during"][door]
            lines.append(
                f"{row['attack'] if door == 'udp' else '':<19}{door:<5}"
                f"{_ratio(d.get('p50_ms'), b.get('p50_ms')):>10}"
                f"{_ratio(d.get('p99_ms'), b.get('p99_ms')):>10}"
                f"{_ms(b.get('p50_ms')) + ' -> ' + _ms(d.get('p50_ms')):>22}"
                f"{_ms(b.get('p99_ms')) + ' -> ' + _ms(d.get('p99_ms')):>22}"
                f"{str(d['answered']) + '/' + str(d['failed']):>17}"
            )
        r = row["rss_mib"]
        lines.append(
            f"{'':<19}RSS MiB before {r['before']} peak {r['peak']} after {r['after']}; "
            f"alive {'yes' if row['alive'] else 'NO'}; workers "
            f"{'unchanged' if row['workers_unchanged'] else 'CHANGED'}"
        )
        lines.append(f"{'':<19}{json.dumps(row['facts'], separators=(', ', ': '))}")
    lines.append("")
    lines.append("attacks:")
    for row in report["attacks"]:
        lines.append(f"  {row['attack']}: {' '.join(row['doc'].split())}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m idnode.loadtest.attack_bench",
        description="Run hostile clients, one after another, against one `idnode serve` on "
        "loopback and report, per attack: a valid client's p50/p99 latency on UDP, Handle "
        "TCP and REST during the attack against a baseline taken just before (ratio and "
        "ms), the node's resident memory before, at peak and 2 s after, and whether the "
        "node and its workers survived. Attacks: " + ", ".join(ATTACKS) + ".",
    )
    ap.add_argument(
        "--attacks",
        default=",".join(ATTACKS),
        help="comma-separated attacks to run, in order (default: all)",
    )
    ap.add_argument(
        "--seconds", type=float, default=5.0, help="length of each attack, seconds (default 5)"
    )
    ap.add_argument(
        "--probes",
        type=int,
        default=200,
        help="valid-client probes per door in the baseline and during each attack (default 200)",
    )
    ap.add_argument("--workers", type=int, default=1, help="the node's worker processes")
    ap.add_argument("--json", action="store_true", help="print the report as JSON, not a table")
    ap.add_argument(
        "--keep-log",
        action="store_true",
        help="keep the node's log and name it in the report (kept anyway if the node failed)",
    )
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.attacks.split(",") if n.strip()]
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        ap.error(f"unknown attacks {unknown}; known: {', '.join(ATTACKS)}")
    if a.seconds < 0.5 or a.probes < 1:
        ap.error("--seconds must be at least 0.5 and --probes at least 1")
    report = run(names, a.seconds, a.probes, a.workers, a.keep_log)
    print(json.dumps(report, indent=1) if a.json else table(report))
    sys.stdout.flush()
    rows = cast(list[dict[str, object]], report["attacks"])
    return 0 if all(r["alive"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
