"""A site of three `idnode serve` servers homing one prefix (issue 13, multi-server sites).

Each server has its own embedded registry and holds the handles of 88.300 that hash to it
(by whole handle, as HS_SITE's hash option 2 says): they are imported on each with
``idnode import --site-servers ... --site-server-id K``, which rejects the others. Every
handle then resolves from every server over UDP, TCP and REST (a server asks the
responsible one); the published HS_SITE lists the three servers, so the walker and stock
clients pick the responsible server themselves; a write to the wrong server is refused
naming the right one; a write on the right one is seen from the others within
--site-peer-ttl; a stopped server's handles get a clear RC 2 from the others at once, and
their own handles are answered as before. Outcomes are asserted, not durations (beyond
"well within the client's timeout").
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idnode.loadtest.processes import free_port
from idnode.resolver.client import exchange, exchange_tcp, exchange_udp, resolution_request
from idnode.resolver.codec import (
    ErrorResponse,
    Message,
    OpCode,
    ResolutionResponse,
    ResponseCode,
    SiteInfo,
    decode_site,
    server_index,
)
from idnode.resolver.codec.bodies import GetSiteInfoRequest, SiteInfoResponse
from idnode.resolver.codec.codes import HashOption, InterfaceProtocol
from idnode.resolver.codec.sitehash import responsible_server
from idnode.resolver.upstream.walker import Hop, Walker
from tests.e2e.node_process import IDNODE, NodeProcess

pytestmark = pytest.mark.e2e

PREFIX = "88.300"
SECRET = "site-admin-secret"
URL = "https://example.com/"
N = 3
PEER_TTL = 1.0


def idnode(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IDNODE, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


def handles_on(index: int, count: int = 2, stem: str = "h") -> list[str]:
    """``count`` handles of 88.300 that hash (by whole handle) to server ``index``."""
    out = []
    for i in range(1000):
        h = f"{PREFIX}/{stem}{i}"
        if server_index(h, HashOption.BY_HANDLE, N) == index:
            out.append(h)
            if len(out) == count:
                return out
    raise AssertionError("no handles")


def record(handle: str) -> dict[str, Any]:
    return {"handle": handle, "values": [{"index": 1, "type": "URL", "data": URL + handle}]}


@dataclass
class Server:
    sid: int
    node: NodeProcess
    url: str
    key: str
    flags: tuple[str, ...]  # the site flags it serves with
    handles: list[str]


@dataclass
class Site:
    servers: list[Server]
    tmp: Path

    def by_id(self, sid: int) -> Server:
        return next(s for s in self.servers if s.sid == sid)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("site")
    ports = [(free_port(), free_port(), free_port()) for _ in range(N)]
    members = ",".join(f"{i}=127.0.0.1:{h}:{p}" for i, (h, p, _) in enumerate(ports, 1))
    servers: list[Server] = []
    try:
        for i, (handle_port, http_port, grpc_port) in enumerate(ports, 1):
            url, key = f"sqlite:///{tmp}/s{i}.db", str(tmp / f"s{i}.key")
            reg = ("--database-url", url, "--secret-key-file", key)
            p = idnode("init", "--prefix", PREFIX, "--admin-secret", SECRET, *reg, cwd=tmp)
            assert p.returncode == 0, p.stderr
            flags = ("--site-servers", members, "--site-server-id", str(i))
            own = handles_on(i - 1)
            lines = tmp / f"s{i}.jsonl"
            lines.write_text("".join(json.dumps(record(h)) + "\n" for h in own))
            p = idnode("import", str(lines), *reg, *flags, cwd=tmp)
            assert p.returncode == 0 and "rejected" not in p.stderr, p.stdout + p.stderr
            node = NodeProcess(
                url,
                log=tmp / f"s{i}.log",
                extra=(
                    "--secret-key-file",
                    key,
                    *flags,
                    "--site-peer-ttl",
                    str(PEER_TTL),
                    "--handle-port",
                    str(handle_port),
                    "--http-port",
                    str(http_port),
                    "--grpc-port",
                    str(grpc_port),
                ),
            )
            node.handle_port, node.http_port, node.grpc_port = handle_port, http_port, grpc_port
            servers.append(Server(i, node, url, key, flags, own))
        for s in servers:
            s.node.wait_ready()
        yield Site(servers, tmp)
    finally:
        for s in servers:
            if s.node.proc.poll() is None:
                assert s.node.stop() == 0, s.node.log_text()


def url_of(m: Message) -> str:
    assert m.response_code == ResponseCode.SUCCESS, m
    assert isinstance(m.body, ResolutionResponse)
    return next(v.data.decode() for v in m.body.values if v.type == "URL")


def rest(node: NodeProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {}
    data = None
    if body is not None:
        token = base64.b64encode(f"300%3A0.NA/{PREFIX}:{SECRET}".encode()).decode()
        headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        data = json.dumps(body).encode()
    req = urllib.request.Request(node.http + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def rest_url(node: NodeProcess, handle: str) -> str:
    status, j = rest(node, "GET", f"/api/handles/{handle}")
    assert status == 200 and j["responseCode"] == 1, j
    return str(next(v["data"]["value"] for v in j["values"] if v["type"] == "URL"))


def published_site(node: NodeProcess) -> SiteInfo:
    m = exchange(node.server, Message(OpCode.GET_SITE_INFO, GetSiteInfoRequest("/")), "tcp", 5)
    assert isinstance(m.body, SiteInfoResponse)
    return m.body.site


def test_every_handle_resolves_from_every_server(site: Site) -> None:
    for asked in site.servers:
        for holder in site.servers:
            for h in holder.handles:
                want = URL + h
                assert (
                    url_of(exchange_udp("127.0.0.1", asked.node.handle_port, resolution_request(h)))
                    == want
                )
                assert (
                    url_of(
                        exchange_tcp("127.0.0.1", asked.node.handle_port, resolution_request(h))[-1]
                    )
                    == want
                )
                assert rest_url(asked.node, h) == want
    # a handle no server holds: "not found" wherever it is asked, not an error
    for asked in site.servers:
        for index in range(N):
            (missing,) = handles_on(index, 1, stem="missing")
            m = exchange(asked.node.server, resolution_request(missing), "tcp", 5)
            assert m.response_code == ResponseCode.HANDLE_NOT_FOUND, m


def test_each_server_holds_only_its_own_handles(site: Site) -> None:
    """The answers for another server's handles come from that server: this one's
    registry never had them (import rejected them there, see the fixture)."""
    s1 = site.by_id(1)
    other = site.by_id(2).handles[0]
    lines = site.tmp / "wrong.jsonl"
    lines.write_text(json.dumps(record(other)) + "\n")
    p = idnode(
        "import", str(lines), "--database-url", s1.url, "--secret-key-file", s1.key, *s1.flags,
        cwd=site.tmp,
    )  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    port = site.by_id(2).node.handle_port
    assert f"hashes to server 2 (127.0.0.1:{port}) of this site" in p.stderr, p.stderr


def test_the_published_site_lists_every_server(site: Site) -> None:
    first = published_site(site.servers[0].node)
    assert first.hash_option == HashOption.BY_HANDLE
    assert [s.server_id for s in first.servers] == [1, 2, 3]
    for s, server in zip(site.servers, first.servers, strict=True):
        ports = {(i.protocol, i.port) for i in server.interfaces}
        assert (InterfaceProtocol.TCP, s.node.handle_port) in ports
        assert (InterfaceProtocol.UDP, s.node.handle_port) in ports
        assert (InterfaceProtocol.HTTP, s.node.http_port) in ports
    for s in site.servers:
        mine = published_site(s.node)
        # each server knows its own key; the servers, ports and hash agree
        assert mine.servers[s.sid - 1].public_key
        assert [x.interfaces for x in mine.servers] == [x.interfaces for x in first.servers]
        # and the same HS_SITE is in 0.NA/88.300, answered by any server
        m = exchange(s.node.server, resolution_request(f"0.NA/{PREFIX}"), "tcp", 5)
        assert isinstance(m.body, ResolutionResponse)
        (value,) = [v for v in m.body.values if v.type == "HS_SITE"]
        stored = decode_site(value.data)
        assert stored.hash_option == mine.hash_option
        assert [(x.server_id, x.address, x.interfaces) for x in stored.servers] == [
            (x.server_id, x.address, x.interfaces) for x in mine.servers
        ]


def test_the_hash_and_the_walker_pick_the_responsible_server(site: Site) -> None:
    """The walker, given the site as its root, asks 0.NA/88.300 of the server that hashes
    to, then each handle of the server that holds it, and that server answers it."""
    root = published_site(site.servers[0].node)
    for holder in site.servers:
        for h in holder.handles:
            assert responsible_server(root, h).server_id == holder.sid
            hops: list[Hop] = []
            result = asyncio.run(Walker([root], timeout=3.0).resolve(h, trace=hops.append))
            assert url_of(result.message) == URL + h
            assert result.server.server_id == holder.sid
            assert hops[-1].server == holder.node.server


def test_every_server_learns_the_others_keys_and_certified_walks_verify(site: Site) -> None:
    """Each server asks the others for their site record and publishes the site with all
    three keys; a certified walk then checks every answer against its server's key."""
    own = {s.sid: published_site(s.node).servers[s.sid - 1].public_key for s in site.servers}
    deadline = time.monotonic() + 20
    for s in site.servers:
        while [x.public_key for x in published_site(s.node).servers] != [own[1], own[2], own[3]]:
            assert time.monotonic() < deadline, f"server {s.sid} lacks keys"
            time.sleep(0.2)
        m = exchange(s.node.server, resolution_request(f"0.NA/{PREFIX}"), "tcp", 5)
        assert isinstance(m.body, ResolutionResponse)
        (value,) = [v for v in m.body.values if v.type == "HS_SITE"]
        assert [x.public_key for x in decode_site(value.data).servers] == [own[1], own[2], own[3]]
    root = published_site(site.servers[0].node)
    for holder in site.servers:
        for h in holder.handles[:1]:
            hops: list[Hop] = []
            walker = Walker([root], timeout=3.0, certify=True)
            result = asyncio.run(walker.resolve(h, trace=hops.append))
            assert url_of(result.message) == URL + h
            assert result.server.server_id == holder.sid
            assert [x.note for x in hops] == ["signature verified"] * 2


def test_a_write_to_the_wrong_server_is_refused_naming_the_right_one(site: Site) -> None:
    s1, s2 = site.by_id(1), site.by_id(2)
    (h,) = handles_on(1, 1, stem="new")  # hashes to server 2
    body = {"values": [{"index": 1, "type": "URL", "data": URL + h}]}
    status, j = rest(s1.node, "PUT", f"/api/handles/{h}", body)
    assert j["responseCode"] == ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, j
    assert f"server 2 (127.0.0.1:{s2.node.handle_port})" in j["message"], j
    assert status == 400
    # nothing was written there: the handle is still not found anywhere
    for s in site.servers:
        m = exchange(s.node.server, resolution_request(h), "tcp", 5)
        assert m.response_code == ResponseCode.HANDLE_NOT_FOUND
    # on the right server it is created, and every server then answers it
    status, j = rest(s2.node, "PUT", f"/api/handles/{h}", body)
    assert status == 201, j
    deadline = time.monotonic() + 3 * PEER_TTL + 5
    for s in site.servers:  # a cached "not found" lives at most --site-peer-ttl
        while rest(s.node, "GET", f"/api/handles/{h}")[0] != 200:
            assert time.monotonic() < deadline, f"server {s.sid} does not see {h}"
            time.sleep(0.2)
        assert rest_url(s.node, h) == URL + h


def test_a_change_on_the_holder_is_seen_within_the_peer_ttl(site: Site) -> None:
    s1, s2 = site.by_id(1), site.by_id(2)
    h = s2.handles[1]
    assert rest_url(s1.node, h) == URL + h  # in server 1's L1 now
    body = {"values": [{"index": 1, "type": "URL", "data": URL + "changed"}]}
    status, j = rest(s2.node, "PUT", f"/api/handles/{h}", body)
    assert status in (200, 201), j
    deadline = time.monotonic() + 3 * PEER_TTL + 5
    while rest_url(s1.node, h) != URL + "changed":
        assert time.monotonic() < deadline, "server 1 kept a stale copy"
        time.sleep(0.2)


def test_a_stopped_server_gets_a_clear_error_at_once(site: Site) -> None:
    """Runs last: it stops server 3."""
    s3 = site.by_id(3)
    assert s3.node.stop() == 0, s3.node.log_text()
    for asked in site.servers[:2]:
        for h in s3.handles:
            m = exchange_udp("127.0.0.1", asked.node.handle_port, resolution_request(h), 5.0)
            assert m.response_code == ResponseCode.ERROR, m
            assert isinstance(m.body, ErrorResponse)
            assert f"server 3 (127.0.0.1:{s3.node.handle_port})" in m.body.message
            assert "does not answer" in m.body.message
            # "at once": the reason given is the stopped server's refusal (asked now, or
            # remembered from the last ask), never the peer timeout running out
            assert "cannot reach" in m.body.message, m.body.message
            assert "no answer from" not in m.body.message, m.body.message
            _, j = rest(asked.node, "GET", f"/api/handles/{h}")
            assert j["responseCode"] == ResponseCode.ERROR and "server 3" in j["message"], j
        # its own handles and the other live server's, as before
        for holder in site.servers[:2]:
            for h in holder.handles[:1]:  # (the change test rewrote server 2's second)
                m = exchange_udp("127.0.0.1", asked.node.handle_port, resolution_request(h), 5.0)
                assert url_of(m) == URL + h
