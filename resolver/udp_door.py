"""Handle protocol over UDP: datagrams in, answers out, multi-packet both ways.

UDP answers go to whatever address a datagram claims, so the door bounds what an
unverified source can be sent (no amplification worth having):

- one answer is at most ``max_datagrams`` datagrams; a longer one is replaced by a
  one-datagram RC 2 (ERROR) saying to ask over TCP. The reference clients ignore the
  envelope's truncated flag, but the HANDLE.NET library takes an RC 2 over UDP as a
  failed transport and asks the same server over TCP at once (its protocol loop in
  HandleResolver.sendRequestToSite), so a large handle still resolves for it;
- answers to one source network (IPv4 /24, IPv6 /56) are limited in bytes per second,
  in the manner of DNS response-rate limiting: past the budget every ``slip``-th
  answer is replaced by that small "ask over TCP" error and the others are dropped.
  Sources in ``exempt`` networks (loopback by default: it cannot be spoofed from the
  network) are not limited.

Unfinished multi-datagram requests are bounded per client and in all (Reassembler).

The door reads and writes its socket in one of two ways, the same answers either way: the
event loop's datagram transport (a callback per datagram), or batches, one recvmmsg per
wakeup and one sendmmsg per batch of answers (``serve_batched``, udp_batch_io.py), when
the compiled module is built and the ``udp_batch_io`` setting is on.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from typing import Any

from . import metrics
from .codec import ErrorResponse, Message, ProtocolError, Reassembler, encode, split_datagrams
from .codec.codes import (
    ENVELOPE_SIZE,
    OC_RESERVED,
    UDP_DATAGRAM_SIZE,
    UDP_PAYLOAD_SIZE,
    UNKNOWN_SITE_SERIAL,
    OpFlag,
    ResponseCode,
)
from .codec.message import ENVELOPE
from .codec.wire import U32
from .handle_service import HandleService
from .settings import ConfigError, Settings
from .udp_batch_io import BatchedUdp, Item, module_counts

log = logging.getLogger("idnode.udp")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = "127.0.0.0/8,::1/128"
ENCRYPTED = 0x40  # envelope flag: the message after the envelope is ciphertext
RRL_TABLE_MAX = 65_536  # source networks tracked; the least recently seen go first
REASSEMBLY_BYTES_PER_CLIENT = 512 * 1024  # two messages of the largest size
REASSEMBLY_BYTES = 16 * 1024 * 1024
TOO_LARGE = "the answer is too large for UDP here: ask over TCP"
OVER_RATE = "UDP answers to your network are over this node's rate: ask over TCP"


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"127.0.0.0/8,::1/128"`` -> networks (ValueError names a bad one)."""
    out: list[Network] = []
    for part in text.split(","):
        if part.strip():
            out.append(ipaddress.ip_network(part.strip(), strict=False))
    return tuple(out)


class ResponseRateLimiter:
    """Bytes of UDP answers per second per source network: a token bucket each (rate,
    bursts of ``burst`` bytes), kept for at most RRL_TABLE_MAX networks (LRU)."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        slip: int = 2,
        exempt: tuple[Network, ...] = (),
        v4_prefix: int = 24,
        v6_prefix: int = 56,
        max_networks: int = RRL_TABLE_MAX,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else 2 * rate
        self.slip = slip
        self.exempt = exempt
        self.v4_prefix, self.v6_prefix = v4_prefix, v6_prefix
        self.max_networks = max_networks
        self._buckets: OrderedDict[Any, list[float]] = OrderedDict()  # net -> [tokens, at]
        self._nets: dict[str, Any] = {}  # host -> its network key (None: exempt)
        self._limited = 0
        self.dropped = 0
        self.slipped = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _network(self, host: str) -> Any:
        try:
            return self._nets[host]
        except KeyError:
            pass
        if len(self._nets) >= 4 * self.max_networks:
            self._nets.clear()  # a cache of parsed addresses, not state: start it over
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            key: Any = host
        else:
            if any(ip in net for net in self.exempt):
                key = None
            else:
                bits = self.v4_prefix if ip.version == 4 else self.v6_prefix
                key = ipaddress.ip_network((ip, bits), strict=False)
        self._nets[host] = key
        return key

    def allow(self, host: str, size: int, now: float) -> bool | None:
        """True: send ``size`` bytes to ``host``; None: send the small slip answer
        instead; False: send nothing."""
        net = self._network(host)
        if net is None:
            return True
        b = self._buckets.get(net)
        if b is None:
            b = self._buckets[net] = [self.burst, now]
            if len(self._buckets) > self.max_networks:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(net)
            b[0] = min(self.burst, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= size:
            b[0] -= size
            return True
        self._limited += 1
        if self.slip > 0 and self._limited % self.slip == 0:
            self.slipped += 1
            return None
        self.dropped += 1
        return False


def refusal(request: bytes, reply: bytes, reason: str) -> bytes:
    """A one-datagram RC 2 (ERROR) answering ``request`` instead of ``reply``: the
    request's opCode, the reply's envelope (request id, session, version)."""
    major, minor, _f, _sm, session, rid, _seq, _len = ENVELOPE.unpack_from(reply)
    readable = len(request) >= ENVELOPE_SIZE + 4 and not request[2] & ENCRYPTED
    op = U32.unpack_from(request, ENVELOPE_SIZE)[0] if readable else OC_RESERVED
    return encode(
        Message(
            op_code=op,
            body=ErrorResponse(reason),
            response_code=ResponseCode.ERROR,
            op_flags=int(OpFlag.AT),
            request_id=rid,
            session_id=session,
            major_version=major,
            minor_version=minor,
            site_info_serial=UNKNOWN_SITE_SERIAL,
        )
    )


def datagrams_of(reply: bytes) -> int:
    """How many datagrams ``reply`` (one or more messages) goes out as."""
    n = pos = 0
    while pos + ENVELOPE_SIZE <= len(reply):
        length = U32.unpack_from(reply, pos + 16)[0]
        n += max(1, -(-length // UDP_PAYLOAD_SIZE))
        pos += ENVELOPE_SIZE + length
    return n


class UdpDoor(asyncio.DatagramProtocol):
    def __init__(
        self,
        service: HandleService,
        *,
        max_inflight: int = 10_000,
        max_datagrams: int = 16,
        rrl: ResponseRateLimiter | None = None,
        reassembly_per_client: int = 32,
        reassembly_max: int = 4096,
    ) -> None:
        self.service = service
        self.max_inflight = max_inflight
        self.max_datagrams = max_datagrams
        self.rrl = rrl
        self.transport: asyncio.DatagramTransport | BatchedUdp | None = None
        self.batched: BatchedUdp | None = None  # serve_batched: read and sent in batches
        self.reassembler = Reassembler(
            max_pending_per_client=reassembly_per_client,
            max_bytes_per_client=REASSEMBLY_BYTES_PER_CLIENT,
            max_pending=reassembly_max,
            max_bytes=REASSEMBLY_BYTES,
        )
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.shed = 0  # requests dropped because too many were in flight
        self.too_large = 0  # answers over max_datagrams, replaced by "ask over TCP"
        self._expiry: asyncio.TimerHandle | None = None
        # Answers of one loop turn, sent together when the turn's datagrams are read
        # (see _send): a client then reads a burst of answers per wakeup, not one.
        self._outbox: list[Item] = []
        self._in_batch = False  # answering a batch read (batch_received): it sends the outbox
        self._reported = (0,) * 10  # counts already added to the metrics

    @classmethod
    def from_settings(cls, service: HandleService, s: Settings) -> UdpDoor:
        """The door as the node's settings (resolver.settings.Settings) shape it."""
        rrl = None
        if s.udp_rrl_bytes > 0:
            try:
                exempt = parse_networks(s.udp_rrl_exempt)
            except ValueError as exc:
                raise ConfigError(f"udp_rrl_exempt: {exc}") from None
            rrl = ResponseRateLimiter(s.udp_rrl_bytes, slip=s.udp_rrl_slip, exempt=exempt)
        if s.udp_max_datagrams < 1 or s.udp_reassembly_per_client < 1 or s.udp_reassembly_max < 1:
            raise ConfigError(
                "udp_max_datagrams, udp_reassembly_per_client and udp_reassembly_max "
                "must be at least 1"
            )
        return cls(
            service,
            max_datagrams=s.udp_max_datagrams,
            rrl=rrl,
            reassembly_per_client=s.udp_reassembly_per_client,
            reassembly_max=s.udp_reassembly_max,
        )

    def serve_batched(self, sock: socket.socket) -> None:
        """Serve ``sock`` reading it in batches (recvmmsg, at most 64 datagrams per
        wakeup) and sending each batch's answers together (sendmmsg), instead of through
        ``loop.create_datagram_endpoint``. The compiled module must be built
        (udp_batch_io.choose)."""
        t = self.batched = BatchedUdp(sock, self.batch_received, self.error_received)
        self.connection_made(t)
        t.start()

    def connection_made(self, transport: asyncio.BaseTransport | BatchedUdp) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        self.reassembler.expire(time.monotonic())
        self.report()
        self._expiry = asyncio.get_running_loop().call_later(1.0, self._schedule_expiry)

    def report(self) -> None:
        """The door's bounded state into the metrics (once a second, off the hot path)."""
        r = self.reassembler
        b = self.batched
        metrics.UDP_PENDING.set(len(r))
        metrics.UDP_PENDING_BYTES.set(r.buffered_bytes)
        metrics.UDP_PENDING_CLIENTS.set(r.clients)
        metrics.UDP_RRL_NETWORKS.set(len(self.rrl) if self.rrl is not None else 0)
        metrics.UDP_SEND_BACKLOG.set(b.backlog_bytes if b is not None else 0)
        module = module_counts() if b is not None else {}
        now = (
            r.dropped,
            self.too_large,
            self.rrl.dropped if self.rrl is not None else 0,
            self.rrl.slipped if self.rrl is not None else 0,
            b.dropped if b is not None else 0,
            b.abandoned if b is not None else 0,
            module.get("send_errors", 0),
            module.get("truncated", 0),
            module.get("bad_address", 0),
            module.get("bad_items", 0),
        )
        before, self._reported = self._reported, now
        for counter, new, old in zip(
            (
                metrics.UDP_REASSEMBLY_DROPPED,
                metrics.UDP_TOO_LARGE,
                metrics.UDP_RRL.labels("dropped"),
                metrics.UDP_RRL.labels("slipped"),
                metrics.UDP_BATCH_DROPPED.labels("backlog_full"),
                metrics.UDP_BATCH_DROPPED.labels("closed"),
                metrics.UDP_BATCH_DROPPED.labels("send_error"),
                metrics.UDP_BATCH_DROPPED.labels("truncated"),
                metrics.UDP_BATCH_DROPPED.labels("bad_address"),
                metrics.UDP_BATCH_DROPPED.labels("bad_item"),
            ),
            now,
            before,
            strict=True,
        ):
            if new > old:
                counter.inc(new - old)

    def batch_received(self, batch: list[Item]) -> None:
        """The datagrams of one read (serve_batched), each answered as the transport's
        callback answers one; the answers ready now leave together, in one sendmmsg."""
        self._in_batch = True
        try:
            for data, addr in batch:
                try:
                    self.datagram_received(data, addr)
                except Exception:  # a bug must cost one answer, not the batch
                    log.exception("error answering a UDP request")
        finally:
            self._in_batch = False
        if self._outbox:
            self._flush()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.closing:
            return
        n = len(data)
        # One datagram holds the whole message when its length says so and it is packet 0.
        if n >= ENVELOPE_SIZE and (
            U32.unpack_from(data, 16)[0] != n - ENVELOPE_SIZE or data[12:16] != b"\0\0\0\0"
        ):
            try:
                whole = self.reassembler.feed(addr, data, time.monotonic(), addr[0])
            except ProtocolError as exc:
                reply = self.service.malformed(data, exc, "udp")
                if reply is not None:
                    self._send(reply, addr, data)
                return
            if whole is None:
                return
            data = whole
        r = self.service.respond(data, "udp", addr[0])
        if r is None:
            return
        if isinstance(r, bytes):
            self._send(r, addr, data)
            return
        if len(self.tasks) >= self.max_inflight:
            r.close()
            self.shed += 1
            return
        t = asyncio.get_running_loop().create_task(self._finish(r, addr, data))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _finish(self, r: Any, addr: Any, request: bytes) -> None:
        try:
            reply = await r
        except Exception:  # a bug must cost one answer, never the server
            log.exception("error answering a UDP request")
            return
        if reply is not None:
            self._send(reply, addr, request)

    def _send(self, reply: bytes, addr: Any, request: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        small = len(reply) <= UDP_DATAGRAM_SIZE
        grams = 1 if small else datagrams_of(reply)
        if grams > self.max_datagrams:
            self.too_large += 1
            reply, small, grams = refusal(request, reply, TOO_LARGE), True, 1
        if self.rrl is not None:
            # charged what goes on the wire: each further datagram repeats the envelope
            size = len(reply) + ENVELOPE_SIZE * (grams - 1)
            ok = self.rrl.allow(addr[0], size, time.monotonic())
            if ok is None:
                reply, small = refusal(request, reply, OVER_RATE), True
            elif not ok:
                return
        if small:
            self._queue(reply, addr)
            return
        # A reply may hold several messages (a streamed list): each goes out on its own.
        # Read in batches, its datagrams join the outbox (one sendmmsg for them all).
        batched = self.batched is not None
        pos = 0
        while pos < len(reply):
            end = pos + ENVELOPE_SIZE + U32.unpack_from(reply, pos + 16)[0]
            for gram in split_datagrams(reply[pos:end]):
                if batched:
                    self._queue(gram, addr)
                else:
                    self.transport.sendto(gram, addr)
            pos = end

    def _queue(self, datagram: bytes, addr: Any) -> None:
        """Into the outbox; the first of a loop turn schedules its flush, unless a batch
        read is being answered (batch_received sends the outbox at its end)."""
        if not self._outbox and not self._in_batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append((datagram, addr))

    def _flush(self) -> None:
        """Send the answers queued in this loop turn: the event loop reads the datagrams
        that are ready (libuv: up to 32 per wakeup) before it runs this, so under load
        the answers leave back to back and a client wakes once for many of them, as it
        does with an echo; an idle node sends each answer in the turn it was asked."""
        out, self._outbox = self._outbox, []
        t = self.transport
        if t is None or t.is_closing():
            return
        if self.batched is not None:
            try:
                self.batched.send_many(out)
            except Exception:  # a bug must cost these answers, never the loop's turn
                log.exception("cannot send %d UDP answers", len(out))
            return
        for reply, addr in out:
            t.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)

    async def drain_and_close(self, grace: float) -> None:
        """Stop taking requests, finish the ones in flight (up to ``grace`` s), close."""
        self.closing = True
        if self._expiry is not None:
            self._expiry.cancel()
        deadline = time.monotonic() + grace
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=grace)
        self._flush()  # the answers of the last turn, before the socket goes
        if self.transport is not None:
            self.transport.close()
        if self.batched is not None:  # its backlog goes out first, within the grace
            await self.batched.wait_closed(deadline - time.monotonic())
        self.report()  # the last counts
