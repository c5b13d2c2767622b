"""A small Handle client on the codec: UDP (multi-packet), TCP and the HTTP tunnel.

Blocking sockets with timeouts: for the CLI, tests and tools, not the server.
"""

from __future__ import annotations

import collections
import http.client
import itertools
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

from idnode.errors import IdnodeError
from idnode.registry import session_crypto

from .codec import (
    Challenge,
    ChallengeAnswer,
    FrameBuffer,
    KeyExchange,
    LoginIdSystemRequest,
    Message,
    OpCode,
    OpFlag,
    ProtocolError,
    Reassembler,
    ResolutionRequest,
    ResponseCode,
    SessionSetupRequest,
    SessionSetupResponse,
    decode,
    digest_request,
    encode,
    split_datagrams,
)
from .codec.auth import (
    AUTH_PUBKEY,
    AUTH_SECKEY,
    MAC_HMAC_SHA256,
    MAC_PBKDF2_HMAC_SHA1,
    PublicKeySignature,
    SecretKeyMac,
    encode_secret_key_mac,
    encode_signature,
    keyed_mac,
    pbkdf2_mac,
    signed_data,
)
from .codec.credential import encode_credential, session_mac
from .codec.message import header_and_body, is_encrypted, reseal, with_credential


def new_request_id() -> int:
    """A random request id (1 .. 2^31-1): an off-path sender cannot guess the id of a
    request in flight, as it could a counter's next value."""
    return secrets.randbits(31) or 1


SENT_KEPT = 64  # requests an AdminClient remembers (AdminClient.sent)


class ClientError(IdnodeError, RuntimeError):
    pass


def parse_server(server: str, default_port: int) -> tuple[str, int]:
    host, _, port = server.rpartition(":") if ":" in server else (server, "", "")
    if not host:
        host, port = server, ""
    host = host.strip("[]")
    return host, int(port) if port else default_port


def resolution_request(
    handle: str,
    *,
    types: tuple[str, ...] = (),
    indexes: tuple[int, ...] = (),
    flags: int = OpFlag.REC | OpFlag.CA | OpFlag.PO,
    minor_version: int = 10,
) -> Message:
    return Message(
        op_code=OpCode.RESOLUTION,
        body=ResolutionRequest(handle, indexes, types),
        op_flags=flags,
        request_id=new_request_id(),
        minor_version=minor_version,
        expiration=int(time.time()) + 3600,
    )


def exchange_udp(host: str, port: int, request: Message, timeout: float = 5.0) -> Message:
    wire = encode(request)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        for gram in split_datagrams(wire):
            s.send(gram)
        r = Reassembler()
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = s.recv(65535)
            except TimeoutError:
                raise ClientError(f"no answer from {host}:{port} over UDP in {timeout}s") from None
            whole = r.feed("server", data, time.monotonic())
            if whole is not None:
                m = decode(whole)
                if m.request_id == request.request_id:
                    return m


def exchange_tcp(host: str, port: int, request: Message, timeout: float = 5.0) -> list[Message]:
    """All messages answering ``request`` (several when the answer streams with CN)."""
    out: list[Message] = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(encode(request))
        fb = FrameBuffer()
        while True:
            data = s.recv(65536)
            if not data:
                raise ClientError(f"{host}:{port} closed the connection before answering")
            for frame in fb.feed(data):
                m = decode(frame)
                if m.request_id != request.request_id:
                    continue
                out.append(m)
                if not m.has(OpFlag.CN):
                    return out


def exchange_http(host: str, port: int, request: Message, timeout: float = 5.0) -> Message:
    req = urllib.request.Request(
        f"http://{host}:{port}/",
        data=encode(request),
        method="POST",
        headers={"Content-Type": "application/x-hdl-message"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return decode(resp.read())
    except urllib.error.URLError as exc:
        raise ClientError(f"HTTP exchange with {host}:{port} failed: {exc}") from None
    except http.client.HTTPException:
        # A Handle TCP port answers a POST with a Handle message, not an HTTP status line.
        raise ClientError(
            f"{host}:{port} does not answer HTTP (a Handle port? the HTTP tunnel is on "
            "the node's --http-port, 8000 by default)"
        ) from None


def exchange(
    server: str, request: Message, transport: str = "udp", timeout: float = 5.0
) -> Message:
    default_port = 8000 if transport == "http" else 2641
    host, port = parse_server(server, default_port)
    try:
        if transport == "udp":
            m = exchange_udp(host, port, request, timeout)
            if m.response_code != ResponseCode.ERROR:
                return m
            # As the reference client does: an error over UDP (a node refusing a long
            # answer or one over its UDP rate says "ask over TCP") is asked again over TCP.
            transport = "tcp"
        if transport == "tcp":
            return exchange_tcp(host, port, request, timeout)[-1]
        if transport == "http":
            return exchange_http(host, port, request, timeout)
    except ProtocolError as exc:
        raise ClientError(f"the answer does not decode: {exc.reason}") from None
    except OSError as exc:
        raise ClientError(f"cannot reach {host}:{port} over {transport}: {exc}") from None
    raise ClientError(f"unknown transport {transport!r}")


class AdminClient:
    """An administrator's connection: answers 402 challenges with a secret or private key.

    With ``session=True`` (the default) it opens a keyed session first (SESSION_SETUP,
    Diffie-Hellman), as the reference library does: the first write's challenge proves
    the identity for the session, and every later request carries a MAC made with the
    session key instead of being challenged again. With ``session=False`` every write
    is challenged and answered on its own.
    """

    def __init__(
        self,
        server: str,
        key_handle: str,
        key_index: int = 300,
        *,
        secret: bytes | None = None,
        private_key: Any = None,
        transport: str = "tcp",
        mac_algorithm: int = MAC_HMAC_SHA256,
        timeout: float = 5.0,
        socket_per_request: bool = False,
        session: bool = True,
        version: tuple[int, int] = (2, 5),
        encrypt: bool = False,
        certify: bool = False,
    ) -> None:
        # The reference Java client sends each UDP request from a new socket; with
        # several workers, its challenge answer may then reach another worker.
        self.socket_per_request = socket_per_request
        if (secret is None) == (private_key is None):
            raise ValueError("give exactly one of secret and private_key")
        self.host, self.port = parse_server(server, 2641)
        self.key_handle, self.key_index = key_handle, key_index
        self.secret, self.private_key = secret, private_key
        self.mac_algorithm = mac_algorithm
        self.transport = transport
        self.timeout = timeout
        self.use_session = session
        self.version = version
        self.encrypt = encrypt
        self.certify = certify
        self.session_id = 0
        self.session_key: bytes | None = None
        self.session_cipher = 0
        self.counter = itertools.count(1)
        # The last requests as they went out (tests replay them); bounded, as the client
        # may run a long batch.
        self.sent: collections.deque[bytes] = collections.deque(maxlen=SENT_KEPT)
        self._plain = b""  # the last request before encryption (what its digest covers)
        self._sock: socket.socket | None = None
        self._frames = FrameBuffer()
        self._reassembler = Reassembler()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _socket(self) -> socket.socket:
        if self._sock is None:
            if self.transport == "tcp":
                self._sock = socket.create_connection((self.host, self.port), self.timeout)
            else:
                self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._sock.connect((self.host, self.port))
            self._sock.settimeout(self.timeout)
        return self._sock

    def _messages(self) -> list[Message]:
        s = self._socket()
        try:
            data = s.recv(65535)
        except TimeoutError:
            raise ClientError(
                f"no answer from {self.host}:{self.port} in {self.timeout}s"
            ) from None
        if self.transport == "tcp":
            if not data:
                raise ClientError("the server closed the connection")
            frames = self._frames.feed(data)
        else:
            whole = self._reassembler.feed("server", data, time.monotonic())
            frames = [] if whole is None else [whole]
        return [decode(self._decrypt(f)) for f in frames]

    def _decrypt(self, frame: bytes) -> bytes:
        if not is_encrypted(frame):
            return frame
        if self.session_key is None:
            raise ClientError("an encrypted answer outside a session")
        plain = session_crypto.decrypt(self.session_cipher, self.session_key, frame[20:])
        return reseal(frame, plain, encrypted=False)

    def send_raw(self, wire: bytes, request_id: int) -> list[Message]:
        """Send bytes as they are; the answers to ``request_id``."""
        if self.socket_per_request:
            # as the reference Java client does over UDP; over TCP this also suits a
            # server that closes each connection after its answer (the reference's)
            self.close()
            self._reassembler = Reassembler()
            self._frames = FrameBuffer()
        s = self._socket()
        if self.transport == "tcp":
            s.sendall(wire)
        else:
            for gram in split_datagrams(wire):
                s.send(gram)
        out: list[Message] = []
        while True:
            for r in self._messages():
                if r.request_id != request_id:
                    continue
                out.append(r)
                if not r.has(OpFlag.CN):
                    return out

    def _wire(self, m: Message) -> bytes:
        """``m`` encoded as it goes out: MAC'd and encrypted inside a session."""
        wire = self._plain = encode(m)
        if self.session_key is not None and m.session_id == self.session_id:
            cred = session_mac(
                self.session_key,
                header_and_body(wire),
                version=(m.major_version, m.minor_version),
                suggested=(m.major_version, m.minor_version),
                session_id=m.session_id,
                request_id=m.request_id,
                session_counter=next(self.counter),
            )
            wire = with_credential(wire, encode_credential(cred))
            self._plain = wire
            if self.encrypt:
                sealed = session_crypto.encrypt(self.session_cipher, self.session_key, wire[20:])
                wire = reseal(wire, sealed, encrypted=True)
        return wire

    def _exchange(self, m: Message) -> list[Message]:
        wire = self._wire(m)
        self.sent.append(wire)
        return self.send_raw(wire, m.request_id)

    def _answer(self, nonce: bytes, digest: bytes) -> ChallengeAnswer:
        data = signed_data(nonce, digest)
        if self.secret is not None:
            if self.mac_algorithm == MAC_PBKDF2_HMAC_SHA1:
                salt = os.urandom(16)
                mac = pbkdf2_mac(self.secret, data, salt, 10_000, 160)
                signed = encode_secret_key_mac(
                    SecretKeyMac(MAC_PBKDF2_HMAC_SHA1, mac, salt, 10_000, 160)
                )
            else:
                signed = encode_secret_key_mac(
                    SecretKeyMac(
                        self.mac_algorithm, keyed_mac(self.mac_algorithm, self.secret, data)
                    )
                )
            return ChallengeAnswer(AUTH_SECKEY, self.key_handle, self.key_index, signed)
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        sig = self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return ChallengeAnswer(
            AUTH_PUBKEY,
            self.key_handle,
            self.key_index,
            encode_signature(PublicKeySignature("SHA-256", sig)),
        )

    def _message(self, m: Message) -> Message:
        flags = (
            m.op_flags | (OpFlag.ENC if self.encrypt else 0) | (OpFlag.CT if self.certify else 0)
        )
        return replace(
            m,
            session_id=self.session_id,
            request_id=new_request_id(),
            major_version=self.version[0],
            minor_version=self.version[1],
            op_flags=flags,
            expiration=m.expiration or int(time.time()) + 3600,
        )

    def open_session(self) -> Message:
        """SESSION_SETUP (Diffie-Hellman), claiming this client's key as its identity."""
        x, public = session_crypto.dh_keypair()
        body = SessionSetupRequest(
            KeyExchange.DH, 3600, self.key_handle, self.key_index, public_key=public
        )
        m = replace(self._message(Message(op_code=OpCode.SESSION_SETUP, body=body)), session_id=0)
        m = replace(m, op_flags=(m.op_flags | OpFlag.CT | OpFlag.RD) & ~OpFlag.ENC)
        (r,) = self.send_raw(encode(m), m.request_id)
        if r.response_code != ResponseCode.SUCCESS or not isinstance(r.body, SessionSetupResponse):
            raise ClientError(f"session setup refused: {r.response_code} {r.body}")
        self.session_cipher, self.session_key = session_crypto.dh_client_key(r.body.data, x)
        self.session_id = r.session_id
        return r

    def resolve(self, handle: str, *, public_only: bool = False) -> Message:
        """Resolve in this client's session: an authorised admin sees non-public values."""
        flags = OpFlag.REC | OpFlag.CA | (OpFlag.PO if public_only else 0)
        if self.use_session and not self.session_id:
            self.open_session()
        m = self._message(replace(resolution_request(handle, flags=flags)))
        return self._exchange(m)[-1]

    def login(self) -> Message:
        """Authenticate without writing anything (IDIS LOGIN_ID_SYSTEM)."""
        body = LoginIdSystemRequest(self.key_handle, self.key_index)
        return self.request(Message(op_code=OpCode.LOGIN_ID_SYSTEM, body=body))[-1]

    def request(self, m: Message) -> list[Message]:
        """Send an admin request; answer a challenge if one comes; return the answer(s)."""
        if self.use_session and not self.session_id:
            self.open_session()
        m = self._message(m)
        replies = self._exchange(m)
        first = replies[0]
        if first.response_code == ResponseCode.AUTHENTICATION_NEEDED:
            if not isinstance(first.body, Challenge) or first.request_digest is None:
                raise ClientError("the challenge carries no nonce or request digest")
            if first.request_digest.digest != digest_request(self._plain).digest:
                raise ClientError("the challenge is for a different request")
            answer = Message(
                op_code=OpCode.CHALLENGE_RESPONSE,
                body=self._answer(first.body.nonce, first.request_digest.digest),
                session_id=first.session_id,
                request_id=new_request_id(),
                major_version=m.major_version,
                minor_version=m.minor_version,
                op_flags=m.op_flags & (OpFlag.ENC | OpFlag.CT),
                expiration=int(time.time()) + 3600,
            )
            # The answer itself carries no MAC (as the reference library sends it); it
            # is encrypted like the rest of the session when asked.
            wire = encode(answer)
            if self.encrypt and self.session_key is not None:
                sealed = session_crypto.encrypt(self.session_cipher, self.session_key, wire[20:])
                wire = reseal(wire, sealed, encrypted=True)
            self.sent.append(wire)
            replies = self.send_raw(wire, answer.request_id)
        return replies
