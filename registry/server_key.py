"""The node's server key pair: it signs certified answers and receives session keys.

Clients that set the certify flag check an answer's HS_SIGNED credential against the
public key the server's HS_SITE record publishes; the Java library also verifies the
SESSION_SETUP answer that way before it trusts a session. `idnode init` makes the key
pair (RSA by default; DSA as the reference server's setup makes it) and stores it in
the registry sealed under the node key, so every node serving the registry with the
same key file signs with it and a database dump alone does not reveal it.

Keys can also be imported: PEM (PKCS#8 or traditional), or the reference server's
``privkey.bin`` (its own encoding, optionally under a passphrase).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from idnode.errors import RegistryError
from idnode.resolver.codec.auth import PublicKeySignature, encode_signature
from idnode.resolver.codec.credential import HS_SIGNED, Credential
from idnode.resolver.codec.keys import DsaPublicKey, RsaPublicKey, encode_public_key
from idnode.resolver.codec.wire import Reader

from .auth import AuthError, verify_public_key
from .sealing import Sealer, SecretError
from .store import ServerKeyStore

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

SIGNATURE_HASH = b"SHA1"  # the only hash the reference library (7.3) verifies
PrivateKey = rsa.RSAPrivateKey | dsa.DSAPrivateKey
ALGORITHMS = ("rsa", "dsa")
DEFAULT_BITS = {"rsa": 2048, "dsa": 1024}  # DSA-1024: SHA1withDSA, as the reference signs


class ServerKeyError(RegistryError):
    pass


@dataclass(frozen=True)
class ServerKey:
    private: PrivateKey

    @property
    def algorithm(self) -> str:
        return "RSA" if isinstance(self.private, rsa.RSAPrivateKey) else "DSA"

    @property
    def public_data(self) -> bytes:
        """The public key as HS_PUBKEY data (what HS_SITE publishes)."""
        if isinstance(self.private, rsa.RSAPrivateKey):
            n = self.private.public_key().public_numbers()
            return encode_public_key(RsaPublicKey(n.e, n.n))
        d = self.private.public_key().public_numbers()
        p = d.parameter_numbers
        return encode_public_key(DsaPublicKey(p.q, p.p, p.g, d.y))

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA1())
        return self.private.sign(data, hashes.SHA1())

    def credential(self, data: bytes) -> Credential:
        """The HS_SIGNED credential over ``data`` (signed prefix + header + body)."""
        return Credential(HS_SIGNED, SIGNATURE_HASH, self.sign(data))

    def rsa(self) -> rsa.RSAPrivateKey:
        if not isinstance(self.private, rsa.RSAPrivateKey):
            raise ServerKeyError("the server key is DSA: it cannot receive session keys")
        return self.private

    # --- storage ---------------------------------------------------------------------

    def pem(self) -> bytes:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sealed(self, sealer: Sealer) -> bytes:
        return sealer.seal(self.pem())

    @classmethod
    def unseal(cls, sealer: Sealer, stored: bytes) -> ServerKey:
        return cls.from_pem(sealer.unseal(stored))

    @classmethod
    def generate(cls, algorithm: str = "rsa", bits: int | None = None) -> ServerKey:
        algorithm = algorithm.lower()
        if algorithm not in ALGORITHMS:
            raise ServerKeyError(f"server keys are rsa or dsa, not {algorithm!r}")
        size = bits or DEFAULT_BITS[algorithm]
        if algorithm == "rsa":
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=size))
        return cls(dsa.generate_private_key(key_size=size))

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None = None) -> ServerKey:
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except (ValueError, TypeError) as exc:
            raise ServerKeyError(f"not a usable PEM private key: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey | dsa.DSAPrivateKey):
            raise ServerKeyError("a server key must be RSA or DSA")
        return cls(key)

    @classmethod
    def from_file(cls, data: bytes, passphrase: bytes | None = None) -> ServerKey:
        """A PEM key, or the reference server's privkey.bin."""
        if data.lstrip().startswith(b"-----BEGIN"):
            return cls.from_pem(data, passphrase)
        return cls(reference_private_key(data, passphrase))


def verify(public_data: bytes, data: bytes, signature: bytes) -> bool:
    """Check an HS_SIGNED signature (SHA-1) against HS_PUBKEY data, as a client does."""
    try:
        verify_public_key(
            public_data, encode_signature(PublicKeySignature("SHA1", signature)), data
        )
    except AuthError:
        return False
    return True


# --- the reference server's private key files -----------------------------------------

_ENCRYPT_DES_ECB = 0
_ENCRYPT_NONE = 1
_ENCRYPT_DES_CBC = 2


def _reference_unlock(data: bytes, passphrase: bytes | None) -> bytes:
    if len(data) < 4:
        raise ServerKeyError("the key file is too short")
    kind = int.from_bytes(data[:4], "big")
    if kind == _ENCRYPT_NONE:
        return data[4:]
    if kind not in (_ENCRYPT_DES_ECB, _ENCRYPT_DES_CBC):
        raise ServerKeyError(f"unknown key file encryption {kind}")
    if not passphrase:
        raise ServerKeyError("the key file is protected by a passphrase: give it")
    # The reference derives a DES key from MD5(passphrase) (first 8 bytes).
    key = hashlib.md5(passphrase).digest()[:8]
    if kind == _ENCRYPT_DES_CBC:
        iv, body = data[4:12], data[12:]
        mode: modes.Mode = modes.CBC(iv)
    else:
        body, mode = data[4:], modes.ECB()
    dec = Cipher(TripleDES(key * 3), mode).decryptor()  # type: ignore[misc]  # K1=K2=K3: DES
    plain = dec.update(body) + dec.finalize()
    pad = plain[-1] if plain else 0
    if not 1 <= pad <= 8 or plain[-pad:] != bytes((pad,)) * pad:
        raise ServerKeyError("wrong passphrase for the key file")
    return plain[:-pad]


def reference_private_key(data: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """A private key in the reference server's encoding (privkey.bin, admpriv.bin)."""
    raw = _reference_unlock(data, passphrase)
    try:
        r = Reader(raw)
        kind = r.text("key type", 64)

        def num(what: str) -> int:
            return int.from_bytes(r.blob(what, 8192), "big")

        if kind == "DSA_PRIV_KEY":
            x, p, q, g = num("x"), num("p"), num("q"), num("g")
            y = pow(g, x, p)
            params = dsa.DSAParameterNumbers(p, q, g)
            return dsa.DSAPrivateNumbers(x, dsa.DSAPublicNumbers(y, params)).private_key()
        if kind == "RSA_PRIVCRT_KEY":
            n, e, d, p, q, dp, dq, qi = (
                num(w) for w in ("n", "e", "d", "p", "q", "dp", "dq", "qi")
            )
            pub = rsa.RSAPublicNumbers(e, n)
            return rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, pub).private_key()
    except ValueError as exc:
        raise ServerKeyError(f"the key file does not hold a valid key: {exc}") from None
    except Exception as exc:  # ProtocolError from a truncated file
        raise ServerKeyError(f"cannot read the key file: {exc}") from None
    raise ServerKeyError(f"unsupported private key type {kind!r} (RSA with CRT or DSA)")


async def ensure_server_key(
    store: ServerKeyStore,
    sealer: Sealer,
    *,
    algorithm: str = "rsa",
    imported: ServerKey | None = None,
    rotate: bool = False,
) -> tuple[ServerKey, str]:
    """The registry's active server key, made (or imported, or replaced) as asked;
    and what was done: "kept", "created" or "imported"."""
    if imported is not None:
        await store.put_server_key(
            imported.algorithm, imported.sealed(sealer), imported.public_data
        )
        return imported, "imported"
    row = await store.server_key()
    if row is not None and not rotate:
        try:
            return ServerKey.unseal(sealer, row[1]), "kept"
        except SecretError:
            raise ServerKeyError(
                "the server key in the registry was sealed with another node key: use the "
                "key file of the node that made it, or make a new key (--new-server-key)"
            ) from None
    key = ServerKey.generate(algorithm)
    await store.put_server_key(key.algorithm, key.sealed(sealer), key.public_data)
    return key, "created"
