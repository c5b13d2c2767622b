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
from tests.interop import hierarchy

pytestmark = pytest.mark.e2e

PORTS = {"s": (2642, 8001, 50052), "e": (2643, 8002, 50053)}
PREFIXES = {"s": "88.166", "e": "88.166.1001"}
SECRETS = {"s": "secondary secret", "e": "enterprise secret"}
VALUE = "https://e.example.cn/x"


def setup_after_e() -> None:
    """Run inside the namespace once both nodes serve: the identifier at E, the
    delegation record at S (E's own published HS_SITE), the library's resolver_site."""
    hierarchy.identifier_at_e_delegated_at_s(PORTS, SECRETS, VALUE)
    print("set up")


def node(work: Path, name: str, after: list[list[str]], *args: str) -> h.Server:
    return hierarchy.node(work, name, PORTS, PREFIXES, SECRETS, [], after, args)


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
    _trace, sent, received = hierarchy.trace_of(step)
    return hierarchy.sent_to(sent), received


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
