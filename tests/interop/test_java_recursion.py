"""The HANDLE.NET 7.3.1 library, which sets REC on every request by default, gets the
enterprise node's answer from a secondary node that recurses, without a referral.

Inside a loopback-only namespace: a secondary node S (homes 88.166, port 2642, two
workers, ``--recursion``) and an enterprise node E (homes 88.166.1001, port 2643; S's
administrator writes E's HS_SITE into 0.NA/88.166.1001 at S). The identifier
88.166.1001/x lives only at E. The stock tool HDLTrace with ``resolver_site`` = S's site
sends the request to S only, and S answers with E's values (RC 1); a handle E does not
hold is RC 100 from S, again without the library asking E itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interop import harness as h

pytestmark = pytest.mark.e2e

PORTS = {"s": (2642, 8001, 50052), "e": (2643, 8002, 50053)}
PREFIXES = {"s": "88.166", "e": "88.166.1001"}
SECRETS = {"s": "secondary secret", "e": "enterprise secret"}
VALUE = "https://e.example.cn/x"


def setup_after_e() -> None:
    """Run inside the namespace once both nodes serve: the identifier at E, the
    delegation record at S (E's own published HS_SITE), the library's resolver_site."""
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

    e, s = PORTS["e"][0], PORTS["s"][0]
    value = HandleValue(1, "URL", VALUE.encode())
    write(e, "0.NA/88.166.1001", SECRETS["e"], CreateHandleRequest("88.166.1001/x", (value,)))
    got = exchange(f"127.0.0.1:{e}", resolution_request("0.NA/88.166.1001"), "tcp")
    assert isinstance(got.body, ResolutionResponse), got
    e_site = next(v for v in got.body.values if v.type == "HS_SITE")
    write(s, "0.NA/88.166", SECRETS["s"], CreateHandleRequest("0.NA/88.166.1001", (e_site,)))
    ask = Message(op_code=OpCode.GET_SITE_INFO, body=GetSiteInfoRequest("/"))
    site = exchange(f"127.0.0.1:{s}", ask, "tcp")
    assert isinstance(site.body, SiteInfoResponse), site
    (home / ".handle").mkdir(parents=True, exist_ok=True)
    (home / ".handle" / "resolver_site").write_bytes(encode_site(site.body.site))
    print("set up")


def node(work: Path, name: str, after: list[list[str]], *args: str) -> h.Server:
    db, key = f"sqlite:///{work}/{name}.db", str(work / f"{name}.key")
    handle, http, grpc = PORTS[name]
    init = h.idnode_init(db, key, PREFIXES[name], "--admin-secret", SECRETS[name])
    return h.Server(
        name,
        h.idnode_serve(db, key, handle=handle, http=http, grpc=grpc, args=args),
        port=http,
        before=[init],
        after=after,
        settle=0.5,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    h.skip_unless_ready()
    work = tmp_path_factory.mktemp("javarecursion")
    build, home = work / "build", work / "home"
    h.compile_drivers(build)
    setup = [sys.executable, "-m", "tests.interop.test_java_recursion", "setup", str(home)]
    servers = [node(work, "s", [], "--recursion"), node(work, "e", [setup])]
    trace = "net.handle.apps.simple.HDLTrace"
    steps = [
        h.Step("HDLTrace-found", h.cnri_java(build, home, trace, "88.166.1001/x")),
        h.Step("HDLTrace-missing", h.cnri_java(build, home, trace, "88.166.1001/none")),
    ]
    return h.in_namespace(work, servers, steps)


def trace_of(step: dict[str, Any]) -> tuple[list[str], list[str]]:
    lines = [ln.strip() for ln in step["stderr"].splitlines() if ln.strip()]
    sent = [ln.rsplit(" to ", 1)[-1] for ln in lines if ln.startswith("sending")]
    return sent, [ln for ln in lines if ln.startswith("received")]


def test_set_up(run: dict[str, Any]) -> None:
    setup = run["setup"]["e.after.0"]
    assert setup["rc"] == 0 and "set up" in setup["stdout"], setup


def test_the_library_gets_the_enterprise_answer_from_the_secondary(run: dict[str, Any]) -> None:
    step = run["steps"]["HDLTrace-found"]
    assert step["rc"] == 0, step
    assert "Got Response" in step["stdout"] and VALUE in step["stdout"], step
    sent, received = trace_of(step)
    assert sent == [f"127.0.0.1:{PORTS['s'][0]}"], step["stderr"]  # S only, no referral
    assert len(received) == 1 and "rc=1;" in received[0], received


def test_not_found_comes_from_the_secondary_too(run: dict[str, Any]) -> None:
    step = run["steps"]["HDLTrace-missing"]
    sent, received = trace_of(step)
    assert sent == [f"127.0.0.1:{PORTS['s'][0]}"], step["stderr"]
    assert len(received) == 1 and "Error(100)" in received[0], received


if __name__ == "__main__":
    if sys.argv[1:2] == ["setup"]:
        setup_after_e()
    else:
        subprocess.run([sys.executable, "-m", "pytest", "-q", __file__], check=False)
