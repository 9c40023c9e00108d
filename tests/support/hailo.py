"""Helpers for tests on the fake ``hailo_platform`` (tests/fakes)."""

from __future__ import annotations

import sys


def drop_fake_hailo_modules() -> None:
    """Forget any imported ``hailo_platform`` (the fake), so the next import sees the current ``sys.path``."""
    for name in [n for n in sys.modules if n == "hailo_platform" or n.startswith("hailo_platform.")]:
        del sys.modules[name]
