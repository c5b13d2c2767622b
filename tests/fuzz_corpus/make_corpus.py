"""Regenerate the fuzz corpus: ``python -m tests.fuzz_corpus.make_corpus``.

``ok-*.bin`` must decode; ``bad-*.bin`` must raise ProtocolError. Keep each entry
small and about one thing; add any input that ever escaped the codec here.
"""

from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).parent


def frame(op: int, rc: int, body: bytes, flags: int = 0) -> bytes:
    mlen = 24 + len(body) + 4
    return (
        struct.pack(">BBBBIIII", 2, 1, 0, 0, 0, 1, 0, mlen)
        + struct.pack(">IIIHBBII", op, rc, flags, 0xFFFF, 0, 0, 0, len(body))
        + body
        + bytes(4)
    )


def s(text: bytes) -> bytes:
    return struct.pack(">I", len(text)) + text


ENTRIES = {
    "ok-resolution.bin": frame(1, 0, s(b"88.166.1001/ABC-123") + bytes(8)),
    "ok-idis-envelope.bin": bytes.fromhex("0203020a") + frame(1, 0, s(b"88.1/x") + bytes(8))[4:],
    "ok-unknown-opcode.bin": frame(9999, 0, b"\x01\x02"),
    "ok-error-no-message.bin": frame(1, 2, b""),
    "bad-empty.bin": b"",
    "bad-envelope-only.bin": frame(1, 0, b"")[:20],
    "bad-huge-message-length.bin": struct.pack(">BBBBIIII", 2, 1, 0, 0, 0, 1, 0, 0xFFFFFFFF)
    + bytes(24),
    "bad-length-over-limit-short.bin": struct.pack(">BBBBIIII", 2, 1, 0, 0, 0, 1, 0, 262145),
    "bad-negative-handle-length.bin": frame(1, 0, b"\xff\xff\xff\xfe" + bytes(8)),
    "bad-count-2-31.bin": frame(1, 1, s(b"a") + struct.pack(">I", 2**31)),
    "bad-index-count-past-end.bin": frame(1, 0, s(b"a") + struct.pack(">I", 1000) + bytes(4)),
    "bad-utf8-handle.bin": frame(1, 0, s(b"\xc3\x28") + bytes(8)),
    "bad-trailing-body.bin": frame(1, 0, s(b"a") + bytes(9)),
    "bad-digest-type.bin": frame(1, 1, b"\x07" + bytes(32), flags=0x00800000),
    "bad-value-ttl-type.bin": frame(
        1, 1, s(b"a") + struct.pack(">I", 1) + struct.pack(">iIBiB", 1, 0, 9, 0, 14) + bytes(12)
    ),
    "bad-site-unknown-protocol.bin": frame(
        2,
        1,
        bytes.fromhex(
            "0001020a000180020000000000000000000000010000000100000000000000000000000000000000"
            "0000000000000001"
            "0309"
            "00000a51"
        ),
    ),
    "bad-stray-credential-bytes.bin": frame(1, 0, s(b"a") + bytes(8))[:-2],
}


def main() -> None:
    for name, data in ENTRIES.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(ENTRIES)} entries to {HERE}")


if __name__ == "__main__":
    main()
