"""edge-bench --backend hailo end to end on the fake hailo_platform (HEFs fake-compiled from the shipped ONNX).

Only the plumbing is checked (the HEF artifacts load through HailoDevice, every stage is timed, the result
names the hailo8 device); the fake chip runs ONNX on the CPU, so its timings mean nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.backends.onnx import OnnxBackend
from edge_agent.detector import FaceDetector
from edge_agent.manifest import load_artifact
from edge_agent.vision.crop import crop_faces
from edge_agent.vision.preprocess import letterbox
from tests.fakes import fake_hef as fh

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FAKES = REPO / "tests" / "fakes"
DETECTOR = "detector/retinaface-mnet025-heads"
CLASSIFIER = "classifier/mnv3s-facex7"


def _compile(det_dir: Path, cls_dir: Path, photo: Path, out: Path) -> tuple[Path, Path]:
    det_art, cls_art = load_artifact(det_dir), load_artifact(cls_dir)
    img = cv2.imread(str(photo))
    assert img is not None
    wh = tuple(int(v) for v in det_art.manifest.preprocess.input_size)
    det_calib = letterbox(img, wh, dynamic=False)[0][None]  # type: ignore[arg-type]
    dets = FaceDetector(det_art, OnnxBackend(det_art.path, intra_op_threads=1)).detect(img)  # type: ignore[arg-type]
    crop_wh = tuple(int(v) for v in cls_art.manifest.preprocess.input_size)
    cls_calib = np.asarray(crop_faces(img, dets, crop_wh, margin=0.2))  # type: ignore[arg-type]
    det_hef = fh.write_fake_hef(det_dir, out / "det_hef", det_calib)  # type: ignore[attr-defined]
    cls_hef = fh.write_fake_hef(cls_dir, out / "cls_hef", cls_calib)  # type: ignore[attr-defined]
    return det_hef, cls_hef


def test_bench_on_fake_hailo(tmp_path: Path, shipped_model: Callable[[str], Path],
                             asset: Callable[[str], Path]) -> None:
    det_hef, cls_hef = _compile(shipped_model(DETECTOR), shipped_model(CLASSIFIER), asset("multi_face.jpg"),
                                tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_AGENT_", "FAKE_HAILO_"))}
    env.update({"PYTHONPATH": os.pathsep.join([str(FAKES), str(REPO)]),
                "FAKE_HAILO_LOCK": str(tmp_path / "hailo0.lock")})
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.bench.cli", "--backend", "hailo", "--detector", str(det_hef),
         "--classifier", str(cls_hef), "--source", str(asset("multi_face.jpg")), "--warmup", "1", "--repeat", "3",
         "--json", "--quiet", "--pipeline-seconds", "0", "--out-dir", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["config"]["backend"] == "hailo"
    assert data["result"]["frames"] == 3
    assert data["result"]["faces_per_frame"] >= 2  # multi_face.jpg shows several faces
    assert data["result"]["stages_ms"]["detector"]["n"] == 3
    assert Path(data["result_file"]).name.startswith("hailo8_")
