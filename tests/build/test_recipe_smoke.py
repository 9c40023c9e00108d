"""CI smoke of the one-command model recipe: ``python -m build.recipe --smoke --out TMP`` (about a minute).

A few steps of every stage on real registry frames; then every artifact must load with the daemon's manifest
loader, run in the daemon's FaceDetector / ExpressionClassifier on a real image, and its card must carry the
figures (steps, seed, wall times, held-out agreement with the teacher).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.assets import fetch
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.classifier import ExpressionClassifier
from edge_agent.detector import FaceDetector
from edge_agent.manifest import load_artifact

ROOT = Path(__file__).resolve().parents[2]
DETECTORS = ("acwface-dcn", "acwface-deploy")

@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("recipe")
    proc = subprocess.run([sys.executable, "-m", "build.recipe", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def _image() -> np.ndarray:
    img = cv2.imread(str(fetch("multi_face.jpg")), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def test_summary_lists_every_stage(smoke_out: Path) -> None:
    s = json.loads((smoke_out / "recipe_summary.json").read_text(encoding="utf-8"))
    assert s["seed"] == 1337 and s["config"]["smoke"] is True
    assert {"dcn1", "dcn2", "deploy", "classifier", "export_acwface-dcn", "export_acwface-deploy",
            "export_mnv3s-facex7"} <= set(s["wall_s"])
    assert all(v >= 0 for v in s["wall_s"].values())


@pytest.mark.parametrize("model_id", DETECTORS)
def test_detector_artifact(smoke_out: Path, model_id: str) -> None:
    d = smoke_out / "detector" / model_id
    art = load_artifact(d)
    assert art.manifest.model_id == model_id and art.manifest.task == "detector"
    m = art.manifest.metrics
    assert m["distill_seed"] == 1337
    assert m["distill_steps"] == (4 if model_id == "acwface-dcn" else 6)  # 2 steps per chained stage
    assert "vs_teacher_recall_iou0.5:all" in m and "vs_teacher_precision_iou0.5:all" in m
    card = (d / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Recipe (build.recipe)" in card and "seed 1337" in card and "SMOKE RUN" in card
    assert "| multi_face.jpg | 1 | 5 |" in card  # held-out table: the teacher's 5 faces on multi_face.jpg
    img = _image()
    dets = FaceDetector(art, OnnxBackend(art.path, intra_op_threads=1)).detect(img)  # type: ignore[arg-type]
    assert dets.boxes.shape == (len(dets), 4) and dets.landmarks.shape == (len(dets), 5, 2)
    assert np.isfinite(dets.boxes).all()


def test_classifier_artifact(smoke_out: Path) -> None:
    d = smoke_out / "classifier" / "mnv3s-facex7"
    art = load_artifact(d)
    assert art.manifest.task == "classifier" and len(art.manifest.labels or []) == 7
    card = (d / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Recipe (build.recipe)" in card and "agreement" in card.lower() and "seed 1337" in card
    # faces from the shipped RetinaFace (the smoke detectors are 2-step models), then the smoke classifier
    det_art = load_artifact(ROOT / "models" / "detector" / "retinaface-mnet025")
    img = _image()
    dets = FaceDetector(det_art, OnnxBackend(det_art.path, intra_op_threads=1)).detect(img)  # type: ignore[arg-type]
    assert len(dets) >= 3
    expr = ExpressionClassifier(art, OnnxBackend(art.path, intra_op_threads=1)).classify(img, dets)  # type: ignore[arg-type]
    assert expr.probs.shape == (len(dets), 7)
    np.testing.assert_allclose(expr.probs.sum(1), 1.0, atol=1e-5)


def test_full_run_schedule_matches_the_shipped_cards(tmp_path: Path) -> None:
    from build.recipe import DETECTOR_STAGES, RecipeConfig, detector_argv

    cfg = RecipeConfig(out=tmp_path, work=tmp_path / "_runs")
    argvs = {s.name: detector_argv(s, cfg) for s in DETECTOR_STAGES}

    def opt(name: str, flag: str) -> str:
        a = argvs[name]
        return a[a.index(flag) + 1]

    assert [opt(n, "--steps") for n in ("dcn1", "dcn2", "deploy")] == ["300", "1200", "400"]
    assert [opt(n, "--mosaic") for n in ("dcn1", "dcn2", "deploy")] == ["0.0", "0.5", "0.5"]
    assert [float(opt(n, "--lr")) for n in ("dcn1", "dcn2", "deploy")] == [1e-3, 5e-4, 3e-4]
    assert "--init" not in argvs["dcn1"]  # stage 1 starts from the teacher
    assert opt("dcn2", "--init").endswith("dcn1/student.pt") and opt("deploy", "--init").endswith("dcn2/student.pt")
    assert opt("deploy", "--variant") == "acwface_deploy"
    assert sum(float(opt(n, "--max-minutes")) for n in argvs) == pytest.approx(70.0)
