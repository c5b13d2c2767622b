"""The DNS gateway of a real `idnode serve --dns-port`: dnspython's resolver, dig and kdig
resolve registered handles; NXDOMAIN, NODATA, REFUSED, truncation and TCP, EDNS sizes,
the question's case, coherence with REST writes and the NS referral for a delegated
prefix."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from idnode.loadtest.processes import free_port
from idnode.resolver.client import AdminClient
from idnode.resolver.codec import (
    CreateHandleRequest,
    HandleValue,
    Interface,
    Message,
    OpCode,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    encode_site,
)
from tests.e2e.node_process import NodeProcess, init_registry

pytestmark = pytest.mark.e2e
SECRET = "S3cret-for-dns"
ZONE = "id.internal."
BIG = "x" * 120  # a value that makes the TXT answer of BIG-1 over 512 octets


class Gateway:
    def __init__(self, node: NodeProcess, port: int) -> None:
        self.node = node
        self.port = port

    def put(self, handle: str, values: list[dict[str, object]]) -> int:
        token = base64.b64encode(f"300%3A0.NA/88.166:{SECRET}".encode()).decode()
        req = urllib.request.Request(
            f"{self.node.http}/api/handles/{handle}",
            data=json.dumps({"values": values}).encode(),
            method="PUT",
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)

    def ask(
        self, name: str, rdtype: str, *, tcp: bool = False, payload: int | None = None
    ) -> dns.message.Message:
        q = dns.message.make_query(
            name, rdtype, use_edns=payload is not None, payload=payload or 1232
        )
        if tcp:
            return dns.query.tcp(q, "127.0.0.1", port=self.port, timeout=10)
        return dns.query.udp(q, "127.0.0.1", port=self.port, timeout=10, ignore_trailing=True)


def url(index: int, text: str) -> dict[str, object]:
    return {"index": index, "type": "URL", "data": {"format": "string", "value": text}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("dns")
    db, key, _ = init_registry(tmp, "dns", "--admin-secret", SECRET)
    port = free_port()
    node = NodeProcess(
        db,
        log=tmp / "dns.log",
        extra=("--secret-key-file", key, "--dns-port", str(port), "--dns-zone", ZONE),
    )
    try:
        node.wait_ready()
        g = Gateway(node, port)
        assert (
            g.put(
                "88.166/ABC-123",
                [
                    url(1, "https://example.com/abc"),
                    {
                        "index": 2,
                        "type": "EMAIL",
                        "data": {"format": "string", "value": "a@example.com"},
                    },
                    {
                        "index": 3,
                        "type": "SECRET",
                        "data": {"format": "string", "value": "hidden"},
                        "permissions": "1100",
                    },
                ],
            )
            == 201
        )
        assert g.put("88.166/a.b", [url(1, "https://example.com/a.b")]) == 201
        assert g.put("88.166/NOURL", [{"index": 1, "type": "DESC", "data": "plain text"}]) == 201
        assert (
            g.put("88.166/BIG-1", [url(i, f"https://example.com/{BIG}/{i}") for i in range(1, 6)])
            == 201
        )
        yield g
    finally:
        assert node.stop() == 0, node.log_text()


def test_dnspython_resolves_txt_uri_naptr(gw: Gateway) -> None:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = gw.port
    name = "ABC-123.166.88.id.internal."
    txt = sorted(b"".join(rd.strings).decode() for rd in r.resolve(name, "TXT"))
    # only the public values; SECRET has no PUBLIC_READ
    assert txt == ["1 URL https://example.com/abc", "2 EMAIL a@example.com"]
    (uri,) = r.resolve(name, "URI")
    assert uri.target == b"https://example.com/abc" and uri.priority == 1
    naptr = sorted((rd.service, rd.regexp) for rd in r.resolve(name, "NAPTR"))
    assert naptr == [
        (b"E2U+email", b"!^.*$!mailto:a@example.com!"),
        (b"E2U+url", b"!^.*$!https://example.com/abc!"),
    ]
    # an encoded suffix ("a.b" is not one label)
    (uri,) = r.resolve("mexge._b32.166.88.id.internal.", "URI")
    assert uri.target == b"https://example.com/a.b"


def test_rcodes_and_sections(gw: Gateway) -> None:
    m = gw.ask("nothing-here.166.88.id.internal.", "TXT")
    assert m.rcode() == dns.rcode.NXDOMAIN
    assert [x.rdtype for x in m.authority] == [dns.rdatatype.SOA]
    m = gw.ask("NOURL.166.88.id.internal.", "URI")  # known, no URL: NODATA
    assert m.rcode() == dns.rcode.NOERROR and not m.answer
    assert [x.rdtype for x in m.authority] == [dns.rdatatype.SOA]
    assert gw.ask("abc-123.166.88.example.", "TXT").rcode() == dns.rcode.REFUSED
    assert gw.ask("x.99.id.internal.", "TXT").rcode() == dns.rcode.REFUSED  # not homed here
    m = gw.ask(ZONE, "SOA")
    assert m.answer[0].rdtype == dns.rdatatype.SOA and m.flags & dns.flags.AA
    m = gw.ask(ZONE, "NS")
    assert m.answer[0][0].target == dns.name.from_text("ns1." + ZONE)
    assert m.additional and m.additional[0][0].address == "127.0.0.1"
    # the prefix's own subtree is an empty non-terminal: NODATA, not NXDOMAIN
    assert gw.ask("166.88.id.internal.", "TXT").rcode() == dns.rcode.NOERROR


def test_truncation_over_udp_and_the_full_answer_over_tcp(gw: Gateway) -> None:
    name = "BIG-1.166.88.id.internal."
    m = gw.ask(name, "TXT")  # no EDNS: 512 octets
    assert m.flags & dns.flags.TC and not m.answer
    m = gw.ask(name, "TXT", tcp=True)
    assert not m.flags & dns.flags.TC and len(m.answer[0]) == 5
    # EDNS: the client's buffer size is honoured (the URIs fit in 1232, not in 512)
    assert gw.ask(name, "URI", payload=512).flags & dns.flags.TC
    m = gw.ask(name, "URI", payload=1232)
    assert not m.flags & dns.flags.TC and len(m.answer[0]) == 5
    assert m.payload == 1232


def test_the_question_case_is_kept(gw: Gateway) -> None:
    name = "aBc-123.166.88.Id.InTeRnAl."
    m = gw.ask(name, "TXT")
    assert m.question[0].name.to_text() == name
    assert m.answer[0].name.to_text() == name


def test_malformed_and_odd_queries(gw: Gateway) -> None:
    q = dns.message.make_query("abc-123.166.88.id.internal.", "TXT")
    q.question.append(q.question[0])  # two questions
    m = dns.query.udp(q, "127.0.0.1", port=gw.port, timeout=10)
    assert m.rcode() == dns.rcode.FORMERR
    q = dns.message.make_query("abc-123.166.88.id.internal.", "TXT")
    q.set_opcode(dns.opcode.NOTIFY)
    m = dns.query.udp(q, "127.0.0.1", port=gw.port, timeout=10)
    assert m.rcode() == dns.rcode.NOTIMP
    # garbage after a readable header: FORMERR with the id; the node still answers after
    wire = q.to_wire()[:12] + b"\xff" * 5
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(wire, ("127.0.0.1", gw.port))
        reply = s.recv(512)
    assert reply[:2] == wire[:2] and reply[3] & 0xF == dns.rcode.FORMERR
    assert gw.ask("abc-123.166.88.id.internal.", "TXT").rcode() == dns.rcode.NOERROR


def test_a_rest_write_changes_the_answer_at_once(gw: Gateway) -> None:
    name = "CO-1.166.88.id.internal."
    assert gw.put("88.166/CO-1", [url(1, "https://example.com/one")]) == 201
    # asked twice (and in another case): the later ones come from the wire cache
    for asked in (name, name, name.lower()):
        assert gw.ask(asked, "URI").answer[0][0].target == b"https://example.com/one"
    assert gw.put("88.166/CO-1", [url(1, "https://example.com/two")]) in (200, 201, 204)
    assert gw.ask(name, "URI").answer[0][0].target == b"https://example.com/two"
    assert gw.ask(name, "URI").answer[0][0].target == b"https://example.com/two"


def test_a_repeated_query_gets_the_same_answer(gw: Gateway) -> None:
    """The second is the fast path's (wire bytes patched): the same answer to the byte,
    but for its id and the question's case; with and without EDNS."""
    for payload in (None, 1232):
        answers = []
        for n, name in enumerate(("ABC-123.166.88.id.internal.", "abc-123.166.88.ID.internal.")):
            q = dns.message.make_query(
                name, "TXT", use_edns=payload is not None, payload=payload or 1232
            )
            q.id = 1000 + n
            m = dns.query.udp(q, "127.0.0.1", port=gw.port, timeout=10)
            assert m.id == q.id and m.question[0].name.to_text() == name
            assert m.answer[0].name.to_text() == name
            answers.append(m)
        first, second = answers
        assert second.rcode() == first.rcode() == dns.rcode.NOERROR
        assert second.flags == first.flags and second.payload == first.payload
        assert [(r.rdtype, r.ttl, set(r)) for r in first.answer] == [
            (r.rdtype, r.ttl, set(r)) for r in second.answer
        ]


def test_a_delegated_prefix_gets_an_ns_referral(gw: Gateway) -> None:
    site = SiteInfo(
        (ServerInfo.at("127.0.0.9", 1, (Interface(1, 0, 2641),)),),
    )
    value = HandleValue(1, "HS_SITE", encode_site(site))
    with AdminClient(gw.node.server, "0.NA/88.166", 300, secret=SECRET.encode()) as c:
        body = CreateHandleRequest("0.NA/88.166.7", (value,))
        rc = c.request(Message(op_code=OpCode.CREATE_HANDLE, body=body))[-1].response_code
    assert rc == ResponseCode.SUCCESS
    for name in ("x.7.166.88.id.internal.", "7.166.88.id.internal."):
        m = gw.ask(name, "TXT")
        assert m.rcode() == dns.rcode.NOERROR and not m.answer, m
        assert not m.flags & dns.flags.AA
        (ns,) = m.authority
        assert ns.name == dns.name.from_text("7.166.88.id.internal.")
        host = ns[0].target
        assert host == dns.name.from_text("ns1._ns.7.166.88.id.internal.")
        assert [(g.name, g[0].address) for g in m.additional] == [(host, "127.0.0.9")]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (scripts/test installs dnsutils, knot-dnsutils)")
    return path


def run(*args: str) -> str:
    p = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    return p.stdout


@pytest.mark.parametrize("client", ["dig", "kdig"])
def test_dig_and_kdig(gw: Gateway, client: str) -> None:
    exe = tool(client)
    at = ["@127.0.0.1", "-p", str(gw.port)]
    out = run(exe, *at, "ABC-123.166.88.id.internal.", "TXT")
    assert "NOERROR" in out and '"1 URL https://example.com/abc"' in out
    out = run(exe, *at, "ABC-123.166.88.id.internal.", "URI")
    assert '"https://example.com/abc"' in out
    assert "SOA" in run(exe, *at, ZONE, "SOA")
    assert "ns1.id.internal." in run(exe, *at, ZONE, "NS")
    out = run(exe, *at, "nothing.166.88.id.internal.", "TXT")
    assert "NXDOMAIN" in out and "SOA" in out.split("AUTHORITY SECTION")[1]
    out = run(exe, *at, "NOURL.166.88.id.internal.", "URI")
    assert "NOERROR" in out and "ANSWER: 0" in out.replace("ANSWER: 0,", "ANSWER: 0")
    assert "REFUSED" in run(exe, *at, "x.example.", "TXT")
    out = run(exe, *at, "+noedns", "+ignore", "BIG-1.166.88.id.internal.", "TXT")
    assert " tc" in out or "TC" in out
    out = run(exe, *at, "+tcp", "BIG-1.166.88.id.internal.", "TXT")
    assert out.count("https://example.com/") == 5


def test_options_are_documented(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "--dns-port" in readme and "_b32" in readme
