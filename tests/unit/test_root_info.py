"""The root site file: the reference's own root_info (inside handle.jar) and siteinfo.json
(its server template) read as the reference reads them; ours written and read back."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from idnode.resolver.codec import Interface, ServerInfo, SiteInfo, encode_site
from idnode.resolver.codec.codes import HashOption
from idnode.resolver.upstream.root_info import (
    RootInfoError,
    decode_global_values,
    encode_root_info,
    load_root_info,
    read_root_info,
    write_root_info,
)
from idnode.resolver.upstream.sites import alt_site, sites_from_values

CLIENTS = Path(__file__).resolve().parents[3] / "shared" / "clients"
HANDLE_JAR = CLIENTS / "cnri-7.3.1" / "handle.jar"
TEMPLATE_SITE = CLIENTS / "cnri-server-template" / "siteinfo.json"

IFACES = (Interface(3, 1, 2641), Interface(2, 0, 2641), Interface(3, 2, 8000))


def _site(*ips: str, **kw: object) -> SiteInfo:
    servers = tuple(ServerInfo.at(ip, i, IFACES, b"key%d" % i) for i, ip in enumerate(ips, 1))
    return SiteInfo(servers, **kw)  # type: ignore[arg-type]


@pytest.mark.skipif(not HANDLE_JAR.is_file(), reason="shared/clients is not beside this checkout")
def test_reads_the_root_info_the_reference_ships() -> None:
    with zipfile.ZipFile(HANDLE_JAR) as z:
        data = z.read("net/handle/etc/root_info")
    info = read_root_info(data)
    assert info.form == "root_info"
    # the global values: admins, a key, signatures, and the root sites
    assert len(info.values) == 14
    assert {v.type for v in info.values} >= {"HS_SITE", "HS_ADMIN", "HS_PUBKEY", "HS_VLIST"}
    assert sum(v.type == "HS_SITE" for v in info.values) == 6
    # six sites, one with alt_addr, so seven, as getSitesAndAltSitesFromValues gives
    assert len(info.sites) == 7
    primary = [s for s in info.sites if s.primary]
    assert [s.servers[0].ip for s in primary] == ["38.100.138.131", "2001:550:100:6::4"]
    assert dict(primary[0].attributes)["desc"] == "Root Primary"
    for s in info.sites:
        assert s.hash_option == HashOption.BY_HANDLE and len(s.servers) == 1
        assert [(i.type, i.protocol, i.port) for i in s.servers[0].interfaces] == [
            (3, 1, 2641),
            (2, 0, 2641),
            (3, 2, 8000),
        ]
        assert s.servers[0].public_key  # certified answers can be checked
    # the bytes after the values decode exactly: what we write for those values is the file
    from idnode.resolver.upstream.root_info import encode_global_values

    assert encode_global_values(info.values) == data


@pytest.mark.skipif(
    not TEMPLATE_SITE.is_file(), reason="shared/clients is not beside this checkout"
)
def test_reads_the_reference_servers_siteinfo_json(tmp_path: Path) -> None:
    info = load_root_info(TEMPLATE_SITE)
    assert info.form == "json"
    (site,) = info.sites
    assert site.primary and not site.multi_primary
    assert (site.major_version, site.minor_version) == (2, 5)
    (srv,) = site.servers
    assert srv.ip == "127.0.0.1" and srv.server_id == 1
    assert srv.public_key.startswith(b"\x00\x00\x00\x0bDSA_PUB_KEY")
    assert [(i.protocol, i.port, i.serves_queries) for i in srv.interfaces] == [
        (1, 2641, True),
        (0, 2641, True),
        (2, 18000, True),
    ]
    # written as root_info and read back: the same site
    out = tmp_path / "root_info"
    write_root_info(out, info.sites)
    assert load_root_info(out).sites == info.sites


def test_round_trip(tmp_path: Path) -> None:
    sites = [
        _site("127.0.0.1", "127.0.0.2", hash_option=HashOption.BY_PREFIX, serial=7),
        _site("2001:db8::7", primary_mask=0, attributes=(("desc", "mirror"),)),
    ]
    data = encode_root_info(sites)
    info = read_root_info(data)
    assert info.sites == tuple(sites)
    assert [v.type for v in info.values] == ["HS_SITE", "HS_SITE.6"]
    assert [v.index for v in info.values] == [1, 2]
    path = tmp_path / "root_info"
    write_root_info(path, sites)
    assert path.read_bytes() == data
    assert not list(tmp_path.glob(".root_info.*"))  # no temporary file left behind


def test_a_bare_site_record_is_read_too(tmp_path: Path) -> None:
    """What GetSiteInfo writes (the client's resolver_site)."""
    site = _site("127.0.0.1")
    path = tmp_path / "resolver_site"
    path.write_bytes(encode_site(site))
    info = load_root_info(path)
    assert info.form == "site" and info.sites == (site,)


def test_alt_addr_gives_a_twin_site() -> None:
    site = _site("192.0.2.1", attributes=(("alt_addr", "2001:db8::1"),))
    twin = alt_site(site)
    assert twin is not None and twin.servers[0].ip == "2001:db8::1"
    assert twin.servers[0].public_key == site.servers[0].public_key
    many = _site("192.0.2.1", "192.0.2.2", attributes=(("alt_addr.2", "2001:db8::2"),))
    twin = alt_site(many)
    assert twin is not None and [s.server_id for s in twin.servers] == [2]
    assert alt_site(_site("192.0.2.1", attributes=(("alt_addr", "not an address"),))) is None


def test_bad_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(RootInfoError, match="no HS_SITE"):
        read_root_info(encode_root_info([]))
    with pytest.raises(RootInfoError):
        read_root_info(b"\x00\x00\x00\x10abc")
    with pytest.raises(RootInfoError, match="not JSON"):
        read_root_info(b"{nope")
    with pytest.raises(RootInfoError, match=r"(?i)no such file"):
        load_root_info(tmp_path / "missing")
    # a corrupt site value among good ones is skipped, as the reference skips it
    good = encode_root_info([_site("127.0.0.1")])
    values = decode_global_values(good)
    from dataclasses import replace

    broken = (replace(values[0], data=b"\x00\x01"), values[0])
    assert len(sites_from_values(broken)) == 1
