# The compiled module resolver/udp_batch_io.c (optional: resolver/udp_batch_io.py imports it).
from collections.abc import Sequence
from typing import Any

from typing_extensions import Buffer

MAX_BATCH: int
MAX_DATAGRAM: int

def recv_batch(fd: int, max: int = 64, size: int = 65536) -> list[tuple[bytes, Any]]: ...
def send_batch(
    fd: int, family: int, items: Sequence[tuple[Buffer, Any]], start: int = 0
) -> int: ...
def stats() -> dict[str, int]: ...
