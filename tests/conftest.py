"""Test-wide settings."""

from __future__ import annotations

import os

from hypothesis import settings

# CI runs derandomized, so a failure can be reproduced from its log; locally the
# search is random and explores new ground on each run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
