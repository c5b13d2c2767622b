"""Sessions and message security on the Handle protocol doors.

What the reference server does around each message, given a request and its answer:

* SESSION_SETUP (400) agrees a session key (DH, or a key sent under the client's RSA
  key, a key named by a handle value, or the server's key); SESSION_EXCHANGEKEY (402)
  delivers the client's key in the CIPHER_SERVER mode; SESSION_TERMINATE (401) ends a
  session. Sessions are shared by every worker through the registry
  (registry/sessions.py).
* A request in a keyed session proves itself with an HS_MAC credential made with the
  session key and a counter never used before (RC 502 for a bad MAC, 505 for a spent
  counter, 500 for a session that timed out or was terminated).
* An answer to a request that set the certify flag is signed: with the session key
  (HS_MAC, the server's own counter) inside a keyed session, else with the server's
  private key (HS_SIGNED), which clients check against the key in HS_SITE.
* An encrypted request (envelope flag) is decrypted with its session's key; an answer
  to a request that set ENC is encrypted the same way.

Nothing here touches a socket: the doors hand over bytes and get bytes back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from idnode.errors import RequestRefused
from idnode.registry.auth import AuthError, Identity
from idnode.registry.sealing import SecretError
from idnode.registry.server_key import ServerKeyError
from idnode.registry.session_crypto import (
    Agreed,
    SessionCryptoError,
    decrypt,
    dh_agree,
    encrypt,
    rsa_receive_key,
    rsa_send_key,
)
from idnode.registry.sessions import Session, SessionLimit, SessionStore

from .codec import Body, Empty, ErrorResponse, Message, OpCode, ProtocolError, ResponseCode
from .codec.bodies import SessionExchangeKeyRequest, SessionSetupRequest, SessionSetupResponse
from .codec.codes import KeyExchange, SessionCipher
from .codec.credential import (
    Credential,
    check_session_mac,
    decode_credential,
    encode_credential,
    session_mac,
    signed_prefix,
)
from .codec.message import (
    decode_envelope,
    header_and_body,
    reseal,
    split_messages,
    with_credential,
)

if TYPE_CHECKING:
    from idnode.registry.server_key import ServerKey
    from idnode.registry.service import RegistryService

log = logging.getLogger("idnode.sessions")

RC = ResponseCode
# Sessions from 2.5 on: their MACs carry a counter field (2.5 and 2.6 compute the MAC
# without really covering it, see codec.credential), and the replay defence keys on the
# MAC itself. Older setups are refused rather than run without any replay defence.
MIN_SESSION_VERSION = (2, 5)
MSG_NO_SESSION = "Invalid session id or session time out. Please try again."
_NO_MAC_OPS = (OpCode.SESSION_SETUP, OpCode.SESSION_EXCHANGEKEY)


class SessionRefusal(RequestRefused):
    """A request the session rules refuse: answered with ``rc`` and ``message``."""


@dataclass(frozen=True, slots=True)
class Secured:
    """How an answer leaves: signed (certify), MAC'd within a session, encrypted."""

    certify: bool = False
    encrypt: bool = False
    session: Session | None = None
    # The version the request advertised: clients of 2.8 and later (the ID-SDK among
    # them) check signatures over the envelope fields as well.
    advertised: tuple[int, int] = (2, 1)


class SessionDoor:
    def __init__(
        self,
        sessions: SessionStore,
        registry: RegistryService | None,
        server_key: ServerKey | None,
        *,
        cipher: int = SessionCipher.AES,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.server_key = server_key
        self.cipher = cipher

    # --- incoming ------------------------------------------------------------------------

    async def decrypt_request(self, wire: bytes) -> tuple[bytes, Session]:
        """The plain request inside an encrypted one, and its session."""
        sid = int.from_bytes(wire[4:8], "big")
        if not sid:
            raise SessionRefusal(RC.SESSION_FAILED, "an encrypted request needs a session")
        session = await self.sessions.get(sid)
        if session is None:
            raise SessionRefusal(RC.SESSION_TIMEOUT, MSG_NO_SESSION)
        if session.key is None:
            raise SessionRefusal(RC.SESSION_FAILED, "the session has no key yet")
        try:
            plain = decrypt(session.cipher, session.key, wire[20:])
        except SessionCryptoError as exc:
            raise SessionRefusal(RC.SESSION_FAILED, f"cannot decrypt the request: {exc}") from None
        return reseal(wire, plain, encrypted=False), session

    async def check_mac(self, session: Session, m: Message, wire: bytes) -> None:
        """Raise SessionRefusal unless ``wire`` carries a valid MAC of ``session`` that was
        never used before, on a request that has not expired."""
        if session.key is None:
            raise SessionRefusal(RC.INVALID_SESSION_KEY, "the session has no key yet")
        if not m.credential:
            raise SessionRefusal(RC.INVALID_CREDENTIAL, "Session request missing MAC code.")
        try:
            cred = decode_credential(m.credential)
        except ProtocolError:
            raise SessionRefusal(RC.INVALID_SESSION_KEY, "Session authentication failed.") from None
        ok = check_session_mac(
            session.key,
            header_and_body(wire),
            cred,
            version=(m.major_version, m.minor_version),
            suggested=decode_envelope(wire).suggested_version,
            session_id=m.session_id,
            request_id=m.request_id,
        )
        if not ok:
            raise SessionRefusal(RC.INVALID_SESSION_KEY, "Session authentication failed.")
        spent = await self.sessions.use(session, cred.signature, m.expiration)
        if spent.gone:
            raise SessionRefusal(RC.SESSION_TIMEOUT, MSG_NO_SESSION)
        if not spent.ok:
            raise SessionRefusal(
                RC.SESSION_MESSAGE_REJECTED,
                f"a request already seen, or expired, in session {session.id} (replay refused)",
            )

    # --- the session operations ----------------------------------------------------------

    async def setup(self, m: Message, client: str) -> tuple[int, Body, Session | None]:
        """Answer SESSION_SETUP: (response code, body, the new session)."""
        body = m.body
        if not isinstance(body, SessionSetupRequest):
            return _error(RC.INVALID_SESSIONSETUP_REQUEST, "malformed SESSION_SETUP")
        if (m.major_version, m.minor_version) < MIN_SESSION_VERSION:
            return _error(
                RC.INVALID_SESSIONSETUP_REQUEST,
                "sessions need protocol 2.5 or later (its MACs carry a replay counter)",
            )
        try:
            mode = KeyExchange(body.mode)
        except ValueError:
            return _error(RC.SESSION_FAILED, "Unrecognized key exchange mode")
        try:
            # Before any key agreement: a client over its cap costs no public-key work.
            await self.sessions.room(client)
        except SessionLimit as exc:
            return _error(RC.SERVER_TOO_BUSY, str(exc))
        claimed = None
        if body.identity_handle and body.identity_index >= 0:
            claimed = Identity(body.identity_handle, body.identity_index)
        agreed: Agreed | None = None
        server_data = b""  # CIPHER_SERVER: the client encrypts the key to our public key
        try:
            if mode == KeyExchange.DH:
                agreed = dh_agree(body.public_key, self.cipher)
            elif mode == KeyExchange.CIPHER_CLIENT:
                agreed = rsa_send_key(body.public_key, self.cipher)
            elif mode == KeyExchange.CIPHER_HDL:
                agreed = rsa_send_key(await self._exchange_key(body), self.cipher)
            elif mode == KeyExchange.CIPHER_SERVER:
                if self.server_key is None or self.server_key.algorithm != "RSA":
                    return _error(
                        RC.SESSION_FAILED, "KEY_EXCHANGE_CIPHER_SERVER needs an RSA server key"
                    )
                server_data = self.server_key.public_data
            else:
                return _error(RC.SESSION_FAILED, "Unrecognized key exchange mode")
        except SessionCryptoError as exc:
            return _error(RC.SESSION_FAILED, f"key exchange failed: {exc}")
        except AuthError as exc:
            return _error(RC.SESSION_FAILED, f"No key found in key exchange handle: {exc}")
        try:
            session = await self.sessions.open(
                mode=mode,
                cipher=agreed.cipher if agreed else 0,
                key=agreed.key if agreed else None,
                claimed=claimed,
                major=m.major_version,
                minor=m.minor_version,
                timeout=body.timeout,
                client=client,
                room_checked=True,
            )
        except SecretError as exc:
            return _error(RC.SESSION_FAILED, str(exc))
        data = agreed.reply if agreed is not None else server_data
        log.info(
            "session %d opened (%s) for %s", session.id, mode.name, claimed or "an anonymous client"
        )
        return RC.SUCCESS, SessionSetupResponse(mode, data), session

    async def _exchange_key(self, body: SessionSetupRequest) -> bytes:
        if self.registry is None:
            raise AuthError("this node keeps no handles")
        who = Identity(body.exchange_key_handle, body.exchange_key_index)
        return await self.registry.key_for(who, "HS_PUBKEY")

    async def exchange_key(
        self, m: Message, session: Session | None, client: str
    ) -> tuple[int, Body]:
        """SESSION_EXCHANGEKEY: the client's session key, under our RSA key.

        One attempt per session, from the address that set it up: whoever else learns
        the session id cannot plant a key of their own, and a key message that is not a
        key ends the session (an RSA decryption oracle gets one query per setup). A
        block that is not a ciphertext of ours may not be refused: OpenSSL's implicit
        rejection decrypts it to a pseudo-random message, and one of a key's length
        keys the session with bytes nobody holds, so its MACs never verify."""
        body = m.body
        if session is None:
            return _error(RC.SESSION_TIMEOUT, MSG_NO_SESSION)[:2]
        if session.mode != KeyExchange.CIPHER_SERVER or session.key is not None:
            return _error(RC.SESSION_FAILED, "Invalid session id. Session failed.")[:2]
        if session.client and client and session.client != client:
            log.info(
                "session %d: key exchange from %s refused (set up by another address)",
                session.id,
                client,
            )
            return _error(RC.SESSION_FAILED, "Invalid session id. Session failed.")[:2]
        try:
            if not isinstance(body, SessionExchangeKeyRequest) or self.server_key is None:
                raise SessionCryptoError("no key to decrypt")
            cipher, key = rsa_receive_key(self.server_key.rsa(), body.encrypted_key)
        except (SessionCryptoError, ServerKeyError) as exc:
            log.info("session %d: key exchange failed, session closed: %s", session.id, exc)
            await self.sessions.close(session.id)
            return _error(RC.SESSION_FAILED, "Can't decrypt client session key.")[:2]
        if not await self.sessions.set_key(session.id, cipher, key):
            return _error(RC.SESSION_FAILED, "Invalid session id. Session failed.")[:2]
        return RC.SUCCESS, Empty()

    async def terminate(self, m: Message, wire: bytes, session: Session | None) -> tuple[int, Body]:
        """SESSION_TERMINATE: only the holder of the key may end a session."""
        if session is None:
            return _error(RC.SESSION_TIMEOUT, "Can not get session info.")[:2]
        try:
            await self.check_mac(session, m, wire)
        except SessionRefusal as exc:
            if exc.rc in (RC.INVALID_CREDENTIAL, RC.INVALID_SESSION_KEY):
                return _error(RC.INVALID_SESSION_KEY, "Invalid session key.")[:2]
            return _error(exc.rc, exc.message)[:2]
        await self.sessions.close(session.id)
        log.info("session %d terminated", session.id)
        return RC.SUCCESS, Empty()

    # --- outgoing ------------------------------------------------------------------------

    async def secure(self, out: bytes, how: Secured) -> bytes:
        """Sign, MAC and encrypt an encoded answer (one message or a stream of them)."""
        if not (how.certify or how.encrypt):
            return out
        parts = split_messages(out)
        return b"".join([await self._secure_one(p, how) for p in parts])

    async def _secure_one(self, wire: bytes, how: Secured) -> bytes:
        session = how.session
        sid = int.from_bytes(wire[4:8], "big")
        op = int.from_bytes(wire[20:24], "big")
        if session is not None and session.id != sid:
            session = None
        if how.certify:
            if session is not None and session.key is not None and op not in _NO_MAC_OPS:
                counter = await self.sessions.next_counter(session)
                if counter is not None:
                    cred = session_mac(
                        session.key,
                        header_and_body(wire),
                        version=(wire[0], wire[1]),
                        suggested=decode_envelope(wire).suggested_version,
                        session_id=sid,
                        request_id=int.from_bytes(wire[8:12], "big"),
                        session_counter=counter,
                    )
                    wire = with_credential(wire, encode_credential(cred))
                else:
                    wire = self._sign(wire, how)
            else:
                wire = self._sign(wire, how)
        # A setup's answer is never encrypted: the client needs it to learn the key.
        if (
            how.encrypt
            and session is not None
            and session.key is not None
            and op not in _NO_MAC_OPS
        ):
            wire = reseal(wire, encrypt(session.cipher, session.key, wire[20:]), encrypted=True)
        return wire

    def _sign(self, wire: bytes, how: Secured) -> bytes:
        if self.server_key is None:
            return wire  # no key to sign with: the client will say so
        version = (wire[0], wire[1])
        # We suggest no version (envelope bytes 2-3 stay zero), so a client reads our
        # own version as the suggested one.
        prefix = signed_prefix(
            max(version, how.advertised),
            version,
            version,
            int.from_bytes(wire[4:8], "big"),
            int.from_bytes(wire[8:12], "big"),
            0,
        )
        cred: Credential = self.server_key.credential(prefix + header_and_body(wire))
        return with_credential(wire, encode_credential(cred))


def _error(rc: int, message: str) -> tuple[int, Body, None]:
    return rc, ErrorResponse(message), None
