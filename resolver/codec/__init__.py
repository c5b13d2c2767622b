"""The Handle protocol codec: a pure library, bytes in and typed messages out.

No sockets, no asyncio, no server imports (in the manner of h11). Front doors,
the CLI client and the upstream resolver all speak the protocol through it.

    from resolver.codec import decode, encode, Message, ResolutionRequest
    msg = decode(datagram)          # raises ProtocolError on anything malformed
    wire = encode(response_to(msg, ResponseCode.SUCCESS, body))
"""

from .admin import AdminRecord, decode_admin, encode_admin
from .bodies import (
    AddValueRequest,
    Body,
    Challenge,
    ChallengeAnswer,
    CreateHandleRequest,
    CreateHandleResponse,
    DeleteHandleRequest,
    Empty,
    ErrorResponse,
    GetSiteInfoRequest,
    HandleOnlyRequest,
    HomeNaRequest,
    ListHandlesRequest,
    ListHomedNasRequest,
    ListResponse,
    LoginIdSystemRequest,
    ModifyValueRequest,
    Opaque,
    ReferralResponse,
    RemoveValueRequest,
    ResolutionRequest,
    ResolutionResponse,
    SiteInfoResponse,
    UnhomeNaRequest,
    ValuesRequest,
    VerifyAuthRequest,
    VerifyAuthResponse,
)
from .codes import (
    AdminPermission,
    HashOption,
    HashType,
    InterfaceProtocol,
    InterfaceType,
    OpCode,
    OpFlag,
    Permission,
    ResponseCode,
    TtlType,
)
from .datagrams import Reassembler, split_datagrams
from .digest import RequestDigest, digest_of, digest_request, encode_digest
from .errors import ProtocolError
from .frames import FrameBuffer
from .keys import DsaPublicKey, RsaPublicKey, decode_public_key, encode_public_key
from .message import (
    Envelope,
    Message,
    ResolutionQuery,
    decode,
    decode_envelope,
    decode_resolution,
    encode,
    encode_resolution_answer,
    response_to,
)
from .site import Interface, ServerInfo, SiteInfo, decode_site, encode_site
from .sitehash import server_index, site_hash
from .values import (
    HandleValue,
    ValueReference,
    decode_value,
    decode_values,
    encode_value,
    encode_values,
)
from .wire import put_text

__all__ = [
    "AddValueRequest", "AdminPermission", "AdminRecord", "Body", "Challenge",
    "ChallengeAnswer", "CreateHandleRequest", "CreateHandleResponse", "DeleteHandleRequest",
    "DsaPublicKey", "Empty", "Envelope", "ErrorResponse", "FrameBuffer", "GetSiteInfoRequest",
    "HandleOnlyRequest", "HandleValue", "HashOption", "HashType", "HomeNaRequest", "Interface",
    "InterfaceProtocol", "InterfaceType", "ListHandlesRequest", "ListHomedNasRequest",
    "ListResponse", "LoginIdSystemRequest", "Message", "ModifyValueRequest", "OpCode", "OpFlag",
    "Opaque", "Permission", "ProtocolError", "Reassembler", "ReferralResponse",
    "RemoveValueRequest", "RequestDigest", "ResolutionQuery", "ResolutionRequest",
    "ResolutionResponse", "ResponseCode", "RsaPublicKey", "ServerInfo", "SiteInfo",
    "SiteInfoResponse", "TtlType", "UnhomeNaRequest", "ValueReference", "ValuesRequest",
    "VerifyAuthRequest", "VerifyAuthResponse", "decode", "decode_admin", "decode_envelope",
    "decode_public_key", "decode_resolution", "decode_site", "decode_value", "decode_values",
    "digest_of", "digest_request", "encode", "encode_admin", "encode_digest",
    "encode_public_key", "encode_resolution_answer", "encode_site", "encode_value",
    "encode_values", "put_text", "response_to", "server_index", "site_hash", "split_datagrams",
]
