"""Detection metrics (pure numpy): IoU, best-IoU matching, VOC all-point AP, COCO-style AP at IoU 0.5.

``ap50`` is the metric for users' own annotated images (``edge-bench eval ap50``). Boxes are x1, y1, x2, y2 in
continuous pixel coordinates (area = w * h, no +1). COCO conventions: detections are visited best score first
over the whole data set, each one matches the unmatched ground-truth box it overlaps most (IoU >= threshold);
ground-truth boxes flagged ``ignore`` neither count as positives nor make a detection matched to them a false
positive; precision is made monotone and sampled at 101 recall points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike, plus_one: bool = False) -> F64:
    """(N, M) IoU of boxes ``a`` (N,4) against ``b`` (M,4), x1,y1,x2,y2.

    ``plus_one=True`` uses the inclusive-pixel convention ``(x2 - x1 + 1) * (y2 - y1 + 1)`` of the WIDER FACE
    evaluation code (its Cython ``bbox_overlaps``).
    """
    aa = np.asarray(a, np.float64).reshape(-1, 4)
    bb = np.asarray(b, np.float64).reshape(-1, 4)
    e = 1.0 if plus_one else 0.0
    area_a = (aa[:, 2] - aa[:, 0] + e) * (aa[:, 3] - aa[:, 1] + e)
    area_b = (bb[:, 2] - bb[:, 0] + e) * (bb[:, 3] - bb[:, 1] + e)
    iw = np.minimum(aa[:, None, 2], bb[None, :, 2]) - np.maximum(aa[:, None, 0], bb[None, :, 0]) + e
    ih = np.minimum(aa[:, None, 3], bb[None, :, 3]) - np.maximum(aa[:, None, 1], bb[None, :, 1]) + e
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def best_iou_match(pred_boxes: npt.ArrayLike, gt_box: npt.ArrayLike) -> tuple[int, float]:
    """Index of the predicted box with the highest IoU with one ground-truth box, and that IoU (-1, 0.0 if none)."""
    p = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    if p.shape[0] == 0:
        return -1, 0.0
    ious = iou_matrix(p, gt_box)[:, 0]
    i = int(np.argmax(ious))
    return i, float(ious[i])


def voc_ap(recall: npt.ArrayLike, precision: npt.ArrayLike) -> float:
    """VOC all-point interpolated AP (area under the monotone precision envelope), as WIDER FACE computes it."""
    rec = np.asarray(recall, np.float64)
    prec = np.asarray(precision, np.float64)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


@dataclass(frozen=True)
class ImageBoxes:
    """One image's predictions and ground truth (x1,y1,x2,y2); ``gt_ignore`` flags boxes that must not count."""

    pred_boxes: F64
    pred_scores: F64
    gt_boxes: F64
    gt_ignore: BoolArray


def make_image(
    pred_boxes: npt.ArrayLike,
    pred_scores: npt.ArrayLike,
    gt_boxes: npt.ArrayLike,
    gt_ignore: Sequence[bool] | None = None,
) -> ImageBoxes:
    pb = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    ps = np.asarray(pred_scores, np.float64).reshape(-1)
    gb = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    if pb.shape[0] != ps.shape[0]:
        raise ValueError(f"{pb.shape[0]} predicted boxes but {ps.shape[0]} scores")
    ig = np.zeros(gb.shape[0], np.bool_) if gt_ignore is None else np.asarray(gt_ignore, np.bool_).reshape(-1)
    if ig.shape[0] != gb.shape[0]:
        raise ValueError(f"{gb.shape[0]} ground-truth boxes but {ig.shape[0]} ignore flags")
    return ImageBoxes(pb, ps, gb, ig)


@dataclass(frozen=True)
class APResult:
    ap: float
    precision: F64  # at each detection in global score order (counted detections only)
    recall: F64
    scores: F64
    num_positives: int
    num_detections: int

    def to_dict(self) -> dict[str, float | int]:
        return {"ap50": self.ap, "num_positives": self.num_positives, "num_detections": self.num_detections}


def _match_image(img: ImageBoxes, iou_threshold: float) -> tuple[F64, npt.NDArray[np.int8]]:
    """Per prediction: 1 true positive, 0 false positive, -1 ignored (matched an ignored gt). Greedy, COCO order."""
    order = np.argsort(-img.pred_scores, kind="stable")
    status = np.zeros(order.size, np.int8)
    if img.gt_boxes.shape[0] == 0:
        return img.pred_scores[order], status
    ious = iou_matrix(img.pred_boxes[order], img.gt_boxes)
    # COCO visits non-ignored gts first; an ignored gt can absorb any number of detections.
    gt_order = np.argsort(img.gt_ignore, kind="stable")
    taken = np.zeros(img.gt_boxes.shape[0], np.bool_)
    for d in range(order.size):
        best, best_iou = -1, iou_threshold
        for g in gt_order:
            if taken[g] and not img.gt_ignore[g]:
                continue
            if best >= 0 and not img.gt_ignore[best] and img.gt_ignore[g]:
                break  # a real match beats any ignored one
            if ious[d, g] >= best_iou:
                best, best_iou = int(g), float(ious[d, g])
        if best < 0:
            continue
        if img.gt_ignore[best]:
            status[d] = -1
        else:
            status[d] = 1
            taken[best] = True
    return img.pred_scores[order], status


def ap50(images: Sequence[ImageBoxes], iou_threshold: float = 0.5) -> APResult:
    """COCO-style AP at one IoU threshold (101-point interpolation) over a set of images."""
    scores: list[F64] = []
    status: list[npt.NDArray[np.int8]] = []
    positives = 0
    for img in images:
        s, st = _match_image(img, iou_threshold)
        scores.append(s)
        status.append(st)
        positives += int((~img.gt_ignore).sum())
    all_s = np.concatenate(scores) if scores else np.zeros(0)
    all_st = np.concatenate(status) if status else np.zeros(0, np.int8)
    order = np.argsort(-all_s, kind="mergesort")
    all_s, all_st = all_s[order], all_st[order]
    keep = all_st >= 0
    all_s, all_st = all_s[keep], all_st[keep]
    tp = np.cumsum(all_st == 1).astype(np.float64)
    fp = np.cumsum(all_st == 0).astype(np.float64)
    recall = tp / positives if positives else np.zeros_like(tp)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if positives == 0:
        return APResult(0.0, precision, recall, all_s, 0, int(all_s.size))
    env = precision.copy()
    for i in range(env.size - 1, 0, -1):
        env[i - 1] = max(env[i - 1], env[i])
    points = np.linspace(0.0, 1.0, 101)
    idx = np.searchsorted(recall, points, side="left")
    sampled = np.array([env[i] if i < env.size else 0.0 for i in idx])
    return APResult(float(sampled.mean()), precision, recall, all_s, positives, int(all_s.size))
