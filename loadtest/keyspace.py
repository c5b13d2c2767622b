"""The load-test key space: N identifiers, generated from an index, never stored.

The same index gives the same identifier and values on every machine. Identifiers
spread over ``ENTERPRISES`` enterprise prefixes under the node's prefix, with the
skew real registries show (a few enterprises register most identifiers), and a few
suffix shapes seen in the field (serial numbers, dated batches, alphanumeric codes).

``Permutation`` is a keyed bijection of [0, N) (a Feistel network with cycle-walking):
workloads draw popularity *ranks* and map them through it, so the popular identifiers
are scattered over the key space and over the enterprises instead of being the first N.
"""

from __future__ import annotations

from idnode.resolver.codec import HandleValue, encode_values

NODE_PREFIX = "88.166"
ENTERPRISES = 1200  # about the number of enterprises per secondary node
MAX_N = 1_500_000_000 * 4  # room above the Chongqing target
_M64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class Permutation:
    """A keyed bijection of [0, n): a balanced Feistel network with cycle-walking."""

    def __init__(self, n: int, key: int = 0x1D0DE) -> None:
        if not 0 < n <= MAX_N:
            raise ValueError(f"key space size must be 1..{MAX_N}")
        self.n = n
        self.key = key
        bits = max(2, (n - 1).bit_length())
        self._half = (bits + 1) // 2
        self._mask = (1 << self._half) - 1

    def _round(self, x: int) -> int:
        half, mask = self._half, self._mask
        left, right = x >> half, x & mask
        for r in range(4):
            left, right = right, left ^ (mix64(right ^ (self.key * (r + 1))) & mask)
        return (left << half) | right

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise ValueError(f"index {i} outside [0, {self.n})")
        x = self._round(i)
        while x >= self.n:  # cycle-walk back into [0, n): still a bijection
            x = self._round(x)
        return x


def enterprise_of(i: int) -> int:
    """Enterprise 0..ENTERPRISES-1 for identifier i, skewed: low numbers register most."""
    u = mix64(i ^ 0xE17E) / 2**64
    return int(ENTERPRISES * u * u * u)


def prefix_of_enterprise(e: int) -> str:
    return f"{NODE_PREFIX}.{1001 + e}"


def handle(i: int) -> str:
    """The identifier with index i."""
    prefix = prefix_of_enterprise(enterprise_of(i))
    shape = mix64(i ^ 0x5AFE) % 4
    if shape == 0:
        suffix = f"SN{i:012d}"
    elif shape == 1:
        suffix = f"{20200101 + (i // 100_000) % 70000:08d}-{i % 100_000:05d}"
    elif shape == 2:
        suffix = f"{mix64(i):016X}"[:12]
        suffix = f"P{suffix}-{i % 97:02d}"
    else:
        suffix = f"ID.{i}"
    return f"{prefix}/{suffix}"


def unregistered(j: int) -> str:
    """Identifiers never registered (for miss traffic): same prefixes, another suffix."""
    return f"{prefix_of_enterprise(enterprise_of(j))}/NX{j:012d}"


def values(i: int) -> list[HandleValue]:
    t = 1_700_000_000 + (i % 86_400_000)
    return [
        HandleValue(1, "URL", f"https://pim.example.cn/{i}".encode(), timestamp=t),
        HandleValue(1001, "TEMPLATE", b"tpl-v1", timestamp=t),
        HandleValue(2001, "productName", f"液压阀 HV-{i % 1000:03d}".encode(), timestamp=t),
    ]


def record(i: int) -> tuple[str, bytes]:
    return handle(i), encode_values(values(i))
