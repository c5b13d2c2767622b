"""TCP framing: whole messages out of a byte stream, however it is cut."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idnode.resolver.codec import FrameBuffer, ProtocolError
from tests.vectors import vector

REQ = vector("resolution request, all values")
SITE = vector("get-site-info request")


@given(st.lists(st.integers(1, 60), min_size=1, max_size=20))
def test_any_cut_of_a_pipelined_stream(cuts: list[int]) -> None:
    stream = REQ + SITE + REQ
    fb = FrameBuffer()
    out: list[bytes] = []
    pos = 0
    for c in cuts:
        out += fb.feed(stream[pos : pos + c])
        pos += c
    out += fb.feed(stream[pos:])
    assert out == [REQ, SITE, REQ]
    assert len(fb) == 0


def test_an_oversized_length_is_refused_before_buffering() -> None:
    fb = FrameBuffer()
    with pytest.raises(ProtocolError, match="over the limit"):
        fb.feed(struct.pack(">BBBBIIII", 2, 1, 0, 0, 0, 1, 0, 2**31))
