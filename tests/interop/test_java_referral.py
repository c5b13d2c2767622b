"""The HANDLE.NET 7.3.1 library follows idnode's referrals with its own referral handling.

Inside a loopback-only namespace: a top-level node T (homes 88, port 2641), a secondary
node S (homes 88.166, port 2642, registered at T with ``idnode register-upward``) and an
enterprise node E (homes 88.166.1001, port 2643; S's administrator writes E's HS_SITE
into 0.NA/88.166.1001 at S). The identifier 88.166.1001/x lives only at E.

* The stock tool HDLTrace with ``resolver_site`` = S's site (the library sends every
  public resolution to S): S answers RC 302 SERVICE_REFERRAL with E's HS_SITE, the
  library re-sends the request to E (HandleResolver.sendRequestToService) and prints
  E's values.
* The same tool with its root (root_info) at T and no resolver_site, the library's
  prefix look-up (HandleResolver.findPrefixService): T answers 0.NA/88.166.1001 with
  RC 303 (RC_NA_DELEGATE) and S's site; the library asks S for "88.166.1001" (the
  prefix without 0.NA/: getServiceInfoForNA, makeSlashless), S answers with E's HS_SITE,
  and the library asks E for the identifier.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interop import harness as h
from tests.interop import hierarchy

pytestmark = pytest.mark.e2e

PORTS = {"t": (2641, 8000, 50051), "s": (2642, 8001, 50052), "e": (2643, 8002, 50053)}
PREFIXES = {"t": "88", "s": "88.166", "e": "88.166.1001"}
SECRETS = {"t": "top secret", "s": "secondary secret", "e": "enterprise secret"}
UPWARD = "upward secret"
VALUE = "https://e.example.cn/x"


def setup_after_e() -> None:
    """Run inside the namespace once all three nodes serve: the identifier at E, the
    delegation record at S (E's own published HS_SITE), the library's resolver_site."""
    from idnode.resolver.client import exchange
    from idnode.resolver.codec import GetSiteInfoRequest, Message, OpCode, SiteInfoResponse

    hierarchy.identifier_at_e_delegated_at_s(PORTS, SECRETS, VALUE)
    ask = Message(op_code=OpCode.GET_SITE_INFO, body=GetSiteInfoRequest("/"))
    # a second home whose root is T (root_info)
    from idnode.resolver.upstream.root_info import write_root_info

    top = exchange(f"127.0.0.1:{PORTS['t'][0]}", ask, "tcp")
    assert isinstance(top.body, SiteInfoResponse), top
    rooted = Path(sys.argv[3]) / ".handle"
    rooted.mkdir(parents=True, exist_ok=True)
    write_root_info(rooted / "root_info", [top.body.site])
    print("set up")


def node(work: Path, name: str, before: list[list[str]], after: list[list[str]]) -> h.Server:
    return hierarchy.node(work, name, PORTS, PREFIXES, SECRETS, before, after)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    h.skip_unless_ready()
    work = tmp_path_factory.mktemp("javareferral")
    build, home = work / "build", work / "home"
    h.compile_drivers(build)
    grant, upward = hierarchy.grant_and_upward(work, PORTS, "88.166", UPWARD)
    rooted = work / "rooted"
    setup = [sys.executable, "-m", "tests.interop.test_java_referral", "setup", str(home)]
    setup.append(str(rooted))
    servers = [
        node(work, "t", [grant], []),
        node(work, "s", [], [upward]),
        node(work, "e", [], [setup]),
    ]
    steps = [
        h.Step(
            "HDLTrace-resolver-site",
            h.cnri_java(build, home, "net.handle.apps.simple.HDLTrace", "88.166.1001/x"),
        ),
        h.Step(
            "HDLTrace-root",
            h.cnri_java(build, rooted, "net.handle.apps.simple.HDLTrace", "88.166.1001/x"),
        ),
    ]
    return h.in_namespace(work, servers, steps)


def test_the_hierarchy_is_set_up(run: dict[str, Any]) -> None:
    upward, setup = run["setup"]["s.after.0"], run["setup"]["e.after.0"]
    assert upward["rc"] == 0 and "HS_SITE added" in upward["stdout"], upward
    assert setup["rc"] == 0 and "set up" in setup["stdout"], setup


def test_the_library_follows_a_service_referral_from_the_secondary(run: dict[str, Any]) -> None:
    step = run["steps"]["HDLTrace-resolver-site"]
    out = step["stdout"]
    assert step["rc"] == 0, step
    assert "Got Response" in out and VALUE in out, f"{out}\n{step['stderr']}"
    # its trace: asked S, referred (302) with E's site, asked E, answered
    trace, sending, received = hierarchy.trace_of(step)
    sent = hierarchy.sent_to(sending)
    assert sent == [f"127.0.0.1:{PORTS['s'][0]}", f"127.0.0.1:{PORTS['e'][0]}"], trace
    assert "rc=302" in received[0] and "0.NA/88.166.1001" in received[0], received
    assert "rc=1;" in received[1], received


def test_the_library_follows_a_prefix_referral_from_its_root(run: dict[str, Any]) -> None:
    step = run["steps"]["HDLTrace-root"]
    out = step["stdout"]
    assert "Got Response" in out and VALUE in out, f"{out}\n{step['stderr']}"
    trace, sent, received = hierarchy.trace_of(step)
    t, s, e = (f"127.0.0.1:{PORTS[n][0]}" for n in "tse")
    # T refers the prefix look-up to S (303), S says where 88.166.1001 lives (E)
    i = next(n for n, ln in enumerate(received) if "rc=303" in ln)
    assert sent[i].endswith(t) and "0.NA/88.166.1001" in sent[i], trace
    assert sent[i + 1].endswith(s) and " 88.166.1001 [" in sent[i + 1], trace
    assert "rc=1;" in received[i + 1], trace
    assert sent[-1].endswith(e) and "88.166.1001/x" in sent[-1], trace


if __name__ == "__main__":
    if sys.argv[1:2] == ["setup"]:
        setup_after_e()
    else:
        subprocess.run([sys.executable, "-m", "pytest", "-q", __file__], check=False)
