"""Typed message bodies, one class per shape (handle-protocol.md §3).

Which class a body decodes to follows from the opCode and the response code, as in
the reference decoder; readers.py and writers.py hold the byte layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

from .digest import RequestDigest
from .hs_site import SiteInfo
from .values import HandleValue

# --- requests -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolutionRequest:
    handle: str
    indexes: tuple[int, ...] = ()
    types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HandleOnlyRequest:
    """Requests whose body is one ``str``: a handle, a prefix handle, or "/"."""

    handle: str


@dataclass(frozen=True, slots=True)
class GetSiteInfoRequest(HandleOnlyRequest):
    pass


@dataclass(frozen=True, slots=True)
class DeleteHandleRequest(HandleOnlyRequest):
    pass


@dataclass(frozen=True, slots=True)
class ListHandlesRequest(HandleOnlyRequest):
    """``handle`` is the prefix handle, ``0.NA/<prefix>``."""


@dataclass(frozen=True, slots=True)
class HomeNaRequest(HandleOnlyRequest):
    pass


@dataclass(frozen=True, slots=True)
class UnhomeNaRequest(HandleOnlyRequest):
    pass


@dataclass(frozen=True, slots=True)
class ListHomedNasRequest(HandleOnlyRequest):
    pass


@dataclass(frozen=True, slots=True)
class ValuesRequest:
    handle: str
    values: tuple[HandleValue, ...]


@dataclass(frozen=True, slots=True)
class CreateHandleRequest(ValuesRequest):
    pass


@dataclass(frozen=True, slots=True)
class AddValueRequest(ValuesRequest):
    pass


@dataclass(frozen=True, slots=True)
class ModifyValueRequest(ValuesRequest):
    pass


@dataclass(frozen=True, slots=True)
class RemoveValueRequest:
    handle: str
    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ChallengeAnswer:
    """CHALLENGE_RESPONSE (200): the client's proof for a 402 challenge."""

    auth_type: str  # "HS_SECKEY" | "HS_PUBKEY"
    key_handle: str
    key_index: int
    signed_response: bytes  # parse with auth.decode_secret_key_mac / decode_signature


@dataclass(frozen=True, slots=True)
class VerifyAuthRequest:
    """VERIFY_RESPONSE (201): ask a key's home server to check an HS_SECKEY answer."""

    handle: str
    index: int
    nonce: bytes
    digest: RequestDigest
    signed_response: bytes


@dataclass(frozen=True, slots=True)
class LoginIdSystemRequest:
    """IDIS LOGIN_ID_SYSTEM (2001): log in as a user handle, then the usual challenge."""

    user_handle: str
    index: int


@dataclass(frozen=True, slots=True)
class LoginRequest:
    """IDIS LOGIN (2000): a user name and password, laid out as a resolution request (the
    name where the handle goes, the password as the one requested type)."""

    username: str
    password: str


@dataclass(frozen=True, slots=True)
class SessionSetupRequest:
    """SESSION_SETUP (400): open a session, agreeing a session key one of four ways.

    ``mode`` (KeyExchange): the client's public key (CIPHER_CLIENT) or Diffie-Hellman
    public value (DH) travels in ``public_key``; CIPHER_HDL names a handle value with
    the client's public key; CIPHER_SERVER asks for the server's key. ``identity`` is
    who the client will authenticate as (empty handle and -1: anonymous).
    """

    mode: int
    timeout: int
    identity_handle: str
    identity_index: int
    public_key: bytes = b""
    exchange_key_handle: str = ""
    exchange_key_index: int = -1


@dataclass(frozen=True, slots=True)
class SessionExchangeKeyRequest:
    """SESSION_EXCHANGEKEY (402): the session key, encrypted with the server's public key."""

    encrypted_key: bytes


# --- responses ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolutionResponse:
    handle: str
    values: tuple[HandleValue, ...]


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    message: str = ""


@dataclass(frozen=True, slots=True)
class SiteInfoResponse:
    site: SiteInfo


@dataclass(frozen=True, slots=True)
class ReferralResponse:
    """302/303: where to ask instead; the site values are optional on the wire."""

    referral_handle: str
    values: tuple[HandleValue, ...] | None = None


@dataclass(frozen=True, slots=True)
class ListResponse:
    """LIST_HANDLES and LIST_HOMED_NAS answers; long lists arrive in several messages (CN)."""

    handles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Challenge:
    """The body of a 402 AUTHENTICATION_NEEDED response."""

    nonce: bytes


@dataclass(frozen=True, slots=True)
class SessionSetupResponse:
    """Success of SESSION_SETUP: the mode, and the encrypted session key, the server's
    public key (CIPHER_SERVER) or algorithm + the server's DH public value (DH)."""

    mode: int
    data: bytes


@dataclass(frozen=True, slots=True)
class VerifyAuthResponse:
    valid: bool


@dataclass(frozen=True, slots=True)
class CreateHandleResponse:
    """Success of CREATE_HANDLE when the server names the handle (MINT)."""

    handle: str


# --- either direction -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Empty:
    """No body: generic successes, and requests like SESSION_TERMINATE."""


@dataclass(frozen=True, slots=True)
class Opaque:
    """A body this codec does not interpret (unknown opCodes, sessions, replication).

    The server can still answer the message; the bytes are kept as they came.
    """

    raw: bytes


Body = (
    ResolutionRequest
    | HandleOnlyRequest
    | ValuesRequest
    | RemoveValueRequest
    | ChallengeAnswer
    | VerifyAuthRequest
    | LoginIdSystemRequest
    | LoginRequest
    | SessionSetupRequest
    | SessionExchangeKeyRequest
    | ResolutionResponse
    | ErrorResponse
    | SiteInfoResponse
    | ReferralResponse
    | ListResponse
    | Challenge
    | VerifyAuthResponse
    | SessionSetupResponse
    | CreateHandleResponse
    | Empty
    | Opaque
)
