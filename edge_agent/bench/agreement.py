"""Detection agreement of two configurations on the same frames: recall of A against B's detections.

``edge-bench --compare A B`` records every timed frame's boxes (by frame index). B's boxes the first time it
saw a frame are the pseudo ground truth of that frame (B is the reference, e.g. ``mode=full``); every recorded
frame of A -- and of B itself, which shows whether B is deterministic -- is matched one-to-one against it
(greedy, best IoU first, IoU >= ``iou``). Recall = matched / pseudo-ground-truth faces over all recorded
frames; precision = matched / predicted faces. ``recall_ratio`` = A's recall / B's own recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.bench.identical import match_boxes

Records = Sequence[tuple[int, npt.NDArray[Any]]]


def matched_count(pred: npt.ArrayLike, gt: npt.ArrayLike, iou: float) -> int:
    """Greedy one-to-one matches (highest IoU pair first) with IoU >= ``iou`` between two box sets
    (:func:`edge_agent.bench.identical.match_boxes`, counted)."""
    boxes_p = np.asarray(pred, np.float32).reshape(-1, 4)
    boxes_g = np.asarray(gt, np.float32).reshape(-1, 4)
    return len(match_boxes(boxes_p, boxes_g, iou).ious)


def _score(records: Records, truth: dict[int, npt.NDArray[Any]], iou: float) -> dict[str, Any]:
    gt = pred = tp = frames = 0
    for idx, boxes in records:
        ref = truth.get(idx)
        if ref is None:
            continue
        frames += 1
        gt += int(ref.shape[0])
        pred += int(np.asarray(boxes).reshape(-1, 4).shape[0])
        tp += matched_count(boxes, ref, iou)
    return {
        "frames": frames,
        "reference_faces": gt,
        "predicted_faces": pred,
        "matched": tp,
        "recall": round(tp / gt, 5) if gt else None,
        "precision": round(tp / pred, 5) if pred else None,
    }


def detection_agreement(a: Records, b: Records, iou: float = 0.5) -> dict[str, Any]:
    """Recall/precision of A's and of B's recorded boxes against B's first boxes per frame (see module doc)."""
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    truth: dict[int, npt.NDArray[Any]] = {}
    for idx, boxes in b:
        truth.setdefault(idx, np.asarray(boxes).reshape(-1, 4))
    sa, sb = _score(a, truth, iou), _score(b, truth, iou)
    ratio = None
    if sa["recall"] is not None and sb["recall"]:
        ratio = round(sa["recall"] / sb["recall"], 5)
    return {"iou": iou, "reference": "B (its boxes the first time it saw each frame)", "A": sa, "B": sb,
            "recall_ratio": ratio}
