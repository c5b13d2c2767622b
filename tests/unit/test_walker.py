"""The upstream walker against small in-process Handle servers on loopback (each answers
as a test tells it): referrals with and without sites, the referral bound, loops,
UDP -> TCP, a dead server, the site cache, certified answers. Outcomes are asserted,
never durations. The walk through real idnode nodes is tests/e2e/test_upstream_walk.py."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import pytest

from idnode.loadtest.processes import free_port
from idnode.registry.server_key import ServerKey
from idnode.resolver.codec import (
    Body,
    ErrorResponse,
    FrameBuffer,
    HandleValue,
    Interface,
    Message,
    OpFlag,
    ReferralResponse,
    ResolutionRequest,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    decode,
    encode,
    encode_site,
    split_datagrams,
)
from idnode.resolver.codec.credential import encode_credential, signed_prefix
from idnode.resolver.codec.message import header_and_body, response_to, with_credential
from idnode.resolver.upstream.walker import Hop, SiteCache, Walker, WalkError

Reply = Callable[[Message, str], Message]


@dataclass
class Fake:
    """A Handle server on 127.0.0.1 (UDP and TCP on one port) answering with ``reply``."""

    reply: Reply
    key: ServerKey | None = None  # sign answers asked with CT
    port: int = 0
    asked: list[tuple[str, str]] = field(default_factory=list)  # (transport, handle)
    udp: bool = True
    tcp: bool = True

    def site(self, **kw: object) -> SiteInfo:
        ifaces = []
        if self.tcp:
            ifaces.append(Interface(3, 1, self.port))
        if self.udp:
            ifaces.append(Interface(2, 0, self.port))
        pub = self.key.public_data if self.key else b""
        server = ServerInfo.at("127.0.0.1", 1, tuple(ifaces), pub)
        return SiteInfo((server,), **kw)  # type: ignore[arg-type]

    def answer(self, wire: bytes, transport: str) -> bytes:
        req = decode(wire)
        assert isinstance(req.body, ResolutionRequest)
        self.asked.append((transport, req.body.handle))
        out = encode(self.reply(req, transport))
        if self.key is not None and req.has(OpFlag.CT):
            version = (out[0], out[1])
            data = signed_prefix(
                max(version, (2, 10)), version, version, 0, req.request_id, 0
            ) + header_and_body(out)
            out = with_credential(out, encode_credential(self.key.credential(data)))
        return out


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, fake: Fake) -> None:
        self.fake = fake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        for gram in split_datagrams(self.fake.answer(data, "udp")):
            self.transport.sendto(gram, addr)


async def _serve(fakes: list[Fake], body: Callable[[], Awaitable[None]]) -> None:
    closers: list[Callable[[], object]] = []
    loop = asyncio.get_running_loop()
    for f in fakes:
        f.port = free_port()
        if f.udp:
            t, _ = await loop.create_datagram_endpoint(
                functools.partial(_Udp, f), local_addr=("127.0.0.1", f.port)
            )
            closers.append(t.close)
        if f.tcp:

            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, f: Fake = f) -> None:
                fb = FrameBuffer()
                while data := await r.read(65536):
                    for frame in fb.feed(data):
                        w.write(f.answer(frame, "tcp"))
                w.close()

            srv = await asyncio.start_server(handle, "127.0.0.1", f.port)
            closers.append(srv.close)
    try:
        await body()
    finally:
        for c in closers:
            c()


def run(fakes: list[Fake], body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(_serve(fakes, body))


def url(handle: str) -> Reply:
    """Answers any handle asked (named as asked) with ``handle``'s URL value."""
    values = (HandleValue(1, "URL", f"https://example.com/{handle}".encode()),)

    def reply(req: Message, _t: str) -> Message:
        assert isinstance(req.body, ResolutionRequest)
        return response_to(req, ResponseCode.SUCCESS, ResolutionResponse(req.body.handle, values))

    return reply


def refer(rc: int, target: str, to: Callable[[], SiteInfo | None]) -> Reply:
    """A referral to the site ``to()`` gives (in the body), or without sites when None."""

    def reply(req: Message, _t: str) -> Message:
        site = to()
        values = None if site is None else (HandleValue(1, "HS_SITE", encode_site(site)),)
        return response_to(req, rc, ReferralResponse(target, values))

    return reply


def site_of(
    handle: str,
    kind: str,
    to: Callable[[], Fake],
    otherwise: tuple[int, Body] = (ResponseCode.HANDLE_NOT_FOUND, ErrorResponse("")),
) -> Reply:
    """Answers ``handle`` with one ``kind`` value (HS_SITE, HS_NA_DELEGATE) holding the
    site of ``to()``; any other handle with ``otherwise`` (response code, body)."""

    def reply(req: Message, _t: str) -> Message:
        assert isinstance(req.body, ResolutionRequest)
        if req.body.handle == handle:
            v = HandleValue(1, kind, encode_site(to().site()))
            return response_to(req, ResponseCode.SUCCESS, ResolutionResponse(handle, (v,)))
        return response_to(req, *otherwise)

    return reply


def test_follows_referrals_with_sites_in_the_body() -> None:
    end = Fake(url("88.166/x"))
    middle = Fake(refer(ResponseCode.PREFIX_REFERRAL, "0.NA/88.166", lambda: end.site()))
    first = Fake(refer(ResponseCode.SERVICE_REFERRAL, "0.NA/88", lambda: middle.site()))
    hops: list[Hop] = []

    async def body() -> None:
        w = Walker([first.site()], timeout=2)
        r = await w.resolve_at(w.roots, "88.166/x", trace=hops.append)
        assert r.message.response_code == ResponseCode.SUCCESS
        assert isinstance(r.message.body, ResolutionResponse)
        assert r.message.body.values[0].data == b"https://example.com/88.166/x"
        assert r.server.interfaces[0].port == end.port

    run([end, middle, first], body)
    assert [h.response_code for h in hops] == [302, 303, 1]
    assert "referral to 0.NA/88" in str(hops[0]) and hops[0].transport == "udp"
    assert first.asked == middle.asked == end.asked == [("udp", "88.166/x")]


def test_a_referral_without_sites_resolves_its_handle() -> None:
    """302 with only a referral handle: that handle's HS_SITE values are the sites."""
    end = Fake(url("88.166/x"))
    referral = (ResponseCode.SERVICE_REFERRAL, ReferralResponse("0.NA/SERVICE"))
    start = Fake(site_of("0.NA/SERVICE", "HS_SITE", lambda: end, referral))

    async def body() -> None:
        w = Walker([start.site()])
        r = await w.resolve_at(w.roots, "88.166/x")
        assert r.message.response_code == ResponseCode.SUCCESS

    run([end, start], body)
    assert start.asked == [("udp", "88.166/x"), ("udp", "0.NA/SERVICE")]


def test_a_referral_loop_ends_in_a_clear_error() -> None:
    me = Fake(refer(ResponseCode.PREFIX_REFERRAL, "0.NA/88.166", lambda: me.site()))

    async def body() -> None:
        w = Walker([me.site()])
        with pytest.raises(WalkError, match="referral loop") as err:
            await w.resolve_at(w.roots, "88.166/x")
        assert err.value.rc == ResponseCode.RECURSION_COUNT_TOO_HIGH

    run([me], body)
    assert me.asked == [("udp", "88.166/x")]  # asked once, not again


def _site_of(chain: list[Fake], n: int) -> SiteInfo:
    return chain[n].site()


def test_the_number_of_referrals_is_bounded() -> None:
    chain: list[Fake] = []
    for i in range(6):
        # each refers to the next (distinct sites, so no loop); the last would answer
        nxt = i + 1
        chain.append(
            Fake(
                refer(
                    ResponseCode.SERVICE_REFERRAL, "0.NA/X", functools.partial(_site_of, chain, nxt)
                )
            )
            if i < 5
            else Fake(url("88.166/x"))
        )

    async def body() -> None:
        w = Walker([chain[0].site()], max_referrals=3)
        with pytest.raises(WalkError, match="gave up after 3 referrals") as err:
            await w.resolve_at(w.roots, "88.166/x")
        assert err.value.rc == ResponseCode.RECURSION_COUNT_TOO_HIGH
        assert len(err.value.hops) == 4
        # with room enough the same chain ends at the answer
        r = await Walker([chain[0].site()], max_referrals=5).resolve_at(w.roots, "88.166/x")
        assert r.message.response_code == ResponseCode.SUCCESS

    run(chain, body)


def test_an_error_over_udp_is_asked_again_over_tcp() -> None:
    """idnode's UDP door says "ask over TCP" with RC 2 when an answer is past its cap."""

    def reply(req: Message, transport: str) -> Message:
        if transport == "udp":
            return response_to(req, ResponseCode.ERROR, ErrorResponse("too long: ask over TCP"))
        return url("88.166/x")(req, transport)

    s = Fake(reply)
    hops: list[Hop] = []

    async def body() -> None:
        r = await Walker([s.site()]).resolve_at([s.site()], "88.166/x", trace=hops.append)
        assert r.message.response_code == ResponseCode.SUCCESS

    run([s], body)
    assert s.asked == [("udp", "88.166/x"), ("tcp", "88.166/x")]
    assert [(h.transport, h.note) for h in hops] == [("udp", "asking over TCP"), ("tcp", "")]


def test_a_dead_site_is_left_for_the_next() -> None:
    live = Fake(url("88.166/x"))
    dead_port = free_port()  # nothing listens there
    dead = SiteInfo(
        (ServerInfo.at("127.0.0.1", 1, (Interface(2, 0, dead_port), Interface(2, 1, dead_port))),)
    )

    async def body() -> None:
        hops: list[Hop] = []
        r = await Walker([dead, live.site()], timeout=5).resolve_at(
            [dead, live.site()], "88.166/x", trace=hops.append
        )
        assert r.message.response_code == ResponseCode.SUCCESS
        assert [h.response_code for h in hops] == [None, None, 1]  # dead UDP, dead TCP, live
        assert all(str(dead_port) in h.server for h in hops[:2])

    run([live], body)


def test_a_site_answering_not_responsible_lets_a_mirror_answer() -> None:
    wrong = Fake(
        lambda req, _t: response_to(
            req,
            ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE,
            ErrorResponse("That naming authority doesn't live here"),
        )
    )
    right = Fake(url("88.166/x"))

    async def body() -> None:
        sites = [wrong.site(), right.site()]
        r = await Walker(sites).resolve_at(sites, "88.166/x")
        assert r.message.response_code == ResponseCode.SUCCESS
        only = await Walker(sites).resolve_at([wrong.site()], "88.166/x")
        assert only.message.response_code == ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE

    run([wrong, right], body)


def test_prefix_service_is_cached_for_the_ttl_of_its_values() -> None:
    end = Fake(url("88.166/x"))
    now = [1000.0]

    def root_reply(req: Message, _t: str) -> Message:
        v = HandleValue(1, "HS_SITE", encode_site(end.site()), ttl=60)
        return response_to(req, ResponseCode.SUCCESS, ResolutionResponse("0.NA/88.166", (v,)))

    root = Fake(root_reply)

    async def body() -> None:
        w = Walker([root.site()], cache=SiteCache(4, clock=lambda: now[0]))
        for _ in range(3):
            r = await w.resolve("88.166/x")
            assert r.message.response_code == ResponseCode.SUCCESS
        assert root.asked == [("udp", "0.NA/88.166")]  # once: the cache answered twice
        now[0] += 61  # past the HS_SITE value's TTL
        await w.resolve("88.166/y")
        assert root.asked == [("udp", "0.NA/88.166")] * 2
        # the cache is bounded: older prefixes leave first
        for i in range(6):
            w.cache.put(f"0.NA/P{i}", (end.site(),), 60)
        assert len(w.cache) == 4 and w.cache.get("0.NA/88.166") is None

    run([root, end], body)


def test_certified_answers_are_checked_with_the_site_key() -> None:
    key = ServerKey.generate("rsa", 1024)
    signed = Fake(url("88.166/x"), key=key)
    other = ServerKey.generate("rsa", 1024)

    async def body() -> None:
        hops: list[Hop] = []
        w = Walker([signed.site()], certify=True)
        r = await w.resolve_at(w.roots, "88.166/x", trace=hops.append)
        assert r.message.response_code == ResponseCode.SUCCESS and r.message.credential
        assert hops[-1].note == "signature verified"
        # the same answers checked against another key: refused, and no other site is left
        wrong = SiteInfo(
            tuple(
                ServerInfo(s.server_id, s.address, other.public_data, s.interfaces)
                for s in signed.site().servers
            )
        )
        with pytest.raises(WalkError, match="does not verify"):
            await Walker([wrong], certify=True).resolve_at([wrong], "88.166/x")

    run([signed], body)


def test_an_unsigned_answer_to_a_certified_request_is_refused() -> None:
    plain = Fake(url("88.166/x"))  # no key: never signs
    key = ServerKey.generate("rsa", 1024)

    async def body() -> None:
        site = plain.site()
        site = SiteInfo(
            tuple(
                ServerInfo(s.server_id, s.address, key.public_data, s.interfaces)
                for s in site.servers
            )
        )
        with pytest.raises(WalkError, match="not signed"):
            await Walker([site], certify=True).resolve_at([site], "88.166/x")

    run([plain], body)


def test_no_service_for_an_unknown_prefix() -> None:
    root = Fake(
        lambda req, _t: response_to(req, ResponseCode.HANDLE_NOT_FOUND, ErrorResponse("not found"))
    )

    async def body() -> None:
        with pytest.raises(WalkError, match="no service found for prefix 77") as err:
            await Walker([root.site()]).resolve("77/x")
        assert err.value.rc == ResponseCode.HANDLE_NOT_FOUND

    run([root], body)


def test_derived_prefix_is_found_through_its_parent() -> None:
    """0.NA/88.166 unknown at the root: 0.NA/88 there, then 0.NA/88.166 at 88's site."""
    end = Fake(url("88.166/x"))

    def parent_reply(req: Message, _t: str) -> Message:
        assert isinstance(req.body, ResolutionRequest)
        v = HandleValue(1, "HS_SITE", encode_site(end.site()))
        return response_to(req, ResponseCode.SUCCESS, ResolutionResponse(req.body.handle, (v,)))

    parent = Fake(parent_reply)
    root = Fake(site_of("0.NA/88", "HS_NA_DELEGATE", lambda: parent))

    async def body() -> None:
        r = await Walker([root.site()]).resolve("88.166/x")
        assert r.message.response_code == ResponseCode.SUCCESS

    run([root, parent, end], body)
    assert root.asked == [("udp", "0.NA/88.166"), ("udp", "0.NA/88")]
    assert parent.asked == [("udp", "0.NA/88.166")]
    assert end.asked == [("udp", "88.166/x")]


def test_a_silent_server_is_left_after_its_timeout() -> None:
    """Datagrams dropped and a TCP connection accepted but never answered (no refusal
    to end the wait early): the walker gives up on that server and asks the next site."""
    live = Fake(url("88.166/x"))

    class _Mute(asyncio.DatagramProtocol):
        pass

    async def body() -> None:
        loop = asyncio.get_running_loop()
        port = free_port()
        udp, _ = await loop.create_datagram_endpoint(_Mute, local_addr=("127.0.0.1", port))

        async def never(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.read(65536)  # reads the request, answers nothing
            await asyncio.sleep(3600)

        tcp = await asyncio.start_server(never, "127.0.0.1", port)
        try:
            mute = SiteInfo(
                (ServerInfo.at("127.0.0.1", 1, (Interface(2, 0, port), Interface(2, 1, port))),)
            )
            hops: list[Hop] = []
            sites = [mute, live.site()]
            r = await Walker(sites, timeout=0.4).resolve_at(sites, "88.166/x", trace=hops.append)
            assert r.message.response_code == ResponseCode.SUCCESS
            assert [(h.transport, h.response_code) for h in hops] == [
                ("udp", None),
                ("tcp", None),
                ("udp", 1),
            ]
            assert "no answer" in hops[0].note and "no answer" in hops[1].note
        finally:
            udp.close()
            tcp.close()

    run([live], body)


def test_concurrent_walks_ask_the_root_once_per_prefix() -> None:
    end = Fake(url("88.166/x"))

    def root_reply(req: Message, _t: str) -> Message:
        v = HandleValue(1, "HS_SITE", encode_site(end.site()), ttl=60)
        return response_to(req, ResponseCode.SUCCESS, ResolutionResponse("0.NA/88.166", (v,)))

    root = Fake(root_reply)
    missing = Fake(
        lambda req, _t: response_to(req, ResponseCode.HANDLE_NOT_FOUND, ErrorResponse(""))
    )

    async def body() -> None:
        w = Walker([root.site()])
        results = await asyncio.gather(*(w.resolve(f"88.166/h{i}") for i in range(8)))
        assert all(r.message.response_code == ResponseCode.SUCCESS for r in results)
        assert root.asked == [("udp", "0.NA/88.166")]
        assert len(end.asked) == 8
        # a failed lookup fails every walk waiting on it, and is not cached
        w2 = Walker([missing.site()])
        outcomes = await asyncio.gather(
            *(w2.resolve(f"77/h{i}") for i in range(4)), return_exceptions=True
        )
        assert all(isinstance(o, WalkError) for o in outcomes)
        assert missing.asked == [("udp", "0.NA/77")]
        with pytest.raises(WalkError):
            await w2.resolve("77/again")
        assert len(missing.asked) == 2

    run([root, end, missing], body)


def test_a_prefix_neither_the_root_nor_its_parent_knows() -> None:
    """0.NA/88 at the root names the root itself, which has no 0.NA/88.999: the walk ends
    with "no service" (HANDLE_NOT_FOUND), not a loop, and asks nothing twice."""
    root: Fake = Fake(site_of("0.NA/88", "HS_SITE", lambda: root))

    async def body() -> None:
        with pytest.raises(WalkError, match=r"no service found for prefix 88\.999") as err:
            await Walker([root.site()]).resolve("88.999/x")
        assert err.value.rc == ResponseCode.HANDLE_NOT_FOUND

    run([root], body)
    assert root.asked == [("udp", "0.NA/88.999"), ("udp", "0.NA/88")]
