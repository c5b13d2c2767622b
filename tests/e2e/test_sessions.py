"""Keyed sessions, certified answers and logins against real `idnode serve` processes:
what a hostile or broken client gets, and that a session works across workers.

The reference clients drive the same features in tests/interop; here idnode's own client
(resolver.client.AdminClient, which opens a DH session and MACs its requests) and raw
packets probe the edges: a session id without the key, replays however relabelled, a
terminated or idle session, encryption, signatures, and TCP-bound logins.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from idnode.registry.server_key import verify
from idnode.registry.session_crypto import rsa_public_key
from idnode.resolver.client import AdminClient, exchange, exchange_udp, resolution_request
from idnode.resolver.codec import (
    Challenge,
    CreateHandleRequest,
    FrameBuffer,
    HandleOnlyRequest,
    HandleValue,
    KeyExchange,
    LoginRequest,
    Message,
    ModifyValueRequest,
    OpCode,
    OpFlag,
    ResolutionResponse,
    ResponseCode,
    SessionSetupRequest,
    SessionSetupResponse,
    SiteInfoResponse,
    decode,
    encode,
)
from idnode.resolver.codec.bodies import SessionExchangeKeyRequest
from idnode.resolver.codec.credential import (
    HS_MAC,
    HS_SIGNED,
    Credential,
    check_session_mac,
    decode_credential,
    encode_credential,
    signed_prefix,
)
from idnode.resolver.codec.keys import DhPublicKey, RsaPublicKey, encode_public_key
from idnode.resolver.codec.message import header_and_body, with_credential
from tests.e2e.node_process import NodeProcess, init_registry

pytestmark = pytest.mark.e2e
RC = ResponseCode
SECRET = b"session secret"
ADMIN = ("0.NA/88.166", 300)


@pytest.fixture
def node(
    tmp_path: Path, pg_url: str, redis_url: str, redis_namespace: str
) -> Iterator[NodeProcess]:
    """Two workers on PostgreSQL and Redis: a session made on one is used on the other."""
    db, key, _ = init_registry(
        tmp_path, "sessions", "--admin-secret", SECRET.decode(), database_url=pg_url
    )
    n = NodeProcess(
        db,
        redis_url=redis_url,
        namespace=redis_namespace,
        workers=2,
        log=tmp_path / "node.log",
        extra=("--secret-key-file", key),
    )
    n.wait_ready()
    yield n
    assert n.stop() == 0, n.log_text()


@pytest.fixture
def brief(tmp_path: Path) -> Iterator[NodeProcess]:
    """Sessions that go idle after 2 s, and at most 4 open per client."""
    db, key, _ = init_registry(tmp_path, "brief", "--admin-secret", SECRET.decode())
    n = NodeProcess(
        db,
        log=tmp_path / "brief.log",
        extra=("--secret-key-file", key, "--session-ttl", "2", "--sessions-per-client", "4"),
    )
    n.wait_ready()
    yield n
    assert n.stop() == 0, n.log_text()


def admin(n: NodeProcess, **kw: object) -> AdminClient:
    return AdminClient(n.server, *ADMIN, secret=SECRET, **kw)  # type: ignore[arg-type]


def create(h: str, url: bytes = b"https://example.cn/s") -> Message:
    return Message(
        op_code=OpCode.CREATE_HANDLE, body=CreateHandleRequest(h, (HandleValue(1, "URL", url),))
    )


def modify(h: str, url: bytes) -> Message:
    return Message(
        op_code=OpCode.MODIFY_VALUE, body=ModifyValueRequest(h, (HandleValue(1, "URL", url),))
    )


def url_of(n: NodeProcess, h: str) -> bytes | None:
    m = exchange(n.server, resolution_request(h))
    if m.response_code != RC.SUCCESS:
        return None
    assert isinstance(m.body, ResolutionResponse)
    return m.body.values[0].data


def answers(a: AdminClient) -> int:
    """How many challenges the client has answered so far."""
    return sum(1 for w in a.sent if struct.unpack_from(">I", w, 20)[0] == OpCode.CHALLENGE_RESPONSE)


def tcp_exchange(port: int, *wires: bytes) -> list[Message]:
    """Send each message on one TCP connection, one at a time; the last answer to each."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        fb = FrameBuffer()
        for wire in wires:
            s.sendall(wire)
            rid = struct.unpack_from(">I", wire, 8)[0]
            got = None
            while got is None:
                for f in fb.feed(s.recv(65536)):
                    m = decode(f)
                    if m.request_id == rid and not m.has(OpFlag.CN):
                        got = m
            out.append(got)
    return out


def test_a_session_authenticates_once_then_works_on_every_worker(node: NodeProcess) -> None:
    # a new UDP socket per request, as the reference library sends: requests land on
    # either worker, and the session (in the registry) is the same on both
    with admin(node, transport="udp", socket_per_request=True) as a:
        for i in range(6):
            (r,) = a.request(create(f"88.166.1001/S-{i}"))
            assert r.response_code == RC.SUCCESS, r
        assert answers(a) == 1  # challenged once: later requests proved themselves by MAC
        assert a.session_id and a.session_key is not None
    assert url_of(node, "88.166.1001/S-5") == b"https://example.cn/s"


def test_a_session_id_alone_authorises_nothing(node: NodeProcess) -> None:
    with admin(node) as a:
        assert a.request(create("88.166.1001/MINE"))[0].response_code == RC.SUCCESS
        sid = a.session_id
    stranger = dataclasses.replace(
        create("88.166.1001/STOLEN"),
        session_id=sid,
        request_id=501,
        major_version=2,
        minor_version=5,
        expiration=int(time.time()) + 600,
    )
    (r,) = tcp_exchange(node.handle_port, encode(stranger))
    assert r.response_code == RC.INVALID_CREDENTIAL  # "Session request missing MAC code."
    forged = Credential(HS_MAC, b"\x02", b"\x00" * 20, "", 7)
    (r,) = tcp_exchange(
        node.handle_port, with_credential(encode(stranger), encode_credential(forged))
    )
    assert r.response_code == RC.INVALID_SESSION_KEY
    assert url_of(node, "88.166.1001/STOLEN") is None


def test_replays_are_refused_however_relabelled(node: NodeProcess) -> None:
    h = "88.166.1001/REPLAY"
    with admin(node) as a:
        assert a.request(create(h, b"https://v0"))[0].response_code == RC.SUCCESS
        assert a.request(modify(h, b"https://v1"))[0].response_code == RC.SUCCESS
        captured = a.sent[-1]  # the MAC'd MODIFY to v1, as it crossed the wire
        assert a.request(modify(h, b"https://v2"))[0].response_code == RC.SUCCESS
        rid = struct.unpack_from(">I", captured, 8)[0]
        assert a.send_raw(captured, rid)[-1].response_code == RC.SESSION_MESSAGE_REJECTED
        # a new counter in the credential: the 2.5 MAC does not cover it, the MAC is spent
        m = decode(captured)
        cred = decode_credential(m.credential)
        recount = with_credential(
            captured, encode_credential(dataclasses.replace(cred, signer_index=999))
        )
        assert a.send_raw(recount, rid)[-1].response_code == RC.SESSION_MESSAGE_REJECTED
        # a new request id in the envelope: the same
        relabelled = captured[:8] + struct.pack(">I", 4321) + captured[12:]
        assert a.send_raw(relabelled, 4321)[-1].response_code == RC.SESSION_MESSAGE_REJECTED
    assert url_of(node, h) == b"https://v2"  # the replayed v1 never came back


def test_terminate_ends_the_session_for_every_worker(node: NodeProcess) -> None:
    with admin(node, transport="udp", socket_per_request=True) as a:
        assert a.request(create("88.166.1001/T-1"))[0].response_code == RC.SUCCESS
        # SESSION_TERMINATE without the key's MAC: refused, the session lives on
        unsigned = Message(
            op_code=OpCode.SESSION_TERMINATE,
            body=HandleOnlyRequest("/"),
            request_id=77,
            session_id=a.session_id,
            major_version=2,
            minor_version=5,
        )
        assert exchange_udp("127.0.0.1", node.handle_port, unsigned).response_code == (
            RC.INVALID_SESSION_KEY
        )
        assert a.request(create("88.166.1001/T-2"))[0].response_code == RC.SUCCESS
        term = a._message(Message(op_code=OpCode.SESSION_TERMINATE, body=HandleOnlyRequest("/")))
        assert a._exchange(term)[-1].response_code == RC.SUCCESS
        for i in range(3):  # whichever worker gets it
            assert a.request(create(f"88.166.1001/T-late-{i}"))[-1].response_code == (
                RC.SESSION_TIMEOUT
            )
    assert url_of(node, "88.166.1001/T-late-0") is None


def test_an_idle_session_times_out(brief: NodeProcess) -> None:
    with admin(brief) as a:
        assert a.request(create("88.166.1001/IDLE-1"))[0].response_code == RC.SUCCESS
        time.sleep(3)  # the node's --session-ttl is 2 s
        assert a.request(create("88.166.1001/IDLE-2"))[0].response_code == RC.SESSION_TIMEOUT
    assert url_of(brief, "88.166.1001/IDLE-2") is None


def test_one_client_cannot_open_sessions_without_end(brief: NodeProcess) -> None:
    clients = [admin(brief) for _ in range(4)]
    for c in clients:
        assert c.open_session().response_code == RC.SUCCESS
    with pytest.raises(Exception, match="session setup refused: 3"):
        admin(brief).open_session()  # SERVER_TOO_BUSY for this client address
    # over the cap no key agreement is even tried: a setup whose DH key is unusable gets
    # RC 3 too, not the 501 that agreeing with it would give
    toy = encode_public_key(DhPublicKey(5, 23, 2))
    setup = setup_message(SessionSetupRequest(KeyExchange.DH, 60, "", -1, toy))
    (r,) = tcp_exchange(brief.handle_port, encode(setup))
    assert r.response_code == RC.SERVER_TOO_BUSY
    for c in clients:
        c.close()


def setup_message(body: SessionSetupRequest, *, minor: int = 5) -> Message:
    return Message(
        op_code=OpCode.SESSION_SETUP, body=body, request_id=61, major_version=2, minor_version=minor
    )


def test_session_setups_that_cannot_work(node: NodeProcess) -> None:
    from idnode.registry.session_crypto import dh_keypair

    port = node.handle_port
    (r,) = tcp_exchange(port, encode(setup_message(SessionSetupRequest(9, 60, "", -1))))
    assert r.response_code == RC.SESSION_FAILED  # unknown key exchange mode
    toy = encode_public_key(DhPublicKey(5, 23, 2))  # a group too small to protect anything
    (r,) = tcp_exchange(
        port, encode(setup_message(SessionSetupRequest(KeyExchange.DH, 60, "", -1, toy)))
    )
    assert r.response_code == RC.SESSION_FAILED
    # RSA keys the node will not spend a public-key operation on
    n2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    n8192 = (1 << 8191) | 1
    modulus = n2048.public_numbers().n
    for e, n in ((2**100 + 1, modulus), (4, modulus), (65537, n8192)):
        key = encode_public_key(RsaPublicKey(e, n))
        setup = SessionSetupRequest(KeyExchange.CIPHER_CLIENT, 60, "", -1, key)
        (r,) = tcp_exchange(port, encode(setup_message(setup)))
        assert r.response_code == RC.SESSION_FAILED, (e, n.bit_length())
    ok = SessionSetupRequest(KeyExchange.DH, 60, "", -1, dh_keypair()[1])
    (r,) = tcp_exchange(port, encode(setup_message(ok, minor=1)))
    assert r.response_code == RC.INVALID_SESSIONSETUP_REQUEST  # below 2.5
    (r,) = tcp_exchange(port, encode(setup_message(ok)))
    assert r.response_code == RC.SUCCESS and r.session_id


def test_encrypted_sessions(node: NodeProcess) -> None:
    with admin(node, encrypt=True) as a:
        assert a.request(create("88.166.1001/ENC"))[0].response_code == RC.SUCCESS
        # raw: the request and its answer travel encrypted (envelope flag 0x40)
        m = a._message(modify("88.166.1001/ENC", b"https://secret"))
        wire = a._wire(m)
        assert wire[2] & 0x40 and b"https://secret" not in wire
        s = a._socket()
        s.sendall(wire)
        raw = s.recv(65536)
        assert raw[2] & 0x40
        assert a._decrypt(raw) != raw and decode(a._decrypt(raw)).response_code == RC.SUCCESS
    assert url_of(node, "88.166.1001/ENC") == b"https://secret"


def site_key(n: NodeProcess) -> bytes:
    m = exchange_udp(
        "127.0.0.1",
        n.handle_port,
        Message(op_code=OpCode.GET_SITE_INFO, body=HandleOnlyRequest("/"), request_id=3),
    )
    assert isinstance(m.body, SiteInfoResponse)
    key = m.body.site.servers[0].public_key
    assert key, "the site info publishes no public key"
    return key


@pytest.mark.parametrize("suggest", [False, True])
def test_certified_answers_verify_with_the_published_key(node: NodeProcess, suggest: bool) -> None:
    key = site_key(node)
    with admin(node) as a:
        assert a.request(create("88.166.1001/CERT"))[0].response_code == RC.SUCCESS
    q = resolution_request("88.166.1001/CERT", flags=OpFlag.CT | OpFlag.RD, minor_version=5)
    if suggest:  # the ID-SDK's envelope: 2.3, suggesting 2.10 (it checks the 2.8 form)
        q = dataclasses.replace(q, minor_version=3, envelope_flags=2, suggested_minor_version=10)
    wire = encode(q)
    (r,) = tcp_exchange(node.handle_port, wire)
    assert r.response_code == RC.SUCCESS
    cred = decode_credential(r.credential)
    assert cred.type == HS_SIGNED and cred.hash_algorithm == b"SHA1"
    answer = encode(dataclasses.replace(r, credential=b""))
    form = (2, 10) if suggest else (r.major_version, r.minor_version)
    version = (r.major_version, r.minor_version)
    data = signed_prefix(form, version, version, r.session_id, r.request_id, 0) + header_and_body(
        answer
    )
    assert verify(key, data, cred.signature)
    assert not verify(key, data + b"x", cred.signature)


def test_certified_answers_in_a_session_carry_its_mac(node: NodeProcess) -> None:
    with admin(node, certify=True) as a:
        (r,) = a.request(create("88.166.1001/SMAC"))
        assert r.response_code == RC.SUCCESS
        counters = []
        for url in (b"https://a", b"https://b"):
            (r,) = a.request(modify("88.166.1001/SMAC", url))
            cred = decode_credential(r.credential)
            assert cred.type == HS_MAC
            plain = encode(dataclasses.replace(r, credential=b""))
            assert a.session_key is not None
            assert check_session_mac(
                a.session_key,
                header_and_body(plain),
                cred,
                version=(2, 5),
                suggested=(2, 5),
                session_id=r.session_id,
                request_id=r.request_id,
            )
            counters.append(cred.session_counter)
        assert counters[1] > counters[0]  # the server's counter moves on


def test_a_login_authorises_its_tcp_connection_only(node: NodeProcess) -> None:
    with admin(node, session=False) as a:
        assert a.login().response_code == RC.SUCCESS  # LOGIN_ID_SYSTEM, answered once
        for i in range(3):
            assert a.request(create(f"88.166.1001/LOGIN-{i}"))[-1].response_code == RC.SUCCESS
        assert answers(a) == 1  # the writes on this connection were not challenged
        assert a.login().response_code == RC.SUCCESS  # a login proves itself afresh
        assert answers(a) == 2
    with admin(node, session=False) as b:  # another connection: challenged again
        b.request(create("88.166.1001/LOGIN-other"))
        assert answers(b) == 1


def login(user: str, password: str, rid: int = 11) -> bytes:
    return encode(Message(op_code=OpCode.LOGIN, body=LoginRequest(user, password), request_id=rid))


def test_password_login(node: NodeProcess) -> None:
    late = dataclasses.replace(create("88.166.1001/PW"), request_id=12)
    ok, written = tcp_exchange(
        node.handle_port, login("300:0.NA/88.166", SECRET.decode()), encode(late)
    )
    assert ok.response_code == RC.SUCCESS and isinstance(ok.body, ResolutionResponse)
    assert written.response_code == RC.SUCCESS
    refused, challenged = tcp_exchange(
        node.handle_port,
        login("300:0.NA/88.166", "wrong"),
        encode(dataclasses.replace(late, request_id=13)),
    )
    assert refused.response_code == RC.AUTHENTICATION_FAILED
    assert challenged.response_code == RC.AUTHENTICATION_NEEDED
    # over UDP there is no connection for a login to authorise
    m = exchange_udp(
        "127.0.0.1", node.handle_port, decode(login("300:0.NA/88.166", SECRET.decode()))
    )
    assert m.response_code == RC.OPERATION_NOT_SUPPORTED


def test_an_unsigned_request_cannot_authenticate_a_session(node: NodeProcess) -> None:
    """Inside a keyed session a challenge proves the claimed identity only for a request
    made with the session key: an unsigned one is refused, however well its challenge
    is answered, and the session stays anonymous."""
    with admin(node) as a:
        a.open_session()
        unsigned = a._message(create("88.166.1001/UNSIGNED"))
        (chal,) = a.send_raw(encode(unsigned), unsigned.request_id)  # no MAC
        assert chal.response_code == RC.AUTHENTICATION_NEEDED
        assert chal.session_id == a.session_id and chal.request_digest is not None
        assert isinstance(chal.body, Challenge)
        answer = a._message(
            Message(
                op_code=OpCode.CHALLENGE_RESPONSE,
                body=a._answer(chal.body.nonce, chal.request_digest.digest),
            )
        )
        (r,) = a.send_raw(encode(answer), answer.request_id)
        assert r.response_code == RC.INVALID_CREDENTIAL  # "Session request missing MAC code."
        # still anonymous: the next request, MAC'd, is challenged before it is done
        assert answers(a) == 0
        assert a.request(create("88.166.1001/SIGNED"))[0].response_code == RC.SUCCESS
        assert answers(a) == 1
    assert url_of(node, "88.166.1001/UNSIGNED") is None
    assert url_of(node, "88.166.1001/SIGNED") is not None


def exchange_key_message(sid: int, sealed: bytes, rid: int) -> bytes:
    return encode(
        Message(
            op_code=OpCode.SESSION_EXCHANGEKEY,
            body=SessionExchangeKeyRequest(sealed),
            request_id=rid,
            session_id=sid,
            major_version=2,
            minor_version=5,
        )
    )


def cipher_server_session(port: int) -> tuple[int, rsa.RSAPublicKey]:
    setup = setup_message(SessionSetupRequest(KeyExchange.CIPHER_SERVER, 60, "", -1))
    (r,) = tcp_exchange(port, encode(setup))
    assert r.response_code == RC.SUCCESS and isinstance(r.body, SessionSetupResponse)
    return r.session_id, rsa_public_key(r.body.data)


def tcp_from(source: str, port: int, wire: bytes) -> Message:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(wire)
        fb = FrameBuffer()
        while True:
            frames = fb.feed(s.recv(65536))
            if frames:
                return decode(frames[0])


def test_a_session_key_is_delivered_once_by_whoever_set_it_up(node: NodeProcess) -> None:
    """SESSION_EXCHANGEKEY (CIPHER_SERVER): only from the address that set the session
    up, only once, and a key that will not decrypt ends the session."""
    port = node.handle_port
    sid, server = cipher_server_session(port)
    sealed = server.encrypt(struct.pack(">i", 3) + b"K" * 32, padding.PKCS1v15())
    other = tcp_from("127.0.0.2", port, exchange_key_message(sid, sealed, 81))
    assert other.response_code == RC.SESSION_FAILED  # another address
    (r,) = tcp_exchange(port, exchange_key_message(sid, sealed, 82))
    assert r.response_code == RC.SUCCESS
    again = server.encrypt(struct.pack(">i", 3) + b"L" * 32, padding.PKCS1v15())
    (r,) = tcp_exchange(port, exchange_key_message(sid, again, 83))
    assert r.response_code == RC.SESSION_FAILED  # the key is set once
    # A key message that is not a key (an unknown cipher, 5 bytes): refused, and the
    # session is gone. It is sealed with the server's key on purpose: a block that is not
    # a ciphertext of ours is not refused reliably, because OpenSSL's implicit rejection
    # (no padding oracle) decrypts it to a pseudo-random message, which is a key's length
    # for about one server key in sixty (see test_credentials.test_rsa_key_transport).
    sid, server = cipher_server_session(port)
    malformed = server.encrypt(struct.pack(">i", 99) + b"K", padding.PKCS1v15())
    (r,) = tcp_exchange(port, exchange_key_message(sid, malformed, 84))
    assert r.response_code == RC.SESSION_FAILED
    (r,) = tcp_exchange(port, exchange_key_message(sid, sealed, 85))
    assert r.response_code == RC.SESSION_TIMEOUT
    # A block that is no RSA ciphertext at all (not the key's size): refused, session gone
    sid, server = cipher_server_session(port)
    (r,) = tcp_exchange(port, exchange_key_message(sid, b"\x01" * 100, 86))
    assert r.response_code == RC.SESSION_FAILED
    (r,) = tcp_exchange(port, exchange_key_message(sid, sealed, 87))
    assert r.response_code == RC.SESSION_TIMEOUT


def test_a_failing_registry_gets_an_answer_and_the_node_lives_on(tmp_path: Path) -> None:
    """The store fails under a request (here its sessions table is renamed away behind
    the node's back): the client gets RC 2 at once, not silence, and once the table is
    back the same worker serves again."""
    import sqlite3

    db, key, _ = init_registry(tmp_path, "failing", "--admin-secret", SECRET.decode())
    n = NodeProcess(db, log=tmp_path / "failing.log", extra=("--secret-key-file", key))
    n.wait_ready()
    try:
        path = db.removeprefix("sqlite:///")
        encrypted = admin(n, encrypt=True)  # a session opened while the registry works
        assert encrypted.request(create("88.166.1001/ENC-1"))[0].response_code == RC.SUCCESS
        with sqlite3.connect(path) as c:
            c.execute("ALTER TABLE sessions RENAME TO sessions_away")
        with admin(n, session=False) as a:
            (r,) = a.request(create("88.166.1001/FAIL"))
            assert r.response_code == RC.ERROR
        assert "failed" in n.log_text()
        # an encrypted request: its session cannot be read to open it, and it says so
        with encrypted:
            (r,) = encrypted.request(create("88.166.1001/ENC-2"))
            assert r.response_code == RC.ERROR
        assert "could not be opened" in n.log_text()
        with sqlite3.connect(path) as c:
            c.execute("ALTER TABLE sessions_away RENAME TO sessions")
        with admin(n, session=False) as a:
            assert a.request(create("88.166.1001/BACK"))[0].response_code == RC.SUCCESS
    finally:
        assert n.stop() == 0, n.log_text()
