"""WIDER FACE validation protocol (easy / medium / hard AP), a faithful port of the official evaluation.

Ground truth (``--gt``: the ``eval_tools/ground_truth`` folder or ``wider_face_split``): ``wider_face_val.mat``
(``event_list``, ``file_list``, ``face_bbx_list`` with x, y, w, h boxes) and ``wider_{easy,medium,hard}_val.mat``
(``gt_list``: per image, the 1-based indices of the faces that count for that setting).

Predictions: one text file per image, ``<pred_dir>/<event>/<image>.txt``: first line the image name, second line
the number of boxes, then ``x y w h score`` per line (the format every WIDER submission uses).

Protocol, as the official MATLAB code and its widely used Python port:

- scores are min-max normalised over the whole prediction set;
- per image, predictions best first; each takes the ground-truth face it overlaps most (inclusive-pixel IoU);
  if that IoU >= 0.5 and the face is not in the setting's list, the prediction is *ignored* (neither true nor
  false positive); if the face is in the list and not yet recalled it becomes recalled; otherwise the prediction
  is a false positive;
- precision/recall at 1000 score thresholds ``1 - (t + 1) / 1000``, summed over images; recall divides by the
  number of faces in the setting's lists (images without predictions still count their faces);
- AP is the VOC all-point area under the precision envelope.

Rows of the PR curve where no prediction passes the threshold (precision 0/0) are left out; the official code
would produce NaN there (it never happens on real detector output, whose best score normalises to 1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.bench.detection import iou_matrix, voc_ap

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
SETTINGS = ("easy", "medium", "hard")
THRESH_NUM = 1000

# event -> image name (no extension) -> (N, 5) x, y, w, h, score
Predictions = dict[str, dict[str, F64]]


class WiderError(RuntimeError):
    """WIDER ground truth or predictions are missing or malformed."""


@dataclass(frozen=True)
class GroundTruth:
    events: list[str]
    files: list[list[str]]  # per event, image names without extension
    boxes: list[list[F64]]  # per event, per image: (M, 4) x, y, w, h
    keep: dict[str, list[list[npt.NDArray[np.int64]]]]  # setting -> event -> image -> 1-based face indices


def _loadmat(path: Path) -> dict[str, Any]:
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise WiderError("reading WIDER .mat files needs scipy: pip install 'edge-agent[bench]'") from exc
    if not path.is_file():
        raise WiderError(f"{path}: not found (point --gt at WIDER's eval_tools/ground_truth folder)")
    out: dict[str, Any] = loadmat(str(path))
    return out


def _str(cell: Any) -> str:
    """A MATLAB string from a loadmat cell, however deeply wrapped."""
    a = np.asarray(cell)
    while a.dtype == object or (a.ndim > 0 and a.dtype.kind != "U"):
        a = np.asarray(a.reshape(-1)[0])
    return str(a.reshape(-1)[0]) if a.ndim else str(a)


def load_ground_truth(gt_dir: Path) -> GroundTruth:
    val = _loadmat(gt_dir / "wider_face_val.mat")
    event_list, file_list, bbx_list = val["event_list"], val["file_list"], val["face_bbx_list"]
    events = [_str(event_list[i][0]) for i in range(len(event_list))]
    files: list[list[str]] = []
    boxes: list[list[F64]] = []
    for i in range(len(events)):
        imgs = file_list[i][0]
        bbs = bbx_list[i][0]
        files.append([_str(imgs[j][0]) for j in range(len(imgs))])
        boxes.append([np.asarray(bbs[j][0], np.float64).reshape(-1, 4) for j in range(len(imgs))])
    keep: dict[str, list[list[npt.NDArray[np.int64]]]] = {}
    for setting in SETTINGS:
        gl = _loadmat(gt_dir / f"wider_{setting}_val.mat")["gt_list"]
        if len(gl) != len(events):
            raise WiderError(f"wider_{setting}_val.mat has {len(gl)} events, wider_face_val.mat {len(events)}")
        keep[setting] = [
            [np.asarray(gl[i][0][j][0], np.int64).reshape(-1) for j in range(len(files[i]))]
            for i in range(len(events))
        ]
    return GroundTruth(events, files, boxes, keep)


def read_pred_file(path: Path) -> tuple[str, F64]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 2:
        raise WiderError(f"{path}: expected the image name, the box count and then 'x y w h score' lines")
    name = Path(lines[0].strip()).stem
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    try:
        count = int(lines[1].strip())
        arr = np.asarray([[float(v) for v in r[:5]] for r in rows], np.float64).reshape(-1, 5)
    except ValueError as exc:
        raise WiderError(f"{path}: malformed ({exc})") from None
    if count != arr.shape[0]:
        raise WiderError(f"{path}: header says {count} boxes but {arr.shape[0]} lines follow")
    return name, arr


def read_predictions(pred_dir: Path) -> Predictions:
    if not pred_dir.is_dir():
        raise WiderError(f"{pred_dir}: prediction folder not found")
    preds: Predictions = {}
    for event_dir in sorted(p for p in pred_dir.iterdir() if p.is_dir()):
        preds[event_dir.name] = dict(read_pred_file(f) for f in sorted(event_dir.glob("*.txt")))
    return preds


def write_pred_file(path: Path, image_name: str, boxes_xyxy: npt.ArrayLike, scores: npt.ArrayLike) -> None:
    """Write one image's detections (x1,y1,x2,y2 + score) in WIDER's x y w h score format."""
    b = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    s = np.asarray(scores, np.float64).reshape(-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [image_name, str(b.shape[0])]
    lines += [
        f"{x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f} {sc:.6f}"
        for (x1, y1, x2, y2), sc in zip(b.tolist(), s.tolist(), strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def normalise_scores(preds: Predictions) -> Predictions:
    """Min-max normalise the score column over the whole set (a new dict; input untouched)."""
    non_empty = [v for ev in preds.values() for v in ev.values() if v.shape[0]]
    if not non_empty:
        return {e: dict(ev) for e, ev in preds.items()}
    lo = min(float(v[:, 4].min()) for v in non_empty)
    hi = max(float(v[:, 4].max()) for v in non_empty)
    diff = hi - lo
    out: Predictions = {}
    for e, ev in preds.items():
        out[e] = {}
        for k, v in ev.items():
            w = v.copy()
            if w.shape[0]:
                w[:, 4] = (w[:, 4] - lo) / diff if diff > 0 else 1.0
            out[e][k] = w
    return out


def image_eval(pred: F64, gt_xywh: F64, ignore: npt.NDArray[np.int64], iou_thresh: float) -> tuple[F64, F64]:
    """Official ``image_eval``: cumulative recalled-face count and the proposal flag (1 counts, -1 ignored)."""
    p = pred[:, :4].copy()
    g = gt_xywh.copy()
    p[:, 2:] += p[:, :2]
    g[:, 2:] += g[:, :2]
    overlaps = iou_matrix(p, g, plus_one=True)
    pred_recall = np.zeros(pred.shape[0])
    recall_list = np.zeros(g.shape[0])
    proposal_list = np.ones(pred.shape[0])
    for h in range(pred.shape[0]):
        max_idx = int(np.argmax(overlaps[h]))
        if overlaps[h, max_idx] >= iou_thresh:
            if ignore[max_idx] == 0:
                recall_list[max_idx] = -1
                proposal_list[h] = -1
            elif recall_list[max_idx] == 0:
                recall_list[max_idx] = 1
        pred_recall[h] = np.count_nonzero(recall_list == 1)
    return pred_recall, proposal_list


def img_pr_info(pred: F64, proposal_list: F64, pred_recall: F64, thresh_num: int = THRESH_NUM) -> F64:
    """(thresh_num, 2): proposals counted and faces recalled at each threshold ``1 - (t+1)/thresh_num``."""
    info = np.zeros((thresh_num, 2))
    for t in range(thresh_num):
        thresh = 1 - (t + 1) / thresh_num
        r = np.flatnonzero(pred[:, 4] >= thresh)
        if r.size == 0:
            continue
        last = int(r[-1])
        info[t, 0] = np.count_nonzero(proposal_list[: last + 1] == 1)
        info[t, 1] = pred_recall[last]
    return info


@dataclass(frozen=True)
class SettingResult:
    ap: float
    precision: F64
    recall: F64
    faces: int


def evaluate(preds: Predictions, gt: GroundTruth, iou_thresh: float = 0.5) -> dict[str, SettingResult]:
    """Easy/medium/hard AP of ``preds`` (raw scores; normalised here) against ``gt``."""
    norm = normalise_scores(preds)
    missing = [e for e in gt.events if e not in norm]
    if missing:
        raise WiderError(f"no predictions for {len(missing)} event folders, e.g. {missing[:3]}")
    # Predictions best first within each image, as the official read_pred does.
    for ev in norm.values():
        for k, v in ev.items():
            ev[k] = v[np.argsort(-v[:, 4], kind="stable")]
    results: dict[str, SettingResult] = {}
    for setting in SETTINGS:
        count_face = 0
        curve = np.zeros((THRESH_NUM, 2))
        for i, event in enumerate(gt.events):
            for j, name in enumerate(gt.files[i]):
                if name not in norm[event]:
                    raise WiderError(f"no prediction file for {event}/{name}")
                pred = norm[event][name]
                gt_boxes = gt.boxes[i][j]
                keep_index = gt.keep[setting][i][j]
                count_face += keep_index.size
                if gt_boxes.shape[0] == 0 or pred.shape[0] == 0:
                    continue
                ignore = np.zeros(gt_boxes.shape[0], np.int64)
                if keep_index.size:
                    ignore[keep_index - 1] = 1
                pred_recall, proposal_list = image_eval(pred, gt_boxes, ignore, iou_thresh)
                curve += img_pr_info(pred, proposal_list, pred_recall)
        valid = curve[:, 0] > 0
        precision = curve[valid, 1] / curve[valid, 0]
        recall = curve[valid, 1] / count_face if count_face else np.zeros(int(valid.sum()))
        results[setting] = SettingResult(voc_ap(recall, precision), precision, recall, count_face)
        log.info("WIDER %s: AP %.4f over %d faces", setting, results[setting].ap, count_face)
    return results


def summary(results: Mapping[str, SettingResult]) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for s, r in results.items():
        out[f"{s}_ap"] = r.ap
        out[f"{s}_faces"] = r.faces
    return out
