"""Classification and detection metric functions against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.bench.detection import ap50, best_iou_match, iou_matrix, make_image, voc_ap
from edge_agent.bench.metrics import classification_report, confusion_matrix, matched_top1, per_class_prf


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
