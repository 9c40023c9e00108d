"""Engine: backend choice (onnx / hailo without fallback / auto), model loading and checks, warm-up.

Uses the tiny real ONNX artifacts and the fake HEF compile from tests/fakes (the Hailo chip is the hardware
boundary; the fake hailo_platform runs the ONNX behind each fake HEF) and, when built, the shipped models.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.backends.base import BackendError
from edge_agent.engine import build_engine, check_models, choose_backend
from edge_agent.manifest import ManifestError
from edge_agent.settings import Settings, load_settings
from tests.fakes import fake_hef as fh
from tests.support.hailo import drop_fake_hailo_modules

FAKES = Path(__file__).resolve().parents[1] / "fakes"


@pytest.fixture(scope="module")
def arts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("engine_arts")
    det = fh.make_tiny_detector(root / "det")
    cls = fh.make_tiny_classifier(root / "cls")
    return {
        "det": det, "cls": cls,
        "det_hef": fh.write_fake_hef(det, root / "det_hef", fh.random_frames(4, (64, 96), seed=0)),
        "cls_hef": fh.write_fake_hef(cls, root / "cls_hef", fh.random_frames(6, (32, 32), seed=3)),
    }


@pytest.fixture
def no_hailo(monkeypatch: pytest.MonkeyPatch) -> None:
    """hailo_platform is not importable (the CPU-only box)."""
    drop_fake_hailo_modules()
    monkeypatch.setitem(sys.modules, "hailo_platform", None)


def _settings(arts: dict[str, Path], kind: str) -> Settings:
    return load_settings(None, {
        "backend.kind": kind,
        "detector.model": arts["det"], "classifier.model": arts["cls"],
        "detector.hailo_model": arts["det_hef"], "classifier.hailo_model": arts["cls_hef"],
    })


# -- choose_backend (pure) ------------------------------------------------------------------------------------

def test_choose_backend() -> None:
    def never() -> tuple[bool, str]:
        raise AssertionError("probe must not run for an explicit kind")

    assert choose_backend("onnx", never)[0] == "onnx"
    assert choose_backend("hailo", never) == ("hailo", "backend.kind=hailo (configured; no fallback)")
    kind, reason = choose_backend("auto", lambda: (True, "HailoRT 4.20.0, device HAILO8 opened"))
    assert kind == "hailo" and "HAILO8" in reason
    kind, reason = choose_backend("auto", lambda: (False, "hailo_platform not importable"))
    assert kind == "onnx" and "hailo_platform not importable" in reason and "ONNX" in reason
    with pytest.raises(ValueError, match=r"backend\.kind"):
        choose_backend("gpu", never)


# -- ONNX ---------------------------------------------------------------------------------------------------------

def test_onnx_engine_loads_warms_up_and_runs(arts: dict[str, Path]) -> None:
    engine = build_engine(_settings(arts, "onnx"))
    try:
        assert engine.backend_kind == "onnx"
        assert engine.model_ids == {"detector": "tiny-det", "classifier": "tiny-cls"}
        engine.warm_up()
        image = np.full((120, 160, 3), 90, np.uint8)
        dets = engine.detector.detect(image)
        expr = engine.classifier.classify(image, dets)
        assert expr.probs.shape == (len(dets), 7)
        assert engine.classifier.labels == tuple(expr.labels)
        # the memory pattern only where the batch is fixed (the classifier's batch follows the face count)
        for model in (engine.detector, engine.classifier):
            art_batch = model.manifest.inputs[0].shape[0]
            opts = model.backend._session.get_session_options()  # type: ignore[attr-defined]
            assert opts.enable_mem_pattern is isinstance(art_batch, int)
    finally:
        engine.close()


def test_auto_without_hailo_uses_onnx_and_says_why(arts: dict[str, Path], no_hailo: None) -> None:
    engine = build_engine(_settings(arts, "auto"))
    try:
        assert engine.backend_kind == "onnx"
        assert "hailo_platform" in engine.backend_reason and "ONNX" in engine.backend_reason
    finally:
        engine.close()


def test_hailo_kind_never_falls_back(arts: dict[str, Path], no_hailo: None) -> None:
    with pytest.raises(BackendError, match="hailo_platform"):
        build_engine(_settings(arts, "hailo"))


def test_missing_model_is_a_manifest_error_naming_the_task(arts: dict[str, Path], tmp_path: Path) -> None:
    s = load_settings(None, {"backend.kind": "onnx", "detector.model": arts["det"],
                             "classifier.model": tmp_path / "nothing"})
    with pytest.raises(ManifestError, match=r"^classifier model: .*manifest not found"):
        build_engine(s)


def test_swapped_models_are_rejected(arts: dict[str, Path]) -> None:
    s = load_settings(None, {"backend.kind": "onnx", "detector.model": arts["cls"], "classifier.model": arts["det"]})
    with pytest.raises(ManifestError, match="manifest is for a classifier"):
        build_engine(s)


def test_check_models_reports_each_model(arts: dict[str, Path], tmp_path: Path) -> None:
    ok = check_models(_settings(arts, "onnx"))
    assert [(c.task, c.ok) for c in ok] == [("detector", True), ("classifier", True)]
    assert "tiny-det" in ok[0].detail
    corrupt = tmp_path / "cls"
    shutil.copytree(arts["cls"], corrupt)
    onnx_file = next(corrupt.glob("*.onnx"))
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    s = load_settings(None, {"backend.kind": "onnx", "detector.model": arts["det"], "classifier.model": corrupt})
    res = check_models(s)
    assert res[0].ok and not res[1].ok and "sha256" in res[1].detail


# -- Hailo through the fake hailo_platform -------------------------------------------------------------------

def test_hailo_engine_on_the_fake_device(arts: dict[str, Path], fake_hailo: ModuleType) -> None:
    engine = build_engine(_settings(arts, "hailo"))
    try:
        assert engine.backend_kind == "hailo"
        assert engine.detector.backend.kind == "hailo" and engine.classifier.backend.kind == "hailo"
        engine.warm_up()
    finally:
        engine.close()
    # the device was released: a second engine can open it again
    again = build_engine(_settings(arts, "hailo"))
    again.close()


def test_auto_picks_hailo_when_the_probe_succeeds(arts: dict[str, Path], fake_hailo: ModuleType) -> None:
    engine = build_engine(_settings(arts, "auto"))
    try:
        assert engine.backend_kind == "hailo" and engine.backend_reason.startswith("backend.kind=auto: HailoRT")
    finally:
        engine.close()


def test_check_models_on_the_fake_device(arts: dict[str, Path], fake_hailo: ModuleType) -> None:
    res = check_models(_settings(arts, "hailo"))
    assert all(c.ok for c in res), [c.detail for c in res]


# -- the shipped models ---------------------------------------------------------------------------------------

def test_shipped_models_find_the_face_in_a_sample(
    shipped_model: Callable[[str], Path], asset: Callable[[str], Path],
) -> None:
    det, cls = shipped_model("detector/retinaface-mnet025"), shipped_model("classifier/mnv3s-facex7")
    engine = build_engine(load_settings(None, {"backend.kind": "onnx", "detector.model": det,
                                               "classifier.model": cls}))
    try:
        engine.warm_up()
        image: Any = cv2.imread(str(asset("single_face.jpg")))
        dets = engine.detector.detect(image)
        expr = engine.classifier.classify(image, dets)
    finally:
        engine.close()
    assert len(dets) == 1
    assert expr.probs.shape == (1, len(engine.classifier.labels))
    assert float(expr.probs.sum()) == pytest.approx(1.0, abs=1e-4)
