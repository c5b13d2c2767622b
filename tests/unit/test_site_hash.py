"""Which server of a multi-server site a client asks (SiteInfo.determineServer in the
reference): the vector of shared/vectors, the parts each hash option takes, and the
server picked from a real SiteInfo."""

from __future__ import annotations

import hashlib
import re

import pytest

from idnode.resolver.codec import Interface, ServerInfo, SiteInfo, server_index, site_hash
from idnode.resolver.codec.codes import HashOption
from idnode.resolver.codec.errors import ProtocolError
from idnode.resolver.codec.sitehash import hash_part, responsible_server
from tests.vectors import HERE

HANDLE = "20.500.12345/abc"


def _vector_figures() -> dict[str, int]:
    """The figures of the "site hashing of ..." line, read from the vectors file itself."""
    text = (HERE / "handle-vectors.txt").read_text()
    line = next(
        x for x in text.splitlines() if x.startswith('== site hashing of "20.500.12345/abc"')
    )
    return {k: int(v) for k, v in re.findall(r"by (prefix|suffix|whole handle) (\d+)", line)}


def test_the_vector_line_is_where_we_read_it() -> None:
    assert _vector_figures() == {
        "prefix": 1502227973,
        "suffix": 891676978,
        "whole handle": 1894531649,
    }


@pytest.mark.parametrize(
    ("option", "name"),
    [
        (HashOption.BY_PREFIX, "prefix"),
        (HashOption.BY_SUFFIX, "suffix"),
        (HashOption.BY_HANDLE, "whole handle"),
    ],
)
def test_hash_matches_the_vector(option: int, name: str) -> None:
    expected = _vector_figures()[name]
    assert site_hash(HANDLE, option) == expected
    assert site_hash("20.500.12345/ABC", option) == expected  # ASCII letters upper-cased


def test_the_rule_spelled_out() -> None:
    """MD5 of the upper-cased part, last four bytes as a signed int, absolute value."""
    d = hashlib.md5(b"20.500.12345/ABC").digest()
    assert site_hash(HANDLE, HashOption.BY_HANDLE) == abs(
        int.from_bytes(d[-4:], "big", signed=True)
    )
    assert hash_part(HANDLE, HashOption.BY_PREFIX) == b"20.500.12345"
    assert hash_part(HANDLE, HashOption.BY_SUFFIX) == b"ABC"
    # only ASCII letters change: the reference upper-cases byte by byte, a-z only
    assert hash_part("88/é-x", HashOption.BY_SUFFIX) == "é-X".encode()
    # the first slash splits; later ones belong to the suffix
    assert hash_part("88/a/b", HashOption.BY_SUFFIX) == b"A/B"
    # a slashless handle names a prefix: "0.NA" by prefix, itself by suffix
    assert hash_part("88.166", HashOption.BY_PREFIX) == b"0.NA"
    assert hash_part("88.abc", HashOption.BY_SUFFIX) == b"88.ABC"
    # prefix handles hash as written: the prefix part of 0.NA/x is "0.NA"
    assert hash_part("0.NA/88.166", HashOption.BY_PREFIX) == b"0.NA"


def test_unknown_option_and_empty_site_are_refused() -> None:
    with pytest.raises(ProtocolError):
        site_hash(HANDLE, 3)
    with pytest.raises(ProtocolError):
        server_index(HANDLE, HashOption.BY_HANDLE, 0)


def _site(n: int, option: int) -> SiteInfo:
    ifaces = (Interface(2, 0, 2641),)
    servers = tuple(ServerInfo.at(f"127.0.0.{i + 1}", i + 1, ifaces) for i in range(n))
    return SiteInfo(servers, hash_option=option)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
@pytest.mark.parametrize("option", list(HashOption))
def test_responsible_server_is_the_hashed_one(n: int, option: int) -> None:
    site = _site(n, option)
    expected = _vector_figures()[["prefix", "suffix", "whole handle"][option]] % n
    assert responsible_server(site, HANDLE) is site.servers[expected]


def test_by_prefix_keeps_a_prefix_on_one_server() -> None:
    site = _site(5, HashOption.BY_PREFIX)
    picked = {responsible_server(site, f"20.500.12345/{i}").server_id for i in range(50)}
    assert len(picked) == 1
