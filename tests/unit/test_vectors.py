"""Every vector in shared/vectors/handle-vectors.txt decodes to its stated facts, and
where the vector is an encoder's output, encoding those facts gives the same bytes."""

from __future__ import annotations

import pytest

from idnode.resolver.codec import (
    AdminRecord,
    ErrorResponse,
    GetSiteInfoRequest,
    HandleValue,
    Interface,
    Message,
    OpCode,
    OpFlag,
    ResolutionRequest,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    decode,
    decode_admin,
    decode_site,
    decode_value,
    encode,
    encode_admin,
    encode_site,
    encode_value,
    server_index,
    site_hash,
    split_datagrams,
)
from idnode.resolver.codec.codes import NOT_HOMED_MESSAGE, HashOption
from idnode.resolver.codec.message import decode_envelope
from idnode.resolver.codec.values import ValueReference
from tests.vectors import FILES, HERE, SHARED, load, vector

HANDLE = "20.500.12345/abc"
URL_VALUE = HandleValue(1, "URL", b"http://example.com/", 86400, 0, 1700000000, 0x0E)
ADMIN = AdminRecord(0x0FFF, "0.NA/20.500.12345", 200)
ADMIN_VALUE = HandleValue(100, "HS_ADMIN", encode_admin(ADMIN), 86400, 0, 1700000000, 0x0E)
FIRST_REQUEST = Message(
    op_code=OpCode.RESOLUTION,
    body=ResolutionRequest(HANDLE),
    op_flags=OpFlag.REC | OpFlag.CA | OpFlag.PO,
    request_id=0x01020304,
    major_version=2,
    minor_version=1,
    site_info_serial=0xFFFF,
    expiration=0x5F5E1000,
)


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/ is not beside this checkout")
@pytest.mark.parametrize("name", FILES)
def test_vectors_copy_matches_shared(name: str) -> None:
    assert (HERE / name).read_bytes() == (SHARED / name).read_bytes()


def test_every_vector_is_covered() -> None:
    titles = [t for t, _ in load()]
    assert len(titles) == 11  # a new vector in shared/ must get a test here


def test_resolution_request() -> None:
    wire = vector("resolution request, all values")
    assert len(wire) == 76
    m = decode(wire)
    assert m == FIRST_REQUEST
    assert m.op_flags == 0x19000000
    assert encode(FIRST_REQUEST) == wire


def test_handle_value() -> None:
    wire = vector("handle value: index 1")
    assert decode_value(wire) == URL_VALUE
    assert encode_value(URL_VALUE) == wire


def test_hs_admin_data() -> None:
    wire = vector("HS_ADMIN data")
    assert decode_admin(wire) == ADMIN
    assert encode_admin(ADMIN) == wire


def test_resolution_response() -> None:
    wire = vector("resolution response to the first request")
    assert len(wire) == 181
    expected = Message(
        op_code=OpCode.RESOLUTION,
        body=ResolutionResponse(HANDLE, (URL_VALUE, ADMIN_VALUE)),
        response_code=ResponseCode.SUCCESS,
        op_flags=0x19000000,
        request_id=0x01020304,
        site_info_serial=0xFFFF,
        expiration=0x5F5E1000,
    )
    assert decode(wire) == expected
    assert encode(expected) == wire


def test_error_response() -> None:
    wire = vector("error response to the first request")
    assert len(wire) == 52
    m = decode(wire)
    assert m.response_code == ResponseCode.HANDLE_NOT_FOUND
    assert m.body == ErrorResponse("")
    assert m.request_id == 0x01020304
    assert encode(m) == wire


def test_hs_site_data() -> None:
    wire = vector("HS_SITE data")
    site = SiteInfo(
        servers=(
            ServerInfo.at(
                "127.0.0.1",
                server_id=1,
                interfaces=(Interface(3, 1, 2641), Interface(2, 0, 2641), Interface(3, 2, 8000)),
            ),
        ),
        serial=1,
        major_version=2,
        minor_version=10,
        primary_mask=0x80,
        hash_option=HashOption.BY_HANDLE,
        attributes=(("desc", "test"),),
    )
    decoded = decode_site(wire)
    assert decoded == site
    assert decoded.primary and not decoded.multi_primary
    assert decoded.servers[0].ip == "127.0.0.1"
    assert encode_site(site) == wire


def test_get_site_info_request() -> None:
    wire = vector("get-site-info request")
    assert len(wire) == 53
    m = decode(wire)
    assert m.op_code == OpCode.GET_SITE_INFO and m.request_id == 9 and m.expiration == 0
    assert m.op_flags == 0x19000000
    assert m.body == GetSiteInfoRequest("/")
    assert encode(m) == wire


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (HashOption.BY_PREFIX, 1502227973),
        (HashOption.BY_SUFFIX, 891676978),
        (HashOption.BY_HANDLE, 1894531649),
    ],
)
def test_site_hashing(option: int, expected: int) -> None:
    assert site_hash(HANDLE, option) == expected
    # case-insensitive over ASCII letters, as the clients hash
    assert site_hash(HANDLE.upper(), option) == expected
    assert server_index(HANDLE, option, 7) == expected % 7


def test_captured_tcp_resolution_response() -> None:
    wire = vector("captured: TCP response")
    m = decode(wire)
    assert m.response_code == ResponseCode.SUCCESS
    assert m.op_flags == 0x99000000
    assert m.has(OpFlag.AT) and not m.has(OpFlag.RD)
    assert m.site_info_serial == 1
    assert m.request_id == 0x01020304
    assert m.body == ResolutionResponse(HANDLE, (URL_VALUE,))
    assert encode(m) == wire


def test_captured_not_homed_answer() -> None:
    wire = vector("captured: the same server's answer")
    m = decode(wire)
    assert m.response_code == ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE
    assert m.body == ErrorResponse(NOT_HOMED_MESSAGE)
    assert encode(m) == wire


def test_captured_udp_multi_packet_layout() -> None:
    # The capture gives the layout, not the bytes: 1728 message bytes in
    # 512/512/512/272-byte datagrams, total length in every envelope, no truncated flag.
    def response(pad: int) -> bytes:
        values = tuple(
            HandleValue(
                i,
                "URL",
                b"x" * (37 + (pad if i == 1 else 0)),
                86400,
                0,
                1700000000,
                0x0E,
                (ValueReference("0.NA/1", 1),),
            )
            for i in range(1, 20)
        )
        m = Message(
            op_code=1, body=ResolutionResponse(HANDLE, values), response_code=1, request_id=16909060
        )
        return encode(m)

    # pad one value's data so the message is exactly 1728 bytes, as in the capture
    wire = response(1728 - (len(response(0)) - 20))
    assert len(wire) - 20 == 1728
    grams = split_datagrams(wire)
    assert [len(g) for g in grams] == [512, 512, 512, 272]
    for seq, g in enumerate(grams):
        env = decode_envelope(g)
        assert (env.major_version, env.minor_version, env.flags, env.session_id) == (2, 1, 0, 0)
        assert env.request_id == 16909060
        assert env.sequence == seq
        assert env.message_length == 1728
        assert not env.truncated
