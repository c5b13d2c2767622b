"""Creating a prefix's administrator, the reference server's layout.

``0.NA/<prefix>`` gets HS_ADMIN at index 100 (every permission, administered by
``300:0.NA/<prefix>``), the key at index 300 (HS_SECKEY, sealed and never public, or
HS_PUBKEY) and the admin group at index 200: an HS_VLIST listing ``300:0.NA/<prefix>``.
Existing clients find the admin where their usual settings look; pyhandle, for one,
writes ``200:0.NA/<prefix>`` as the owner of the handles it creates.
"""

from __future__ import annotations

import dataclasses

from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from idnode.resolver.codec import (
    AdminRecord,
    DsaPublicKey,
    HandleValue,
    ProtocolError,
    RsaPublicKey,
    SiteInfo,
    decode_public_key,
    decode_site,
    decode_values,
    encode_admin,
    encode_public_key,
    encode_site,
    encode_values,
)
from idnode.resolver.codec.codes import ALL_ADMIN_PERMISSIONS, TYPE_SITE, Permission
from idnode.resolver.codec.values import ValueReference
from idnode.resolver.codec.vlist import encode_vlist

from .names import NA_PREFIX
from .sealing import Sealer
from .store import KEEP, Keep, Outcome, Store, now

ADMIN_INDEX = 100
GROUP_INDEX = 200
KEY_INDEX = 300


def public_key_data(pem: bytes) -> bytes:
    """HS_PUBKEY data from a PEM public key (RSA or DSA), or from a key already in the
    reference's encoding (the admpub.bin its setup writes)."""
    if not pem.lstrip().startswith(b"-----BEGIN"):
        try:
            key_data = decode_public_key(pem)
        except ProtocolError as exc:
            raise ValueError(f"neither PEM nor a reference public key: {exc}") from None
        if not isinstance(key_data, RsaPublicKey | DsaPublicKey):
            raise ValueError("the admin public key must be RSA or DSA")
        return encode_public_key(key_data)
    key = load_pem_public_key(pem)
    if isinstance(key, rsa.RSAPublicKey):
        n = key.public_numbers()
        return encode_public_key(RsaPublicKey(n.e, n.n))
    if isinstance(key, dsa.DSAPublicKey):
        d = key.public_numbers()
        p = d.parameter_numbers
        return encode_public_key(DsaPublicKey(p.q, p.p, p.g, d.y))
    raise ValueError("the admin public key must be RSA or DSA")


async def create_prefix_admin(
    store: Store,
    prefix: str,
    *,
    sealer: Sealer | None = None,
    secret: bytes | None = None,
    pubkey_pem: bytes | None = None,
) -> str:
    """Write the admin values of ``0.NA/<prefix>``, keeping its other values."""
    handle = NA_PREFIX + prefix
    admin = AdminRecord(ALL_ADMIN_PERMISSIONS, handle, KEY_INDEX)
    t = now()
    values = [
        HandleValue(ADMIN_INDEX, "HS_ADMIN", encode_admin(admin), timestamp=t),
        HandleValue(
            GROUP_INDEX, "HS_VLIST", encode_vlist([ValueReference(handle, KEY_INDEX)]), timestamp=t
        ),
    ]
    if secret is not None:
        if sealer is None:
            raise ValueError("a node key is needed to store a secret")
        values.append(
            HandleValue(
                KEY_INDEX,
                "HS_SECKEY",
                sealer.seal(secret),
                timestamp=t,
                permissions=int(Permission.ADMIN_READ | Permission.ADMIN_WRITE),
            )
        )
    elif pubkey_pem is not None:
        values.append(HandleValue(KEY_INDEX, "HS_PUBKEY", public_key_data(pubkey_pem), timestamp=t))

    def fn(before: bytes | None) -> Outcome:
        keep = [
            v
            for v in (decode_values(before) if before else ())
            if v.index not in {x.index for x in values}
        ]
        merged = sorted([*keep, *values], key=lambda v: v.index)
        return Outcome(encode_values(merged), 1, None, "prefix admin created")

    await store.mutate(handle, fn, actor="cli", op="INIT_ADMIN")
    return f"{KEY_INDEX}:{handle}"


# --- the node's HS_SITE in its prefix records -------------------------------------------

SITE_INDEX = 1  # where the reference's prefix records keep HS_SITE


def _site_index(values: list[HandleValue]) -> int:
    taken = {v.index: v for v in values}
    if SITE_INDEX not in taken or taken[SITE_INDEX].type == TYPE_SITE:
        return SITE_INDEX
    return max(taken) + 1


def site_update(before: bytes | None, site: SiteInfo) -> bytes | None:
    """``0.NA/<prefix>``'s values with ``site`` as its HS_SITE, or None when they hold it
    already. A changed site replaces the old one with a higher serial (clients that cache
    site records see it is newer); every other value is kept."""
    values = list(decode_values(before)) if before else []
    index = _site_index(values)
    current = next((v for v in values if v.index == index), None)
    serial = site.serial
    if current is not None:
        try:
            old: SiteInfo | None = decode_site(current.data)
        except ProtocolError:
            old = None
        if old is not None:
            if dataclasses.replace(old, serial=site.serial) == site:
                return None
            serial = max(site.serial, (old.serial + 1) & 0xFFFF)
    data = encode_site(dataclasses.replace(site, serial=serial))
    fresh = HandleValue(index, TYPE_SITE, data, timestamp=now())
    kept = [v for v in values if v.index != index]
    return encode_values(sorted([*kept, fresh], key=lambda v: v.index))


async def publish_site(store: Store, prefix: str, site: SiteInfo, *, actor: str = "node") -> bool:
    """Put this node's HS_SITE into ``0.NA/<prefix>`` when it lacks it or it changed
    (keeping HS_ADMIN, keys and the rest); whether it wrote."""
    handle = NA_PREFIX + prefix
    key = store.key(handle)
    if site_update((await store.get_many([key])).get(key), site) is None:
        return False  # the usual start: nothing to write, no audit row

    def fn(before: bytes | None) -> Outcome:
        new = site_update(before, site)
        if new is None:
            return Outcome(KEEP, 1, None, "HS_SITE unchanged")
        return Outcome(new, 1, None, "HS_SITE of this node published")

    o = await store.mutate(handle, fn, actor=actor, op="PUBLISH_SITE")
    return not isinstance(o.new, Keep)
