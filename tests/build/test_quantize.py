"""INT8 QDQ detector (build.export.quantize): fast path with a small calibration set, and the shipped int8 copies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from build.export.quantize import QuantSettings, calibration_frames, quantize_artifact
from edge_agent.assets import fetch
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.detector import FaceDetector
from edge_agent.manifest import ModelArtifact, load_artifact

DETECTORS = Path(__file__).resolve().parents[2] / "models" / "detector"


def _faces(art: ModelArtifact) -> int:
    img = cv2.imread(str(fetch("multi_face.jpg")), cv2.IMREAD_COLOR)
    assert img is not None
    dets = FaceDetector(art, OnnxBackend(art.path, intra_op_threads=1)).detect(img)
    assert np.isfinite(dets.boxes).all()
    return len(dets)


@pytest.mark.parametrize(("model_id", "deform"), [("retinaface-mnet025", 0), ("acwface-dcn", 3)])
def test_small_calibration_qdq(tmp_path: Path, model_id: str, deform: int) -> None:
    frames = calibration_frames(4)
    assert len(frames) == 4
    art = quantize_artifact(DETECTORS / model_id, tmp_path, frames, QuantSettings(4, (640, 384)), "test")
    assert art.manifest.model_id == f"{model_id}-int8"
    ops = Counter(n.op_type for n in onnx.load(str(art.path)).graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    assert ops["DeformConv"] == deform  # excluded from quantisation, kept float
    assert art.manifest.metrics["quant_calib_frames"] == 4
    assert art.manifest.metrics["quant_format"] == "QDQ"
    assert _faces(art) == _faces(load_artifact(DETECTORS / model_id))  # multi_face.jpg: 5 like fp32


@pytest.mark.parametrize("model_id", ["retinaface-mnet025-int8", "acwface-dcn-int8"])
def test_shipped_int8(model_id: str) -> None:
    art = load_artifact(DETECTORS / model_id)
    m = art.manifest.metrics
    assert float(m["vs_fp32_recall_iou0.5"]) >= 0.98  # the shipping rule
    assert "detector_p50_ms_int8_1thread" in m and "detector_p50_ms_fp32_1thread" in m
    card = (DETECTORS / model_id / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"recall **{float(m['vs_fp32_recall_iou0.5']):.4f}**" in card
    assert _faces(art) >= 4
