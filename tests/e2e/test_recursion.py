"""Recursion through real `idnode serve` processes (issue 13): the secondary role, the
recursive role and the health of the enterprise node.

- E, the enterprise node: homes 88.166.1001 and holds its handles (fixed ports, so it
  can be killed and started again where S expects it);
- S, the secondary: homes 88.166, delegates 88.166.1001 to E and 88.166.9 to Y, and runs
  with --recursion (probes every 0.5 s, a server down after 2 unanswered);
- Y: also homes 88.166 and delegates 88.166.9 back to S (a referral loop);
- T, the top: homes 88, delegates 88.166 to S, and holds a chain of 10 prefix records
  0.NA/88.210 -> 0.NA/88.211 -> ... by HS_SERV (deeper than the referral bound);
- R, a recursive node: homes only 77, runs with --recursion --root-info naming T.

Outcomes are asserted, never durations. The clients' timeouts (10 s) are longer than
the probe interval and the upstream timeout, so an answer that waited for a dead server
instead of the health marks would fail as a timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from idnode.loadtest.processes import free_port
from idnode.resolver.client import exchange, resolution_request
from idnode.resolver.codec import (
    ErrorResponse,
    Message,
    OpFlag,
    ReferralResponse,
    ResolutionResponse,
    ResponseCode,
)
from idnode.resolver.upstream.root_info import write_root_info
from tests.e2e.node_process import NodeProcess
from tests.e2e.test_upstream_walk import (
    URL,
    Registry,
    hs_serv,
    hs_site,
    make_registry,
    site_at,
    url_record,
)

REC = OpFlag.REC | OpFlag.CA | OpFlag.PO  # what the HANDLE.NET library sends
NO_REC = OpFlag.CA | OpFlag.PO
CLIENT_TIMEOUT = 10.0
CHAIN = 10  # HS_SERV records in a row at T: more than the bound of 8 referrals


@dataclass
class Ports:
    handle: int
    http: int
    grpc: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


def serve(tmp: Path, name: str, reg: Registry, ports: Ports, *flags: str) -> NodeProcess:
    """`idnode serve` on ``ports`` (chosen before: the other nodes' records name them)."""
    n = NodeProcess(
        reg.url,
        extra=(
            "--secret-key-file",
            reg.key,
            *("--handle-port", str(ports.handle)),
            *("--http-port", str(ports.http)),
            *("--grpc-port", str(ports.grpc)),
            *flags,
        ),
        log=tmp / f"{name}.log",
    )
    n.handle_port, n.http_port, n.grpc_port = ports.handle, ports.http, ports.grpc
    return n


@dataclass
class Hierarchy:
    tmp: Path
    e_reg: Registry
    e_ports: Ports
    e: NodeProcess
    s: NodeProcess
    r: NodeProcess


E_HANDLES = ("88.166.1001/x", "88.166.1001/cached", "88.166.1001/y", "88.166.1001/z")


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    tmp = tmp_path_factory.mktemp("recursion")
    e_ports, s_ports, y_ports, t_ports = (Ports.pick() for _ in range(4))
    e_reg = make_registry(tmp, "e", ["88.166.1001"], [url_record(x) for x in E_HANDLES])
    s_reg = make_registry(
        tmp,
        "s",
        ["88.166"],
        [
            url_record("88.166/local"),
            {"handle": "0.NA/88.166.1001", "values": [hs_site(1, site_at(e_ports.handle))]},
            {"handle": "0.NA/88.166.9", "values": [hs_site(1, site_at(y_ports.handle))]},
        ],
    )
    y_reg = make_registry(
        tmp,
        "y",
        ["88.166"],
        [{"handle": "0.NA/88.166.9", "values": [hs_site(1, site_at(s_ports.handle))]}],
    )
    t_reg = make_registry(
        tmp,
        "t",
        ["88"],
        [
            {"handle": "0.NA/88.166", "values": [hs_site(1, site_at(s_ports.handle))]},
            *(
                {"handle": f"0.NA/88.{210 + i}", "values": [hs_serv(f"0.NA/88.{211 + i}")]}
                for i in range(CHAIN)
            ),
        ],
    )
    r_reg = make_registry(tmp, "r", ["77"], [])
    root_info = tmp / "root_info"
    write_root_info(root_info, [site_at(t_ports.handle)])
    nodes: list[NodeProcess] = []
    try:
        e = serve(tmp, "e", e_reg, e_ports)
        nodes.append(e)
        # A loop nests lookups (S -> Y -> S ...): an upstream timeout with room for the
        # inner ones on a busy machine.
        recursion = ("--recursion", "--upstream-timeout", "4", "--probe-interval", "0.5")
        s = serve(tmp, "s", s_reg, s_ports, *recursion)
        nodes.append(s)
        nodes.append(serve(tmp, "y", y_reg, y_ports))
        nodes.append(serve(tmp, "t", t_reg, t_ports))
        r = serve(
            tmp,
            "r",
            r_reg,
            Ports.pick(),
            *("--recursion", "--upstream-timeout", "4", "--root-info", str(root_info)),
        )
        nodes.append(r)
        for n in nodes:
            n.wait_ready()
        # E may have started after S's first probes (and been marked down by them).
        e_server = f"127.0.0.1:{e_ports.handle}"
        wait_for(
            "S's probe of E answered",
            lambda: (
                s.metric("idnode_upstream_probe_seconds", server=e_server) > 0
                and s.metric("idnode_upstream_server_up", server=e_server) == 1
            ),
        )
        hier = Hierarchy(tmp, e_reg, e_ports, e, s, r)
        yield hier
        nodes[0] = hier.e  # restarted by a test
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                assert n.stop() == 0, n.log_text()


def ask(
    node: NodeProcess,
    handle: str,
    flags: int = REC,
    transport: str = "tcp",
    recursion_count: int = 0,
) -> Message:
    request = replace(resolution_request(handle, flags=flags), recursion_count=recursion_count)
    return exchange(node.server, request, transport, CLIENT_TIMEOUT)


def url_of(m: Message) -> str:
    assert m.response_code == ResponseCode.SUCCESS, m
    assert isinstance(m.body, ResolutionResponse)
    return next(v.data.decode() for v in m.body.values if v.type == "URL")


def message(m: Message) -> str:
    assert isinstance(m.body, ErrorResponse), m
    return m.body.message


def e_resolutions(h: Hierarchy) -> float:
    return h.e.metric("idnode_requests_total", op="1")


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_rec_gets_the_answer_without_rec_the_referral(h: Hierarchy) -> None:
    assert url_of(ask(h.s, "88.166.1001/x")) == URL + "88.166.1001/x"
    assert url_of(ask(h.s, "88.166.1001/x", transport="udp")) == URL + "88.166.1001/x"
    m = ask(h.s, "88.166.1001/x", NO_REC)
    assert m.response_code == ResponseCode.SERVICE_REFERRAL
    assert isinstance(m.body, ReferralResponse)
    assert m.body.referral_handle == "0.NA/88.166.1001"
    # ... also after a REC client's answer was kept: L1 does not serve it to this one.
    m = ask(h.s, "88.166.1001/x", NO_REC, transport="udp")
    assert m.response_code == ResponseCode.SERVICE_REFERRAL
    # A prefix handle under the delegation: resolved at E too (303 without REC).
    assert ask(h.s, "0.NA/88.166.1001.5", NO_REC).response_code == ResponseCode.PREFIX_REFERRAL
    # A client asking for a certified answer (CT) is not given E's values under S's
    # signature: it gets the referral, and E's own signed answer from E.
    m = ask(h.s, "88.166.1001/x", REC | OpFlag.CT)
    assert m.response_code == ResponseCode.SERVICE_REFERRAL
    assert isinstance(m.body, ReferralResponse)
    assert m.body.referral_handle == "0.NA/88.166.1001"
    # S's own handles are S's, REC or not.
    assert url_of(ask(h.s, "88.166/local")) == URL + "88.166/local"
    # A request that has been passed on too often is not passed on again.
    m = ask(h.s, "88.166.1001/x", recursion_count=8)
    assert m.response_code == ResponseCode.RECURSION_COUNT_TOO_HIGH
    assert "recursion count 8" in message(m)
    assert url_of(ask(h.s, "88.166.1001/x", recursion_count=7)) == URL + "88.166.1001/x"


def test_answers_and_not_found_are_cached(h: Hierarchy) -> None:
    before = e_resolutions(h)
    assert url_of(ask(h.s, "88.166.1001/cached")) == URL + "88.166.1001/cached"
    asked = e_resolutions(h)
    assert asked > before  # E was asked (UDP, or TCP after it)
    for _ in range(2):
        assert url_of(ask(h.s, "88.166.1001/cached")) == URL + "88.166.1001/cached"
    assert e_resolutions(h) == asked  # ... and not again
    assert ask(h.s, "88.166.1001/missing").response_code == ResponseCode.HANDLE_NOT_FOUND
    asked = e_resolutions(h)
    for _ in range(2):
        assert ask(h.s, "88.166.1001/missing").response_code == ResponseCode.HANDLE_NOT_FOUND
    assert e_resolutions(h) == asked
    assert h.s.metric("idnode_recursion_cache_total", result="hit") >= 4
    assert h.s.metric("idnode_upstream_lookups_total", outcome="not_found") >= 1


def test_a_dead_enterprise_node_is_marked_down_and_answered_at_once(h: Hierarchy) -> None:
    server = f"127.0.0.1:{h.e_ports.handle}"
    assert h.s.metric("idnode_upstream_server_up", server=server) == 1
    assert h.s.metric("idnode_upstream_probe_seconds", server=server) > 0
    assert url_of(ask(h.s, "88.166.1001/x")) == URL + "88.166.1001/x"  # held by S
    h.e.proc.kill()
    h.e.proc.wait()
    wait_for(
        "S marks E down",
        lambda: h.s.metric("idnode_upstream_server_up", server=server) == 0,
    )
    # Not held: RC 2 at once, naming the server and the prefix.
    for transport in ("tcp", "udp"):
        m = ask(h.s, "88.166.1001/y", transport=transport)
        assert m.response_code == ResponseCode.ERROR
        assert message(m) == f"enterprise node {server} for 88.166.1001 is not answering"
    # Held: still answered; a client without REC still gets the referral.
    assert url_of(ask(h.s, "88.166.1001/x")) == URL + "88.166.1001/x"
    assert ask(h.s, "88.166.1001/y", NO_REC).response_code == ResponseCode.SERVICE_REFERRAL
    assert h.s.metric("idnode_upstream_lookups_total", outcome="down") >= 2
    assert f"upstream server {server} did not answer 2 probes in a row" in h.s.log_text()
    # E back on its ports: marked up, and answers again.
    h.e = serve(h.tmp, "e-again", h.e_reg, h.e_ports)
    h.e.wait_ready()
    wait_for("S marks E up", lambda: h.s.metric("idnode_upstream_server_up", server=server) == 1)
    assert url_of(ask(h.s, "88.166.1001/y")) == URL + "88.166.1001/y"
    assert f"upstream server {server} answers again" in h.s.log_text()


def test_the_recursive_node_resolves_from_the_root(h: Hierarchy) -> None:
    # T refers 0.NA/88.166.1001 to S (303), S holds E's site, E answers.
    assert url_of(ask(h.r, "88.166.1001/z")) == URL + "88.166.1001/z"
    assert url_of(ask(h.r, "88.166.1001/z", transport="udp")) == URL + "88.166.1001/z"
    assert ask(h.r, "88.166.1001/nothing").response_code == ResponseCode.HANDLE_NOT_FOUND
    # Without REC: not homed here, as before.
    m = ask(h.r, "88.166.1001/z", NO_REC)
    assert m.response_code == ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE


def test_a_referral_loop_and_a_chain_past_the_bound_end_with_rc_6(h: Hierarchy) -> None:
    # S delegates 88.166.9 to Y, Y to S: S (recursing) and Y refer to each other until
    # the recursion count reaches the bound.
    m = ask(h.r, "88.166.9/x")
    assert m.response_code == ResponseCode.RECURSION_COUNT_TOO_HIGH, m
    m = ask(h.s, "88.166.9/x")
    assert m.response_code == ResponseCode.RECURSION_COUNT_TOO_HIGH, m
    # 0.NA/88.210 -> 0.NA/88.211 -> ... by HS_SERV, longer than 8 referrals.
    m = ask(h.r, "88.210/x")
    assert m.response_code == ResponseCode.RECURSION_COUNT_TOO_HIGH, m
    assert "gave up after 8 referrals" in message(m)
