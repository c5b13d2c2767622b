"""The whole hierarchy of issue 13 as separate `idnode serve` processes on loopback, set
up with the project's own commands as an operator would (README, *The node in the
hierarchy* and *Prefix lifecycle*):

- T, the top-level node: homes 88; its operator grants 0.NA/88.166 and 0.NA/88.200 to
  the secondaries' operators (`idnode grant-prefix`);
- S1, a secondary: homes 88.166, serves with --recursion, registered at T with
  `idnode register-upward`; its operator approves applications, registered at T;
- S2, a secondary: homes 88.200, no recursion, registered at T likewise;
- E1 (homes 88.166.1001) and E2 (homes 88.200.7), enterprise nodes: each applies at its
  secondary with `idnode prefix apply --site-from` (its own site), the secondary's
  operator approves with `idnode prefix approve`: the delegation record at S and the
  prefix's record at T (with the enterprise node's site) are written by the approval.

One identifier lives on each lower node. Asserted: each resolves where it lives (UDP and
TCP); T refers 88.166/... to S1 and 88.200/... to S2 (302); S1 and S2 refer their
enterprise prefixes (302); S1 answers a REC client with E1's values, S2 (no --recursion)
still refers; `idnode resolve --root-info` (a file naming T) reaches every one of them,
its --trace naming the hops; a handle missing at E2 is RC 100 from the root, and a prefix
nobody serves a clear error. Outcomes only, never durations.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idnode.resolver.client import exchange, resolution_request
from idnode.resolver.codec import (
    CreateHandleRequest,
    HandleValue,
    OpCode,
    ReferralResponse,
    ResponseCode,
    SiteInfo,
    decode_site,
)
from idnode.resolver.upstream.register import fetch_site
from idnode.resolver.upstream.root_info import write_root_info
from tests.e2e.test_delegation import (
    Node,
    register_upward,
    resolve,
    sites,
    start,
    tcp_port,
    url_value,
    values,
    write,
)
from tests.e2e.test_prefix_lifecycle import idnode
from tests.e2e.test_recursion import NO_REC, REC, ask, url_of

pytestmark = pytest.mark.e2e
RC = ResponseCode

SECRETS = {
    "T": b"top secret",
    "S1": b"secondary one secret",
    "S2": b"secondary two secret",
    "E1": b"enterprise one secret",
    "E2": b"enterprise two secret",
}
PREFIXES = {"T": "88", "S1": "88.166", "S2": "88.200", "E1": "88.166.1001", "E2": "88.200.7"}
UPWARD = {"S1": "upward one secret", "S2": "upward two secret"}  # what T grants each
ABOVE = {"E1": "S1", "E2": "S2"}  # each enterprise node's secondary
# the identifier created on each lower node, and its URL value
HANDLES = {n: f"{PREFIXES[n]}/on-{n.lower()}" for n in ("S1", "S2", "E1", "E2")}


def text_of(name: str) -> str:
    return f"https://{name.lower()}.example.cn/{HANDLES[name]}"


@dataclass
class Chain:
    tmp: Path
    nodes: dict[str, Node]
    root_info: Path  # names T
    upward: dict[str, str]  # what register-upward printed, per secondary
    approved: dict[str, Any]  # the approved application, per enterprise node

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]


def operator(tmp: Path, s: Node, *args: str, ok: bool = True) -> Any:
    """`idnode prefix ARGS` as the secondary's operator (its prefix administrator)."""
    name = next(k for k, v in PREFIXES.items() if v == s.prefix)
    p = idnode("prefix", *args, "--node", s.proc.http, "--admin", f"300:0.NA/{s.prefix}",
               "--secret", SECRETS[name].decode(), cwd=tmp, ok=ok)  # fmt: skip
    return json.loads(p.stdout)


def secondary_flags(name: str, top: Node, *more: str) -> tuple[str, ...]:
    """`idnode serve` flags of a secondary: its operator decides applications, and an
    approved prefix is registered at T as the administrator T granted."""
    admin = f"300:0.NA/{PREFIXES[name]}"
    return (
        *("--server-admins", admin, "--upward-top", top.server, "--upward-admin", admin),
        *("--upward-secret", UPWARD[name], "--upward-retry-max", "1", *more),
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("chain")
    nodes: dict[str, Node] = {}
    try:
        # T's operator: home 88 and grant the secondaries' administrators (written before
        # anyone asks T for those records: no cached "not found" to wait out).
        nodes["T"] = t = start(tmp, "t", "88", SECRETS["T"])
        for s in ("S1", "S2"):
            idnode("grant-prefix", "--prefix", PREFIXES[s], "--admin-secret", UPWARD[s],
                   "--database-url", t.db, "--secret-key-file", t.key, cwd=tmp)  # fmt: skip
        nodes["S1"] = start(tmp, "s1", "88.166", SECRETS["S1"], *secondary_flags("S1", t,
                            "--recursion", "--upstream-timeout", "4"))  # fmt: skip
        nodes["S2"] = start(tmp, "s2", "88.200", SECRETS["S2"], *secondary_flags("S2", t))
        for e in ("E1", "E2"):
            nodes[e] = start(tmp, e.lower(), PREFIXES[e], SECRETS[e])
        for n in nodes.values():
            n.proc.wait_ready()
        upward = {s: register_upward(tmp, nodes[s], t, secret=UPWARD[s]) for s in ("S1", "S2")}
        approved = {}
        for e, s in ABOVE.items():
            # the enterprise applies at its secondary, naming its own node for the site
            p = idnode("prefix", "apply", "--node", nodes[s].proc.http, "--prefix", PREFIXES[e],
                       "--admin-secret", f"{e} at {s}", "--site-from", nodes[e].server,
                       "--contact-organisation", e, cwd=tmp)  # fmt: skip
            app_id = json.loads(p.stdout)["application"]["id"]
            got = operator(tmp, nodes[s], "approve", str(app_id), "--reason", "checked")
            approved[e] = got["application"]
        for name, handle in HANDLES.items():
            n = nodes[name]
            body = CreateHandleRequest(handle, url_value(text_of(name)))
            assert write(n, SECRETS[name], OpCode.CREATE_HANDLE, body) == RC.SUCCESS, name
        root_info = tmp / "root_info"
        write_root_info(root_info, [fetch_site(t.server)])
        yield Chain(tmp, nodes, root_info, upward, approved)
    finally:
        for n in nodes.values():
            code = n.proc.stop()
            assert code == 0, n.proc.log_text()


def referred_to(answer: Any, referral_handle: str) -> list[int]:
    """A 302's referral handle checked; the Handle ports of the sites it names."""
    assert answer.response_code == RC.SERVICE_REFERRAL, answer
    assert isinstance(answer.body, ReferralResponse)
    assert answer.body.referral_handle == referral_handle
    return [tcp_port(x) for x in sites(answer)]


def from_root(c: Chain, handle: str, *flags: str) -> tuple[int, dict[str, Any], list[str]]:
    """`idnode resolve HANDLE --root-info <T> --trace`: exit code, JSON, trace lines."""
    p = idnode("resolve", handle, "--root-info", str(c.root_info), "--trace", *flags,
               cwd=c.tmp, ok=False)  # fmt: skip
    out: dict[str, Any] = json.loads(p.stdout) if p.stdout.strip() else {}
    return p.returncode, out, [*p.stderr.splitlines()]


def test_the_operators_commands_set_the_hierarchy_up(chain: Chain) -> None:
    for s in ("S1", "S2"):
        assert f"0.NA/{PREFIXES[s]}: HS_SITE added" in chain.upward[s], chain.upward[s]
    for e, app in chain.approved.items():
        assert app["status"] == "approved" and app["prefix"] == PREFIXES[e], app
        assert app["mode"] == "delegated", app
    # T holds each secondary's site, each secondary the site of its enterprise node
    t = chain["T"]
    for s in ("S1", "S2"):
        rec = values(resolve(t.server, f"0.NA/{PREFIXES[s]}"))
        assert tcp_port(sites_of(rec)[0]) == chain[s].proc.handle_port
    for e, s in ABOVE.items():
        rec = values(resolve(chain[s].server, f"0.NA/{PREFIXES[e]}"))
        assert [tcp_port(x) for x in sites_of(rec)] == [chain[e].proc.handle_port]


def sites_of(vals: dict[int, HandleValue]) -> list[SiteInfo]:
    return [decode_site(v.data) for v in vals.values() if v.type == "HS_SITE"]


def test_each_identifier_resolves_where_it_lives(chain: Chain) -> None:
    for name, handle in HANDLES.items():
        for transport in ("udp", "tcp"):
            m = exchange(chain[name].server, resolution_request(handle), transport, 10)
            assert url_of(m) == text_of(name), (name, transport)


def test_the_top_refers_each_secondarys_identifiers_to_it(chain: Chain) -> None:
    t = chain["T"]
    for s in ("S1", "S2"):
        for transport in ("udp", "tcp"):
            m = exchange(t.server, resolution_request(HANDLES[s]), transport, 10)
            assert referred_to(m, f"0.NA/{PREFIXES[s]}") == [chain[s].proc.handle_port]
    # an enterprise identifier: referred down the hierarchy, to the secondary, which T
    # delegates the whole of its prefix to (so the approval there writes nothing at T)
    for e, s in ABOVE.items():
        m = resolve(t.server, HANDLES[e])
        assert m.response_code == RC.SERVICE_REFERRAL, m
        assert [tcp_port(x) for x in sites(m)] in (
            [chain[s].proc.handle_port],
            [chain[e].proc.handle_port],
        )
    assert resolve(t.server, "88/nothing").response_code == RC.HANDLE_NOT_FOUND  # T's own


def test_each_secondary_refers_its_enterprise_identifiers(chain: Chain) -> None:
    for e, s in ABOVE.items():
        for transport in ("udp", "tcp"):
            m = ask(chain[s].proc, HANDLES[e], NO_REC, transport)
            assert referred_to(m, f"0.NA/{PREFIXES[e]}") == [chain[e].proc.handle_port]
        assert url_of(ask(chain[s].proc, HANDLES[s], NO_REC)) == text_of(s)  # its own


def test_s1_recurses_for_a_rec_client_and_s2_refers(chain: Chain) -> None:
    for transport in ("udp", "tcp"):
        assert url_of(ask(chain["S1"].proc, HANDLES["E1"], REC, transport)) == text_of("E1")
        m = ask(chain["S2"].proc, HANDLES["E2"], REC, transport)
        assert referred_to(m, "0.NA/88.200.7") == [chain["E2"].proc.handle_port]
    assert ask(chain["S1"].proc, "88.166.1001/none", REC).response_code == RC.HANDLE_NOT_FOUND


def test_idnode_resolve_from_the_root_reaches_every_node(chain: Chain) -> None:
    t = chain["T"]
    for name, handle in HANDLES.items():
        rc, out, trace = from_root(chain, handle)
        assert rc == 0, (name, out, trace)
        assert out["responseCode"] == 1 and out["values"][0]["data"]["value"] == text_of(name)
        # T asked for the prefix's record; for an enterprise prefix T refers that to the
        # secondary (303), which says where it lives; the holder asked for the identifier
        hops = [x.split(" -> ")[1].split("/")[0] for x in trace]
        assert trace[0].startswith(f"hop 1: 0.NA/{PREFIXES[name]} -> {t.server}/udp"), trace
        assert trace[-1].startswith(f"hop {len(trace)}: {handle} -> {chain[name].server}/udp")
        assert trace[-1].endswith("SUCCESS"), trace
        if name in ABOVE:
            s = chain[ABOVE[name]]
            assert hops == [t.server, s.server, chain[name].server], trace
            assert f"PREFIX_REFERRAL (referral to 0.NA/{s.prefix})" in trace[0], trace
        else:
            assert hops == [t.server, chain[name].server], trace
    # over TCP only, every answer signed and checked with its node's key
    rc, out, trace = from_root(chain, HANDLES["E2"], "--tcp", "--certify")
    assert rc == 0 and out["values"][0]["data"]["value"] == text_of("E2"), (out, trace)
    assert all("/tcp" in x and "signature verified" in x for x in trace), trace


def test_from_the_root_not_found_and_a_prefix_nobody_serves(chain: Chain) -> None:
    rc, out, trace = from_root(chain, "88.200.7/missing")
    assert out["responseCode"] == RC.HANDLE_NOT_FOUND, (rc, out, trace)
    assert rc == 1 and chain["E2"].server in trace[-1], trace
    assert trace[-1].endswith("HANDLE_NOT_FOUND"), trace
    rc, out, trace = from_root(chain, "88.999/x")
    assert rc == 1 and not out, (out, trace)
    assert trace[-1].startswith("idnode resolve: no service found for prefix 88.999"), trace


def test_an_approval_at_a_registered_secondary_is_registered_at_the_top(chain: Chain) -> None:
    """T already delegates the secondary's whole prefix to it (a 303 naming the
    secondary for 0.NA/<enterprise prefix>): the approval's upward registration is done
    at once, through that record, instead of queued and retried for ever."""
    for e, app in chain.approved.items():
        assert app["upward"] == "registered", (e, app)
