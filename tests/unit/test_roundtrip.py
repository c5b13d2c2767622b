"""Every message type round-trips: decode(encode(m)) == m and encode(decode(w)) == w."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from idnode.resolver.codec import (
    HandleValue,
    ProtocolError,
    decode,
    decode_resolution,
    decode_site,
    decode_value,
    decode_values,
    encode,
    encode_resolution_answer,
    encode_site,
    encode_value,
    encode_values,
    put_text,
)
from idnode.resolver.codec.admin import AdminRecord, decode_admin, encode_admin
from idnode.resolver.codec.auth import (
    MAC_HMAC_SHA256,
    MAC_PBKDF2_HMAC_SHA1,
    PublicKeySignature,
    SecretKeyMac,
    decode_secret_key_mac,
    decode_signature,
    encode_secret_key_mac,
    encode_signature,
)
from idnode.resolver.codec.bodies import ResolutionRequest, ResolutionResponse
from idnode.resolver.codec.codes import OpCode, OpFlag
from idnode.resolver.codec.hs_site import SiteInfo
from idnode.resolver.codec.keys import (
    DsaPublicKey,
    RsaPublicKey,
    decode_public_key,
    encode_public_key,
)
from idnode.resolver.codec.message import Message
from idnode.resolver.codec.values import ValueReference, summarize_values
from idnode.resolver.codec.vlist import decode_vlist, encode_vlist
from tests import strategies as s


@settings(max_examples=600)
@given(s.messages())
def test_message_round_trip(m: Message) -> None:
    wire = encode(m)
    assert decode(wire) == m
    assert encode(decode(wire)) == wire


@given(s.values)
def test_value_round_trip(v: HandleValue) -> None:
    wire = encode_value(v)
    assert decode_value(wire) == v
    assert decode_values(encode_values([v, v])) == (v, v)


@given(s.sites)
def test_site_round_trip(site: SiteInfo) -> None:
    assert decode_site(encode_site(site)) == site


@given(st.builds(AdminRecord, s.u16, s.handles, s.i32))
def test_admin_round_trip(a: AdminRecord) -> None:
    assert decode_admin(encode_admin(a)) == a


@given(st.lists(s.references, max_size=5).map(tuple))
def test_vlist_round_trip(refs: tuple[ValueReference, ...]) -> None:
    assert decode_vlist(encode_vlist(refs)) == refs


@given(st.integers(1, 2**4096), st.integers(1, 2**64))
def test_rsa_key_round_trip(n: int, e: int) -> None:
    k = RsaPublicKey(e, n)
    assert decode_public_key(encode_public_key(k)) == k


@given(*(st.integers(0, 2**1024) for _ in range(4)))
def test_dsa_key_round_trip(q: int, p: int, g: int, y: int) -> None:
    k = DsaPublicKey(q, p, g, y)
    assert decode_public_key(encode_public_key(k)) == k


@given(st.binary(min_size=32, max_size=32))
def test_hmac_answer_round_trip(mac: bytes) -> None:
    m = SecretKeyMac(MAC_HMAC_SHA256, mac)
    assert decode_secret_key_mac(encode_secret_key_mac(m)) == m


@given(
    st.binary(max_size=32),
    st.integers(1, 100_000),
    st.sampled_from([8, 128, 160]),
    st.binary(max_size=32),
)
def test_pbkdf2_answer_round_trip(salt: bytes, iterations: int, bits: int, mac: bytes) -> None:
    m = SecretKeyMac(MAC_PBKDF2_HMAC_SHA1, mac, salt, iterations, bits)
    assert decode_secret_key_mac(encode_secret_key_mac(m)) == m


@given(st.sampled_from(["SHA-256", "SHA1"]), st.binary(max_size=512))
def test_signature_round_trip(alg: str, sig: bytes) -> None:
    p = PublicKeySignature(alg, sig)
    assert decode_signature(encode_signature(p)) == p


@given(s.handles, s.value_lists, s.u32, s.u32, st.booleans())
def test_fast_path_matches_generic_encoder(
    handle: str, values: tuple[HandleValue, ...], rid: int, flags: int, po: bool
) -> None:
    flags = (flags | OpFlag.PO) if po else flags & ~OpFlag.PO
    req = Message(
        op_code=OpCode.RESOLUTION,
        body=ResolutionRequest(handle),
        op_flags=flags,
        request_id=rid,
        major_version=2,
        minor_version=10,
        expiration=12345,
    )
    q = decode_resolution(encode(req))
    assert q is not None and q.request == req.body and q.request_id == rid
    fast = encode_resolution_answer(q, put_text(handle), encode_values(values), site_info_serial=3)
    slow = Message(
        op_code=OpCode.RESOLUTION,
        body=ResolutionResponse(handle, values),
        response_code=1,
        op_flags=(flags | OpFlag.AT) & ~OpFlag.RD,
        request_id=rid,
        major_version=2,
        minor_version=10,
        site_info_serial=3,
        expiration=12345,
    )
    assert fast == encode(slow)


@settings(max_examples=400)
@given(s.messages())
def test_fast_decode_agrees_with_the_general_decoder(m: Message) -> None:
    wire = encode(m)
    general = decode(wire)
    q = decode_resolution(wire)
    if general.op_code == OpCode.RESOLUTION and general.is_request:
        assert q is not None and q.request == general.body
        assert (q.request_id, q.session_id, q.op_flags, q.expiration) == (
            general.request_id,
            general.session_id,
            general.op_flags,
            general.expiration,
        )
        assert (q.major_version, q.minor_version) == (general.major_version, general.minor_version)
    else:
        assert q is None


@settings(max_examples=300)
@given(s.handles, s.u32, st.binary(min_size=1, max_size=3), st.integers(0, 80))
def test_fast_decode_refuses_what_the_general_decoder_refuses(
    handle: str, rid: int, junk: bytes, pos: int
) -> None:
    wire = bytearray(encode(Message(op_code=1, body=ResolutionRequest(handle), request_id=rid)))
    p = min(pos, len(wire) - 1)
    wire[p : p + len(junk)] = junk
    data = bytes(wire)
    try:
        general: Message | None = decode(data)
    except ProtocolError:
        general = None
    try:
        q = decode_resolution(data)
    except ProtocolError:
        assert general is None
    else:
        if general is None:
            raise AssertionError("the fast path accepted bytes the general decoder refuses")
        if general.op_code == OpCode.RESOLUTION and general.is_request:
            assert q is not None and q.request == general.body


@given(s.value_lists)
def test_summary_agrees_with_the_decoded_values(values: tuple[HandleValue, ...]) -> None:
    all_public, rel, ab = summarize_values(encode_values(values))
    assert all_public == all(v.public_read for v in values)
    rels = [v.ttl for v in values if v.ttl_type == 0]
    abss = [v.ttl for v in values if v.ttl_type == 1]
    assert rel == (min(rels) if rels else None)
    assert ab == (min(abss) if abss else None)


@given(st.binary(max_size=200))
def test_summary_of_any_bytes_raises_only_protocol_errors(data: bytes) -> None:
    # The summary checks structure, not UTF-8 or enum ranges: registry rows were
    # validated when written. It must still never fail any other way.
    try:
        summarize_values(data)
    except ProtocolError as exc:
        assert exc.reason


_plain_values = st.builds(
    HandleValue,
    index=st.integers(1, 2**31 - 1),
    type=st.sampled_from(["URL", "EMAIL", "TEMPLATE", "URL.1", "", "液压"]),
    data=s.small_bytes,
    ttl=s.i32,
    ttl_type=st.integers(0, 1),
    timestamp=st.integers(0, 2**32 - 1),
    permissions=st.integers(0, 0x0F),
    references=st.lists(s.references, max_size=2).map(tuple),
)


@given(st.lists(_plain_values, max_size=6, unique_by=lambda v: v.index))
def test_prepared_values_are_the_stamped_values_in_index_order(values: list[HandleValue]) -> None:
    """prepare encodes from the fields (no HandleValue each): the same bytes as stamping
    each value and encoding the list in index order."""
    import dataclasses

    from idnode.registry.value_checks import encode_sorted, prepare

    wire = prepare(tuple(values), None)
    got = decode_values(wire)
    stamp = got[0].timestamp if got else 0
    assert wire == encode_sorted([dataclasses.replace(v, timestamp=stamp) for v in values])


@given(s.value_lists)
def test_a_list_decoded_again_is_the_same_and_equal_to_a_fresh_decoding(
    values: tuple[HandleValue, ...],
) -> None:
    """Small lists are kept decoded: equal bytes (another object, as read anew from the
    registry) give the very same tuple, equal to a decoding from scratch."""
    from idnode.resolver.codec import values as codec_values

    wire = encode_values(values)
    first = decode_values(wire)
    assert first == values == codec_values._decode_values(wire)
    if len(wire) <= codec_values.DECODED_MAX_BYTES:
        assert decode_values(bytes(bytearray(wire))) is first


def test_a_bad_list_is_refused_every_time_and_the_keep_is_bounded() -> None:
    from idnode.resolver.codec import values as codec_values

    bad = encode_values([HandleValue(1, "URL", b"x")])[:-1]
    for _ in range(2):  # an error is not kept as an answer
        try:
            decode_values(bad)
        except ProtocolError:
            pass
        else:
            raise AssertionError("a truncated list decoded")
    big = encode_values([HandleValue(1, "URL", b"x" * codec_values.DECODED_MAX_BYTES)])
    assert decode_values(big) is not decode_values(big)  # over the bound: not kept
    for i in range(codec_values.DECODED_LISTS + 10):
        decode_values(encode_values([HandleValue(1, "URL", b"%d" % i)]))
    assert codec_values._decode_values_kept.cache_info().currsize <= codec_values.DECODED_LISTS
