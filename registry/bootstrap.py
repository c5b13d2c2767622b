"""Creating a prefix's administrator, the reference server's layout.

``0.NA/<prefix>`` gets HS_ADMIN at index 100 (every permission, administered by
``300:0.NA/<prefix>``), the key at index 300 (HS_SECKEY, sealed and never public, or
HS_PUBKEY) and the admin group at index 200: an HS_VLIST listing ``300:0.NA/<prefix>``.
Existing clients find the admin where their usual settings look; pyhandle, for one,
writes ``200:0.NA/<prefix>`` as the owner of the handles it creates.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from idnode.resolver.codec import (
    AdminRecord,
    DsaPublicKey,
    HandleValue,
    ProtocolError,
    RsaPublicKey,
    decode_public_key,
    decode_values,
    encode_admin,
    encode_public_key,
    encode_values,
)
from idnode.resolver.codec.codes import ALL_ADMIN_PERMISSIONS, Permission
from idnode.resolver.codec.values import ValueReference
from idnode.resolver.codec.vlist import encode_vlist

from .names import NA_PREFIX
from .sealing import Sealer
from .store import Outcome, Store, now

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
