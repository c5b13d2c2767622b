"""The upstream walker through real `idnode serve` processes (issue 13, client side).

Three nodes, each with its own embedded registry:

- T, the top: homes ``88`` and holds the prefix records ``0.NA/88.x`` (a node stores any
  values, HS_SITE and HS_SERV included, for handles of prefixes it homes);
- S, a secondary: homes 88.166, 88.200, 88.201, 88.203 and holds their handles;
- U: homes 88.200 with no handles (the first server of a two-server site).

A root-info file names T. Outcomes are asserted, never durations.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idnode.loadtest.processes import free_port
from idnode.resolver.client import exchange
from idnode.resolver.codec import (
    Interface,
    Message,
    OpCode,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    encode_site,
    server_index,
)
from idnode.resolver.codec.bodies import GetSiteInfoRequest, SiteInfoResponse
from idnode.resolver.codec.codes import HashOption
from idnode.resolver.upstream.root_info import write_root_info
from idnode.resolver.upstream.walker import Hop, Walker, WalkError
from tests.e2e.node_process import IDNODE, NodeProcess

URL = "https://example.com/"


def idnode(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IDNODE, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


@dataclass
class Registry:
    url: str
    key: str


def make_registry(tmp: Path, name: str, prefixes: list[str], records: list[Any]) -> Registry:
    reg = Registry(f"sqlite:///{tmp}/{name}.db", str(tmp / f"{name}.key"))
    flags = ["--database-url", reg.url, "--secret-key-file", reg.key]
    p = idnode("init", *[a for x in prefixes for a in ("--prefix", x)], *flags, cwd=tmp)
    assert p.returncode == 0, p.stderr
    if records:
        lines = tmp / f"{name}.jsonl"
        lines.write_text("".join(json.dumps(r) + "\n" for r in records))
        p = idnode("import", str(lines), *flags, cwd=tmp)
        assert p.returncode == 0 and "rejected" not in p.stderr, p.stdout + p.stderr
    return reg


def site_at(port: int, *more_ports: int, key: bytes = b"", option: int = 2) -> SiteInfo:
    """A site of servers on 127.0.0.1, each with UDP and TCP query interfaces."""
    servers = tuple(
        ServerInfo.at(
            "127.0.0.1",
            i,
            (Interface(2, 0, p), Interface(2, 1, p)),
            key if i == 1 else b"",
        )
        for i, p in enumerate((port, *more_ports), 1)
    )
    return SiteInfo(servers, hash_option=option)


def hs_site(index: int, site: SiteInfo) -> dict[str, Any]:
    return {
        "index": index,
        "type": "HS_SITE",
        "data": {"format": "hex", "value": encode_site(site).hex()},
    }


def hs_serv(target: str) -> dict[str, Any]:
    return {"index": 1, "type": "HS_SERV", "data": target}


def url_record(handle: str) -> dict[str, Any]:
    return {"handle": handle, "values": [{"index": 1, "type": "URL", "data": URL + handle}]}


def server_key(node: NodeProcess) -> bytes:
    m = exchange(node.server, Message(OpCode.GET_SITE_INFO, GetSiteInfoRequest("/")), "tcp", 5)
    assert isinstance(m.body, SiteInfoResponse)
    return m.body.site.servers[0].public_key


def handle_on(index: int, servers: int, prefix: str) -> str:
    """A handle of ``prefix`` that hashes (by whole handle) to server ``index``."""
    return next(
        h
        for h in (f"{prefix}/h{i}" for i in range(100))
        if server_index(h, HashOption.BY_HANDLE, servers) == index
    )


@dataclass
class Hierarchy:
    top: NodeProcess
    secondary: NodeProcess
    other: NodeProcess
    root_info: Path
    top_site: SiteInfo
    dead_port: int
    tmp: Path


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    tmp = tmp_path_factory.mktemp("walk")
    on_s = [handle_on(1, 2, "88.200")]
    s_reg = make_registry(
        tmp,
        "s",
        ["88.166", "88.200", "88.201", "88.203"],
        [url_record(h) for h in ("88.166/x", "88.201/x", "88.203/x", *on_s)],
    )
    u_reg = make_registry(tmp, "u", ["88.200"], [])
    nodes: list[NodeProcess] = []
    try:
        s = NodeProcess(s_reg.url, extra=("--secret-key-file", s_reg.key), log=tmp / "s.log")
        nodes.append(s)
        u = NodeProcess(u_reg.url, extra=("--secret-key-file", u_reg.key), log=tmp / "u.log")
        nodes.append(u)
        s.wait_ready()
        u.wait_ready()
        s_key = server_key(s)
        s_site = site_at(s.handle_port, key=s_key)
        dead_port = free_port()  # nothing listens there
        # S also holds a service handle for 88.203 (HS_SERV below points at it).
        svc = {"handle": "88.166/service", "values": [hs_site(1, s_site)]}
        subprocess_import(tmp, s_reg, [svc])
        chain_len = 6  # 0.NA/88.210 -> 0.NA/88.211 -> ... each by HS_SERV
        t_records = [
            {"handle": "0.NA/88.166", "values": [hs_site(1, s_site)]},
            {
                "handle": "0.NA/88.200",
                "values": [hs_site(1, site_at(u.handle_port, s.handle_port))],
            },
            {
                "handle": "0.NA/88.201",
                "values": [hs_site(1, site_at(dead_port)), hs_site(2, s_site)],
            },
            {"handle": "0.NA/88.202", "values": [hs_serv("0.NA/88.202")]},  # itself: a loop
            {"handle": "0.NA/88.203", "values": [hs_serv("88.166/service")]},
            *(
                {"handle": f"0.NA/88.{210 + i}", "values": [hs_serv(f"0.NA/88.{211 + i}")]}
                for i in range(chain_len)
            ),
        ]
        t_reg = make_registry(tmp, "t", ["88"], t_records)
        t = NodeProcess(t_reg.url, extra=("--secret-key-file", t_reg.key), log=tmp / "t.log")
        nodes.append(t)
        t.wait_ready()
        top_site = site_at(t.handle_port, key=server_key(t))
        root_info = tmp / "root_info"
        write_root_info(root_info, [top_site])
        yield Hierarchy(t, s, u, root_info, top_site, dead_port, tmp)
    finally:
        for n in nodes:
            assert n.stop() == 0, n.log_text()


def subprocess_import(tmp: Path, reg: Registry, records: list[Any]) -> None:
    lines = tmp / "more.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in records))
    flags = ["--database-url", reg.url, "--secret-key-file", reg.key]
    p = idnode("import", str(lines), *flags, cwd=tmp)
    assert p.returncode == 0 and "rejected" not in p.stderr, p.stdout + p.stderr


def walk(h: Hierarchy, handle: str, **kw: Any) -> tuple[Any, list[Hop]]:
    hops: list[Hop] = []
    kw.setdefault("timeout", 3.0)
    walker = Walker([h.top_site], **kw)
    result = asyncio.run(walker.resolve(handle, trace=hops.append))
    return result, hops


def values_of(m: Message) -> dict[str, bytes]:
    assert m.response_code == ResponseCode.SUCCESS, m
    assert isinstance(m.body, ResolutionResponse)
    return {v.type: v.data for v in m.body.values}


def test_from_the_root_to_the_secondary(chain: Hierarchy) -> None:
    result, hops = walk(chain, "88.166/x")
    assert values_of(result.message)["URL"] == (URL + "88.166/x").encode()
    # asked T for the prefix record, then S for the handle
    assert [(h.handle, h.server) for h in hops] == [
        ("0.NA/88.166", chain.top.server),
        ("88.166/x", chain.secondary.server),
    ]


def test_the_server_the_handle_hashes_to(chain: Hierarchy) -> None:
    """0.NA/88.200 names one site of two servers, U then S; a handle hashing to the second
    is answered by S, one hashing to the first by U (which has none)."""
    second = handle_on(1, 2, "88.200")
    result, hops = walk(chain, second)
    assert values_of(result.message)["URL"] == (URL + second).encode()
    assert hops[-1].server == chain.secondary.server
    first = handle_on(0, 2, "88.200")
    result, hops = walk(chain, first)
    assert result.message.response_code == ResponseCode.HANDLE_NOT_FOUND
    assert hops[-1].server == chain.other.server


def test_a_dead_site_is_passed_over(chain: Hierarchy) -> None:
    result, hops = walk(chain, "88.201/x")
    assert values_of(result.message)["URL"] == (URL + "88.201/x").encode()
    dead = [h for h in hops if str(chain.dead_port) in h.server]
    assert dead and all(h.response_code is None for h in dead)
    assert hops[-1].server == chain.secondary.server


def test_hs_serv_names_the_service(chain: Hierarchy) -> None:
    result, hops = walk(chain, "88.203/x")
    assert values_of(result.message)["URL"] == (URL + "88.203/x").encode()
    assert [h.handle for h in hops] == ["0.NA/88.203", "0.NA/88.166", "88.166/service", "88.203/x"]


def test_a_loop_is_a_clear_error(chain: Hierarchy) -> None:
    with pytest.raises(WalkError, match="referral loop") as err:
        walk(chain, "88.202/x")
    assert err.value.rc == ResponseCode.RECURSION_COUNT_TOO_HIGH


def test_the_referral_bound(chain: Hierarchy) -> None:
    with pytest.raises(WalkError, match="gave up after 3 referrals") as err:
        walk(chain, "88.210/x", max_referrals=3)
    assert err.value.rc == ResponseCode.RECURSION_COUNT_TOO_HIGH


def test_certified_answers_verify_with_the_nodes_keys(chain: Hierarchy) -> None:
    result, hops = walk(chain, "88.166/x", certify=True)
    assert values_of(result.message)["URL"] == (URL + "88.166/x").encode()
    assert [h.note for h in hops] == ["signature verified"] * 2


def test_idnode_resolve_from_a_root_info_file(chain: Hierarchy) -> None:
    p = idnode("resolve", "88.166/x", "--root-info", str(chain.root_info), "--trace", cwd=chain.tmp)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["responseCode"] == 1 and out["values"][0]["data"]["value"] == URL + "88.166/x"
    trace = p.stderr.splitlines()
    assert len(trace) == 2
    assert trace[0].startswith(f"hop 1: 0.NA/88.166 -> {chain.top.server}/udp")
    assert trace[1].startswith(f"hop 2: 88.166/x -> {chain.secondary.server}/udp")
    # TCP only, certified
    p = idnode(
        "resolve", "88.166/x", "--root-info", str(chain.root_info), "--tcp", "--certify",
        "--trace", cwd=chain.tmp,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert all("/tcp" in line and "signature verified" in line for line in p.stderr.splitlines())
    # a loop: exit 1 and one line saying so
    p = idnode("resolve", "88.202/x", "--root-info", str(chain.root_info), cwd=chain.tmp)
    assert p.returncode == 1 and "referral loop" in p.stderr and "Traceback" not in p.stderr
    # a root-info file that is not one
    bad = chain.tmp / "not-root-info"
    bad.write_bytes(b"\x00\x00\x00\x09nonsense!")
    p = idnode("resolve", "88.166/x", "--root-info", str(bad), cwd=chain.tmp)
    assert p.returncode == 2 and "root info" in p.stderr


def test_idnode_resolve_follows_a_referral_from_server(chain: Hierarchy) -> None:
    """T, asked for 88.166/x, refers to S when the node answers delegated prefixes with
    referrals (the server side of issue 13); the command follows it."""
    direct = exchange(chain.top.server, _request("88.166/x"), "udp", 5)
    if direct.response_code != ResponseCode.SERVICE_REFERRAL:
        pytest.skip(f"this node answers {direct.response_code} for a delegated handle, no 302")
    p = idnode("resolve", "88.166/x", "--server", chain.top.server, "--trace", cwd=chain.tmp)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["values"][0]["data"]["value"] == URL + "88.166/x"
    trace = p.stderr.splitlines()
    assert "SERVICE_REFERRAL" in trace[0] and chain.top.server in trace[0]
    assert chain.secondary.server in trace[-1] and trace[-1].endswith("SUCCESS")
    # --max-referrals 0: the referral itself is printed
    p = idnode(
        "resolve", "88.166/x", "--server", chain.top.server, "--max-referrals", "0", cwd=chain.tmp
    )
    assert p.returncode == 1 and json.loads(p.stdout)["responseCode"] == 302


def _request(handle: str) -> Message:
    from idnode.resolver.client import resolution_request

    return resolution_request(handle)
