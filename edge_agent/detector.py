"""Face detector: manifest-driven preprocess -> backend -> decode -> NMS, for any RetinaFace-style artifact.

Works with both detector output kinds a manifest can declare: ``decoded`` (concatenated (1,A,4) loc,
(1,A,2) conf, (1,A,10) landmarks in prior order) and ``raw_heads`` (per-stride conv outputs, merged on the
host). Everything after the backend call is shared pure numpy, so every backend yields the same detections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from edge_agent.backends.base import Backend, Tensor
from edge_agent.frames import Detections
from edge_agent.manifest import AnchorSpec, DetectorOutputs, ManifestError, ModelArtifact, verify_session
from edge_agent.vision.anchors import prior_boxes
from edge_agent.vision.decode import face_probability, merge_raw_heads
from edge_agent.vision.nms import postprocess
from edge_agent.vision.preprocess import network_size, prepare

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
UInt8Image = npt.NDArray[np.uint8]


def split_outputs(
    outputs: Mapping[str, Tensor], spec: DetectorOutputs
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Backend outputs -> (A,4) loc, (A,) face probability, (A,10) landmarks, in prior order."""
    if spec.kind == "decoded":
        if not (spec.loc and spec.conf and spec.landmarks):  # the manifest validator already refuses this
            raise ValueError("detector_outputs of kind 'decoded' need loc, conf and landmarks")
        loc = np.asarray(outputs[spec.loc], np.float32)[0]
        conf = np.asarray(outputs[spec.conf], np.float32)[0]
        ldm = np.asarray(outputs[spec.landmarks], np.float32)[0]
        return loc, face_probability(conf, spec.conf_is_probability), ldm
    loc, logits, ldm = merge_raw_heads(outputs, spec.heads, spec.heads_layout)
    return loc, face_probability(logits, is_probability=False), ldm


class FaceDetector:
    """Find faces in BGR frames with a detector artifact loaded on some backend."""

    def __init__(
        self,
        artifact: ModelArtifact,
        backend: Backend,
        *,
        score_threshold: float = 0.6,
        nms_iou: float = 0.4,
        input_size: tuple[int, int] | None = None,
        top_k: int = 500,
        max_faces: int = 50,
    ) -> None:
        m = artifact.manifest
        if m.task != "detector" or m.anchors is None or m.detector_outputs is None:
            raise ManifestError(f"{m.model_id}: FaceDetector needs a detector artifact, got task {m.task!r}")
        if not 0.0 <= score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
        if not 0.0 < nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if top_k < 1 or max_faces < 1:
            raise ValueError(f"top_k and max_faces must be >= 1, got {top_k} and {max_faces}")
        if len(m.inputs) != 1:
            raise ManifestError(f"{m.model_id}: a detector has one input, the manifest lists {len(m.inputs)}")
        if m.inputs[0].dtype != m.preprocess.dtype:
            raise ManifestError(f"{m.model_id}: input {m.inputs[0].name} is {m.inputs[0].dtype} but preprocess.dtype "
                             f"is {m.preprocess.dtype}; fix the manifest")
        verify_session(m, backend.inputs, backend.outputs)
        self.artifact = artifact
        self.manifest = m
        self.backend = backend
        self.anchors: AnchorSpec = m.anchors
        self.outputs_spec: DetectorOutputs = m.detector_outputs
        self.input_name = m.inputs[0].name
        self.input_wh = network_size(m.preprocess, input_size)
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.top_k = top_k
        self.max_faces = max_faces

    def with_input_size(self, input_size: tuple[int, int]) -> FaceDetector:
        """The same model and session at another input size (dynamic-size models; fast mode's ROI detector)."""
        return FaceDetector(self.artifact, self.backend, score_threshold=self.score_threshold, nms_iou=self.nms_iou,
                            input_size=input_size, top_k=self.top_k, max_faces=self.max_faces)

    def detect(self, image_bgr: UInt8Image) -> Detections:
        return self.detect_timed(image_bgr)[0]

    def detect_timed(self, image_bgr: UInt8Image) -> tuple[Detections, dict[str, float]]:
        """Detections in frame pixels and the seconds spent in "preprocess", "detector" and "decode"."""
        t0 = time.perf_counter()
        tensor, geom = prepare(image_bgr, self.manifest.preprocess, self.input_wh)
        t1 = time.perf_counter()
        outputs = self.backend.run({self.input_name: tensor})
        t2 = time.perf_counter()
        loc, prob, ldm = split_outputs(outputs, self.outputs_spec)
        priors = prior_boxes(self.anchors, (geom.input_wh[1], geom.input_wh[0]))
        dets = postprocess(
            loc, prob, ldm, priors,
            variances=self.anchors.variances, geom=geom,
            score_threshold=self.score_threshold, nms_iou=self.nms_iou,
            top_k=self.top_k, keep_top_k=self.max_faces,
        )
        t3 = time.perf_counter()
        return dets, {"preprocess": t1 - t0, "detector": t2 - t1, "decode": t3 - t2}
