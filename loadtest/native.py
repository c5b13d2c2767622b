"""`idnode loadtest native`: the HTTP doors and gRPC driven by native load generators.

The Python generators (loadtest/generators.py) saturate at 5–14k requests/s on these
doors, below what a node answers, so their figures are the generator's. Here:

* ``wrk`` with a Lua script drives the REST GET (``rest``: /api/handles/{h}), the
  resolution page (``page``: /{h}?noredirect) and the Handle-over-HTTP tunnel
  (``tunnel``: POST / of a resolution request), drawing each request's identifier
  uniformly from the registry's (a file of paths or request bodies read at start);
* ``h2load`` (nghttp2) drives gRPC unary Resolve: a POST to /idnode.v1.Resolver/Resolve
  with a length-prefixed protobuf body and the gRPC headers. h2load sends one body, so
  every call asks for the same identifier (an L1 hit either way: L1 holds them all).

Each door is measured against its ceiling first (loadtest/ceilings.py: a bare aiohttp
app or grpc.aio server with a fixed answer), with the same tool and flags, then against
idnode serve (one worker, a throwaway SQLite registry, L1 warmed); one server at a time,
pinned to the server core, the tool on the load core. Counts come from the tools (wrk:
non-2xx/3xx as errors; h2load: status codes). A gRPC error is an HTTP 200 with a
grpc-status trailer h2load does not read, and wrk does not read bodies: so a sample of
identifiers is asked of the node with real clients (urllib, grpc) and checked against
the registry's values, and the exact gRPC body h2load sends is sent once with grpc.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .ceilings import DESCRIPTIONS
from .generators import handle_frames
from .keyspace import handle, values
from .processes import NodeProcess, pinned, stop

Progress = Callable[[str], None]
DOORS = ("rest", "page", "tunnel", "grpc")
CEILING_DOOR = {"rest": "rest", "page": "page", "tunnel": "http", "grpc": "grpc"}
GRPC_PATH = "/idnode.v1.Resolver/Resolve"
INSTALL = "apt-get install wrk nghttp2-client"

WRK_SCRIPT = r"""
-- one request per call, its target drawn uniformly from the lines of args[1]:
-- paths (GET), or hex-encoded Handle request bodies (POST / to the tunnel)
local items = {}
local post = false
init = function(args)
  post = args[2] == "post"
  for line in io.lines(args[1]) do
    if post then
      items[#items + 1] = line:gsub("..", function(h) return string.char(tonumber(h, 16)) end)
    else
      items[#items + 1] = line
    end
  end
  math.randomseed(tonumber(args[3]))
end
request = function()
  local item = items[math.random(#items)]
  if post then
    return wrk.format("POST", "/", {["Content-Type"] = "application/x-hdl-message"}, item)
  end
  return wrk.format("GET", item)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"non_2xx_3xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class NativeConfig:
    doors: list[str] = field(default_factory=lambda: list(DOORS))
    handles: int = 100_000
    seconds: float = 10.0
    warmup: float = 2.0
    connections: int = 64
    grpc_connections: int = 4  # h2load: HTTP/2 connections (gRPC clients multiplex)
    streams: int = 32  # h2load: concurrent streams per connection
    server_cpu: int = 0
    load_cpu: int = 1
    sample: int = 50
    l1_mb: int = 256

    def check(self) -> None:
        for d in self.doors:
            if d not in DOORS:
                raise ValueError(f"unknown door {d!r}; choose from {', '.join(DOORS)}")
        if not self.doors:
            raise ValueError("--doors names no door")
        if self.handles < 1 or self.seconds < 1 or self.connections < 1 or self.streams < 1:
            raise ValueError("--handles, --connections, --streams and --seconds (>= 1) are needed")
        if self.seconds > 120 or self.handles > 2_000_000:
            raise ValueError("--seconds is at most 120 and --handles at most 2,000,000")


def missing(doors: list[str]) -> str | None:
    """Why these doors cannot be driven here, or None."""
    need = {"wrk"} if set(doors) & {"rest", "page", "tunnel"} else set()
    if "grpc" in doors:
        need.add("h2load")
    absent = sorted(t for t in need if shutil.which(t) is None)
    if absent:
        return f"{' and '.join(absent)} not installed: {INSTALL}"
    if len(os.sched_getaffinity(0)) < 2:
        return "server and load need a core each: this process may use only one CPU"
    return None


# --- the tools ---------------------------------------------------------------------------


def _whole_seconds(x: float) -> str:
    return f"{max(1, round(x))}s"


def prepare_inputs(tmp: Path, size: int) -> dict[str, Path]:
    """The files the tools read: paths for rest and page, hex bodies for the tunnel, the
    length-prefixed gRPC body."""
    from idnode.resolver.grpc_protos import load

    hs = [handle(i) for i in range(size)]
    files = {
        "script": tmp / "draw.lua",
        "rest": tmp / "rest.txt",
        "page": tmp / "page.txt",
        "tunnel": tmp / "tunnel.txt",
        "grpc": tmp / "grpc.bin",
    }
    files["script"].write_text(WRK_SCRIPT)
    files["rest"].write_text("".join(f"/api/handles/{h}\n" for h in hs))
    files["page"].write_text("".join(f"/{h}?noredirect\n" for h in hs))
    files["tunnel"].write_text("".join(bytes(f).hex() + "\n" for f in handle_frames(hs)))
    pb2, _ = load()
    files["grpc"].write_bytes(grpc_body(pb2.ResolveRequest(handle=hs[0]).SerializeToString()))
    return files


def grpc_body(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def wrk(
    files: dict[str, Path], door: str, port: int, cfg: NativeConfig, seconds: float
) -> dict[str, Any]:
    kind = "post" if door == "tunnel" else "get"
    cmd = [
        "wrk",
        "-t1",
        f"-c{cfg.connections}",
        f"-d{_whole_seconds(seconds)}",
        "--timeout",
        "10s",
        "-s",
        str(files["script"]),
        f"http://127.0.0.1:{port}",
        "--",
        str(files[door]),
        kind,
        "7",
    ]
    p = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        preexec_fn=pinned([cfg.load_cpu]),
        check=False,
    )
    m = re.search(r"^WRK_RESULT (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or m is None:
        raise RuntimeError(
            f"wrk failed (exit {p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]}"
        )
    raw = json.loads(m.group(1))
    secs = raw["duration_us"] / 1e6
    errors = sum(
        raw[k] for k in ("non_2xx_3xx", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return {
        "tool": "wrk",
        "requests": raw["requests"],
        "seconds": round(secs, 2),
        "per_s": round(raw["requests"] / secs) if secs else 0,
        "p50_us": raw["p50_us"],
        "p90_us": raw["p90_us"],
        "p99_us": raw["p99_us"],
        "max_us": raw["max_us"],
        "errors": {k: raw[k] for k in raw if k.endswith(("errors", "3xx", "timeouts"))},
        "all_ok": raw["requests"] > 0 and errors == 0,
    }


def h2load(
    files: dict[str, Path], port: int, cfg: NativeConfig, seconds: float, warmup: float, tmp: Path
) -> dict[str, Any]:
    log = tmp / "h2load.log"
    log.unlink(missing_ok=True)
    cmd = [
        "h2load",
        "-t1",
        f"-c{cfg.grpc_connections}",
        f"-m{cfg.streams}",
        "-D",
        str(max(1, round(seconds))),
        "--warm-up-time",
        str(max(1, round(warmup))),
        "-d",
        str(files["grpc"]),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--log-file",
        str(log),
        f"http://127.0.0.1:{port}{GRPC_PATH}",
    ]
    p = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + warmup + 120,
        preexec_fn=pinned([cfg.load_cpu]),
        check=False,
    )
    out = p.stdout
    done = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        out,
    )
    rate = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if p.returncode != 0 or not (done and rate and codes):
        raise RuntimeError(f"h2load failed (exit {p.returncode}): {out[-1500:]} {p.stderr[-1500:]}")
    lat = sorted(
        int(cols[2])
        for cols in (line.split("\t") for line in log.read_text().splitlines())
        if len(cols) >= 3 and cols[1] == "200"
    )
    _, _, done_n, ok, failed, errored, timeouts = (int(x) for x in done.groups())
    per_s = float(rate.group(3))  # over the measured phase (the elapsed time includes warm-up)
    return {
        "tool": "h2load",
        "requests": done_n,
        "seconds": round(done_n / per_s, 2) if per_s else 0.0,
        "per_s": round(per_s),
        "p50_us": _pct(lat, 50),
        "p90_us": _pct(lat, 90),
        "p99_us": _pct(lat, 99),
        "max_us": lat[-1] if lat else None,
        "status": {f"{k}xx": int(v) for k, v in zip((2, 3, 4, 5), codes.groups(), strict=True)},
        "errors": {"failed": failed, "errored": errored, "timeout": timeouts},
        "all_ok": ok > 0 and failed == errored == timeouts == 0 and int(codes.group(1)) == ok,
    }


def _pct(sorted_values: list[int], q: float) -> int | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q / 100))]


def drive(
    door: str, port: int, files: dict[str, Path], cfg: NativeConfig, tmp: Path
) -> dict[str, Any]:
    """Warm up (unreported), then measure one door at ``port``."""
    if door == "grpc":
        return h2load(files, port, cfg, cfg.seconds, cfg.warmup, tmp)
    if cfg.warmup > 0:
        wrk(files, door, port, cfg, cfg.warmup)
    return wrk(files, door, port, cfg, cfg.seconds)


# --- answers checked with real clients ----------------------------------------------------


def check_answers(door: str, node: NodeProcess, indices: list[int], grpc_file: Path) -> list[str]:
    """Ask each sampled identifier through ``door`` with a real client; what is wrong."""
    wrong: list[str] = []
    base = node.http
    if door == "grpc":
        return _check_grpc(node.grpc_port, indices, grpc_file)
    frames = handle_frames([handle(i) for i in indices])
    for i, frame in zip(indices, frames, strict=True):
        h, want = handle(i), values(i)
        url_value = want[0].data.decode()
        try:
            if door == "rest":
                with urllib.request.urlopen(f"{base}/api/handles/{h}", timeout=10) as r:
                    doc = json.loads(r.read())
                got = {v["index"]: v["data"]["value"] for v in doc["values"]}
                if doc["responseCode"] != 1 or got.get(1) != url_value:
                    wrong.append(f"{h}: {doc}")
            elif door == "page":
                with urllib.request.urlopen(f"{base}/{h}?noredirect", timeout=10) as r:
                    page = r.read().decode()
                if r.status != 200 or url_value not in page:
                    wrong.append(f"{h}: HTTP {r.status}, the URL value not on the page")
            else:
                from idnode.resolver.codec import ResolutionResponse, ResponseCode, decode

                req = urllib.request.Request(
                    base + "/",
                    data=bytes(frame),
                    headers={"Content-Type": "application/x-hdl-message"},
                )
                with urllib.request.urlopen(req, timeout=10) as r:
                    m = decode(r.read())
                if m.response_code != ResponseCode.SUCCESS or not isinstance(
                    m.body, ResolutionResponse
                ):
                    wrong.append(f"{h}: response code {m.response_code}")
                elif sorted((v.index, v.type, v.data) for v in m.body.values) != sorted(
                    (v.index, v.type, v.data) for v in want
                ):
                    wrong.append(f"{h}: values {m.body.values}")
        except (OSError, ValueError, KeyError) as exc:
            wrong.append(f"{h}: {type(exc).__name__}: {exc}")
    return wrong


def _check_grpc(port: int, indices: list[int], grpc_file: Path) -> list[str]:
    import grpc

    from idnode.resolver.grpc_protos import load

    pb2, pb2_grpc = load()
    wrong: list[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb2_grpc.ResolverStub(channel)
        for i in indices:
            try:
                r = stub.Resolve(pb2.ResolveRequest(handle=handle(i)), timeout=10)
            except grpc.RpcError as exc:
                wrong.append(f"{handle(i)}: {exc.code()} {exc.details()}")
                continue
            got = sorted((v.index, v.type, v.data) for v in r.values)
            if got != sorted((v.index, v.type, v.data) for v in values(i)):
                wrong.append(f"{handle(i)}: values {got}")
        # the very bytes h2load sends (its prefix off): a grpc-status other than OK
        # would be invisible to h2load, which counts HTTP statuses
        raw = channel.unary_unary(GRPC_PATH, response_deserializer=pb2.ResolveResponse.FromString)
        try:
            r = raw(grpc_file.read_bytes()[5:], timeout=10)
            if not r.values:
                wrong.append("h2load's body: an answer without values")
        except grpc.RpcError as exc:
            wrong.append(f"h2load's body: {exc.code()} {exc.details()}")
    return wrong


# --- the run ---------------------------------------------------------------------------


def run(cfg: NativeConfig, say: Progress = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    from idnode.registry.migrate import upgrade

    from .populate import populate_sqlite
    from .run import (
        METRICS_FLUSH_SECONDS,
        Target,
        prefill,
        scrape,
        start_ceiling,
        tier_report,
    )

    cfg.check()
    why = missing(cfg.doors)
    if why:
        raise ValueError(why)
    tmp = Path(tempfile.mkdtemp(prefix="idnode-native-"))
    core = [cfg.server_cpu]
    report: dict[str, Any] = {
        "harness": "idnode loadtest native",
        "config": asdict(cfg),
        "machine": {"cpus": os.cpu_count()},
        "doors": {d: {"ceiling_server": DESCRIPTIONS[CEILING_DOOR[d]]} for d in cfg.doors},
    }
    try:
        files = prepare_inputs(tmp, cfg.handles)
        for door in cfg.doors:
            say(f"{door}: ceiling ({DESCRIPTIONS[CEILING_DOOR[door]]}) on CPU {cfg.server_cpu}")
            proc, port = start_ceiling(CEILING_DOOR[door], core)
            try:
                r = drive(door, port, files, cfg, tmp)
            finally:
                stop(proc)
            report["doors"][door]["ceiling"] = r
            say(_line("ceiling", door, r))
        url = f"sqlite:///{tmp}/registry.db"
        upgrade(url)
        populate_sqlite(str(tmp / "registry.db"), 0, cfg.handles)
        say(f"idnode serve: 1 worker on CPU {cfg.server_cpu}, SQLite, {cfg.handles:,} identifiers")
        node = NodeProcess(
            url,
            workers=1,
            extra=("--l1-max-mb", str(cfg.l1_mb), "--log-level", "warning"),
            log=tmp / "node.log",
            cpus=core,
        )
        try:
            node.wait_ready(timeout=60)
            import asyncio

            t0 = time.perf_counter()
            target = Target("127.0.0.1", node.handle_port, node.http_port, node.grpc_port)
            asyncio.run(prefill(target, cfg.handles))
            say(f"idnode: L1 warmed in {time.perf_counter() - t0:.1f} s")
            sample = random.Random(11).sample(range(cfg.handles), min(cfg.sample, cfg.handles))
            for door in cfg.doors:
                port = node.grpc_port if door == "grpc" else node.http_port
                before = scrape(node.http_port)
                r = drive(door, port, files, cfg, tmp)
                # which cache tier answered (the node's /metrics; a worker flushes its
                # counts once a second): an L1 that missed would explain a slow door
                time.sleep(METRICS_FLUSH_SECONDS + 0.25)
                r["tiers"] = tier_report(before, scrape(node.http_port))
                r["ratio_to_ceiling"] = _ratio(
                    r["per_s"], report["doors"][door]["ceiling"]["per_s"]
                )
                report["doors"][door]["idnode"] = r
                wrong = check_answers(door, node, sample, files["grpc"])
                report["doors"][door]["sample"] = {"asked": len(sample), "wrong": wrong[:10]}
                say(_line("idnode", door, r) + f"; sample of {len(sample)}: {len(wrong)} wrong")
        finally:
            node.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _line(who: str, door: str, r: dict[str, Any]) -> str:
    return (
        f"  {door} {who}: {r['per_s']:,}/s p50 {r['p50_us']} us p99 {r['p99_us']} us"
        + (f" = {r['ratio_to_ceiling']} of the ceiling" if r.get("ratio_to_ceiling") else "")
        + (f"; L1 hit {r['tiers']['l1_hit_ratio']}" if r.get("tiers") else "")
        + ("" if r["all_ok"] else f"; errors {r['errors']}")
    )


def summary(report: dict[str, Any]) -> str:
    lines = []
    for door, d in report["doors"].items():
        n, c = d["idnode"], d["ceiling"]
        lines.append(
            f"{door} ({n['tool']}): idnode {n['per_s']:,}/s p50 {n['p50_us']} us p99 "
            f"{n['p99_us']} us; ceiling {c['per_s']:,}/s ({d['ceiling_server']}); ratio "
            f"{n['ratio_to_ceiling']}; "
            + ("all answers OK" if n["all_ok"] and not d["sample"]["wrong"] else "ERRORS")
        )
    return "\n".join(lines)
