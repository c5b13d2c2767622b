"""Handles as DNS names and back (the DNS gateway's mapping; README "DNS gateway").

``88.166.1001/ABC-123`` is ``ABC-123.1001.166.88.<zone>``: the suffix is the leftmost
label, then the prefix's components reversed, so every prefix is a DNS subtree a parent
zone can delegate (``1001.166.88.<zone>`` is the subtree of prefix ``88.166.1001``).

A label that is not plain is encoded, losslessly:

* plain: letters, digits and hyphens (not first or last), at most 63 octets. DNS
  compares names case-insensitively and resolvers may change the case on the way
  (0x20), so on a case-sensitive node a plain label has no upper-case letter either;
  on a case-insensitive node (the default, as the reference server) the case never
  mattered and a plain label keeps whatever case it has.
* an encoded suffix (dots, slashes, non-ASCII, ``_``, over 63 octets, case that must
  survive, ...): the base32 of its UTF-8 (RFC 4648 alphabet, lower case, no padding)
  cut into labels of at most 63 characters, followed by the marker label ``_b32``:
  ``88.166/a.b`` is ``mexc4yq._b32.166.88.<zone>``. Base32 is case-free, so the
  suffix survives any case change on the way.
* an encoded prefix component: ``_`` and the base32 of its UTF-8 in one label (a
  prefix component is at most 64 characters; one whose encoding is over 63 octets has
  no name). ``_b32`` itself is never one: three base32 characters decode to nothing.

Which labels are the suffix: the ones before ``_b32`` when there is one, else the
leftmost. A name with no room for a prefix (one label under the zone), with a label
that is neither plain nor a valid encoding, or whose encoding does not decode to UTF-8
names no handle (None: the gateway answers NXDOMAIN). A handle whose name would be over
255 octets (the DNS limit, with the zone) has no name (None: it cannot be asked over DNS;
a question can never name it, so it is never answered).
"""

from __future__ import annotations

import base64
import binascii
import re

MARKER = "_b32"  # the label between an encoded suffix and the prefix's components
MAX_LABEL = 63  # octets of one DNS label
MAX_NAME = 255  # octets of a DNS name in wire form (length bytes and the root's 0)
_LDH = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
_LDH_LOWER = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\Z")
_BASE32 = re.compile(r"[a-z2-7]+\Z")

__all__ = [
    "MARKER",
    "handle_to_name",
    "name_to_handle",
    "name_to_prefix",
    "prefix_to_name",
    "zone_labels",
]


def _plain(label: str, case_sensitive: bool) -> bool:
    if len(label) > MAX_LABEL or not label.isascii():
        return False
    return bool((_LDH_LOWER if case_sensitive else _LDH).match(label))


def _component(text: str) -> bool:
    """Whether ``text`` may be one component of a prefix (registry/names.py check_prefix:
    no dot, no "/", not empty)."""
    return bool(text) and "." not in text and "/" not in text


def _b32(text: str) -> str:
    return base64.b32encode(text.encode()).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> str | None:
    """The text a base32 run encodes; None if it is not base32 of UTF-8, or not in the
    one form _b32 writes (so every name maps back to one handle and forth to itself)."""
    if not _BASE32.match(text) or len(text) % 8 in (1, 3, 6):
        return None
    try:
        data = base64.b32decode(text.upper() + "=" * (-len(text) % 8))
        out = data.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return out if _b32(out) == text else None


def zone_labels(zone: str) -> tuple[str, ...]:
    """``"id.internal."`` -> ``("id", "internal")`` (the root zone: ``()``)."""
    return tuple(label for label in zone.strip(".").split(".") if label)


def _wire_length(labels: list[str] | tuple[str, ...]) -> int:
    return sum(len(label.encode()) + 1 for label in labels) + 1


def handle_to_name(handle: str, zone: str, *, case_sensitive: bool = False) -> str | None:
    """The absolute DNS name (ending in ".") of ``prefix/suffix`` under ``zone``; None
    when the handle has no name: no "/", an empty part, or too long for DNS."""
    prefix, slash, suffix = handle.partition("/")
    if not slash or not prefix or not suffix:
        return None
    labels: list[str] = []
    if _plain(suffix, case_sensitive):
        labels.append(suffix)
    else:
        code = _b32(suffix)
        labels.extend(code[i : i + MAX_LABEL] for i in range(0, len(code), MAX_LABEL))
        labels.append(MARKER)
    tail = _prefix_labels(prefix, case_sensitive)
    if tail is None:
        return None
    labels.extend(tail)
    labels.extend(zone_labels(zone))
    if _wire_length(labels) > MAX_NAME:
        return None
    return ".".join(labels) + "."


def _prefix_labels(prefix: str, case_sensitive: bool) -> list[str] | None:
    labels: list[str] = []
    for part in reversed(prefix.split(".")):
        if not _component(part):
            return None  # "88..166": DNS has no empty label
        if _plain(part, case_sensitive):
            labels.append(part)
        else:
            code = "_" + _b32(part)
            if len(code) > MAX_LABEL:
                return None
            labels.append(code)
    return labels


def prefix_to_name(prefix: str, zone: str, *, case_sensitive: bool = False) -> str | None:
    """The DNS subtree of a prefix: ``88.166.1001`` is ``1001.166.88.<zone>`` (None when
    it has no name). A parent zone delegates the prefix by NS records at this name."""
    labels = _prefix_labels(prefix, case_sensitive)
    if labels is None:
        return None
    labels.extend(zone_labels(zone))
    return ".".join(labels) + "." if _wire_length(labels) <= MAX_NAME else None


def _under(name: str, zone: str) -> list[str] | None:
    """The labels of ``name`` above ``zone`` (None: outside it, or an empty label)."""
    text = name[:-1] if name.endswith(".") else name
    labels = text.split(".") if text else []
    if "" in labels:
        return None  # an empty label: no DNS name has one
    tail = zone_labels(zone)
    n = len(labels) - len(tail)
    if n < 0 or [x.lower() for x in labels[n:]] != [x.lower() for x in tail]:
        return None
    return labels[:n]


def name_to_prefix(name: str, zone: str, *, case_sensitive: bool = False) -> str | None:
    """The prefix whose subtree ``name`` is the top of (``1001.166.88.<zone>`` ->
    ``88.166.1001``); None for the zone itself and names no prefix has."""
    own = _under(name, zone)
    if not own:
        return None
    return _components(own, case_sensitive)


def _components(parts: list[str], case_sensitive: bool) -> str | None:
    components: list[str] = []
    for label in reversed(parts):
        if label.startswith("_"):
            part = _unb32(label[1:].lower())
            if part is None or _plain(part, case_sensitive) or not _component(part):
                return None
            components.append(part)
        elif _plain(label, case_sensitive=False):
            components.append(label.lower() if case_sensitive else label)
        else:
            return None
    return ".".join(components)


def name_to_handle(name: str, zone: str, *, case_sensitive: bool = False) -> str | None:
    """The handle a DNS name under ``zone`` names (presentation form, with or without
    the final "."); None when it names none (outside the zone, the zone itself, or not
    a name :func:`handle_to_name` writes)."""
    own = _under(name, zone)
    if own is None or len(own) < 2:
        return None
    lowered = [x.lower() for x in own]
    if MARKER in lowered:
        at = lowered.index(MARKER)
        chunks, parts = lowered[:at], own[at + 1 :]
        # Only the cut handle_to_name makes: full labels, then the rest.
        if not chunks or any(len(c) != MAX_LABEL for c in chunks[:-1]):
            return None
        if not 0 < len(chunks[-1]) <= MAX_LABEL:
            return None
        decoded = _unb32("".join(chunks))
        if decoded is None or _plain(decoded, case_sensitive):
            return None  # a plain suffix is written plain: one handle, one name
        suffix = decoded
    else:
        suffix, parts = own[0], own[1:]
        if not _plain(suffix, case_sensitive=False):
            return None
        if case_sensitive:
            suffix = suffix.lower()  # resolvers may have changed its case (0x20)
    if not parts:
        return None
    prefix = _components(parts, case_sensitive)
    return None if prefix is None else prefix + "/" + suffix
