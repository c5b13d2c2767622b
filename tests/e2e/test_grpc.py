"""The gRPC API against a real `idnode serve`: a client generated from protos/ calls every
RPC; health and reflection (v1 and v1alpha) answer; Handle codes map to gRPC status codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from idnode.resolver.grpc_protos import load
from tests.e2e.node_process import IDNODE, NodeProcess, admin_node
from tests.unit.test_templates import DOC

pytestmark = pytest.mark.e2e
pb2, pb2_grpc = load()
RESOLVER, REGISTRY, HEALTH = "idnode.v1.Resolver", "idnode.v1.Registry", "grpc.health.v1.Health"
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"


@pytest.fixture
def node(tmp_path: Path, redis_url: str, redis_namespace: str) -> Iterator[NodeProcess]:
    yield from admin_node(tmp_path, "g", "s", redis_url, redis_namespace)


def channel(node: NodeProcess) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}")


def api_key(node: NodeProcess, admin: str = "300:0.NA/88.166") -> str:
    p = subprocess.run(
        [IDNODE, "apikey", "create", "--admin", admin, "--database-url", node.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def code_of(err: grpc.RpcError) -> int:
    meta = dict(err.trailing_metadata() or ())
    return int(str(meta["idnode-handle-code"]))


def value(index: int, vtype: str, data: bytes) -> Any:
    return pb2.HandleValue(index=index, type=vtype, data=data)


def test_every_registry_and_resolver_rpc(node: NodeProcess) -> None:
    key = api_key(node)
    auth = (("authorization", f"Bearer {key}"),)
    with channel(node) as ch:
        reg, res = pb2_grpc.RegistryStub(ch), pb2_grpc.ResolverStub(ch)
        h = "88.166/G-1"
        made = reg.CreateHandle(
            pb2.CreateHandleRequest(
                record=pb2.HandleRecord(handle=h, values=[value(1, "URL", b"https://g")])
            ),
            metadata=auth,
        )
        assert made.handle == h
        with pytest.raises(grpc.RpcError) as err:
            reg.CreateHandle(
                pb2.CreateHandleRequest(
                    record=pb2.HandleRecord(handle=h, values=[value(1, "URL", b"x")])
                ),
                metadata=auth,
            )
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS and code_of(err.value) == 101
        reg.AddValues(
            pb2.ValuesRequest(handle=h, values=[value(2, "EMAIL", b"a@b.c")]), metadata=auth
        )
        reg.ModifyValues(
            pb2.ValuesRequest(handle=h, values=[value(1, "URL", b"https://g2")]), metadata=auth
        )
        got = res.Resolve(pb2.ResolveRequest(handle=h))
        assert [(v.index, v.data) for v in got.values] == [(1, b"https://g2"), (2, b"a@b.c")]
        got = res.Resolve(pb2.ResolveRequest(handle=h, types=["EMAIL"]))
        assert [v.index for v in got.values] == [2]
        reg.RemoveValues(pb2.RemoveValuesRequest(handle=h, indexes=[2]), metadata=auth)
        assert [v.index for v in res.Resolve(pb2.ResolveRequest(handle=h)).values] == [1]

        batch = reg.BatchCreate(
            pb2.BatchCreateRequest(
                records=[
                    pb2.HandleRecord(handle=f"88.166/GB-{i}", values=[value(1, "URL", b"u")])
                    for i in range(3)
                ]
                + [pb2.HandleRecord(handle="99.1/x")]
            ),
            metadata=auth,
        )
        assert [i.status.handle_code for i in batch.items] == [1, 1, 1, 301]
        listed = reg.ListHandles(
            pb2.ListHandlesRequest(prefix="88.166", page_size=2), metadata=auth
        )
        assert listed.total == 4 and len(listed.handles) == 2
        reg.PutTemplate(
            pb2.PutTemplateRequest(document_json=json.dumps({**DOC, "prefix": "88.166"})),
            metadata=auth,
        )
        assert list(reg.ListPrefixes(pb2.Empty()).prefixes) == ["88.166"]

        out = res.BatchResolve(
            pb2.BatchResolveRequest(
                requests=[
                    pb2.ResolveRequest(handle=h),
                    pb2.ResolveRequest(handle="88.166/none"),
                    pb2.ResolveRequest(handle="99.9/x"),
                ]
            )
        )
        assert [r.status.handle_code for r in out.responses] == [1, 100, 301]
        assert out.responses[0].values[0].data == b"https://g2"
        stream = res.ResolveStream(
            iter([pb2.ResolveRequest(handle=f"88.166/GB-{i}") for i in range(3)])
        )
        assert [r.status.handle_code for r in stream] == [1, 1, 1]

        reg.DeleteHandle(pb2.DeleteHandleRequest(handle=h), metadata=auth)
        with pytest.raises(grpc.RpcError) as err:
            res.Resolve(pb2.ResolveRequest(handle=h))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and code_of(err.value) == 100


def test_status_codes_and_authentication(node: NodeProcess, tmp_path: Path) -> None:
    # The outsider: a real admin of another prefix (apikey create refuses unknown admins).
    p = subprocess.run(
        [
            IDNODE,
            "init",
            "--prefix",
            "88.999",
            "--admin-secret",
            "o",
            "--database-url",
            node.database_url,
            "--secret-key-file",
            str(tmp_path / "g.key"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    with channel(node) as ch:
        reg, res = pb2_grpc.RegistryStub(ch), pb2_grpc.ResolverStub(ch)
        create = pb2.CreateHandleRequest(record=pb2.HandleRecord(handle="88.166/A-1"))
        for meta in ((), (("authorization", "Bearer not-a-key"),)):
            with pytest.raises(grpc.RpcError) as err:
                reg.CreateHandle(create, metadata=meta)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        outsider = api_key(node, "300:0.NA/88.999")  # a key with no admin rights here
        with pytest.raises(grpc.RpcError) as err:
            reg.CreateHandle(create, metadata=(("authorization", f"Bearer {outsider}"),))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and code_of(err.value) == 401
        with pytest.raises(grpc.RpcError) as err:
            res.Resolve(pb2.ResolveRequest(handle="99.9/x"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and code_of(err.value) == 301
        with pytest.raises(grpc.RpcError) as err:
            res.BatchResolve(
                pb2.BatchResolveRequest(requests=[pb2.ResolveRequest(handle="88.166/x")] * 10_001)
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_and_reflection(node: NodeProcess) -> None:
    with channel(node) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "idnode.v1.Resolver", "idnode.v1.Registry"):
            got = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert got.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
        assert {RESOLVER, REGISTRY, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA} <= names


def reflect_v1(ch: grpc.Channel, *requests: Any) -> list[Any]:
    """One grpc.reflection.v1 ServerReflectionInfo stream, as grpcurl and Postman open it.

    grpcio-reflection ships no v1 module, only the v1alpha one, whose messages are v1's under
    another package name (same fields and numbers): its generated classes write the bytes a
    v1 client sends and read the v1 answers. test_reflection_v1 checks that equivalence."""
    info = ch.stream_stream(
        f"/{REFLECTION_V1}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(info(iter(requests), timeout=30))


def files_for(answer: Any) -> list[descriptor_pb2.FileDescriptorProto]:
    assert answer.WhichOneof("message_response") == "file_descriptor_response", answer
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answer.file_descriptor_response.file_descriptor_proto
    ]


def shape(f: descriptor_pb2.FileDescriptorProto) -> list[tuple[Any, ...]]:
    """What decides the wire format of a file's messages and methods, package left out."""

    def local(type_name: str) -> str:
        return type_name.removeprefix(f".{f.package}.")

    out: list[tuple[Any, ...]] = []
    for m in f.message_type:
        out.append((m.name, [o.name for o in m.oneof_decl]))
        out += [
            (m.name, x.name, x.number, x.label, x.type, local(x.type_name), x.oneof_index)
            for x in m.field
        ]
    for s in f.service:
        for x in s.method:
            streaming = (x.client_streaming, x.server_streaming)
            out.append((s.name, x.name, local(x.input_type), local(x.output_type), *streaming))
    return out


def test_reflection_v1(node: NodeProcess) -> None:
    request = reflection_pb2.ServerReflectionRequest
    with channel(node) as ch:
        listed = reflect_v1(ch, request(list_services=""))
        names = {s.name for a in listed for s in a.list_services_response.service}
        assert {RESOLVER, REGISTRY, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA} <= names

        # The handles file first, then its dependencies (none today).
        (answer,) = reflect_v1(ch, request(file_containing_symbol=RESOLVER))
        handles = files_for(answer)[0]
        assert handles.name == "idnode/v1/handles.proto" and handles.package == "idnode.v1"
        assert {"Resolver", "Registry"} <= {s.name for s in handles.service}

        # grpcurl describe and Postman fetch the file of every listed service: none may fail.
        answers = reflect_v1(ch, *(request(file_containing_symbol=n) for n in sorted(names)))
        for name, answer in zip(sorted(names), answers, strict=True):
            package, service = name.rsplit(".", 1)
            assert any(
                f.package == package and service in {s.name for s in f.service}
                for f in files_for(answer)
            ), name

        # The v1 file served is v1alpha's under another package, as upstream's is: the same
        # wire format, so clients building v1 classes from it and reflect_v1 agree.
        (answer,) = reflect_v1(ch, request(file_containing_symbol=REFLECTION_V1))
        v1 = files_for(answer)[0]
        alpha = descriptor_pb2.FileDescriptorProto()
        reflection_pb2.DESCRIPTOR.CopyToProto(alpha)
        assert (v1.name, v1.package) == (
            "grpc/reflection/v1/reflection.proto",
            "grpc.reflection.v1",
        )
        assert v1.options.java_package == "io.grpc.reflection.v1"
        assert shape(v1) == shape(alpha) and len(shape(v1)) > 8

        (missing,) = reflect_v1(ch, request(file_containing_symbol="idnode.v1.Nowhere"))
        assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
        assert missing.original_request.file_containing_symbol == "idnode.v1.Nowhere"


def test_grpc_over_tls(tmp_path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    db = f"sqlite:///{tmp_path}/tls.db"
    assert (
        subprocess.run(
            [
                IDNODE,
                "init",
                "--prefix",
                "88.166",
                "--database-url",
                db,
                "--secret-key-file",
                str(tmp_path / "k"),
            ],
            capture_output=True,
            timeout=60,
            check=False,
        ).returncode
        == 0
    )
    n = NodeProcess(
        db,
        log=tmp_path / "tls.log",
        extra=(
            "--secret-key-file",
            str(tmp_path / "k"),
            "--grpc-tls-cert",
            str(tmp_path / "c.pem"),
            "--grpc-tls-key",
            str(tmp_path / "k.pem"),
        ),
    )
    try:
        n.wait_ready()
        creds = grpc.ssl_channel_credentials(root_certificates=cert_pem)
        with grpc.secure_channel(f"localhost:{n.grpc_port}", creds) as ch:
            with pytest.raises(grpc.RpcError) as err:
                pb2_grpc.ResolverStub(ch).Resolve(
                    pb2.ResolveRequest(handle="88.166/none"), timeout=10
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND  # answered over TLS
    finally:
        assert n.stop() == 0, n.log_text()
