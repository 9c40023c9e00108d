"""Classification metrics (pure numpy): confusion matrix, per-class P/R/F1, macro-F1, top-1, matched top-1.

Conventions follow scikit-learn's defaults so numbers are comparable with the seed runbook's training runs:
a class with no predictions has precision 0, a class with no samples has recall 0 (``zero_division=0``), and
macro-F1 averages over the classes that occur in the ground truth or the predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

IntMatrix = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> IntMatrix:
    """(K, K) counts; row = true class, column = predicted class."""
    t = np.asarray(y_true, np.int64)
    p = np.asarray(y_pred, np.int64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} entries but y_pred has {p.size}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} holds class indices outside 0..{num_classes - 1}")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _safe_div(num: F64, den: F64) -> F64:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_prf(cm: IntMatrix) -> tuple[F64, F64, F64, IntMatrix]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support.astype(np.float64))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def macro_f1(cm: IntMatrix) -> float:
    """Unweighted mean F1 over the classes present in the ground truth or the predictions."""
    _, _, f1, support = per_class_prf(cm)
    present = (support > 0) | (cm.sum(axis=0) > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def top1(cm: IntMatrix) -> float:
    total = int(cm.sum())
    return float(np.trace(cm)) / total if total else 0.0


@dataclass(frozen=True)
class ClassificationReport:
    labels: tuple[str, ...]
    confusion: IntMatrix

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1(self) -> float:
        return top1(self.confusion)

    @property
    def macro_f1(self) -> float:
        return macro_f1(self.confusion)

    def to_dict(self) -> dict[str, Any]:
        p, r, f1, s = per_class_prf(self.confusion)
        return {
            "n": self.n,
            "top1": self.top1,
            "macro_f1": self.macro_f1,
            "labels": list(self.labels),
            "per_class": {
                lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]), "support": int(s[i])}
                for i, lab in enumerate(self.labels)
            },
            "confusion": self.confusion.tolist(),
            "confusion_axes": "rows = true label, columns = predicted label, in 'labels' order",
        }


def classification_report(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> ClassificationReport:
    return ClassificationReport(tuple(labels), confusion_matrix(y_true, y_pred, len(labels)))


@dataclass(frozen=True)
class MatchedTop1:
    """The face-api baseline metric of seed 001: accuracy over matched rows, and the matched fraction."""

    total: int
    matched: int
    correct_matched: int

    @property
    def accuracy(self) -> float:
        """Top-1 over matched rows (face detected and IoU >= threshold), as FaceAPI's 42.07 % / 32.09 %."""
        return self.correct_matched / self.matched if self.matched else 0.0

    @property
    def coverage(self) -> float:
        return self.matched / self.total if self.total else 0.0

    @property
    def overall(self) -> float:
        """End-to-end top-1 over all rows: unmatched rows count as wrong."""
        return self.correct_matched / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "total": self.total,
            "matched": self.matched,
            "matched_top1": self.accuracy,
            "coverage": self.coverage,
            "overall_top1": self.overall,
        }


def matched_top1(rows: Iterable[tuple[bool, float, bool]], iou_threshold: float = 0.30) -> MatchedTop1:
    """Rows of (face_detected, iou, correct). A row is matched when face_detected and iou >= ``iou_threshold``."""
    total = matched = correct_matched = 0
    for detected, iou, correct in rows:
        total += 1
        is_match = bool(detected) and iou >= iou_threshold
        if is_match:
            matched += 1
            correct_matched += int(bool(correct))
    return MatchedTop1(total, matched, correct_matched)
