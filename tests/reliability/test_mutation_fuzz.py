"""A bounded mutation fuzz of every door (issue 12): valid requests built with the codec
(resolutions with index and type filters, CREATE/DELETE/ADD/MODIFY/REMOVE/LIST,
SESSION_SETUP, GET_SITE_INFO, challenge answers) and the fuzz corpus, mutated with a
seeded random (bit flips, byte insert/delete, length-field corruption, truncation,
duplication, splicing two messages), are sent to one real `idnode serve` over UDP
(whole and as multi-datagram fragments), Handle TCP (one message per connection and
pipelined, framed and unframed), the HTTP tunnel, and raw bytes to every gRPC method.
The DNS gateway (issue 14) gets the same: dnspython-built queries (TXT, URI, NAPTR, ANY
of registered handles, the apex's SOA and NS, names outside the zone or of no handle,
with and without EDNS) and hand-written malformed packets (test_dns_hostile.HOSTILE),
mutated, over UDP and over TCP (framed, pipelined, lying length prefixes, raw bytes).

After each door's batch: the node and its workers are alive, a well-behaved client
resolves on every door (the DNS gateway too), the node's RSS stays under a bound, the
registry's rows are exactly as before (no unauthenticated mutation wrote anything), and
the node logged no traceback and nothing at ERROR.

CI runs a small deterministic budget; IDNODE_FUZZ_MUTATIONS scales it (the UDP count;
the other doors get the same fractions as in CI: DNS 3,000 UDP and 300 TCP for 5,000),
IDNODE_FUZZ_SEED changes the seed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import socket
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import grpc
import pytest

from idnode.loadtest.processes import free_port
from idnode.resolver.codec import (
    AddValueRequest,
    ChallengeAnswer,
    CreateHandleRequest,
    DeleteHandleRequest,
    GetSiteInfoRequest,
    HandleValue,
    ListHandlesRequest,
    Message,
    ModifyValueRequest,
    OpCode,
    RemoveValueRequest,
    ResolutionRequest,
    encode,
)
from idnode.resolver.codec.bodies import SessionSetupRequest
from idnode.resolver.codec.datagrams import split_datagrams
from idnode.resolver.grpc_protos import load
from tests.e2e.node_process import NodeProcess, init_registry
from tests.reliability.nodes import alive, children, import_rows, node_rss_mib, served_correctly
from tests.reliability.test_dns_hostile import HOSTILE

pytestmark = pytest.mark.e2e
pb2, pb2_grpc = load()

SECRET = "S3cret-for-the-mutation-fuzz"
UDP_COUNT = int(os.environ.get("IDNODE_FUZZ_MUTATIONS", "5000"))
SCALE = UDP_COUNT / 5000
TCP_COUNT = max(1, int(1000 * SCALE))
HTTP_COUNT = max(1, int(300 * SCALE))
GRPC_COUNT = max(1, int(300 * SCALE))
DNS_UDP_COUNT = max(1, int(3000 * SCALE))
DNS_TCP_COUNT = max(1, int(300 * SCALE))
DNS_ZONE = "id.internal."
SEED = int(os.environ.get("IDNODE_FUZZ_SEED", "12"))
RSS_GROWTH_MIB = 250  # above the node's RSS once it has served one request of each door
CORPUS = Path(__file__).parents[1] / "fuzz_corpus"
GRPC_METHODS = {
    "/idnode.v1.Resolver/Resolve": pb2.ResolveRequest(handle="88.166.1001/P-0", types=["URL"]),
    "/idnode.v1.Resolver/BatchResolve": pb2.BatchResolveRequest(
        requests=[pb2.ResolveRequest(handle="88.166.1001/P-1")]
    ),
    "/idnode.v1.Registry/CreateHandle": pb2.CreateHandleRequest(
        record=pb2.HandleRecord(handle="88.166/FUZZ-G", values=[])
    ),
    "/idnode.v1.Registry/DeleteHandle": pb2.DeleteHandleRequest(handle="88.166.1001/P-3"),
    "/idnode.v1.Registry/AddValues": pb2.ValuesRequest(handle="88.166.1001/P-4"),
    "/idnode.v1.Registry/ModifyValues": pb2.ValuesRequest(handle="88.166.1001/P-5"),
    "/idnode.v1.Registry/RemoveValues": pb2.RemoveValuesRequest(handle="88.166.1001/P-6"),
    "/idnode.v1.Registry/BatchCreate": pb2.BatchCreateRequest(),
    "/idnode.v1.Registry/ListHandles": pb2.ListHandlesRequest(),
    "/idnode.v1.Registry/PutTemplate": pb2.PutTemplateRequest(),
    "/idnode.v1.Registry/HomePrefix": pb2.PrefixRequest(),
    "/idnode.v1.Registry/UnhomePrefix": pb2.PrefixRequest(),
    "/idnode.v1.Registry/ListPrefixes": pb2.Empty(),
}
GRPC_STREAM = "/idnode.v1.Resolver/ResolveStream"


# --- the node ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dns_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, dns_port: int) -> Iterator[NodeProcess]:
    """A registry homing 88.166 with the administrator 300:0.NA/88.166 and the handles
    88.166.1001/P-0..9; the node with two workers, no Redis, the DNS gateway on."""
    tmp = tmp_path_factory.mktemp("mutfuzz")
    url, key, _ = init_registry(tmp, "fuzz", "--admin-secret", SECRET)
    lines = [
        {
            "handle": f"88.166.1001/P-{i}",
            "values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": f"u{i}"}}],
        }
        for i in range(10)
    ]
    import_rows(tmp / "fuzz.jsonl", lines, url)
    dns = ("--dns-port", str(dns_port), "--dns-zone", DNS_ZONE)
    n = NodeProcess(url, workers=2, log=tmp / "fuzz.log", extra=("--secret-key-file", key, *dns))
    n.wait_ready()
    yield n
    n.stop()


def registry_digest(node: NodeProcess) -> tuple[int, str]:
    """The registry's handle count and a digest of every row of the tables a write could
    change (handles, prefixes, templates, API keys), read from the SQLite file."""
    path = node.database_url.removeprefix("sqlite:///")
    h = hashlib.sha256()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        count = db.execute("SELECT count(*) FROM handles").fetchone()[0]
        for table, key in (
            ("handles", "handle"),
            ("prefixes", "1"),
            ("templates", "1"),
            ("api_keys", "1"),
        ):
            for row in db.execute(f"SELECT * FROM {table} ORDER BY {key}"):
                h.update(repr(row).encode())
    return int(count), h.hexdigest()


def resolves_over_grpc(node: NodeProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}") as ch:
        got = pb2_grpc.ResolverStub(ch).Resolve(
            pb2.ResolveRequest(handle="88.166.1001/P-7"), timeout=10
        )
    assert [v.data for v in got.values] == [b"u7"], got


def resolves_over_dns(port: int) -> None:
    """dnspython gets the URI of 88.166.1001/P-8 over UDP and over TCP."""
    q = dns.message.make_query(f"P-8.1001.166.88.{DNS_ZONE}", "URI")
    for m in (
        dns.query.udp(q, "127.0.0.1", port=port, timeout=10),
        dns.query.tcp(q, "127.0.0.1", port=port, timeout=10),
    ):
        assert m.rcode() == dns.rcode.NOERROR and [r.target for r in m.answer[0]] == [b"u8"], m


class Checks:
    """What must hold after every door's batch."""

    def __init__(self, node: NodeProcess, dns_port: int) -> None:
        self.node = node
        self.dns_port = dns_port
        served_correctly(node)
        resolves_over_grpc(node)
        resolves_over_dns(dns_port)
        self.workers = sorted(children(node.proc.pid))  # the workers (and helpers)
        assert len(self.workers) >= 2, self.workers
        self.rows = registry_digest(node)
        self.rss_bound = node_rss_mib(node) + RSS_GROWTH_MIB
        assert node.log_path is not None
        self.log_offset = node.log_path.stat().st_size

    def after(self, door: str) -> None:
        n = self.node
        assert n.proc.poll() is None, f"{door}: the node exited\n{n.log_text()}"
        assert all(alive(w) for w in self.workers), (door, self.workers)
        assert sorted(children(n.proc.pid)) == self.workers, f"{door}: a worker was replaced"
        served_correctly(n)
        resolves_over_grpc(n)
        resolves_over_dns(self.dns_port)
        rss = node_rss_mib(n)
        print(f"{door}: node RSS {rss:.0f} MiB (bound {self.rss_bound:.0f})")
        assert rss < self.rss_bound, f"{door}: RSS {rss:.0f} MiB over {self.rss_bound:.0f}"
        assert registry_digest(n) == self.rows, f"{door}: the registry changed"
        assert n.log_path is not None
        with n.log_path.open("rb") as f:
            f.seek(self.log_offset)
            logged = f.read().decode("utf-8", "replace")
        assert "Traceback" not in logged and " ERROR " not in logged, f"{door}:\n{logged[-4000:]}"


# --- the corpus and its mutations ----------------------------------------------------


def _request(op: int, body: object, rid: int) -> bytes:
    return encode(
        Message(
            op_code=op,
            body=body,  # type: ignore[arg-type]
            request_id=rid,
            expiration=int(time.time()) + 3600,
        )
    )


def corpus() -> list[bytes]:
    """Valid requests for every door, and the checked-in fuzz corpus."""
    v = (HandleValue(1, "URL", b"https://fuzz.example"), HandleValue(2, "EMAIL", b"a@b.c"))
    big = tuple(HandleValue(10 + k, "DESC", bytes([97 + k]) * 900) for k in range(4))
    out = [
        _request(OpCode.RESOLUTION, ResolutionRequest("88.166.1001/P-0", (), ()), 1),
        _request(OpCode.RESOLUTION, ResolutionRequest("88.166.1001/P-1", (1, 2), ()), 2),
        _request(OpCode.RESOLUTION, ResolutionRequest("88.166.1001/P-2", (), ("URL",)), 3),
        _request(OpCode.RESOLUTION, ResolutionRequest("0.NA/88.166", (300,), ("HS_ADMIN",)), 4),
        _request(OpCode.GET_SITE_INFO, GetSiteInfoRequest(""), 5),
        _request(OpCode.CREATE_HANDLE, CreateHandleRequest("88.166/FUZZ-1", v), 6),
        _request(OpCode.CREATE_HANDLE, CreateHandleRequest("88.166/FUZZ-BIG", big), 7),
        _request(OpCode.DELETE_HANDLE, DeleteHandleRequest("88.166.1001/P-3"), 8),
        _request(OpCode.ADD_VALUE, AddValueRequest("88.166.1001/P-4", v[1:]), 9),
        _request(OpCode.MODIFY_VALUE, ModifyValueRequest("88.166.1001/P-5", v[:1]), 10),
        _request(OpCode.REMOVE_VALUE, RemoveValueRequest("88.166.1001/P-6", (1,)), 11),
        _request(OpCode.LIST_HANDLES, ListHandlesRequest("0.NA/88.166"), 12),
        _request(OpCode.SESSION_SETUP, SessionSetupRequest(2, 60, "0.NA/88.166", 300), 13),
        _request(
            OpCode.SESSION_SETUP,
            SessionSetupRequest(4, 60, "0.NA/88.166", 300, public_key=b"\x00" * 64),
            14,
        ),
        _request(
            OpCode.CHALLENGE_RESPONSE,
            ChallengeAnswer("HS_SECKEY", "0.NA/88.166", 300, b"\x00\x00\x00\x01\x01" + b"x" * 20),
            15,
        ),
    ]
    out += [p.read_bytes() for p in sorted(CORPUS.glob("*.bin"))]
    return out


def _put_u32(b: bytearray, at: int, rng: random.Random) -> None:
    if at + 4 <= len(b):
        value = rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, len(b), len(b) + 1, rng.getrandbits(32)])
        b[at : at + 4] = struct.pack(">I", value)


def mutate(rng: random.Random, pool: list[bytes]) -> bytes:
    """One to three seeded mutations of a corpus message."""
    b = bytearray(rng.choice(pool))
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(7)
        if kind == 0 and b:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif kind == 1:  # insert bytes
            i = rng.randint(0, len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif kind == 2 and b:  # delete bytes
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 16)]
        elif kind == 3:  # a length field: the envelope's, the header's, or any u32
            _put_u32(b, rng.choice([16, 40, rng.randrange(max(1, len(b)))]), rng)
        elif kind == 4 and b:  # truncation
            del b[rng.randrange(len(b)) :]
        elif kind == 5 and b:  # duplication of a slice
            i = rng.randrange(len(b))
            j = min(len(b), i + rng.randint(1, 64))
            b[j:j] = b[i:j] * rng.randint(1, 4)
        else:  # splice with another message
            other = rng.choice(pool)
            b = b[: rng.randint(0, len(b))] + bytearray(other[rng.randint(0, len(other)) :])
    return bytes(b[:70_000])


# --- the doors -----------------------------------------------------------------------


def fuzz_udp(
    node: NodeProcess, rng: random.Random, pool: list[bytes], count: int
) -> tuple[int, int]:
    """Whole datagrams, and valid messages split into fragments with one mutated: how
    many messages went, and how many datagrams came back."""
    sent = answers = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        addr = ("127.0.0.1", node.handle_port)
        long = [w for w in pool if len(w) > 1500 and len(w) >= 20]
        while sent < count:
            if long and rng.random() < 0.1:
                grams = split_datagrams(rng.choice(long), payload_size=rng.choice([512, 1024]))
                i = rng.randrange(len(grams))
                grams[i] = mutate(rng, [grams[i]])
                if rng.random() < 0.3:
                    rng.shuffle(grams)
            else:
                grams = [mutate(rng, pool)]
            for g in grams:
                if not g:
                    continue
                try:
                    s.sendto(g[:65_000], addr)
                except (BlockingIOError, OSError):
                    time.sleep(0.001)
            sent += 1
            if sent % 50 == 0:  # drain answers, pace a little so the kernel keeps them
                answers += _drain(s)
                time.sleep(0.002)
        time.sleep(0.2)
        answers += _drain(s)
    return sent, answers


def _drain(s: socket.socket) -> int:
    n = 0
    while True:
        try:
            s.recv(65535)
            n += 1
        except (BlockingIOError, OSError):
            return n


def _tcp_exchange(node: NodeProcess, payload: bytes, port: int | None = None) -> int:
    """Send, half-close, read until the node closes (or 3 s): the bytes it answered."""
    got = 0
    with socket.create_connection(("127.0.0.1", port or node.handle_port), timeout=10) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(3)
            while data := s.recv(65536):
                got += len(data)
        except OSError:  # reset, timeout: the node may drop a hostile connection
            pass
    return got


def fuzz_tcp(
    node: NodeProcess, rng: random.Random, pool: list[bytes], count: int
) -> tuple[int, int]:
    """Batches on one connection: one mutated message; several pipelined (a valid one
    among them); unframed random bytes. How many went, and the bytes answered."""
    sent = answered = 0
    while sent < count:
        shape = rng.randrange(3)
        if shape == 0:
            batch = [mutate(rng, pool)]
        elif shape == 1:
            batch = [mutate(rng, pool) for _ in range(rng.randint(2, 10))]
            batch.insert(rng.randrange(len(batch)), pool[0])
        else:
            batch = [rng.randbytes(rng.randint(1, 300))]
        answered += _tcp_exchange(node, b"".join(batch))
        sent += len(batch)
    return sent, answered


def fuzz_http(node: NodeProcess, rng: random.Random, pool: list[bytes], count: int) -> int:
    for i in range(count):
        body = mutate(rng, pool) if i % 10 else rng.randbytes(rng.randint(0, 200))
        c = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=15)
        try:
            c.request("POST", "/", body=body, headers={"Content-Type": "application/x-hdl-message"})
            r = c.getresponse()
            r.read()
            assert r.status < 500, (r.status, body.hex())
        finally:
            c.close()
    return count


def fuzz_grpc(node: NodeProcess, rng: random.Random, count: int) -> int:
    pool = {
        m: (req.SerializeToString() if req is not None else b"") for m, req in GRPC_METHODS.items()
    }
    pool[GRPC_STREAM] = pb2.ResolveRequest(handle="88.166.1001/P-0").SerializeToString()
    methods = sorted(pool)
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}") as ch:
        for i in range(count):
            method = methods[i % len(methods)]
            seed = pool[method]
            body = (
                mutate(rng, [seed])
                if seed and rng.random() < 0.7
                else rng.randbytes(rng.randint(0, 64))
            )
            try:
                if method == GRPC_STREAM:  # no serializers: the bytes go as they are
                    for _ in ch.stream_stream(method)(iter([body, body]), timeout=10):
                        pass
                else:
                    ch.unary_unary(method)(body, timeout=10)
            except grpc.RpcError as err:
                code = err.code()
                assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED), (
                    method,
                    code,
                    err.details(),
                    body.hex(),
                )
    return count


def dns_corpus() -> list[bytes]:
    """Valid queries of every kind the DNS door answers, and the hostile packets."""
    z = DNS_ZONE
    names = [f"P-{i}.1001.166.88.{z}" for i in range(3)]
    names += [z, f"ns1.{z}", f"166.88.{z}", f"1001.166.88.{z}", f"nothing.166.88.{z}"]
    names += [f"mexc4yq._b32.166.88.{z}", f"x.99.{z}", "example.com."]
    out: list[bytes] = []
    for name in names:
        for rdtype in ("TXT", "URI", "NAPTR", "SOA", "NS", "A", "ANY"):
            for payload in (None, 512, 4096):
                q = dns.message.make_query(
                    name, rdtype, use_edns=payload is not None, payload=payload or 512
                )
                q.id = len(out)  # deterministic: the seed alone decides the run
                out.append(q.to_wire())
    return out + [packet for _, packet, _ in HOSTILE if len(packet) >= 12]


def fuzz_dns_udp(port: int, rng: random.Random, pool: list[bytes], count: int) -> int:
    """Mutated queries to the DNS UDP port: how many datagrams came back."""
    answers = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for sent in range(1, count + 1):
            try:
                s.sendto(mutate(rng, pool)[:65_000], ("127.0.0.1", port))
            except (BlockingIOError, OSError):
                time.sleep(0.001)
            if sent % 50 == 0:
                answers += _drain(s)
                time.sleep(0.002)
        time.sleep(0.2)
        answers += _drain(s)
    return answers


def _framed(b: bytes) -> bytes:
    return struct.pack(">H", min(len(b), 65_535)) + b[:65_535]


def fuzz_dns_tcp(
    node: NodeProcess, port: int, rng: random.Random, pool: list[bytes], count: int
) -> tuple[int, int]:
    """Connections with one framed mutated query; several pipelined (a valid one among
    them); one framed with a lying length prefix; unframed random bytes. How many
    connections, and the bytes answered."""
    answered = 0
    for _ in range(count):
        shape = rng.randrange(4)
        if shape == 0:
            payload = _framed(mutate(rng, pool))
        elif shape == 1:
            batch = [_framed(mutate(rng, pool)) for _ in range(rng.randint(2, 10))]
            batch.insert(rng.randrange(len(batch)), _framed(pool[0]))
            payload = b"".join(batch)
        elif shape == 2:
            b = mutate(rng, pool)
            payload = struct.pack(">H", rng.choice([0, 1, len(b) + 1, 65_535])) + b[:65_535]
        else:
            payload = rng.randbytes(rng.randint(1, 300))
        answered += _tcp_exchange(node, payload, port)
    return count, answered


# --- the tests -----------------------------------------------------------------------


def test_mutation_fuzz_of_the_dns_door(node: NodeProcess, dns_port: int) -> None:
    rng = random.Random(SEED)
    pool = dns_corpus()
    checks = Checks(node, dns_port)
    answers = fuzz_dns_udp(dns_port, rng, pool, DNS_UDP_COUNT)
    print(f"dns udp: {DNS_UDP_COUNT} mutated queries, {answers} datagrams answered")
    assert answers > 0
    checks.after("dns udp")
    sent, answered = fuzz_dns_tcp(node, dns_port, rng, pool, DNS_TCP_COUNT)
    print(f"dns tcp: {sent} connections, {answered} bytes answered")
    assert answered > 0
    checks.after("dns tcp")


def test_mutation_fuzz_of_every_door(node: NodeProcess, dns_port: int) -> None:
    rng = random.Random(SEED)
    pool = corpus()
    checks = Checks(node, dns_port)
    sent, answers = fuzz_udp(node, rng, pool, UDP_COUNT)
    print(f"udp: {sent} mutated messages, {answers} datagrams answered")
    assert sent == UDP_COUNT and answers > 0  # the node read them (some still parse)
    checks.after("udp")
    sent, answered = fuzz_tcp(node, rng, pool, TCP_COUNT)
    print(f"tcp: {sent} messages, {answered} bytes answered")
    assert sent >= TCP_COUNT and answered > 0
    checks.after("tcp")
    assert fuzz_http(node, rng, pool, HTTP_COUNT) == HTTP_COUNT
    checks.after("http tunnel")
    assert fuzz_grpc(node, rng, GRPC_COUNT) == GRPC_COUNT
    checks.after("grpc")


def test_corrupt_grpc_requests_get_invalid_argument(node: NodeProcess) -> None:
    """The inputs the fuzz found (tests/fuzz_corpus/grpc/<Service>.<Method>-*.bin):
    bytes that do not parse as the method's protobuf message once got UNKNOWN and a
    traceback at ERROR from grpc.aio; now INVALID_ARGUMENT, and nothing logged."""
    assert node.log_path is not None
    start = node.log_path.stat().st_size
    inputs = sorted((CORPUS / "grpc").glob("*.bin"))
    assert inputs
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}") as ch:
        for path in inputs:
            method = "/idnode.v1." + path.name.split("-", 1)[0].replace(".", "/")
            body = path.read_bytes()
            with pytest.raises(grpc.RpcError) as err:
                if method == GRPC_STREAM:
                    list(ch.stream_stream(method)(iter([body]), timeout=10))
                else:
                    ch.unary_unary(method)(body, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (path.name, err.value)
            assert "bad request" in str(err.value.details()), err.value
    with node.log_path.open("rb") as f:
        f.seek(start)
        logged = f.read().decode("utf-8", "replace")
    assert "Traceback" not in logged and " ERROR " not in logged, logged
