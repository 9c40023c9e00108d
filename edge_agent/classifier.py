"""Expression classifier: per-face crops -> one batched backend call -> softmax -> labels in manifest order."""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt

from edge_agent.backends.base import Backend
from edge_agent.frames import Detections, Expressions
from edge_agent.manifest import ManifestError, ModelArtifact, verify_session
from edge_agent.vision.crop import crop_faces
from edge_agent.vision.decode import softmax
from edge_agent.vision.preprocess import to_tensor

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
UInt8Image = npt.NDArray[np.uint8]


class ExpressionClassifier:
    """Classify the faces of a frame with a classifier artifact (logits output) on some backend.

    Crops: a square of side ``max(w, h) * (1 + 2 * margin)`` around each box, or (``align=True``) a 5-point
    similarity alignment, warped straight to the model's input size. All faces of a frame go to the backend in
    one call when the model's batch dimension is dynamic and there are at most ``max_batch`` faces; otherwise in
    chunks of ``max_batch`` (dynamic batch) or of the model's fixed batch size (the last chunk zero-padded).
    """

    def __init__(
        self,
        artifact: ModelArtifact,
        backend: Backend,
        *,
        margin: float = 0.2,
        align: bool = False,
        max_batch: int = 16,
    ) -> None:
        m = artifact.manifest
        if m.task != "classifier" or not m.labels:
            raise ManifestError(f"{m.model_id}: ExpressionClassifier needs a classifier artifact with labels")
        if len(m.inputs) != 1 or len(m.outputs) != 1:
            raise ManifestError(f"{m.model_id}: a classifier has one input and one output, the manifest lists "
                             f"{len(m.inputs)} and {len(m.outputs)}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if m.inputs[0].dtype != m.preprocess.dtype:
            raise ManifestError(f"{m.model_id}: input {m.inputs[0].name} is {m.inputs[0].dtype} but preprocess.dtype "
                             f"is {m.preprocess.dtype}; fix the manifest")
        k_out = m.outputs[0].shape[-1]
        if isinstance(k_out, int) and k_out != len(m.labels):
            raise ManifestError(f"{m.model_id}: output {m.outputs[0].name} has {k_out} classes but the manifest has "
                             f"{len(m.labels)} labels")
        verify_session(m, backend.inputs, backend.outputs)
        self.manifest = m
        self.backend = backend
        self.labels: tuple[str, ...] = tuple(m.labels)
        self.input_name = m.inputs[0].name
        self.output_name = m.outputs[0].name
        self.input_wh = (int(m.preprocess.input_size[0]), int(m.preprocess.input_size[1]))
        batch_dim = m.inputs[0].shape[0]
        self.fixed_batch: int | None = batch_dim if isinstance(batch_dim, int) else None
        self.chunk = self.fixed_batch or max_batch
        self.margin = margin
        self.align = align

    def classify(self, image_bgr: UInt8Image, detections: Detections) -> Expressions:
        return self.classify_timed(image_bgr, detections)[0]

    def classify_timed(
        self, image_bgr: UInt8Image, detections: Detections
    ) -> tuple[Expressions, dict[str, float]]:
        """Expressions for every detection (probs (N, K)) and seconds spent in "crop" and "classifier"."""
        n, k = len(detections), len(self.labels)
        if n == 0:
            return Expressions(self.labels, np.zeros((0, k), np.float32)), {"crop": 0.0, "classifier": 0.0}
        t0 = time.perf_counter()
        crops = crop_faces(image_bgr, detections, self.input_wh, self.margin, self.align)
        tensor = to_tensor(crops, self.manifest.preprocess)
        t1 = time.perf_counter()
        logits = np.empty((n, k), np.float32)
        for start in range(0, n, self.chunk):
            part = tensor[start:start + self.chunk]
            rows = part.shape[0]
            if self.fixed_batch is not None and rows < self.fixed_batch:
                padded = np.zeros((self.fixed_batch, *part.shape[1:]), part.dtype)
                padded[:rows] = part
                part = padded
            out = self.backend.run({self.input_name: part})[self.output_name]
            logits[start:start + rows] = np.asarray(out, np.float32)[:rows]
        probs = softmax(logits, axis=1)
        t2 = time.perf_counter()
        return Expressions(self.labels, probs), {"crop": t1 - t0, "classifier": t2 - t1}
