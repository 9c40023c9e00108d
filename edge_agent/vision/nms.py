"""Score filtering, greedy NMS and the mapping of detections back to frame pixels.

NMS follows biubug6 Pytorch_Retinaface's ``py_cpu_nms`` exactly: boxes are in (frame) pixels and areas and
intersections use the inclusive-pixel convention ``(x2 - x1 + 1) * (y2 - y1 + 1)``; a candidate is dropped when
its IoU with a kept box is strictly greater than the threshold. We keep the +1 on purpose so the daemon's
detections equal the reference pipeline's (the one RetinaFace was evaluated with); its effect is only visible
for boxes a few pixels wide. Candidates are visited in descending score order, ties broken by anchor index
(stable sort), which the torch reference in ``build/reference`` does too.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge_agent.frames import Detections
from edge_agent.vision.decode import decode_boxes, decode_landmarks
from edge_agent.vision.preprocess import Geometry

FloatArray = npt.NDArray[np.float32]
IndexArray = npt.NDArray[np.int64]


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> IndexArray:
    """Greedy NMS; returns the kept row indices (int64) in descending score order."""
    if boxes.shape[0] == 0:
        return np.zeros((0,), np.int64)
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def top_candidates(scores: FloatArray, threshold: float, top_k: int) -> IndexArray:
    """Indices with score > threshold, best first (stable on ties), at most ``top_k`` of them."""
    idx = np.flatnonzero(scores > threshold)
    order = np.argsort(-scores[idx], kind="stable")[:top_k]
    return idx[order].astype(np.int64, copy=False)


def to_frame_pixels(
    boxes: FloatArray, landmarks: FloatArray, geom: Geometry
) -> tuple[FloatArray, FloatArray]:
    """Normalised (network-relative) boxes (N,4) and landmarks (N,10) -> frame pixels."""
    in_w, in_h = geom.input_wh
    sx, sy = geom.scale
    fx, fy = np.float32(in_w / sx), np.float32(in_h / sy)
    box_scale = np.array([fx, fy, fx, fy], np.float32)
    ldm_scale = np.tile(np.array([fx, fy], np.float32), 5)
    return boxes * box_scale, landmarks * ldm_scale


def clip_to_frame(boxes: FloatArray, landmarks: FloatArray, frame_wh: tuple[int, int]) -> None:
    """Clip boxes (N,4) and landmarks (N,5,2) to [0, W] x [0, H] in place."""
    w, h = frame_wh
    np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
    np.clip(landmarks[..., 0], 0, w, out=landmarks[..., 0])
    np.clip(landmarks[..., 1], 0, h, out=landmarks[..., 1])


def postprocess(
    loc: FloatArray,
    face_prob: FloatArray,
    landm: FloatArray,
    priors: FloatArray,
    *,
    variances: tuple[float, float],
    geom: Geometry,
    score_threshold: float,
    nms_iou: float,
    top_k: int,
    keep_top_k: int,
) -> Detections:
    """Raw per-anchor outputs -> final detections in frame pixels.

    Same steps as biubug6's ``detect.py``: score > threshold, best ``top_k`` by score, decode (only those
    anchors), scale to frame pixels, NMS, best ``keep_top_k``; then clip to the frame (edge-agent addition).
    """
    if not (loc.shape[0] == face_prob.shape[0] == landm.shape[0] == priors.shape[0]):
        raise ValueError(
            f"anchor count mismatch: loc {loc.shape[0]}, conf {face_prob.shape[0]}, landmarks {landm.shape[0]}, "
            f"priors {priors.shape[0]} (does the manifest's anchor spec match the model and input size?)"
        )
    cand = top_candidates(face_prob, score_threshold, top_k)
    if cand.size == 0:
        return Detections.empty()
    boxes_n = decode_boxes(loc[cand], priors[cand], variances)
    ldm_n = decode_landmarks(landm[cand], priors[cand], variances)
    boxes, ldm = to_frame_pixels(boxes_n, ldm_n, geom)
    scores = face_prob[cand].astype(np.float32, copy=False)
    keep = nms(boxes, scores, nms_iou)[:keep_top_k]
    out_boxes = np.ascontiguousarray(boxes[keep])
    out_ldm = np.ascontiguousarray(ldm[keep]).reshape(-1, 5, 2)
    clip_to_frame(out_boxes, out_ldm, geom.frame_wh)
    return Detections(boxes=out_boxes, scores=np.ascontiguousarray(scores[keep]), landmarks=out_ldm)
