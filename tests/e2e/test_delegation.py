"""The node in the hierarchy, with three real `idnode serve` processes: a top-level node T
(homes 88), a secondary node S (homes 88.166, registered at T with `idnode
register-upward`) and an enterprise node E (homes 88.166.1001, delegated at S by S's
administrator writing 0.NA/88.166.1001 with E's HS_SITE).

T refers 88.166/... to S (302) and 0.NA/88.166.* to S (303); S refers 88.166.1001/... to
E, answers 0.NA/88.166.1001 and 88.166/... itself, and once the delegation record is
deleted answers 88.166.1001/... locally again. Each node publishes its own HS_SITE in the
prefix records of the prefixes it homes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from idnode.resolver.client import AdminClient, exchange, resolution_request
from idnode.resolver.codec import (
    CreateHandleRequest,
    DeleteHandleRequest,
    HandleValue,
    Message,
    OpCode,
    ReferralResponse,
    ResolutionResponse,
    ResponseCode,
    SiteInfo,
    decode_site,
)
from idnode.resolver.grpc_protos import load
from idnode.resolver.upstream.register import fetch_site
from idnode.resolver.upstream.walker import Walker
from tests.e2e.node_process import IDNODE, NodeProcess

pytestmark = pytest.mark.e2e
RC = ResponseCode
T_SECRET, S_SECRET, E_SECRET = b"top secret", b"secondary secret", b"enterprise secret"
UPWARD = "upward secret"  # the admin T gives S in 0.NA/88.166
pb2, pb2_grpc = load()


def idnode(*args: str, cwd: Path) -> str:
    p = subprocess.run(
        [IDNODE, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
    assert p.returncode == 0, f"idnode {' '.join(args)}: {p.stderr}"
    assert "Traceback" not in p.stderr
    return p.stdout


@dataclass
class Node:
    name: str
    prefix: str
    db: str
    key: str
    proc: NodeProcess

    @property
    def server(self) -> str:
        return self.proc.server


def start(tmp: Path, name: str, prefix: str, secret: bytes, *serve_flags: str) -> Node:
    """`idnode init` of ``prefix`` and `idnode serve` of it (with ``serve_flags``)."""
    db, key = f"sqlite:///{tmp}/{name}.db", str(tmp / f"{name}.key")
    idnode(
        "init",
        "--prefix",
        prefix,
        "--admin-secret",
        secret.decode(),
        "--database-url",
        db,
        "--secret-key-file",
        key,
        cwd=tmp,
    )
    return Node(
        name,
        prefix,
        db,
        key,
        NodeProcess(db, log=tmp / f"{name}.log", extra=("--secret-key-file", key, *serve_flags)),
    )


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    tmp = tmp_path_factory.mktemp("hierarchy")
    # T's operator: home 88, and give S's operator an admin for 0.NA/88.166 (before T
    # serves; a grant on a running node is seen once its negative cache entry expires).
    t_db, t_key = f"sqlite:///{tmp}/t.db", str(tmp / "t.key")
    out = {}
    out["T"] = start(tmp, "t", "88", T_SECRET)
    idnode(
        "grant-prefix",
        "--prefix",
        "88.166",
        "--admin-secret",
        UPWARD,
        "--database-url",
        t_db,
        "--secret-key-file",
        t_key,
        cwd=tmp,
    )
    out["S"] = start(tmp, "s", "88.166", S_SECRET)
    out["E"] = start(tmp, "e", "88.166.1001", E_SECRET)
    try:
        for n in out.values():
            n.proc.wait_ready()
        yield out
    finally:
        for n in out.values():
            code = n.proc.stop()
            assert code == 0, n.proc.log_text()


def resolve(server: str, handle: str) -> Message:
    return exchange(server, resolution_request(handle), "tcp")


def values(m: Message) -> dict[int, HandleValue]:
    assert m.response_code == RC.SUCCESS, m
    assert isinstance(m.body, ResolutionResponse)
    return {v.index: v for v in m.body.values}


def sites(m: Message) -> list[SiteInfo]:
    assert isinstance(m.body, ReferralResponse), m
    return [decode_site(v.data) for v in m.body.values or () if v.type == "HS_SITE"]


def tcp_port(site: SiteInfo) -> int:
    (server,) = site.servers
    return next(i.port for i in server.interfaces if i.protocol == 1)


def admin(node: Node, secret: bytes, handle: str | None = None) -> AdminClient:
    return AdminClient(node.server, handle or f"0.NA/{node.prefix}", 300, secret=secret)


def write(node: Node, secret: bytes, op: OpCode, body: Any, handle: str | None = None) -> int:
    with admin(node, secret, handle) as c:
        return c.request(Message(op_code=op, body=body))[-1].response_code


def create_handle(node: Node, secret: bytes, handle: str, values: tuple[HandleValue, ...]) -> int:
    """CREATE_HANDLE of ``handle`` with ``values`` at ``node``: the response code."""
    return write(node, secret, OpCode.CREATE_HANDLE, CreateHandleRequest(handle, values))


def url_value(text: str) -> tuple[HandleValue, ...]:
    return (HandleValue(1, "URL", text.encode()),)


def register_upward(tmp: Path, s: Node, t: Node, *extra: str, secret: str = UPWARD) -> str:
    """S's HS_SITE into 0.NA/<S's prefix> at T, as the admin T granted (with ``secret``)."""
    return idnode(
        "register-upward",
        "--top",
        t.server,
        "--admin",
        f"300:0.NA/{s.prefix}",
        "--secret",
        secret,
        "--database-url",
        s.db,
        "--listen",
        "127.0.0.1",
        "--handle-port",
        str(s.proc.handle_port),
        "--http-port",
        str(s.proc.http_port),
        *extra,
        cwd=tmp,
    )


def test_each_node_publishes_its_site_in_its_prefix_record(nodes: dict[str, Node]) -> None:
    for n in nodes.values():
        vals = values(resolve(n.server, f"0.NA/{n.prefix}"))
        site = decode_site(vals[1].data)
        assert tcp_port(site) == n.proc.handle_port
        ports = {(i.protocol, i.port) for i in site.servers[0].interfaces}
        assert (2, n.proc.http_port) in ports  # HTTP
        assert site.servers[0].public_key  # the server key clients check answers with
        assert vals[100].type == "HS_ADMIN"  # the admin values are kept


def test_three_levels(nodes: dict[str, Node], tmp_path: Path) -> None:
    t, s, e = nodes["T"], nodes["S"], nodes["E"]
    # Identifiers: one at E, and at S one of its own and one under 88.166.1001 made
    # before 88.166.1001 was delegated.
    assert create_handle(e, E_SECRET, "88.166.1001/x", url_value("at E")) == RC.SUCCESS
    assert create_handle(s, S_SECRET, "88.166/y", url_value("at S")) == RC.SUCCESS
    assert create_handle(s, S_SECRET, "88.166.1001/x", url_value("old, at S")) == RC.SUCCESS
    assert values(resolve(s.server, "88.166.1001/x"))[1].data == b"old, at S"

    # Before S registers upward, T holds 0.NA/88.166 with only the admin it granted:
    # not a delegation, so T does not serve 88.166/... (nothing registered there).
    assert resolve(t.server, "88.166/y").response_code == RC.HANDLE_NOT_FOUND

    # S registers upward: its HS_SITE into 0.NA/88.166 at T, as the granted admin.
    out = register_upward(tmp_path, s, t)
    assert "0.NA/88.166: HS_SITE added" in out, out
    assert "up to date" in register_upward(tmp_path, s, t)  # idempotent

    # T: 88.166/... is S's (302, sites = S), 0.NA/88.166 is the record itself,
    # 0.NA/88.166.* below it is asked of S (303).
    r = resolve(t.server, "88.166/y")
    assert r.response_code == RC.SERVICE_REFERRAL
    assert isinstance(r.body, ReferralResponse) and r.body.referral_handle == "0.NA/88.166"
    assert [tcp_port(x) for x in sites(r)] == [s.proc.handle_port]
    assert (
        tcp_port(decode_site(values(resolve(t.server, "0.NA/88.166"))[1].data))
        == s.proc.handle_port
    )
    r = resolve(t.server, "0.NA/88.166.1001")
    assert r.response_code == RC.PREFIX_REFERRAL
    assert [tcp_port(x) for x in sites(r)] == [s.proc.handle_port]
    assert resolve(t.server, "88/anything").response_code == RC.HANDLE_NOT_FOUND  # T's own

    # S's administrator delegates 88.166.1001 to E: E's HS_SITE (as E publishes it in
    # its own 0.NA/88.166.1001) into 0.NA/88.166.1001 at S.
    e_site = values(resolve(e.server, "0.NA/88.166.1001"))[1]
    assert create_handle(s, S_SECRET, "0.NA/88.166.1001", (e_site,)) == RC.SUCCESS

    r = resolve(s.server, "88.166.1001/x")
    assert r.response_code == RC.SERVICE_REFERRAL
    assert isinstance(r.body, ReferralResponse) and r.body.referral_handle == "0.NA/88.166.1001"
    assert [tcp_port(x) for x in sites(r)] == [e.proc.handle_port]
    # ... which is where the identifier lives
    assert values(resolve(e.server, "88.166.1001/x"))[1].data == b"at E"
    assert r.response_code == resolve(s.server, "88.166.1001/X").response_code  # any case
    r = resolve(s.server, "0.NA/88.166.1001.5")
    assert r.response_code == RC.PREFIX_REFERRAL
    assert isinstance(r.body, ReferralResponse) and r.body.referral_handle == "0.NA/88.166.1001"
    assert values(resolve(s.server, "0.NA/88.166.1001"))[1].type == "HS_SITE"  # held at S
    assert values(resolve(s.server, "88.166/y"))[1].data == b"at S"  # S's own
    # S's prefix admin no longer registers under the delegated prefix: E does.
    refused = create_handle(s, S_SECRET, "88.166.1001/new", url_value("no"))
    assert refused == RC.INSUFFICIENT_PERMISSIONS

    # REST on S: the referral as the reference's JSON (HTTP 300, as its proxy answers).
    try:
        urllib.request.urlopen(f"{s.proc.http}/api/handles/88.166.1001/x", timeout=5)
        raise AssertionError("a referral is not a 200")
    except urllib.error.HTTPError as exc:
        assert exc.code == 300
        body = json.loads(exc.read())
    assert body["responseCode"] == 302 and body["handle"] == "88.166.1001/x"
    assert body["referralHandle"] == "0.NA/88.166.1001"
    (site_json,) = body["values"]
    assert site_json["type"] == "HS_SITE" and site_json["data"]["format"] == "site"
    assert f"127.0.0.1:{e.proc.handle_port}" in body["message"]

    # The delegation record deleted at S: S answers 88.166.1001/... itself again (the
    # write's invalidation reached the delegation stage before the write was answered).
    assert (
        write(s, S_SECRET, OpCode.DELETE_HANDLE, DeleteHandleRequest("0.NA/88.166.1001"))
        == RC.SUCCESS
    )
    assert values(resolve(s.server, "88.166.1001/x"))[1].data == b"old, at S"

    # S's node moved (another HTTP port): register-upward updates T's record, serial up.
    out = register_upward(tmp_path, s, t, "--http-port", "1")
    assert "HS_SITE updated" in out, out
    moved = decode_site(values(resolve(t.server, "0.NA/88.166"))[1].data)
    assert (2, 1) in {(i.protocol, i.port) for i in moved.servers[0].interfaces}
    assert moved.serial == 2


def test_hs_site_prefix_delegates_the_derived_prefixes(
    nodes: dict[str, Node], tmp_path: Path
) -> None:
    """0.NA/88.166.1001 at S with only HS_SITE.PREFIX naming E: S refers 88.166.1001.5/x
    (and 0.NA/88.166.1001.5) to E, answers 88.166.1001/x itself as before, and the
    walker, starting at T, resolves 88.166.1001.5/x through both referrals."""
    t, s, e = nodes["T"], nodes["S"], nodes["E"]
    register_upward(tmp_path, s, t)  # T refers 0.NA/88.166.* to S (done or updated)
    e_record = values(resolve(e.server, "0.NA/88.166.1001"))
    e_site = e_record[1]
    # At E: the derived prefix's record (its service: E; administered by E's prefix
    # admin, 300:0.NA/88.166.1001, as E's own record is) and an identifier under it.
    record = (e_site, e_record[100])
    assert create_handle(e, E_SECRET, "0.NA/88.166.1001.5", record) == RC.SUCCESS
    assert create_handle(e, E_SECRET, "88.166.1001.5/x", url_value("at E, derived")) == RC.SUCCESS
    for h in ("88.166.1001/x", "88.166.1001/k"):  # S's own, whatever earlier tests left
        create_handle(s, S_SECRET, h, url_value("at S"))
    derived = HandleValue(2, "HS_SITE.PREFIX", e_site.data)
    assert create_handle(s, S_SECRET, "0.NA/88.166.1001", (derived,)) == RC.SUCCESS
    try:
        assert values(resolve(s.server, "88.166.1001/k"))[1].data == b"at S"  # as before
        r = resolve(s.server, "88.166.1001.5/x")
        assert r.response_code == RC.SERVICE_REFERRAL
        assert isinstance(r.body, ReferralResponse)
        assert r.body.referral_handle == "0.NA/88.166.1001"
        assert [tcp_port(x) for x in sites(r)] == [e.proc.handle_port]  # typed HS_SITE
        r = resolve(s.server, "0.NA/88.166.1001.5")
        assert r.response_code == RC.PREFIX_REFERRAL
        assert [tcp_port(x) for x in sites(r)] == [e.proc.handle_port]

        walker = Walker([fetch_site(t.server)], timeout=5.0)
        got = asyncio.run(walker.resolve("88.166.1001.5/x"))
        assert got.message.response_code == RC.SUCCESS, got.hops
        assert isinstance(got.message.body, ResolutionResponse)
        assert got.message.body.values[0].data == b"at E, derived"
        assert tcp_port(got.site) == e.proc.handle_port
    finally:
        write(s, S_SECRET, OpCode.DELETE_HANDLE, DeleteHandleRequest("0.NA/88.166.1001"))


def test_grpc_renders_a_referral(nodes: dict[str, Node]) -> None:
    """gRPC Resolve of a handle delegated elsewhere: FAILED_PRECONDITION, the Handle code
    (302, or 303 for a prefix handle) and the referral handle in the trailing metadata,
    the referral handle and the sites' addresses in the details; BatchResolve's item
    status says the same."""
    s, e = nodes["S"], nodes["E"]
    e_site = values(resolve(e.server, "0.NA/88.166.1001"))[1]
    assert create_handle(s, S_SECRET, "0.NA/88.166.1001", (e_site,)) == RC.SUCCESS
    where = f"127.0.0.1:{e.proc.handle_port}"
    try:
        with grpc.insecure_channel(f"127.0.0.1:{s.proc.grpc_port}") as ch:
            stub = pb2_grpc.ResolverStub(ch)
            for handle, code in (("88.166.1001/x", 302), ("0.NA/88.166.1001.5", 303)):
                with pytest.raises(grpc.RpcError) as err:
                    stub.Resolve(pb2.ResolveRequest(handle=handle))
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                meta = dict(err.value.trailing_metadata() or ())
                assert meta["idnode-handle-code"] == str(code)
                assert meta["idnode-referral-handle"] == "0.NA/88.166.1001"
                details = err.value.details() or ""
                assert details.startswith(f"[{code}] referral to 0.NA/88.166.1001 at {where}")
            got = stub.BatchResolve(
                pb2.BatchResolveRequest(requests=[pb2.ResolveRequest(handle="88.166.1001/x")])
            )
            (item,) = got.responses
            assert item.status.handle_code == 302 and not item.values
            assert item.status.message.startswith(f"referral to 0.NA/88.166.1001 at {where}")
    finally:
        write(s, S_SECRET, OpCode.DELETE_HANDLE, DeleteHandleRequest("0.NA/88.166.1001"))


def test_the_admin_given_upward_may_write_its_prefix_records_and_nothing_else(
    nodes: dict[str, Node], tmp_path: Path
) -> None:
    t = nodes["T"]
    register_upward(tmp_path, nodes["S"], t)  # (done already when the module runs whole)
    up = "0.NA/88.166"
    create = OpCode.CREATE_HANDLE
    site = (HandleValue(1, "URL", b"x"),)
    # its derived prefixes: yes (ADD_DERIVED_PREFIX of 0.NA/88.166's admins) ...
    assert (
        write(t, UPWARD.encode(), create, CreateHandleRequest("0.NA/88.166.77", site), up)
        == RC.SUCCESS
    )
    # ... another secondary's prefix, T's own identifiers, 88.166 identifiers at T: no
    for h in ("0.NA/88.200", "88/x", "88.166/x"):
        got = write(t, UPWARD.encode(), create, CreateHandleRequest(h, site), up)
        assert got == RC.INSUFFICIENT_PERMISSIONS, h
    # T's own administrator still creates the others
    assert write(t, T_SECRET, create, CreateHandleRequest("0.NA/88.200", site)) == RC.SUCCESS
