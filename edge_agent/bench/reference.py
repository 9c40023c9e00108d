"""The straightforward reference pipeline (the "before" of the performance work), for ``--compare``.

What a first implementation does: the plain RetinaFace-0.25 ONNX at the frame's native resolution (padded
right/bottom to the model's size multiple, no resizing), priors rebuilt for every frame, full decode of every
anchor before thresholding, then one classifier call per face with a square crop resized by ``cv2.resize``.
Plain Python and numpy, nothing overlapped, nothing cached. It follows each model's manifest (colour order,
mean/std, anchors), so its detections match the daemon's up to the resolution it runs at.
"""

from __future__ import annotations

import logging
import math
import time

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.bench.runner import BenchConfig, FrameTimes
from edge_agent.frames import Detections, Expressions, UInt8Image
from edge_agent.manifest import ModelArtifact, Preprocess, load_artifact

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


def _session(art: ModelArtifact, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(art.path), sess_options=opts, providers=["CPUExecutionProvider"])


def _normalise(img_bgr: UInt8Image, pre: Preprocess) -> F32:
    img = img_bgr[..., ::-1] if pre.color_order == "RGB" else img_bgr
    x: F32 = img.astype(np.float32) * np.float32(pre.scale)
    x -= np.asarray(pre.mean, np.float32)
    x /= np.asarray(pre.std, np.float32)
    x = x.transpose(2, 0, 1) if pre.layout == "NCHW" else x
    out: F32 = x[None].astype(np.float32)
    return out


def _priors(min_sizes: tuple[tuple[int, ...], ...], steps: tuple[int, ...], h: int, w: int) -> F32:
    anchors: list[float] = []
    for k, step in enumerate(steps):
        for i in range(math.ceil(h / step)):
            for j in range(math.ceil(w / step)):
                for ms in min_sizes[k]:
                    anchors += [(j + 0.5) * step / w, (i + 0.5) * step / h, ms / w, ms / h]
    return np.asarray(anchors, np.float32).reshape(-1, 4)


def _nms(dets: F32, thresh: float) -> list[int]:
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


class ReferencePipeline:
    """Native-resolution detector + per-face classifier calls; ``process`` has the EdgeProcessor signature."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.detector_artifact = load_artifact(cfg.detector)
        self.classifier_artifact = load_artifact(cfg.classifier)
        dm = self.detector_artifact.manifest
        if dm.detector_outputs is None or dm.detector_outputs.kind != "decoded" or dm.anchors is None:
            raise ValueError(f"{dm.model_id}: the reference pipeline needs a 'decoded' detector (plain RetinaFace)")
        if not dm.preprocess.dynamic_size:
            raise ValueError(f"{dm.model_id}: the reference pipeline runs at native resolution and needs a "
                             "dynamic-size detector export")
        cm = self.classifier_artifact.manifest
        self.labels: tuple[str, ...] = tuple(cm.labels or ())
        self.det = _session(self.detector_artifact, cfg.threads)
        self.cls = _session(self.classifier_artifact, cfg.threads)
        self.detector_input_wh: tuple[int, int] | None = None

    def detect(self, image: UInt8Image) -> Detections:
        return self._detect(image)[0]

    def _detect(self, image: UInt8Image) -> tuple[Detections, FrameTimes]:
        m = self.detector_artifact.manifest
        assert m.anchors is not None and m.detector_outputs is not None
        out = m.detector_outputs
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        mult = m.preprocess.size_multiple
        ph, pw = math.ceil(h / mult) * mult, math.ceil(w / mult) * mult
        padded = np.zeros((ph, pw, 3), np.uint8)
        padded[:h, :w] = image
        x = _normalise(padded, m.preprocess)
        t1 = time.perf_counter()
        loc, conf, landms = self.det.run([out.loc, out.conf, out.landmarks], {m.inputs[0].name: x})
        t2 = time.perf_counter()
        priors = _priors(m.anchors.min_sizes, m.anchors.steps, ph, pw)
        v0, v1 = m.anchors.variances
        loc, conf, landms = loc[0], conf[0], landms[0]
        boxes = np.concatenate((priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:],
                                priors[:, 2:] * np.exp(loc[:, 2:] * v1)), 1)
        boxes[:, :2] -= boxes[:, 2:] / 2
        boxes[:, 2:] += boxes[:, :2]
        boxes *= np.array([pw, ph, pw, ph], np.float32)
        if out.conf_is_probability:
            scores = conf[:, 1]
        else:
            e = np.exp(conf - conf.max(axis=1, keepdims=True))
            scores = (e / e.sum(axis=1, keepdims=True))[:, 1]
        lm = np.concatenate([priors[:, :2] + landms[:, 2 * k:2 * k + 2] * v0 * priors[:, 2:] for k in range(5)], 1)
        lm *= np.tile(np.array([pw, ph], np.float32), 5)
        inds = np.where(scores > self.cfg.score_threshold)[0]
        boxes, lm, scores = boxes[inds], lm[inds], scores[inds]
        order = scores.argsort()[::-1][:500]
        boxes, lm, scores = boxes[order], lm[order], scores[order]
        dets = np.hstack((boxes, scores[:, None])).astype(np.float32)
        keep = _nms(dets, self.cfg.nms_iou)[:50]
        b = dets[keep, :4].copy()
        b[:, 0::2] = b[:, 0::2].clip(0, w)
        b[:, 1::2] = b[:, 1::2].clip(0, h)
        result = Detections(boxes=b.astype(np.float32), scores=dets[keep, 4].astype(np.float32),
                            landmarks=lm[keep].reshape(-1, 5, 2).astype(np.float32))
        t3 = time.perf_counter()
        return result, {"preprocess": t1 - t0, "detector": t2 - t1, "decode": t3 - t2}

    def process(self, image: UInt8Image) -> tuple[Detections, Expressions, FrameTimes]:
        dets, times = self._detect(image)
        cm = self.classifier_artifact.manifest
        in_w, in_h = cm.preprocess.input_size
        probs = np.zeros((len(dets), len(self.labels)), np.float32)
        t_crop = t_cls = 0.0
        h, w = image.shape[:2]
        for i, (x1, y1, x2, y2) in enumerate(dets.boxes.tolist()):
            t0 = time.perf_counter()
            side = max(x2 - x1, y2 - y1) * (1 + 2 * self.cfg.margin)
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            a, b = round(cx - side / 2), round(cy - side / 2)
            s = max(1, round(side))
            canvas = np.zeros((s, s, 3), np.uint8)  # outside the frame stays black
            sa, sb, ea, eb = max(a, 0), max(b, 0), min(a + s, w), min(b + s, h)
            if ea > sa and eb > sb:
                canvas[sb - b:eb - b, sa - a:ea - a] = image[sb:eb, sa:ea]
            crop = cv2.resize(canvas, (in_w, in_h), interpolation=cv2.INTER_LINEAR)
            x = _normalise(crop, cm.preprocess)  # type: ignore[arg-type]
            t1 = time.perf_counter()
            logits = self.cls.run(None, {cm.inputs[0].name: x})[0][0]
            e = np.exp(logits - logits.max())
            probs[i] = e / e.sum()
            t2 = time.perf_counter()
            t_crop += t1 - t0
            t_cls += t2 - t1
        times.update({"crop": t_crop, "classifier": t_cls})
        return dets, Expressions(self.labels, probs), times

    def close(self) -> None:
        del self.det, self.cls
