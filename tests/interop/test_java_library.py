"""The HANDLE.NET 7.3.1 library and its command-line tools against a real idnode node.

One namespace run (module fixture): idnode with two workers on SQLite, the prefix
20.500.12345 with three admin keys (DSA public key at 300, the secret "s3cret" at 301,
an RSA public key at 302), then the Java driver's whole matrix (tests/interop/java/
HdlInterop.java: every operation over UDP, TCP and HTTP, each key, with and without
the library's session tracker, certified and not, every session key exchange,
encrypted and certified sessions) and each command-line tool. The tests read the result.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.interop import harness as h

PREFIX = "20.500.12345"
NA = f"0.NA/{PREFIX}"
pytestmark = pytest.mark.e2e
# The node's /metrics once it counts a ready answer sent (or after 20 s): each worker
# reports its ready answers once a second, so a page read at once can miss the last second.
METRICS_READER = """
import re, time, urllib.request
deadline = time.monotonic() + 20
while True:
    page = urllib.request.urlopen("http://127.0.0.1:8000/metrics", timeout=10).read().decode()
    sent = re.search(r"^idnode_ready_answers_sent_total (\\S+)$", page, re.M)
    if (sent and float(sent.group(1)) > 0) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(page)
"""


def java(build: Path, home: Path, *args: str) -> list[str]:
    return h.cnri_java(build, home, *args)


def batch_file(path: Path, auth: list[str], tag: str) -> Path:
    hdl = f"{PREFIX}/batch-{tag}"
    lines = [
        *auth,
        f"CREATE {hdl}",
        "100 HS_ADMIN 86400 1110 ADMIN 300:111111111111:" + NA,
        "1 URL 86400 1110 UTF8 https://example.cn/batch",
        "",
        f"ADD {hdl}",
        "2 EMAIL 86400 1110 UTF8 batch@example.cn",
        "",
        f"MODIFY {hdl}",
        "2 EMAIL 86400 1110 UTF8 batch2@example.cn",
        "",
        f"REMOVE 2:{hdl}",
        f"DELETE {hdl}",
        "HOME 127.0.0.1:2641:tcp",
        f"0.NA/{PREFIX}.77{tag}",
        "",
        "UNHOME 127.0.0.1:2641:tcp",
        f"0.NA/{PREFIX}.77{tag}",
        "",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    h.skip_unless_ready()
    work = tmp_path_factory.mktemp("javalib")
    build, home, keys = work / "build", work / "home", work / "keys"
    h.compile_drivers(build)
    keys.mkdir()
    h.local_home(home)  # every prefix goes to our node
    h.copy_admin_keys(keys)
    subprocess.run(java(build, home, "HdlInterop", "keygen", str(keys)), check=True, timeout=120)
    db, key = f"sqlite:///{work}/registry.db", str(work / "node.key")
    admins = ("--server-admins", f"300:{NA},301:{NA}")
    node = h.Server(
        "idnode",
        h.idnode_serve(db, key, handle=2641, http=8000, grpc=50051, args=admins),
        port=8000,
        before=[h.idnode_init(db, key, PREFIX, "--admin-pubkey", str(keys / "admpub.bin"))],
        after=h.library_setup(build, home, 2641, 8000, PREFIX, keys),
        settle=1.0,
    )
    tag = "42"
    steps = [
        h.Step(
            "matrix",
            h.hdl_interop(
                build,
                home,
                "matrix",
                2641,
                8000,
                f"prefix={PREFIX}",
                f"seckey=301:{NA}:s3cret",
                f"pubkey=300:{NA}:{keys}/admpriv.bin",
                f"rsakey=302:{NA}:{keys}/rsa_admin_priv.bin",
                f"exchangepriv={keys}/rsa_exchange_priv.bin",
                f"exchangepub={keys}/rsa_exchange_pub.bin",
            ),
            timeout=600,
        ),
        # What the node says it did meanwhile (read after the matrix, inside the namespace)
        h.Step("metrics", [sys.executable, "-c", METRICS_READER]),
        h.Step(
            "GetSiteInfo",
            java(
                build,
                home,
                "net.handle.apps.tools.GetSiteInfo",
                "127.0.0.1",
                "2641",
                str(work / "siteinfo.bin"),
            ),
        ),
        h.Step(
            "HDLCreate",
            java(
                build,
                home,
                "net.handle.apps.simple.HDLCreate",
                NA,
                "300",
                str(keys / "admpriv.bin"),
                f"{PREFIX}/tool-{tag}",
            ),
        ),
        h.Step(
            "HDLTrace", java(build, home, "net.handle.apps.simple.HDLTrace", f"{PREFIX}/tool-{tag}")
        ),
        h.Step(
            "HDLShowAdmin",
            java(build, home, "net.handle.apps.simple.HDLShowAdmin", f"{PREFIX}/tool-{tag}"),
        ),
        h.Step(
            "HDLList",
            java(
                build,
                home,
                "net.handle.apps.simple.HDLList",
                NA,
                "300",
                str(keys / "admpriv.bin"),
                PREFIX,
            ),
        ),
        h.Step(
            "HomeNA",
            java(
                build,
                home,
                "net.handle.apps.simple.HomeNA",
                NA,
                str(keys / "admpriv.bin"),
                "127.0.0.1",
                "2641",
                f"0.NA/{PREFIX}.88",
            ),
        ),
        h.Step(
            "HDLDelete",
            java(
                build,
                home,
                "net.handle.apps.simple.HDLDelete",
                NA,
                str(keys / "admpriv.bin"),
                str(_list(work, f"{PREFIX}/tool-{tag}")),
            ),
        ),
        h.Step(
            "HDLTrace-after-delete",
            java(build, home, "net.handle.apps.simple.HDLTrace", f"{PREFIX}/tool-{tag}"),
        ),
        h.Step(
            "GenericBatch-seckey",
            java(
                build,
                home,
                "net.handle.apps.batch.GenericBatch",
                str(
                    batch_file(work / "sec.batch", [f"AUTHENTICATE SECKEY:301:{NA}", "s3cret"], "1")
                ),
                str(work / "sec.log"),
            ),
        ),
        h.Step(
            "GenericBatch-pubkey",
            java(
                build,
                home,
                "net.handle.apps.batch.GenericBatch",
                str(
                    batch_file(
                        work / "pub.batch",
                        [f"AUTHENTICATE PUBKEY:300:{NA}", str(keys / "admpriv.bin")],
                        "2",
                    )
                ),
                str(work / "pub.log"),
            ),
        ),
    ]
    out = h.in_namespace(work, [node], steps)
    out["work"] = str(work)
    return out


def _list(work: Path, *handles: str) -> Path:
    p = work / "to-delete.txt"
    p.write_text("\n".join(handles) + "\n")
    return p


def matrix(run: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    step = run["steps"]["matrix"]
    got = h.checks(step["stdout"])
    assert got, f"the driver printed no checks: {step['stderr'][-3000:]}"
    return got


def expect_all(got: dict[str, tuple[bool, str]], names: list[str]) -> None:
    bad = h.failures(got, names)
    assert not bad, "\n".join(bad)


TRANSPORTS = ("udp", "tcp", "http")
READS = (
    "all",
    "repeated",
    "type-filter",
    "index-filter",
    "certified",
    "certified-digest",
    "not-found",
)
WRITES = (
    "create",
    "add-value",
    "modify-value",
    "read-back",
    "remove-value",
    "list",
    "delete",
    "gone",
)
KEYS = ("seckey", "pubkey", "rsakey")


def test_site_info_and_resolution_over_every_transport(run: dict[str, Any]) -> None:
    got = matrix(run)
    expect_all(got, [f"siteinfo.{t}" for t in TRANSPORTS])
    expect_all(got, [f"resolve.{t}.{r}" for t in TRANSPORTS for r in READS])
    # the site info publishes the server key the certified answers are checked with
    assert "server key RSA" in got["siteinfo.tcp"][1]


def test_the_library_takes_ready_answers(run: dict[str, Any]) -> None:
    """The same resolution asked again is answered from a worker's ready answers (the
    last answer's bytes with this request's id and expiration spliced in), and the
    library takes them: asked eight times on each transport, over two workers, one
    worker gets at least four, and from its third on (the first fills L1, the second is
    kept) they are ready answers; every one gave the same values. /metrics only
    corroborates that the node sent ready answers in the run: the matrix's other reads
    of the same handle send some too."""
    expect_all(matrix(run), [f"resolve.{t}.repeated" for t in TRANSPORTS])
    step = run["steps"]["metrics"]
    assert step["rc"] == 0, step["stderr"][-2000:]
    sent = re.search(r"^idnode_ready_answers_sent_total(?:\{[^}]*\})? (\S+)$", step["stdout"], re.M)
    assert sent is not None, step["stdout"][-2000:]
    assert float(sent.group(1)) > 0, step["stdout"][-3000:]


@pytest.mark.parametrize("transport", ["tcp", "http"])
@pytest.mark.parametrize("session", ["session", "nosession"])
def test_every_write_with_each_key(run: dict[str, Any], transport: str, session: str) -> None:
    got = matrix(run)
    expect_all(got, [f"write.{transport}.{k}.{session}.{w}" for k in KEYS for w in WRITES])


def test_sessions_every_key_exchange_encrypted_and_certified(run: dict[str, Any]) -> None:
    got = matrix(run)
    names = SESSION_CHECKS
    expect_all(got, names)
    # every write above went through a session the library kept (not a fallback)
    assert all("session " in got[n][1] for n in names[:8])


SESSION_CHECKS = [
    "session.dh",
    "session.dh-encrypted",
    "session.dh-certified",
    "session.dh-encrypted-certified",
    "session.dh-pubkey-admin",
    "session.cipher-client",
    "session.cipher-hdl",
    "session.cipher-server",
    "session.restricted-read",
    "session.terminate",
    "home-unhome",
]


def test_no_check_failed_or_went_missing(run: dict[str, Any]) -> None:
    got = matrix(run)
    assert h.failures(got) == []
    assert "DONE\t0 failed" in run["steps"]["matrix"]["stdout"]
    every = (
        ["setup.create-fixture", *SESSION_CHECKS]
        + [f"siteinfo.{t}" for t in TRANSPORTS]
        + [f"resolve.{t}.{r}" for t in TRANSPORTS for r in READS]
        + [
            f"write.{t}.{k}.{s}.{w}"
            for t in ("tcp", "http")
            for k in KEYS
            for s in ("session", "nosession")
            for w in WRITES
        ]
    )
    assert sorted(got) == sorted(every)


def test_get_site_info_tool(run: dict[str, Any]) -> None:
    step = run["steps"]["GetSiteInfo"]
    assert step["rc"] == 0, step["stderr"]
    from idnode.resolver.codec import decode_site

    site = decode_site((Path(run["work"]) / "siteinfo.bin").read_bytes())
    assert site.servers[0].public_key and site.servers[0].ip == "127.0.0.1"


def test_create_trace_show_list_delete_tools(run: dict[str, Any]) -> None:
    steps = run["steps"]
    create = steps["HDLCreate"]
    assert "Got Response" in create["stdout"] and "rc=1" in create["stdout"], create
    trace = steps["HDLTrace"]
    assert trace["rc"] == 0 and "HS_ADMIN" in trace["stdout"], trace
    show = steps["HDLShowAdmin"]
    assert NA in show["stdout"] or NA in show["stderr"], show
    listed = steps["HDLList"]
    assert f"{PREFIX}/tool-42" in listed["stdout"], listed
    delete = steps["HDLDelete"]
    assert f"deleted {PREFIX}/tool-42" in delete["stdout"], delete
    gone = steps["HDLTrace-after-delete"]
    assert "HS_ADMIN" not in gone["stdout"] and "HANDLE NOT FOUND" in gone["stdout"].upper(), gone


def test_home_na_tool(run: dict[str, Any]) -> None:
    step = run["steps"]["HomeNA"]
    assert "rc=1" in step["stdout"] + step["stderr"], step


@pytest.mark.parametrize("key", ["seckey", "pubkey"])
def test_generic_batch(run: dict[str, Any], key: str) -> None:
    step = run["steps"][f"GenericBatch-{key}"]
    log = (Path(run["work"]) / f"{key[:3]}.log").read_text()
    # create, add, modify, remove, delete, home and unhome
    assert "Successes/Total Entries: 7/7" in log, log + step["stderr"]
    assert "==>FAILURE" not in log and "==>INVALID" not in log, log
