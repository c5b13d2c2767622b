"""Every package directory ships in the wheel: pyproject.toml lists packages by name (the
folders are mapped onto ``idnode.*`` with package-dir), so a new subpackage left out of
the list installs fine in editable mode and is missing from the wheel (seen: a wheel
without idnode.resolver.upstream could not start). The wheel test (tests/e2e/test_wheel.py)
shows it too, but only after building; this says which name to add, at once."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_directory_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for name, folder in config["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if any(part.startswith((".", "__")) for part in rel.parts):
                continue
            found.add(".".join((name, *rel.parts)))
    missing = sorted(found - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
