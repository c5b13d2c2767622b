"""Issue 15's topology as processes on loopback (loadtest/topology.py): three `idnode serve`
nodes configured from docker/cluster.env over a six-node Redis Cluster and a PostgreSQL
primary with a streaming replica.

Writes (REST PUT) go to one node and are read at once on the others, over REST and the
Handle protocol (UDP). Then, each in the middle of a write loop: the Redis master of the
invalidation channel killed, another master killed, a master restarted in place with
its data (AOF on) after a write it missed, the replica's replay paused and resumed, a
node killed. Throughout, a read never returns
a value older than the last acknowledged write of its handle (the ``Ledger`` knows which
values could be current: the last acknowledged one and any unacknowledged since), and at
the end every surviving node serves every acknowledged write. Each write puts two values
made from one number, so a half-applied write would show as a mismatched pair. Each test
has its own Ledger and handles: a stale read in one does not fail the next.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from idnode.loadtest.topology import Topology, TopologyNode
from idnode.resolver.client import exchange_udp, resolution_request
from idnode.resolver.codec import ResolutionResponse, ResponseCode

pytestmark = pytest.mark.e2e

SECRET = "S3cret-for-topology"
HANDLE_COUNT = 8  # handles per test (upper case: the cache key is the handle as is)
ROUNDS = 24  # writes per phase of a fault test (each read back on every other node)


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    with Topology.start(3, admin_secret=SECRET) as t:
        yield t


# --- clients ----------------------------------------------------------------------------


def _request(node: TopologyNode, method: str, path: str, body: bytes | None = None) -> Any:
    token = base64.b64encode(f"300%3A0.NA/88.166:{SECRET}".encode()).decode()
    headers = {"Content-Type": "application/json"}
    if method != "GET":  # readers are anonymous, as most are
        headers["Authorization"] = f"Basic {token}"
    req = urllib.request.Request(node.http + path, data=body, method=method, headers=headers)
    return urllib.request.urlopen(req, timeout=15)


def put(node: TopologyNode, handle: str, n: int) -> bool:
    """Write version ``n`` of ``handle`` (URL and DESC, both from ``n``); whether it was
    acknowledged (2xx). A refusal, a 5xx, a timeout or a dropped connection is not."""
    body = json.dumps(
        {
            "values": [
                {
                    "index": 1,
                    "type": "URL",
                    "data": {"format": "string", "value": f"https://v/{n}"},
                },
                {"index": 2, "type": "DESC", "data": {"format": "string", "value": f"version {n}"}},
            ]
        }
    ).encode()
    try:
        with _request(node, "PUT", f"/api/handles/{handle}", body) as r:
            return 200 <= int(r.status) < 300
    except OSError:  # an HTTP error status, a timeout, a dropped connection
        return False


def version(pair: dict[int, str]) -> int | None:
    """The version a handle's values show; AssertionError on a half-applied write."""
    if not pair:
        return None
    url, desc = pair.get(1, ""), pair.get(2, "")
    assert url.startswith("https://v/") and desc.startswith("version "), pair
    n = int(url.removeprefix("https://v/"))
    assert desc == f"version {n}", f"values from two writes: {pair}"
    return n


def rest_version(node: TopologyNode, handle: str) -> int | None:
    try:
        with _request(node, "GET", f"/api/handles/{handle}") as r:
            doc = json.loads(r.read())
    except urllib.error.HTTPError as e:
        assert e.code == 404, f"GET {handle} on node {node.index}: {e.code} {e.read()!r}"
        return None
    return version({int(v["index"]): str(v["data"]["value"]) for v in doc["values"]})


def udp_version(node: TopologyNode, handle: str) -> int | None:
    m = exchange_udp("127.0.0.1", node.handle_port, resolution_request(handle), timeout=5)
    if m.response_code == ResponseCode.HANDLE_NOT_FOUND:
        return None
    assert m.response_code == ResponseCode.SUCCESS, m.response_code
    assert isinstance(m.body, ResolutionResponse)
    return version({v.index: v.data.decode() for v in m.body.values if v.index in (1, 2)})


# --- what may be read ---------------------------------------------------------------------


@dataclass
class Ledger:
    """Per handle, the versions a read may return: the last acknowledged one (None before
    any) and every write attempted since that was not acknowledged (it may have
    committed). Reads are checked against it; ``stale`` collects what a read should never
    have returned."""

    handles: list[str]
    possible: dict[str, set[int | None]] = field(default_factory=dict)
    last_acked: dict[str, int] = field(default_factory=dict)
    next_version: int = 1
    acked: int = 0
    unacked: int = 0
    reads: int = 0
    stale: list[str] = field(default_factory=list)

    def write(self, node: TopologyNode, handle: str) -> bool:
        n = self.next_version
        self.next_version += 1
        self.possible.setdefault(handle, {self.last_acked.get(handle)}).add(n)
        if put(node, handle, n):
            self.possible[handle] = {n}
            self.last_acked[handle] = n
            self.acked += 1
            return True
        self.unacked += 1
        return False

    def check(self, node: TopologyNode, handle: str, *, udp: bool = True) -> None:
        allowed = self.possible.get(handle, {None})
        for door, got in (("rest", rest_version(node, handle)),) + (
            (("udp", udp_version(node, handle)),) if udp else ()
        ):
            self.reads += 1
            if got not in allowed:
                could = sorted(allowed, key=str)
                self.stale.append(f"{door} {handle} on node {node.index}: {got}, could be {could}")

    def loop(self, t: Topology, rounds: int, start: int = 0) -> None:
        """``rounds`` writes, each on the next living node in turn, each read back at once
        (REST and UDP) on every other living node."""
        for k in range(start, start + rounds):
            alive = t.alive()
            writer = alive[k % len(alive)]
            handle = self.handles[k % len(self.handles)]
            if self.write(writer, handle):
                for other in alive:
                    if other is not writer:
                        self.check(other, handle)

    def settle(self, t: Topology) -> None:
        """Every living node serves the last acknowledged write of every handle (or, after
        an unacknowledged one, it or that write: never half of one, never older)."""
        for node in t.alive():
            for handle in self.possible:
                self.check(node, handle)
        assert not self.stale, "\n".join(self.stale[:20])


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> Ledger:
    """A Ledger of the test's own: handles never written before (their first version
    is the test's), so an earlier test's stale read cannot fail this one."""
    tag = hashlib.sha1(request.node.name.encode()).hexdigest()[:6].upper()
    return Ledger([f"88.166/TOPO-{tag}-{i}" for i in range(HANDLE_COUNT)])


# --- the tests -----------------------------------------------------------------------------


def test_nodes_share_the_compose_settings_and_engines(topology: Topology) -> None:
    t = topology
    assert t.env["IDNODE_REDIS_CLUSTER"] == "true" and t.env["IDNODE_LISTEN"] == "127.0.0.1"
    assert len(t.cluster.nodes if t.cluster else []) == 6
    assert len(t.replica_urls) == 1 and t.replica_urls[0] != t.database_url
    assert len({n.handle_port for n in t.nodes}) == 3
    for n in t.nodes:
        assert n.health()["status"] == "ok"
        assert f'idnode_replica_usable{{replica="{t.replica_urls[0]}"}}' in n.metrics()


def test_a_write_on_one_node_is_read_at_once_on_the_others(
    topology: Topology, ledger: Ledger
) -> None:
    for handle in ledger.handles:  # misses first: each node may have "not found" cached
        for node in topology.nodes:
            ledger.check(node, handle)
    ledger.loop(topology, 3 * HANDLE_COUNT)
    assert ledger.acked == 3 * HANDLE_COUNT and ledger.unacked == 0
    ledger.settle(topology)


def test_a_redis_master_killed_during_writes(topology: Topology, ledger: Ledger) -> None:
    t = topology
    assert t.cluster is not None
    ledger.loop(t, ROUNDS // 2)
    # The master holding the invalidation channel: every node's listener is on it.
    victim = t.cluster.master_of(f"{t.env['IDNODE_REDIS_NAMESPACE']}:invalidate")
    t.cluster.kill_master(victim, wait=False)
    ledger.loop(t, ROUNDS, start=1)  # during the failover
    t.cluster.wait_ok(expect_masters=3)
    ledger.loop(t, ROUNDS // 2, start=2)
    ledger.settle(t)
    assert ledger.acked > 0


def test_another_redis_master_killed_during_writes(topology: Topology, ledger: Ledger) -> None:
    """Not the channel's master: its listeners stay, the writes whose keys it holds cannot
    tombstone them (their writers catch up) and the replica that takes over may hold
    replaced values until every node has emptied it. Confirmations go to the channel's
    master, not this one."""
    t = topology
    assert t.cluster is not None
    channel = t.cluster.master_of(f"{t.env['IDNODE_REDIS_NAMESPACE']}:invalidate")
    victim = next(m for m in t.cluster.masters() if m != channel)
    ledger.loop(t, ROUNDS // 4)
    t.cluster.kill_master(victim, wait=False)
    ledger.loop(t, ROUNDS // 2, start=1)  # during the failover
    t.cluster.wait_ok(expect_masters=3)
    ledger.loop(t, ROUNDS // 4, start=2)
    ledger.settle(t)
    assert ledger.acked > 0


def test_a_redis_master_restarted_in_place_with_old_data(topology: Topology) -> None:
    """A master with its AOF on (as the compose file once shipped it) holds a handle's
    cached value; it crashes, a write of that handle misses it, and it comes back on its
    address with the old value before any failover (it has no replica left: none can
    take over). No node serves the old value: a batch connection to a master whose run
    id changed is refused until that master is emptied."""
    t = topology
    assert t.cluster is not None
    ns = t.env["IDNODE_REDIS_NAMESPACE"]
    channel = t.cluster.master_of(f"{ns}:invalidate")
    masters = t.cluster.masters()
    victim = next((m for m in masters if m != channel and not _has_replica(t, m)), channel)
    handle = next(
        h
        for h in (f"88.166/TOPO-RESTART-{i}" for i in range(5000))
        if t.cluster.master_of(f"{ns}:h:{{{h}}}") == victim
    )
    ledger = Ledger([handle])
    t.cluster.persist(victim)
    writer, *readers = t.alive()
    assert ledger.write(writer, handle)
    data, tombstone = f"{ns}:h:{{{handle}}}", f"{ns}:t:{{{handle}}}"

    def read_until_cached() -> bool:
        # Read again each time round: a reader that did not trust its caches at a read
        # (its channel's PING went unanswered on a loaded machine, say) fills nothing
        # then, and fills on a later read, once trusted again.
        for node in readers:
            ledger.check(node, handle)
        return _exists(t, victim, data)

    # Read on the other nodes once the write's tombstone is gone (it keeps fills out),
    # so that their misses cache the value on the victim. A worker that first meets a
    # master after the last test's failover empties it (its run id is new to that
    # worker), and may do so just after another worker's fill: then every reader holds
    # the handle in L1 and nothing fills it again. A new write makes every L1 drop it.
    for _ in range(6):
        _until(lambda: not _exists(t, victim, tombstone), "the write's tombstone expired")
        if _within(read_until_cached, 10.0):
            break
        assert ledger.write(writer, handle)
    else:
        pytest.fail(f"the handle never stayed cached on the victim\n{_logs(readers)}")
    # Down, a write it misses (its tombstones fail there; every node drops its L1 copy),
    # then back with the AOF's old value.
    # (The writer's catch-up deletes the key again as soon as the master answers, so
    # whether the old value is still there when the readers look is a race; the
    # integration test shows the restarted master holding it.)
    t.cluster.restart(victim, meanwhile=lambda: ledger.write(writer, handle))
    for node in t.alive():
        ledger.check(node, handle)
    t.cluster.wait_ok(expect_masters=3)
    ledger.settle(t)


def _until(check: Any, what: str, bound: float = 30.0) -> None:
    """Poll ``check`` until true, within a generous bound (not a measured time)."""
    assert _within(check, bound), f"not within {bound:g} s: {what}"


def _within(check: Any, bound: float) -> bool:
    """Whether ``check`` comes true within ``bound`` seconds (polled)."""
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _logs(nodes: Any) -> str:
    """The tails of ``nodes``' logs."""
    return "\n".join(f"--- node {n.index}:\n{n.log_text()[-3000:]}" for n in nodes)


def _has_replica(t: Topology, master: str) -> bool:
    assert t.cluster is not None
    with t.cluster.node(master) as r:
        return int(r.info("replication").get("connected_slaves", 0)) > 0


def _exists(t: Topology, master: str, key: str) -> bool:
    assert t.cluster is not None
    try:
        with t.cluster.node(master) as r:
            return bool(r.exists(key))
    except redis.RedisError:
        return False


def test_the_replica_paused_and_resumed_during_writes(topology: Topology, ledger: Ledger) -> None:
    t = topology
    assert t.pg is not None
    ledger.loop(t, ROUNDS // 2)
    t.pg.pause_replay()
    try:
        ledger.loop(t, ROUNDS, start=1)
        ledger.settle(t)  # while the replica still serves the old versions
    finally:
        t.pg.resume_replay()
    ledger.loop(t, ROUNDS // 2, start=2)
    t.pg.wait_replayed()
    ledger.settle(t)


def test_a_node_killed_during_writes(topology: Topology, ledger: Ledger) -> None:
    t = topology
    ledger.loop(t, ROUNDS // 2)
    t.kill_node(2)
    assert len(t.alive()) == 2
    ledger.loop(t, ROUNDS, start=1)
    ledger.settle(t)
    # The survivors still read each other's writes and serve a handle never written.
    for node in t.alive():
        assert rest_version(node, "88.166/TOPO-never") is None
    assert ledger.reads > 0 and not ledger.stale
