"""The HANDLE.NET 7.3.1 library walks the other branch of the hierarchy from its root.

test_java_referral.py has the stock HDLTrace reach 88.166.1001/x (T -> S -> E); here the
branch is 88.200 -> 88.200.7, set up as in tests/e2e/test_hierarchy_chain.py, with the
project's own commands, inside a loopback-only namespace:

- T (port 2641): homes 88, its operator grants 0.NA/88.200 (`idnode grant-prefix`);
- S2 (port 2642): homes 88.200, registered at T (`idnode register-upward`), its operator
  is a server administrator;
- E2 (port 2643): homes 88.200.7, which it applies for at S2 (`idnode prefix apply
  --site-from`) and S2's operator approves (`idnode prefix approve`).

The identifier 88.200.7/x lives only at E2. HDLTrace with root_info naming T and no
resolver_site: T answers 0.NA/88.200.7 with RC 303 and S2's site, the library asks S2
for "88.200.7", S2 answers with E2's HS_SITE, and the library asks E2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from idnode.loadtest.processes import IDNODE
from tests.interop import harness as h
from tests.interop import hierarchy
from tests.interop.test_java_referral import PORTS, SECRETS, UPWARD

pytestmark = pytest.mark.e2e

PREFIXES = {"t": "88", "s": "88.200", "e": "88.200.7"}
HANDLE = "88.200.7/x"
VALUE = "https://e2.example.cn/x"


def setup_after_e() -> None:
    """Run inside the namespace once E2's prefix is approved at S2: the identifier at E2,
    and a home whose library root (root_info) is T's site."""
    from idnode.resolver.client import AdminClient
    from idnode.resolver.codec import CreateHandleRequest, HandleValue, Message, OpCode
    from idnode.resolver.upstream.register import fetch_site
    from idnode.resolver.upstream.root_info import write_root_info

    e = f"127.0.0.1:{PORTS['e'][0]}"
    with AdminClient(e, f"0.NA/{PREFIXES['e']}", 300, secret=SECRETS["e"].encode()) as c:
        body = CreateHandleRequest(HANDLE, (HandleValue(1, "URL", VALUE.encode()),))
        r = c.request(Message(op_code=OpCode.CREATE_HANDLE, body=body))[-1]
    assert r.response_code == 1, r
    rooted = Path(sys.argv[2]) / ".handle"
    rooted.mkdir(parents=True, exist_ok=True)
    write_root_info(rooted / "root_info", [fetch_site(f"127.0.0.1:{PORTS['t'][0]}")])
    print("set up")


def node(
    work: Path, name: str, before: list[list[str]], after: list[list[str]], *serve: str
) -> h.Server:
    return hierarchy.node(work, name, PORTS, PREFIXES, SECRETS, before, after, serve)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    h.skip_unless_ready()
    work = tmp_path_factory.mktemp("javachain")
    build, rooted = work / "build", work / "rooted"
    h.compile_drivers(build)
    grant, upward = hierarchy.grant_and_upward(work, PORTS, "88.200", UPWARD)
    s_http, operator = f"http://127.0.0.1:{PORTS['s'][1]}", "300:0.NA/88.200"
    apply = [IDNODE, "prefix", "apply", "--node", s_http, "--prefix", "88.200.7"]
    apply += ["--admin-secret", "e2 at s2", "--site-from", f"127.0.0.1:{PORTS['e'][0]}"]
    # the first application on S2's fresh registry is number 1
    approve = [IDNODE, "prefix", "approve", "1", "--node", s_http, "--admin", operator]
    approve += ["--secret", SECRETS["s"]]
    setup = [sys.executable, "-m", "tests.interop.test_java_chain", "setup", str(rooted)]
    servers = [
        node(work, "t", [grant], []),
        node(work, "s", [], [upward], "--server-admins", operator),
        node(work, "e", [], [apply, approve, setup]),
    ]
    trace = h.cnri_java(build, rooted, "net.handle.apps.simple.HDLTrace", HANDLE)
    return h.in_namespace(work, servers, [h.Step("HDLTrace-root", trace)])


def test_the_branch_is_set_up_with_the_operators_commands(run: dict[str, Any]) -> None:
    upward = run["setup"]["s.after.0"]
    assert upward["rc"] == 0 and "0.NA/88.200: HS_SITE added" in upward["stdout"], upward
    applied, approved, setup = (run["setup"][f"e.after.{i}"] for i in range(3))
    for step, status in ((applied, "pending"), (approved, "approved")):
        assert step["rc"] == 0, step
        app = json.loads(step["stdout"])["application"]
        assert (app["id"], app["prefix"], app["status"]) == (1, "88.200.7", status), app
    assert approved["rc"] == 0 and json.loads(approved["stdout"])["application"]["mode"] == (
        "delegated"
    )
    assert setup["rc"] == 0 and "set up" in setup["stdout"], setup


def test_the_library_walks_from_its_root_to_the_second_enterprise_node(
    run: dict[str, Any],
) -> None:
    step = run["steps"]["HDLTrace-root"]
    out = step["stdout"]
    assert "Got Response" in out and VALUE in out, f"{out}\n{step['stderr']}"
    trace, sent, received = hierarchy.trace_of(step)
    t, s, e = (f"127.0.0.1:{PORTS[n][0]}" for n in "tse")
    # T refers the prefix look-up to S2 (303), S2 says where 88.200.7 lives (E2)
    i = next(n for n, ln in enumerate(received) if "rc=303" in ln)
    assert sent[i].endswith(t) and "0.NA/88.200.7" in sent[i], trace
    assert sent[i + 1].endswith(s) and " 88.200.7 [" in sent[i + 1], trace
    assert "rc=1;" in received[i + 1], trace
    assert sent[-1].endswith(e) and HANDLE in sent[-1], trace
    assert "rc=1;" in received[-1], trace


if __name__ == "__main__":
    if sys.argv[1:2] == ["setup"]:
        setup_after_e()
    else:
        subprocess.run([sys.executable, "-m", "pytest", "-q", __file__], check=False)
