"""An unauthenticated client cannot make the node sign as fast as it asks (issue 12):
each certified answer outside a keyed session costs a signature with the server key, so
a client address gets --signature-burst of them at once and --signatures-per-client a
second after that; past it a certified request gets RC 603, unsigned and saying why
(never the answer it asked for without the signature it asked for). Other clients and
uncertified requests are not affected, and the budget refills.

Loopback is not exempt (unlike the UDP response-rate limit, whose exemption is about
forged sources, not cost), so the client here is 127.0.0.1.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from idnode.resolver.client import resolution_request
from idnode.resolver.codec import (
    ErrorResponse,
    FrameBuffer,
    Message,
    OpFlag,
    ResolutionResponse,
    ResponseCode,
    decode,
    encode,
)
from idnode.resolver.codec.credential import HS_SIGNED, decode_credential

from .test_connection_bounds import ATTACKER, node_with

RATE, BURST = 2, 5  # --signatures-per-client, --signature-burst in this test
CERTIFIED = OpFlag.CT | OpFlag.PO


class Client:
    """One Handle TCP connection, from ``source``, asking one request at a time."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(source, 0)
        )
        self.frames = FrameBuffer()

    def ask(self, handle: str, flags: int = CERTIFIED) -> Message:
        wire = encode(resolution_request(handle, flags=flags))
        rid = struct.unpack_from(">I", wire, 8)[0]
        self.sock.sendall(wire)
        while True:
            for frame in self.frames.feed(self.sock.recv(65536)):
                m = decode(frame)
                if m.request_id == rid:
                    return m

    def close(self) -> None:
        self.sock.close()


def signed(m: Message) -> bool:
    """A successful answer carrying the server's signature."""
    if m.response_code != ResponseCode.SUCCESS or not isinstance(m.body, ResolutionResponse):
        return False
    return bool(m.credential) and decode_credential(m.credential).type == HS_SIGNED


def refused(m: Message) -> bool:
    """RC 603, unsigned, saying why."""
    return (
        m.response_code == ResponseCode.REQUEST_LIMIT_DAILY
        and not m.credential
        and isinstance(m.body, ErrorResponse)
        and "certified answers" in m.body.message
    )


def test_certified_answers_are_bounded_per_client(tmp_path: Path) -> None:
    flags = ("--signatures-per-client", str(RATE), "--signature-burst", str(BURST))
    with node_with(tmp_path, *flags) as n:
        c = Client(n.handle_port)
        burst = [c.ask("88.166.1001/P-1") for _ in range(4 * BURST)]
        n_signed = sum(signed(m) for m in burst)
        # the burst, and what the rate adds while the requests are asked (well under 1 s)
        assert BURST <= n_signed <= BURST + RATE, [m.response_code for m in burst]
        assert all(signed(m) for m in burst[:BURST]), burst[:BURST]
        assert all(signed(m) or refused(m) for m in burst), burst
        assert refused(burst[-1]), burst[-1]
        # not certified: answered as ever
        plain = c.ask("88.166.1001/P-2", flags=OpFlag.PO)
        assert plain.response_code == ResponseCode.SUCCESS and not plain.credential
        # another client address has its own budget
        other = Client(n.handle_port, ATTACKER)
        assert signed(other.ask("88.166.1001/P-3"))
        other.close()
        # the budget refills at the rate: after 1.6 s, 3 more signatures, then refusals
        time.sleep(1.6)
        again = [c.ask("88.166.1001/P-1") for _ in range(3 * BURST)]
        assert all(signed(m) for m in again[:3]), again[:3]
        assert refused(again[-1]), again[-1]
        c.close()
        log = n.log_text()
        line = f"limit reached: handle: {RATE:g} signed answers/s for one client address"
        assert line in log, log[-3000:]
        assert log.count("limit reached") <= 3, log[-3000:]
