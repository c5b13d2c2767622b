"""The JSON form matches the reference REST API's shape and round-trips every format."""

from __future__ import annotations

import pytest
from hypothesis import given

from idnode.resolver.codec import (
    AdminRecord,
    HandleValue,
    ProtocolError,
    RsaPublicKey,
    encode_admin,
    encode_public_key,
)
from idnode.resolver.codec.jsonform import (
    handle_to_json,
    value_from_json,
    value_to_json,
    values_from_json,
)
from idnode.resolver.codec.values import ValueReference
from idnode.resolver.codec.vlist import encode_vlist
from tests import strategies as s
from tests.vectors import vector


def test_reference_shape_of_a_url_value() -> None:
    v = HandleValue(1, "URL", b"http://example.com/", 86400, 0, 1006359695, 0x0E)
    assert value_to_json(v) == {
        "index": 1,
        "type": "URL",
        "data": {"format": "string", "value": "http://example.com/"},
        "ttl": 86400,
        "timestamp": "2001-11-21T16:21:35Z",
    }
    assert handle_to_json("88.166.1/x", [v])["responseCode"] == 1


def test_admin_value_in_reference_form() -> None:
    v = HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord(0x0FF2, "0.NA/88.166", 300)))
    j = value_to_json(v)
    assert j["data"] == {
        "format": "admin",
        "value": {"handle": "0.NA/88.166", "index": 300, "permissions": "111111110010"},
    }
    assert value_from_json(j) == v


def test_permissions_appear_only_when_not_default() -> None:
    assert "permissions" not in value_to_json(HandleValue(1, "X", b"a"))
    j = value_to_json(HandleValue(1, "X", b"a", permissions=0x0C))
    assert j["permissions"] == "1100"
    assert value_from_json(j).permissions == 0x0C


@pytest.mark.parametrize(
    ("vtype", "data", "fmt"),
    [
        ("HS_SITE", vector("HS_SITE data"), "site"),
        ("HS_VLIST", encode_vlist([ValueReference("88.1/a", 1)]), "vlist"),
        ("HS_PUBKEY", encode_public_key(RsaPublicKey(65537, 2**1023 + 12345)), "key"),
        ("BIN", b"\x00\x01\xff", "base64"),
        ("TEXT", "产品 ABC-123".encode(), "string"),
    ],
)
def test_typed_formats_round_trip(vtype: str, data: bytes, fmt: str) -> None:
    v = HandleValue(7, vtype, data, timestamp=1700000000)
    j = value_to_json(v)
    assert j["data"]["format"] == fmt
    assert value_from_json(j) == v


def test_hex_input_and_absolute_ttl() -> None:
    v = value_from_json(
        {
            "index": 2,
            "type": "X",
            "data": {"format": "hex", "value": "00ff"},
            "ttl": "2030-01-01T00:00:00Z",
            "timestamp": "2001-11-21T16:21:35Z",
        }
    )
    assert v.data == b"\x00\xff" and v.ttl_type == 1 and v.ttl == 1893456000
    assert value_to_json(v)["ttl"] == "2030-01-01T00:00:00Z"


@given(s.values)
def test_value_round_trip_through_json(v: HandleValue) -> None:
    if v.index <= 0 or v.ttl < 0 or v.permissions > 0x0F:
        return  # outside what the JSON form can say; refused on input instead
    assert value_from_json(value_to_json(v)).data == v.data


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ({"type": "URL"}, "missing 'index'"),
        ({"index": 0, "type": "URL"}, "positive integer"),
        ({"index": 1, "type": "URL", "data": {"format": "nope", "value": ""}}, "unknown data"),
        ({"index": 1, "type": "URL", "data": {"format": "base64", "value": "!!"}}, "base64"),
        ({"index": 1, "type": "URL", "extra": 1}, "unknown value fields"),
        ({"index": 1, "type": "URL", "permissions": "12"}, "permissions"),
        ({"index": 1, "type": "URL", "ttl": -5}, "ttl"),
    ],
)
def test_bad_json_values_say_why(bad: dict[str, object], why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        value_from_json(bad)


def test_duplicate_indexes_are_refused() -> None:
    with pytest.raises(ProtocolError, match="twice"):
        values_from_json({"values": [{"index": 1, "type": "A"}, {"index": 1, "type": "B"}]})
