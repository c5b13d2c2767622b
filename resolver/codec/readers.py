"""Body readers: bytes of one message body to a typed body.

The shape of a body depends on the opCode for requests, and on the response code
(then the opCode) for responses, as in the reference decoder. Every reader ends
with ``expect_end``: a body with bytes left over is malformed.
"""

from __future__ import annotations

from collections.abc import Callable

from . import bodies as b
from .codes import MAX_HANDLE_LENGTH, KeyExchange, OpCode, OpFlag, ResponseCode
from .digest import RequestDigest, read_digest
from .errors import ProtocolError
from .hs_site import read_site
from .values import read_values
from .wire import Reader

MAX_TYPE_LENGTH = MAX_HANDLE_LENGTH


def _handle(r: Reader, what: str = "handle") -> str:
    return r.text(what, MAX_HANDLE_LENGTH)


def read_resolution_request(r: Reader) -> b.ResolutionRequest:
    handle = _handle(r)
    n = r.count("index count", 4)
    indexes = tuple(r.i32("index") for _ in range(n))
    n = r.count("type count", 4)
    types = tuple(r.text("type", MAX_TYPE_LENGTH) for _ in range(n))
    return b.ResolutionRequest(handle, indexes, types)


def _handle_only(cls: type[b.HandleOnlyRequest]) -> Callable[[Reader], b.Body]:
    def read(r: Reader) -> b.Body:
        return cls(_handle(r))

    return read


def _get_site_info(r: Reader) -> b.Body:
    # Some clients send GET_SITE_INFO with no body at all; treat it as "/".
    if r.remaining() == 0:
        return b.GetSiteInfoRequest("")
    return b.GetSiteInfoRequest(_handle(r))


def _values_request(cls: type[b.ValuesRequest]) -> Callable[[Reader], b.Body]:
    def read(r: Reader) -> b.Body:
        return cls(_handle(r), read_values(r))

    return read


def _remove_value(r: Reader) -> b.Body:
    handle = _handle(r)
    n = r.count("index count", 4)
    return b.RemoveValueRequest(handle, tuple(r.i32("index") for _ in range(n)))


def _challenge_answer(r: Reader) -> b.Body:
    return b.ChallengeAnswer(
        r.text("auth type", 64),
        _handle(r, "key handle"),
        r.i32("key index"),
        r.blob("signed response", 16384),
    )


def _verify_auth_request(r: Reader) -> b.Body:
    handle = _handle(r)
    index = r.i32("key index")
    nonce = r.blob("nonce", 1024)
    digest = read_digest(r)
    signed = r.blob("signed response", 16384)
    return b.VerifyAuthRequest(handle, index, nonce, digest, signed)


def _login_id_system(r: Reader) -> b.Body:
    return b.LoginIdSystemRequest(_handle(r, "user handle"), r.i32("user index"))


def _login(r: Reader) -> b.Body:
    req = read_resolution_request(r)
    if len(req.types) != 1:
        raise ProtocolError("LOGIN carries the password as its one requested type")
    return b.LoginRequest(req.handle, req.types[0])


MAX_KEY_LENGTH = 16 * 1024  # far above any RSA, DSA or DH public value clients send


def _session_setup(r: Reader) -> b.Body:
    mode = r.u16("key exchange mode")
    timeout = r.i32("session timeout")
    handle = r.text("identity handle", MAX_HANDLE_LENGTH)
    index = r.i32("identity index")
    key, kh, ki = b"", "", -1
    if mode in (KeyExchange.CIPHER_CLIENT, KeyExchange.DH):
        key = r.blob("exchange public key", MAX_KEY_LENGTH)
    elif mode == KeyExchange.CIPHER_HDL:
        kh = _handle(r, "exchange key handle")
        ki = r.i32("exchange key index")
    # The reference writer sizes the mode as 4 bytes but writes 2: two zero bytes
    # trail every SESSION_SETUP body. Tolerate them (and nothing else).
    if r.remaining() == 2 and r.buf[r.pos : r.pos + 2] == b"\x00\x00":
        r.pos += 2
    return b.SessionSetupRequest(mode, timeout, handle, index, key, kh, ki)


def _terminate(r: Reader) -> b.Body:
    # The reference sends "/" (its blank handle); tolerate no body at all, as for site info.
    return b.HandleOnlyRequest(_handle(r) if r.remaining() else "")


def _session_exchange_key(r: Reader) -> b.Body:
    return b.SessionExchangeKeyRequest(r.blob("encrypted session key", MAX_KEY_LENGTH))


REQUEST_READERS: dict[int, Callable[[Reader], b.Body]] = {
    OpCode.RESOLUTION: read_resolution_request,
    OpCode.GET_SITE_INFO: _get_site_info,
    OpCode.CREATE_HANDLE: _values_request(b.CreateHandleRequest),
    OpCode.DELETE_HANDLE: _handle_only(b.DeleteHandleRequest),
    OpCode.ADD_VALUE: _values_request(b.AddValueRequest),
    OpCode.REMOVE_VALUE: _remove_value,
    OpCode.MODIFY_VALUE: _values_request(b.ModifyValueRequest),
    OpCode.LIST_HANDLES: _handle_only(b.ListHandlesRequest),
    OpCode.LIST_NA: _handle_only(b.ListHomedNasRequest),
    OpCode.CHALLENGE_RESPONSE: _challenge_answer,
    OpCode.VERIFY_RESPONSE: _verify_auth_request,
    OpCode.HOME_NA: _handle_only(b.HomeNaRequest),
    OpCode.UNHOME_NA: _handle_only(b.UnhomeNaRequest),
    OpCode.LIST_HOMED_NAS: _handle_only(b.ListHomedNasRequest),
    OpCode.LOGIN_ID_SYSTEM: _login_id_system,
    OpCode.LOGIN: _login,
    OpCode.SESSION_SETUP: _session_setup,
    OpCode.SESSION_EXCHANGEKEY: _session_exchange_key,
    OpCode.SESSION_TERMINATE: _terminate,
}


def _list_response(r: Reader) -> b.Body:
    n = r.count("handle count", 4)
    return b.ListResponse(tuple(_handle(r) for _ in range(n)))


def _create_response(r: Reader) -> b.Body:
    if r.remaining() == 0:
        return b.Empty()
    return b.CreateHandleResponse(_handle(r))


def _empty(r: Reader) -> b.Body:
    return b.Empty()


def _session_setup_response(r: Reader) -> b.Body:
    mode = r.u16("key exchange mode")
    data = r.blob("session setup data", MAX_KEY_LENGTH)
    if r.remaining() == 2 and r.buf[r.pos : r.pos + 2] == b"\x00\x00":
        r.pos += 2  # the reference writer's two trailing bytes, as in the request
    return b.SessionSetupResponse(mode, data)


SUCCESS_READERS: dict[int, Callable[[Reader], b.Body]] = {
    OpCode.RESOLUTION: lambda r: b.ResolutionResponse(_handle(r), read_values(r)),
    OpCode.GET_SITE_INFO: lambda r: b.SiteInfoResponse(read_site(r)),
    OpCode.LIST_HANDLES: _list_response,
    OpCode.LIST_NA: _list_response,
    OpCode.LIST_HOMED_NAS: _list_response,
    OpCode.VERIFY_RESPONSE: lambda r: b.VerifyAuthResponse(bool(r.u8("verify result") & 1)),
    OpCode.CREATE_HANDLE: _create_response,
    OpCode.DELETE_HANDLE: _empty,
    OpCode.ADD_VALUE: _empty,
    OpCode.REMOVE_VALUE: _empty,
    OpCode.MODIFY_VALUE: _empty,
    OpCode.CHALLENGE_RESPONSE: _empty,
    OpCode.HOME_NA: _empty,
    OpCode.UNHOME_NA: _empty,
    OpCode.SESSION_TERMINATE: _empty,
    OpCode.SESSION_EXCHANGEKEY: _empty,
    OpCode.SESSION_SETUP: _session_setup_response,
    OpCode.LOGIN: lambda r: b.ResolutionResponse(_handle(r), read_values(r)),
    OpCode.LOGIN_ID_SYSTEM: _empty,
}


def _referral(r: Reader) -> b.Body:
    handle = _handle(r, "referral handle")
    values = read_values(r) if r.remaining() else None
    return b.ReferralResponse(handle, values)


def _error(r: Reader) -> b.Body:
    if r.remaining() == 0:  # tolerated: some servers omit the message entirely
        return b.ErrorResponse("")
    # The message is for people: keep it readable even when a peer sends bad UTF-8.
    return b.ErrorResponse(r.blob("error message").decode("utf-8", "replace"))


def _opaque(r: Reader) -> b.Body:
    if r.remaining() == 0:
        return b.Empty()
    return b.Opaque(r.raw(r.remaining(), "body"))


def read_body(
    op_code: int, response_code: int, op_flags: int, r: Reader
) -> tuple[b.Body, RequestDigest | None]:
    digest: RequestDigest | None = None
    if response_code == ResponseCode.RESERVED:
        body = REQUEST_READERS.get(op_code, _opaque)(r)
    else:
        if op_flags & OpFlag.RD:
            digest = read_digest(r)
        if response_code == ResponseCode.SUCCESS:
            body = SUCCESS_READERS.get(op_code, _opaque)(r)
        elif response_code in (ResponseCode.SERVICE_REFERRAL, ResponseCode.PREFIX_REFERRAL):
            body = _referral(r)
        elif response_code == ResponseCode.AUTHENTICATION_NEEDED:
            body = b.Challenge(r.blob("nonce", 1024))
        else:
            body = _error(r)
    r.expect_end("message body")
    return body, digest
