"""The UDP door's batched I/O on real sockets: the compiled recvmmsg/sendmmsg module
(resolver/udp_batch_io.c) and BatchedUdp's bounded send backlog (resolver/udp_batch_io.py).

Loopback UDP never says EAGAIN to a sender (a datagram is handed to the receiver, or
dropped there, within the send call), so the tests that need a full send buffer use an
AF_UNIX datagram pair, whose sender gets EAGAIN once the receiver's queue is full, with
the address None (a connected socket's peer)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from idnode.resolver import udp_batch_io
from idnode.resolver.udp_batch_io import ITEM_OVERHEAD, BatchedUdp, Item

try:
    from idnode.resolver import _udp_batch_io as ext
except ImportError as exc:  # an install without a C compiler: the door uses the transport
    pytest.skip(f"the compiled module is not built: {exc}", allow_module_level=True)

FAMILIES = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
LARGEST = {socket.AF_INET: 65_507, socket.AF_INET6: 65_527}  # UDP payload over loopback


@pytest.fixture(params=FAMILIES, ids=["v4", "v6"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(server, client): the server non-blocking, as the door's; the client blocking."""
    family, host = request.param
    server = socket.socket(family, socket.SOCK_DGRAM)
    client = socket.socket(family, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind((host, 0))
    client.bind((host, 0))
    server.setblocking(False)
    client.settimeout(2)
    yield server, client
    server.close()
    client.close()


def read_all(sock: socket.socket, **kw: int) -> list[tuple[bytes, Any]]:
    got: list[tuple[bytes, Any]] = []
    while batch := ext.recv_batch(sock.fileno(), **kw):
        got += batch
    return got


def test_nothing_waiting_reads_an_empty_list(pair: tuple[socket.socket, socket.socket]) -> None:
    assert ext.recv_batch(pair[0].fileno()) == []


def test_a_batch_reads_in_order_with_the_socket_modules_addresses(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    for i in range(100):
        client.sendto(b"q%d" % i, server.getsockname())
    first = ext.recv_batch(server.fileno())
    assert len(first) == ext.MAX_BATCH == 64
    rest = read_all(server, max=10)
    assert [d for d, _ in first + rest] == [b"q%d" % i for i in range(100)]
    assert {a for _, a in first + rest} == {client.getsockname()}
    # the address object is the one recvfrom gives, IPv6's four fields included
    client.sendto(b"x", server.getsockname())
    server.setblocking(True)
    assert server.recvfrom(10) == (b"x", first[0][1])


def test_empty_and_largest_datagrams(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    largest = LARGEST[server.family]
    client.sendto(b"", server.getsockname())
    client.sendto(b"L" * largest, server.getsockname())
    client.sendto(b"after", server.getsockname())
    got = read_all(server)
    assert [d for d, _ in got] == [b"", b"L" * largest, b"after"]
    sent = ext.send_batch(server.fileno(), server.family, [(b"", got[0][1]), got[1]])
    assert sent == 2
    assert client.recv(70_000) == b""
    assert client.recv(70_000) == b"L" * largest


def test_a_datagram_longer_than_the_buffer_is_dropped_and_counted(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    before = ext.stats()["truncated"]
    for data in (b"a" * 100, b"b" * 101, b"c" * 5):
        client.sendto(data, server.getsockname())
    assert [d for d, _ in read_all(server, size=100)] == [b"a" * 100, b"c" * 5]
    assert ext.stats()["truncated"] == before + 1


def test_send_batch_sends_bytes_like_data_to_each_address(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    other = socket.socket(server.family, socket.SOCK_DGRAM)
    other.bind((server.getsockname()[0], 0))
    other.settimeout(2)
    with other:
        to_client, to_other = client.getsockname(), other.getsockname()
        items: list[tuple[Any, Any]] = [
            (b"one", to_client),
            (bytearray(b"two"), to_other),
            (memoryview(b"xthree")[1:], to_client),
            (b"four", to_client),
        ]
        assert ext.send_batch(server.fileno(), server.family, items) == 4
        assert [client.recv(10) for _ in range(3)] == [b"one", b"three", b"four"]
        assert other.recvfrom(10) == (b"two", server.getsockname())
        # start: the items before it are not sent
        assert ext.send_batch(server.fileno(), server.family, items, 3) == 4
        assert client.recv(10) == b"four"
        assert ext.send_batch(server.fileno(), server.family, []) == 0
        many = [(b"m%d" % i, to_client) for i in range(200)]  # several sendmmsg calls
        assert ext.send_batch(server.fileno(), server.family, many) == 200
        assert [client.recv(10) for _ in range(200)] == [d for d, _ in many]


def test_a_datagram_the_kernel_refuses_is_dropped_and_the_rest_go(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    to = client.getsockname()
    before = ext.stats()["send_errors"]
    items = [(b"before", to), (b"x" * 70_000, to), (b"port 0", (to[0], 0, *to[2:])), (b"z", to)]
    assert ext.send_batch(server.fileno(), server.family, items) == 4
    assert ext.stats()["send_errors"] == before + 2  # EMSGSIZE, EINVAL
    assert [client.recv(10), client.recv(10)] == [b"before", b"z"]


def test_an_ipv4_client_of_a_dual_stack_socket() -> None:
    server = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind(("::", 0))
    server.setblocking(False)
    with server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        client.sendto(b"v4", ("127.0.0.1", server.getsockname()[1]))
        [(data, addr)] = read_all(server)
        assert data == b"v4"
        assert addr == ("::ffff:127.0.0.1", client.getsockname()[1], 0, 0)
        assert ext.send_batch(server.fileno(), socket.AF_INET6, [(b"back", addr)]) == 1
        assert client.recvfrom(10) == (b"back", ("127.0.0.1", server.getsockname()[1]))


BAD: list[tuple[Callable[[Any], list[Any]], type[Exception]]] = [
    (lambda to: [b"not a pair"], TypeError),
    (lambda to: [(b"x",)], TypeError),
    (lambda to: [(b"x", to, 1)], TypeError),
    (lambda to: [("text", to)], TypeError),
    (lambda to: [(None, to)], TypeError),
    (lambda to: [(b"x", "127.0.0.1")], TypeError),
    (lambda to: [(b"x", [to[0], to[1]])], TypeError),
    (lambda to: [(b"x", (to[0],))], TypeError),
    (lambda to: [(b"x", (b"127.0.0.1", to[1]))], TypeError),
    (lambda to: [(b"x", (to[0], "53"))], TypeError),
    (lambda to: [(b"x", (to[0], 1.5))], TypeError),
    (lambda to: [(b"x", ("localhost", to[1]))], ValueError),  # no name is resolved
    (lambda to: [(b"x", ("", to[1]))], ValueError),
    (lambda to: [(b"x", ("1.2.3.4.5", to[1]))], ValueError),
    (lambda to: [(b"x", ("1.2.3.4\0", to[1]))], ValueError),
    (lambda to: [(b"x", ("\udc80", to[1]))], ValueError),
    (lambda to: [(b"x", ("9" * 10_000, to[1]))], ValueError),
    (lambda to: [(b"x", (to[0], 65_536))], ValueError),
    (lambda to: [(b"x", (to[0], -1))], ValueError),
    (lambda to: [(b"x", (to[0], 1 << 80))], ValueError),
    (lambda to: [(b"ok", to), (b"x", (to[0], -1))], ValueError),  # nothing of the group goes
]


@pytest.mark.parametrize(("items", "error"), BAD)
def test_bad_items_are_skipped_and_counted_and_the_good_ones_go(
    pair: tuple[socket.socket, socket.socket],
    items: Callable[[Any], list[Any]],
    error: type[Exception],
) -> None:
    """A bad item never raises once the call has begun (the return value must say what
    was dealt with, or a caller keeping the rest would send the good ones again): it is
    skipped and counted, and the good items around it go, in order."""
    server, client = pair
    to = client.getsockname()
    bad = items(to)
    mixed = [(b"first", to), *bad, (b"last", to)]
    before = ext.stats()["bad_items"]
    assert ext.send_batch(server.fileno(), server.family, mixed) == len(mixed)
    good = [d for d, _ in read_all(client_nonblocking(client))]
    assert good[0] == b"first" and good[-1] == b"last", good
    assert ext.stats()["bad_items"] - before == len(mixed) - len(good)
    assert len(good) - 2 == sum(1 for i in bad if i == (b"ok", to))


def client_nonblocking(client: socket.socket) -> socket.socket:
    client.setblocking(False)
    return client


def test_a_bad_item_after_a_full_buffer_is_left_for_later(
    unix_pair: tuple[socket.socket, socket.socket],
) -> None:
    """The index returned at EAGAIN is that of the first item not sent: a bad item before
    it was dealt with (counted), one after it is the caller's to offer again."""
    a, b = unix_pair
    filled = fill(a)
    items: list[Any] = [
        ("no buffer", None),
        (b"g" * 1000, None),
        ("bad", None),
        (b"h" * 1000, None),
    ]
    before = ext.stats()["bad_items"]
    assert ext.send_batch(a.fileno(), a.family, items) == 1  # items[1] did not go
    assert ext.stats()["bad_items"] == before + 1  # items[2] not yet: it comes again
    assert len(drain(b)) == filled
    assert ext.send_batch(a.fileno(), a.family, items, 1) == len(items)
    assert ext.stats()["bad_items"] == before + 2
    assert drain(b) == [b"g" * 1000, b"h" * 1000]


# Anything at all as items: every item sent, refused or skipped, never an exception. Hosts are
# loopback or text that is no IP address (no '.' or ':'), and the only valid port is 0
# (the kernel refuses it, counted as a send error): nothing reaches any other socket.
HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1", "::1"]), st.text(st.characters(exclude_characters=".:"))
)
PORTS = st.one_of(st.integers(-(1 << 70), -1), st.integers(65_536, 1 << 70), st.just(0))
SCALARS = st.one_of(st.none(), st.booleans(), st.floats(), st.binary(max_size=600), HOSTS, PORTS)
ADDRESSES = st.one_of(
    st.tuples(HOSTS, PORTS),
    st.tuples(HOSTS, PORTS, PORTS, PORTS),
    st.lists(SCALARS, max_size=5).map(tuple),
    SCALARS,
)
DATA = st.one_of(st.binary(max_size=600), st.builds(bytearray, st.binary(max_size=50)), SCALARS)
ITEMS = st.lists(
    st.one_of(st.tuples(DATA, ADDRESSES), st.lists(SCALARS, max_size=3).map(tuple), SCALARS),
    max_size=70,
)


@settings(max_examples=400)
@given(items=ITEMS, family=st.sampled_from(FAMILIES), start=st.integers(-1, 3))
def test_any_items_are_sent_or_skipped_never_raised(
    items: list[Any], family: tuple[socket.AddressFamily, str], start: int
) -> None:
    with socket.socket(family[0], socket.SOCK_DGRAM) as s:
        s.bind((family[1], 0))
        s.setblocking(False)
        if not 0 <= start <= len(items):
            with pytest.raises(ValueError):
                ext.send_batch(s.fileno(), family[0], items, start)
            return
        # bad items are skipped: only a bad argument raises, never an item
        assert ext.send_batch(s.fileno(), family[0], items, start) == len(items)


def test_bad_arguments_raise(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    fd, family, to = server.fileno(), server.family, client.getsockname()
    with pytest.raises(TypeError):
        ext.send_batch(fd, family, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ext.send_batch(fd, family, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ext.send_batch(fd, family, [(b"x", to)], 2)
    with pytest.raises(ValueError):
        ext.send_batch(fd, family, [(b"x", to)], -1)
    # an address the family cannot hold makes its item bad: skipped and counted
    before = ext.stats()["bad_items"]
    assert ext.send_batch(fd, socket.AF_UNIX, [(b"x", to)]) == 1
    wrong = socket.AF_INET if family == socket.AF_INET6 else socket.AF_INET6
    assert ext.send_batch(fd, wrong, [(b"x", to)]) == 1  # an address of the other family
    assert ext.stats()["bad_items"] == before + 2
    for kw in ({"max": 0}, {"max": 65}, {"size": 0}, {"size": 65_537}):
        with pytest.raises(ValueError):
            ext.recv_batch(fd, **kw)
    with pytest.raises(TypeError):
        ext.recv_batch("3")  # type: ignore[arg-type]
    # a bad item past the first 64: every good one went, the bad one was skipped
    items: list[Any] = [(b"%d" % i, to) for i in range(64)] + [(b"x", ("no", 1)), (b"z", to)]
    assert ext.send_batch(fd, family, items) == len(items)
    assert [client.recv(10) for _ in range(65)] == [d for d, _ in items[:64]] + [b"z"]
    # closed descriptors: OSError
    spare = socket.socket(family, socket.SOCK_DGRAM)
    dead = spare.fileno()
    spare.close()
    with pytest.raises(OSError):
        ext.recv_batch(dead)
    with pytest.raises(OSError):
        ext.send_batch(dead, family, [(b"x", to)])


@pytest.fixture
def unix_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver): the sender non-blocking, with a small send buffer."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def fill(sock: socket.socket) -> int:
    """Datagrams sent until the kernel says EAGAIN."""
    n = 0
    while (sent := ext.send_batch(sock.fileno(), sock.family, [(b"f" * 1000, None)] * 64)) == 64:
        n += 64
    return n + sent


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(70_000))
        except BlockingIOError:
            return out


def test_a_full_send_buffer_returns_where_it_stopped(
    unix_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = unix_pair
    filled = fill(a)
    assert filled > 0
    assert ext.send_batch(a.fileno(), a.family, [(b"more", None)] * 10) == 0
    assert len(drain(b)) == filled


def uv(coro: Any) -> Any:
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def numbered(n: int, size: int = 1000, start: int = 0) -> list[Item]:
    return [(b"%08d" % i + b"." * (size - 8), None) for i in range(start, start + n)]


def test_the_send_backlog_is_bounded_sent_in_order_when_writable_and_counted(
    unix_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = unix_pair
    bound = 100 * (1000 + ITEM_OVERHEAD)  # 100 answers of 1,000 bytes

    async def go() -> None:
        t = BatchedUdp(a, lambda batch: None, lambda exc: None, backlog_bytes=bound)
        filled = fill(a)
        flood = numbered(64 * 156)
        for i in range(0, len(flood), 64):  # as a door's batches come
            t.send_many(flood[i : i + 64])
        # a batch is queued whole or dropped whole: the first fits, no later one does
        assert t.backlog_bytes == 64 * (1000 + ITEM_OVERHEAD) and len(t._backlog) == 64
        assert t.dropped == 64 * 155
        later = numbered(36, start=20_000)  # a smaller batch that fits still goes in
        t.send_many(later)
        assert t.backlog_bytes == bound and t.dropped == 64 * 155
        got = drain(b)[filled:]  # the filler, then what the socket took before it was full
        assert got == []
        # readable again: the backlog goes out, in order, and the writer stops
        received: list[bytes] = []
        for _ in range(200):
            await asyncio.sleep(0.01)
            received += drain(b)
            if not t._backlog:
                break
        received += drain(b)
        assert received == [d for d, _ in flood[:64] + later]
        assert t.backlog_bytes == 0 and not t._writing
        # with room, answers go at once again
        t.send_many(numbered(3, start=50_000))
        assert drain(b) == [d for d, _ in numbered(3, start=50_000)]
        t.close()
        await t.wait_closed(1)
        assert a.fileno() == -1

    uv(go())


def test_a_bad_item_in_the_backlog_is_skipped_once_and_the_rest_drains(
    unix_pair: tuple[socket.socket, socket.socket],
) -> None:
    """A review found that a bad item queued behind a full buffer made every writable
    wakeup send the same 64 answers again, for ever; now it is skipped and counted, and
    each good answer goes exactly once, in order."""
    a, b = unix_pair

    async def go() -> None:
        t = BatchedUdp(a, lambda batch: None, lambda exc: None)
        filled = fill(a)
        good = numbered(70)
        t.send_many([*good[:65], ("not a pair",), *good[65:]])  # type: ignore[list-item]
        assert len(t._backlog) == 71
        assert len(drain(b)) == filled
        received: list[bytes] = []
        for _ in range(200):
            await asyncio.sleep(0.01)
            received += drain(b)
            if not t._backlog and not t._writing:
                break
        received += drain(b)
        assert received == [d for d, _ in good]
        assert t.backlog_bytes == 0 and not t._writing
        t.abort()

    before = ext.stats()["bad_items"]
    uv(go())
    assert ext.stats()["bad_items"] == before + 1


def test_close_sends_the_backlog_first_and_gives_up_after_the_wait(
    unix_pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = unix_pair

    async def go() -> None:
        t = BatchedUdp(a, lambda batch: None, lambda exc: None)
        filled = fill(a)
        t.send_many(numbered(5))
        t.close()
        assert t.is_closing() and a.fileno() != -1  # still sending its backlog
        t.send_many(numbered(1, start=99))  # taken while the backlog drains
        assert len(drain(b)) == filled
        await t.wait_closed(2)
        assert drain(b) == [d for d, _ in numbered(5)] + [d for d, _ in numbered(1, start=99)]
        assert a.fileno() == -1 and t.abandoned == 0

    uv(go())

    c, d = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    c.setblocking(False)

    async def stuck() -> None:
        t = BatchedUdp(c, lambda batch: None, lambda exc: None)
        fill(c)
        t.send_many(numbered(7))
        t.close()
        await t.wait_closed(0.1)  # nobody reads: the backlog is given up
        assert t.abandoned == 7 and t.backlog_bytes == 0 and c.fileno() == -1

    with c, d:
        uv(stuck())


def test_reads_in_batches_on_the_event_loop(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair

    async def go() -> None:
        batches: list[list[Item]] = []
        done = asyncio.Event()

        def on_batch(batch: list[Item]) -> None:
            batches.append(batch)
            t.send_many([(b"re:" + d, addr) for d, addr in batch])
            if sum(map(len, batches)) == 150:
                done.set()

        t = BatchedUdp(server, on_batch, lambda exc: None)
        t.start()
        for i in range(150):
            client.sendto(b"%d" % i, server.getsockname())
        await asyncio.wait_for(done.wait(), 5)
        assert all(len(b) <= 64 for b in batches) and len(batches) >= 3
        assert [client.recv(20) for _ in range(150)] == [b"re:%d" % i for i in range(150)]
        t.close()
        await t.wait_closed(1)
        assert server.fileno() == -1

    uv(go())


def test_choose_says_which_io_and_why() -> None:
    assert udp_batch_io.choose(True)[0] is True
    on, why = udp_batch_io.choose(False)
    assert not on and "udp_batch_io is off" in why
