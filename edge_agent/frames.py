"""Small immutable records that flow through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
UInt8Image = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame. ``image`` is HxWx3 uint8 in BGR order (OpenCV's native order)."""

    seq: int  # strictly increasing per source, from 0
    t_capture: float  # time.monotonic() when the frame was grabbed
    t_wall: float  # time.time() at the same instant (for consumers on other hosts)
    image: UInt8Image
    frame_id: int = -1  # source position (file frame index) if known, else == seq

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Detections:
    """Faces found in one frame, in original-frame pixel coordinates.

    boxes: (N, 4) float32 x1, y1, x2, y2; scores: (N,) float32; landmarks: (N, 5, 2) float32
    (left eye, right eye, nose, left mouth corner, right mouth corner, as RetinaFace orders them).
    """

    boxes: FloatArray
    scores: FloatArray
    landmarks: FloatArray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
        )


@dataclass(frozen=True, slots=True)
class Expressions:
    """Classifier output for the faces of one frame: probs (N, K) float32, labels in manifest order."""

    labels: tuple[str, ...]
    probs: FloatArray

    def top(self, i: int) -> tuple[str, float]:
        k = int(np.argmax(self.probs[i]))
        return self.labels[k], float(self.probs[i, k])


@dataclass(slots=True)
class StageTimes:
    """Per-frame stage durations in seconds (filled as the frame moves through the pipeline)."""

    preprocess: float = 0.0
    detector: float = 0.0
    decode: float = 0.0
    classifier: float = 0.0
    publish: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
