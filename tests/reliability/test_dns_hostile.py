"""Hostile DNS clients against the DNS gateway of a real `idnode serve` (issue 14).

Hand-written malformed packets over UDP and TCP (compression loops, pointers past the
end, over-long labels and names, absurd counts, several questions, truncated headers,
odd EDNS, zone transfers, responses sent as queries, TCP length prefixes that lie): each
gets FORMERR (when its header is readable) or silence, never a crash or a stall, and the
node answers a valid query right after. And amplification: a source that is not exempt
from the rate limit (the node runs with ``--udp-rrl-exempt ::1/128`` and each test sends
from its own 127.x network) never gets a UDP answer larger than its query allows (TC
without EDNS, at most 1232 octets with it), and a burst beyond the rate limit's budget
(set low here) gets slips or nothing: the bytes it is sent are bounded by the budget.

Bounds are asserted, never times. The mutation fuzz of the DNS door is in
test_mutation_fuzz.py, with every other door's.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from idnode.loadtest.processes import free_port
from tests.e2e.node_process import NodeProcess, init_registry
from tests.reliability.nodes import alive, children, flood, import_rows, node_rss_mib

pytestmark = pytest.mark.e2e

ZONE = "id.internal."
SMALL = "P-1.1001.166.88.id.internal."  # 88.166.1001/P-1: one URL value
MID = "MID.1001.166.88.id.internal."  # 88.166.1001/MID: TXT of about 1,100 octets
LARGE = "LARGE.1001.166.88.id.internal."  # 88.166.1001/LARGE: TXT of about 4 KB
RRL_BYTES = 20_000  # the node's UDP budget per source network and worker, bytes/s
RRL_BURST = 2 * RRL_BYTES
WORKERS = 2
UDP_CAP = 1232
SLIP_SIZE = 12  # a slip: the header alone, TC set
WAIT = 1.0  # how long a hostile packet's answer is waited for before it counts as silence


class Dns:
    def __init__(self, node: NodeProcess, port: int) -> None:
        self.node = node
        self.port = port
        self.addr = ("127.0.0.1", port)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dns]:
    tmp = tmp_path_factory.mktemp("dnshostile")
    db, key, _ = init_registry(tmp, "dnsh")

    def url(i: int, text: str) -> dict[str, object]:
        return {"index": i, "type": "URL", "data": {"format": "string", "value": text}}

    rows = [
        {"handle": f"88.166.1001/P-{i}", "values": [url(1, f"https://e.example/{i}")]}
        for i in range(10)
    ]
    rows.append(
        {
            "handle": "88.166.1001/MID",
            "values": [
                {"index": i, "type": "DESC", "data": f"{i:03d}" + "m" * 90} for i in range(1, 10)
            ],
        }
    )
    rows.append(
        {
            "handle": "88.166.1001/LARGE",
            "values": [url(i, f"https://e.example/{i:03d}/" + "l" * 100) for i in range(1, 31)],
        }
    )
    import_rows(tmp / "in.jsonl", rows, db)
    port = free_port()
    # Loopback is not exempt from the rate limit here (only ::1), its budget is small,
    # and a TCP query slow to arrive is given up after a second.
    node = NodeProcess(
        db,
        workers=WORKERS,
        log=tmp / "node.log",
        extra=(
            "--secret-key-file",
            key,
            "--dns-port",
            str(port),
            "--dns-zone",
            ZONE,
            "--udp-rrl-exempt",
            "::1/128",
            "--udp-rrl-bytes",
            str(RRL_BYTES),
            "--tcp-slow-timeout",
            "1",
            "--tcp-idle-timeout",
            "3",
        ),
    )
    try:
        node.wait_ready()
        yield Dns(node, port)
    finally:
        assert node.stop() == 0, node.log_text()
    logged = node.log_text()
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-4000:]


# --- packets -------------------------------------------------------------------------


def header(
    qid: int, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def wire_name(text: str) -> bytes:
    wire = dns.name.from_text(text).to_wire()
    assert wire is not None
    return wire


def question(name: bytes, qtype: int = dns.rdatatype.TXT, qclass: int = 1) -> bytes:
    return name + struct.pack(">HH", qtype, qclass)


def opt(size: int) -> bytes:
    return b"\x00" + struct.pack(">HHIH", dns.rdatatype.OPT, size, 0, 0)


def query(name: str, rdtype: str = "TXT", payload: int | None = None) -> dns.message.Message:
    return dns.message.make_query(
        name, rdtype, use_edns=payload is not None, payload=payload or 512
    )


# (name, packet, what it gets: "formerr" or "silence")
Q = question(wire_name(SMALL))
TXT_OPT_HDR = header(0, ar=1)
HOSTILE: list[tuple[str, bytes, str]] = [
    ("pointer to itself", header(1) + b"\xc0\x0c" + struct.pack(">HH", 16, 1), "formerr"),
    (
        "two pointers to each other",
        header(2) + b"\xc0\x0e\xc0\x0c" + struct.pack(">HH", 16, 1),
        "formerr",
    ),
    (
        "a label then a pointer to it",
        header(3) + b"\x01a\xc0\x0c" + struct.pack(">HH", 16, 1),
        "formerr",
    ),
    ("pointer past the end", header(4) + b"\xc0\xff" + struct.pack(">HH", 16, 1), "formerr"),
    (
        "a label of 64 octets",
        header(5) + b"\x40" + b"a" * 64 + wire_name(ZONE) + struct.pack(">HH", 16, 1),
        "formerr",
    ),
    (
        "a label of 255 octets",
        header(6) + b"\xff" + b"a" * 255 + b"\x00" + struct.pack(">HH", 16, 1),
        "formerr",
    ),
    (
        "a name over 255 octets",
        header(7) + (b"\x3f" + b"a" * 63) * 4 + wire_name(ZONE) + struct.pack(">HH", 16, 1),
        "formerr",
    ),
    ("QDCOUNT=0", header(8, qd=0), "formerr"),
    ("QDCOUNT=0 with a question after", header(9, qd=0) + Q, "formerr"),
    ("QDCOUNT=2, one question", header(10, qd=2) + Q, "formerr"),
    ("QDCOUNT=65535, one question", header(11, qd=65535) + Q, "formerr"),
    ("two questions", header(12, qd=2) + Q + Q, "formerr"),
    ("ANCOUNT=65535", header(13, an=65535) + Q, "formerr"),
    ("NSCOUNT=65535", header(14, ns=65535) + Q, "formerr"),
    ("ARCOUNT=65535", header(15, ar=65535) + Q, "formerr"),
    ("all counts 65535", header(16, qd=65535, an=65535, ns=65535, ar=65535) + Q, "formerr"),
    ("a question cut short", header(17) + Q[:-3], "formerr"),
    ("two OPT records", header(18, ar=2) + Q + opt(4096) + opt(512), "formerr"),
    ("an OPT record in the answer section", header(19, an=1) + Q + opt(4096), "formerr"),
    (
        "an OPT with a rdlength past the end",
        header(20, ar=1) + Q + opt(4096)[:-2] + b"\xff\xff",
        "formerr",
    ),
    ("garbage after a readable header", header(21) + b"\xff" * 40, "formerr"),
    ("empty", b"", "silence"),
    ("one byte", b"\x00", "silence"),
    ("a header cut at 11 bytes", header(22)[:11], "silence"),
    ("a response (QR set)", header(23, flags=0x8180) + Q, "silence"),
    ("a response with garbage", header(24, flags=0x8000) + b"\xff" * 20, "silence"),
    (
        "a response with a pointer loop",
        header(25, flags=0x8000) + b"\xc0\x0c\x00\x10\x00\x01",
        "silence",
    ),
]


def recv_one(s: socket.socket, wait: float) -> bytes | None:
    s.settimeout(wait)
    try:
        return s.recv(65535)
    except TimeoutError:
        return None


def check_reply(name: str, packet: bytes, expect: str, reply: bytes | None) -> None:
    if expect == "silence":
        assert reply is None, (name, reply)
        return
    assert reply is not None, f"{name}: no FORMERR"
    assert reply[:2] == packet[:2], (name, reply)
    assert reply[2] & 0x80, (name, reply)  # a response
    assert reply[3] & 0xF == dns.rcode.FORMERR, (name, reply)
    assert len(reply) <= max(len(packet), 12) + 11, (name, len(reply), len(packet))


def udp_socket(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((host, 0))
    return s


def resolves(gw: Dns, source: str = "127.0.0.1") -> None:
    """A well-behaved dnspython client gets the URI of 88.166.1001/P-1 (over TCP when
    the UDP answer is a slip)."""
    m = dns.query.udp_with_fallback(
        query(SMALL, "URI", payload=1232), "127.0.0.1", port=gw.port, timeout=10, source=source
    )[0]
    assert m.rcode() == dns.rcode.NOERROR, m
    assert [r.target for r in m.answer[0]] == [b"https://e.example/1"], m


def node_intact(gw: Dns, workers: list[int]) -> None:
    n = gw.node
    assert n.proc.poll() is None, n.log_text()
    assert all(alive(w) for w in workers), workers
    assert sorted(children(n.proc.pid)) == workers, "a worker was replaced"
    logged = n.log_text()
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-4000:]


# --- malformed packets ---------------------------------------------------------------


@pytest.mark.parametrize("name,packet,expect", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_malformed_udp_packet_gets_formerr_or_silence(
    gw: Dns, name: str, packet: bytes, expect: str
) -> None:
    with udp_socket("127.0.7.1") as s:
        s.sendto(packet, gw.addr)
        reply = recv_one(s, 10.0 if expect == "formerr" else WAIT)
    check_reply(name, packet, expect, reply)
    resolves(gw, "127.0.7.1")


def test_malformed_packets_over_one_tcp_connection(gw: Dns) -> None:
    """Every hostile packet framed on one connection: FORMERR or nothing for each, and a
    valid query after them on the same connection is answered."""
    workers = sorted(children(gw.node.proc.pid))
    with socket.create_connection(gw.addr, timeout=10) as s:
        f = s.makefile("rb")
        for name, packet, expect in HOSTILE:
            valid = query(SMALL, "URI")
            s.sendall(struct.pack(">H", len(packet)) + packet)
            s.sendall(struct.pack(">H", len(valid.to_wire())) + valid.to_wire())
            first = _read_frame(f)
            if expect == "formerr":
                check_reply(name, packet, expect, first)
                first = _read_frame(f)
            m = dns.message.from_wire(first)
            assert m.id == valid.id and m.rcode() == dns.rcode.NOERROR, (name, m)
    node_intact(gw, workers)


def _read_frame(f: object) -> bytes:
    head = f.read(2)  # type: ignore[attr-defined]
    assert len(head) == 2, "the node closed the connection"
    n = int.from_bytes(head, "big")
    data: bytes = f.read(n)  # type: ignore[attr-defined]
    assert len(data) == n
    return data


def _tcp(gw: Dns, payload: bytes, *, then: bytes = b"") -> tuple[list[bytes], bool]:
    """Send ``payload`` and ``then`` on a new connection, without closing ours: the
    frames answered, and whether the node closed the connection (within 30 s)."""
    frames: list[bytes] = []
    buf = b""
    closed = False
    with socket.create_connection(gw.addr, timeout=10) as s:
        s.sendall(payload + then)
        s.settimeout(30)
        while True:
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            buf += data
            while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
                n = int.from_bytes(buf[:2], "big")
                frames.append(buf[2 : 2 + n])
                buf = buf[2 + n :]
            if then and frames and dns.message.from_wire(frames[-1]).rcode() == 0:
                break
    return frames, closed


def test_a_tcp_length_prefix_larger_than_the_data_then_a_stall_is_closed(gw: Dns) -> None:
    workers = sorted(children(gw.node.proc.pid))
    packet = query(SMALL).to_wire()
    frames, closed = _tcp(gw, struct.pack(">H", len(packet) + 100) + packet)
    assert frames == [] and closed, frames  # the slow timeout closed it
    frames, closed = _tcp(gw, struct.pack(">H", 65535) + packet)
    assert frames == [] and closed, frames
    frames, closed = _tcp(gw, b"\x00")  # half a length prefix: the idle timeout
    assert frames == [] and closed, frames
    resolves(gw)
    node_intact(gw, workers)


def test_tcp_length_zero_and_65535_octets_of_garbage(gw: Dns) -> None:
    valid = query(SMALL, "URI")
    v = valid.to_wire()
    frames, _ = _tcp(gw, b"\x00\x00", then=struct.pack(">H", len(v)) + v)
    assert [dns.message.from_wire(x).id for x in frames] == [valid.id], frames
    garbage = bytes((i * 7919 + 13) % 256 for i in range(65535))
    garbage = b"\x12\x34\x01\x00" + garbage[4:]  # a readable header, QR clear
    frames, _ = _tcp(gw, b"\xff\xff" + garbage, then=struct.pack(">H", len(v)) + v)
    assert len(frames) == 2, frames
    check_reply("65535 garbage", garbage, "formerr", frames[0])
    assert dns.message.from_wire(frames[1]).id == valid.id
    qr = b"\x12\x34\x81\x00" + garbage[4:]  # the same as a response: silence
    frames, _ = _tcp(gw, b"\xff\xff" + qr, then=struct.pack(">H", len(v)) + v)
    assert [dns.message.from_wire(x).id for x in frames] == [valid.id], frames


# --- odd but well-formed queries -----------------------------------------------------


def test_odd_queries(gw: Dns) -> None:
    src = "127.0.8.1"

    def ask(q: dns.message.Message, tcp: bool = False) -> dns.message.Message:
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=gw.port, timeout=10, source=src)
        return dns.query.udp(q, "127.0.0.1", port=gw.port, timeout=10, source=src)

    # an unknown class, and CHAOS: REFUSED (this node serves IN)
    for rdclass in (0x1234, 3, 254):
        q = dns.message.make_query(SMALL, "TXT", rdclass=dns.rdataclass.RdataClass.make(rdclass))
        assert ask(q).rcode() == dns.rcode.REFUSED, rdclass
    # zone transfers are not served, over either transport: REFUSED
    for rdtype in ("AXFR", "IXFR"):
        for name in (ZONE, SMALL, "1001.166.88." + ZONE):
            for tcp in (False, True):
                m = ask(dns.message.make_query(name, rdtype), tcp)
                assert m.rcode() == dns.rcode.REFUSED, (rdtype, name, tcp, m)
                assert not m.answer, m
    # ANY: the handle's TXT, URI and NAPTR, within the UDP limit as every answer
    m = ask(query(SMALL, "ANY"))
    assert m.rcode() == dns.rcode.NOERROR and {r.rdtype for r in m.answer} == {
        dns.rdatatype.TXT,
        dns.rdatatype.URI,
        dns.rdatatype.NAPTR,
    }, m
    with udp_socket(src) as s:
        s.sendto(query(LARGE, "ANY").to_wire(), gw.addr)
        reply = recv_one(s, 10)
    assert reply is not None and len(reply) <= 512
    assert dns.message.from_wire(reply).flags & dns.flags.TC
    # OPT with a zero or huge UDP size: 512 and 1232 octets at most
    for size, cap in ((0, 512), (1, 512), (65535, UDP_CAP)):
        packet = header(0x4242, ar=1) + question(wire_name(LARGE)) + opt(size)
        with udp_socket(src) as s:
            s.sendto(packet, gw.addr)
            reply = recv_one(s, 10)
        assert reply is not None and len(reply) <= cap, (size, reply)
        m = dns.message.from_wire(reply)
        assert m.id == 0x4242 and m.flags & dns.flags.TC and not m.answer, (size, m)


# --- amplification -------------------------------------------------------------------


def test_a_small_query_gets_no_large_udp_answer(gw: Dns) -> None:
    src = "127.0.5.1"
    ratios = {}
    # Three rounds: the later ones are answered by the fast path (dns_fast.py), whose
    # wire cache then holds MID's whole answer of about 1,100 octets, which a query
    # without EDNS or with a 512-octet buffer must still not get.
    for name, rdtype, payload, cap in 3 * (
        (LARGE, "TXT", None, 512),
        (LARGE, "ANY", None, 512),
        (MID, "TXT", None, 512),
        (LARGE, "TXT", 4096, UDP_CAP),
        (LARGE, "TXT", 65535, UDP_CAP),
        (MID, "TXT", 4096, UDP_CAP),
        (MID, "TXT", 512, 512),
        (MID, "TXT", 0, 512),
    ):
        q = query(name, rdtype, payload)
        wire = q.to_wire()
        with udp_socket(src) as s:
            s.sendto(wire, gw.addr)
            reply = recv_one(s, 10)
        assert reply is not None, (name, rdtype, payload)
        m = dns.message.from_wire(reply)
        ratios[(name.split(".")[0], rdtype, payload)] = round(len(reply) / len(wire), 2)
        assert len(reply) <= cap, (name, rdtype, payload, len(reply))
        if payload is None:
            # without EDNS: TC, no records, the query's own size
            assert m.flags & dns.flags.TC and not m.answer and not m.additional, m
            assert len(reply) <= len(wire), (len(reply), len(wire))
    print("answer/query size ratios:", ratios)
    # the whole answer over TCP, where the source is verified
    m = dns.query.tcp(query(LARGE), "127.0.0.1", port=gw.port, timeout=10, source=src)
    assert len(m.answer[0]) == 30


def test_a_burst_past_the_rate_limit_gets_slips_or_nothing(gw: Dns) -> None:
    """600 queries claiming one source, each for an answer of about 1,100 octets (660 KB
    unlimited): what reaches the source is bounded by the budget of each worker (its
    burst and rate over the time taken) plus 12-octet slips."""
    q = query(MID, "TXT", 4096)
    wire = q.to_wire()
    with udp_socket("127.0.6.1") as probe:  # another network: its own budget
        probe.sendto(wire, gw.addr)
        one = recv_one(probe, 10)
    assert one is not None and 900 < len(one) <= UDP_CAP, one
    assert not dns.message.from_wire(one).flags & dns.flags.TC
    n = int(os.environ.get("IDNODE_DNS_BURST", "600"))
    victim = udp_socket("127.0.9.1")
    victim.setblocking(False)
    received = slips = full = 0

    def drain() -> None:
        nonlocal received, slips, full
        while True:
            try:
                data = victim.recv(65535)
            except BlockingIOError:
                return
            received += len(data)
            if len(data) == SLIP_SIZE and data[2] & 0x02:
                slips += 1
            elif len(data) > 900:
                full += 1

    start = time.monotonic()
    flood(victim, wire, gw.addr, n, drain)
    elapsed = time.monotonic() - start
    victim.close()
    sent = n * len(wire)
    bound = WORKERS * (RRL_BURST + RRL_BYTES * elapsed) + n * SLIP_SIZE
    print(
        f"burst: {n} queries, {sent} bytes in, {received} bytes out "
        f"(ratio {received / sent:.2f}; unlimited {n * len(one) / sent:.2f}), "
        f"{full} full answers, {slips} slips, {elapsed:.1f} s; bound {bound:.0f}"
    )
    assert received <= bound, (received, bound)
    assert slips > 0, "no slip reached a limited source"
    assert received / sent <= bound / sent
    resolves(gw, "127.0.10.1")  # another network is not limited by this one's budget


def test_the_node_is_whole_after_all_this(gw: Dns) -> None:
    workers = sorted(children(gw.node.proc.pid))
    assert len(workers) >= WORKERS
    resolves(gw)
    rss = node_rss_mib(gw.node)
    print(f"node RSS {rss:.0f} MiB")
    assert rss < 1024, rss
    node_intact(gw, workers)
