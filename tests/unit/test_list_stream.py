"""LIST_HANDLES answers stream in several messages, CN set on all but the last."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from idnode.resolver.codec import (
    ListHandlesRequest,
    ListResponse,
    Message,
    OpCode,
    OpFlag,
    decode,
    encode,
    list_responses,
)
from idnode.resolver.codec.digest import digest_request

REQUEST = Message(
    op_code=OpCode.LIST_HANDLES,
    body=ListHandlesRequest("0.NA/88.166.1001"),
    op_flags=OpFlag.REC,
    request_id=42,
    session_id=9,
    minor_version=5,
)


@given(st.lists(st.text(min_size=1, max_size=30), max_size=300), st.integers(64, 2000))
def test_stream_carries_every_handle_in_order(handles: list[str], max_body: int) -> None:
    msgs = list_responses(REQUEST, handles, max_body=max_body)
    decoded = [decode(encode(m)) for m in msgs]
    got = [h for m in decoded for h in m.body.handles]  # type: ignore[union-attr]
    assert got == handles
    assert all(isinstance(m.body, ListResponse) for m in decoded)
    assert [m.has(OpFlag.CN) for m in decoded] == [True] * (len(msgs) - 1) + [False]
    assert {(m.request_id, m.session_id, m.minor_version) for m in decoded} == {(42, 9, 5)}
    for m in msgs[:-1]:
        assert isinstance(m.body, ListResponse)
        # A handle longer than max_body cannot be split: it travels alone.
        size = sum(4 + len(h.encode()) for h in m.body.handles) + 4
        assert size <= max_body or len(m.body.handles) == 1


def test_an_empty_list_is_one_message() -> None:
    (m,) = list_responses(REQUEST, [])
    assert m.body == ListResponse(()) and not m.has(OpFlag.CN)


def test_every_message_of_a_stream_carries_the_request_digest() -> None:
    """A client that asked for the digest (RD) checks it on each message it reads."""
    request = replace(REQUEST, op_flags=OpFlag.REC | OpFlag.RD)
    digest = digest_request(encode(request))
    msgs = list_responses(
        request, [f"88.166.1001/{i:04}" for i in range(200)], max_body=512, request_digest=digest
    )
    decoded = [decode(encode(m)) for m in msgs]
    assert len(decoded) > 1
    assert all(m.request_digest == digest and m.has(OpFlag.RD) for m in decoded)
