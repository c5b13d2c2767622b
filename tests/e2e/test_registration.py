"""Registration as an administrator's Handle client does it, against real `idnode serve`
processes: challenge-response with a secret key and with an RSA key, over TCP and UDP;
coherence across workers through Redis; the audit log."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from idnode.resolver.client import AdminClient, exchange, exchange_udp, resolution_request
from idnode.resolver.codec import (
    AddValueRequest,
    Challenge,
    ChallengeAnswer,
    CreateHandleRequest,
    DeleteHandleRequest,
    HandleValue,
    ListHandlesRequest,
    Message,
    ModifyValueRequest,
    OpCode,
    RemoveValueRequest,
    ResolutionResponse,
    ResponseCode,
    decode,
    encode,
)
from idnode.resolver.codec.auth import (
    MAC_HMAC_SHA1,
    MAC_MD5,
    MAC_PBKDF2_HMAC_SHA1,
    MAC_SHA1,
    MAC_SHA256,
)
from tests.e2e.node_process import IDNODE, NodeProcess, init_registry

pytestmark = pytest.mark.e2e
RC = ResponseCode
SECRET = b"correct horse battery staple"


def idnode(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IDNODE, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )


@pytest.fixture
def secret_node(tmp_path: Path, redis_url: str, redis_namespace: str) -> Iterator[NodeProcess]:
    db = f"sqlite:///{tmp_path}/reg.db"
    key = str(tmp_path / "node.key")
    p = idnode(
        "init",
        "--prefix",
        "88.166",
        "--admin-secret",
        SECRET.decode(),
        "--database-url",
        db,
        "--secret-key-file",
        key,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "prefix admin 300:0.NA/88.166" in p.stdout
    n = NodeProcess(
        db,
        redis_url=redis_url,
        namespace=redis_namespace,
        log=tmp_path / "n.log",
        extra=("--secret-key-file", key),
    )
    n.wait_ready()
    yield n
    assert n.stop() == 0, n.log_text()


def first_data(port: int, handle: str) -> bytes:
    """The first value's data, resolved over a new UDP socket (any worker may answer)."""
    m = exchange_udp("127.0.0.1", port, resolution_request(handle))
    assert isinstance(m.body, ResolutionResponse), m
    return m.body.values[0].data


def nonce_of(m: Message) -> bytes:
    assert isinstance(m.body, Challenge)
    return m.body.nonce


def value_of(server: str, handle: str, index: int) -> bytes | None:
    m = exchange(server, resolution_request(handle))
    if m.response_code != RC.SUCCESS:
        return None
    assert isinstance(m.body, ResolutionResponse)
    return next((v.data for v in m.body.values if v.index == index), None)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_secret_key_admin_lifecycle(secret_node: NodeProcess, transport: str) -> None:
    server, h = secret_node.server, f"88.166.1001/LIFE-{transport}"
    with AdminClient(server, "0.NA/88.166", 300, secret=SECRET, transport=transport) as admin:
        (r,) = admin.request(
            Message(
                op_code=OpCode.CREATE_HANDLE,
                body=CreateHandleRequest(h, (HandleValue(1, "URL", b"https://v1"),)),
            )
        )
        assert r.response_code == RC.SUCCESS and r.op_code == OpCode.CREATE_HANDLE
        assert value_of(server, h, 1) == b"https://v1"
        first_session = admin.session_id
        (r,) = admin.request(
            Message(
                op_code=OpCode.MODIFY_VALUE,
                body=ModifyValueRequest(h, (HandleValue(1, "URL", b"https://v2"),)),
            )
        )
        assert r.response_code == RC.SUCCESS
        assert admin.session_id == first_session  # authenticated once for the session
        assert value_of(server, h, 1) == b"https://v2"
        (r,) = admin.request(
            Message(
                op_code=OpCode.ADD_VALUE,
                body=AddValueRequest(h, (HandleValue(2, "EMAIL", b"qa@example.cn"),)),
            )
        )
        assert r.response_code == RC.SUCCESS and value_of(server, h, 2) == b"qa@example.cn"
        (r,) = admin.request(
            Message(
                op_code=OpCode.ADD_VALUE,
                body=AddValueRequest(h, (HandleValue(2, "EMAIL", b"again"),)),
            )
        )
        assert r.response_code == RC.VALUE_ALREADY_EXISTS
        (r,) = admin.request(Message(op_code=OpCode.REMOVE_VALUE, body=RemoveValueRequest(h, (2,))))
        assert r.response_code == RC.SUCCESS and value_of(server, h, 2) is None
        replies = admin.request(
            Message(op_code=OpCode.LIST_HANDLES, body=ListHandlesRequest("0.NA/88.166.1001"))
        )
        assert replies[-1].response_code == RC.SUCCESS
        listed = [x for m in replies for x in m.body.handles]  # type: ignore[union-attr]
        assert h in listed
        (r,) = admin.request(Message(op_code=OpCode.DELETE_HANDLE, body=DeleteHandleRequest(h)))
        assert r.response_code == RC.SUCCESS
    assert exchange(server, resolution_request(h)).response_code == RC.HANDLE_NOT_FOUND


@pytest.mark.parametrize(
    "alg", [MAC_MD5, MAC_SHA1, MAC_SHA256, MAC_HMAC_SHA1, MAC_PBKDF2_HMAC_SHA1]
)
def test_every_secret_key_mac_logs_in(secret_node: NodeProcess, alg: int) -> None:
    with AdminClient(
        secret_node.server, "0.NA/88.166", 300, secret=SECRET, mac_algorithm=alg
    ) as admin:
        (r,) = admin.request(
            Message(
                op_code=OpCode.CREATE_HANDLE,
                body=CreateHandleRequest(f"88.166.1001/MAC-{alg}", (HandleValue(1, "URL", b"x"),)),
            )
        )
        assert r.response_code == RC.SUCCESS


def test_wrong_secret_is_refused_and_audited(secret_node: NodeProcess, tmp_path: Path) -> None:
    h = "88.166.1001/NOPE"
    with AdminClient(secret_node.server, "0.NA/88.166", 300, secret=b"wrong") as admin:
        (r,) = admin.request(
            Message(
                op_code=OpCode.CREATE_HANDLE,
                body=CreateHandleRequest(h, (HandleValue(1, "URL", b"x"),)),
            )
        )
    assert r.response_code == RC.AUTHENTICATION_FAILED
    assert exchange(secret_node.server, resolution_request(h)).response_code == (
        RC.HANDLE_NOT_FOUND
    )
    db = f"sqlite:///{tmp_path}/reg.db"
    p = idnode("audit", h, "--json", "--database-url", db, cwd=tmp_path)
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert rows and rows[-1]["op"] == "AUTHENTICATE" and rows[-1]["responseCode"] == 403
    assert rows[-1]["actor"] == "300:0.NA/88.166"


def test_a_nonce_answers_once(secret_node: NodeProcess) -> None:
    req = Message(
        op_code=OpCode.CREATE_HANDLE,
        request_id=41,
        body=CreateHandleRequest("88.166.1001/REPLAY", (HandleValue(1, "URL", b"x"),)),
    )
    with socket.create_connection(("127.0.0.1", secret_node.handle_port), timeout=5) as t:
        t.sendall(encode(req))
        chal = decode(t.recv(65536))
        assert chal.response_code == RC.AUTHENTICATION_NEEDED and chal.session_id
        assert chal.request_digest is not None
        admin = AdminClient(secret_node.server, "0.NA/88.166", 300, secret=SECRET)
        answer = Message(
            op_code=OpCode.CHALLENGE_RESPONSE,
            request_id=42,
            session_id=chal.session_id,
            body=admin._answer(nonce_of(chal), chal.request_digest.digest),
        )
        t.sendall(encode(answer))
        assert decode(t.recv(65536)).response_code == RC.SUCCESS
        t.sendall(encode(answer))  # the same answer again
        # the answered challenge is gone, and its id with it: 500, as the reference says
        # of a session id it does not know
        assert decode(t.recv(65536)).response_code == RC.SESSION_TIMEOUT


def test_rsa_key_admin(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "admin.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    db = f"sqlite:///{tmp_path}/rsa.db"
    p = idnode(
        "init",
        "--prefix",
        "88.166",
        "--admin-pubkey",
        str(pem),
        "--database-url",
        db,
        "--secret-key-file",
        str(tmp_path / "k"),
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    n = NodeProcess(db, log=tmp_path / "rsa.log", extra=("--secret-key-file", str(tmp_path / "k")))
    try:
        n.wait_ready()
        with AdminClient(n.server, "0.NA/88.166", 300, private_key=key) as admin:
            (r,) = admin.request(
                Message(
                    op_code=OpCode.CREATE_HANDLE,
                    body=CreateHandleRequest(
                        "88.166.1001/RSA", (HandleValue(1, "URL", b"signed"),)
                    ),
                )
            )
            assert r.response_code == RC.SUCCESS
        assert value_of(n.server, "88.166.1001/RSA", 1) == b"signed"
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        with AdminClient(n.server, "0.NA/88.166", 300, private_key=other) as admin:
            (r,) = admin.request(
                Message(op_code=OpCode.DELETE_HANDLE, body=DeleteHandleRequest("88.166.1001/RSA"))
            )
            assert r.response_code == RC.AUTHENTICATION_FAILED
    finally:
        assert n.stop() == 0, n.log_text()


def create_then_follow_writes(
    n: NodeProcess, admin: AdminClient, h: str, versions: tuple[bytes, ...]
) -> None:
    """Create ``h``, read it through every worker (each new UDP socket may land on either
    one, so 40 reads warm them all), then after each MODIFY no worker serves an older
    value."""
    (r,) = admin.request(
        Message(
            op_code=OpCode.CREATE_HANDLE,
            body=CreateHandleRequest(h, (HandleValue(1, "URL", b"old"),)),
        )
    )
    assert r.response_code == RC.SUCCESS
    for _ in range(40):
        assert first_data(n.handle_port, h) == b"old"
    for version in versions:
        (r,) = admin.request(
            Message(
                op_code=OpCode.MODIFY_VALUE,
                body=ModifyValueRequest(h, (HandleValue(1, "URL", version),)),
            )
        )
        assert r.response_code == RC.SUCCESS
        seen = {first_data(n.handle_port, h) for _ in range(40)}
        assert seen == {version}, f"a worker served {seen - {version}}"


def test_no_worker_serves_the_old_value_after_a_write(
    tmp_path: Path, redis_url: str, redis_namespace: str
) -> None:
    db, key, _ = init_registry(tmp_path, "co", "--admin-secret", "s")
    n = NodeProcess(
        db,
        redis_url=redis_url,
        namespace=redis_namespace,
        workers=2,
        log=tmp_path / "co.log",
        extra=("--secret-key-file", key),
    )
    h = "88.166.1001/COHERENT"
    try:
        n.wait_ready()
        with AdminClient(n.server, "0.NA/88.166", 300, secret=b"s") as admin:
            create_then_follow_writes(n, admin, h, (b"new-1", b"new-2", b"new-3"))
    finally:
        assert n.stop() == 0, n.log_text()


def test_unauthenticated_answer_has_no_pending_challenge(secret_node: NodeProcess) -> None:
    bogus = Message(
        op_code=OpCode.CHALLENGE_RESPONSE,
        request_id=9,
        session_id=12345,
        body=ChallengeAnswer("HS_SECKEY", "0.NA/88.166", 300, b"\x02" + b"0" * 20),
    )
    m = exchange_udp("127.0.0.1", secret_node.handle_port, bogus)
    assert m.response_code == RC.SESSION_TIMEOUT  # no challenge or session has that id


def test_template_cli(tmp_path: Path) -> None:
    from tests.unit.test_templates import DOC

    db = f"sqlite:///{tmp_path}/t.db"
    assert (
        idnode(
            "init",
            "--prefix",
            "88.166",
            "--database-url",
            db,
            "--secret-key-file",
            str(tmp_path / "k"),
            cwd=tmp_path,
        ).returncode
        == 0
    )
    f = tmp_path / "tpl.json"
    f.write_text(json.dumps(DOC))
    p = idnode("template", "put", str(f), "--database-url", db, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    p = idnode("template", "list", "88.166.1001", "--database-url", db, cwd=tmp_path)
    assert p.stdout.startswith("v1\tC/34/344/3443\t3/4 items enabled")
    p = idnode("template", "show", "88.166.1001", "v1", "--database-url", db, cwd=tmp_path)
    assert json.loads(p.stdout)["items"][0]["key"] == "productName"
    f.write_text(json.dumps({**DOC, "version": "v2", "items": DOC["items"][:1]}))
    p = idnode("template", "put", str(f), "--database-url", db, cwd=tmp_path)
    assert p.returncode == 1 and "never deleted" in p.stderr
    # imports are checked against the template they name
    lines = tmp_path / "t.jsonl"
    lines.write_text(
        "\n".join(
            json.dumps(x)
            for x in [
                {
                    "handle": "88.166.1001/OK",
                    "values": [
                        {"index": 1001, "type": "TEMPLATE", "data": "v1"},
                        {"index": 2001, "type": "productName", "data": "HV-200"},
                    ],
                },
                {
                    "handle": "88.166.1001/BAD",
                    "values": [
                        {"index": 1001, "type": "TEMPLATE", "data": "v1"},
                        {"index": 2002, "type": "pressureMPa", "data": "99"},
                    ],
                },
            ]
        )
        + "\n"
    )
    p = idnode("import", str(lines), "--database-url", db, cwd=tmp_path)
    assert "imported 1 handles" in p.stdout
    assert "productName (index 2001): required" in p.stderr and "at most 70" in p.stderr


def test_authorized_reads_of_non_public_values(secret_node: NodeProcess) -> None:
    from idnode.resolver.codec import Permission

    h = "88.166.1001/PRIVATE"
    secret_value = HandleValue(
        2, "costPrice", b"1200.00", permissions=int(Permission.ADMIN_READ | Permission.ADMIN_WRITE)
    )
    with AdminClient(secret_node.server, "0.NA/88.166", 300, secret=SECRET) as admin:
        assert admin.login().response_code == RC.SUCCESS  # LOGIN_ID_SYSTEM, then the challenge
        (r,) = admin.request(
            Message(
                op_code=OpCode.CREATE_HANDLE,
                body=CreateHandleRequest(
                    h, (HandleValue(1, "URL", b"https://public"), secret_value)
                ),
            )
        )
        assert r.response_code == RC.SUCCESS
        m = admin.resolve(h)  # in the authenticated session, PO not set
        assert isinstance(m.body, ResolutionResponse)
        assert [v.index for v in m.body.values] == [1, 2]
        m = admin.resolve(h, public_only=True)  # PO set: never
        assert [v.index for v in m.body.values] == [1]  # type: ignore[union-attr]
        # The session's id without its key's MAC: a stranger, who sees the public value.
        m = exchange(
            secret_node.server,
            replace_session(resolution_request(h, flags=0), admin.session_id),
            "tcp",
        )
        assert [v.index for v in m.body.values] == [1]  # type: ignore[union-attr]
    # anyone else: only the public value
    m = exchange(secret_node.server, resolution_request(h, flags=0))
    assert [v.index for v in m.body.values] == [1]  # type: ignore[union-attr]
    # a session id that names no session is refused, as the reference server does
    m = exchange(secret_node.server, replace_session(resolution_request(h, flags=0), 12345))
    assert m.response_code == RC.SESSION_TIMEOUT


def replace_session(m: Message, session_id: int) -> Message:
    import dataclasses

    return dataclasses.replace(m, session_id=session_id)


def test_workers_stay_coherent_without_redis(tmp_path: Path) -> None:
    db, key, _ = init_registry(tmp_path, "embedded", "--admin-secret", "s")
    n = NodeProcess(db, workers=2, log=tmp_path / "emb.log", extra=("--secret-key-file", key))
    h = "88.166.1001/EMBEDDED"
    try:
        n.wait_ready()
        with AdminClient(n.server, "0.NA/88.166", 300, secret=b"s") as admin:
            # "not found" is cached too: a create must end it everywhere
            assert (
                exchange_udp("127.0.0.1", n.handle_port, resolution_request(h)).response_code
                == RC.HANDLE_NOT_FOUND
            )
            create_then_follow_writes(n, admin, h, (b"new-1", b"new-2"))
    finally:
        assert n.stop() == 0, n.log_text()


def test_challenge_and_answer_may_reach_different_workers(tmp_path: Path) -> None:
    db, key, _ = init_registry(tmp_path, "multi", "--admin-secret", "s")
    n = NodeProcess(db, workers=2, log=tmp_path / "multi.log", extra=("--secret-key-file", key))
    try:
        n.wait_ready()
        for i in range(12):  # a new client and a new UDP socket for every request
            with AdminClient(
                n.server, "0.NA/88.166", 300, secret=b"s", transport="udp", socket_per_request=True
            ) as admin:
                (r,) = admin.request(
                    Message(
                        op_code=OpCode.CREATE_HANDLE,
                        body=CreateHandleRequest(
                            f"88.166.1001/MW-{i}", (HandleValue(1, "URL", b"x"),)
                        ),
                    )
                )
                assert r.response_code == RC.SUCCESS, r
    finally:
        assert n.stop() == 0, n.log_text()


def test_verify_response_for_another_server(secret_node: NodeProcess) -> None:
    import hashlib
    import os

    from idnode.resolver.codec import HashType, RequestDigest, VerifyAuthRequest, VerifyAuthResponse
    from idnode.resolver.codec.auth import MAC_SHA1, SecretKeyMac, encode_secret_key_mac, keyed_mac

    nonce, digest = os.urandom(16), hashlib.sha1(b"a request elsewhere").digest()
    good = encode_secret_key_mac(
        SecretKeyMac(MAC_SHA1, keyed_mac(MAC_SHA1, SECRET, nonce + digest))
    )
    # the last MAC byte flipped (overwriting it with 0 would be no change 1 time in 256)
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    for signed, valid in ((good, True), (bad, False)):
        req = Message(
            op_code=OpCode.VERIFY_RESPONSE,
            request_id=77,
            body=VerifyAuthRequest(
                "0.NA/88.166", 300, nonce, RequestDigest(HashType.SHA1, digest), signed
            ),
        )
        m = exchange_udp("127.0.0.1", secret_node.handle_port, req)
        assert m.response_code == RC.SUCCESS and m.body == VerifyAuthResponse(valid)
