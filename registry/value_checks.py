"""Values on their way in: checked (limits, typed data), stamped, secrets sealed.

A bad value is a Refusal(INVALID_VALUE) that names it; nothing here reads the store.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from operator import itemgetter

from idnode.resolver.codec import (
    HandleValue,
    Permission,
    ProtocolError,
    ResponseCode,
    ValueReference,
    decode_admin,
    decode_public_key,
    decode_site,
    decode_values,
    encode_value_fields,
    encode_values,
)
from idnode.resolver.codec.codes import (
    MAX_VALUES,
    SITE_TYPES,
    TYPE_ADMIN,
    TYPE_PUBKEY,
    TYPE_SECKEY,
    TYPE_VLIST,
)
from idnode.resolver.codec.vlist import decode_vlist
from idnode.resolver.codec.wire import U32

from .permissions import same_value
from .sealing import Sealer
from .store import Refusal

RC = ResponseCode


def encode_sorted(values: Iterable[HandleValue]) -> bytes:
    """A value list as stored: in index order."""
    return encode_values(sorted(values, key=lambda v: v.index))


def prepare(values: tuple[HandleValue, ...], sealer: Sealer | None) -> bytes:
    """Validate incoming values; stamp them; seal secrets. Refusal(202) says which is bad."""
    if len(values) > MAX_VALUES:
        raise Refusal(RC.INVALID_VALUE, f"{len(values)} values is over {MAX_VALUES}")
    seen: set[int] = set()
    out: list[Fields] = []
    t = int(time.time())
    for v in values:
        if v.index <= 0:
            raise Refusal(RC.INVALID_VALUE, f"index {v.index} is not positive")
        if v.index in seen:
            raise Refusal(RC.INVALID_VALUE, f"index {v.index} appears twice")
        seen.add(v.index)
        if v.permissions > 0x0F:
            raise Refusal(RC.INVALID_VALUE, f"index {v.index}: permissions {v.permissions:#x}")
        data = v.data
        try:
            if v.type == TYPE_ADMIN:
                decode_admin(data)
            elif v.type in SITE_TYPES:
                decode_site(data)
            elif v.type == TYPE_VLIST:
                decode_vlist(data)
            elif v.type == TYPE_PUBKEY:
                decode_public_key(data)
        except ProtocolError as exc:
            raise Refusal(RC.INVALID_VALUE, f"index {v.index} ({v.type}): {exc.reason}") from None
        perms = v.permissions
        if v.type == TYPE_SECKEY:
            if sealer is None:
                raise Refusal(RC.INVALID_VALUE, "this node has no key to seal HS_SECKEY values")
            data = sealer.seal(data)
            perms &= ~(Permission.PUBLIC_READ | Permission.PUBLIC_WRITE)
        out.append((v.index, v.type, data, v.ttl, v.ttl_type, t, perms, v.references))
    # encoded from the fields, in index order, as encode_sorted would (no HandleValue
    # is built for each: a batch of 2000 identifiers stamps about 6000 values)
    out.sort(key=itemgetter(0))
    return U32.pack(len(out)) + b"".join([encode_value_fields(*f) for f in out])


Fields = tuple[int, str, bytes, int, int, int, int, tuple[ValueReference, ...]]


def keep_unchanged_timestamps(current: tuple[HandleValue, ...], new: bytes) -> bytes:
    """A replaced handle's unchanged values keep their timestamps, as in the reference."""
    old = {v.index: v for v in current}
    kept = []
    for v in decode_values(new):
        was = old.get(v.index)
        if was is not None and same_value(was, v):
            v = dataclasses.replace(v, timestamp=was.timestamp)
        kept.append(v)
    return encode_sorted(kept)
