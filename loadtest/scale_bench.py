"""Resolution against a large populated registry: the cost as the registry grows.

Serves ``--database-url`` (filled by ``idnode loadtest populate --count N``) with L1 and
Redis off, so every lookup reaches SQL, and sends uniformly random lookups over the
whole key space [0, N) over UDP from another core. Run it at several N for the scale
curve; each run also measures the asyncpg ``ANY`` ceiling on the same database.

    idnode loadtest populate --count 10000000 --database-url $URL
    python -m loadtest.scale_bench --database-url $URL --count 10000000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys

from .keyspace import handle
from .udp_bench import any_ceiling, packets, start_node, stop, udp_load, wait_udp


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--database-url", required=True)
    p.add_argument("--count", type=int, required=True, help="identifiers in the registry")
    p.add_argument("--keys", type=int, default=50_000, help="distinct random keys to send")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {args.load_cpu})
    rng = random.Random(7)
    handles = [handle(rng.randrange(args.count)) for _ in range(args.keys)]
    pkts = packets(handles)
    proc, port = start_node(args.database_url, args.server_cpu, ["--l1-max-mb", "0"])
    try:
        wait_udp(port, pkts[0])
        result = udp_load(port, pkts, args.seconds, args.window)
    finally:
        stop(proc)
    ceiling = asyncio.run(
        any_ceiling(args.database_url, [h.upper() for h in handles], args.seconds)
    )
    result["registry_size"] = args.count
    result["ceiling_any_keys_per_s"] = round(ceiling)
    result["ratio_to_ceiling"] = round(result["answers_per_s"] / ceiling, 3)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
