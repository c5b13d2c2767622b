"""Which identifiers a load asks for: Zipfian popularity (YCSB's constant 0.99,
scrambled through the key space's permutation), uniform, or a hot set; a chosen share
of identifiers that were never registered; and YCSB A/B/C read/update mixes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from .keyspace import Permutation, handle, unregistered

YCSB_MIXES = {"A": 0.5, "B": 0.05, "C": 0.0}  # share of updates; the rest are reads
# Identifiers kept by rank: the permutation and the name cost ~12-17 µs a draw, and a
# run draws millions (a closed UDP point: 2.9M, ~50 s of one core before it measured);
# a popular rank is drawn many times. Bounded: a 10M-key uniform draw keeps at most this.
MEMO_MAX = 2_000_000


class Zipfian:
    """YCSB's Zipfian generator over [0, n) with constant theta (Gray et al.)."""

    def __init__(self, n: int, theta: float = 0.99, rng: random.Random | None = None) -> None:
        self.n, self.theta = n, theta
        self.rng = rng or random.Random(42)
        self.zeta2 = self._zeta(2)
        self.zetan = self._zeta_approx(n)
        self.alpha = 1.0 / (1.0 - theta)
        self.eta = (1 - (2.0 / n) ** (1 - theta)) / (1 - self.zeta2 / self.zetan)

    def _zeta(self, n: int) -> float:
        return float(sum(1.0 / (i**self.theta) for i in range(1, n + 1)))

    def _zeta_approx(self, n: int) -> float:
        # exact up to a million terms; beyond, the Euler-Maclaurin tail (error < 1e-9)
        if n <= 1_000_000:
            return self._zeta(n)
        head = self._zeta(1_000_000)
        s = 1 - self.theta
        tail = ((n**s) - (1_000_000**s)) / s + 0.5 * (n**-self.theta - 1_000_000**-self.theta)
        return float(head + tail)

    def __call__(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0:
            return 0
        if uz < 1.0 + 0.5**self.theta:
            return 1
        return min(self.n - 1, int(self.n * ((self.eta * u - self.eta + 1) ** self.alpha)))


@dataclass
class Workload:
    """Draws (operation, identifier) pairs; deterministic for a seed."""

    n: int  # registered identifiers: indexes 0..n-1
    distribution: str = "zipfian"  # zipfian | uniform | hotset
    miss_share: float = 0.0  # share of lookups for identifiers never registered
    mix: str = "C"  # YCSB A (50% updates), B (5%), C (reads only)
    hot_fraction: float = 0.01
    hot_share: float = 0.9
    seed: int = 1

    def __post_init__(self) -> None:
        if self.distribution not in ("zipfian", "uniform", "hotset"):
            raise ValueError(f"unknown distribution {self.distribution!r}")
        if self.mix not in YCSB_MIXES:
            raise ValueError(f"unknown YCSB mix {self.mix!r} (A, B or C)")
        self.rng = random.Random(self.seed)
        self.perm = Permutation(self.n)
        self.zipf = Zipfian(self.n, rng=self.rng) if self.distribution == "zipfian" else None
        self._ids: dict[int, str] = {}  # rank -> identifier (MEMO_MAX)

    def rank(self) -> int:
        if self.zipf is not None:
            return self.zipf()
        if self.distribution == "hotset" and self.rng.random() < self.hot_share:
            return self.rng.randrange(max(1, math.ceil(self.n * self.hot_fraction)))
        return self.rng.randrange(self.n)

    def next(self) -> tuple[str, str]:
        """("read" | "update", identifier)."""
        op = "update" if self.rng.random() < YCSB_MIXES[self.mix] else "read"
        if op == "read" and self.miss_share and self.rng.random() < self.miss_share:
            return op, unregistered(self.rng.randrange(1 << 40))
        r = self.rank()
        h = self._ids.get(r)
        if h is None:
            if len(self._ids) >= MEMO_MAX:
                self._ids.clear()
            h = self._ids[r] = handle(self.perm(r))
        return op, h

    def __iter__(self) -> Iterator[tuple[str, str]]:
        while True:
            yield self.next()
