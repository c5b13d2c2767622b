"""Ready answers (resolver/ready_answers.py) against a real node: a repeated resolution
is answered from the kept bytes with its own request id, and a write, a delete or a
filter never gets an answer built from something else."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from idnode.resolver.client import AdminClient, resolution_request
from idnode.resolver.codec import (
    CreateHandleRequest,
    DeleteHandleRequest,
    HandleValue,
    Message,
    ModifyValueRequest,
    OpCode,
    OpFlag,
    Permission,
    ResolutionResponse,
    ResponseCode,
    decode,
    encode,
)
from idnode.resolver.codec.digest import digest_request
from tests.e2e.node_process import NodeProcess, admin_node

pytestmark = pytest.mark.e2e
SECRET = "ready answers"
H = "88.166.1001/READY"


@pytest.fixture
def node(tmp_path: Path, redis_url: str, redis_namespace: str) -> Iterator[NodeProcess]:
    yield from admin_node(tmp_path, "ready", SECRET, redis_url, redis_namespace)


def ask(n: NodeProcess, wire: bytes) -> bytes:
    """One UDP request's raw answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(wire, ("127.0.0.1", n.handle_port))
        return s.recv(65536)


def with_id(m: Message, rid: int, expiration: int | None = None) -> bytes:
    exp = m.expiration if expiration is None else expiration
    return encode(dataclasses.replace(m, request_id=rid, expiration=exp))


def sent_from_ready(n: NodeProcess) -> float:
    return n.metric("idnode_ready_answers_sent_total")


def wait_sent_above(n: NodeProcess, before: float) -> float:
    """The counter once it passes ``before`` (the node reports it once a second)."""
    deadline = time.monotonic() + 15
    while (now := sent_from_ready(n)) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    return now


def admin(n: NodeProcess, body: object, op: OpCode) -> None:
    with AdminClient(n.server, "0.NA/88.166", 300, secret=SECRET.encode()) as a:
        (r,) = a.request(Message(op_code=op, body=body))  # type: ignore[arg-type]
        assert r.response_code == ResponseCode.SUCCESS, r


def create(n: NodeProcess) -> None:
    private = int(Permission.ADMIN_READ | Permission.ADMIN_WRITE)
    values = (
        HandleValue(1, "URL", b"https://e.cn/v1"),
        HandleValue(2, "costPrice", b"1200.00", permissions=private),
        HandleValue(3, "EMAIL", b"ops@e.cn"),
    )
    admin(n, CreateHandleRequest(H, values), OpCode.CREATE_HANDLE)


def test_repeats_are_answered_ready_each_with_its_own_id_and_expiration(
    node: NodeProcess,
) -> None:
    create(node)
    q = resolution_request(H)
    before = sent_from_ready(node)
    # The HANDLE.NET library sets the expiration from the clock: it changes too.
    answers = {rid: ask(node, with_id(q, rid, 1_800_000_000 + rid % 3)) for rid in range(100, 140)}
    assert wait_sent_above(node, before) > before  # the repeats went the ready way
    first = answers[100]
    for rid, a in answers.items():
        m = decode(a)
        assert m.request_id == rid and m.expiration == 1_800_000_000 + rid % 3
        # the same answer but for those two fields
        assert a[:8] + a[12:36] + a[40:] == first[:8] + first[12:36] + first[40:]
        assert m.response_code == ResponseCode.SUCCESS
        assert isinstance(m.body, ResolutionResponse)
        # the value without PUBLIC_READ never leaves, ready or not
        assert [v.index for v in m.body.values] == [1, 3]
    # A filter is part of the request: its repeats get the filtered answer.
    by_index = resolution_request(H, indexes=(3,))
    for rid in (1, 2, 3):
        m = decode(ask(node, with_id(by_index, rid)))
        assert isinstance(m.body, ResolutionResponse)
        assert [(v.index, v.data) for v in m.body.values] == [(3, b"ops@e.cn")]
    # A request digest (RD) is over the message after the envelope: each repeat's
    # answer carries the digest of the request it answers.
    rd = resolution_request(H, flags=int(OpFlag.RD))
    for rid in (7, 8, 9):
        wire = with_id(rd, rid, 1_800_000_000 + rid)  # the digest covers the expiration
        m = decode(ask(node, wire))
        assert m.request_id == rid and m.has(OpFlag.RD)
        assert m.request_digest == digest_request(wire)


def test_a_write_or_a_delete_is_never_answered_from_before_it(node: NodeProcess) -> None:
    create(node)
    wire = with_id(resolution_request(H), 4242)  # the very same bytes every time
    for _ in range(20):
        m = decode(ask(node, wire))
        assert isinstance(m.body, ResolutionResponse)
        assert m.body.values[0].data == b"https://e.cn/v1"
    assert wait_sent_above(node, 0) > 0
    for version in (b"https://e.cn/v2", b"https://e.cn/v3"):
        admin(node, ModifyValueRequest(H, (HandleValue(1, "URL", version),)), OpCode.MODIFY_VALUE)
        for _ in range(5):
            m = decode(ask(node, wire))
            assert isinstance(m.body, ResolutionResponse)
            assert m.body.values[0].data == version
    admin(node, DeleteHandleRequest(H), OpCode.DELETE_HANDLE)
    for _ in range(5):
        assert decode(ask(node, wire)).response_code == ResponseCode.HANDLE_NOT_FOUND


def test_a_logged_in_connection_never_gets_an_answer_kept_for_the_public(
    node: NodeProcess,
) -> None:
    """On a TCP connection logged in with LOGIN_ID_SYSTEM, a request without a session
    acts as that administrator: the same bytes a stranger sent must get the values
    without PUBLIC_READ too, not the public answer kept for the stranger."""
    create(node)
    wire = with_id(resolution_request(H, flags=int(OpFlag.REC | OpFlag.CA)), 31337)
    for _ in range(5):  # kept, then answered ready
        m = decode(ask(node, wire))
        assert [v.index for v in m.body.values] == [1, 3]  # type: ignore[union-attr]
    assert wait_sent_above(node, 0) > 0
    with AdminClient(node.server, "0.NA/88.166", 300, secret=SECRET.encode()) as a:
        assert a.login().response_code == ResponseCode.SUCCESS
        for _ in range(3):
            (m,) = a.send_raw(wire, 31337)
            assert isinstance(m.body, ResolutionResponse), m
            assert [v.index for v in m.body.values] == [1, 2, 3]
