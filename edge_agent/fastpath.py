"""Fast detection mode: a full-frame detection every N frames, ROI re-detection around known faces in between.

``detector.mode = "fast"`` wraps the engine's :class:`~edge_agent.detector.FaceDetector` in a
:class:`ScheduledDetector` with the same ``detect_timed`` interface. Per frame it picks one of three plans
(:func:`plan_frame`):

* ``full``: the whole frame at the detector's full-frame input size -- on the first frame, every
  ``full_every`` frames, and whenever an ROI loses a face (then the same frame is re-detected in full, so a
  lost face costs one slower frame, never a missing one);
* ``roi``: for each face of the previous frame an expanded square (``roi_expand`` x the box's longer side,
  kept inside the frame, see :func:`roi_squares`) is cut out and detected at ``roi_size`` x ``roi_size``; the
  crop is resized in one step (:func:`resize_roi`), boxes and landmarks are mapped back to frame pixels
  (:func:`map_detections`) and merged by NMS (:func:`merge_detections`);
* ``skip``: no face known and no full detection due -> no detection at all (empty result).

More faces than :func:`roi_budget` (half as many ROIs as fit in the full input's pixels: 7 ROIs of 128 px for a
640x360 frame) makes every frame a full detection: in a crowd, ROIs would cost more than they save.

A face that enters the picture is therefore found at the next full detection: at most ``full_every - 1``
frames late. A face that moves is followed by its ROI as long as it stays inside the expanded square between
two frames (at ``roi_expand`` 2 that is half a face width per frame).

Full-frame input size (``full_size = "auto"``): after each full detection the next full detection's input
is scaled so the smallest face seen stays at least ``AUTO_MIN_FACE_PX`` network pixels (never above the
configured size, never below ``AUTO_MIN_SCALE`` of it); with no face seen the configured size is used. See
:func:`auto_full_size`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Final, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.detector import FaceDetector
from edge_agent.frames import Detections
from edge_agent.settings import DetectorSettings
from edge_agent.vision.nms import nms
from edge_agent.vision.preprocess import fit_size, round_up

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
UInt8Image = npt.NDArray[np.uint8]
Plan = Literal["full", "roi", "skip"]

AUTO_MIN_FACE_PX: Final = 48.0  # auto full size: the smallest face seen keeps at least this many network pixels
AUTO_MIN_SCALE: Final = 0.5  # ... and the full-frame input never shrinks below this fraction of its size
ROI_INTERPOLATION: Final = cv2.INTER_LINEAR
TIME_KEYS: Final = ("preprocess", "detector", "decode")


@dataclass(frozen=True)
class FastConfig:
    """The knobs of fast mode (bounded in settings.DetectorSettings)."""

    full_every: int = 10
    roi_expand: float = 2.0
    roi_size: int = 128
    full_size: Literal["auto", "fixed"] = "fixed"

    def __post_init__(self) -> None:
        if self.full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {self.full_every}")
        if not 1.0 <= self.roi_expand <= 8.0:
            raise ValueError(f"roi_expand must be in [1, 8], got {self.roi_expand}")
        if self.roi_size < 16:
            raise ValueError(f"roi_size must be >= 16, got {self.roi_size}")
        if self.full_size not in ("auto", "fixed"):
            raise ValueError(f"full_size must be auto or fixed, got {self.full_size!r}")


# -- pure geometry ---------------------------------------------------------------------------------------------

def plan_frame(frames_since_full: int, known_faces: int, full_every: int, max_rois: int) -> Plan:
    """What to run on this frame. ``frames_since_full`` counts frames since the last full detection (a large
    value before the first frame); ``known_faces`` is the number of faces found in the previous frame; more
    than ``max_rois`` faces (a crowd: the ROIs would cost more than one full detection) -> full."""
    if frames_since_full >= full_every or known_faces > max_rois:
        return "full"
    return "roi" if known_faces > 0 else "skip"


def roi_budget(network_wh: tuple[int, int], roi_size: int) -> int:
    """How many ROIs are still cheaper than one full detection at ``network_wh``: half the pixel ratio (a
    detector call has a fixed cost besides its pixels; ~0.3 of a 128 px ROI's ~1 ms on the CI machine), >= 1."""
    return max(1, (network_wh[0] * network_wh[1]) // (2 * roi_size * roi_size))


def roi_squares(boxes: FloatArray, frame_wh: tuple[int, int], expand: float) -> IntArray:
    """Integer squares (K,4) x1,y1,x2,y2 (x2/y2 exclusive) around boxes (K,4) in frame pixels.

    Each square is centred on its box with side ``expand`` x the box's longer side (at least 1 px), capped at
    the frame's shorter side and shifted (not cut) to lie inside the frame, so a face at the border keeps the
    same scale as one in the middle.
    """
    w, h = frame_wh
    if w < 1 or h < 1:
        raise ValueError(f"frame size must be positive, got {w}x{h}")
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    if b.shape[0] == 0:
        return np.zeros((0, 4), np.int64)
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * expand
    side = np.clip(np.ceil(side), 1, min(w, h))
    cx, cy = (b[:, 0] + b[:, 2]) / 2.0, (b[:, 1] + b[:, 3]) / 2.0
    x1 = np.clip(np.round(cx - side / 2.0), 0, w - side)
    y1 = np.clip(np.round(cy - side / 2.0), 0, h - side)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.int64)


def assign_rois(boxes: FloatArray, squares: IntArray) -> tuple[IntArray, IntArray]:
    """Drop squares whose face already lies wholly inside an earlier kept square (no second crop for it).

    Returns the kept squares (M,4) and, per kept square, how many of the faces it must contain (M,).
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    kept: list[int] = []
    counts: list[int] = []
    for i in range(b.shape[0]):
        home = -1
        for j, k in enumerate(kept):
            x1, y1, x2, y2 = squares[k]
            if b[i, 0] >= x1 and b[i, 1] >= y1 and b[i, 2] <= x2 and b[i, 3] <= y2:
                home = j
                break
        if home < 0:
            kept.append(i)
            counts.append(1)
        else:
            counts[home] += 1
    return squares[kept].reshape(-1, 4), np.asarray(counts, np.int64)


def map_detections(dets: Detections, offset_xy: tuple[float, float], scale: float = 1.0) -> Detections:
    """Detections found in a crop resized by ``1 / scale`` -> frame pixels: ``frame = crop_px * scale + offset``
    (the crop's top-left corner in the frame is ``offset_xy``)."""
    if len(dets) == 0:
        return dets
    ox, oy, k = np.float32(offset_xy[0]), np.float32(offset_xy[1]), np.float32(scale)
    boxes = dets.boxes * k + np.array([ox, oy, ox, oy], np.float32)
    landmarks = dets.landmarks * k + np.array([ox, oy], np.float32)
    return Detections(boxes=boxes.astype(np.float32), scores=dets.scores, landmarks=landmarks.astype(np.float32))


def resize_roi(image: UInt8Image, square: tuple[int, int, int, int], size: int) -> tuple[UInt8Image, float]:
    """Cut ``square`` out of the frame and resize it to ``size`` x ``size`` in one step (no intermediate copy).

    Bilinear, not area averaging: cv2's INTER_AREA at a non-integer ratio costs ~8x more (0.67 vs 0.08 ms for a
    360 px crop to 128 px on the CI machine) and changed no detection in the recall measurements
    (benchmarks/fast.sh). Returns the image and the scale back to frame pixels (side / size).
    """
    x1, y1, x2, y2 = square
    side = x2 - x1
    crop = image[y1:y2, x1:x2]
    if side == size:
        return np.ascontiguousarray(crop), 1.0
    out: UInt8Image = cv2.resize(crop, (size, size), interpolation=ROI_INTERPOLATION)  # type: ignore[assignment]
    return out, side / size


def merge_detections(parts: list[Detections], nms_iou: float, max_faces: int) -> Detections:
    """Detections of several ROIs (frame pixels) -> one set: NMS across ROIs, best ``max_faces`` kept."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    if len(parts) == 1 and len(parts[0]) <= max_faces:
        return parts[0]
    boxes = np.concatenate([p.boxes for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    landmarks = np.concatenate([p.landmarks for p in parts])
    keep = nms(boxes, scores, nms_iou)[:max_faces]
    return Detections(boxes=np.ascontiguousarray(boxes[keep]), scores=np.ascontiguousarray(scores[keep]),
                      landmarks=np.ascontiguousarray(landmarks[keep]))


def auto_full_size(boxes: FloatArray, configured_wh: tuple[int, int], frame_wh: tuple[int, int],
                   multiple: int) -> tuple[int, int]:
    """The full-frame input size for ``full_size = "auto"`` given the faces of the last full detection.

    The configured size is letterboxed from the frame at scale ``s0``; the smallest face (shorter box side
    ``m`` frame px) would be ``m * s0`` network px. Scale down by ``f = max(AUTO_MIN_SCALE, AUTO_MIN_FACE_PX /
    (m * s0))`` when ``f < 1`` (rounded up to ``multiple``); no face or small faces -> the configured size.
    """
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    cw, ch = configured_wh
    if b.shape[0] == 0:
        return configured_wh
    smallest = float(np.min(np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])))
    s0 = min(cw / frame_wh[0], ch / frame_wh[1])
    if smallest * s0 <= AUTO_MIN_FACE_PX:
        return configured_wh
    f = max(AUTO_MIN_SCALE, AUTO_MIN_FACE_PX / (smallest * s0))
    return (max(multiple, math.ceil(cw * f / multiple) * multiple),
            max(multiple, math.ceil(ch * f / multiple) * multiple))


def check_detector(detector: FaceDetector, config: FastConfig) -> None:
    """Raise ValueError when fast mode cannot run this detector with this config."""
    pre = detector.manifest.preprocess
    if not pre.dynamic_size:
        raise ValueError(f"{detector.manifest.model_id}: detector.mode fast runs the detector on "
                         f"{config.roi_size}px crops, which needs a model with a dynamic input "
                         "(preprocess.dynamic_size); use detector.mode full or a dynamic-size model")
    if config.roi_size % pre.size_multiple:
        raise ValueError(f"detector.roi_size {config.roi_size} must be a multiple of {pre.size_multiple} "
                         f"for {detector.manifest.model_id}")


# -- the scheduler ---------------------------------------------------------------------------------------------

@dataclass
class PlanCounts:
    """How many frames took each plan (``lost``: ROI frames that fell back to a full detection)."""

    full: int = 0
    roi: int = 0
    skip: int = 0
    lost: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # full-frame input (target) sizes used ("640x640": frames)

    def as_dict(self) -> dict[str, object]:
        return {"full": self.full, "roi": self.roi, "skip": self.skip, "lost": self.lost, "sizes": dict(self.sizes)}


def _add_times(total: dict[str, float], part: dict[str, float]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0.0) + v


class ScheduledDetector:
    """Fast mode around a full-frame FaceDetector (see the module docstring). Not thread-safe: one per stream."""

    def __init__(self, detector: FaceDetector, config: FastConfig) -> None:
        check_detector(detector, config)
        self.config = config
        self.full = detector
        self.roi = detector.with_input_size((config.roi_size, config.roi_size))
        self._full_by_size: dict[tuple[int, int], FaceDetector] = {detector.input_wh: detector}
        self._budget: dict[tuple[int, int], int] = {}  # frame size -> roi_budget at the full input size
        self.manifest = detector.manifest
        self.input_wh = detector.input_wh
        self.counts = PlanCounts()
        self.reset()

    def warm_up(self) -> None:
        """Run the ROI size once (its first-run allocations happen here, not on the first ROI frame)."""
        side = self.config.roi_size
        self.roi.detect(np.full((side, side, 3), 127, np.uint8))

    def reset(self) -> None:
        """Forget the faces and the schedule (the next frame is a full detection)."""
        self._since_full = self.config.full_every
        self._last = Detections.empty()
        self._full_wh = self.full.input_wh

    def detect(self, image_bgr: UInt8Image) -> Detections:
        return self.detect_timed(image_bgr)[0]

    def detect_timed(self, image_bgr: UInt8Image) -> tuple[Detections, dict[str, float]]:
        """Detections in frame pixels and the seconds of "preprocess", "detector", "decode" (all calls summed)."""
        times = dict.fromkeys(TIME_KEYS, 0.0)
        plan = plan_frame(self._since_full, len(self._last), self.config.full_every, self._max_rois(image_bgr))
        if plan == "skip":
            self.counts.skip += 1
            self._since_full += 1
            return Detections.empty(), times
        if plan == "roi":
            dets, lost = self._detect_rois(image_bgr, times)
            if not lost:
                self.counts.roi += 1
                self._since_full += 1
                self._last = dets
                return dets, times
            self.counts.lost += 1
        dets = self._detect_full(image_bgr, times)
        self.counts.full += 1
        self._since_full = 1
        self._last = dets
        return dets, times

    def _max_rois(self, image: UInt8Image) -> int:
        frame_wh = (int(image.shape[1]), int(image.shape[0]))
        budget = self._budget.get(frame_wh)
        if budget is None:
            multiple = self.manifest.preprocess.size_multiple
            (nw, nh), _ = fit_size(frame_wh, self.full.input_wh)
            budget = self._budget[frame_wh] = roi_budget((round_up(nw, multiple), round_up(nh, multiple)),
                                                         self.config.roi_size)
        return budget

    def _detect_full(self, image: UInt8Image, times: dict[str, float]) -> Detections:
        detector = self._full_detector(self._full_wh)
        key = f"{detector.input_wh[0]}x{detector.input_wh[1]}"
        self.counts.sizes[key] = self.counts.sizes.get(key, 0) + 1
        dets, t = detector.detect_timed(image)
        _add_times(times, t)
        if self.config.full_size == "auto":
            frame_wh = (int(image.shape[1]), int(image.shape[0]))
            self._full_wh = auto_full_size(dets.boxes, self.full.input_wh, frame_wh,
                                           self.manifest.preprocess.size_multiple)
        return dets

    def _full_detector(self, wh: tuple[int, int]) -> FaceDetector:
        det = self._full_by_size.get(wh)
        if det is None:
            det = self._full_by_size[wh] = self.full.with_input_size(wh)
        return det

    def _detect_rois(self, image: UInt8Image, times: dict[str, float]) -> tuple[Detections, bool]:
        """ROI re-detection of the previous frame's faces; ``lost`` when a ROI found fewer faces than it had."""
        t0 = time.perf_counter()
        frame_wh = (int(image.shape[1]), int(image.shape[0]))
        squares, expected = assign_rois(self._last.boxes, roi_squares(self._last.boxes, frame_wh,
                                                                       self.config.roi_expand))
        times["preprocess"] += time.perf_counter() - t0
        parts: list[Detections] = []
        for (x1, y1, x2, y2), want in zip(squares.tolist(), expected.tolist(), strict=True):
            t2 = time.perf_counter()
            crop, scale = resize_roi(image, (x1, y1, x2, y2), self.config.roi_size)
            times["preprocess"] += time.perf_counter() - t2
            dets, t = self.roi.detect_timed(crop)
            _add_times(times, t)
            if len(dets) < want:
                return Detections.empty(), True
            parts.append(map_detections(dets, (x1, y1), scale))
        t1 = time.perf_counter()
        merged = merge_detections(parts, self.full.nms_iou, self.full.max_faces)
        times["decode"] += time.perf_counter() - t1
        return merged, False


def fast_config(settings: DetectorSettings) -> FastConfig | None:
    """The FastConfig ``detector.mode`` asks for (None for "full")."""
    if settings.mode == "full":
        return None
    return FastConfig(full_every=settings.full_every, roi_expand=settings.roi_expand, roi_size=settings.roi_size,
                      full_size=settings.full_size)


FrameDetector = FaceDetector | ScheduledDetector


def frame_detector(detector: FaceDetector, config: FastConfig | None) -> FrameDetector:
    """What the inference loop calls per frame: the detector itself (full mode) or fast mode around it."""
    if config is None:
        return detector
    log.info("detector mode fast: full detection every %d frames, ROI x%.2f at %dpx, full size %s",
             config.full_every, config.roi_expand, config.roi_size, config.full_size)
    return ScheduledDetector(detector, config)


def warm_up_frame_detector(detector: FrameDetector) -> None:
    """Fast mode: run the ROI input size once before the first frame (full mode: nothing to do)."""
    if isinstance(detector, ScheduledDetector):
        detector.warm_up()
