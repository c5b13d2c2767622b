"""Both reference clients still resolve a large handle from idnode now that one UDP
answer is capped (issue 12: an unverified UDP source gets no more than 16 datagrams).

One namespace run: idnode (two workers, default settings) serving 88.166/big60, a handle
of 60 values (about 64 KB, 127 datagrams uncapped), then

- the HANDLE.NET 7.3.1 library's HDLTrace tool, whose resolver asks over UDP first, as
  the library does by default: the capped answer is an RC 2, which the library takes as
  a failed transport and asks again over TCP (HandleResolver.sendRequestToSite tries
  the next protocol), so the tool prints all 60 values;
- the IDIS ID-SDK 2.0.3 (tests/interop/java/SdkLargeHandle.java), whose channels keep to
  the transport they were made with: its TCP channel resolves the handle whole, and its
  UDP channel gets the node's "ask over TCP" at once instead of 64 KB.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from idnode.loadtest.processes import IDNODE
from tests.interop import harness as h

pytestmark = pytest.mark.e2e

PREFIX = "88.166"
BIG = f"{PREFIX}/big60"


def compile_sdk_driver(build: Path) -> None:
    build.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [
            "javac",
            "-nowarn",
            "-encoding",
            "UTF-8",
            "-d",
            str(build),
            "-cp",
            h.sdk_classpath(build),
            str(h.JAVA_SRC / "SdkLargeHandle.java"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, f"javac SdkLargeHandle.java: {p.stderr}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    h.skip_unless_ready()
    why = h.need_nft()
    if why:
        pytest.skip(f"the ID-SDK's UDP channel needs nftables in the namespace: {why}")
    work = tmp_path_factory.mktemp("udplarge")
    build, home = work / "build", work / "home"
    h.compile_drivers(build)  # HdlInterop writes the library's site-info file
    compile_sdk_driver(build)
    h.local_home(home)
    values = [{"index": i + 1, "type": "DESC", "data": f"{i:04d}" + "v" * 1020} for i in range(60)]
    (work / "big.jsonl").write_text(json.dumps({"handle": BIG, "values": values}) + "\n")
    db, key = f"sqlite:///{work}/registry.db", str(work / "node.key")
    node = h.Server(
        "idnode",
        h.idnode_serve(db, key, handle=2641, http=8000, grpc=50051),
        port=8000,
        before=[
            h.idnode_init(db, key, PREFIX),
            [IDNODE, "import", str(work / "big.jsonl"), "--database-url", db],
        ],
        after=[
            h.hdl_interop(
                build, home, "siteinfo-file", 2641, 8000, f"out={home}/.handle/resolver_site"
            )
        ],
        settle=1.0,
    )
    steps = [
        h.Step(
            "HDLTrace",
            [  # its trace (stderr) in a file: the 64 KB answer would push the start out
                "sh",
                "-c",
                shlex.join(h.cnri_java(build, home, "net.handle.apps.simple.HDLTrace", BIG))
                + f" 2>{work / 'trace.txt'}",
            ],
        ),
        h.Step(
            "sdk",
            [
                "java",
                "-Dlog4j.configuration=file:/dev/null",
                "-cp",
                h.sdk_classpath(build),
                "SdkLargeHandle",
                "host=127.0.0.1",
                "port=2641",
                "udpport=2642",
                f"handle={BIG}",
            ],
        ),
    ]
    out = h.in_namespace(work, [node], steps, nat=[(2642, 2641)])
    out["trace"] = (work / "trace.txt").read_text(errors="replace")
    return out


def test_the_java_library_falls_back_to_tcp_and_gets_every_value(run: dict[str, Any]) -> None:
    step = run["steps"]["HDLTrace"]
    trace = run["trace"]
    assert step["rc"] == 0, trace[-3000:]
    out = step["stdout"]
    assert "Got Response" in out and "rc=1" in out, out[-3000:] + trace[-3000:]
    for i in range(60):  # every value arrived
        assert f'index={i + 1} type=DESC rwr- "{i:04d}vvvv' in out, i
    # its trace: asked over UDP first, answered with the node's refusal, then over TCP
    udp, tcp = trace.find("sending HDL-UDP request"), trace.find("sending HDL-TCP request")
    assert 0 <= udp < tcp, trace[:3000]
    assert "too large for UDP here: ask over TCP" in trace[udp:tcp], trace[udp:tcp][:3000]


def test_the_id_sdk_resolves_over_tcp_and_hears_ask_over_tcp_on_udp(
    run: dict[str, Any],
) -> None:
    step = run["steps"]["sdk"]
    got = h.checks(step["stdout"])
    assert got, f"the SDK driver printed no checks: {step['stderr'][-3000:]}"
    ok, detail = got["tcp.large"]
    assert ok and detail == "rc 1 60 values", detail
    _ok, detail = got["udp.large"]
    assert "TCP" in detail, detail
