"""The DNS gateway's mapping (resolver/codec/dns_names.py): one name per handle and back,
whatever the suffix holds, and a refusal (None) for what DNS cannot carry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idnode.resolver.codec.dns_names import (
    MAX_NAME,
    handle_to_name,
    name_to_handle,
    name_to_prefix,
    prefix_to_name,
)

ZONE = "id.internal."

# Prefix components as check_prefix admits them: no dot, "/", space or control character.
components = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs"), blacklist_characters="./ \t\n"),
    min_size=1,
    max_size=12,
)
prefixes = st.lists(components, min_size=1, max_size=4).map(".".join)
suffixes = st.text(st.characters(codec="utf-8"), min_size=1, max_size=200)
handles = st.builds(lambda p, s: f"{p}/{s}", prefixes, suffixes)


def wire_length(name: str) -> int:
    return sum(len(label) + 1 for label in name.rstrip(".").split(".")) + 1


@given(handles, st.booleans())
def test_round_trip(handle: str, case_sensitive: bool) -> None:
    name = handle_to_name(handle, ZONE, case_sensitive=case_sensitive)
    if name is None:  # only what DNS cannot carry has no name: a short handle has one
        assert len(handle.encode()) > 36
        return
    assert wire_length(name) <= MAX_NAME
    assert all(0 < len(label) <= 63 for label in name.rstrip(".").split("."))
    assert name.endswith("." + ZONE)
    assert name_to_handle(name, ZONE, case_sensitive=case_sensitive) == handle


@given(handles)
def test_a_case_changed_name_names_the_same_handle(handle: str) -> None:
    """Resolvers may change a question's case (0x20): a case-sensitive node's names
    survive it exactly; a case-insensitive node's, up to the case it ignores."""
    name = handle_to_name(handle, ZONE, case_sensitive=True)
    if name is not None:
        for mangled in (name.upper(), name.swapcase()):
            assert name_to_handle(mangled, ZONE, case_sensitive=True) == handle
    name = handle_to_name(handle, ZONE)
    if name is not None:
        back = name_to_handle(name.upper(), ZONE)
        assert back is not None and back.upper() == handle.upper()


@given(st.text(min_size=1, max_size=80))
def test_any_name_maps_to_one_handle_or_none(label: str) -> None:
    """Arbitrary names never raise, and a name that maps to a handle is that handle's."""
    for name in (f"{label}.166.88.{ZONE}", f"{label}._b32.88.{ZONE}", f"x._{label}.{ZONE}"):
        for cs in (False, True):
            handle = name_to_handle(name, ZONE, case_sensitive=cs)
            if handle is not None:
                again = handle_to_name(handle, ZONE, case_sensitive=cs)
                assert again is not None and again.lower() == name.lower()


def test_examples() -> None:
    assert handle_to_name("88.166.1001/ABC-123", ZONE) == "ABC-123.1001.166.88.id.internal."
    assert name_to_handle("abc-123.1001.166.88.id.internal", ZONE) == "88.166.1001/abc-123"
    # a case-sensitive node: upper case must survive, so it is encoded
    assert handle_to_name("88.166/ABC", ZONE, case_sensitive=True) == (
        "ifbeg._b32.166.88.id.internal."
    )
    assert handle_to_name("88.166/abc", ZONE, case_sensitive=True) == "abc.166.88.id.internal."
    assert handle_to_name("88.166/a.b", ZONE) == "mexge._b32.166.88.id.internal."
    assert handle_to_name("0.NA/88.166", ZONE) == "ha4c4mjwgy._b32.NA.0.id.internal."


def test_long_suffixes_span_labels_and_too_long_ones_have_no_name() -> None:
    long = "88.166/" + "x" * 120  # 192 base32 characters: four labels
    name = handle_to_name(long, ZONE)
    assert name is not None and name.count(".") == 4 + 1 + 2 + 2
    assert name_to_handle(name, ZONE) == long
    assert handle_to_name("88.166/" + "x" * 150, ZONE) is None  # over 255 octets
    # ... the limit is the whole name's: a longer zone leaves less room
    assert handle_to_name(long, "a" * 60 + ".example.") is None


@pytest.mark.parametrize(
    "name",
    [
        "id.internal.",  # the zone itself
        "88.id.internal.",  # no room for a prefix
        "abc.166.88.example.",  # outside the zone
        "a_b.166.88.id.internal.",  # neither plain nor encoded
        "ifbeg!._b32.166.88.id.internal.",
        "mfrgg._b32.166.88.id.internal.",  # "abc" encoded: plain suffixes are written plain
        "_b32.166.88.id.internal.",  # a marker with no suffix before it
        "x._mfrgg.id.internal.",  # an encoded component that is plain
        "x._mexge.id.internal.",  # an encoded component with a dot
        "x..88.id.internal.",  # an empty label
        "aaa._b32.88.id.internal.",  # base32 of no whole byte
    ],
)
def test_names_of_no_handle(name: str) -> None:
    assert name_to_handle(name, ZONE) is None


def test_handles_of_no_name() -> None:
    for handle in ("88.166", "88.166/", "/x", "88..166/x", "88." + "é" * 40 + "/x"):
        assert handle_to_name(handle, ZONE) is None


@given(prefixes, st.booleans())
def test_prefix_subtrees(prefix: str, case_sensitive: bool) -> None:
    name = prefix_to_name(prefix, ZONE, case_sensitive=case_sensitive)
    if name is None:
        return
    assert name_to_prefix(name, ZONE, case_sensitive=case_sensitive) == prefix
    handle = handle_to_name(f"{prefix}/x", ZONE, case_sensitive=case_sensitive)
    assert handle is not None and handle == "x." + name  # the handles are in the subtree


def test_prefix_examples() -> None:
    assert prefix_to_name("88.166.1001", ZONE) == "1001.166.88.id.internal."
    assert name_to_prefix("1001.166.88.id.internal.", ZONE) == "88.166.1001"
    assert name_to_prefix("id.internal.", ZONE) is None
    assert name_to_prefix("x.example.", ZONE) is None
