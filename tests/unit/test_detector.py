"""FaceDetector on the shipped RetinaFace-0.25 artifacts (decoded and raw_heads forms) and real images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.backends.onnx import OnnxBackend
from edge_agent.detector import FaceDetector
from edge_agent.frames import Detections
from edge_agent.manifest import ManifestError, ModelArtifact, load_artifact

DECODED = "detector/retinaface-mnet025"
HEADS = "detector/retinaface-mnet025-heads"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vision"


def _detector(shipped_model: Callable[[str], Path], rel: str, **kw: object) -> FaceDetector:
    art = load_artifact(shipped_model(rel))
    return FaceDetector(art, OnnxBackend(art.path, intra_op_threads=1), **kw)  # type: ignore[arg-type]


def _image(asset: Callable[[str], Path], name: str) -> np.ndarray:
    img = cv2.imread(str(asset(name)), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def _assert_sane(dets: Detections, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    assert dets.boxes.dtype == dets.scores.dtype == dets.landmarks.dtype == np.float32
    assert dets.landmarks.shape == (len(dets), 5, 2)
    assert (dets.boxes[:, 0] >= 0).all() and (dets.boxes[:, 2] <= w).all()
    assert (dets.boxes[:, 1] >= 0).all() and (dets.boxes[:, 3] <= h).all()
    assert (dets.boxes[:, 2] > dets.boxes[:, 0]).all() and (dets.boxes[:, 3] > dets.boxes[:, 1]).all()
    b = dets.boxes[:, None, :]
    lm = dets.landmarks
    assert ((lm[..., 0] >= b[..., 0]) & (lm[..., 0] <= b[..., 2])).all(), "landmark x outside its box"
    assert ((lm[..., 1] >= b[..., 1]) & (lm[..., 1] <= b[..., 3])).all(), "landmark y outside its box"
    assert (np.diff(dets.scores) <= 0).all()  # best first


def test_multi_face_matches_reference(shipped_model: Callable[[str], Path], asset: Callable[[str], Path]) -> None:
    det = _detector(shipped_model, DECODED)
    img = _image(asset, "multi_face.jpg")
    dets, times = det.detect_timed(img)
    with np.load(FIXTURES / "retinaface_multi_face.npz") as z:
        ref_boxes, ref_ldm = z["default_boxes"], z["default_landmarks"]
    assert len(dets) == len(ref_boxes) == 5
    _assert_sane(dets, img)
    # same frame through the daemon's preprocess + onnxruntime + numpy post-processing vs the torch reference
    np.testing.assert_allclose(dets.boxes, ref_boxes, atol=0.05)
    np.testing.assert_allclose(dets.landmarks, ref_ldm, atol=0.05)
    assert set(times) == {"preprocess", "detector", "decode"} and min(times.values()) >= 0


def test_no_face_in_landscape(shipped_model: Callable[[str], Path], asset: Callable[[str], Path]) -> None:
    dets = _detector(shipped_model, DECODED).detect(_image(asset, "free-mountain-vector-01.jpg"))
    assert len(dets) == 0
    assert dets.boxes.shape == (0, 4) and dets.scores.shape == (0,) and dets.landmarks.shape == (0, 5, 2)


@pytest.mark.parametrize(("name", "faces"), [("single_face.jpg", 1), ("faceapi_sample1.jpg", 3)])
def test_other_images(shipped_model: Callable[[str], Path], asset: Callable[[str], Path], name: str,
                      faces: int) -> None:
    img = _image(asset, name)
    dets = _detector(shipped_model, DECODED).detect(img)
    assert len(dets) == faces
    _assert_sane(dets, img)


def test_input_size_override_and_limits(shipped_model: Callable[[str], Path],
                                        asset: Callable[[str], Path]) -> None:
    img = _image(asset, "multi_face.jpg")
    small = _detector(shipped_model, DECODED, input_size=(320, 320)).detect(img)
    assert 1 <= len(small) <= 5
    _assert_sane(small, img)
    assert len(_detector(shipped_model, DECODED, max_faces=2).detect(img)) == 2
    with pytest.raises(ValueError, match="multiples of 32"):
        _detector(shipped_model, DECODED, input_size=(300, 300))
    with pytest.raises(ValueError, match="score_threshold"):
        _detector(shipped_model, DECODED, score_threshold=1.5)


def test_tiny_and_odd_frames(shipped_model: Callable[[str], Path]) -> None:
    det = _detector(shipped_model, DECODED)
    for shape in [(1, 1, 3), (37, 501, 3), (900, 17, 3)]:
        dets = det.detect(np.full(shape, 128, np.uint8))
        assert dets.landmarks.shape == (len(dets), 5, 2)


def test_rejects_a_backend_that_does_not_match(shipped_model: Callable[[str], Path]) -> None:
    art = load_artifact(shipped_model(DECODED))
    other = load_artifact(shipped_model(HEADS))
    with pytest.raises(ManifestError, match="output names"):
        FaceDetector(art, OnnxBackend(other.path))
    renamed = ModelArtifact(art.manifest.model_copy(update={"task": "classifier"}), art.directory)
    with pytest.raises(ManifestError, match="detector artifact"):
        FaceDetector(renamed, OnnxBackend(art.path))


def test_raw_heads_equal_decoded_on_640x384(shipped_model: Callable[[str], Path],
                                            asset: Callable[[str], Path]) -> None:
    heads = _detector(shipped_model, HEADS)
    assert heads.outputs_spec.kind == "raw_heads" and heads.input_wh == (640, 384)
    decoded = _detector(shipped_model, DECODED, input_size=(640, 384))
    for name in ("multi_face.jpg", "faceapi_sample1.jpg"):
        # a frame of exactly the network size: both forms see the same tensor, no padding
        img = cv2.resize(_image(asset, name), (640, 384), interpolation=cv2.INTER_AREA)
        a, b = heads.detect(img), decoded.detect(img)
        assert len(a) == len(b) > 0
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
