"""A small Handle client on the codec: UDP (multi-packet), TCP and the HTTP tunnel.

Blocking sockets with timeouts: for the CLI, tests and tools, not the server.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import replace
from typing import Any

from .codec import (
    Challenge,
    ChallengeAnswer,
    FrameBuffer,
    LoginIdSystemRequest,
    Message,
    OpCode,
    OpFlag,
    ProtocolError,
    Reassembler,
    ResolutionRequest,
    ResponseCode,
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

_ids = itertools.count(int.from_bytes(os.urandom(3), "big") + 1)


class ClientError(RuntimeError):
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
        request_id=next(_ids) & 0x7FFFFFFF,
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


def exchange(
    server: str, request: Message, transport: str = "udp", timeout: float = 5.0
) -> Message:
    default_port = 8000 if transport == "http" else 2641
    host, port = parse_server(server, default_port)
    try:
        if transport == "udp":
            return exchange_udp(host, port, request, timeout)
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

    The session the server opens with the first challenge is kept, so later requests
    on this client are not challenged again while the session lives.
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
        self.session_id = 0
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
            return [decode(f) for f in self._frames.feed(data)]
        whole = self._reassembler.feed("server", data, time.monotonic())
        return [] if whole is None else [decode(whole)]

    def _exchange(self, m: Message) -> list[Message]:
        if self.socket_per_request and self.transport == "udp":
            self.close()
            self._reassembler = Reassembler()
        s = self._socket()
        wire = encode(m)
        if self.transport == "tcp":
            s.sendall(wire)
        else:
            for gram in split_datagrams(wire):
                s.send(gram)
        out: list[Message] = []
        while True:
            for r in self._messages():
                if r.request_id != m.request_id:
                    continue
                out.append(r)
                if not r.has(OpFlag.CN):
                    return out

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

    def resolve(self, handle: str, *, public_only: bool = False) -> Message:
        """Resolve in this client's session: an authorised admin sees non-public values."""
        flags = OpFlag.REC | OpFlag.CA | (OpFlag.PO if public_only else 0)
        m = replace(resolution_request(handle, flags=flags), session_id=self.session_id)
        return self._exchange(m)[-1]

    def login(self) -> Message:
        """Authenticate the session without writing anything (IDIS LOGIN_ID_SYSTEM)."""
        body = LoginIdSystemRequest(self.key_handle, self.key_index)
        return self.request(Message(op_code=OpCode.LOGIN_ID_SYSTEM, body=body))[-1]

    def request(self, m: Message) -> list[Message]:
        """Send an admin request; answer a challenge if one comes; return the answer(s)."""
        m = replace(m, session_id=self.session_id, request_id=next(_ids) & 0x7FFFFFFF)
        replies = self._exchange(m)
        first = replies[0]
        if first.response_code == ResponseCode.AUTHENTICATION_NEEDED:
            if not isinstance(first.body, Challenge) or first.request_digest is None:
                raise ClientError("the challenge carries no nonce or request digest")
            if first.request_digest.digest != digest_request(encode(m)).digest:
                raise ClientError("the challenge is for a different request")
            self.session_id = first.session_id
            answer = Message(
                op_code=OpCode.CHALLENGE_RESPONSE,
                body=self._answer(first.body.nonce, first.request_digest.digest),
                session_id=self.session_id,
                request_id=next(_ids) & 0x7FFFFFFF,
                major_version=m.major_version,
                minor_version=m.minor_version,
            )
            replies = self._exchange(answer)
        return replies
