"""Responses as the reference server shapes them: the request's version, AT added, RD only
with a digest; and the type-filter rule values follow."""

from __future__ import annotations

import pytest

from idnode.resolver.codec import (
    ErrorResponse,
    HandleValue,
    HashType,
    Message,
    OpFlag,
    ProtocolError,
    ResolutionRequest,
    ResponseCode,
    decode,
    digest_request,
    encode,
    response_to,
)
from tests.vectors import vector


def test_answer_in_the_request_version_with_at_added() -> None:
    # The IDIS SDK's envelope: version 2.3, suggesting 2.10.
    idis = (
        bytes.fromhex("0203020a")
        + encode(Message(op_code=1, body=ResolutionRequest("88.166.1/x"), request_id=5))[4:]
    )
    req = decode(idis)
    assert (
        req.major_version,
        req.minor_version,
        req.envelope_flags & 3,
        req.suggested_minor_version,
    ) == (2, 3, 2, 10)
    res = decode(
        encode(
            response_to(req, ResponseCode.HANDLE_NOT_FOUND, ErrorResponse(""), site_info_serial=1)
        )
    )
    assert (res.major_version, res.minor_version, res.request_id) == (2, 3, 5)
    assert res.has(OpFlag.AT) and not res.has(OpFlag.RD) and res.site_info_serial == 1


def test_reference_flags_on_a_java_client_request() -> None:
    req = decode(vector("resolution request, all values"))
    res = response_to(req, ResponseCode.SUCCESS, ErrorResponse())
    assert res.op_flags == 0x99000000  # what the reference server answers


@pytest.mark.parametrize(
    ("minor", "hash_type", "size"),
    [
        (0, HashType.OLD_MD5, 20),
        (1, HashType.SHA1, 21),
        (6, HashType.SHA1, 21),
        (7, HashType.SHA256, 33),
        (11, HashType.SHA256, 33),
    ],
)
def test_rd_carries_the_digest_for_the_request_version(
    minor: int, hash_type: HashType, size: int
) -> None:
    wire = encode(
        Message(op_code=1, body=ResolutionRequest("a/b"), op_flags=OpFlag.RD, minor_version=minor)
    )
    req = decode(wire)
    digest = digest_request(wire)
    assert digest.hash_type == hash_type
    res_wire = encode(
        response_to(req, ResponseCode.HANDLE_NOT_FOUND, ErrorResponse(""), request_digest=digest)
    )
    res = decode(res_wire)
    assert res.has(OpFlag.RD) and res.request_digest == digest
    assert len(res_wire) == 44 + size + 4 + 4  # digest + empty message + empty credential


def test_rd_without_a_digest_is_refused_on_encode() -> None:
    m = Message(op_code=1, body=ErrorResponse(""), response_code=2, op_flags=OpFlag.RD)
    with pytest.raises(ProtocolError, match="no request digest"):
        encode(m)


@pytest.mark.parametrize(
    ("vtype", "wanted", "match"),
    [
        ("URL", "URL", True),
        ("URL.1", "URL.", True),
        ("URL", "URL.", True),
        ("URLX", "URL.", False),
        ("URL.1", "URL", False),
        ("EMAIL", "URL", False),
    ],
)
def test_type_filter_rule(vtype: str, wanted: str, match: bool) -> None:
    assert HandleValue(1, vtype, b"").type_matches(wanted) is match
