"""The README's pictures are files of the repository (a renamed screenshot would leave a
broken image on the project's front page)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_image_the_readme_shows_is_in_the_repository() -> None:
    text = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert len(images) >= 12  # the web pages' gallery
    missing = [i for i in images if not (ROOT / i).is_file()]
    assert not missing, f"README shows images that are not in the repository: {missing}"
