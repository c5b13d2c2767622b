"""The reference vectors, copied from ../shared/vectors so the suite runs on a fresh clone.

test_vectors_copy_matches_shared checks the copy against shared/ whenever shared/ is there.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
SHARED = HERE.parents[2] / "shared" / "vectors"
FILES = ("handle-vectors.txt", "handle-auth-transcripts.txt")


def load(name: str = "handle-vectors.txt") -> list[tuple[str, bytes | None]]:
    """(title, bytes) for every "== title" line; bytes is None when no hex line follows."""
    out: list[tuple[str, bytes | None]] = []
    lines = (HERE / name).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("== "):
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            is_hex = bool(nxt) and all(c in "0123456789abcdef" for c in nxt)
            out.append((line[3:], bytes.fromhex(nxt) if is_hex else None))
    return out


def vector(title_start: str, name: str = "handle-vectors.txt") -> bytes:
    hits = [b for t, b in load(name) if t.startswith(title_start) and b is not None]
    assert len(hits) == 1, f"{len(hits)} vectors start with {title_start!r}"
    return hits[0]
