"""DNS records out of handle values (resolver/dns_answers.py): what each type holds,
TTLs, public values only, truncation and the header-only FORMERR."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype as T

from idnode.resolver.codec import (
    HandleValue,
    Interface,
    ServerInfo,
    SiteInfo,
    encode_site,
    encode_values,
)
from idnode.resolver.dns_answers import (
    Zone,
    header_error,
    records,
    referral,
    response,
    to_wire,
    udp_limit,
)

OWNER = dns.name.from_text("abc.166.88.id.internal.")


def wire(*values: HandleValue) -> bytes:
    return encode_values(list(values))


def test_txt_uri_naptr_and_ttls() -> None:
    vals = wire(
        HandleValue(1, "URL", b"https://example.com/a", ttl=300),
        HandleValue(2, "EMAIL", b"a@example.com", ttl=60),
        HandleValue(3, "BLOB", b"\x00\x01\xff"),
        HandleValue(4, "SECRET", b"no", permissions=0),  # not publicly readable
    )
    (txt,) = records(OWNER, vals, T.TXT)
    assert sorted(b"".join(rd.strings) for rd in txt) == [
        b"1 URL https://example.com/a",
        b"2 EMAIL a@example.com",
        b"3 BLOB base64:AAH/",
    ]
    assert txt.ttl == 60  # the smallest of the values'
    (uri,) = records(OWNER, vals, T.URI)
    assert [(rd.priority, rd.target) for rd in uri] == [(1, b"https://example.com/a")]
    assert uri.ttl == 300
    (naptr,) = records(OWNER, vals, T.NAPTR)
    assert sorted((rd.flags, rd.service, rd.regexp) for rd in naptr) == [
        (b"u", b"E2U+email", b"!^.*$!mailto:a@example.com!"),
        (b"u", b"E2U+url", b"!^.*$!https://example.com/a!"),
    ]
    assert [r.rdtype for r in records(OWNER, vals, T.ANY)] == [T.TXT, T.URI, T.NAPTR]
    assert records(OWNER, vals, T.MX) == []


def test_long_values_are_cut_at_255_octets() -> None:
    (txt,) = records(OWNER, wire(HandleValue(1, "DESC", b"y" * 600)), T.TXT)
    (rd,) = txt
    assert [len(s) for s in rd.strings] == [255, 255, len("1 DESC ") + 600 - 510]


def test_a_url_with_the_delimiter_gets_another() -> None:
    (naptr,) = records(OWNER, wire(HandleValue(1, "URL", b"https://x/!a")), T.NAPTR)
    assert naptr[0].regexp == b"|^.*$|https://x/!a|"


def test_referral_names_one_server_per_address_with_glue() -> None:
    site = SiteInfo(
        (
            ServerInfo.at("192.0.2.1", 1, (Interface(1, 0, 2641),)),
            ServerInfo.at("2001:db8::1", 2, (Interface(1, 0, 2641),)),
        )
    )
    cut = dns.name.from_text("7.166.88.id.internal.")
    ns, a, aaaa = referral(cut, wire(HandleValue(1, "HS_SITE", encode_site(site))))
    assert [rd.target.to_text() for rd in ns] == [
        "ns1._ns.7.166.88.id.internal.",
        "ns2._ns.7.166.88.id.internal.",
    ]
    assert (a.rdtype, a[0].address) == (T.A, "192.0.2.1")
    assert (aaaa.rdtype, aaaa[0].address) == (T.AAAA, "2001:db8::1")
    assert referral(cut, wire(HandleValue(1, "URL", b"x"))) == []


def test_truncation_and_edns_sizes() -> None:
    q = dns.message.make_query(OWNER, "TXT", use_edns=0, payload=4096)
    assert udp_limit(q) == 1232
    assert udp_limit(dns.message.make_query(OWNER, "TXT")) == 512
    assert udp_limit(dns.message.make_query(OWNER, "TXT", use_edns=0, payload=100)) == 512
    r = response(q)
    r.answer.extend(records(OWNER, wire(HandleValue(1, "DESC", b"z" * 2000)), T.TXT))
    out = dns.message.from_wire(to_wire(r, 512))
    assert out.flags & dns.flags.TC and not out.answer
    assert out.question[0].name == OWNER and out.edns == 0


def test_zone_apex_and_header_errors() -> None:
    z = Zone.of("id.internal.", "127.0.0.1", negative_ttl=7)
    (soa,) = z.soa()
    assert soa.minimum == 7 and soa.mname.to_text() == "ns1.id.internal."
    assert soa.rname.to_text() == "hostmaster.id.internal."
    q = dns.message.make_query(OWNER, "TXT").to_wire()
    err = header_error(q[:12] + b"\xff", dns.rcode.FORMERR)
    assert err is not None and err[:2] == q[:2] and err[3] & 0xF == dns.rcode.FORMERR
    assert err[2] & 0x80  # a response
    assert header_error(b"\x00" * 5, dns.rcode.FORMERR) is None  # no header: silence
    assert header_error(err, dns.rcode.FORMERR) is None  # a response: silence
