"""Runs one interop scenario inside a loopback-only network namespace.

The reference software in ../shared/clients reaches for the global Handle root on some
paths, so it runs only inside ``../shared/clients/in-netns``; the servers it talks to
start inside the same namespace. This script is what runs there:

    in-netns python -m tests.interop.inside SCENARIO.json RESULT.json

It starts the servers the scenario names (idnode processes, optionally the reference
server), redirects UDP ports with nftables where asked, runs each step (a command),
stops the servers and writes every step's exit code and output to RESULT.json. It
asserts nothing: the tests read the result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from idnode.loadtest.processes import stop, wait_port


def run(
    cmd: list[str], cwd: str, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        p = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = -9, exc.stdout or b"", (exc.stderr or b"") + b"\n[timed out]"
    return {
        "rc": rc,
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace")[-20000:],
        "seconds": round(time.monotonic() - t0, 2),
    }


def nat(redirects: list[list[int]]) -> None:
    """UDP to 127.0.0.1:FROM goes to port TO (the ID-SDK binds its own socket to the
    port it sends to, so it cannot share the server's port on one host)."""
    if not redirects:
        return
    subprocess.run(["nft", "add", "table", "ip", "nat"], check=True)
    subprocess.run(
        ["nft", "add", "chain", "ip", "nat", "output", "{ type nat hook output priority -100; }"],
        check=True,
    )
    for src, dst in redirects:
        rule = f"ip daddr 127.0.0.1 udp dport {src} redirect to :{dst}"
        subprocess.run(["nft", "add", "rule", "ip", "nat", "output", *rule.split()], check=True)


def main(scenario_path: str, result_path: str) -> int:
    sc = json.loads(Path(scenario_path).read_text())
    work = sc["workdir"]
    result: dict[str, Any] = {"setup": {}, "steps": {}, "logs": {}}
    servers: list[tuple[str, subprocess.Popen[bytes], Any]] = []
    try:
        nat(sc.get("nat", []))
        for server in sc.get("servers", []):
            for i, cmd in enumerate(server.get("before", [])):
                r = run(cmd, work, 300)
                result["setup"][f"{server['name']}.before.{i}"] = r
                if r["rc"] != 0:
                    raise RuntimeError(f"{server['name']}: {cmd[:3]} failed: {r['stderr'][-2000:]}")
            log = open(Path(work) / f"{server['name']}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                server["cmd"],
                cwd=work,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **server.get("env", {})},
            )
            servers.append((server["name"], proc, log))
            wait_port(server["port"], proc=proc, timeout=60.0)
            time.sleep(server.get("settle", 0.5))
            for i, cmd in enumerate(server.get("after", [])):
                result["setup"][f"{server['name']}.after.{i}"] = run(cmd, work, 300)
            if server.get("stop_after_setup"):
                # a bootstrap run (the reference server wide open): stop it before the next
                stop(proc, 30)
        for step in sc["steps"]:
            result["steps"][step["name"]] = run(
                step["cmd"], step.get("cwd", work), step.get("timeout", 300), step.get("env")
            )
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for name, proc, log in servers:
            stop(proc, 30)
            log.close()
            text = (Path(work) / f"{name}.log").read_text(errors="replace")
            result["logs"][name] = {"rc": proc.returncode, "tail": text[-20000:]}
        Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
