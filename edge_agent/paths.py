"""Where bundled files live: the repository checkout (editable install) or the installed data prefix."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONFIG_FILE = Path("/etc/edge-agent/config.toml")
INSTALLED_MODELS_DIR = Path("/usr/share/edge-agent/models")


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_models_dir() -> Path:
    """``$EDGE_AGENT_MODELS_DIR``, else ``models/`` of the checkout this package runs from, else the system prefix."""
    env = os.environ.get("EDGE_AGENT_MODELS_DIR")
    if env:
        return Path(env)
    local = repo_root() / "models"
    if local.is_dir():
        return local
    return INSTALLED_MODELS_DIR
