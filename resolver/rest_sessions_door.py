"""REST sessions (``/api/sessions``), as the reference's SessionsServlet speaks them: the
``Authorization: Handle`` header, the answers that prove a key, and the session as a
response shows it. The rows are the registry's (registry/rest_sessions.py).

POST /api/sessions opens a session: {sessionId, nonce}. The client proves a key with
  Authorization: Handle sessionId="...", id="300:0.NA/88.166", type="HS_SECKEY",
                 cnonce="<base64>", alg="SHA256", signature="<base64>"
where the signature covers nonce ‖ cnonce (both raw bytes): for HS_SECKEY a MAC of the
secret (alg MD5, SHA1, SHA256: hash of secret ‖ data ‖ secret; HMAC-SHA1, HMAC-SHA256;
PBKDF2-HMAC-SHA1 with salt, iterations and length), for HS_PUBKEY a signature of the
private key (alg SHA1 or SHA256). Later requests carrying Authorization: Handle
sessionId="..." act as that identity. Unlike the reference, a nonce is answered once:
every answer, right or wrong, replaces it with a fresh one.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from idnode.registry.auth import AuthBusy, AuthError, Identity, check_secret_key, verify_public_key

from .codec.auth import (
    AUTH_PUBKEY,
    AUTH_SECKEY,
    MAC_HMAC_SHA1,
    MAC_HMAC_SHA256,
    MAC_MD5,
    MAC_PBKDF2_HMAC_SHA1,
    MAC_SHA1,
    MAC_SHA256,
    PBKDF2_MAX_ITERATIONS,
    PBKDF2_MAX_KEY_BITS,
    PublicKeySignature,
    SecretKeyMac,
    encode_secret_key_mac,
    encode_signature,
    signed_data,
)

if TYPE_CHECKING:
    from idnode.registry.service import RegistryService

_TOKEN = r"[-A-Za-z0-9!#$%&'*+.`^_|~]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_HANDLE_SCHEME = re.compile(r"\s*Handle\s+(.*)", re.IGNORECASE | re.DOTALL)
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*((?:,\s*)*)", re.DOTALL)
# The fields an Authorization: Handle header may carry (names lower-cased).
HEADER_FIELDS = (
    "version",
    "sessionid",
    "id",
    "cnonce",
    "type",
    "alg",
    "signature",
    "salt",
    "iterations",
    "length",
)
# alg → (HS_SECKEY MAC code, HS_PUBKEY hash name); names compare without case or
# punctuation, as the reference's Util.equalsIgnoreCaseAndPunctuation does.
_ALGS: dict[str, tuple[int, str]] = {
    "MD5": (MAC_MD5, "MD5"),
    "SHA": (MAC_SHA1, "SHA1"),
    "SHA1": (MAC_SHA1, "SHA1"),
    "SHA2": (MAC_SHA256, "SHA-256"),
    "SHA256": (MAC_SHA256, "SHA-256"),
    "HMACSHA1": (MAC_HMAC_SHA1, "HMAC-SHA1"),
    "HMACSHA256": (MAC_HMAC_SHA256, "HMAC-SHA256"),
    "PBKDF2HMACSHA1": (MAC_PBKDF2_HMAC_SHA1, "PBKDF2-HMAC-SHA1"),
    "PBKDF2WITHHMACSHA1": (MAC_PBKDF2_HMAC_SHA1, "PBKDF2-HMAC-SHA1"),
}
NOT_VERIFIED = "Identity not verified"
BAD_HEADER = "Error parsing Authorization: Handle"


def parse_handle_authorization(header: str) -> dict[str, str] | None:
    """The fields of ``Authorization: Handle k="v", k=v, ...`` (names lower-cased), or
    None when the header is not of that scheme or is malformed. ``id`` is
    percent-decoded, as in the reference's HandleAuthorizationHeader."""
    m = _HANDLE_SCHEME.fullmatch(header)
    if m is None or not m.group(1):
        return None
    text, pos, fields, separated = m.group(1), 0, {}, True
    while pos < len(text):
        p = _PARAM.match(text, pos)
        if p is None or not separated:
            return None
        name, value = p.group(1).lower(), _unquote(p.group(2))
        fields[name] = unquote(value) if name == "id" else value
        separated, pos = bool(p.group(3)), p.end()
    return fields


def _unquote(value: str) -> str:
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        return value
    return re.sub(r"\\(.)", r"\1", value[1:-1], flags=re.DOTALL)


def b64decode_lenient(text: str) -> bytes:
    """Base64 as the reference reads it (commons-codec): either alphabet, padding
    optional, whitespace ignored. Raises binascii.Error on anything else."""
    s = "".join(text.split()).replace("-", "+").replace("_", "/").rstrip("=")
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_PBKDF2_FIELDS = ("salt", "iterations", "length")


def _bounded(text: str, high: int) -> int:
    """A positive count no larger than ``high``; ValueError otherwise (never a huge int
    that would break the encoding or burn the CPU, nor digits of another script, which
    int() reads too)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 12):
        raise ValueError(f"{text[:20]!r} is not a count")
    n = int(text)
    if not 0 < n <= high:
        raise ValueError(f"{n} is out of range")
    return n


def signed_response(fields: dict[str, str]) -> bytes:
    """The answer as the Handle protocol carries it (the reference's
    StandardHandleAuthenticator.constructSignedResponse). Raises ValueError."""
    alg = _ALGS.get(re.sub(r"[^A-Z0-9]", "", fields["alg"].upper()))
    if alg is None:
        raise ValueError(f"unknown alg {fields['alg']!r}")
    signature = b64decode_lenient(fields["signature"])
    if fields["type"] == AUTH_SECKEY:
        if alg[0] == MAC_PBKDF2_HMAC_SHA1 and all(k in fields for k in _PBKDF2_FIELDS):
            mac = SecretKeyMac(
                alg[0],
                signature,
                b64decode_lenient(fields["salt"]),
                _bounded(fields["iterations"], PBKDF2_MAX_ITERATIONS),
                _bounded(fields["length"], PBKDF2_MAX_KEY_BITS),
            )
            return encode_secret_key_mac(mac)
        return bytes((alg[0],)) + signature
    if fields["type"] == AUTH_PUBKEY:
        return encode_signature(PublicKeySignature(alg[1], signature))
    raise ValueError(f"unknown type {fields['type']!r}")


def is_answer(fields: dict[str, str]) -> bool:
    """Does the client try to authenticate (the reference's isAuthenticating)?"""
    return any(k in fields for k in ("id", "type", "alg", "signature"))


@dataclass(frozen=True)
class SessionView:
    """A REST session as a response shows it."""

    session_id: str
    nonce: bytes
    identity: Identity | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"sessionId": self.session_id, "nonce": b64encode(self.nonce)}
        if self.identity is not None and not self.error:
            body["authenticated"] = True
            body["id"] = str(self.identity)
        if self.error:
            body["error"] = self.error
        return body

    def challenge(self) -> str:
        """The WWW-Authenticate value that tells a client how to answer."""
        text = f'Handle sessionId="{self.session_id}", nonce="{b64encode(self.nonce)}"'
        if self.error:
            text += ', error="' + self.error.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text


class RestSessions:
    """The REST door's sessions: opening them, finding them, and checking the answers
    their holders send to prove a key. The rows live in the registry
    (registry/rest_sessions.py), shared by every worker of every node."""

    def __init__(
        self,
        registry: RegistryService,
        ttl: float,
        anonymous_ttl: float = 60.0,
        total: int = 100_000,
    ) -> None:
        self.registry = registry
        self.kept = registry.rest_sessions(ttl, anonymous_ttl, total)

    async def open(self) -> SessionView:
        """A new anonymous session; SessionLimit when the node holds too many."""
        session_id, nonce = await self.kept.open()
        return SessionView(session_id, nonce)

    async def find(self, session_id: str) -> SessionView | None:
        """The live session, its idle timer restarted; None when unknown or expired."""
        found = await self.kept.find(session_id)
        if found is None:
            return None
        nonce, who = found
        return SessionView(session_id, nonce, who)

    async def end(self, session_id: str) -> bool:
        return await self.kept.end(session_id)

    async def prove(self, session: SessionView, who: Identity) -> SessionView:
        """Record an identity proved some other way (Basic credentials)."""
        await self.kept.prove(session.session_id, who)
        return replace(session, identity=who)

    async def answer(
        self, session: SessionView, fields: dict[str, str], client: str = ""
    ) -> SessionView | None:
        """Check an answer to the session's nonce; the nonce is used up either way.

        The view returned carries the fresh nonce, and either the identity proved or an
        error (the session keeps any identity proved before). None: the session is gone.
        Throttled (login_guard) when ``client`` or the identity failed too often.
        """
        problem = _answer_problem(fields)
        swapped = await self.kept.swap_nonce(session.session_id)
        if swapped is None:
            return None
        nonce, fresh = swapped
        after = replace(session, nonce=fresh, error="")
        if problem:
            return replace(after, error=problem)
        try:
            signed = signed_response(fields)
            claimed = _claimed_identity(fields["id"])
            cnonce = b64decode_lenient(fields["cnonce"])
        except (ValueError, binascii.Error):
            return replace(after, error=BAD_HEADER)
        guard = self.registry.credentials.guard
        guard.admit(client, claimed)
        try:
            who = await self._verify(claimed, fields["type"], signed, signed_data(nonce, cnonce))
        except AuthBusy as exc:
            guard.passed(client, claimed)  # not checked: no failure
            return replace(after, error=str(exc))
        if who is None:
            await guard.failed(client, claimed, "REST session", NOT_VERIFIED)
            return replace(after, error=NOT_VERIFIED)
        guard.passed(client, claimed)
        await self.kept.prove(session.session_id, who)
        return replace(after, identity=who)

    async def _verify(
        self, claimed: Identity, auth_type: str, signed: bytes, data: bytes
    ) -> Identity | None:
        """The key that verifies the answer: the one named, or with index 0 the first of
        the handle's keys of that type, in index order (as the reference tries them)."""
        for who in await self._candidates(claimed, auth_type):
            try:
                key = await self.registry.key_for(who, auth_type)
                if auth_type == AUTH_SECKEY:
                    await check_secret_key(key, signed, data)
                else:
                    verify_public_key(key, signed, data)
            except AuthBusy:
                raise
            except AuthError:
                continue
            return who
        return None

    async def _candidates(self, claimed: Identity, auth_type: str) -> list[Identity]:
        if claimed.index > 0:
            return [claimed]
        return await self.registry.credentials.keys_of(claimed.handle, auth_type)


def _answer_problem(fields: dict[str, str]) -> str:
    """Why an answer cannot be checked at all, in the reference's words; "" if it can."""
    if fields.get("version", "0") != "0":
        return "Unknown version in Authorization: Handle"
    if any(k not in fields for k in ("id", "cnonce", "type", "alg", "signature")):
        return "Missing fields in authentication data"
    return ""


def _claimed_identity(text: str) -> Identity:
    """``300:0.NA/88.166``, or a bare handle meaning "any of its keys" (index 0)."""
    index, sep, handle = text.partition(":")
    if sep and index.isascii() and index.isdigit() and handle:
        return Identity(handle, int(index))
    if not text:
        raise ValueError("empty id")
    return Identity(text, 0)
