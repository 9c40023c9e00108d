"""Classification and detection metric functions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.bench.detection import ap50, best_iou_match, iou_matrix, make_image, voc_ap
from edge_agent.bench.metrics import (
    average_precision,
    binary_report,
    classification_report,
    confusion_matrix,
    matched_top1,
    per_class_prf,
    pr_curve,
    resolve_positive,
    roc_auc,
)


def test_confusion_and_per_class() -> None:
    # true: a a a b b c ; pred: a a b b c c
    cm = confusion_matrix([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    p, r, f1, s = per_class_prf(cm)
    assert p.tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert r.tolist() == pytest.approx([2 / 3, 0.5, 1.0])
    assert f1.tolist() == pytest.approx([0.8, 0.5, 2 / 3])
    assert s.tolist() == [3, 2, 1]
    rep = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert rep.top1 == pytest.approx(4 / 6)
    assert rep.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    d = rep.to_dict()
    assert d["per_class"]["c"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}


def test_macro_f1_skips_absent_classes_and_zero_division() -> None:
    # class 2 never occurs in truth or prediction: left out of the macro average (sklearn default).
    rep = classification_report([0, 1], [0, 0], ["a", "b", "c"])
    # a: p=0.5 r=1 f1=2/3 ; b: p=0 (never predicted) r=0 f1=0
    assert rep.macro_f1 == pytest.approx((2 / 3 + 0.0) / 2)


def test_two_classes_one_absent_from_the_truth() -> None:
    # true: x x ; pred: x y -> y is predicted (wrongly) but never true
    rep = classification_report([0, 0], [0, 1], ["x", "y"])
    assert rep.confusion.tolist() == [[1, 1], [0, 0]]
    d = rep.to_dict()
    assert d["per_class"]["x"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert d["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep.top1 == pytest.approx(0.5)
    assert rep.macro_f1 == pytest.approx((2 / 3 + 0.0) / 2)  # y counts: it occurs in the predictions


def test_three_classes_one_never_seen() -> None:
    # c neither true nor predicted: all zeros, support 0, left out of macro-F1
    rep = classification_report([0, 1, 1], [0, 1, 0], ["a", "b", "c"])
    d = rep.to_dict()
    assert d["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert d["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # a: p 1/2 r 1 f1 2/3 ; b: p 1 r 1/2 f1 2/3
    assert rep.macro_f1 == pytest.approx(2 / 3)


def test_confusion_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 0], 3)


def test_matched_top1_and_coverage() -> None:
    rows = [
        (True, 0.9, True),   # matched, correct
        (True, 0.30, False),  # matched (boundary), wrong
        (True, 0.29, True),   # detected but IoU too low: not matched
        (False, 0.0, False),  # no face
    ]
    m = matched_top1(rows)
    assert (m.total, m.matched, m.correct_matched) == (4, 2, 1)
    assert m.accuracy == pytest.approx(0.5)
    assert m.coverage == pytest.approx(0.5)
    assert m.overall == pytest.approx(0.25)


def test_iou_matrix_plain_and_inclusive() -> None:
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [20, 20, 30, 30]]
    assert iou_matrix(a, b).tolist()[0] == pytest.approx([50 / 150, 0.0])
    # inclusive pixels: 11x11 boxes, overlap 6x11
    assert iou_matrix(a, b, plus_one=True)[0, 0] == pytest.approx(66 / (121 + 121 - 66))
    assert best_iou_match(b, [6, 0, 16, 10]) == (0, pytest.approx(90 / 110))
    assert best_iou_match(np.zeros((0, 4)), [0, 0, 1, 1]) == (-1, 0.0)


def test_voc_ap_hand_computed() -> None:
    # recall 0.5 at precision 1, then recall 1.0 at precision 0.5 -> 0.5*1 + 0.5*0.5
    assert voc_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert voc_ap([0.5, 1.0], [1.0, 0.5]) == pytest.approx(0.75)


def test_ap50_tiny_set() -> None:
    img1 = make_image([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.8], [[0, 0, 10, 10]])
    img2 = make_image([[0, 0, 10, 10]], [0.7], [[0, 0, 10, 10], [30, 30, 40, 40]])
    res = ap50([img1, img2])
    # global order: TP(0.9) FP(0.8) TP(0.7); 3 positives
    assert res.num_positives == 3
    assert res.recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    assert res.precision.tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    # 101-point: recall points 0..1/3 (34 points) -> 1.0; 1/3..2/3 (33 points) -> 2/3; above -> 0
    assert res.ap == pytest.approx((34 * 1.0 + 33 * (2 / 3)) / 101)


def test_ap50_ignored_gt_and_duplicates() -> None:
    img = make_image(
        [[0, 0, 10, 10], [0, 0, 10, 10], [100, 100, 110, 110]],
        [0.9, 0.8, 0.7],
        [[0, 0, 10, 10], [100, 100, 110, 110]],
        gt_ignore=[False, True],
    )
    res = ap50([img])
    # 0.9 TP, 0.8 duplicate of a taken gt -> FP, 0.7 on an ignored gt -> not counted
    assert res.num_positives == 1
    assert res.num_detections == 2
    assert res.precision.tolist() == pytest.approx([1.0, 0.5])
    assert res.ap == pytest.approx(1.0)


# --- binary figures -----------------------------------------------------------------------------------------
# scores 0.9 0.8 0.8 0.6 0.3 with positives 1 1 0 0 1 (a positive and a negative tie at 0.8):
#   >= 0.9: tp 1 fp 0 -> P 1,   R 1/3
#   >= 0.8: tp 2 fp 1 -> P 2/3, R 2/3   (the tied pair enters together)
#   >= 0.6: tp 2 fp 2 -> P 1/2, R 2/3
#   >= 0.3: tp 3 fp 2 -> P 3/5, R 1
# AP = 1/3 * 1 + 1/3 * 2/3 + 0 * 1/2 + 1/3 * 3/5 ; ROC-AUC = (2 + 1.5 + 0) / 6 (tie counts half)
SCORES = [0.9, 0.8, 0.8, 0.6, 0.3]
POSITIVES = [True, True, False, False, True]
AP = (1 + 2 / 3 + 3 / 5) / 3


def test_pr_curve_hand_computed_with_ties() -> None:
    c = pr_curve(SCORES, POSITIVES)
    assert c.thresholds.tolist() == [0.9, 0.8, 0.6, 0.3]
    assert c.precision.tolist() == pytest.approx([1.0, 2 / 3, 0.5, 0.6])
    assert c.recall.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1.0])
    assert (c.num_positives, c.num_negatives) == (3, 2)
    assert average_precision(c) == pytest.approx(AP)
    assert roc_auc(SCORES, POSITIVES) == pytest.approx(3.5 / 6)


def test_pr_curve_ignores_input_order_within_ties() -> None:
    order = [2, 4, 0, 3, 1]  # the tied negative now comes before the tied positive
    c = pr_curve([SCORES[i] for i in order], [POSITIVES[i] for i in order])
    assert c.precision.tolist() == pytest.approx([1.0, 2 / 3, 0.5, 0.6])
    assert average_precision(c) == pytest.approx(AP)


def test_pr_curve_edge_cases() -> None:
    perfect = pr_curve([0.9, 0.7, 0.2, 0.1], [True, True, False, False])
    assert average_precision(perfect) == pytest.approx(1.0)
    assert roc_auc([0.9, 0.7, 0.2, 0.1], [True, True, False, False]) == pytest.approx(1.0)
    all_tied = pr_curve([0.5, 0.5, 0.5, 0.5], [True, False, False, False])
    assert all_tied.thresholds.tolist() == [0.5]
    assert average_precision(all_tied) == pytest.approx(0.25)  # one point: R 1, P 1/4
    no_pos = pr_curve([0.4, 0.2], [False, False])
    assert average_precision(no_pos) is None and roc_auc([0.4, 0.2], [False, False]) is None
    assert no_pos.recall.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="one length"):
        pr_curve([0.1, 0.2], [True])


def test_binary_report_positive_class_at_argmax() -> None:
    labels = ["non_teasing", "teasing"]
    y_true = [1, 1, 0, 0, 1]
    y_pred = [1, 0, 1, 0, 0]
    b = binary_report(y_true, y_pred, SCORES, labels, positive=1)
    assert (b.tp, b.fp, b.fn, b.tn) == (1, 1, 2, 1)
    assert (b.precision, b.recall) == (pytest.approx(0.5), pytest.approx(1 / 3))
    assert b.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    # the same figures as the per-class row of the multi-class report
    p, r, f1, _ = per_class_prf(classification_report(y_true, y_pred, labels).confusion)
    assert (b.precision, b.recall, b.f1) == (pytest.approx(p[1]), pytest.approx(r[1]), pytest.approx(f1[1]))
    d = b.to_dict()
    assert d["positive"] == "teasing" and d["negative"] == "non_teasing"
    assert d["average_precision"] == pytest.approx(AP) and d["pr_points"] == 4
    # the other class as positive: its own figures
    nb = binary_report(y_true, y_pred, [1 - s for s in SCORES], labels, positive=0)
    assert (nb.tp, nb.fp, nb.fn, nb.tn) == (1, 2, 1, 1)


def test_binary_report_one_vs_rest_and_absent_positive() -> None:
    b = binary_report([0, 1, 2, 2], [0, 2, 2, 1], [0.1, 0.3, 0.8, 0.6], ["a", "b", "c"], positive=2)
    assert (b.tp, b.fp, b.fn, b.tn) == (1, 1, 1, 1)
    assert b.to_dict()["negative"] == ["a", "b"]
    none = binary_report([0, 0], [0, 1], [0.2, 0.7], ["neg", "pos"], positive=1)
    assert (none.tp, none.fp, none.precision, none.recall, none.f1) == (0, 1, 0.0, 0.0, 0.0)
    assert none.average_precision is None and none.roc_auc is None


def test_resolve_positive() -> None:
    assert resolve_positive(["non_teasing", "teasing"], None) == 1  # default: the second label
    assert resolve_positive(["non_teasing", "teasing"], "non_teasing") == 0
    assert resolve_positive(["a", "b", "c"], None) is None  # K > 2: no binary figures unless named
    assert resolve_positive(["a", "b", "c"], "c") == 2
    with pytest.raises(ValueError, match=r"'happy' is not one of the model's labels \['neg', 'pos'\]"):
        resolve_positive(["neg", "pos"], "happy")


def test_roc_auc_rank_form_equals_pair_count() -> None:
    rng = np.random.default_rng(7)
    s = rng.integers(0, 6, 200) / 5.0  # many ties
    y = rng.random(200) < 0.4
    pos, neg = s[y], s[~y]
    pairs = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (pos.size * neg.size)
    assert roc_auc(s, y) == pytest.approx(pairs)
