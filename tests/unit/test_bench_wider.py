"""The WIDER FACE protocol on a tiny synthetic ground truth (written as real .mat files) with a known answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

scipy_io = pytest.importorskip("scipy.io", reason="the bench extra (scipy) is not installed")

from edge_agent.bench.wider import (  # noqa: E402
    WiderError,
    evaluate,
    load_ground_truth,
    read_pred_file,
    read_predictions,
    write_pred_file,
)


def _cells(items: list[object]) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for i, it in enumerate(items):
        out[i, 0] = it
    return out


def _write_gt(root: Path) -> None:
    # One event, two images. img_a: faces g1, g2, g3 (x, y, w, h); img_b: one face.
    boxes_a = np.array([[0, 0, 10, 10], [20, 20, 10, 10], [50, 50, 10, 10]], np.float64)
    boxes_b = np.array([[0, 0, 20, 20]], np.float64)
    scipy_io.savemat(
        root / "wider_face_val.mat",
        {
            "event_list": _cells(["0--Parade"]),
            "file_list": _cells([_cells(["img_a", "img_b"])]),
            "face_bbx_list": _cells([_cells([boxes_a, boxes_b])]),
        },
    )
    easy = _cells([_cells([np.array([[1], [2]]), np.array([[1]])])])  # g3 of img_a is not an easy face
    hard = _cells([_cells([np.array([[1], [2], [3]]), np.array([[1]])])])
    scipy_io.savemat(root / "wider_easy_val.mat", {"gt_list": easy})
    scipy_io.savemat(root / "wider_medium_val.mat", {"gt_list": easy})
    scipy_io.savemat(root / "wider_hard_val.mat", {"gt_list": hard})


def _write_preds(root: Path) -> None:
    # img_a: hits g1 (best), hits g3, one false positive; img_b: nothing (its face is missed).
    write_pred_file(
        root / "0--Parade" / "img_a.txt", "img_a",
        [[0, 0, 10, 10], [50, 50, 60, 60], [100, 100, 110, 110]], [0.95, 0.6, 0.2],
    )
    write_pred_file(root / "0--Parade" / "img_b.txt", "img_b", np.zeros((0, 4)), [])


def test_known_answer(tmp_path: Path) -> None:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    _write_gt(gt_dir)
    _write_preds(pred_dir)
    gt = load_ground_truth(gt_dir)
    assert gt.events == ["0--Parade"]
    assert gt.files == [["img_a", "img_b"]]
    res = evaluate(read_predictions(pred_dir), gt)
    # easy: 3 faces count; the g3 hit is ignored; recall 1/3 at precision 1, then the FP -> AP = 1/3
    assert res["easy"].faces == 3
    assert res["easy"].ap == pytest.approx(1 / 3)
    assert res["medium"].ap == pytest.approx(1 / 3)
    # hard: 4 faces; recall 1/4 then 2/4 at precision 1, the FP at the lowest score -> AP = 0.5
    assert res["hard"].faces == 4
    assert res["hard"].ap == pytest.approx(0.5)


def test_duplicate_detection_is_a_false_positive(tmp_path: Path) -> None:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    _write_gt(gt_dir)
    # img_a: g1 twice (second is a FP ranked above the g2 hit); img_b: hit.
    write_pred_file(pred_dir / "0--Parade" / "img_a.txt", "img_a",
                    [[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], [1.0, 0.8, 0.5])
    write_pred_file(pred_dir / "0--Parade" / "img_b.txt", "img_b", [[0, 0, 20, 20]], [0.0])
    res = evaluate(read_predictions(pred_dir), load_ground_truth(gt_dir))
    # easy, 3 faces. Thresholds (normalised 1.0, 0.8, 0.5, 0.0):
    #  >0.8: P=1 R=1/3 ; (0.5,0.8]: 2 props 1 rec P=.5 ; (0,0.5]: 3 props 2 rec P=2/3 R=2/3 ; 0: 4 props 3 rec
    # envelope: R 1/3 -> 1.0, R 2/3 -> 3/4, R 1 -> 3/4  => AP = 1/3 + 1/3*.75 + 1/3*.75
    assert res["easy"].ap == pytest.approx(1 / 3 + 0.25 + 0.25)


def test_pred_file_round_trip_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "ev" / "x.txt"
    write_pred_file(p, "x", [[10, 20, 40, 80]], [0.5])
    name, arr = read_pred_file(p)
    assert name == "x"
    assert arr.tolist() == [[10.0, 20.0, 30.0, 60.0, 0.5]]
    p.write_text("x\n2\n1 2 3 4 0.5\n", encoding="utf-8")
    with pytest.raises(WiderError, match="header says 2"):
        read_pred_file(p)
    with pytest.raises(WiderError, match="not found"):
        load_ground_truth(tmp_path / "nope")


def test_cli_eval_wider_with_pred_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from edge_agent.bench.cli import main

    gt_dir, pred_dir, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    gt_dir.mkdir()
    _write_gt(gt_dir)
    _write_preds(pred_dir)
    assert main(["--json", "eval", "wider", "--gt", str(gt_dir), "--pred-dir", str(pred_dir), "--name", "toy",
                 "--out-dir", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["easy_ap"] == pytest.approx(1 / 3)
    assert data["summary"]["hard_ap"] == pytest.approx(0.5)
    assert data["summary"]["hard_faces"] == 4
    for png in data["plots"]:
        assert (out / png).stat().st_size > 1000


def test_cli_eval_wider_runs_our_detector(tmp_path: Path, shipped_model: object, asset: object,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--images: our detector writes WIDER prediction files, then the protocol scores them. Ground truth = the same
    detector's confident boxes, so every setting's AP must be (close to) 1."""
    import json

    import cv2

    from edge_agent.bench.cli import main
    from edge_agent.bench.evalcmd import NativeSizeDetector
    from edge_agent.manifest import load_artifact

    det_dir = shipped_model("detector/retinaface-mnet025")  # type: ignore[operator]
    images = tmp_path / "images" / "0--Parade"
    images.mkdir(parents=True)
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    ref = NativeSizeDetector(load_artifact(det_dir), None, score_threshold=0.6)
    names, boxes = [], []
    for name in ("multi_face", "single_face"):
        (images / f"{name}.jpg").write_bytes(asset(f"{name}.jpg").read_bytes())  # type: ignore[operator]
        b = ref.detect(cv2.imread(str(images / f"{name}.jpg"))).boxes.astype(np.float64)
        b[:, 2:] -= b[:, :2]  # x, y, w, h
        names.append(name)
        boxes.append(b)
    keep = _cells([_cells([np.arange(1, len(b) + 1).reshape(-1, 1) for b in boxes])])
    scipy_io.savemat(gt_dir / "wider_face_val.mat", {"event_list": _cells(["0--Parade"]),
                                                     "file_list": _cells([_cells(names)]),
                                                     "face_bbx_list": _cells([_cells(boxes)])})
    for s in ("easy", "medium", "hard"):
        scipy_io.savemat(gt_dir / f"wider_{s}_val.mat", {"gt_list": keep})
    out = tmp_path / "out"
    assert main(["--json", "eval", "wider", "--images", str(tmp_path / "images"), "--gt", str(gt_dir),
                 "--detector", str(det_dir), "--out-dir", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    pred_file = Path(data["pred_dir"]) / "0--Parade" / "multi_face.txt"
    lines = pred_file.read_text().splitlines()
    assert lines[0] == "multi_face" and int(lines[1]) == len(lines) - 2 >= len(boxes[0])
    assert data["summary"]["hard_faces"] == sum(len(b) for b in boxes)
    for s in ("easy", "medium", "hard"):
        assert data["summary"][f"{s}_ap"] > 0.9
