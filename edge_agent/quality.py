"""Face quality gates: which detected faces are worth classifying.

A face is published as detected but *not classified* (``label``/``confidence``/``probs`` null, ``skipped`` set)
when:

* ``too_small``: the shorter side of its box is below ``min_face_px`` frame pixels (0 = off);
* ``blurry``: the variance of the Laplacian of its box, converted to grayscale and resized to
  ``BLUR_SIDE`` x ``BLUR_SIDE`` (so the figure does not depend on the face's size in the frame), is below
  ``blur_threshold`` (0 = off). Sharp faces score in the hundreds, a heavily defocused one in the tens.

The size gate is checked first; the classifier is not called for a skipped face.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.frames import Detections, Expressions

SkipReason = Literal["too_small", "blurry"]
UInt8Image = npt.NDArray[np.uint8]
BLUR_SIDE: Final = 64


def min_side(box: npt.ArrayLike) -> float:
    """The shorter side of an x1, y1, x2, y2 box (0 for a degenerate box)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
    return max(0.0, min(x2 - x1, y2 - y1))


def laplacian_variance(image_bgr: UInt8Image, box: npt.ArrayLike) -> float:
    """Variance of the Laplacian of the box region (clipped to the frame), grayscale, resized to BLUR_SIDE^2.

    0.0 when the box lies outside the frame (nothing to measure: as blurry as it gets).
    """
    h, w = image_bgr.shape[:2]
    x1, y1, x2, y2 = np.asarray(box, np.float64).reshape(4)
    xa, ya = int(max(0, np.floor(x1))), int(max(0, np.floor(y1)))
    xb, yb = int(min(w, np.ceil(x2))), int(min(h, np.ceil(y2)))
    if xb - xa < 2 or yb - ya < 2:
        return 0.0
    region = image_bgr[ya:yb, xa:xb]
    gray = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY) if region.ndim == 3 else region
    gray = cv2.resize(gray, (BLUR_SIDE, BLUR_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def skip_reasons(image_bgr: UInt8Image, detections: Detections, min_face_px: float,
                 blur_threshold: float) -> list[SkipReason | None]:
    """Per face: why it is not classified, or None to classify it."""
    if min_face_px < 0 or blur_threshold < 0:
        raise ValueError(f"min_face_px and blur_threshold must be >= 0, got {min_face_px} and {blur_threshold}")
    out: list[SkipReason | None] = []
    for box in detections.boxes:
        if min_face_px > 0 and min_side(box) < min_face_px:
            out.append("too_small")
        elif blur_threshold > 0 and laplacian_variance(image_bgr, box) < blur_threshold:
            out.append("blurry")
        else:
            out.append(None)
    return out


def subset(detections: Detections, keep: Sequence[int]) -> Detections:
    """The detections at indices ``keep``, in that order."""
    idx = np.asarray(keep, np.intp)
    return Detections(detections.boxes[idx], detections.scores[idx], detections.landmarks[idx])


def expand(expr: Expressions, keep: Sequence[int], n: int) -> Expressions:
    """Probabilities of the ``keep`` faces placed back among ``n`` faces; the rows of the others are zero
    (they carry a skip reason and are published without probabilities)."""
    probs = np.zeros((n, len(expr.labels)), np.float32)
    if len(keep):
        probs[np.asarray(keep, np.intp)] = expr.probs
    return Expressions(expr.labels, probs)


Classify = Callable[[UInt8Image, Detections], tuple[Expressions, dict[str, float]]]


def classify_gated(classify: Classify, image_bgr: UInt8Image, detections: Detections, min_face_px: float,
                   blur_threshold: float) -> tuple[Expressions, dict[str, float], tuple[SkipReason | None, ...]]:
    """Run ``classify`` (e.g. ``ExpressionClassifier.classify_timed``) on the faces that pass the gates only.

    Returns probabilities for every face (zero rows for skipped ones), the classifier's stage times, and the
    per-face skip reasons (empty tuple when no face was skipped).
    """
    skipped = tuple(skip_reasons(image_bgr, detections, min_face_px, blur_threshold))
    keep = [i for i, reason in enumerate(skipped) if reason is None]
    if len(keep) == len(detections):
        expr, times = classify(image_bgr, detections)
        return expr, times, ()
    part, times = classify(image_bgr, subset(detections, keep))
    return expand(part, keep, len(detections)), times, skipped
