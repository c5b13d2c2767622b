"""Handle and prefix names: normalisation and which prefix a handle belongs to.

The reference server is case-insensitive over the whole handle by default, and
upper-cases ASCII letters only; so do we, unless configured case-sensitive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from idnode.errors import RegistryError

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
NA_PREFIX = "0.NA/"
MAX_HANDLE_CHARS = 255  # the management API's limit (the wire allows 2048 bytes)
MAX_PREFIX_CHARS = 64


class InvalidName(RegistryError, ValueError):
    pass


def normalize(handle: str, case_sensitive: bool = False) -> str:
    if case_sensitive:
        return handle
    # str.upper() is several times faster than translate(), and the same for ASCII.
    return handle.upper() if handle.isascii() else handle.translate(_UPPER)


def is_prefix_handle(handle: str) -> bool:
    """Is ``handle`` a prefix handle ``0.NA/<prefix>`` (in any case)?"""
    return handle[:5].upper() == NA_PREFIX.upper()


def prefix_of(handle: str) -> str:
    """The prefix of ``prefix/suffix``; for ``0.NA/<p>`` handles, the prefix they describe.

    A handle without a slash is its own prefix (it names a naming authority).
    """
    if is_prefix_handle(handle):
        return handle[5:]
    slash = handle.find("/")
    return handle if slash < 0 else handle[:slash]


def storage_prefix(handle: str) -> str:
    """The prefix a handle is stored, listed and counted under: the text before its
    first "/". A prefix handle ``0.NA/88.166.1001`` is stored under ``0.NA``, so it is
    never listed or counted as one of ``88.166.1001``'s identifiers."""
    slash = handle.find("/")
    return handle if slash < 0 else handle[:slash]


def key_range(prefix_key: str) -> tuple[str, str]:
    """The primary-key range holding exactly the handles of a prefix: in byte order
    every "P/..." sorts at or after "P/" and before "P0" ("0" follows "/")."""
    return prefix_key + "/", prefix_key + "0"


def check_handle(handle: str) -> None:
    """Reject names no client should register: empty parts, over-long, control characters."""
    if not handle or len(handle) > MAX_HANDLE_CHARS:
        raise InvalidName(f"a handle must be 1 to {MAX_HANDLE_CHARS} characters")
    prefix, slash, suffix = handle.partition("/")
    if not slash or not prefix or not suffix:
        raise InvalidName(f"{handle!r} is not of the form prefix/suffix")
    if len(prefix) > MAX_PREFIX_CHARS:
        raise InvalidName(f"prefix {prefix!r} is longer than {MAX_PREFIX_CHARS} characters")
    if _CONTROL.search(handle):
        raise InvalidName(f"{handle!r} contains control characters")


_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")


def check_prefix(prefix: str) -> None:
    """A prefix to home: dot-separated parts like 88.166, no "/", spaces or control
    characters (no client could name a handle under it unquoted)."""
    parts = prefix.split(".")
    if (
        not prefix
        or len(prefix) > MAX_PREFIX_CHARS
        or "/" in prefix
        or not all(parts)
        or _SPACE.search(prefix)
    ):
        raise InvalidName(
            f"prefix {prefix!r} must be dot-separated parts like 88.166, at most "
            f"{MAX_PREFIX_CHARS} characters, without '/', spaces or control characters"
        )


class PrefixAuthority:
    """Which prefixes this node serves: a homed prefix covers itself and its derived prefixes."""

    def __init__(self, homed: Iterable[str] = (), case_sensitive: bool = False) -> None:
        self.case_sensitive = case_sensitive
        self._homed = {normalize(p, case_sensitive) for p in homed}

    def replace(self, homed: Iterable[str]) -> None:
        self._homed = {normalize(p, self.case_sensitive) for p in homed}

    @property
    def homed(self) -> frozenset[str]:
        return frozenset(self._homed)

    def is_homed(self, prefix: str) -> bool:
        p = normalize(prefix, self.case_sensitive)
        while True:
            if p in self._homed:
                return True
            dot = p.rfind(".")
            if dot < 0:
                return False
            p = p[:dot]

    def serves(self, handle: str) -> bool:
        return self.is_homed(prefix_of(handle))
