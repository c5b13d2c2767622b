"""Sends the same hand-made requests to several Handle servers and prints what each
answered, as JSON: the differential half of the interop tests.

    python -m tests.interop.probe NAME=HOST:PORT ...

Every case is one request whose answer the reference server decides: malformed or
unknown session setups, a session id naming no session, an answer to no challenge, a
certified answer. (Exchanges inside a session are driven by the Java library itself:
HdlInterop's ``sessioncases``.) For each target and case: the response code (or the
error the exchange ended in) and a few facts.
Nothing here asserts: tests/interop/test_differential.py compares.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from idnode.resolver.client import ClientError, resolution_request
from idnode.resolver.codec import (
    FrameBuffer,
    HandleOnlyRequest,
    KeyExchange,
    Message,
    Opaque,
    OpCode,
    OpFlag,
    SessionExchangeKeyRequest,
    SessionSetupRequest,
    decode,
    encode,
)
from idnode.resolver.codec.credential import decode_credential

Case = Callable[[str, int, dict[str, Any]], dict[str, Any]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def tcp(host: str, port: int, wire: bytes, timeout: float = 10.0) -> list[Message]:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(wire)
        fb, out = FrameBuffer(), list[Message]()
        rid = struct.unpack_from(">I", wire, 8)[0]
        while True:
            data = s.recv(65536)
            if not data:
                return out
            for f in fb.feed(data):
                m = decode(f)
                out.append(m)
                if m.request_id == rid and not m.has(OpFlag.CN):
                    return out


def ask(host: str, port: int, m: Message) -> dict[str, Any]:
    try:
        replies = tcp(host, port, encode(m))
    except (OSError, ClientError) as exc:
        return {"error": type(exc).__name__}
    if not replies:
        return {"closed": True}
    r = replies[-1]
    return {"rc": r.response_code, "op": r.op_code, "session": bool(r.session_id)}


def setup(body: SessionSetupRequest | None, *, major: int = 2, minor: int = 5) -> Message:
    return Message(
        op_code=OpCode.SESSION_SETUP,
        body=body if body is not None else HandleOnlyRequest("/"),
        request_id=77,
        major_version=major,
        minor_version=minor,
        op_flags=OpFlag.CT | OpFlag.RD,
        expiration=int(time.time()) + 600,
    )


@case
def setup_empty_body(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    return ask(host, port, dataclasses.replace(setup(None), body=Opaque(b"")))


@case
def setup_below_2_5(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    from idnode.registry.session_crypto import dh_keypair

    body = SessionSetupRequest(KeyExchange.DH, 600, "", -1, dh_keypair()[1])
    return ask(host, port, setup(body, minor=1))


@case
def setup_unknown_mode(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    return ask(host, port, setup(SessionSetupRequest(9, 600, "", -1)))


@case
def setup_dh_garbage_key(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    return ask(host, port, setup(SessionSetupRequest(KeyExchange.DH, 600, "", -1, b"junk")))


@case
def setup_client_cipher_garbage_key(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    body = SessionSetupRequest(KeyExchange.CIPHER_CLIENT, 600, "", -1, b"\x00\x00\x00\x01x")
    return ask(host, port, setup(body))


@case
def setup_hdl_key_not_found(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    body = SessionSetupRequest(
        KeyExchange.CIPHER_HDL, 600, "", -1, exchange_key_handle=t["prefix"] + "/none"
    )
    return ask(host, port, dataclasses.replace(setup(body), body=body))


@case
def resolve_in_unknown_session(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    m = dataclasses.replace(resolution_request(t["prefix"] + "/x"), session_id=4242)
    return ask(host, port, m)


@case
def terminate_unknown_session(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    m = Message(
        op_code=OpCode.SESSION_TERMINATE,
        body=HandleOnlyRequest("/"),
        request_id=5,
        session_id=4243,
        major_version=2,
        minor_version=5,
    )
    return ask(host, port, m)


@case
def exchange_key_unknown_session(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    m = Message(
        op_code=OpCode.SESSION_EXCHANGEKEY,
        body=SessionExchangeKeyRequest(b"x" * 64),
        request_id=6,
        session_id=4244,
        major_version=2,
        minor_version=5,
    )
    return ask(host, port, m)


@case
def answer_without_challenge(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    from idnode.resolver.codec import ChallengeAnswer

    m = Message(
        op_code=OpCode.CHALLENGE_RESPONSE,
        request_id=8,
        session_id=4245,
        body=ChallengeAnswer("HS_SECKEY", "0.NA/x", 300, b"\x02" + b"\x00" * 20),
    )
    return ask(host, port, m)


@case
def certified_site_info(host: str, port: int, t: dict[str, Any]) -> dict[str, Any]:
    m = Message(
        op_code=OpCode.GET_SITE_INFO,
        body=HandleOnlyRequest("/"),
        request_id=9,
        op_flags=OpFlag.CT,
        major_version=2,
        minor_version=5,
    )
    (r,) = tcp(host, port, encode(m))
    cred = decode_credential(r.credential)
    return {"rc": r.response_code, "type": cred.type, "hash": cred.hash_algorithm.decode()}


def main(argv: list[str]) -> int:
    targets: dict[str, tuple[str, int, dict[str, Any]]] = {}
    for arg in argv:
        name, _, rest = arg.partition("=")
        address, _, port_text = rest.rpartition(":")
        targets[name] = (address, int(port_text), {"prefix": "20.500.12345"})
    result: dict[str, dict[str, Any]] = {}
    for cname, fn in CASES.items():
        result[cname] = {}
        for name, (host, port, t) in targets.items():
            try:
                result[cname][name] = fn(host, port, t)
            except Exception as exc:  # the case could not run: say so, go on
                result[cname][name] = {"exception": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
