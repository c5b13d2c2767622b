"""The node's ports, bound once before any worker starts and served by all of them.

Not SO_REUSEPORT: with it, a second node started on the same ports joined them and the
kernel spread clients over both nodes. Bound without it, by the supervisor (or the only
worker), a port another node holds fails the start with one line naming it; the workers
get copies of the sockets (multiprocessing passes descriptors to spawned children), and
the kernel hands each connection to one of them. UDP has one SO_REUSEPORT socket per
worker, bound here too: no other node can join them while the node holds the TCP port of
the same number.
"""

from __future__ import annotations

import contextlib
import socket
from typing import NamedTuple

from .settings import ConfigError, Settings


class Listeners(NamedTuple):
    """The node's bound sockets, made once. The TCP ones are served by every worker; UDP
    has one socket per worker (``for_worker``), see bind_listeners."""

    handle_udp: tuple[socket.socket, ...]
    handle_tcp: socket.socket
    http: socket.socket
    # The DNS gateway (--dns-port), bound the same way: TCP exclusive, UDP per worker.
    dns_udp: tuple[socket.socket, ...] = ()
    dns_tcp: socket.socket | None = None

    def for_worker(self, i: int) -> Listeners:
        """What worker ``i`` serves: the TCP sockets and its own UDP socket."""
        dns_udp = (self.dns_udp[i],) if self.dns_udp else ()
        return Listeners((self.handle_udp[i],), self.handle_tcp, self.http, dns_udp, self.dns_tcp)

    def close(self) -> None:
        for sock in (*self.handle_udp, self.handle_tcp, self.http, *self.dns_udp):
            sock.close()
        if self.dns_tcp is not None:
            self.dns_tcp.close()


def _bind(kind: int, host: str, port: int, what: str, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            # Not SO_REUSEPORT (that would let a second node share the port): only
            # SO_REUSEADDR, so a restart binds past connections still in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            # Bursts of queries land faster than one loop turn drains them; a larger
            # receive buffer turns a burst into latency instead of loss.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(4096)
    except OSError as exc:
        sock.close()
        proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
        raise ConfigError(
            f"cannot listen on {what} port {proto} {host}:{port}: {exc.strerror or exc} "
            "(is another idnode node or program serving it?)"
        ) from None
    sock.setblocking(False)
    return sock


def _check_grpc_port(host: str, port: int) -> None:
    """gRPC binds its own port in each worker (with SO_REUSEPORT, so they share it):
    a bind without SO_REUSEPORT here fails if any other process, another node's
    workers included, holds the port."""
    _bind(socket.SOCK_STREAM, host, port, "gRPC").close()


def bind_listeners(s: Settings) -> Listeners:
    """Bind the node's ports before any worker starts; ConfigError (one line, naming the
    port) if one is taken."""
    socks: list[socket.socket] = []
    try:
        # TCP first and exclusive: a second node stops here, before it could join the
        # UDP sockets below (the Handle port is the same number for both).
        tcp = _bind(socket.SOCK_STREAM, s.listen, s.handle_port, "Handle")
        socks.append(tcp)
        http = _bind(socket.SOCK_STREAM, s.listen, s.http_port, "HTTP")
        socks.append(http)
        _check_grpc_port(s.listen, s.grpc_port)
        # UDP: one SO_REUSEPORT socket per worker, so the kernel keeps sending a client
        # address and port to the same worker (a challenge and its answer, the datagrams
        # of one message), as when every worker bound the port itself.
        udp = []
        for _ in range(s.workers):
            sock = _bind(socket.SOCK_DGRAM, s.listen, s.handle_port, "Handle", reuse_port=True)
            socks.append(sock)
            udp.append(sock)
        dns_tcp, dns_udp = None, []
        if s.dns_port:  # TCP first and exclusive, as for the Handle port
            dns_tcp = _bind(socket.SOCK_STREAM, s.listen, s.dns_port, "DNS")
            socks.append(dns_tcp)
            for _ in range(s.workers):
                sock = _bind(socket.SOCK_DGRAM, s.listen, s.dns_port, "DNS", reuse_port=True)
                socks.append(sock)
                dns_udp.append(sock)
    except ConfigError:
        for sock in socks:
            sock.close()
        raise
    return Listeners(tuple(udp), tcp, http, tuple(dns_udp), dns_tcp)
