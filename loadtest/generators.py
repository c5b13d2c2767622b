"""Load generator processes: each drives one front door with identifiers drawn from a
workload, open-loop at a rate or closed-loop with a window of requests in flight.

A generator draws its identifiers (and encodes its Handle messages) before the clock
starts, so drawing Zipfian ranks and Feistel permutations costs the load nothing. Every
request's latency goes into an HdrHistogram in microseconds; in open loop it is measured
from the *intended* send time, so a server (or generator) that falls behind shows as
latency instead of silently sending less (no coordinated omission). The parent merges
the histograms of all generators.

Handle UDP and TCP use plain non-blocking sockets in a select loop (one core makes
~150k requests/s that way, more than asyncio's per-request cost allows); HTTP, REST,
the web pages, gRPC and updates run on uvloop with aiohttp and grpc.aio.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from idnode.resolver.codec.codes import OpCode, ResponseCode

from .workloads import Workload

# A plain int: answers are tallied by str(code), and this is counted on the hot path.
SUCCESS = int(ResponseCode.SUCCESS)

# page and redirect: the web face's GET /{handle}, ?noredirect (the record page) or not
# (the 302 to the URL value), beside the REST GET.
DOORS = ("udp", "tcp", "http", "rest", "page", "redirect", "grpc", "grpc-batch", "grpc-stream")
_U32 = struct.Struct(">I")
MAX_LATENCY_US = 60_000_000
# The warm-up draws its own sequence (seed + this), so the measured one is not replayed
# from L1; far above any seed a run gives its points and generators.
WARM_SEED = 1 << 30


@dataclass
class Job:
    """What one generator process does. Plain data: it crosses a process boundary."""

    door: str  # one of DOORS, or "update" (REST PUT of one value, for YCSB A/B)
    host: str
    port: int
    mode: str  # "open" (rate) or "closed" (window)
    seconds: float
    warmup: float = 1.0
    rate: float = 0.0  # open loop: requests per second from this generator
    window: int = 64  # closed loop: requests in flight from this generator
    batch: int = 100  # grpc-batch: identifiers per call
    registry_size: int = 100_000
    distribution: str = "zipfian"
    miss_share: float = 0.0
    seed: int = 1
    draws: int = 0  # identifiers to draw; 0: enough for the expected rate
    api_key: str = ""
    cpu: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def expected_draws(job: Job) -> int:
    """Identifiers to draw so the measured phase never reuses its sequence (a reused
    sequence would inflate cache hit ratios); closed-loop rates are generous guesses,
    and a run that still wraps around says so in its result."""
    if job.draws:
        return job.draws
    per_s = job.rate if job.mode == "open" else (160_000 if job.door in ("udp", "tcp") else 40_000)
    if job.door == "grpc-batch" and job.mode == "closed":
        per_s = 400_000
    return max(1000, math.ceil(per_s * (job.seconds + 0.5)))


def draw(job: Job, count: int, seed: int) -> list[str]:
    w = Workload(job.registry_size, job.distribution, job.miss_share, "C", seed=seed)
    return [w.next()[1] for _ in range(count)]


def new_histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_LATENCY_US, 3)


class Tally:
    """Counts and latencies of one phase."""

    def __init__(self) -> None:
        self.hist = new_histogram()
        self.codes: dict[str, int] = {}
        self.sent = 0
        self.answered = 0
        self.ops = 0  # identifiers answered (a batch call answers many)
        self.dropped = 0  # open loop: not sent because too many were outstanding
        self.behind = 0.0  # worst lag of the generator behind its schedule, seconds
        self.cpu = 0.0  # CPU seconds this generator process used while measuring
        # The phase's start (perf_counter, and the wall clock to line the series up with
        # the node's log) and, per second of the schedule, [answered, over 1 ms, over
        # 5 ms, max µs]: a p99 made of one bad second and a steady tail look alike in
        # one histogram, and only the series tells them apart.
        self.start = time.perf_counter()
        self.start_unix = time.time()
        self.series: dict[int, list[int]] = {}

    def done(self, latency_s: float, codes: list[int | str] | int | str, sent: float) -> None:
        """One answer: its latency, its code (or one per identifier of a batch) and when
        it was sent (or due, in an open loop; perf_counter), which picks its second."""
        us = min(MAX_LATENCY_US, max(1, int(latency_s * 1e6)))
        self.hist.record_value(us)
        sec = self.series.get(int(sent - self.start))
        if sec is None:
            sec = self.series[int(sent - self.start)] = [0, 0, 0, 0]
        sec[0] += 1
        if us > 1000:
            sec[1] += 1
            if us > 5000:
                sec[2] += 1
            if us > sec[3]:
                sec[3] = us
        self.answered += 1
        for c in codes if isinstance(codes, list) else (codes,):
            self.ops += 1
            k = str(c)
            self.codes[k] = self.codes.get(k, 0) + 1

    def result(self, seconds: float, wrapped: bool) -> dict[str, Any]:
        return {
            "seconds": seconds,
            "sent": self.sent,
            "answered": self.answered,
            "ops": self.ops,
            "lost": self.sent - self.answered,
            "dropped": self.dropped,
            "codes": self.codes,
            "generator_behind_ms": round(self.behind * 1000, 1),
            "generator_cpu": round(self.cpu / seconds, 3),
            "key_sequence_wrapped": wrapped,
            "histogram": self.hist.encode().decode("ascii"),
            "start_unix": self.start_unix,
            "series": {str(k): v for k, v in sorted(self.series.items())},
        }


def due_times(
    tally: Tally, start: float, interval: float, end: float, now: float
) -> Iterator[float]:
    """Open loop: the intended send times that have come by ``now``. Request k is due at
    ``start + k * interval`` whether request k-1 was sent or dropped, so the caller must
    count each time it is given in ``tally.sent`` or ``tally.dropped``."""
    due = start + (tally.sent + tally.dropped) * interval
    while due <= now and due < end:
        tally.behind = max(tally.behind, now - due)
        yield due
        due = start + (tally.sent + tally.dropped) * interval


# --- Handle over UDP and TCP: select loops ---------------------------------------------


def handle_frames(handles: list[str]) -> list[bytearray]:
    """Resolution requests for ``handles``, as the codec encodes them.

    The codec's general encoder takes ~5 µs a message, which for the millions a long
    run draws is most of its preparation; so one request is encoded by the codec and
    the rest are spliced from it (envelope and body lengths, the handle). A unit test
    holds the two byte-identical.
    """
    from idnode.resolver.codec import Message, ResolutionRequest, encode
    from idnode.resolver.codec.codes import OpFlag

    flags = OpFlag.REC | OpFlag.CA | OpFlag.PO
    sample = encode(Message(op_code=OpCode.RESOLUTION, body=ResolutionRequest("x"), op_flags=flags))
    # envelope: message length at 16; header: body length at 40; body: handle at 44
    msg_len, body_len = _U32.unpack_from(sample, 16)[0] - 1, _U32.unpack_from(sample, 40)[0] - 1
    head, mid, tail = sample[:16], sample[20:40], sample[49:]
    pack = _U32.pack
    out = []
    # One frame per distinct identifier, shared by its draws: a frame is stamped with
    # its request id just before it is sent, and a send copies it (datagram, or onto a
    # TCP link's outbox), so sharing is safe and a popular identifier costs one frame.
    made: dict[str, bytearray] = {}
    for h in handles:
        frame = made.get(h)
        if frame is None:
            hb = h.encode()
            n = len(hb)
            frame = made[h] = bytearray(
                b"".join((head, pack(msg_len + n), mid, pack(body_len + n), pack(n), hb, tail))
            )
        out.append(frame)
    return out


class UdpLink:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.connect((host, port))
        self.sock.setblocking(False)

    def send(self, frame: bytes | bytearray) -> bool:
        try:
            self.sock.send(frame)
            return True
        except BlockingIOError:  # socket buffer full: the request is lost
            return False

    def answers(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        recv, unpack = self.sock.recv, _U32.unpack_from
        while True:
            try:
                data = recv(65535)
            except BlockingIOError:
                return out
            except ConnectionRefusedError:  # ICMP from a port nobody listens on
                return out
            # multi-datagram answers: the first datagram (sequence 0) carries the code
            if len(data) >= 28 and unpack(data, 12)[0] == 0:
                out.append((unpack(data, 8)[0], unpack(data, 24)[0]))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()


class TcpLink:
    """One persistent connection; requests are pipelined and answers matched by id."""

    def __init__(self, host: str, port: int) -> None:
        from idnode.resolver.codec import FrameBuffer

        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.inbox = FrameBuffer()
        self.outbox = bytearray()

    def send(self, frame: bytes | bytearray) -> bool:
        self.outbox += frame
        return True

    def flush(self) -> None:
        if self.outbox:
            with contextlib.suppress(BlockingIOError):
                n = self.sock.send(self.outbox)
                del self.outbox[:n]

    def answers(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        unpack = _U32.unpack_from
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                return out
            if not chunk:
                raise ConnectionError("the node closed the connection")
            for m in self.inbox.feed(chunk):
                out.append((unpack(m, 8)[0], unpack(m, 24)[0] if len(m) >= 28 else -1))

    def close(self) -> None:
        self.sock.close()


def handle_phase(
    link: UdpLink | TcpLink, frames: list[bytearray], job: Job, seconds: float
) -> tuple[Tally, bool]:
    """One phase of Handle load over a link; returns the tally and whether the frame
    sequence wrapped around."""
    tally = Tally()
    clock = time.perf_counter
    cpu0 = time.process_time()
    intended: dict[int, float] = {}
    n = len(frames)
    fd = link.sock.fileno()
    start = tally.start
    end = start + seconds
    pack_into = _U32.pack_into

    def fire(due: float) -> None:
        frame = frames[tally.sent % n]
        rid = tally.sent & 0x7FFFFFFF
        pack_into(frame, 8, rid)
        intended[rid] = due
        tally.sent += 1
        link.send(frame)

    def drain() -> int:
        got = 0
        now = clock()
        for rid, rc in link.answers():
            t = intended.pop(rid, None)
            if t is not None:
                tally.done(now - t, rc, t)
                got += 1
        return got

    if job.mode == "closed":
        for _ in range(min(job.window, n)):
            fire(clock())
        link.flush()
        last_answer = clock()
        while clock() < end:
            select.select([fd], [], [], 0.05)
            got = drain()
            now = clock()
            if got:
                last_answer = now
                for _ in range(got):
                    fire(now)
            elif now - last_answer > 0.5 and intended:  # lost (UDP): refill the window
                for _ in range(len(intended)):
                    fire(now)
                intended_old = [k for k, t in intended.items() if now - t > 0.5]
                for k in intended_old:
                    del intended[k]
                last_answer = now
            link.flush()
    else:
        interval = 1.0 / job.rate
        cap = max(1000, int(job.rate))  # outstanding requests at most (one second's worth)
        while True:
            now = clock()
            if now >= end:
                break
            for due in due_times(tally, start, interval, end, now):
                if len(intended) >= cap:
                    tally.dropped += 1
                else:
                    fire(due)
            due = start + (tally.sent + tally.dropped) * interval
            link.flush()
            drain()
            wait = due - clock()
            if wait > 0:
                select.select([fd], [], [], min(wait, 0.001))
    grace = clock() + 1.0  # stragglers
    while intended and clock() < grace:
        link.flush()
        select.select([fd], [], [], 0.01)
        drain()
    tally.cpu = time.process_time() - cpu0
    return tally, tally.sent > n


def run_handle(job: Job) -> dict[str, Any]:
    handles = draw(job, expected_draws(job), job.seed)
    frames = handle_frames(handles)
    warm = handle_frames(draw(job, max(1000, len(frames) // 4), job.seed + WARM_SEED))
    link: UdpLink | TcpLink = (
        UdpLink(job.host, job.port) if job.door == "udp" else TcpLink(job.host, job.port)
    )
    try:
        _out_of_the_collectors_way()
        job.extra["ready"]()
        if job.warmup > 0:
            handle_phase(link, warm, job, job.warmup)
        job.extra["go"]()
        tally, wrapped = handle_phase(link, frames, job, job.seconds)
    finally:
        link.close()
    return tally.result(job.seconds, wrapped)


# --- HTTP, REST, gRPC and updates: uvloop -----------------------------------------------

Codes = list[int | str] | int | str  # one Handle code, or one per identifier of a batch
Call = Callable[[int], Awaitable[Codes]]


async def async_phase(call: Call, n: int, job: Job, seconds: float) -> tuple[Tally, bool]:
    tally = Tally()
    clock = time.perf_counter
    cpu0 = time.process_time()
    start = tally.start
    end = start + seconds
    hard_end = end + 5.0  # answers later than this are counted lost, not by their code

    async def one(i: int, due: float) -> None:
        try:
            codes = await call(i)
        except Exception as exc:  # a transport failure is an outcome, counted by kind
            codes = f"error:{type(exc).__name__}"
        if clock() < hard_end:
            tally.done(clock() - due, codes, due)

    if job.mode == "closed":

        async def worker(k: int) -> None:
            while clock() < end:
                i = tally.sent
                tally.sent += 1
                await one(i % n, clock())

        await asyncio.gather(*(worker(k) for k in range(job.window)))
    else:
        interval = 1.0 / job.rate
        cap = max(256, int(job.rate))
        pending: set[asyncio.Task[None]] = set()
        while True:
            now = clock()
            if now >= end:
                break
            for due in due_times(tally, start, interval, end, now):
                if len(pending) >= cap:
                    tally.dropped += 1
                else:
                    t = asyncio.create_task(one(tally.sent % n, due))
                    pending.add(t)
                    t.add_done_callback(pending.discard)
                    tally.sent += 1
            due = start + (tally.sent + tally.dropped) * interval
            await asyncio.sleep(max(0.0, min(due - clock(), 0.001)))
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, hard_end - clock()))
            for t in pending:  # unanswered: lost (sent - answered), no code
                t.cancel()
    tally.cpu = time.process_time() - cpu0
    return tally, tally.sent > n


async def _http_calls(job: Job, handles: list[str]) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(job.window, 64)),
        timeout=aiohttp.ClientTimeout(total=10),
    )
    base = f"http://{job.host}:{job.port}"
    if job.door == "http":
        frames = [bytes(f) for f in handle_frames(handles)]
        headers = {"Content-Type": "application/x-hdl-message"}

        async def call(i: int) -> Codes:
            async with session.post(base + "/", data=frames[i], headers=headers) as r:
                body = await r.read()
            return _U32.unpack_from(body, 24)[0] if len(body) >= 28 else f"http:{r.status}"

    elif job.door == "rest":
        urls = [f"{base}/api/handles/{h}" for h in handles]

        async def call(i: int) -> Codes:
            async with session.get(urls[i]) as r:
                body = await r.read()
            try:
                return int(json.loads(body)["responseCode"])
            except (ValueError, KeyError, TypeError):
                return f"http:{r.status}"

    elif job.door in ("page", "redirect"):
        # An HTTP status is the answer: 200 the record page (or 302 the redirect) is a
        # resolution that succeeded, 404 a handle not found, as the REST GET counts them.
        record = job.door == "page"
        urls = [f"{base}/{h}" + ("?noredirect" if record else "") for h in handles]
        found = 200 if record else 302

        async def call(i: int) -> Codes:
            async with session.get(urls[i], allow_redirects=False) as r:
                await r.read()
            if r.status == found:
                return SUCCESS
            if r.status == 404:
                return int(ResponseCode.HANDLE_NOT_FOUND)
            return f"http:{r.status}"

    else:  # update: replace one value (index 2001) of a registered identifier
        auth = {"Authorization": f"Bearer {job.api_key}", "Content-Type": "application/json"}

        async def call(i: int) -> Codes:
            body = json.dumps(
                [
                    {
                        "index": 2001,
                        "type": "productName",
                        "data": {"format": "string", "value": f"更新 {i}"},
                    }
                ]
            )
            url = f"{base}/api/handles/{handles[i]}?index=2001"
            async with session.put(url, data=body, headers=auth) as r:
                reply = await r.read()
            try:
                return int(json.loads(reply)["responseCode"])
            except (ValueError, KeyError, TypeError):
                return f"http:{r.status}"

    return call, session.close


async def _grpc_calls(job: Job, handles: list[str]) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import grpc

    from idnode.resolver.grpc_protos import load

    pb2, pb2_grpc = load()
    channel = grpc.aio.insecure_channel(f"{job.host}:{job.port}")
    stub = pb2_grpc.ResolverStub(channel)
    reqs = [pb2.ResolveRequest(handle=h) for h in handles]

    def code_of(exc: grpc.aio.AioRpcError) -> int | str:
        for k, v in exc.trailing_metadata() or ():
            if k == "idnode-handle-code":
                return int(v)
        return f"grpc:{exc.code().name}"

    if job.door == "grpc":

        async def call(i: int) -> Codes:
            try:
                await stub.Resolve(reqs[i])
                return SUCCESS
            except grpc.aio.AioRpcError as exc:
                return code_of(exc)

    elif job.door == "grpc-batch":
        b = job.batch

        async def call(i: int) -> Codes:
            k = (i * b) % max(1, len(reqs) - b)
            out = await stub.BatchResolve(pb2.BatchResolveRequest(requests=reqs[k : k + b]))
            # proto3 leaves a zero code out: an answer without one is a success
            return [r.status.handle_code or SUCCESS for r in out.responses]

    else:  # grpc-stream: one bidirectional stream, answers in request order
        stream = stub.ResolveStream()
        waiting: deque[asyncio.Future[int | str]] = deque()
        writing = asyncio.Lock()  # grpc.aio allows one write in progress per stream

        async def reader() -> None:
            try:
                async for r in stream:
                    waiting.popleft().set_result(r.status.handle_code or SUCCESS)
            except Exception as exc:  # the stream broke: everyone waiting learns why
                while waiting:
                    waiting.popleft().set_exception(exc)

        read_task = asyncio.create_task(reader())

        async def call(i: int) -> Codes:
            fut: asyncio.Future[int | str] = asyncio.get_running_loop().create_future()
            async with writing:
                waiting.append(fut)
                try:
                    await stream.write(reqs[i])
                except BaseException:
                    waiting.remove(fut)
                    raise
            return await fut

        async def close() -> None:
            with contextlib.suppress(Exception):
                await stream.done_writing()
            read_task.cancel()
            await channel.close()

        return call, close

    return call, channel.close


async def _run_async(job: Job) -> dict[str, Any]:
    count = expected_draws(job)
    if job.door == "grpc-batch":
        count = max(count // max(1, job.batch), 1) * job.batch + job.batch
    handles = draw(job, count, job.seed)
    warm = draw(job, max(1000, count // 4), job.seed + WARM_SEED)
    opener = _grpc_calls if job.door.startswith("grpc") else _http_calls
    warm_call, warm_close = await opener(job, warm)
    call, close = await opener(job, handles)
    try:
        _out_of_the_collectors_way()
        job.extra["ready"]()
        if job.warmup > 0:
            await async_phase(warm_call, len(warm), job, job.warmup)
        job.extra["go"]()
        calls = len(handles) // job.batch if job.door == "grpc-batch" else len(handles)
        tally, wrapped = await async_phase(call, calls, job, job.seconds)
    finally:
        await warm_close()
        await close()
    return tally.result(job.seconds, wrapped)


def _out_of_the_collectors_way() -> None:
    """Freeze what preparing made (imports, drawn identifiers, frames): a full collection
    walking it stopped a generator for 15-40 ms, and in an open loop that stop shows as
    the server's latency (every request's time counts from when it was due)."""
    gc.collect()
    gc.freeze()


def run_job(job: Job) -> dict[str, Any]:
    if job.cpu is not None:
        os.sched_setaffinity(0, {job.cpu})
    if job.door in ("udp", "tcp"):
        return run_handle(job)
    import uvloop

    return uvloop.run(_run_async(job))


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several generators': counts add up, histograms merge."""
    hist = new_histogram()
    codes: dict[str, int] = {}
    out: dict[str, Any] = {"generators": len(results)}
    for r in results:
        hist.add(HdrHistogram.decode(r["histogram"].encode("ascii")))
        for k, v in r["codes"].items():
            codes[k] = codes.get(k, 0) + v
    seconds = max(r["seconds"] for r in results)
    for k in ("sent", "answered", "ops", "lost", "dropped"):
        out[k] = sum(r[k] for r in results)
    out["per_s"] = round(out["ops"] / seconds)
    out["calls_per_s"] = round(out["answered"] / seconds)
    out["codes"] = dict(sorted(codes.items(), key=lambda kv: -kv[1]))
    out["generator_behind_ms"] = max(r["generator_behind_ms"] for r in results)
    out["generator_cpu"] = round(sum(r["generator_cpu"] for r in results), 3)
    # a generator that used its whole core, or fell behind its schedule, measured itself:
    # the figure is a floor for what is behind it, not that thing's capacity
    out["generator_saturated"] = any(
        r["generator_cpu"] >= 0.9 or r["generator_behind_ms"] > 50 for r in results
    )
    out["key_sequence_wrapped"] = any(r["key_sequence_wrapped"] for r in results)
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        out[f"{name}_us"] = hist.get_value_at_percentile(q) if hist.get_total_count() else None
    out["max_us"] = hist.get_max_value() if hist.get_total_count() else None
    out["per_second"] = merge_series(results)
    return out


def merge_series(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The generators' per-second series as one, by wall-clock second from the earliest
    generator's start: answers and slow answers add up, the worst latency is the worst."""
    with_series = [r for r in results if "series" in r]
    if not with_series:
        return []
    t0 = min(r["start_unix"] for r in with_series)
    secs: dict[int, list[int]] = {}
    for r in with_series:
        shift = round(r["start_unix"] - t0)
        for k, (n, over1, over5, worst) in r["series"].items():
            acc = secs.setdefault(int(k) + shift, [0, 0, 0, 0])
            acc[0] += n
            acc[1] += over1
            acc[2] += over5
            acc[3] = max(acc[3], worst)
    return [
        {
            "second": k,
            "unix": round(t0 + k, 3),
            "answered": n,
            "over_1ms": over1,
            "over_5ms": over5,
            "max_ms": round(worst / 1000, 2),
        }
        for k, (n, over1, over5, worst) in sorted(secs.items())
    ]


def process_main(job: Job, barrier: Any, out: Any) -> None:
    """A generator process: prepare, wait for the others, warm up, wait again (the
    parent reads the node's metrics there), measure, report."""
    job.extra["ready"] = barrier.wait
    job.extra["go"] = barrier.wait
    try:
        out.put((job.seed, run_job(job)))
    except Exception as exc:
        barrier.abort()  # nobody waits for a generator that is gone
        out.put((job.seed, {"error": f"{type(exc).__name__}: {exc}"}))
