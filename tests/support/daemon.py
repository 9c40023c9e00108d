"""The environment for running the daemon as a subprocess in tests."""

from __future__ import annotations

import os
from pathlib import Path


def daemon_env(models: dict[str, Path] | None = None, endpoint: str | None = None, **settings: str) -> dict[str, str]:
    """This process's environment without any ``EDGE_AGENT_*`` setting (the asset cache dir excepted) and
    without ``JOURNAL_STREAM``, plus the given models, publisher endpoint and settings: each keyword is a
    setting path with ``__`` between section and key, e.g. ``source__pace="fast"`` ->
    ``EDGE_AGENT_SOURCE__PACE=fast``."""
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("EDGE_AGENT_") or k == "EDGE_AGENT_CACHE") and k != "JOURNAL_STREAM"}
    if models is not None:
        env["EDGE_AGENT_DETECTOR__MODEL"] = str(models["detector"])
        env["EDGE_AGENT_CLASSIFIER__MODEL"] = str(models["classifier"])
    if endpoint is not None:
        env["EDGE_AGENT_PUBLISHER__ENDPOINT"] = endpoint
    env.update({f"EDGE_AGENT_{k.upper()}": v for k, v in settings.items()})
    return env
