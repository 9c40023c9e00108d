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


# ---------------------------------------------------------------------------------------------------------
# Binary (positive class vs the rest): the figures seed 003 reports for its 2-class EfficientNet-B0.


def resolve_positive(labels: Sequence[str], positive: str | None) -> int | None:
    """Index of the positive class, or None for no binary figures.

    ``positive`` names it; unnamed, a 2-label model's positive class is index 1 (the second label in manifest
    order, as seed 003's ``teasing`` = 1) and a model with more labels has none (name one for one-vs-rest
    figures). An unknown name is an error that lists the labels.
    """
    if len(labels) < 2:
        raise ValueError(f"a classifier needs at least 2 labels, got {list(labels)}")
    if positive is None:
        return 1 if len(labels) == 2 else None
    if positive not in labels:
        raise ValueError(f"--positive {positive!r} is not one of the model's labels {list(labels)}")
    return list(labels).index(positive)


@dataclass(frozen=True)
class PRCurve:
    """Precision/recall of "score >= threshold" for every distinct score, thresholds decreasing.

    Tied scores form one threshold (all tied samples enter together). Recall is non-decreasing along the arrays.
    """

    thresholds: F64
    precision: F64
    recall: F64
    num_positives: int
    num_negatives: int


def pr_curve(scores: Sequence[float] | F64, positives: Sequence[bool] | npt.NDArray[np.bool_]) -> PRCurve:
    """The precision-recall curve of a positive-class score (same points as scikit-learn's
    ``precision_recall_curve`` without its appended (recall 0, precision 1) end point, in decreasing-threshold
    order)."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(positives, bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and positives {y.shape} must be 1-D of one length")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1] if s.size else np.zeros(0, np.int64)
    tps = np.cumsum(y)[last_of_tie].astype(np.float64)
    fps = (last_of_tie + 1).astype(np.float64) - tps
    npos = int(y.sum())
    precision = _safe_div(tps, tps + fps)
    recall = tps / npos if npos else np.zeros_like(tps)
    return PRCurve(s[last_of_tie], precision, recall, npos, int(y.size) - npos)


def average_precision(curve: PRCurve) -> float | None:
    """Step-wise area under the PR curve, ``sum_n (R_n - R_{n-1}) * P_n`` with R_0 = 0 (scikit-learn's
    ``average_precision_score``, no interpolation). None when there is no positive sample."""
    if curve.num_positives == 0:
        return None
    steps = np.diff(np.r_[0.0, curve.recall])
    return float(np.sum(steps * curve.precision))


def roc_auc(scores: Sequence[float] | F64, positives: Sequence[bool] | npt.NDArray[np.bool_]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half; Mann-Whitney U).
    None unless both classes occur."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(positives, bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores {s.shape} and positives {y.shape} must be 1-D of one length")
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return None
    # rank-sum form (O(n log n)): average 1-based ranks, tied scores share the mean of their ranks
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    ranks = (first_rank + (counts - 1) / 2.0)[inverse]
    u = float(ranks[y].sum()) - npos * (npos + 1) / 2.0
    return u / (npos * nneg)


@dataclass(frozen=True)
class BinaryReport:
    """Positive-class figures: P/R/F1 of the argmax decision, and AP / ROC-AUC / PR curve of its probability."""

    labels: tuple[str, ...]
    positive: int
    tp: int
    fp: int
    fn: int
    tn: int
    curve: PRCurve
    average_precision: float | None
    roc_auc: float | None

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        negatives = [lab for i, lab in enumerate(self.labels) if i != self.positive]
        return {
            "positive": self.labels[self.positive],
            "negative": negatives[0] if len(negatives) == 1 else negatives,
            "decision": "argmax of the class probabilities",
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
            "average_precision": self.average_precision,
            "roc_auc": self.roc_auc,
            "pr_points": int(self.curve.thresholds.size),
        }


def binary_report(y_true: Sequence[int], y_pred: Sequence[int], positive_prob: Sequence[float] | F64,
                  labels: Sequence[str], positive: int) -> BinaryReport:
    """y_true / y_pred are class indices into ``labels``; ``positive_prob`` is the model's probability of
    ``labels[positive]`` per sample (the PR curve and AP rank by it)."""
    t = np.asarray(y_true, np.int64) == positive
    p = np.asarray(y_pred, np.int64) == positive
    prob = np.asarray(positive_prob, np.float64)
    if not (t.shape == p.shape == prob.shape):
        raise ValueError(f"y_true {t.shape}, y_pred {p.shape} and positive_prob {prob.shape} differ in length")
    if not 0 <= positive < len(labels):
        raise ValueError(f"positive index {positive} outside 0..{len(labels) - 1}")
    curve = pr_curve(prob, t)
    return BinaryReport(tuple(labels), positive, int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum()),
                        int((~t & ~p).sum()), curve, average_precision(curve), roc_auc(prob, t))
