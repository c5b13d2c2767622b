"""Micro-benchmark of the codec's hot path.

Decoding a RESOLUTION request and encoding an answer from cached value bytes sit
on every lookup. Each figure is reported as operations per second and as a ratio
to a ceiling measured in the same run: a bare ``struct.unpack_from`` of the 44
fixed bytes (envelope + header), the least any decoder must do. Absolute numbers
drift on shared machines; the ratios are what to compare between runs.

    python -m idnode.loadtest.codec_bench                 # ~1 s per case, 5 rounds, pinned to CPU 1
    python -m idnode.loadtest.codec_bench --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from idnode.resolver.codec import (
    HandleValue,
    Message,
    OpCode,
    OpFlag,
    ResolutionRequest,
    ResolutionResponse,
    decode,
    decode_resolution,
    encode,
    encode_resolution_answer,
    encode_values,
    put_text,
)
from idnode.resolver.codec.codes import ResponseCode
from idnode.resolver.codec.message import PREAMBLE

HANDLE = "88.166.1001/ABC-123456"
VALUES = (
    HandleValue(1, "URL", b"https://pim.example.cn/p/ABC-123456", timestamp=1700000000),
    HandleValue(1001, "TEMPLATE", b"88.166.1001/tpl-v3", timestamp=1700000000),
    HandleValue(2001, "productName", "液压阀 HV-200".encode(), timestamp=1700000000),
)
REQUEST = encode(
    Message(
        op_code=OpCode.RESOLUTION,
        body=ResolutionRequest(HANDLE),
        op_flags=OpFlag.REC | OpFlag.CA | OpFlag.PO,
        request_id=0x01020304,
    )
)


def _cases() -> dict[str, Callable[[], object]]:
    packet = REQUEST
    query = decode_resolution(packet)
    if query is None:
        raise ValueError("the benchmark's request is not a plain resolution")
    handle_wire = put_text(HANDLE)
    values_wire = encode_values(VALUES)
    response = Message(
        op_code=OpCode.RESOLUTION,
        body=ResolutionResponse(HANDLE, VALUES),
        response_code=ResponseCode.SUCCESS,
        op_flags=0x99000000,
        request_id=0x01020304,
    )
    unpack = PREAMBLE.unpack_from

    def hot_path() -> object:
        q = decode_resolution(packet)
        if q is None:  # a node checks this on every request, so the timed path does too
            raise ValueError("not a plain resolution")
        return encode_resolution_answer(q, handle_wire, values_wire)

    return {
        "ceiling: struct.unpack_from of 44 bytes": lambda: unpack(packet),
        "decode_resolution (hot-path request decode)": lambda: decode_resolution(packet),
        "decode (generic Message)": lambda: decode(packet),
        "encode_resolution_answer (from cached bytes)": lambda: encode_resolution_answer(
            query, handle_wire, values_wire
        ),
        "encode (generic Message, 3 values)": lambda: encode(response),
        "request decode + answer encode": hot_path,
    }


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second, timed over batches so the clock is not read per call."""
    batch = 1000
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        calls += batch
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def run(seconds: float, rounds: int) -> dict[str, Any]:
    cases = _cases()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    # Interleave rounds so drift on a shared machine hits every case alike.
    for _ in range(rounds):
        for name, fn in cases.items():
            samples[name].append(_rate(fn, seconds))
    ceiling_name = next(iter(cases))
    ceiling = statistics.median(samples[ceiling_name])
    results = []
    for name, rates in samples.items():
        med = statistics.median(rates)
        results.append(
            {
                "case": name,
                "ops_per_s": round(med),
                "min": round(min(rates)),
                "max": round(max(rates)),
                "ratio_to_ceiling": round(med / ceiling, 3),
            }
        )
    return {
        "benchmark": "codec",
        "python": platform.python_version(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "seconds_per_sample": seconds,
        "rounds": rounds,
        "request_bytes": len(REQUEST),
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=1.0, help="time per sample (default 1)")
    p.add_argument("--rounds", type=int, default=5, help="samples per case; the median is kept")
    p.add_argument(
        "--cpu", type=int, default=1, help="pin to this CPU (default 1; -1 leaves it unpinned)"
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.cpu >= 0 and args.cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.cpu})
    report = run(args.seconds, args.rounds)
    width = max(len(r["case"]) for r in report["results"])
    print(
        f"codec micro-benchmark, Python {report['python']}, CPU {report['cpu_affinity']}, "
        f"median of {args.rounds} x {args.seconds}s"
    )
    print(f"{'case':<{width}}  {'ops/s':>12}  {'ratio':>6}")
    for r in report["results"]:
        print(f"{r['case']:<{width}}  {r['ops_per_s']:>12,}  {r['ratio_to_ceiling']:>6.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
