"""The codec is a pure library: it imports only the standard library, itself and
idnode.errors (the error hierarchy's root, which imports nothing)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CODEC = Path(__file__).parents[2] / "resolver" / "codec"
FORBIDDEN = {"asyncio", "socket", "selectors", "threading", "uvloop"}


def test_codec_imports_nothing_but_stdlib_and_itself() -> None:
    offenders = []
    for path in CODEC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if name == "idnode.errors":
                    continue
                if top in FORBIDDEN or (top not in sys.stdlib_module_names and top != "__future__"):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
