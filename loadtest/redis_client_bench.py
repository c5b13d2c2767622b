"""CPU per command of the L2 tier's two Redis clients, on one Redis, in one run.

    python -m idnode.loadtest.redis_client_bench --redis-url redis://127.0.0.1:6379/0

The node reads and fills Redis on the miss path through ``LeanRedis``
(resolver/lean_redis.py) and does everything else through redis-py's asyncio client.
This measures what a command costs the client process (user and system CPU, from
``getrusage``) through each, one command at a time as a lightly loaded node sends
them: an MGET of ``--keys`` keys and the fill script (``FILL_UNLESS_TOMBSTONED``) over
as many entries of ~300 bytes, ``--commands`` of each, the two clients alternating
``--rounds`` times. The report (JSON on stdout) gives microseconds per command for
each client and the lean client's share of redis-py's (the ratio). Pin it to a core
away from Redis (``--cpu``) so that Redis's own work is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from idnode.resolver.l2 import FILL_SHA, FILL_UNLESS_TOMBSTONED
from idnode.resolver.lean_redis import LeanRedis


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _per_command(send: Callable[[], Awaitable[Any]], n: int) -> float:
    """Microseconds of this process's CPU per command, sent one at a time."""
    await send()  # connected, script cached
    t0 = _cpu()
    for _ in range(n):
        await send()
    return 1e6 * (_cpu() - t0) / n


async def run(url: str, keys: int, commands: int, rounds: int) -> dict[str, Any]:
    lean = LeanRedis.from_url(url)
    if lean is None:
        raise SystemExit(f"the lean client does not speak {url!r} (TLS, socket or options)")
    client: aioredis.Redis = aioredis.from_url(url)  # type: ignore[no-untyped-call]
    ns = f"idnode-bench-{secrets.token_hex(4)}"
    names = [f"{ns}:h:{{{i}}}" for i in range(keys)]
    pairs: list[str] = []
    args: list[bytes | int] = []
    for i in range(keys):
        pairs += (f"{ns}:h:{{{i}}}", f"{ns}:t:{{{i}}}")
        args += (b"\x01" + os.urandom(300), 60)
    fill = client.register_script(FILL_UNLESS_TOMBSTONED)
    sides: dict[str, dict[str, Callable[[], Awaitable[Any]]]] = {
        "redis_py": {
            "mget": lambda: client.mget(names),
            "fill": lambda: fill(keys=pairs, args=args),
        },
        "lean": {
            "mget": lambda: lean.call(b"MGET", *names),
            "fill": lambda: lean.evalsha(FILL_SHA, FILL_UNLESS_TOMBSTONED, pairs, args),
        },
    }
    us: dict[str, dict[str, list[float]]] = {s: {"mget": [], "fill": []} for s in sides}
    try:
        for _ in range(rounds):
            for side, calls in sides.items():
                for command, send in calls.items():
                    us[side][command].append(await _per_command(send, commands))
    finally:
        await client.delete(*names, *(p for p in pairs if ":t:" in p))
        await lean.close()
        await client.aclose()
    report: dict[str, Any] = {"keys": keys, "commands": commands, "rounds": rounds}
    for command in ("mget", "fill"):
        py, ln = min(us["redis_py"][command]), min(us["lean"][command])
        report[command] = {
            "redis_py_us": round(py, 1),
            "lean_us": round(ln, 1),
            "lean_to_redis_py": round(ln / py, 3),
            "rounds_us": {s: [round(x, 1) for x in us[s][command]] for s in us},
        }
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--keys", type=int, default=1, help="keys per MGET and entries per fill")
    p.add_argument("--commands", type=int, default=3000, help="commands per measurement")
    p.add_argument("--rounds", type=int, default=3, help="times each client is measured")
    p.add_argument("--cpu", type=int, default=None, help="pin this process to that core")
    a = p.parse_args(argv)
    if a.keys < 1 or a.commands < 1 or a.rounds < 1:
        p.error("--keys, --commands and --rounds must be at least 1")
    if a.cpu is not None:
        os.sched_setaffinity(0, {a.cpu})
    json.dump(asyncio.run(run(a.redis_url, a.keys, a.commands, a.rounds)), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
