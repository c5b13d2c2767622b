"""The JSON form of handles and values, as the reference REST API writes them.

``{"index", "type", "data": {"format", "value"}, "ttl", "timestamp"}`` with data
formats string, base64, hex, admin, vlist, site and key (handle-protocol.md §7).
One conversion, used by REST, import/export and the inspector.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from datetime import UTC, datetime
from typing import Any

from .admin import (
    AdminRecord,
    admin_permissions_from_bits,
    admin_permissions_to_bits,
    decode_admin,
    encode_admin,
)
from .codes import (
    DEFAULT_PERMISSIONS,
    DEFAULT_TTL,
    SITE_TYPES,
    TYPE_ADMIN,
    TYPE_PUBKEY,
    TYPE_VLIST,
    HashOption,
    InterfaceProtocol,
    InterfaceType,
    TtlType,
)
from .errors import ProtocolError
from .hs_site import Interface, ServerInfo, SiteInfo, address_to_bytes, decode_site, encode_site
from .keys import (
    DsaPublicKey,
    OtherPublicKey,
    RsaPublicKey,
    decode_public_key,
    encode_public_key,
)
from .values import HandleValue, ValueReference
from .vlist import decode_vlist, encode_vlist

Json = dict[str, Any]

# How deeply a JSON document from a client may nest. A value list is four levels deep and
# an HS_SITE value about eight; the limit is far above that and far below the depth at
# which the parser (or any code walking the result) runs out of stack.
MAX_JSON_DEPTH = 64
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT32_MAX = 2**32 - 1


def _not_a_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON document from a client, or ProtocolError saying why it is not one.

    Stricter than ``json.loads`` in what a hostile client can send: the bytes must be
    UTF-8, the nesting at most ``max_depth`` deep (100,000 opening brackets would
    otherwise exhaust the parser's stack), NaN and Infinity are refused (not JSON), and
    no string may hold an unpaired surrogate (an escape such as ``"\\ud800"`` parses,
    but cannot be encoded again, so it would fail far from here)."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        doc = json.loads(text, parse_constant=_not_a_constant)
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise ProtocolError(f"the JSON nests more than {max_depth} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, NaN, an integer of over 4300 digits
        raise ProtocolError(f"the body is not JSON: {exc}") from None
    _check_tree(doc, max_depth)
    return doc


def _check_tree(doc: Any, max_depth: int) -> None:
    """Depth and strings of a parsed document, walked without recursion."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            _check_text(node)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            raise ProtocolError(f"the JSON nests more than {max_depth} levels deep")
        if isinstance(node, dict):
            for key, value in node.items():
                _check_text(key)
                stack.append((value, depth + 1))
        else:
            stack.extend((item, depth + 1) for item in node)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError(
            f"a JSON string holds an unpaired surrogate ({text[:40]!r}): not valid Unicode"
        ) from None


def _int_in(value: Any, what: str, low: int, high: int) -> int:
    """``value`` when it is an integer (a JSON number or a string of ASCII digits) in
    ``low..high``; ProtocolError naming ``what`` otherwise. The wire fields are 16 or 32
    bits: a larger number must be refused here, not fail the encoder."""
    if isinstance(value, str) and _is_decimal(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ProtocolError(f"{what} must be an integer from {low} to {high}, got {value!r}")
    return value


def _is_decimal(text: str) -> bool:
    """ASCII digits with an optional minus sign, and nothing else (``int()`` also takes
    other scripts' digits, underscores and spaces); short enough to convert cheaply."""
    digits = text[1:] if text.startswith("-") else text
    return 0 < len(digits) <= 20 and digits.isascii() and digits.isdigit()


def parse_int(text: str, what: str, low: int = INT32_MIN, high: int = INT32_MAX) -> int:
    """A plain ASCII decimal (optionally negative) in ``low..high`` from a query string or a
    header; ProtocolError otherwise."""
    if not _is_decimal(text):
        raise ProtocolError(f"{what} must be a decimal integer, got {text[:40]!r}")
    return _int_in(int(text), what, low, high)


_HASH_NAMES = {
    HashOption.BY_PREFIX: "HASH_TYPE_BY_PREFIX",
    HashOption.BY_SUFFIX: "HASH_TYPE_BY_SUFFIX",
    HashOption.BY_HANDLE: "HASH_TYPE_BY_ALL",
}
_HASH_BY_NAME = {v: k for k, v in _HASH_NAMES.items()}


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _from_iso(text: str) -> int:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ProtocolError(f"timestamp {text!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _b64url(n: int) -> str:
    raw = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _from_b64url(s: str) -> int:
    try:
        return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")
    except (binascii.Error, ValueError):
        raise ProtocolError("key component is not base64url") from None


def looks_like_text(data: bytes) -> bool:
    """UTF-8 with no control characters but whitespace: shown as a string."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c >= " " or c in "\t\n\r" for c in text) and "\x7f" not in text


# --- typed data --------------------------------------------------------------------


def site_to_json(s: SiteInfo) -> Json:
    return {
        "version": s.data_format_version,
        "protocolVersion": f"{s.major_version}.{s.minor_version}",
        "serialNumber": s.serial,
        "primarySite": s.primary,
        "multiPrimary": s.multi_primary,
        "hashOption": _HASH_NAMES.get(HashOption(s.hash_option), str(s.hash_option)),
        "hashFilter": s.hash_filter.decode("utf-8", "replace"),
        "attributes": [{"name": k, "value": v} for k, v in s.attributes],
        "servers": [
            {
                "serverId": srv.server_id,
                "address": srv.ip,
                "publicKey": {
                    "format": "base64",
                    "value": base64.b64encode(srv.public_key).decode(),
                },
                "interfaces": [
                    {
                        "query": i.serves_queries,
                        "admin": i.serves_admin,
                        "protocol": InterfaceProtocol(i.protocol).name,
                        "port": i.port,
                    }
                    for i in srv.interfaces
                ],
            }
            for srv in s.servers
        ],
    }


def site_from_json(j: Json) -> SiteInfo:
    try:
        major, minor = (int(x) for x in str(j.get("protocolVersion", "2.10")).split("."))
        servers = []
        for srv in j.get("servers", []):
            ifaces = []
            for i in srv.get("interfaces", []):
                itype = (InterfaceType.ADMIN if i.get("admin") else 0) | (
                    InterfaceType.QUERY if i.get("query") else 0
                )
                ifaces.append(Interface(itype, InterfaceProtocol[i["protocol"]], int(i["port"])))
            key = srv.get("publicKey") or {}
            servers.append(
                ServerInfo(
                    int(srv["serverId"]),
                    address_to_bytes(srv["address"]),
                    _data_bytes(key) if key else b"",
                    tuple(ifaces),
                )
            )
        mask = (0x80 if j.get("primarySite", True) else 0) | (0x40 if j.get("multiPrimary") else 0)
        hash_name = j.get("hashOption", "HASH_TYPE_BY_ALL")
        return SiteInfo(
            tuple(servers),
            serial=int(j.get("serialNumber", 1)),
            major_version=major,
            minor_version=minor,
            primary_mask=mask,
            hash_option=_HASH_BY_NAME.get(hash_name, HashOption.BY_HANDLE),
            hash_filter=str(j.get("hashFilter", "")).encode("utf-8"),
            attributes=tuple((a["name"], a["value"]) for a in j.get("attributes", [])),
            data_format_version=int(j.get("version", 1)),
        )
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"site data is not valid: {exc!r}") from None


def key_to_json(data: bytes) -> Json:
    key = decode_public_key(data)
    if isinstance(key, RsaPublicKey):
        return {"kty": "RSA", "n": _b64url(key.modulus), "e": _b64url(key.exponent)}
    if isinstance(key, DsaPublicKey):
        return {
            "kty": "DSA",
            "q": _b64url(key.q),
            "p": _b64url(key.p),
            "g": _b64url(key.g),
            "y": _b64url(key.y),
        }
    kind = key.key_type if isinstance(key, OtherPublicKey) else "DH_PUB_KEY"
    raise ProtocolError(f"no JSON form for key type {kind}")


def key_from_json(j: Json) -> bytes:
    kty = j.get("kty")
    if kty == "RSA":
        return encode_public_key(RsaPublicKey(_from_b64url(j["e"]), _from_b64url(j["n"])))
    if kty == "DSA":
        return encode_public_key(DsaPublicKey(*(_from_b64url(j[x]) for x in ("q", "p", "g", "y"))))
    raise ProtocolError(f"unknown key type {kty!r}")


# --- values ----------------------------------------------------------------------------


def data_to_json(vtype: str, data: bytes) -> Json:
    """Pick the format the reference would: typed where the type says, else text or base64."""
    try:
        if vtype == TYPE_ADMIN:
            a = decode_admin(data)
            return {
                "format": "admin",
                "value": {
                    "handle": a.admin_handle,
                    "index": a.admin_index,
                    "permissions": admin_permissions_to_bits(a.permissions),
                },
            }
        if vtype == TYPE_VLIST:
            return {
                "format": "vlist",
                "value": [{"handle": r.handle, "index": r.index} for r in decode_vlist(data)],
            }
        if vtype in SITE_TYPES:
            return {"format": "site", "value": site_to_json(decode_site(data))}
        if vtype == TYPE_PUBKEY:
            return {"format": "key", "value": key_to_json(data)}
    except ProtocolError:
        pass  # malformed typed data is still shown, as bytes
    if looks_like_text(data):
        return {"format": "string", "value": data.decode("utf-8")}
    return {"format": "base64", "value": base64.b64encode(data).decode()}


def _data_bytes(d: Any) -> bytes:
    if isinstance(d, str):  # the reference accepts a bare string as string data
        return d.encode("utf-8")
    if not isinstance(d, dict) or "value" not in d:
        raise ProtocolError('value data must be a string or {"format", "value"}')
    fmt = d.get("format", "string")
    v = d["value"]
    try:
        if fmt == "string":
            return str(v).encode("utf-8")
        if fmt == "base64":
            return base64.b64decode(v, validate=True)
        if fmt == "hex":
            return bytes.fromhex(v)
        if fmt == "admin":
            return encode_admin(
                AdminRecord(
                    admin_permissions_from_bits(v.get("permissions", "111111111111")),
                    v["handle"],
                    _int_in(v["index"], "the admin index", INT32_MIN, INT32_MAX),
                )
            )
        if fmt == "vlist":
            return encode_vlist(
                [
                    ValueReference(
                        x["handle"], _int_in(x["index"], "a vlist index", INT32_MIN, INT32_MAX)
                    )
                    for x in v
                ]
            )
        if fmt == "site":
            return encode_site(site_from_json(v))
        if fmt == "key":
            return key_from_json(v)
    except ProtocolError:
        raise
    except struct.error as exc:  # a number too large for its field on the wire
        raise ProtocolError(f"{fmt} data is not valid: a number is out of range ({exc})") from None
    except (KeyError, ValueError, TypeError, AttributeError, binascii.Error) as exc:
        raise ProtocolError(f"{fmt} data is not valid: {exc!r}") from None
    raise ProtocolError(f"unknown data format {fmt!r}")


def value_to_json(v: HandleValue) -> Json:
    out: Json = {"index": v.index, "type": v.type, "data": data_to_json(v.type, v.data)}
    if v.permissions != DEFAULT_PERMISSIONS:
        out["permissions"] = format(v.permissions & 0x0F, "04b")
    out["ttl"] = _iso(v.ttl) if v.ttl_type == TtlType.ABSOLUTE else v.ttl
    out["timestamp"] = _iso(v.timestamp)
    if v.references:
        out["references"] = [{"handle": r.handle, "index": r.index} for r in v.references]
    return out


def value_from_json(j: Any, *, now: int | None = None) -> HandleValue:
    """A value from its JSON form; missing ttl, permissions and timestamp take defaults."""
    if not isinstance(j, dict):
        raise ProtocolError("a value must be a JSON object")
    unknown = set(j) - {"index", "type", "data", "ttl", "timestamp", "permissions", "references"}
    if unknown:
        raise ProtocolError(f"unknown value fields: {', '.join(sorted(unknown))}")
    try:
        index = j["index"]
        vtype = j["type"]
    except KeyError as exc:
        raise ProtocolError(f"value is missing {exc.args[0]!r}") from None
    if not isinstance(index, int) or isinstance(index, bool) or not 0 < index < 2**31:
        raise ProtocolError(f"value index must be a positive integer, got {index!r}")
    if not isinstance(vtype, str):
        raise ProtocolError("value type must be a string")
    data = _data_bytes(j.get("data", ""))
    ttl_raw = j.get("ttl", DEFAULT_TTL)
    if isinstance(ttl_raw, str):
        ttl_type, ttl = TtlType.ABSOLUTE, _from_iso(ttl_raw)
        if not 0 <= ttl <= INT32_MAX:  # the wire's ttl is a signed 32-bit count
            raise ProtocolError(f"ttl {ttl_raw!r} is outside 1970..2038")
    elif isinstance(ttl_raw, int) and not isinstance(ttl_raw, bool) and 0 <= ttl_raw < 2**31:
        ttl_type, ttl = TtlType.RELATIVE, ttl_raw
    else:
        raise ProtocolError(f"ttl must be seconds or an ISO time, got {ttl_raw!r}")
    perms_raw = j.get("permissions")
    if perms_raw is None:
        perms = int(DEFAULT_PERMISSIONS)
    elif isinstance(perms_raw, str) and len(perms_raw) == 4 and not set(perms_raw) - {"0", "1"}:
        perms = int(perms_raw, 2)
    else:
        raise ProtocolError(f'permissions must be 4 binary digits like "1110", got {perms_raw!r}')
    ts_raw = j.get("timestamp")
    if ts_raw is None:
        ts = int(datetime.now(UTC).timestamp()) if now is None else now
    elif isinstance(ts_raw, str):
        ts = _from_iso(ts_raw)
        if not 0 <= ts <= UINT32_MAX:  # the wire's timestamp is unsigned 32-bit seconds
            raise ProtocolError(f"timestamp {ts_raw!r} is outside 1970..2106")
    else:
        raise ProtocolError("timestamp must be an ISO 8601 string")
    refs_raw = j.get("references", [])
    try:
        refs = tuple(
            ValueReference(
                str(r["handle"]), _int_in(r["index"], "a reference index", INT32_MIN, INT32_MAX)
            )
            for r in refs_raw
        )
    except (KeyError, TypeError):
        raise ProtocolError('references must be [{"handle", "index"}, ...]') from None
    return HandleValue(index, vtype, data, ttl, ttl_type, ts, perms, refs)


def handle_to_json(handle: str, values: tuple[HandleValue, ...] | list[HandleValue]) -> Json:
    return {
        "responseCode": 1,
        "handle": handle,
        "values": [value_to_json(v) for v in values],
    }


def values_from_json(items: Any, *, now: int | None = None) -> tuple[HandleValue, ...]:
    """A value list from ``[...]`` or ``{"values": [...]}`` (both forms the reference accepts)."""
    if isinstance(items, dict) and "values" in items:
        items = items["values"]
    if not isinstance(items, list):
        raise ProtocolError("values must be a JSON array")
    values = tuple(value_from_json(x, now=now) for x in items)
    seen: set[int] = set()
    for v in values:
        if v.index in seen:
            raise ProtocolError(f"index {v.index} appears twice")
        seen.add(v.index)
    return values


__all__ = [
    "OtherPublicKey",
    "data_to_json",
    "handle_to_json",
    "key_from_json",
    "key_to_json",
    "loads",
    "looks_like_text",
    "parse_int",
    "site_from_json",
    "site_to_json",
    "value_from_json",
    "value_to_json",
    "values_from_json",
]
