"""What a hostile or broken record cannot make the upstream walker, exchanges and health
probes do: wait for ever on a service loop (HS_SERV back to its own prefix), send more
than a few requests for one lookup, take an answer that is not to its request, die on a
port past 65535, or probe a thousand servers. Fake servers are tests/unit/test_walker.py's;
outcomes (and requests counted at the fakes) are asserted, never durations: asyncio.wait_for
with a generous timeout only keeps a regression from hanging the run."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from dataclasses import replace
from typing import TypeVar, cast

import pytest
from prometheus_client import REGISTRY

from idnode.loadtest.processes import free_port
from idnode.registry.delegations import Delegations
from idnode.registry.names import PrefixAuthority
from idnode.resolver.client import resolution_request
from idnode.resolver.codec import (
    ErrorResponse,
    FrameBuffer,
    HandleValue,
    Interface,
    Message,
    ReferralResponse,
    ResolutionRequest,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    decode,
    encode,
    encode_site,
)
from idnode.resolver.codec.message import response_to
from idnode.resolver.stages.recursion import delegated_servers
from idnode.resolver.upstream.exchange import (
    Unanswered,
    ask_server,
    exchange_tcp,
    exchange_udp,
    query_ports,
)
from idnode.resolver.upstream.health import ServerHealth, server_label
from idnode.resolver.upstream.sites import MAX_SITES, sites_from_values
from idnode.resolver.upstream.walker import MAX_SITES_PER_HOP, Walker, WalkError
from tests.unit.test_walker import Fake, run, url

T = TypeVar("T")
GUARD = 60.0  # only a hang guard: every walk here ends long before


async def guarded(aw: Awaitable[T]) -> T:
    return await asyncio.wait_for(aw, GUARD)


def records(table: dict[str, tuple[HandleValue, ...]]) -> Fake:
    """A root answering the prefix handles in ``table``, "not found" for the rest."""

    def reply(req: Message, _t: str) -> Message:
        assert isinstance(req.body, ResolutionRequest)
        values = table.get(req.body.handle)
        if values is None:
            return response_to(req, ResponseCode.HANDLE_NOT_FOUND, ErrorResponse("not found"))
        return response_to(req, ResponseCode.SUCCESS, ResolutionResponse(req.body.handle, values))

    return Fake(reply)


def serv(target: str) -> tuple[HandleValue, ...]:
    return (HandleValue(1, "HS_SERV", target.encode()),)


# --- A: service loops end, and no walk lives for ever ------------------------------------


@pytest.mark.parametrize(
    "table, handle",
    [
        # 0.NA/88.204 names a service handle under 88.204 itself
        ({"0.NA/88.204": serv("88.204/service")}, "88.204/x"),
        # A -> B -> A
        ({"0.NA/88.1": serv("88.2/svc"), "0.NA/88.2": serv("88.1/svc")}, "88.1/x"),
        # 88.166 unknown at the root; its parent's HS_SERV names a handle under 88.166
        ({"0.NA/88": serv("88.166/service")}, "88.166/x"),
    ],
    ids=["self", "a-b-a", "derived"],
)
def test_a_service_loop_ends_with_rc_6(
    table: dict[str, tuple[HandleValue, ...]], handle: str
) -> None:
    root = records(table)

    async def body() -> None:
        w = Walker([root.site()], timeout=2)
        with pytest.raises(WalkError, match="service loop") as err:
            await guarded(w.resolve(handle))
        assert err.value.rc == ResponseCode.RECURSION_COUNT_TOO_HIGH
        assert err.value.prefix_level
        assert not w._pending  # nothing left for a later walk to join
        # ... and the next walk for that prefix ends the same way (no dead future).
        with pytest.raises(WalkError, match="service loop"):
            await guarded(w.resolve(handle))

    run([root], body)


def test_a_walk_ends_at_its_deadline_and_leaves_nothing_pending() -> None:
    class _Mute(asyncio.DatagramProtocol):
        pass

    async def body() -> None:
        port = free_port()
        udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            _Mute, local_addr=("127.0.0.1", port)
        )
        try:
            silent = SiteInfo((ServerInfo.at("127.0.0.1", 1, (Interface(2, 0, port),)),))
            # each server would be waited for 30 s; the walk as a whole, 0.3 s
            w = Walker([silent], timeout=30, walk_timeout=0.3)
            with pytest.raises(WalkError, match=r"gave up on 88\.9/x after 0\.3s") as err:
                await guarded(w.resolve("88.9/x"))
            assert err.value.rc == ResponseCode.ERROR
            assert not w._pending
            # a walk cancelled from outside clears its shared lookup too
            task = asyncio.ensure_future(Walker([silent], timeout=30).resolve("88.9/y"))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            udp.close()

    run([], body)


# --- B: the requests one walk sends are bounded ------------------------------------------


def test_a_referral_naming_many_sites_gets_a_few_asked() -> None:
    busy = [
        Fake(lambda req, _t: response_to(req, ResponseCode.SERVER_TOO_BUSY, ErrorResponse("busy")))
        for _ in range(24)
    ]

    def refer_to_all(req: Message, _t: str) -> Message:
        values = tuple(
            HandleValue(i + 1, "HS_SITE", encode_site(f.site())) for i, f in enumerate(busy)
        )
        return response_to(
            req, ResponseCode.SERVICE_REFERRAL, ReferralResponse("0.NA/88.7", values)
        )

    root = Fake(refer_to_all)

    async def body() -> None:
        w = Walker([root.site()])
        r = await guarded(w.resolve_at(w.roots, "88.7/x"))
        assert r.message.response_code == ResponseCode.SERVER_TOO_BUSY
        values = [HandleValue(i + 1, "HS_SITE", encode_site(f.site())) for i, f in enumerate(busy)]
        assert len(sites_from_values(values)) == MAX_SITES

    run([root, *busy], body)
    assert sum(len(f.asked) for f in busy) == MAX_SITES_PER_HOP


def _refer_to_next(chain: list[Fake], n: int) -> Fake:
    def reply(req: Message, _t: str) -> Message:
        v = HandleValue(1, "HS_SITE", encode_site(chain[n + 1].site()))
        return response_to(req, ResponseCode.SERVICE_REFERRAL, ReferralResponse("0.NA/X", (v,)))

    return Fake(reply)


def test_the_requests_of_one_walk_are_bounded() -> None:
    chain: list[Fake] = []
    for i in range(12):
        chain.append(_refer_to_next(chain, i) if i < 11 else Fake(url("88.7/x")))

    async def body() -> None:
        w = Walker([chain[0].site()], max_referrals=50, max_requests=5)
        with pytest.raises(WalkError, match="gave up after 5 upstream requests") as err:
            await guarded(w.resolve_at(w.roots, "88.7/x"))
        assert err.value.rc == ResponseCode.RECURSION_COUNT_TOO_HIGH

    run(chain, body)
    assert sum(len(f.asked) for f in chain) == 5


def test_every_level_of_a_derived_prefix_counts_as_a_referral() -> None:
    root: Fake

    def reply(req: Message, _t: str) -> Message:
        assert isinstance(req.body, ResolutionRequest)
        name = req.body.handle
        if name == "0.NA/" + DEEP:
            return response_to(req, ResponseCode.HANDLE_NOT_FOUND, ErrorResponse(""))
        # every parent delegates to the root itself (each level a new name: no loop)
        v = HandleValue(1, "HS_NA_DELEGATE", encode_site(root.site()))
        return response_to(req, ResponseCode.SUCCESS, ResolutionResponse(name, (v,)))

    root = Fake(reply)

    async def body() -> None:
        with pytest.raises(WalkError, match="gave up after 3 referrals") as err:
            await guarded(Walker([root.site()], max_referrals=3).resolve(DEEP + "/x"))
        assert err.value.rc == ResponseCode.RECURSION_COUNT_TOO_HIGH

    run([root], body)
    assert len(root.asked) <= 1 + 1 + 3  # the prefix, its first level, three referrals


DEEP = ".".join(str(i) for i in range(1, 40))


# --- C: an answer must be to the request -----------------------------------------------


def test_request_ids_are_random() -> None:
    ids = [resolution_request("88/x").request_id for _ in range(64)]
    assert len(set(ids)) == 64 and all(0 < i < 2**31 for i in ids)
    assert sum(1 for a, b in itertools.pairwise(ids) if b == a + 1) < 4


def test_an_answer_with_another_id_or_handle_is_not_taken() -> None:
    """A forged answer first (wrong id, or the right id about another handle), then the
    real one: the real one is taken over UDP; over TCP the wrong handle is no answer."""

    def forged(req: Message, mode: str) -> list[Message]:
        assert isinstance(req.body, ResolutionRequest)
        bad = ResolutionResponse("88.7/other", (HandleValue(1, "URL", b"https://evil"),))
        good = ResolutionResponse(req.body.handle, (HandleValue(1, "URL", b"https://good"),))
        real = response_to(req, ResponseCode.SUCCESS, good)
        wrong_id = replace(real, request_id=(req.request_id + 1) & 0x7FFFFFFF, body=bad)
        wrong_handle = response_to(req, ResponseCode.SUCCESS, bad)
        return [wrong_id, wrong_handle, real] if mode == "udp" else [wrong_handle, real]

    class _Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t = cast(asyncio.DatagramTransport, transport)

        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            for m in forged(decode(data), "udp"):
                self.t.sendto(encode(m), addr)

    async def tcp(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        fb = FrameBuffer()
        while data := await r.read(65536):
            for frame in fb.feed(data):
                for m in forged(decode(frame), "tcp"):
                    w.write(encode(m))
        w.close()

    async def body() -> None:
        port = free_port()
        udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            _Udp, local_addr=("127.0.0.1", port)
        )
        srv = await asyncio.start_server(tcp, "127.0.0.1", port)
        try:
            a = await guarded(exchange_udp("127.0.0.1", port, resolution_request("88.7/x"), 10))
            assert isinstance(a.message.body, ResolutionResponse)
            assert a.message.body.values[0].data == b"https://good"
            with pytest.raises(Unanswered, match="another handle"):
                await guarded(exchange_tcp("127.0.0.1", port, resolution_request("88.7/x"), 10))
        finally:
            udp.close()
            srv.close()

    run([], body)


# --- D: a port past 65535 is no answer, not a crash ---------------------------------------


def test_a_site_with_port_70000() -> None:
    live = Fake(url("88.7/x"))
    bad_server = ServerInfo.at("127.0.0.1", 1, (Interface(2, 0, 70000), Interface(2, 1, 70000)))
    bad = SiteInfo((bad_server,))

    async def body() -> None:
        req = resolution_request("88.7/x")
        for ask in (exchange_udp, exchange_tcp):
            with pytest.raises(Unanswered):
                await guarded(ask("127.0.0.1", 70000, req, 5))
        # taken from values: the interfaces are dropped
        (site,) = sites_from_values([HandleValue(1, "HS_SITE", encode_site(bad))])
        assert site.servers[0].interfaces == ()
        # a walk given the site as it is goes on to the next
        sites = [bad, live.site()]
        r = await guarded(Walker(sites, timeout=5).resolve_at(sites, "88.7/x"))
        assert r.message.response_code == ResponseCode.SUCCESS
        # a probe of it is "no answer"
        assert await guarded(ServerHealth(timeout=1).probe(bad_server)) is None

    run([live], body)


# --- E: health probes are bounded, and TCP stands in for UDP ------------------------------


def _up(label: str) -> float | None:
    return REGISTRY.get_sample_value("idnode_upstream_server_up", {"server": label})


def test_probed_servers_are_capped_and_labels_follow() -> None:
    servers = [ServerInfo.at("127.0.0.1", i, (Interface(2, 0, 30000 + i),)) for i in range(1, 21)]
    health = ServerHealth(max_servers=5)
    health.watch(servers)
    assert len(health) == 5
    assert _up(server_label(servers[0])) == 1 and _up(server_label(servers[10])) is None
    health.watch(servers[3:])  # the first three no longer named: their labels go
    assert len(health) == 5
    assert _up(server_label(servers[0])) is None and _up(server_label(servers[3])) == 1
    health.watch([])
    assert all(_up(server_label(s)) is None for s in servers)

    # one delegation naming 40 servers gets 8 of them probed
    big = SiteInfo(tuple(servers * 2))
    d = Delegations(PrefixAuthority(["88.166"], False))
    d.build([("88.166.1001", [HandleValue(1, "HS_SITE", encode_site(big))])], {})
    assert len(delegated_servers(d)) == 8


def test_a_server_answering_tcp_only_stays_up() -> None:
    """Its HS_SITE lists UDP too, but nothing answers there: TCP is probed before a
    failure is counted."""

    async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        fb = FrameBuffer()
        while data := await r.read(65536):
            for frame in fb.feed(data):
                w.write(
                    encode(
                        response_to(
                            decode(frame), ResponseCode.SERVER_TOO_BUSY, ErrorResponse("any answer")
                        )
                    )
                )
        w.close()

    async def body() -> None:
        port = free_port()
        srv = await asyncio.start_server(answer, "127.0.0.1", port)
        try:
            server = ServerInfo.at("127.0.0.1", 1, (Interface(2, 0, port), Interface(2, 1, port)))
            health = ServerHealth(failures=1, timeout=2)
            health.watch([server])
            for _ in range(3):
                await guarded(health.probe_all())
                assert not health.is_down(server)
        finally:
            srv.close()

    run([], body)


# --- F: one server of a site, asked the one way (exchange.ask_server) --------------------


def test_the_query_ports_are_the_first_usable_of_each_protocol() -> None:
    server = ServerInfo.at(
        "127.0.0.1",
        1,
        (
            Interface(1, 1, 5000),  # admin only: no queries
            Interface(2, 0, 0),  # no port
            Interface(2, 0, 7000),
            Interface(3, 1, 6000),
            Interface(2, 1, 6001),  # a second TCP one: the first wins
        ),
    )
    assert query_ports(server) == (7000, 6000)
    assert query_ports(ServerInfo.at("127.0.0.1", 1, (Interface(2, 1, 70000),))) == (None, None)


def test_ask_server_goes_to_tcp_when_udp_says_so_and_reports_each_attempt() -> None:
    def reply(req: Message, transport: str) -> Message:
        if transport == "udp":
            return response_to(req, ResponseCode.ERROR, ErrorResponse("ask over TCP"))
        return url("88.7/x")(req, transport)

    fake = Fake(reply)

    async def body() -> None:
        (server,) = fake.site().servers
        req = resolution_request("88.7/x")
        tried: list[tuple[str, int, int | None, str]] = []
        sent: list[str] = []
        got = await guarded(
            ask_server(server, req, 10, sending=sent.append, tried=lambda *a: tried.append(a))
        )
        assert (got.transport, got.port, got.message.response_code) == ("tcp", fake.port, 1)
        assert tried == [("udp", fake.port, ResponseCode.ERROR, "asking over TCP")]
        assert sent == ["udp", "tcp"]
        # a probe takes any answer: UDP's RC 2 is one
        got = await guarded(ask_server(server, req, 10, tcp_when_too_big=False))
        assert (got.transport, got.message.response_code) == ("udp", ResponseCode.ERROR)
        # TCP only
        got = await guarded(ask_server(server, req, 10, prefer_udp=False))
        assert got.transport == "tcp"

    run([fake], body)
    assert [t for t, _ in fake.asked] == ["udp", "tcp", "udp", "tcp"]


def test_ask_server_falls_back_to_tcp_when_udp_is_refused() -> None:
    fake = Fake(url("88.7/x"), udp=False)  # nothing listens on its UDP port

    async def body() -> None:
        (tcp_only,) = fake.site().servers
        server = replace(tcp_only, interfaces=(*tcp_only.interfaces, Interface(2, 0, fake.port)))
        tried: list[tuple[str, int, int | None, str]] = []
        for each in (False, True):
            got = await guarded(
                ask_server(
                    server,
                    resolution_request("88.7/x"),
                    30,
                    each=each,
                    tried=lambda *a: tried.append(a),
                )
            )
            assert got.transport == "tcp" and got.message.response_code == ResponseCode.SUCCESS
        assert [(t, rc) for t, _, rc, _ in tried] == [("udp", None), ("udp", None)]

        # a request bound raising in ``sending`` stops before anything is sent
        def full(_: str) -> None:
            raise RuntimeError("no more requests")

        with pytest.raises(RuntimeError, match="no more requests"):
            await guarded(ask_server(server, resolution_request("88.7/y"), 30, sending=full))
        bare = replace(server, interfaces=())
        with pytest.raises(Unanswered, match="no UDP or TCP query interface"):
            await guarded(ask_server(bare, resolution_request("88.7/x"), 30))

    run([fake], body)
    assert fake.asked == [("tcp", "88.7/x"), ("tcp", "88.7/x")]
