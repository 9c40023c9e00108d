from __future__ import annotations

import numpy as np

from edge_agent.vision.nms import clip_to_frame, nms, postprocess, to_frame_pixels, top_candidates
from edge_agent.vision.preprocess import Geometry


def test_nms_uses_inclusive_areas_and_keeps_equal_iou() -> None:
    # boxes 0..9 and 5..14 (inclusive pixels): 10x10 each, overlap 5x10 -> IoU = 50 / 150 = 1/3
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9], [100, 100, 120, 120]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.3), [0, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.34), [0, 1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, np.float32(50) / np.float32(150)), [0, 1, 2])  # == kept


def test_nms_order_and_chain() -> None:
    # b suppressed by a; c overlaps only b, so it survives (greedy, not transitive)
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [9, 0, 19, 10]], np.float32)
    scores = np.array([0.5, 0.9, 0.4], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.3), [1])
    np.testing.assert_array_equal(nms(boxes, np.array([0.9, 0.5, 0.4], np.float32), 0.3), [0, 2])


def test_nms_empty() -> None:
    keep = nms(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), 0.4)
    assert keep.shape == (0,) and keep.dtype == np.int64


def test_top_candidates() -> None:
    s = np.array([0.5, 0.9, 0.6, 0.9, 0.1], np.float32)
    np.testing.assert_array_equal(top_candidates(s, 0.5, 10), [1, 3, 2])  # strict threshold, stable ties
    np.testing.assert_array_equal(top_candidates(s, 0.5, 2), [1, 3])
    assert top_candidates(s, 0.95, 10).shape == (0,)


def test_to_frame_pixels_and_clip() -> None:
    geom = Geometry(scale=(0.5, 0.5), pad=(0, 24), input_wh=(640, 384), frame_wh=(1280, 720))
    boxes, ldm = to_frame_pixels(np.array([[0.1, 0.5, 0.2, 1.0]], np.float32),
                                 np.full((1, 10), 0.5, np.float32), geom)
    np.testing.assert_allclose(boxes, [[128, 384, 256, 768]])
    np.testing.assert_allclose(ldm, [[640, 384] * 5])
    pts = ldm.reshape(-1, 5, 2)
    clip_to_frame(boxes, pts, geom.frame_wh)
    np.testing.assert_allclose(boxes, [[128, 384, 256, 720]])


def _priors() -> np.ndarray:
    return np.array([[0.25, 0.5, 0.1, 0.2], [0.26, 0.5, 0.1, 0.2], [0.75, 0.5, 0.1, 0.2]], np.float32)


def test_postprocess_end_to_end() -> None:
    geom = Geometry(scale=(0.5, 0.5), pad=(0, 0), input_wh=(200, 100), frame_wh=(400, 200))
    prob = np.array([0.9, 0.8, 0.3], np.float32)
    dets = postprocess(np.zeros((3, 4), np.float32), prob, np.zeros((3, 10), np.float32), _priors(),
                       variances=(0.1, 0.2), geom=geom, score_threshold=0.2, nms_iou=0.4, top_k=10, keep_top_k=10)
    assert len(dets) == 2  # the 0.8 box overlaps the 0.9 one and is suppressed
    np.testing.assert_allclose(dets.scores, [0.9, 0.3])
    np.testing.assert_allclose(dets.boxes[0], [80, 80, 120, 120], atol=1e-4)  # prior corners * 400x200
    np.testing.assert_allclose(dets.landmarks[1], [[300, 100]] * 5, atol=1e-4)
    assert dets.landmarks.shape == (2, 5, 2)
    top1 = postprocess(np.zeros((3, 4), np.float32), prob, np.zeros((3, 10), np.float32), _priors(),
                       variances=(0.1, 0.2), geom=geom, score_threshold=0.2, nms_iou=0.4, top_k=10, keep_top_k=1)
    assert len(top1) == 1


def test_postprocess_nothing_above_threshold() -> None:
    geom = Geometry(scale=(1.0, 1.0), pad=(0, 0), input_wh=(200, 100), frame_wh=(200, 100))
    dets = postprocess(np.zeros((3, 4), np.float32), np.zeros(3, np.float32), np.zeros((3, 10), np.float32),
                       _priors(), variances=(0.1, 0.2), geom=geom, score_threshold=0.5, nms_iou=0.4, top_k=10,
                       keep_top_k=10)
    assert dets.boxes.shape == (0, 4) and dets.scores.shape == (0,) and dets.landmarks.shape == (0, 5, 2)
