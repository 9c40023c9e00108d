from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.assets import sha256_file
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.classifier import ExpressionClassifier
from edge_agent.frames import Detections
from edge_agent.manifest import ManifestError, ModelArtifact, load_artifact
from edge_agent.vision.crop import crop_faces
from edge_agent.vision.decode import softmax
from edge_agent.vision.preprocess import to_tensor
from tests.support.backends import CountingBackend

CLASSIFIER = "classifier/mnv3s-facex7"
LABELS = ("neg", "neutral", "pos")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vision"


def _tiny_classifier(tmp: Path, batch: int | str) -> ModelArtifact:
    """A real (tiny) ONNX classifier: global average pool -> linear layer -> 3 logits; fixed or dynamic batch."""
    onnx = pytest.importorskip("onnx", reason="building the tiny test classifier needs the onnx package")
    from onnx import TensorProto, helper

    w = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-1.0, 2.0, 0.0]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1)],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 160, 160])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [3, 3], w.ravel().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp / "tiny.onnx"
    onnx.save(model, str(path))
    manifest = {
        "model_id": "tiny-classifier", "task": "classifier", "architecture": "gap-linear", "file": "tiny.onnx",
        "format": "onnx", "sha256": sha256_file(path), "size_bytes": path.stat().st_size, "opset": 17,
        "inputs": [{"name": "input", "shape": [batch, 3, 160, 160], "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": "logits", "shape": [batch, 3], "dtype": "float32", "layout": "NC"}],
        "preprocess": {"input_size": [160, 160], "resize": "stretch", "color_order": "RGB", "layout": "NCHW",
                       "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "labels": list(LABELS), "classes_file": "classes.json",
        "provenance": {"source": "test graph", "recipe": "tests/unit/test_classifier.py"}, "licence": "MIT",
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    (tmp / "classes.json").write_text(json.dumps(list(LABELS)))
    return load_artifact(tmp)


def _faces() -> tuple[np.ndarray, Detections]:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 70], [100, 20, 180, 110], [200, 100, 300, 230], [-20, 150, 40, 250],
                      [150, 150, 190, 190], [5, 5, 315, 235]], np.float32)
    lm = np.stack([np.linspace(b[:2] + 5, b[2:] - 5, 5) for b in boxes]).astype(np.float32)
    return img, Detections(boxes=boxes, scores=np.ones(6, np.float32), landmarks=lm)


def _expected(img: np.ndarray, dets: Detections, art: ModelArtifact) -> np.ndarray:
    """Per-face reference: crop, preprocess, model maths in numpy (pool -> linear), softmax."""
    crops = crop_faces(img, dets, (160, 160), 0.2, align=False)
    x = to_tensor(crops, art.manifest.preprocess).astype(np.float64).mean(axis=(2, 3))
    w = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [-1.0, 2.0, 0.0]], np.float32)
    return softmax((x @ w.T).astype(np.float32), axis=1)


def test_dynamic_batch_one_call(tmp_path: Path) -> None:
    art = _tiny_classifier(tmp_path, "N")
    be = CountingBackend(OnnxBackend(art.path))
    clf = ExpressionClassifier(art, be)
    img, dets = _faces()
    expr, times = clf.classify_timed(img, dets)
    assert be.batches == [6]
    assert expr.labels == LABELS and expr.probs.shape == (6, 3) and expr.probs.dtype == np.float32
    np.testing.assert_allclose(expr.probs, _expected(img, dets, art), atol=1e-4)
    np.testing.assert_allclose(expr.probs.sum(1), 1.0, atol=1e-6)
    assert set(times) == {"crop", "classifier"} and min(times.values()) >= 0


def test_max_batch_chunks_dynamic(tmp_path: Path) -> None:
    art = _tiny_classifier(tmp_path, "N")
    be = CountingBackend(OnnxBackend(art.path))
    img, dets = _faces()
    probs = ExpressionClassifier(art, be, max_batch=4).classify(img, dets).probs
    assert be.batches == [4, 2]
    np.testing.assert_allclose(probs, _expected(img, dets, art), atol=1e-4)


def test_fixed_batch_pads_last_chunk(tmp_path: Path) -> None:
    art = _tiny_classifier(tmp_path, 4)
    be = CountingBackend(OnnxBackend(art.path))
    img, dets = _faces()
    probs = ExpressionClassifier(art, be, max_batch=16).classify(img, dets).probs
    assert be.batches == [4, 4]
    assert probs.shape == (6, 3)
    np.testing.assert_allclose(probs, _expected(img, dets, art), atol=1e-4)


def test_empty_detections_skip_the_backend(tmp_path: Path) -> None:
    art = _tiny_classifier(tmp_path, "N")
    be = CountingBackend(OnnxBackend(art.path))
    expr = ExpressionClassifier(art, be).classify(np.zeros((10, 10, 3), np.uint8), Detections.empty())
    assert expr.probs.shape == (0, 3) and expr.labels == LABELS
    assert be.batches == []


def test_align_changes_the_crops(tmp_path: Path) -> None:
    art = _tiny_classifier(tmp_path, "N")
    img, dets = _faces()
    plain = ExpressionClassifier(art, OnnxBackend(art.path)).classify(img, dets).probs
    aligned = ExpressionClassifier(art, OnnxBackend(art.path), align=True).classify(img, dets).probs
    assert aligned.shape == plain.shape
    assert not np.allclose(aligned, plain)


def test_rejects_mismatched_backend(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    art = _tiny_classifier(tmp_path / "a", "N")
    other = _tiny_classifier(tmp_path / "b", 4)
    with pytest.raises(ManifestError, match="shape"):
        ExpressionClassifier(other, OnnxBackend(art.path))  # manifest says batch 4, model is dynamic
    with pytest.raises(ValueError, match="margin"):
        ExpressionClassifier(art, OnnxBackend(art.path), margin=-1)


# ---- the shipped classifier -------------------------------------------------------------------------------


def test_shipped_classifier_on_real_faces(shipped_model: Callable[[str], Path],
                                          asset: Callable[[str], Path]) -> None:
    art = load_artifact(shipped_model(CLASSIFIER))
    labels = tuple(json.loads((art.directory / "classes.json").read_text()))
    be = CountingBackend(OnnxBackend(art.path, intra_op_threads=1))
    clf = ExpressionClassifier(art, be)
    img = cv2.imread(str(asset("multi_face.jpg")), cv2.IMREAD_COLOR)
    with np.load(FIXTURES / "retinaface_multi_face.npz") as z:
        dets = Detections(boxes=z["default_boxes"], scores=z["default_scores"], landmarks=z["default_landmarks"])
    expr = clf.classify(img, dets)
    assert be.batches == [len(dets)] == [5]
    assert expr.labels == labels == art.manifest.labels
    assert expr.probs.shape == (5, len(labels))
    np.testing.assert_allclose(expr.probs.sum(1), 1.0, atol=1e-5)
    # batching does not change results: each face alone gives the same probabilities
    for i in range(len(dets)):
        one = Detections(dets.boxes[i:i + 1], dets.scores[i:i + 1], dets.landmarks[i:i + 1])
        np.testing.assert_allclose(clf.classify(img, one).probs[0], expr.probs[i], atol=1e-5)
