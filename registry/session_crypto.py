"""The cryptography of Handle-protocol sessions, in the forms the reference library uses.

A session key is agreed in SESSION_SETUP one of four ways (codec KeyExchange):
Diffie-Hellman in the client's group, or a fresh key sent encrypted with RSA
(PKCS#1 v1.5) under the client's public key, a public key named by a handle value, or
the server's own key. The key then MACs messages (codec.credential) and, where a
client sets ENC, encrypts them: DES, DESede or AES in CBC mode with PKCS#5 padding,
the IV sent before the ciphertext (protocol 2.4 and later; sessions below 2.5 are
refused, see registry/sessions.py).

A key travels as ``int4 algorithm ‖ key bytes``. DES and DESede keys carry odd parity
in every byte, as Java's key classes set it: the MAC covers those exact bytes.
"""

from __future__ import annotations

import os
import secrets
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from idnode.errors import RegistryError
from idnode.resolver.codec.codes import SessionCipher
from idnode.resolver.codec.keys import (
    DhPublicKey,
    RsaPublicKey,
    decode_public_key,
    encode_public_key,
)

try:  # cryptography >= 43 keeps TripleDES (and so single DES) among the decrepit ciphers
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

KEY_SIZES = {SessionCipher.DES: 8, SessionCipher.DESEDE: 24, SessionCipher.AES: 32}
_BLOCK = {SessionCipher.DES: 8, SessionCipher.DESEDE: 8, SessionCipher.AES: 16}
_ALG = struct.Struct(">i")
MIN_DH_BITS = 1024  # the reference client's group; smaller groups are refused
MAX_DH_BITS = 2048  # bounds the CPU one SESSION_SETUP may cost (clients use 1024)
# An RSA key the client sends (or names) costs the node one public-key operation per
# setup: bounded by the modulus and the exponent's size (keys use 65537).
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 4096
MAX_RSA_EXPONENT_BITS = 64
EXPONENT_BITS = 320


class SessionCryptoError(RegistryError):
    """A key, ciphertext or parameter that cannot be used (the reason is for the client)."""


def with_parity(key: bytes) -> bytes:
    """Every byte with odd parity in its low bit, as Java's DES key classes store them."""
    out = bytearray(key)
    for i, b in enumerate(out):
        hi = b & 0xFE
        out[i] = hi | (0 if bin(hi).count("1") % 2 else 1)
    return bytes(out)


def fit_key(cipher: int, material: bytes) -> bytes:
    """The session key for ``cipher`` from agreed material (its first bytes), as Java's
    KeyAgreement.generateSecret(algorithm) derives it."""
    try:
        size = KEY_SIZES[SessionCipher(cipher)]
    except ValueError:
        raise SessionCryptoError(f"unknown session cipher {cipher}") from None
    if len(material) < size:
        raise SessionCryptoError("the agreed secret is too short for the cipher")
    key = material[:size]
    return key if cipher == SessionCipher.AES else with_parity(key)


def new_key(cipher: int) -> bytes:
    return fit_key(cipher, os.urandom(KEY_SIZES[SessionCipher(cipher)]))


def pack_key(cipher: int, key: bytes) -> bytes:
    return _ALG.pack(cipher) + key


def unpack_key(packed: bytes) -> tuple[int, bytes]:
    if len(packed) < 5:
        raise SessionCryptoError("the session key message is too short")
    (cipher,) = _ALG.unpack_from(packed)
    key = packed[4:]
    try:
        size = KEY_SIZES[SessionCipher(cipher)]
    except ValueError:
        raise SessionCryptoError(f"unknown session cipher {cipher}") from None
    if len(key) != size and not (cipher == SessionCipher.AES and len(key) in (16, 24)):
        raise SessionCryptoError(f"a {SessionCipher(cipher).name} key of {len(key)} bytes")
    return cipher, key


# --- key agreement ------------------------------------------------------------------


def _read_key(data: bytes, what: str) -> object:
    """A public key from the wire; SessionCryptoError naming ``what`` if unreadable."""
    try:
        return decode_public_key(data)
    except Exception as exc:
        raise SessionCryptoError(f"cannot read {what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Agreed:
    cipher: int
    key: bytes
    reply: bytes  # what the SESSION_SETUP answer carries


def dh_agree(client_key: bytes, cipher: int) -> Agreed:
    """Answer a DH setup: a key pair in the client's group; the reply is the algorithm
    and our public value; the session key the first bytes of the shared secret.

    The arithmetic is Python's pow: loading client-chosen groups into OpenSSL costs a
    primality check of ~120 ms each, which an unauthenticated client could repeat at
    will. The group is the client's choice and protects only its own session; the
    server's exponent is fresh per session (EXPONENT_BITS, well above the group's
    ~80-bit strength), so nothing long-lived is exposed.
    """
    peer = _read_key(client_key, "the client's DH key")
    if not isinstance(peer, DhPublicKey):
        raise SessionCryptoError("a Diffie-Hellman setup needs a DH_PUB_KEY")
    bits = peer.p.bit_length()
    if not MIN_DH_BITS <= bits <= MAX_DH_BITS or peer.p % 2 == 0:
        raise SessionCryptoError(f"a {bits}-bit DH group is outside {MIN_DH_BITS}-{MAX_DH_BITS}")
    x = secrets.randbits(EXPONENT_BITS) | (1 << (EXPONENT_BITS - 1))
    ours = pow(peer.g, x, peer.p)
    shared = pow(peer.y, x, peer.p)
    if ours in (0, 1) or shared in (0, 1, peer.p - 1):
        raise SessionCryptoError("degenerate DH values")
    # Java pads the shared secret to the size of the prime; the key is its first bytes.
    secret = shared.to_bytes((bits + 7) // 8, "big")
    reply = encode_public_key(DhPublicKey(ours, peer.p, peer.g))
    return Agreed(cipher, fit_key(cipher, secret), _ALG.pack(cipher) + reply)


def rsa_public_key(data: bytes) -> rsa.RSAPublicKey:
    key = _read_key(data, "the public key")
    if not isinstance(key, RsaPublicKey):
        raise SessionCryptoError("key transport needs an RSA public key")
    bits = key.modulus.bit_length()
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise SessionCryptoError(
            f"a {bits}-bit RSA key is outside {MIN_RSA_BITS}-{MAX_RSA_BITS} bits"
        )
    if key.exponent.bit_length() > MAX_RSA_EXPONENT_BITS:
        raise SessionCryptoError(f"an RSA exponent over {MAX_RSA_EXPONENT_BITS} bits")
    try:
        return rsa.RSAPublicNumbers(key.exponent, key.modulus).public_key()
    except ValueError as exc:  # an even or too-small exponent, say
        raise SessionCryptoError(f"not a usable RSA key: {exc}") from None


def rsa_send_key(public_key: bytes, cipher: int) -> Agreed:
    """A new session key for ``cipher``, encrypted with the client's RSA key (PKCS#1 v1.5);
    the client decrypts ``algorithm ‖ key``."""
    key = new_key(cipher)
    sealed = rsa_public_key(public_key).encrypt(pack_key(cipher, key), padding.PKCS1v15())
    return Agreed(cipher, key, sealed)


_RAW_KEYS = {
    8: SessionCipher.DES,
    24: SessionCipher.DESEDE,
    16: SessionCipher.AES,
    32: SessionCipher.AES,
}


def rsa_receive_key(private_key: rsa.RSAPrivateKey, sealed: bytes) -> tuple[int, bytes]:
    """The session key a client sent encrypted with our public key (SESSION_EXCHANGEKEY).

    The reference server expects ``algorithm ‖ key``, but the 7.3 library encrypts the
    bare key (it strips the algorithm before encrypting, and uses DES unless told
    otherwise): a bare key is known by its length."""
    try:
        packed = private_key.decrypt(sealed, padding.PKCS1v15())
    except ValueError:
        raise SessionCryptoError("the session key does not decrypt with the server key") from None
    try:
        return unpack_key(packed)
    except SessionCryptoError:
        if len(packed) in _RAW_KEYS:
            # As received: the MAC covers the key's exact bytes, parity bits and all.
            return _RAW_KEYS[len(packed)], packed
        raise


# --- the client's side of DH (idnode's own client, and the tests) -------------------------

# RFC 3526 group 14, the 2048-bit MODP group (the JDK's default DH group of that size).
GROUP14_P = int(
    "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74"
    "020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f1437"
    "4fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7ed"
    "ee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf05"
    "98da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb"
    "9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3b"
    "e39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf695581718"
    "3995497cea956ae515d2261898fa051015728e5a8aacaa68ffffffffffffffff",
    16,
)
GROUP14_G = 2


def dh_keypair(p: int = GROUP14_P, g: int = GROUP14_G) -> tuple[int, bytes]:
    """A client's DH private exponent and its public value as SESSION_SETUP carries it."""
    x = secrets.randbits(EXPONENT_BITS) | (1 << (EXPONENT_BITS - 1))
    return x, encode_public_key(DhPublicKey(pow(g, x, p), p, g))


def dh_client_key(reply: bytes, x: int) -> tuple[int, bytes]:
    """(cipher, session key) from the server's DH answer (algorithm ‖ public value)."""
    if len(reply) < 5:
        raise SessionCryptoError("the DH answer is too short")
    cipher = _ALG.unpack_from(reply)[0]
    peer = _read_key(reply[4:], "the server's DH key")
    if not isinstance(peer, DhPublicKey):
        raise SessionCryptoError("the server answered with no DH key")
    secret = pow(peer.y, x, peer.p).to_bytes((peer.p.bit_length() + 7) // 8, "big")
    return cipher, fit_key(cipher, secret)


# --- message encryption ---------------------------------------------------------------


def _algorithm(cipher: int, key: bytes) -> algorithms.AES | TripleDES:
    if cipher == SessionCipher.AES:
        return algorithms.AES(key)
    if cipher == SessionCipher.DES:
        return TripleDES(key * 3)  # EDE with K1=K2=K3 is single DES
    if cipher == SessionCipher.DESEDE:
        return TripleDES(key)
    raise SessionCryptoError(f"unknown session cipher {cipher}")


def encrypt(cipher: int, key: bytes, data: bytes) -> bytes:
    """IV ‖ CBC ciphertext of ``data`` with PKCS#5 padding."""
    block = _BLOCK[SessionCipher(cipher)]
    iv = os.urandom(block)
    padder = sym_padding.PKCS7(block * 8).padder()
    plain = padder.update(data) + padder.finalize()
    enc = Cipher(_algorithm(cipher, key), modes.CBC(iv)).encryptor()
    return iv + enc.update(plain) + enc.finalize()


def decrypt(cipher: int, key: bytes, data: bytes) -> bytes:
    try:
        block = _BLOCK[SessionCipher(cipher)]
    except ValueError:
        raise SessionCryptoError(f"unknown session cipher {cipher}") from None
    if len(data) < 2 * block or len(data) % block:
        raise SessionCryptoError("the encrypted message is not whole cipher blocks")
    iv, body = data[:block], data[block:]
    dec = Cipher(_algorithm(cipher, key), modes.CBC(iv)).decryptor()
    plain = dec.update(body) + dec.finalize()
    unpadder = sym_padding.PKCS7(block * 8).unpadder()
    try:
        return unpadder.update(plain) + unpadder.finalize()
    except ValueError:
        raise SessionCryptoError("the message does not decrypt with the session key") from None
