"""Body writers: a typed body to its bytes (the mirror of readers.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import bodies as b
from .codes import KeyExchange
from .digest import encode_digest
from .errors import ProtocolError
from .hs_site import encode_site
from .values import encode_values
from .wire import I32, U16, U32, put_blob, put_text


def _ints(xs: tuple[int, ...]) -> bytes:
    return U32.pack(len(xs)) + b"".join(I32.pack(x) for x in xs)


def _texts(xs: tuple[str, ...]) -> bytes:
    return U32.pack(len(xs)) + b"".join(put_text(x) for x in xs)


def _resolution_request(x: b.ResolutionRequest) -> bytes:
    return put_text(x.handle) + _ints(x.indexes) + _texts(x.types)


def _handle_only(x: b.HandleOnlyRequest) -> bytes:
    return put_text(x.handle)


def _values_request(x: b.ValuesRequest) -> bytes:
    return put_text(x.handle) + encode_values(x.values)


def _remove_value(x: b.RemoveValueRequest) -> bytes:
    return put_text(x.handle) + _ints(x.indexes)


def _challenge_answer(x: b.ChallengeAnswer) -> bytes:
    return (
        put_text(x.auth_type)
        + put_text(x.key_handle)
        + I32.pack(x.key_index)
        + put_blob(x.signed_response)
    )


def _verify_auth_request(x: b.VerifyAuthRequest) -> bytes:
    return (
        put_text(x.handle)
        + I32.pack(x.index)
        + put_blob(x.nonce)
        + encode_digest(x.digest)
        + put_blob(x.signed_response)
    )


def _referral(x: b.ReferralResponse) -> bytes:
    out = put_text(x.referral_handle)
    if x.values is not None:
        out += encode_values(x.values)
    return out


def _session_setup(x: b.SessionSetupRequest) -> bytes:
    out = U16.pack(x.mode) + I32.pack(x.timeout) + put_text(x.identity_handle)
    out += I32.pack(x.identity_index)
    if x.mode in (KeyExchange.CIPHER_CLIENT, KeyExchange.DH):
        out += put_blob(x.public_key)
    elif x.mode == KeyExchange.CIPHER_HDL:
        out += put_text(x.exchange_key_handle) + I32.pack(x.exchange_key_index)
    return out + b"\x00\x00"  # as the reference writes it (see readers._session_setup)


def _session_setup_response(x: b.SessionSetupResponse) -> bytes:
    return U16.pack(x.mode) + put_blob(x.data) + b"\x00\x00"


WRITERS: dict[type, Callable[[Any], bytes]] = {
    b.ResolutionRequest: _resolution_request,
    b.GetSiteInfoRequest: _handle_only,
    b.DeleteHandleRequest: _handle_only,
    b.ListHandlesRequest: _handle_only,
    b.HomeNaRequest: _handle_only,
    b.UnhomeNaRequest: _handle_only,
    b.ListHomedNasRequest: _handle_only,
    b.HandleOnlyRequest: _handle_only,
    b.CreateHandleRequest: _values_request,
    b.AddValueRequest: _values_request,
    b.ModifyValueRequest: _values_request,
    b.RemoveValueRequest: _remove_value,
    b.ChallengeAnswer: _challenge_answer,
    b.VerifyAuthRequest: _verify_auth_request,
    b.LoginIdSystemRequest: lambda x: put_text(x.user_handle) + I32.pack(x.index),
    b.LoginRequest: lambda x: put_text(x.username) + _ints(()) + _texts((x.password,)),
    b.ResolutionResponse: lambda x: put_text(x.handle) + encode_values(x.values),
    b.ErrorResponse: lambda x: put_text(x.message),
    b.SiteInfoResponse: lambda x: encode_site(x.site),
    b.ReferralResponse: _referral,
    b.ListResponse: lambda x: _texts(x.handles),
    b.Challenge: lambda x: put_blob(x.nonce),
    b.VerifyAuthResponse: lambda x: b"\x01" if x.valid else b"\x00",
    b.CreateHandleResponse: lambda x: put_text(x.handle),
    b.SessionSetupRequest: _session_setup,
    b.SessionExchangeKeyRequest: lambda x: put_blob(x.encrypted_key),
    b.SessionSetupResponse: _session_setup_response,
    b.Empty: lambda x: b"",
    b.Opaque: lambda x: x.raw,
}


def write_body(body: b.Body) -> bytes:
    try:
        writer = WRITERS[type(body)]
    except KeyError:
        raise ProtocolError(f"cannot encode a body of type {type(body).__name__}") from None
    return writer(body)


__all__ = ["encode_digest", "write_body"]
