"""Delegations (registry/delegations.py): which handles get a referral, and which code.

Checked against how the HANDLE.NET 7.3.1 library follows referrals: a 302 for a handle
(it re-sends the request to the sites in the answer), a 303 for a prefix handle (it asks
the referred sites for the prefix handle again)."""

from __future__ import annotations

import asyncio

from idnode.registry.auth import Identity
from idnode.registry.bootstrap import SITE_INDEX, site_update
from idnode.registry.delegations import Delegations, Referral
from idnode.registry.names import PrefixAuthority
from idnode.registry.permissions import Permissions
from idnode.resolver.codec import (
    AdminRecord,
    HandleValue,
    Interface,
    InterfaceProtocol,
    InterfaceType,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    decode_site,
    decode_values,
    encode_admin,
    encode_site,
    encode_values,
)
from idnode.resolver.codec.codes import ALL_ADMIN_PERMISSIONS
from idnode.resolver.stages.delegation import DelegationStage
from idnode.resolver.stages.recursion import delegated_servers
from idnode.resolver.stages.stage import Lookup


def site(port: int, serial: int = 1) -> SiteInfo:
    return SiteInfo(
        servers=(
            ServerInfo.at(
                "127.0.0.1",
                server_id=1,
                interfaces=(Interface(InterfaceType.ADMIN_AND_QUERY, InterfaceProtocol.TCP, port),),
            ),
        ),
        serial=serial,
    )


def site_value(port: int) -> HandleValue:
    return HandleValue(1, "HS_SITE", encode_site(site(port)))


ADMIN = HandleValue(
    100, "HS_ADMIN", encode_admin(AdminRecord(ALL_ADMIN_PERMISSIONS, "0.NA/X", 300))
)


def records() -> list[tuple[str, bytes]]:
    return [
        ("0.NA/88", encode_values([ADMIN, site_value(1)])),  # homed: never a delegation
        ("0.NA/88.166", encode_values([ADMIN, site_value(2641)])),
        ("0.NA/88.166.1001", encode_values([site_value(3641)])),
        ("0.NA/88.200", encode_values([ADMIN])),  # no site: a prefix admin, not delegated
        ("0.NA/88.300", encode_values([HandleValue(2, "HS_SERV", b"0.NA/SERVICE.300")])),
        ("0.NA/99.1", encode_values([site_value(9)])),  # not under a homed prefix
    ]


def top() -> Delegations:
    d = Delegations(PrefixAuthority(["88", "88.166.9"]))
    d.build(d.candidates(records()), {})
    return d


def test_handles_under_a_delegation_get_a_service_referral() -> None:
    d = top()
    r = d.referral("88.166/x")
    assert r is not None and r.response_code == ResponseCode.SERVICE_REFERRAL
    assert r.delegation.referral_handle == "0.NA/88.166"
    (v,) = decode_values(r.delegation.sites_wire)
    assert decode_site(v.data).servers[0].interfaces[0].port == 2641
    # the longest delegation wins: 88.166.1001 is referred to its own node
    r = d.referral("88.166.1001/x")
    assert r is not None and r.delegation.referral_handle == "0.NA/88.166.1001"
    # case-insensitive, as handles are
    assert d.referral("88.166.1001/X") == d.referral("88.166.1001/x")
    # a deeper derived prefix of a delegation is the delegate's too
    r = d.referral("88.166.5/x")
    assert r is not None and r.delegation.prefix == "88.166"


def test_homed_and_undelegated_prefixes_are_answered_here() -> None:
    d = top()
    assert d.referral("88/x") is None
    assert d.referral("88.200/x") is None  # prefix record without HS_SITE
    assert d.referral("88.166.9/x") is None  # homed here, under a delegation: homed wins
    assert d.referral("99.1/x") is None  # not under a homed prefix: the authority says 301
    assert d.referral("0.NA/88") is None


def test_prefix_handles_strictly_under_a_delegation_get_a_prefix_referral() -> None:
    d = top()
    assert d.referral("0.NA/88.166") is None  # the delegation record itself is held here
    assert d.referral("0.NA/88.166.1001") is None
    r = d.referral("0.NA/88.166.77")
    assert r is not None and r.response_code == ResponseCode.PREFIX_REFERRAL
    assert r.delegation.referral_handle == "0.NA/88.166"
    r = d.referral("0.NA/88.166.1001.5")
    assert r is not None and r.delegation.referral_handle == "0.NA/88.166.1001"


def test_a_prefix_named_without_0na_is_answered_with_where_it_lives() -> None:
    """After a 303 the library asks the referred sites for "88.166.1001" (no 0.NA/)."""
    d = Delegations(PrefixAuthority(["88"]))
    d.build(d.candidates(records()), {}, d.own_sites(records()))

    def port(name: str) -> int | None:
        got = d.prefix_sites(name)
        if got is None:
            return None
        (v,) = decode_values(got)
        return decode_site(v.data).servers[0].interfaces[0].port

    assert port("88.166") == 2641 and port("88.166.1001") == 3641  # delegations
    assert port("88") == 1 and port("88.200") == 1 and port("88.5.6") == 1  # served here
    assert port("99.1") is None and port("0") is None and port("88/x") is None
    assert d.prefix_sites("88.166.1001.5") is None  # under a delegation: a referral
    r = d.referral("88.166.1001.5")
    assert r is not None and r.response_code == ResponseCode.PREFIX_REFERRAL
    assert r.delegation.referral_handle == "0.NA/88.166.1001"
    assert d.referral("88.166.1001") is None and d.referral("88") is None


def test_a_service_handle_delegation_refers_to_the_service() -> None:
    d = Delegations(PrefixAuthority(["88"]))
    held = {"0.NA/SERVICE.300": encode_values([site_value(5641)])}
    d.build(d.candidates(records()), held)
    r = d.referral("88.300/x")
    assert r is not None and r.delegation.referral_handle == "0.NA/SERVICE.300"
    assert len(decode_values(r.delegation.sites_wire)) == 1
    d.build(d.candidates(records()), {})  # the service handle is not held here
    r = d.referral("88.300/x")
    assert r is not None and decode_values(r.delegation.sites_wire) == ()


def test_a_rebuild_says_whether_anything_changed() -> None:
    d = top()
    assert not d.build(d.candidates(records()), {})
    assert d.build(d.candidates(records()[:2]), {})
    assert d.referral("88.166.1001/x") is not None  # now under 88.166's delegation
    assert d.referral("88.166.1001/x").delegation.prefix == "88.166"  # type: ignore[union-attr]


def prefix_site_value(port: int) -> HandleValue:
    return HandleValue(2, "HS_SITE.PREFIX", encode_site(site(port)))


def port_of(r: Referral | None) -> int:
    assert r is not None
    (v,) = decode_values(r.delegation.sites_wire)
    assert v.type == "HS_SITE"  # a 302's sites are read from HS_SITE values only
    return decode_site(v.data).servers[0].interfaces[0].port


def secondary(*extra: tuple[str, bytes]) -> Delegations:
    """A secondary homing 88.166 (its own HS_SITE: port 2641) with ``extra`` records."""
    recs = [("0.NA/88.166", encode_values([ADMIN, site_value(2641)])), *extra]
    d = Delegations(PrefixAuthority(["88.166"]))
    d.build(d.candidates(recs), {}, d.own_sites(recs))
    return d


def test_hs_site_prefix_delegates_only_the_derived_prefixes() -> None:
    """0.NA/88.166.1001 with only HS_SITE.PREFIX naming E: 88.166.1001.5 and deeper are
    E's (302 / 303), 88.166.1001's own handles stay here (HANDLE.NET 8.x: HS_SITE.PREFIX
    names the sites of the derived prefixes, HS_SITE those of the prefix itself)."""
    d = secondary(("0.NA/88.166.1001", encode_values([prefix_site_value(3641)])))
    assert d.referral("88.166.1001/x") is None  # D's own handles: as before
    r = d.referral("88.166.1001.5/x")
    assert r is not None and r.response_code == ResponseCode.SERVICE_REFERRAL
    assert r.delegation.referral_handle == "0.NA/88.166.1001" and port_of(r) == 3641
    assert port_of(d.referral("88.166.1001.5.6/x")) == 3641
    r = d.referral("0.NA/88.166.1001.5")
    assert r is not None and r.response_code == ResponseCode.PREFIX_REFERRAL
    assert port_of(r) == 3641
    assert d.referral("0.NA/88.166.1001") is None  # the record itself is held here
    assert d.referral("88.166.1002/x") is None  # a sibling: homed here
    assert d.prefix_sites("88.166.1001.5") is None  # a 303, not an answer
    (v,) = decode_values(d.prefix_sites("88.166.1001") or b"")
    assert decode_site(v.data).servers[0].interfaces[0].port == 2641  # here
    assert d.prefixes == {"88.166.1001"} and len(d) == 1


def test_hs_site_and_hs_site_prefix_split_a_prefix_between_two_nodes() -> None:
    both = encode_values([site_value(3641), prefix_site_value(4641)])
    d = secondary(("0.NA/88.166.1001", both))
    assert port_of(d.referral("88.166.1001/x")) == 3641  # HS_SITE: D's handles
    assert port_of(d.referral("88.166.1001.5/x")) == 4641  # HS_SITE.PREFIX: D.x's
    assert port_of(d.referral("0.NA/88.166.1001.5")) == 4641
    # a deeper record of its own still wins over its ancestor's HS_SITE.PREFIX
    d = secondary(
        ("0.NA/88.166.1001", both),
        ("0.NA/88.166.1001.5", encode_values([site_value(5641)])),
    )
    assert port_of(d.referral("88.166.1001.5/x")) == 5641
    assert len(d.all()) == 3


def test_a_homed_prefix_may_send_its_derived_prefixes_elsewhere() -> None:
    d = secondary(
        ("0.NA/88.166", encode_values([ADMIN, site_value(2641), prefix_site_value(3641)]))
    )
    assert d.referral("88.166/x") is None  # homed
    assert port_of(d.referral("88.166.7/x")) == 3641
    r = d.referral("0.NA/88.166.7")
    assert r is not None and r.response_code == ResponseCode.PREFIX_REFERRAL
    assert d.referral("0.NA/88.166") is None


def test_sites_naming_this_node_are_served_here() -> None:
    """A record whose HS_SITE names this node (as its homed prefixes' records publish it)
    is no delegation: D's handles are local; its HS_SITE.PREFIX elsewhere still refers."""
    d = secondary(("0.NA/88.166.1001", encode_values([site_value(2641), prefix_site_value(3641)])))
    assert d.referral("88.166.1001/x") is None
    assert port_of(d.referral("88.166.1001.5/x")) == 3641
    assert d.referral("0.NA/88.166.1001") is None
    assert d.prefixes == {"88.166.1001"}
    d = secondary(("0.NA/88.166.1001", encode_values([prefix_site_value(2641)])))
    assert d.referral("88.166.1001.5/x") is None and len(d) == 0


def test_the_health_probes_watch_derived_delegations_too() -> None:
    d = secondary(("0.NA/88.166.1001", encode_values([prefix_site_value(3641)])))
    (server,) = delegated_servers(d)
    assert server.interfaces[0].port == 3641


class FakeStore:
    case_sensitive = False

    def __init__(self) -> None:
        self.rows = dict(records())

    async def prefix_records(self, limit: int = 100_000) -> list[tuple[str, bytes]]:
        return sorted(self.rows.items())

    async def get_many(self, keys: list[str]) -> dict[str, bytes]:
        return {k: self.rows[k] for k in keys if k in self.rows}


def test_the_stage_refers_and_reloads_on_a_prefix_handle_write() -> None:
    async def go() -> None:
        store = FakeStore()
        cleared = []
        stage = DelegationStage(
            Delegations(PrefixAuthority(["88"])),
            store,  # type: ignore[arg-type]
            on_change=lambda: cleared.append(1),
        )
        await stage.reload()
        got = await stage.lookup(Lookup("88.166.1001/x", "88.166.1001/X"))
        assert got is not None and not isinstance(got, type(None))
        assert got.response_code == 302 and got.referral == "0.NA/88.166.1001"  # type: ignore[union-attr]
        assert "127.0.0.1:3641" in got.message  # type: ignore[union-attr]
        assert await stage.lookup(Lookup("88.200/x", "88.200/X")) is None
        del store.rows["0.NA/88.166.1001"]
        await stage.invalidate(["88.200/X"])  # not a prefix handle: no reload
        assert (await stage.lookup(Lookup("88.166.1001/x", "88.166.1001/X"))).referral == (  # type: ignore[union-attr]
            "0.NA/88.166.1001"
        )
        await stage.invalidate(["0.NA/88.166.1001"])
        got = await stage.lookup(Lookup("88.166.1001/x", "88.166.1001/X"))
        assert got is not None and got.referral == "0.NA/88.166"  # type: ignore[union-attr]
        assert len(cleared) == 2  # built once, changed once: L1 cleared each time
        # another worker's write heard on the channel: a reload is scheduled
        store.rows["0.NA/88.166.1001"] = encode_values([site_value(3641)])
        stage.forget(["0.NA/88.166.1001"])
        # the next lookup waits for the rebuild the invalidation started
        got = await stage.lookup(Lookup("88.166.1001/x", "88.166.1001/X"))
        assert got is not None and got.referral == "0.NA/88.166.1001"  # type: ignore[union-attr]

    asyncio.run(go())


def test_the_node_site_is_published_once_and_bumped_when_it_changes() -> None:
    before = encode_values([ADMIN])
    first = site_update(before, site(2641))
    assert first is not None
    vals = {v.index: v for v in decode_values(first)}
    assert vals[100] == ADMIN  # kept
    assert decode_site(vals[SITE_INDEX].data) == site(2641)
    assert site_update(first, site(2641)) is None  # unchanged: nothing to write
    moved = site_update(first, site(2642))
    assert moved is not None
    s = decode_site({v.index: v for v in decode_values(moved)}[SITE_INDEX].data)
    assert s.servers[0].interfaces[0].port == 2642 and s.serial == 2
    assert site_update(moved, site(2642)) is None  # the bumped serial is not a change
    assert site_update(None, site(1)) is not None  # no record yet: one is made


def test_delegated_handles_have_no_prefix_admin_here() -> None:
    """The admin in 0.NA/88.166 governs that record and 0.NA/88.166.* (as the parent's
    admins), never handles 88.166/... at the node that delegated 88.166."""

    async def go() -> None:
        store = FakeStore()
        perms = Permissions(store)  # type: ignore[arg-type]
        assert await perms.prefix_admins("88.166/x") != []
        d = Delegations(PrefixAuthority(["88"]))
        d.build(d.candidates(records()), {})
        perms.delegations = d
        assert await perms.prefix_admins("88.166/x") == []
        assert await perms.prefix_admins("88.166/") != []  # the prefix's admins, asked for
        assert await perms.prefix_admins("0.NA/88.166.77") != []
        by = await perms.admins_by_prefix(["88.166/x", "88.200/y"], _who())
        assert by["88.166"] == [] and by["88.200"] != []

    asyncio.run(go())


def _who() -> Identity:
    return Identity("0.NA/88.166", 300)
