"""gRPC resolution throughput, beside a bare grpc.aio echo measured in the same run.

Server on ``--server-cpu``, load on ``--load-cpu``, everything on 127.0.0.1:

* ceiling: a bare grpc.aio unary echo (bytes in, the same bytes out);
* ``Resolve``: unary resolution of hot handles (L1), same concurrency as the ceiling;
* ``BatchResolve``: batches of ``--batch`` hot handles, in handles per second.

    python -m idnode.loadtest.grpc_bench
    python -m idnode.loadtest.grpc_bench --seconds 10 --json results/grpc.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from idnode.loadtest.report import emit
from idnode.registry.migrate import upgrade
from idnode.resolver.grpc_protos import load

from .processes import NodeProcess, free_port, pinned, stop, wait_port
from .udp_bench import hot_handles, populate, records

pb2, pb2_grpc = load()


def echo_server(port: int) -> None:
    async def main() -> None:
        async def echo(request: bytes, context: Any) -> bytes:
            return request

        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
                ),
            )
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


async def closed_loop(call: Any, make: Any, seconds: float, concurrency: int) -> dict[str, Any]:
    done = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal done
        i = k
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await call(make(i))
            latencies.append(time.perf_counter() - t)
            done += 1
            i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pick(q: float) -> int:
        return round(latencies[int(q * (len(latencies) - 1))] * 1e6) if latencies else 0

    return {
        "calls_per_s": round(done / elapsed),
        "calls": done,
        "p50_us": pick(0.5),
        "p99_us": pick(0.99),
    }


async def measure(
    args: argparse.Namespace, echo_port: int, node_port: int, handles: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as ch:
        echo = ch.unary_unary("/bench.Echo/Echo")
        payload = pb2.ResolveRequest(handle=handles[0]).SerializeToString()
        out["ceiling_grpc_aio_echo"] = await closed_loop(
            echo, lambda i: payload, args.seconds, args.concurrency
        )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node_port}") as ch:
        stub = pb2_grpc.ResolverStub(ch)  # generated: untyped
        reqs = [pb2.ResolveRequest(handle=h) for h in handles]
        await stub.BatchResolve(pb2.BatchResolveRequest(requests=reqs))  # warm L1
        r = await closed_loop(
            stub.Resolve, lambda i: reqs[i % len(reqs)], args.seconds, args.concurrency
        )
        r["ratio_to_ceiling"] = round(
            r["calls_per_s"] / out["ceiling_grpc_aio_echo"]["calls_per_s"], 3
        )
        out["resolve_unary"] = r
        batch = pb2.BatchResolveRequest(
            requests=(reqs * (args.batch // len(reqs) + 1))[: args.batch]
        )
        b = await closed_loop(stub.BatchResolve, lambda i: batch, args.seconds, 4)
        b["handles_per_s"] = b["calls_per_s"] * args.batch
        b["batch"] = args.batch
        out["batch_resolve"] = b
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--handles", type=int, default=1000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--echo", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.echo:
        echo_server(args.echo)
        return 0
    os.sched_setaffinity(0, {args.load_cpu})
    handles = hot_handles(args.handles)
    tmp = Path(tempfile.mkdtemp(prefix="idnode-grpc-bench-"))
    url = f"sqlite:///{tmp}/g.db"
    upgrade(url)
    asyncio.run(populate(url, records(handles)))
    echo_port = free_port()
    echo = subprocess.Popen(
        [sys.executable, "-m", "idnode.loadtest.grpc_bench", "--echo", str(echo_port)],
        preexec_fn=pinned([args.server_cpu]),
    )
    log = tmp / "node.log"
    node = NodeProcess(url, extra=("--log-level", "warning"), log=log, cpus=[args.server_cpu])
    try:
        wait_port(echo_port, proc=echo)
        node.wait_ready()  # the registry answers ...
        wait_port(node.grpc_port, proc=node.proc, log=log)  # ... and gRPC listens
        # the echo and the node share the server core: measure one while the other idles
        results = asyncio.run(measure(args, echo_port, node.grpc_port, handles))
    finally:
        stop(echo)
        node.stop()
    report = {
        "benchmark": "grpc",
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "server_cpu": args.server_cpu,
        "load_cpu": args.load_cpu,
        "results": results,
    }
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
