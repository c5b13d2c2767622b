"""Multi-server sites: the settings (--site-servers, --site-server-id, --site-hash), the
published HS_SITE, which server holds a handle (registry/site_servers.py), and the site
peers stage against in-process Handle servers (the Fake of test_walker.py): a peer's
answer as an entry L1 keeps for at most --site-peer-ttl, "not found", a peer's error, a
dead peer as RC 2 naming it, lookups of one handle sharing one request. The same through
real nodes: tests/e2e/test_multi_server_site.py."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from idnode.registry.names import NA_PREFIX
from idnode.registry.site_servers import SiteServers
from idnode.resolver.codec import (
    ErrorResponse,
    HandleValue,
    Interface,
    Message,
    ResolutionRequest,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    decode_values,
    encode_site,
    encode_values,
)
from idnode.resolver.codec.codes import HashOption, InterfaceProtocol
from idnode.resolver.codec.message import response_to
from idnode.resolver.codec.sitehash import responsible_server, server_index
from idnode.resolver.l1 import Entry, Lifetimes
from idnode.resolver.node import site_info
from idnode.resolver.settings import ConfigError, Settings, load_settings, site_members
from idnode.resolver.stages.site_peers import SitePeersStage, stored_keys, with_keys
from idnode.resolver.stages.stage import Lookup, Resolution
from tests.unit.test_walker import Fake, run

MEMBERS = "1=127.0.0.1:2641:8000,2=127.0.0.1:2642,3=[fd00::3]:2643:8003"


def settings(**kw: object) -> Settings:
    return load_settings({k: str(v) for k, v in kw.items()}, env={})


def test_site_servers_are_parsed_in_order() -> None:
    s = settings(site_servers=MEMBERS, site_server_id=2, site_hash="suffix")
    assert [(m.server_id, m.host, m.port, m.http_port) for m in site_members(s)] == [
        (1, "127.0.0.1", 2641, 8000),
        (2, "127.0.0.1", 2642, None),
        (3, "fd00::3", 2643, 8003),
    ]
    assert site_members(settings()) == ()


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        ({"site_servers": "1=127.0.0.1", "site_server_id": 1}, "not ID=HOST:PORT"),
        ({"site_servers": "1=localhost:2641", "site_server_id": 1}, "HOST an IP address"),
        ({"site_servers": "x=127.0.0.1:2641", "site_server_id": 1}, "not ID=HOST:PORT"),
        ({"site_servers": "1=127.0.0.1:1,1=127.0.0.1:2", "site_server_id": 1}, "twice"),
        ({"site_servers": "1=127.0.0.1:1,2=127.0.0.1:2", "site_server_id": 3}, "not one of"),
        ({"site_hash": "md5"}, "prefix, suffix or handle"),
    ],
)
def test_bad_site_settings_are_refused(flags: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        settings(**flags)


def test_the_published_site_lists_every_server_with_the_hash_option() -> None:
    s = settings(site_servers=MEMBERS, site_server_id=2, site_hash="prefix", http_port=8002)
    site = site_info(s, b"own-key", {1: b"key-1"})
    assert site.hash_option == HashOption.BY_PREFIX
    assert [(x.server_id, x.ip, x.public_key) for x in site.servers] == [
        (1, "127.0.0.1", b"key-1"),
        (2, "127.0.0.1", b"own-key"),
        (3, "fd00::3", b""),
    ]
    ports = [{(i.protocol, i.port) for i in x.interfaces} for x in site.servers]
    assert ports[0] == {(0, 2641), (1, 2641), (2, 8000)}
    assert ports[1] == {(0, 2642), (1, 2642), (2, 8002)}  # its own HTTP port
    assert ports[2] == {(0, 2643), (1, 2643), (2, 8003)}
    # without --site-servers: the one-server site as before
    assert [x.server_id for x in site_info(settings()).servers] == [1]


def three(option: int = HashOption.BY_HANDLE) -> SiteInfo:
    servers = tuple(
        ServerInfo.at("127.0.0.1", i, (Interface(3, 1, 2640 + i), Interface(2, 0, 2640 + i)))
        for i in (1, 2, 3)
    )
    return SiteInfo(servers, hash_option=option)


def handle_on(index: int, n: int = 3, stem: str = "88.300/h") -> str:
    return next(
        f"{stem}{i}"
        for i in range(1000)
        if server_index(f"{stem}{i}", HashOption.BY_HANDLE, n) == index
    )


NA_CASES = (NA_PREFIX, NA_PREFIX.lower(), "0.Na/")  # registry/names.py's, in any case


def test_which_server_holds_a_handle() -> None:
    site = three()
    mine = SiteServers(site, 2)
    for index in range(3):
        h = handle_on(index)
        holder = mine.holder(h)
        assert responsible_server(site, h).server_id == index + 1
        if index == 1:
            assert holder is None and mine.refusal(h) is None
        else:
            assert holder is not None and holder.server_id == index + 1
            assert mine.refusal(h) == (
                f"{h} hashes to server {index + 1} (127.0.0.1:{2641 + index}) of this site, "
                "which holds it; send the write there"
            )
    # prefix records are every server's own
    assert all(mine.holder(f"{na}88.{i}") is None for na in NA_CASES for i in range(50))
    # ... but a handle that merely starts like one is hashed as any other
    assert any(mine.holder(f"0.NAX/{i}") is not None for i in range(50))
    with pytest.raises(ValueError):
        SiteServers(site, 4)


def test_by_prefix_one_server_holds_the_whole_prefix() -> None:
    site = three(HashOption.BY_PREFIX)
    holders = {responsible_server(site, f"88.300/x{i}").server_id for i in range(50)}
    assert len(holders) == 1


# --- the stage, against in-process peers --------------------------------------------


def url_values(handle: str) -> tuple[HandleValue, ...]:
    return (HandleValue(1, "URL", f"https://example.com/{handle}".encode(), ttl=86400),)


def peer_reply(req: Message, transport: str) -> Message:
    assert isinstance(req.body, ResolutionRequest)
    h = req.body.handle
    if h.endswith("missing"):
        return response_to(req, ResponseCode.HANDLE_NOT_FOUND, ErrorResponse("Handle not found"))
    if h.endswith("busy"):
        return response_to(req, ResponseCode.SERVER_TOO_BUSY, ErrorResponse("too busy"))
    return response_to(req, ResponseCode.SUCCESS, ResolutionResponse(h, url_values(h)))


def site_of(peer: Fake, dead_port: int) -> SiteInfo:
    """Server 1 is this one (never asked), 2 the fake peer, 3 a port nothing serves."""

    def ifaces(port: int) -> tuple[Interface, ...]:
        return (
            Interface(3, InterfaceProtocol.TCP, port),
            Interface(2, InterfaceProtocol.UDP, port),
        )

    return SiteInfo(
        tuple(
            ServerInfo.at("127.0.0.1", i, ifaces(p))
            for i, p in ((1, 1), (2, peer.port), (3, dead_port))
        )
    )


def on(server_id: int, suffix: str = "") -> str:
    return next(
        h
        for i in range(1000)
        if server_index(h := f"88.300/p{i}{suffix}", HashOption.BY_HANDLE, 3) == server_id - 1
    )


def test_a_peer_answers_for_its_handles_and_l1_keeps_them_briefly() -> None:
    peer = Fake(peer_reply)

    async def body() -> None:
        from idnode.loadtest.processes import free_port

        stage = SitePeersStage(
            SiteServers(site_of(peer, free_port()), 1), Lifetimes(60.0, 5.0), ttl=2.0
        )
        own = on(1)
        assert await stage.lookup(Lookup(own, own.upper())) is None  # this server's
        h = on(2)
        got = await stage.lookup(Lookup(h, h.upper()))
        assert isinstance(got, Entry) and got.values_wire is not None
        assert [v.data for v in decode_values(got.values_wire)] == [url_values(h)[0].data]
        # the value's TTL is a day; the entry lives --site-peer-ttl
        assert got.expires - time.monotonic() <= 2.0
        missing = on(2, "missing")
        nf = await stage.lookup(Lookup(missing, missing.upper()))
        assert isinstance(nf, Entry) and nf.values_wire is None
        assert nf.expires - time.monotonic() <= 2.0
        busy = on(2, "busy")
        err = await stage.lookup(Lookup(busy, busy.upper()))
        assert isinstance(err, Resolution)
        assert err.response_code == ResponseCode.SERVER_TOO_BUSY
        assert "server 2 (127.0.0.1:" in err.message and "too busy" in err.message

    run([peer], body)
    assert ("udp", on(2)) in peer.asked


def test_lookups_of_one_handle_share_one_request() -> None:
    peer = Fake(peer_reply)

    async def body() -> None:
        stage = SitePeersStage(SiteServers(site_of(peer, 1), 1), Lifetimes())
        h = on(2)
        got = await asyncio.gather(*(stage.lookup(Lookup(h, h.upper())) for _ in range(20)))
        assert all(isinstance(g, Entry) for g in got)

    run([peer], body)
    assert len(peer.asked) == 1


def test_a_dead_peer_is_a_clear_error_at_once() -> None:
    peer = Fake(peer_reply)

    async def body() -> None:
        from idnode.loadtest.processes import free_port

        dead = free_port()
        stage = SitePeersStage(SiteServers(site_of(peer, dead), 1), Lifetimes(), timeout=30.0)
        asked: list[str] = []
        exchange = stage._exchange

        async def counted(server: ServerInfo, handle: str) -> Message:
            asked.append(handle)
            return await exchange(server, handle)

        stage._exchange = counted  # type: ignore[method-assign]
        for n in range(2):  # asked, then remembered as down
            h = on(3, str(n))
            got = await stage.lookup(Lookup(h, h.upper()))
            assert isinstance(got, Resolution)
            assert got.response_code == ResponseCode.ERROR
            assert got.message.startswith(
                f"server 3 (127.0.0.1:{dead}) of this site, which holds {h}, does not answer"
            )
            # "at once": the reason is the peer's refusal, not the 30 s timeout running out
            assert "cannot reach" in got.message and " in 30s" not in got.message
        # the second lookup was answered from the down-mark: the dead peer was asked once
        assert asked == [on(3, "0")]
        # the live peer is unaffected
        assert isinstance(await stage.lookup(Lookup(on(2), on(2).upper())), Entry)

    run([peer], body)


def test_a_udp_error_is_asked_again_over_tcp() -> None:
    def reply(req: Message, transport: str) -> Message:
        if transport == "udp":
            return response_to(req, ResponseCode.ERROR, ErrorResponse("ask over TCP"))
        return peer_reply(req, transport)

    peer = Fake(reply)

    async def body() -> None:
        stage = SitePeersStage(SiteServers(site_of(peer, 1), 1), Lifetimes())
        h = on(2)
        assert isinstance(await stage.lookup(Lookup(h, h.upper())), Entry)

    run([peer], body)
    assert [t for t, _ in peer.asked] == ["udp", "tcp"]


def test_keys_published_before_are_kept_for_servers_that_did_not_move() -> None:
    site = three()
    keyed = with_keys(site, {1: b"k1", 3: b"k3"})
    assert [x.public_key for x in keyed.servers] == [b"k1", b"", b"k3"]
    assert with_keys(keyed, {1: b"other", 2: b"k2"}).servers[0].public_key == b"k1"
    stored = encode_values([HandleValue(1, "HS_SITE", encode_site(keyed))])
    assert stored_keys(stored, site) == {1: b"k1", 3: b"k3"}
    moved = SiteInfo(
        (site.servers[0], site.servers[1], replace(site.servers[2], interfaces=())),
        hash_option=site.hash_option,
    )
    assert stored_keys(stored, moved) == {1: b"k1"}  # server 3 is elsewhere now
    assert stored_keys(None, site) == {} and stored_keys(b"junk", site) == {}
