"""Offline accuracy on labelled data: the classifier on face crops, and detector + classifier end to end.

CSV schema (seed 001): ``path`` (relative to ``--project-root``) and one label column -- ``label_en``, else
``label``, else ``orig_kor`` -- plus, for the end-to-end evaluation, the face box ``minX,minY,maxX,maxY`` in
pixels of the original image. Label names must be the model's ``classes.json`` names (matched by name, so any
number of classes in any order), or be mapped to them with a ``--label-map`` JSON object
``{"csv name": "model name"}``. Per-sample class probabilities are kept for the binary (positive-class) figures.

End to end (the face-api baseline's protocol): the detector runs on the original image; the detected face with
the highest IoU with the ground-truth box is classified; a row is *matched* when a face was detected and that
IoU >= 0.30; "matched top-1" is the accuracy over matched rows and "coverage" the matched fraction.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge_agent.bench.detection import best_iou_match
from edge_agent.bench.metrics import (
    BinaryReport,
    ClassificationReport,
    MatchedTop1,
    binary_report,
    classification_report,
    matched_top1,
)
from edge_agent.classifier import ExpressionClassifier
from edge_agent.detector import FaceDetector
from edge_agent.frames import Detections

log = logging.getLogger(__name__)

UInt8Image = npt.NDArray[np.uint8]
LABEL_COLUMNS = ("label_en", "label", "orig_kor")
BOX_COLUMNS = ("minX", "minY", "maxX", "maxY")
CROP_FALLBACK_SIZE = 160


class EvalDataError(RuntimeError):
    """The evaluation data (CSV, folders, labels) is malformed; the message says what and where."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    box: tuple[float, float, float, float] | None = None


def load_label_map(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise EvalDataError(f"{path}: a label map is a JSON object of strings {{\"csv label\": \"model label\"}}")
    return data


def read_csv(csv_path: Path, project_root: Path, need_box: bool, label_map: dict[str, str]) -> list[Sample]:
    if not csv_path.is_file():
        raise EvalDataError(f"{csv_path}: CSV not found")
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        if "path" not in cols:
            raise EvalDataError(f"{csv_path}: needs a 'path' column (has {cols})")
        label_col = next((c for c in LABEL_COLUMNS if c in cols), None)
        if label_col is None:
            raise EvalDataError(f"{csv_path}: needs one of the label columns {LABEL_COLUMNS} (has {cols})")
        if need_box and not all(c in cols for c in BOX_COLUMNS):
            raise EvalDataError(f"{csv_path}: the end-to-end evaluation needs the box columns {BOX_COLUMNS}")
        out: list[Sample] = []
        for line, row in enumerate(reader, start=2):
            raw = row[label_col].strip()
            label = label_map.get(raw, raw)
            box = None
            if need_box:
                try:
                    x1, y1, x2, y2 = (float(row[c]) for c in BOX_COLUMNS)
                except (TypeError, ValueError):
                    raise EvalDataError(f"{csv_path}:{line}: box columns are not numbers") from None
                box = (x1, y1, x2, y2)
            out.append(Sample(project_root / row["path"], label, box))
    if not out:
        raise EvalDataError(f"{csv_path}: no rows")
    return out


def read_class_folders(root: Path) -> list[Sample]:
    if not root.is_dir():
        raise EvalDataError(f"{root}: folder not found")
    out = [Sample(p, d.name) for d in sorted(root.iterdir()) if d.is_dir() for p in sorted(d.iterdir())
           if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"}]
    if not out:
        raise EvalDataError(f"{root}: no images in class sub-folders")
    return out


def check_labels(samples: Sequence[Sample], labels: Sequence[str]) -> None:
    """Data labels are matched to the model's labels by name; any data label the model lacks is an error."""
    data_labels = sorted({s.label for s in samples})
    unknown = sorted(set(data_labels) - set(labels))
    if unknown:
        raise EvalDataError(
            f"labels not in the model's classes.json {list(labels)}: {unknown} (the data has {data_labels}); "
            "rename them or pass --label-map FILE.json ({\"csv label\": \"model label\"})"
        )


def read_image(path: Path) -> UInt8Image | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return img if img is not None else None  # type: ignore[return-value]


@dataclass(frozen=True)
class ClsEvalResult:
    report: ClassificationReport
    predictions: list[tuple[str, str, str, float]]  # path, true, pred, score
    unreadable: int
    probs: npt.NDArray[np.float64]  # (n, K) class probabilities, labels in manifest order
    y_true: list[int]
    y_pred: list[int]


def eval_crops(samples: Sequence[Sample], classifier: ExpressionClassifier) -> ClsEvalResult:
    """Each image is a face crop: the whole image (padded to a square, aspect kept) resized to the model input.

    An unreadable image becomes a black patch and is still counted (the seed runbook's rule), with a warning.
    """
    labels = classifier.labels
    check_labels(samples, labels)
    index = {lab: i for i, lab in enumerate(labels)}
    y_true: list[int] = []
    y_pred: list[int] = []
    preds: list[tuple[str, str, str, float]] = []
    probs: list[npt.NDArray[np.float32]] = []
    unreadable = 0
    for s in samples:
        img = read_image(s.path)
        if img is None:
            log.warning("unreadable image %s: using a black patch", s.path)
            unreadable += 1
            img = np.zeros((CROP_FALLBACK_SIZE, CROP_FALLBACK_SIZE, 3), np.uint8)
        h, w = img.shape[:2]
        whole = Detections(boxes=np.array([[0, 0, w, h]], np.float32), scores=np.ones(1, np.float32),
                           landmarks=np.zeros((1, 5, 2), np.float32))
        expr = classifier.classify(img, whole)
        label, score = expr.top(0)
        y_true.append(index[s.label])
        y_pred.append(index[label])
        preds.append((str(s.path), s.label, label, score))
        probs.append(expr.probs[0])
    prob_arr = np.asarray(probs, np.float64).reshape(len(samples), len(labels))
    return ClsEvalResult(classification_report(y_true, y_pred, labels), preds, unreadable, prob_arr, y_true, y_pred)


E2E_COLUMNS = ("image", "gt_label", "pred_label", "score", "face_detected", "iou", "correct")


@dataclass(frozen=True)
class E2ERow:
    image: str
    gt_label: str
    pred_label: str
    score: float
    face_detected: bool
    iou: float
    correct: bool
    probs: tuple[float, ...] = ()  # class probabilities in manifest order; empty when no face was detected

    def as_csv(self, num_classes: int) -> list[str]:
        probs = [f"{p:.6f}" for p in self.probs] if self.probs else [""] * num_classes
        return [self.image, self.gt_label, self.pred_label, f"{self.score:.6f}", str(int(self.face_detected)),
                f"{self.iou:.6f}", str(int(self.correct)), *probs]


def e2e_rows(samples: Sequence[Sample], detector: FaceDetector,
             classifier: ExpressionClassifier) -> Iterator[E2ERow]:
    check_labels(samples, classifier.labels)
    for s in samples:
        assert s.box is not None
        img = read_image(s.path)
        if img is None:
            log.warning("unreadable image %s: counted as no face detected", s.path)
            yield E2ERow(str(s.path), s.label, "", 0.0, False, 0.0, False)
            continue
        dets = detector.detect(img)
        i, iou = best_iou_match(dets.boxes, s.box)
        if i < 0:
            yield E2ERow(str(s.path), s.label, "", 0.0, False, 0.0, False)
            continue
        one = Detections(boxes=dets.boxes[i:i + 1], scores=dets.scores[i:i + 1], landmarks=dets.landmarks[i:i + 1])
        expr = classifier.classify(img, one)
        label, score = expr.top(0)
        yield E2ERow(str(s.path), s.label, label, score, True, iou, label == s.label,
                     tuple(float(p) for p in expr.probs[0]))


def matched_rows(rows: Sequence[E2ERow], iou_threshold: float) -> list[E2ERow]:
    return [r for r in rows if r.face_detected and r.iou >= iou_threshold]


def summarise_e2e(rows: Sequence[E2ERow], labels: Sequence[str], iou_threshold: float
                  ) -> tuple[MatchedTop1, ClassificationReport]:
    """The face-api metric and the classification report over the matched rows."""
    m = matched_top1(((r.face_detected, r.iou, r.correct) for r in rows), iou_threshold)
    index = {lab: i for i, lab in enumerate(labels)}
    matched = matched_rows(rows, iou_threshold)
    rep = classification_report([index[r.gt_label] for r in matched], [index[r.pred_label] for r in matched], labels)
    return m, rep


def matched_binary(rows: Sequence[E2ERow], labels: Sequence[str], iou_threshold: float,
                   positive: int) -> BinaryReport:
    """Positive-class figures over the matched rows (as the matched classification report)."""
    index = {lab: i for i, lab in enumerate(labels)}
    matched = matched_rows(rows, iou_threshold)
    return binary_report([index[r.gt_label] for r in matched], [index[r.pred_label] for r in matched],
                         [r.probs[positive] for r in matched], labels, positive)


def write_rows(path: Path, rows: Sequence[E2ERow], labels: Sequence[str]) -> None:
    """The per-row CSV: E2E_COLUMNS then one ``p_LABEL`` probability column per class (empty when unmatched)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*E2E_COLUMNS, *(f"p_{lab}" for lab in labels)])
        for r in rows:
            w.writerow(r.as_csv(len(labels)))
