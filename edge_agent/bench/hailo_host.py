"""Host work of one frame on the Hailo path, measured here with the daemon's real functions.

On the Hailo path the host does: capture decode, letterbox to the HEF's uint8 NHWC input (no normalisation:
it is folded into the HEF), dequantise the detector's uint8 raw heads to float32 (HailoRT does this on the
host), merge heads + decode + NMS, warp each face to a 160x160 uint8 crop, softmax, and the publish step
(tracker, message, JSON, send). Everything but the chip is timed here; the raw heads come from the deploy
detector's ONNX (untimed) and are quantised to 8 bits first, as the chip would deliver them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.backends.hailo_manifest import quantise_u8
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.bench.hailo_model import HostCosts
from edge_agent.bench.inputs import load_frames
from edge_agent.detector import split_outputs
from edge_agent.frames import Detections, Expressions
from edge_agent.manifest import Preprocess, load_artifact
from edge_agent.messages import EmotionMessage, encode
from edge_agent.pipeline import face_messages
from edge_agent.tracking import Tracker, TrackerConfig
from edge_agent.vision.anchors import prior_boxes
from edge_agent.vision.crop import crop_faces
from edge_agent.vision.decode import softmax
from edge_agent.vision.nms import postprocess
from edge_agent.vision.preprocess import prepare, to_tensor

HEF_INPUT_PRE_UPDATE: dict[str, Any] = {"layout": "NHWC", "dtype": "uint8", "scale": 1.0,
                                        "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def measure_host(detector_dir: Path, classifier_dir: Path, source: str, frames: int = 32,
                 repeat: int = 5) -> tuple[HostCosts, dict[str, Any]]:
    """Median host milliseconds per stage on this machine (unscaled) and facts about the measurement."""
    det_art, cls_art = load_artifact(detector_dir), load_artifact(classifier_dir)
    dm, cm = det_art.manifest, cls_art.manifest
    if dm.detector_outputs is None or dm.detector_outputs.kind != "raw_heads" or dm.anchors is None:
        raise ValueError(f"{dm.model_id}: the Hailo path needs the raw-heads deploy detector")
    fs = load_frames(source, max_frames=frames)
    capture_ms = 1000.0 * statistics.median(fs.capture_s)
    hef_pre = Preprocess.model_validate({**dm.preprocess.model_dump(), **HEF_INPUT_PRE_UPDATE})
    cls_pre = Preprocess.model_validate({**cm.preprocess.model_dump(), **HEF_INPUT_PRE_UPDATE})
    wh = (int(dm.preprocess.input_size[0]), int(dm.preprocess.input_size[1]))
    crop_wh = (int(cm.preprocess.input_size[0]), int(cm.preprocess.input_size[1]))
    onnx_det = OnnxBackend(det_art.path, intra_op_threads=1)
    in_name = dm.inputs[0].name
    labels = tuple(cm.labels or ())
    if not labels:
        raise ValueError(f"{cm.model_id}: a classifier manifest needs labels")
    tracker = Tracker(labels, TrackerConfig())
    stage: dict[str, list[float]] = {k: [] for k in ("preprocess", "dequantize", "decode", "crop", "post", "publish")}
    faces_seen: list[int] = []
    for i, img in enumerate(fs.frames):
        stage["preprocess"].append(_median_ms(lambda img=img: prepare(img, hef_pre, wh), repeat))  # type: ignore[misc]
        float_in, geom = prepare(img, dm.preprocess, wh)
        raw = onnx_det.run({in_name: float_in})
        quant = {k: quantise_u8(np.asarray(v, np.float32)) for k, v in raw.items()}

        def dequant(quant: dict[str, tuple[np.ndarray, float, float]] = quant) -> dict[str, np.ndarray]:
            return {k: (q.astype(np.float32) - zp) * s for k, (q, s, zp) in quant.items()}

        stage["dequantize"].append(_median_ms(dequant, repeat))
        outs = dequant()
        assert dm.detector_outputs is not None and dm.anchors is not None
        spec, anchors = dm.detector_outputs, dm.anchors

        def decode(outs: dict[str, np.ndarray] = outs, geom: Any = geom, spec: Any = spec,
                   anchors: Any = anchors) -> Detections:
            loc, prob, ldm = split_outputs(outs, spec)
            priors = prior_boxes(anchors, (geom.input_wh[1], geom.input_wh[0]))
            return postprocess(loc, prob, ldm, priors, variances=anchors.variances, geom=geom,
                               score_threshold=0.6, nms_iou=0.4, top_k=500, keep_top_k=50)

        stage["decode"].append(_median_ms(decode, repeat))
        dets = decode()
        n = len(dets)
        faces_seen.append(n)
        if n == 0:
            continue
        stage["crop"].append(_median_ms(
            lambda img=img, dets=dets: to_tensor(crop_faces(img, dets, crop_wh, 0.2), cls_pre), repeat) / n)  # type: ignore[misc]
        logits = np.random.default_rng(i).standard_normal((n, len(labels))).astype(np.float32)
        stage["post"].append(_median_ms(lambda logits=logits: softmax(logits, axis=1), repeat) / n)  # type: ignore[misc]
        expr = Expressions(labels, softmax(logits, axis=1))

        def publish(dets: Detections = dets, expr: Expressions = expr, i: int = i) -> bytes:
            tracks, _ = tracker.update(i / 30.0, dets.boxes, list(expr.probs))
            msg = EmotionMessage(camera_id="cam0", seq=i, frame_id=i, t_capture=time.time(), t_publish=time.time(),
                                 latency_ms=1.0, size=fs.size, backend="hailo",
                                 faces=face_messages(dets, expr, (), tracks))
            return encode(msg)

        stage["publish"].append(_median_ms(publish, 1))
    if not stage["crop"]:
        raise ValueError(f"{source}: no face found in {len(fs.frames)} frames; the host measurement needs faces")
    med = {k: statistics.median(v) for k, v in stage.items()}
    costs = HostCosts(capture=capture_ms, preprocess=med["preprocess"], dequantize=med["dequantize"],
                      decode=med["decode"], crop_per_face=med["crop"], classify_post_per_face=med["post"],
                      publish_base=med["publish"], publish_per_face=0.0)
    facts = {"source": source, "frames": len(fs.frames), "frame_size": list(fs.size),
             "faces_median": statistics.median(faces_seen), "repeat": repeat,
             "detector": dm.model_id, "classifier": cm.model_id}
    return costs, facts
