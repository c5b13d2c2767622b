"""The IDIS ID-SDK 2.0.3 against a real idnode node.

One namespace run (module fixture): idnode with two workers on SQLite, the prefix 88.166
whose admin key 300 is the DSA public key of the reference template (the SDK logs in
with its private key file), and 88.167 whose admin 300 has a secret (the SDK's password
login). The Java driver (tests/interop/java/SdkInterop.java) runs every operation the
SDK offers: site info, resolution over TCP and UDP (plain, filtered, certified), key
login with each request-digest type, writes on the logged-in TCP channel (certified and
not), writes on a channel that did not log in, and password logins right and wrong.

Over UDP the SDK binds its own socket to the port it sends to, so it is pointed at
127.0.0.1:2642, which nftables inside the namespace redirects to the node's 2641.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.interop import harness as h

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    h.skip_unless_ready()
    why = h.need_nft()
    if why:
        pytest.skip(f"the ID-SDK's UDP checks need nftables in the namespace: {why}")
    work = tmp_path_factory.mktemp("idsdk")
    build = work / "build"
    h.compile_drivers(build)
    h.copy_admin_keys(work)
    db, key = f"sqlite:///{work}/registry.db", str(work / "node.key")
    node = h.Server(
        "idnode",
        h.idnode_serve(db, key, handle=2641, http=8000, grpc=50051),
        port=8000,
        before=[
            h.idnode_init(db, key, "88.166", "--admin-pubkey", str(work / "admpub.bin")),
            h.idnode_init(db, key, "88.167", "--admin-secret", "pw-88.167"),
        ],
        settle=1.0,
    )
    step = h.Step(
        "sdk",
        [
            "java",
            "-Dlog4j.configuration=file:/dev/null",
            "-cp",
            h.sdk_classpath(build),
            "SdkInterop",
            "host=127.0.0.1",
            "port=2641",
            "udpport=2642",
            "prefix=88.166",
            f"keyfile={work / 'admpriv.bin'}",
            "keyindex=300",
            "pwprefix=88.167",
            "username=300:0.NA/88.167",
            "password=pw-88.167",
        ],
        timeout=600,
    )
    out = h.in_namespace(work, [node], [step], nat=[(2642, 2641)])
    out["work"] = str(work)
    return out


def sdk(run: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    step = run["steps"]["sdk"]
    got = h.checks(step["stdout"])
    assert got, f"the SDK driver printed no checks: {step['stderr'][-3000:]}"
    return got


def expect_all(got: dict[str, tuple[bool, str]], names: list[str]) -> None:
    bad = h.failures(got, names)
    assert not bad, "\n".join(bad)


def test_site_info_and_resolution_over_tcp_and_udp(run: dict[str, Any]) -> None:
    got = sdk(run)
    expect_all(
        got,
        [
            "tcp.siteinfo",
            "tcp.resolve",
            "tcp.resolve-type",
            "tcp.resolve-index",
            "tcp.resolve-not-found",
            "udp.resolve",
            "udp.resolve-type",
            "udp.resolve-not-found",
            "udp.siteinfo",
        ],
    )


def test_certified_answers_verify_with_the_published_key(run: dict[str, Any]) -> None:
    # the SDK checks the signature over its 2.8+ envelope fields + header + body with
    # the key from the site info it fetched over TCP ("无法获取公钥对象" before)
    expect_all(
        sdk(run), ["tcp.resolve-certified", "tcp.resolve-certified-digest", "tcp.modify-certified"]
    )


def test_key_login_then_every_write_on_the_channel(run: dict[str, Any]) -> None:
    expect_all(
        sdk(run),
        [
            "tcp.login-key",
            "tcp.login-key-digest-2",
            "tcp.login-key-digest-3",
            "tcp.create",
            "tcp.add",
            "tcp.modify",
            "tcp.read-back",
            "tcp.remove",
            "tcp.delete",
            "tcp.gone",
        ],
    )


def test_a_channel_that_did_not_log_in_writes_nothing(run: dict[str, Any]) -> None:
    got = sdk(run)
    expect_all(got, ["tcp.write-without-login"])
    assert "nothing written" in got["tcp.write-without-login"][1]


def test_password_login(run: dict[str, Any]) -> None:
    got = sdk(run)
    expect_all(got, ["tcp.password-login", "tcp.password-login-wrong"])
    # a wrong password: 403, then the write on that channel is challenged
    assert got["tcp.password-login-wrong"][1].startswith("rc 403"), got["tcp.password-login-wrong"]


def test_no_check_failed(run: dict[str, Any]) -> None:
    got = sdk(run)
    assert h.failures(got) == []
    assert "DONE\t0 failed" in run["steps"]["sdk"]["stdout"]
    assert len(got) == 25, sorted(got)
