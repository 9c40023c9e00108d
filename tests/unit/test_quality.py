"""Face quality gates: size and blur measures, skip reasons, and that skipped faces never reach the classifier."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.backends.onnx import OnnxBackend
from edge_agent.classifier import ExpressionClassifier
from edge_agent.frames import Detections, Expressions
from edge_agent.manifest import load_artifact
from edge_agent.pipeline import face_messages
from edge_agent.quality import classify_gated, expand, laplacian_variance, min_side, skip_reasons, subset
from tests.support.backends import CountingBackend


def dets(boxes: list[list[float]]) -> Detections:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    lm = np.stack([np.stack([cx, cy], 1)] * 5, 1).astype(np.float32)
    return Detections(b, np.full(len(b), 0.9, np.float32), lm)


def checkerboard(h: int = 240, w: int = 320, cell: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    return np.dstack([board] * 3)


def test_min_side() -> None:
    assert min_side([10, 20, 50, 30]) == 10
    assert min_side([10, 20, 5, 30]) == 0.0


def test_laplacian_variance_sharp_vs_blurred_and_outside() -> None:
    img = checkerboard()
    blurred = cv2.GaussianBlur(img, (0, 0), 6)
    box = [40, 40, 200, 200]
    sharp_v, blur_v = laplacian_variance(img, box), laplacian_variance(blurred, box)
    assert sharp_v > 20 * blur_v and blur_v >= 0
    assert laplacian_variance(img, [400, 400, 500, 500]) == 0.0  # entirely outside the frame
    # resized to a fixed size: the same pattern at twice the scale measures about the same
    big = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    assert laplacian_variance(big, [80, 80, 400, 400]) == pytest.approx(sharp_v, rel=0.25)


def test_laplacian_variance_on_a_real_face(asset: Callable[[str], Path]) -> None:
    img = cv2.imread(str(asset("single_face.jpg")))
    assert img is not None
    h, w = img.shape[:2]
    box = [w * 0.25, h * 0.1, w * 0.75, h * 0.9]
    sharp = laplacian_variance(img, box)
    soft = laplacian_variance(cv2.GaussianBlur(img, (0, 0), 4 * max(h, w) / 640), box)
    assert sharp > 3 * soft


def test_skip_reasons_size_first_then_blur() -> None:
    img = checkerboard()
    img[:, 160:] = cv2.GaussianBlur(img, (0, 0), 6)[:, 160:]  # right half blurred
    d = dets([[10, 10, 30, 30], [20, 40, 140, 200], [180, 40, 300, 200], [170, 10, 190, 30]])
    assert skip_reasons(img, d, 24, 0) == ["too_small", None, None, "too_small"]
    assert skip_reasons(img, d, 24, 50) == ["too_small", None, "blurry", "too_small"]
    assert skip_reasons(img, d, 0, 0) == [None] * 4
    with pytest.raises(ValueError, match="min_face_px"):
        skip_reasons(img, d, -1, 0)


def test_subset_and_expand() -> None:
    d = dets([[0, 0, 10, 10], [5, 5, 50, 50], [1, 1, 100, 100]])
    s = subset(d, [2, 0])
    np.testing.assert_array_equal(s.boxes, d.boxes[[2, 0]])
    assert s.landmarks.shape == (2, 5, 2)
    e = expand(Expressions(("a", "b"), np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)), [0, 2], 3)
    np.testing.assert_allclose(e.probs, [[0.9, 0.1], [0, 0], [0.2, 0.8]])
    assert expand(Expressions(("a",), np.zeros((0, 1), np.float32)), [], 2).probs.shape == (2, 1)


def test_skipped_faces_never_reach_the_classifier(shipped_model: Callable[[str], Path],
                                                  asset: Callable[[str], Path]) -> None:
    art = load_artifact(shipped_model("classifier/mnv3s-facex7"))
    backend = CountingBackend(OnnxBackend(art.path))
    clf = ExpressionClassifier(art, backend)
    img = cv2.imread(str(asset("single_face.jpg")))
    assert img is not None
    h, w = img.shape[:2]
    face = [w * 0.25, h * 0.1, w * 0.75, h * 0.9]
    d = dets([[5, 5, 20, 20], face, [w - 30, h - 30, w - 10, h - 10]])  # tiny, real face, tiny

    expr, times, skipped = classify_gated(clf.classify_timed, img, d, 24, 0)
    assert backend.batches == [1]  # only the real face went to the model
    assert skipped == ("too_small", None, "too_small")
    assert set(times) == {"crop", "classifier"}
    alone = clf.classify(img, subset(d, [1]))
    np.testing.assert_allclose(expr.probs[1], alone.probs[0], atol=1e-6)
    assert not expr.probs[[0, 2]].any()

    faces = face_messages(d, expr, skipped)
    assert [f.skipped for f in faces] == ["too_small", None, "too_small"]
    assert faces[0].label is None and faces[0].probs is None and faces[0].confidence is None
    assert faces[1].label == clf.labels[int(np.argmax(alone.probs[0]))] and faces[1].probs is not None

    backend.batches.clear()
    _, _, none_skipped = classify_gated(clf.classify_timed, img, subset(d, [1]), 24, 0)
    assert none_skipped == () and backend.batches == [1]
    backend.batches.clear()
    all_small, _, reasons = classify_gated(clf.classify_timed, img, subset(d, [0, 2]), 24, 0)
    assert reasons == ("too_small", "too_small") and backend.batches == []  # no model call at all
    assert all_small.probs.shape == (2, len(clf.labels))
    backend.close()
