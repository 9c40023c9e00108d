"""On a real Hailo-8/8L (Raspberry Pi 5 + AI Kit/HAT, or any host with HailoRT 4.18-4.23 and the device).

Skipped with the reason when ``hailo_platform`` is not the real HailoRT package or no device opens; the HEF
tests also skip when the compiled HEF artifacts are not there (``python -m build.compile_hef``; paths from
``EDGE_AGENT_DETECTOR__HAILO_MODEL`` / ``EDGE_AGENT_CLASSIFIER__HAILO_MODEL`` or the settings defaults).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.backends.hailo import HailoDevice, probe
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.classifier import ExpressionClassifier
from edge_agent.detector import FaceDetector
from edge_agent.manifest import load_artifact
from edge_agent.settings import HailoSettings, load_settings

pytestmark = pytest.mark.hardware

FAKES = Path(__file__).resolve().parents[1] / "fakes"


def _real_hailo_skip_reason() -> str | None:
    spec = importlib.util.find_spec("hailo_platform")
    if spec is None or spec.origin is None:
        return "hailo_platform not installed (sudo apt install hailo-all; venv with --system-site-packages)"
    if Path(spec.origin).resolve().is_relative_to(FAKES.resolve()):
        return "hailo_platform on sys.path is the test fake, not HailoRT"
    ok, reason = probe()
    return None if ok else f"no usable Hailo device: {reason}"


@pytest.fixture(scope="module")
def device() -> Iterator[HailoDevice]:
    reason = _real_hailo_skip_reason()
    if reason:
        pytest.skip(reason)
    with HailoDevice.open(HailoSettings()) as dev:
        yield dev


def _hef_dir(task: str) -> Path:
    s = load_settings()
    path = s.detector.hailo_model if task == "detector" else s.classifier.hailo_model
    if not (path / "manifest.json").is_file():
        pytest.skip(f"no compiled {task} HEF at {path} (python -m build.compile_hef ...)")
    return path


def test_device_identifies_as_a_hailo8_family_chip(device: HailoDevice) -> None:
    assert device.arch in {"HAILO8", "HAILO8L", None}
    assert device.library_version.startswith("4.")


def test_detector_hef_finds_the_faces_the_onnx_deploy_model_finds(
    device: HailoDevice, shipped_model: Callable[[str], Path], asset: Callable[[str], Path]
) -> None:
    hef_art = load_artifact(_hef_dir("detector"))
    onnx_art = load_artifact(shipped_model("detector/retinaface-mnet025-heads"))
    hef_det = FaceDetector(hef_art, device.load(hef_art))
    onnx_det = FaceDetector(onnx_art, OnnxBackend(onnx_art.path, intra_op_threads=1))
    image = cv2.imread(str(asset("multi_face.jpg")))
    a, b = onnx_det.detect(image), hef_det.detect(image)
    assert len(a) == len(b) >= 4
    for box in a.boxes:
        ious = [
            max(0.0, min(box[2], o[2]) - max(box[0], o[0])) * max(0.0, min(box[3], o[3]) - max(box[1], o[1]))
            / ((box[2] - box[0]) * (box[3] - box[1]) + (o[2] - o[0]) * (o[3] - o[1])
               - max(0.0, min(box[2], o[2]) - max(box[0], o[0])) * max(0.0, min(box[3], o[3]) - max(box[1], o[1])))
            for o in b.boxes
        ]
        assert max(ious) >= 0.8


def test_classifier_hef_runs_a_batch_of_faces(device: HailoDevice, shipped_model: Callable[[str], Path],
                                              asset: Callable[[str], Path]) -> None:
    hef_art = load_artifact(_hef_dir("classifier"))
    onnx_det_art = load_artifact(shipped_model("detector/retinaface-mnet025"))
    det = FaceDetector(onnx_det_art, OnnxBackend(onnx_det_art.path, intra_op_threads=1))
    cls = ExpressionClassifier(hef_art, device.load(hef_art))
    image = cv2.imread(str(asset("multi_face.jpg")))
    dets = det.detect(image)
    expr = cls.classify(image, dets)
    assert expr.probs.shape == (len(dets), len(cls.labels))
    assert np.allclose(expr.probs.sum(1), 1.0, atol=1e-3)
