"""Malformed input raises ProtocolError with a reason, and nothing else.

Never IndexError, struct.error, MemoryError, UnicodeDecodeError, a hang or a huge
allocation: the specific cases the issue lists, then random and mutated bytes.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idnode.resolver.codec import (
    HandleValue,
    Message,
    OpCode,
    ProtocolError,
    ResolutionRequest,
    decode,
    decode_admin,
    decode_public_key,
    decode_resolution,
    decode_site,
    decode_value,
    decode_values,
    encode,
    encode_value,
)
from idnode.resolver.codec.auth import decode_secret_key_mac, decode_signature
from idnode.resolver.codec.bodies import CreateHandleRequest, HandleOnlyRequest, ResolutionResponse
from idnode.resolver.codec.codes import MAX_HANDLE_LENGTH, MAX_MESSAGE_LENGTH, MAX_VALUES
from idnode.resolver.codec.jsonform import data_to_json, value_from_json, values_from_json
from idnode.resolver.codec.vlist import decode_vlist
from tests import strategies as s
from tests.vectors import vector

CORPUS = Path(__file__).parents[1] / "fuzz_corpus"
REQUEST = vector("resolution request, all values")
RESPONSE = vector("resolution response to the first request")


def frame(op: int, rc: int, body: bytes, *, flags: int = 0, credential: bytes = b"") -> bytes:
    """A message with correct lengths around an arbitrary body."""
    cred = struct.pack(">I", len(credential)) + credential
    mlen = 24 + len(body) + len(cred)
    return (
        struct.pack(">BBBBIIII", 2, 1, 0, 0, 0, 1, 0, mlen)
        + struct.pack(">IIIHBBII", op, rc, flags, 0xFFFF, 0, 0, 0, len(body))
        + body
        + cred
    )


def raises(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode(data)


def test_every_truncation_of_a_valid_message_is_rejected() -> None:
    for wire in (REQUEST, RESPONSE):
        for cut in range(len(wire)):
            with pytest.raises(ProtocolError):
                decode(wire[:cut])


def test_length_pointing_past_the_end() -> None:
    body = struct.pack(">I", 100) + b"abc" + bytes(8)
    raises(frame(1, 0, body), "points past the end")


def test_negative_length() -> None:
    raises(frame(1, 0, b"\xff\xff\xff\xff" + bytes(8)), "negative length")


@pytest.mark.parametrize("count", [2**31, 2**31 - 1, 2**32 - 1, MAX_VALUES + 1])
def test_huge_value_count(count: int) -> None:
    body = struct.pack(">I", 1) + b"a" + struct.pack(">I", count)
    with pytest.raises(ProtocolError, match="count"):
        decode(frame(1, 1, body))


def test_a_count_of_2_31_allocates_nothing_large() -> None:
    body = struct.pack(">I", 1) + b"a" + struct.pack(">I", 2**31 - 1) + bytes(26)
    wire = frame(1, 1, body)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            decode(wire)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_handle_over_2048_bytes() -> None:
    h = "a" * (MAX_HANDLE_LENGTH + 1)
    wire = encode(Message(op_code=1, body=ResolutionRequest("x")))
    body = struct.pack(">I", len(h)) + h.encode() + bytes(8)
    raises(frame(1, 0, body), "over the limit")
    assert decode(wire).body == ResolutionRequest("x")


def test_handle_of_exactly_2048_bytes_is_accepted() -> None:
    h = "a" * MAX_HANDLE_LENGTH
    assert decode(encode(Message(op_code=1, body=ResolutionRequest(h)))).body == (
        ResolutionRequest(h)
    )


def test_message_over_262144_bytes() -> None:
    env = struct.pack(">BBBBIIII", 2, 1, 0, 0, 0, 1, 0, MAX_MESSAGE_LENGTH + 1)
    raises(env + bytes(24), "over the limit")
    with pytest.raises(ProtocolError, match="over the limit"):
        encode(
            Message(
                op_code=1,
                body=ResolutionResponse("a", (HandleValue(1, "URL", b"x" * MAX_MESSAGE_LENGTH),)),
            )
        )


def test_more_than_2048_values() -> None:
    v = encode_value(HandleValue(1, "", b""))
    body = struct.pack(">I", 1) + b"a" + struct.pack(">I", MAX_VALUES + 1) + v * (MAX_VALUES + 1)
    raises(frame(100, 0, body), "over the limit of 2048")
    with pytest.raises(ProtocolError):
        encode(
            Message(
                op_code=100,
                body=CreateHandleRequest("a/b", (HandleValue(1, "", b""),) * (MAX_VALUES + 1)),
            )
        )


def test_invalid_utf8_in_a_handle() -> None:
    body = struct.pack(">I", 4) + b"a\xff/b" + bytes(8)
    raises(frame(1, 0, body), "invalid UTF-8")


def test_trailing_bytes_in_a_body() -> None:
    raises(frame(1, 0, REQUEST[44:-4] + b"\x00"), "trailing bytes")


def test_trailing_bytes_after_the_credential() -> None:
    raises(REQUEST + b"\x00", "message bytes but")
    wire = frame(1, 0, REQUEST[44:-4], credential=b"abc")
    assert decode(wire).credential == b"abc"
    bad = bytearray(wire)
    struct.pack_into(">I", bad, len(bad) - 7, 2)
    raises(bytes(bad), "credential length")


def test_body_length_past_the_message() -> None:
    bad = bytearray(REQUEST)
    struct.pack_into(">I", bad, 40, 1000)
    raises(bytes(bad), "body length")


def test_unknown_digest_type() -> None:
    raises(frame(1, 1, b"\x09" + bytes(20), flags=0x00800000), "unknown hash type")


def test_unknown_opcode_decodes_to_a_generic_message() -> None:
    m = decode(frame(4242, 0, b"anything"))
    assert m.op_code == 4242 and m.body.raw == b"anything"  # type: ignore[union-attr]
    # SESSION_TERMINATE carries "/" from the reference library; an empty body is tolerated
    assert decode(frame(OpCode.SESSION_TERMINATE, 0, b"")).body == HandleOnlyRequest("")


def test_not_a_resolution_decodes_to_none_in_the_fast_path() -> None:
    assert decode_resolution(RESPONSE) is None
    with pytest.raises(ProtocolError):
        decode_resolution(RESPONSE[:-1])


# --- property-based: nothing escapes but ProtocolError ------------------------------

DECODERS: list[Callable[[bytes], object]] = [
    decode,
    decode_resolution,
    decode_value,
    decode_values,
    decode_site,
    decode_admin,
    decode_public_key,
    decode_vlist,
    decode_secret_key_mac,
    decode_signature,
]


def only_protocol_errors(fn: Callable[[bytes], object], data: bytes) -> None:
    try:
        fn(data)
    except ProtocolError as exc:
        assert exc.reason  # every refusal says why


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    for fn in DECODERS:
        only_protocol_errors(fn, data)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bodies_behind_a_valid_preamble(body: bytes) -> None:
    # Random bytes rarely pass the envelope checks; a correct frame puts them in every reader.
    for op, rc, flags in [
        (1, 0, 0),
        (1, 1, 0),
        (2, 1, 0),
        (100, 0, 0),
        (102, 0, 0),
        (103, 0, 0),
        (105, 1, 0),
        (200, 0, 0),
        (201, 0, 0),
        (201, 1, 0),
        (2001, 0, 0),
        (1, 302, 0),
        (102, 402, 0x00800000),
        (1, 100, 0x00800000),
    ]:
        only_protocol_errors(decode, frame(op, rc, body, flags=flags))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    wire = bytearray(encode(draw(s.messages())))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "int"]))
        pos = draw(st.integers(0, max(0, len(wire) - 1)))
        if kind == "flip" and wire:
            wire[pos] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and wire:
            del wire[pos : pos + draw(st.integers(1, 8))]
        elif kind == "int" and len(wire) >= 4:
            p = min(pos, len(wire) - 4)
            wire[p : p + 4] = struct.pack(
                ">I", draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2049]))
            )
    if draw(st.booleans()) and len(wire) >= 44:
        # keep the lengths consistent so the mutation reaches the body readers
        struct.pack_into(">I", wire, 16, len(wire) - 20)
        struct.pack_into(">I", wire, 40, max(0, len(wire) - 48))
    return bytes(wire)


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages(data: bytes) -> None:
    only_protocol_errors(decode, data)
    only_protocol_errors(decode_resolution, data)


@given(
    st.sampled_from(["HS_ADMIN", "HS_SITE", "HS_SITE.6", "HS_VLIST", "HS_PUBKEY", "URL"]),
    st.binary(max_size=200),
)
def test_json_form_of_any_data_never_fails(vtype: str, data: bytes) -> None:
    out = data_to_json(vtype, data)
    assert out["format"] in {"string", "base64", "admin", "vlist", "site", "key"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "index",
                "type",
                "data",
                "ttl",
                "timestamp",
                "permissions",
                "references",
                "format",
                "value",
            ]
        ),
        json_values,
        max_size=6,
    )
)
def test_any_json_value_is_accepted_or_refused_with_a_reason(j: dict[str, object]) -> None:
    try:
        value_from_json(j)
    except ProtocolError as exc:
        assert exc.reason
    try:
        values_from_json([j, j])
    except ProtocolError as exc:
        assert exc.reason


# --- the fuzz corpus ------------------------------------------------------------------


def corpus() -> list[Path]:
    return sorted(CORPUS.glob("*.bin"))


def test_corpus_is_there() -> None:
    assert len(corpus()) >= 10


@pytest.mark.parametrize("path", corpus(), ids=lambda p: p.name)
def test_corpus_entry(path: Path) -> None:
    data = path.read_bytes()
    if path.name.startswith("ok-"):
        assert decode(data) is not None
    else:
        with pytest.raises(ProtocolError):
            decode(data)
