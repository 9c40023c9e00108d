"""Per-face crops for the classifier: square box crops with margin, or 5-point aligned crops.

Every crop is one ``cv2.warpAffine`` from the frame into a preallocated (N, H, W, 3) uint8 batch; parts of the
crop outside the frame are black. The batch is turned into the classifier's tensor by
:func:`edge_agent.vision.preprocess.to_tensor`.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.frames import Detections
from edge_agent.vision.align import F64, alignment_matrix, to_pixel_index_matrix

log = logging.getLogger(__name__)

UInt8Image = npt.NDArray[np.uint8]


def square_box(box: npt.ArrayLike, margin: float) -> tuple[float, float, float]:
    """Square around a box x1,y1,x2,y2: side ``max(w, h) * (1 + 2 * margin)`` centred on the box.

    Returns (x0, y0, side) in continuous frame coordinates. ``margin`` is the context added on each side as a
    fraction of the larger box side (0.2 -> 20 % of the face size on every side).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, np.float64).reshape(4))
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return cx - side / 2.0, cy - side / 2.0, side


def crop_matrix(box: npt.ArrayLike, out_wh: tuple[int, int], margin: float) -> F64:
    """(2,3) continuous-coordinate affine taking the square around ``box`` onto the ``out_wh`` output."""
    x0, y0, side = square_box(box, margin)
    sx, sy = out_wh[0] / side, out_wh[1] / side
    return np.array([[sx, 0.0, -sx * x0], [0.0, sy, -sy * y0]], np.float64)


def face_matrices(dets: Detections, out_wh: tuple[int, int], margin: float, align: bool) -> list[F64]:
    """One continuous-coordinate matrix per detection (aligned on landmarks, or the square box crop).

    With ``align=True`` a face whose five landmarks are degenerate (all at one point, e.g. clipped at the
    frame corner) gets the box crop instead, and a warning says so.
    """
    mats: list[F64] = []
    for i in range(len(dets)):
        if align:
            try:
                mats.append(alignment_matrix(dets.landmarks[i], out_wh, margin))
                continue
            except ValueError:
                log.warning("face %d: landmarks are degenerate, using the box crop instead of alignment", i)
        mats.append(crop_matrix(dets.boxes[i], out_wh, margin))
    return mats


def warp_faces(image_bgr: UInt8Image, matrices: list[F64], out_wh: tuple[int, int]) -> UInt8Image:
    """Warp the frame once per matrix into an (N, H, W, 3) uint8 batch (black outside the frame)."""
    w, h = out_wh
    batch: UInt8Image = np.empty((len(matrices), h, w, 3), np.uint8)
    for i, m in enumerate(matrices):
        cv2.warpAffine(
            image_bgr, to_pixel_index_matrix(m), (w, h), dst=batch[i],
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0),
        )
    return batch


def crop_faces(
    image_bgr: UInt8Image, dets: Detections, out_wh: tuple[int, int], margin: float = 0.2, align: bool = False
) -> UInt8Image:
    """Frame + detections -> (N, H, W, 3) uint8 BGR face crops (N may be 0)."""
    return warp_faces(image_bgr, face_matrices(dets, out_wh, margin, align), out_wh)
