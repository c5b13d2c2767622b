"""Render decoded Handle protocol structures as JSON for people (``idnode inspect``)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from .codec import auth, codes
from .codec.admin import decode_admin
from .codec.bodies import ChallengeAnswer
from .codec.digest import RequestDigest
from .codec.errors import ProtocolError
from .codec.hs_site import SiteInfo, decode_site
from .codec.jsonform import key_to_json, site_to_json, value_to_json
from .codec.keys import decode_public_key
from .codec.message import Message, decode
from .codec.values import HandleValue, decode_value, decode_values

_HEX = re.compile(rb"^(0x)?[0-9a-fA-F\s:]*$")


def looks_like_hex(raw: bytes) -> bool:
    """Hex text: hex digits, with spaces, colons and a 0x prefix allowed."""
    return bool(raw.strip()) and _HEX.match(raw.strip()) is not None


def parse_input(raw: bytes) -> bytes:
    """Hex text (spaces, colons and a 0x prefix allowed) or raw bytes, whichever it is."""
    if looks_like_hex(raw):
        text = raw.strip().removeprefix(b"0x")
        digits = re.sub(rb"[\s:]", b"", text)
        if len(digits) % 2:
            raise ProtocolError(f"hex input has an odd number of digits ({len(digits)})")
        return bytes.fromhex(digits.decode())
    return raw


def _plain(x: Any) -> Any:
    if isinstance(x, HandleValue):
        return value_to_json(x)
    if isinstance(x, SiteInfo):
        return site_to_json(x)
    if isinstance(x, RequestDigest):
        return {"hashType": codes.HashType(x.hash_type).name, "hex": x.digest.hex()}
    if isinstance(x, bytes):
        return x.hex()
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, tuple | list):
        return [_plain(i) for i in x]
    return x


def body_to_json(body: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": type(body).__name__}
    fields = _plain(body)
    if isinstance(fields, dict):
        out.update(fields)
    if isinstance(body, ChallengeAnswer):
        # Show what the proof is, not just its bytes.
        try:
            if body.auth_type == auth.AUTH_SECKEY:
                out["answer"] = _plain(auth.decode_secret_key_mac(body.signed_response))
            elif body.auth_type == auth.AUTH_PUBKEY:
                out["answer"] = _plain(auth.decode_signature(body.signed_response))
        except ProtocolError as exc:
            out["answerError"] = exc.reason
    return out


def message_to_json(m: Message, wire_length: int | None = None) -> dict[str, Any]:
    env: dict[str, Any] = {
        "version": f"{m.major_version}.{m.minor_version}",
        "flags": f"{m.envelope_flags:#04x}",
        "suggestedVersion": f"{m.envelope_flags & 0x03}.{m.suggested_minor_version}",
        "sessionId": m.session_id,
        "requestId": m.request_id,
        "sequence": m.sequence,
    }
    if wire_length is not None:
        env["messageLength"] = wire_length - codes.ENVELOPE_SIZE
    out: dict[str, Any] = {
        "envelope": env,
        "header": {
            "opCode": m.op_code,
            "op": codes.op_name(m.op_code),
            "responseCode": m.response_code,
            "response": codes.rc_name(m.response_code),
            "opFlags": f"{m.op_flags:#010x}",
            "flagNames": codes.flag_names(m.op_flags),
            "siteInfoSerial": m.site_info_serial,
            "recursionCount": m.recursion_count,
            "expiration": m.expiration,
        },
    }
    if m.request_digest is not None:
        out["requestDigest"] = _plain(m.request_digest)
    out["body"] = body_to_json(m.body)
    if m.credential:
        out["credential"] = m.credential.hex()
    return out


def _key(data: bytes) -> Any:
    key = decode_public_key(data)
    out: dict[str, Any] = {"kind": type(key).__name__}
    try:
        out["jwk"] = key_to_json(data)
    except ProtocolError:
        out.update(_plain(key))
    return out


def _admin(data: bytes) -> Any:
    return _plain(decode_admin(data))


INSPECTORS: dict[str, Callable[[bytes], Any]] = {
    "message": lambda data: message_to_json(decode(data), len(data)),
    "value": lambda data: value_to_json(decode_value(data)),
    "values": lambda data: [value_to_json(v) for v in decode_values(data)],
    "site": lambda data: site_to_json(decode_site(data)),
    "admin": _admin,
    "key": lambda data: _key(data),
}
