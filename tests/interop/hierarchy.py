"""What the Java hierarchy interop tests (test_java_recursion, test_java_referral,
test_java_chain) share: a node of the hierarchy, the operators' grant and upward
registration, the set-up of the identifier at E with its delegation record at S, and
the reading of HDLTrace's trace."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idnode.loadtest.processes import IDNODE
from tests.interop import harness as h

Ports = Mapping[str, tuple[int, int, int]]


def node(
    work: Path,
    name: str,
    ports: Ports,
    prefixes: Mapping[str, str],
    secrets: Mapping[str, str],
    before: list[list[str]],
    after: list[list[str]],
    serve: tuple[str, ...] = (),
) -> h.Server:
    """Node ``name`` on its embedded registry in ``work``, initialised with its prefix and
    administrator secret, serving on its ports."""
    db, key = f"sqlite:///{work}/{name}.db", str(work / f"{name}.key")
    handle, http, grpc = ports[name]
    init = h.idnode_init(db, key, prefixes[name], "--admin-secret", secrets[name])
    return h.Server(
        name,
        h.idnode_serve(db, key, handle=handle, http=http, grpc=grpc, args=serve),
        port=http,
        before=[init, *before],
        after=after,
        settle=0.5,
    )


def grant_and_upward(
    work: Path, ports: Ports, prefix: str, secret: str
) -> tuple[list[str], list[str]]:
    """T's operator grants 0.NA/prefix (before T serves) and S registers upward at T
    with that secret (after S serves)."""
    t_db, t_key = f"sqlite:///{work}/t.db", str(work / "t.key")
    grant = [IDNODE, "grant-prefix", "--prefix", prefix, "--admin-secret", secret]
    grant += ["--database-url", t_db, "--secret-key-file", t_key]
    upward = [IDNODE, "register-upward", "--top", f"127.0.0.1:{ports['t'][0]}"]
    upward += ["--admin", f"300:0.NA/{prefix}", "--secret", secret]
    upward += ["--database-url", f"sqlite:///{work}/s.db", "--listen", "127.0.0.1"]
    upward += ["--handle-port", str(ports["s"][0]), "--http-port", str(ports["s"][1])]
    return grant, upward


def identifier_at_e_delegated_at_s(ports: Ports, secrets: Mapping[str, str], value: str) -> None:
    """Run inside the namespace once S and E serve: 88.166.1001/x = ``value`` at E, the
    delegation record at S (E's own published HS_SITE), and S's site as the library's
    resolver_site in the home sys.argv[2]."""
    from idnode.resolver.client import AdminClient, exchange, resolution_request
    from idnode.resolver.codec import (
        CreateHandleRequest,
        GetSiteInfoRequest,
        HandleValue,
        Message,
        OpCode,
        ResolutionResponse,
        SiteInfoResponse,
        encode_site,
    )

    home = Path(sys.argv[2])

    def write(port: int, who: str, secret: str, body: Any) -> None:
        with AdminClient(f"127.0.0.1:{port}", who, 300, secret=secret.encode()) as c:
            r = c.request(Message(op_code=OpCode.CREATE_HANDLE, body=body))[-1]
        assert r.response_code == 1, r

    e, s = ports["e"][0], ports["s"][0]
    v = HandleValue(1, "URL", value.encode())
    write(e, "0.NA/88.166.1001", secrets["e"], CreateHandleRequest("88.166.1001/x", (v,)))
    got = exchange(f"127.0.0.1:{e}", resolution_request("0.NA/88.166.1001"), "tcp")
    assert isinstance(got.body, ResolutionResponse), got
    e_site = next(v for v in got.body.values if v.type == "HS_SITE")
    write(s, "0.NA/88.166", secrets["s"], CreateHandleRequest("0.NA/88.166.1001", (e_site,)))
    ask = Message(op_code=OpCode.GET_SITE_INFO, body=GetSiteInfoRequest("/"))
    site = exchange(f"127.0.0.1:{s}", ask, "tcp")
    assert isinstance(site.body, SiteInfoResponse), site
    (home / ".handle").mkdir(parents=True, exist_ok=True)
    (home / ".handle" / "resolver_site").write_bytes(encode_site(site.body.site))


def trace_of(step: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """HDLTrace's trace (stderr): its non-empty lines, the "sending" and "received" ones."""
    trace = [ln.strip() for ln in step["stderr"].splitlines() if ln.strip()]
    sent = [ln for ln in trace if ln.startswith("sending")]
    return trace, sent, [ln for ln in trace if ln.startswith("received")]


def sent_to(sent: list[str]) -> list[str]:
    """Where each "sending" line of a trace went (host:port)."""
    return [ln.rsplit(" to ", 1)[-1] for ln in sent]
