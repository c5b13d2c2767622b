"""Hypothesis strategies for every message shape the codec knows."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from idnode.resolver.codec import bodies as b
from idnode.resolver.codec.codes import MAX_HANDLE_LENGTH, HashType, OpCode, OpFlag, ResponseCode
from idnode.resolver.codec.digest import DIGEST_SIZES, RequestDigest
from idnode.resolver.codec.hs_site import Interface, ServerInfo, SiteInfo
from idnode.resolver.codec.message import Message
from idnode.resolver.codec.values import HandleValue, ValueReference

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
i32 = st.integers(-(2**31), 2**31 - 1)
handles = st.text(max_size=40).filter(lambda s: len(s.encode()) <= MAX_HANDLE_LENGTH)
types = st.sampled_from(["URL", "EMAIL", "HS_ADMIN", "HS_SITE", "TEMPLATE", "URL.1", ""]) | st.text(
    max_size=12
)
small_bytes = st.binary(max_size=64)

references = st.builds(ValueReference, handles, i32)
values = st.builds(
    HandleValue,
    index=i32,
    type=types,
    data=small_bytes,
    ttl=i32,
    ttl_type=st.integers(0, 1),
    timestamp=u32,
    permissions=u8,
    references=st.lists(references, max_size=2).map(tuple),
)
value_lists = st.lists(values, max_size=4).map(tuple)

interfaces = st.builds(Interface, st.integers(0, 3), st.integers(0, 3), u32)
servers = st.builds(
    ServerInfo,
    u32,
    st.binary(min_size=16, max_size=16),
    small_bytes,
    st.lists(interfaces, max_size=3).map(tuple),
)
sites = st.builds(
    SiteInfo,
    servers=st.lists(servers, max_size=3).map(tuple),
    serial=u16,
    major_version=u8,
    minor_version=u8,
    primary_mask=u8,
    hash_option=st.integers(0, 2),
    hash_filter=small_bytes,
    attributes=st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3).map(tuple),
    data_format_version=u16,
)
digests = st.sampled_from(list(HashType)).flatmap(
    lambda t: st.binary(min_size=DIGEST_SIZES.get(t, 0), max_size=DIGEST_SIZES.get(t, 64)).map(
        lambda d: RequestDigest(int(t), d)
    )
)

ERROR_CODES = [
    int(c)
    for c in ResponseCode
    if c
    not in (
        ResponseCode.RESERVED,
        ResponseCode.SUCCESS,
        ResponseCode.SERVICE_REFERRAL,
        ResponseCode.PREFIX_REFERRAL,
        ResponseCode.AUTHENTICATION_NEEDED,
    )
]

# (body strategy, opCode strategy, responseCode strategy): combinations the readers dispatch to
SHAPES: list[tuple[st.SearchStrategy[Any], st.SearchStrategy[Any], st.SearchStrategy[Any]]] = [
    (
        st.builds(
            b.ResolutionRequest,
            handles,
            st.lists(i32, max_size=4).map(tuple),
            st.lists(types, max_size=4).map(tuple),
        ),
        st.just(OpCode.RESOLUTION),
        st.just(0),
    ),
    (st.builds(b.GetSiteInfoRequest, handles), st.just(OpCode.GET_SITE_INFO), st.just(0)),
    (st.builds(b.DeleteHandleRequest, handles), st.just(OpCode.DELETE_HANDLE), st.just(0)),
    (st.builds(b.ListHandlesRequest, handles), st.just(OpCode.LIST_HANDLES), st.just(0)),
    (st.builds(b.HomeNaRequest, handles), st.just(OpCode.HOME_NA), st.just(0)),
    (st.builds(b.UnhomeNaRequest, handles), st.just(OpCode.UNHOME_NA), st.just(0)),
    (st.builds(b.ListHomedNasRequest, handles), st.just(OpCode.LIST_HOMED_NAS), st.just(0)),
    (
        st.builds(b.CreateHandleRequest, handles, value_lists),
        st.just(OpCode.CREATE_HANDLE),
        st.just(0),
    ),
    (st.builds(b.AddValueRequest, handles, value_lists), st.just(OpCode.ADD_VALUE), st.just(0)),
    (
        st.builds(b.ModifyValueRequest, handles, value_lists),
        st.just(OpCode.MODIFY_VALUE),
        st.just(0),
    ),
    (
        st.builds(b.RemoveValueRequest, handles, st.lists(i32, max_size=4).map(tuple)),
        st.just(OpCode.REMOVE_VALUE),
        st.just(0),
    ),
    (
        st.builds(
            b.ChallengeAnswer,
            st.sampled_from(["HS_SECKEY", "HS_PUBKEY"]),
            handles,
            i32,
            small_bytes,
        ),
        st.just(OpCode.CHALLENGE_RESPONSE),
        st.just(0),
    ),
    (
        st.builds(b.VerifyAuthRequest, handles, i32, small_bytes, digests, small_bytes),
        st.just(OpCode.VERIFY_RESPONSE),
        st.just(0),
    ),
    (st.builds(b.LoginIdSystemRequest, handles, i32), st.just(OpCode.LOGIN_ID_SYSTEM), st.just(0)),
    (st.builds(b.ResolutionResponse, handles, value_lists), st.just(OpCode.RESOLUTION), st.just(1)),
    (st.builds(b.SiteInfoResponse, sites), st.just(OpCode.GET_SITE_INFO), st.just(1)),
    (
        st.builds(b.ListResponse, st.lists(handles, max_size=5).map(tuple)),
        st.sampled_from([OpCode.LIST_HANDLES, OpCode.LIST_HOMED_NAS]),
        st.just(1),
    ),
    (st.builds(b.VerifyAuthResponse, st.booleans()), st.just(OpCode.VERIFY_RESPONSE), st.just(1)),
    (st.builds(b.CreateHandleResponse, handles), st.just(OpCode.CREATE_HANDLE), st.just(1)),
    (
        st.just(b.Empty()),
        st.sampled_from(
            [OpCode.CREATE_HANDLE, OpCode.DELETE_HANDLE, OpCode.ADD_VALUE, OpCode.HOME_NA]
        ),
        st.just(1),
    ),
    (
        st.builds(b.ErrorResponse, st.text(max_size=40)),
        st.sampled_from(list(OpCode)),
        st.sampled_from(ERROR_CODES),
    ),
    (
        st.builds(b.ReferralResponse, handles, st.none() | value_lists),
        st.sampled_from(list(OpCode)),
        st.sampled_from([302, 303]),
    ),
    (st.builds(b.Challenge, small_bytes), st.sampled_from(list(OpCode)), st.just(402)),
    (
        st.builds(b.Opaque, st.binary(min_size=1, max_size=64)),
        st.sampled_from([4242, OpCode.DUMP_HANDLES]),
        st.just(0),
    ),
    (st.just(b.Empty()), st.sampled_from([7777]), st.just(0)),
    (st.builds(b.HandleOnlyRequest, handles), st.just(OpCode.SESSION_TERMINATE), st.just(0)),
    (
        st.one_of(
            st.builds(
                b.SessionSetupRequest,
                st.sampled_from([1, 4]),
                i32,
                handles,
                i32,
                public_key=small_bytes,
            ),
            st.builds(
                b.SessionSetupRequest,
                st.just(3),
                i32,
                handles,
                i32,
                exchange_key_handle=handles,
                exchange_key_index=i32,
            ),
            st.builds(b.SessionSetupRequest, st.just(2), i32, handles, i32),
        ),
        st.just(OpCode.SESSION_SETUP),
        st.just(0),
    ),
    (
        st.builds(b.SessionSetupResponse, st.sampled_from([1, 2, 3, 4]), small_bytes),
        st.just(OpCode.SESSION_SETUP),
        st.just(1),
    ),
    (
        st.builds(b.SessionExchangeKeyRequest, small_bytes),
        st.just(OpCode.SESSION_EXCHANGEKEY),
        st.just(0),
    ),
    (
        st.builds(b.LoginRequest, handles, st.text(max_size=20)),
        st.just(OpCode.LOGIN),
        st.just(0),
    ),
]


@st.composite
def messages(draw: st.DrawFn) -> Message:
    body_st, op_st, rc_st = draw(st.sampled_from(SHAPES))
    body: b.Body = draw(body_st)
    op, rc = draw(op_st), draw(rc_st)
    flags = draw(u32)
    digest = draw(digests) if rc and flags & OpFlag.RD else None
    return Message(
        op_code=int(op),
        body=body,
        response_code=int(rc),
        op_flags=flags,
        request_id=draw(u32),
        session_id=draw(u32),
        major_version=draw(u8),
        minor_version=draw(u8),
        envelope_flags=draw(u8),
        suggested_minor_version=draw(u8),
        sequence=draw(u32),
        site_info_serial=draw(u16),
        recursion_count=draw(u8),
        reserved=draw(u8),
        expiration=draw(u32),
        request_digest=digest,
        credential=draw(st.binary(max_size=16)),
    )
