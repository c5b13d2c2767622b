"""Log format: one line per event, with the process id so workers can be told apart."""

from __future__ import annotations

import logging
import sys
import time


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_bad_http_is_the_clients)
    logging.getLogger("asyncpg.pool").addFilter(_pool_reconnects_in_one_line)


def _bad_http_is_the_clients(record: logging.LogRecord) -> bool:
    """A request aiohttp cannot parse (a NUL in a header, a request line over 8 KiB) is
    the client's error, answered 400: one warning line, not an ERROR with a traceback."""
    from aiohttp.http_exceptions import HttpProcessingError

    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, HttpProcessingError):
        why = " ".join(str(exc).split())[:200]
        record.msg, record.args = "%s: %s", (record.getMessage(), why)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
    return True


_pool_lines: dict[str, float] = {}


def _pool_reconnects_in_one_line(record: logging.LogRecord) -> bool:
    """asyncpg's pool retries its connections while PostgreSQL is down and logs each
    retry with a traceback: during an outage (already reported by the doors) that is one
    line with the error, at most once per 10 s per message, not a 25-line traceback."""
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None or not isinstance(exc, (OSError, ConnectionError)):
        return True
    now, key = time.monotonic(), record.getMessage()
    if now - _pool_lines.get(key, -1e9) < 10.0:
        return False
    _pool_lines[key] = now
    record.msg, record.args = "%s: %s", (key, " ".join(str(exc).split())[:200])
    record.exc_info, record.exc_text = None, None
    return True


class Repeats:
    """Say a repeated message once per ``interval`` seconds, with how many times it came.

    For what a failing part repeats on every request (Redis down: a warning per read):
    the first occurrence is logged at once; later ones within the interval are counted,
    and the first one after it is logged with that count. Keyed by
    the message's format string, so arguments that vary (the error text) do not split
    the count.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._next: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._next.get(msg, 0.0):
            self._held[msg] = self._held.get(msg, 0) + 1
            return
        self._next[msg] = now + self.interval
        held = self._held.pop(msg, 0)
        if held:
            self.logger.log(level, msg + " (%d more since the last such line)", *args, held)
        else:
            self.logger.log(level, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(logging.WARNING, msg, *args)

    def error(self, msg: str, *args: object) -> None:
        self.log(logging.ERROR, msg, *args)
