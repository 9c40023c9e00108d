"""edge-bench and fast detection mode: the mode keys, the detection agreement (recall of A vs B) and a real
``--compare "mode=fast" "mode=full"`` run on the sample video (no timing asserted)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bench.agreement import detection_agreement, matched_count
from edge_agent.bench.cli import main
from edge_agent.bench.pipelined import overrides_for
from edge_agent.bench.report import write_report
from edge_agent.bench.runner import BenchConfig, ConfigSpecError, apply_spec

FAST_DETECTOR = "detector/retinaface-mnet025-int8"
CLASSIFIER = "classifier/mnv3s-facex7"


def test_mode_keys_with_and_without_the_detector_prefix() -> None:
    base = BenchConfig(detector=Path("d"), classifier=Path("c"))
    assert base.mode == "full"  # the default stays the current behaviour
    cfg = apply_spec(base, "detector.mode=fast,full_every=5,detector.roi_size=96,roi_expand=2.5,full_size=auto")
    assert (cfg.mode, cfg.full_every, cfg.roi_size, cfg.roi_expand, cfg.full_size) == ("fast", 5, 96, 2.5, "auto")
    assert cfg.name().endswith("_fast-n5-r96-x2.5_auto") and base.name().endswith("_t1")
    o = overrides_for(cfg, "sample:single_face.mp4", "tcp://127.0.0.1:1")  # the pipelined daemon gets them too
    assert o["detector.mode"] == "fast" and o["detector.full_every"] == 5 and o["detector.roi_size"] == 96
    for bad in ("mode=turbo", "full_size=big", "mode=fast,pipeline=reference", "detector.nonsense=1"):
        with pytest.raises(ConfigSpecError):
            apply_spec(base, bad)


def test_matched_count_is_one_to_one() -> None:
    gt = np.array([[0, 0, 10, 10], [100, 100, 120, 120]], np.float32)
    assert matched_count(gt, gt, 0.5) == 2
    assert matched_count(np.array([[0, 0, 10, 10], [1, 1, 10, 10]], np.float32), gt[:1], 0.5) == 1  # no double use
    assert matched_count(np.array([[5, 5, 15, 15]], np.float32), gt, 0.5) == 0  # IoU 25/175 < 0.5
    assert matched_count(np.zeros((0, 4), np.float32), gt, 0.5) == 0


def test_detection_agreement_against_b_first_boxes() -> None:
    face = np.array([[0, 0, 10, 10]], np.float32)
    none = np.zeros((0, 4), np.float32)
    b = [(0, face), (1, face), (0, face), (1, face)]
    a = [(0, face), (1, none), (0, face), (1, face), (7, face)]  # frame 7: B never saw it, not counted
    g = detection_agreement(a, b, iou=0.5)
    assert g["A"] == {"frames": 4, "reference_faces": 4, "predicted_faces": 3, "matched": 3, "recall": 0.75,
                      "precision": 1.0}
    assert g["B"]["recall"] == 1.0 and g["recall_ratio"] == 0.75
    with pytest.raises(ValueError):
        detection_agreement(a, b, iou=0.0)
    empty = detection_agreement([(0, none)], [(0, none)])
    assert empty["A"]["recall"] is None and empty["recall_ratio"] is None


def test_compare_fast_vs_full_records_recall(tmp_path: Path, shipped_model: Callable[[str], Path],
                                             asset: Callable[[str], Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    det, cls = shipped_model(FAST_DETECTOR), shipped_model(CLASSIFIER)
    rc = main(["--source", str(asset("single_face.mp4")), "--detector", str(det), "--classifier", str(cls),
               "--warmup", "0", "--repeat", "12", "--block", "4", "--max-frames", "12", "--json", "--quiet",
               "--no-efficiency", "--pipeline-seconds", "0", "--out-dir", str(tmp_path),
               "--compare", "detector.mode=fast,full_every=4",
               "detector.mode=full"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    a, b = data["results"]["A"], data["results"]["B"]
    assert data["configs"]["A"]["mode"] == "fast" and data["configs"]["B"]["mode"] == "full"
    # 12 frames at full_every 4 (the sample has the face in every frame): 3 full detections, 9 ROI frames
    assert a["detector_plans"] == {"full": 3, "roi": 9, "skip": 0, "lost": 0, "sizes": {"640x640": 3}}
    assert b["detector_plans"] is None
    g = data["detection_agreement"]
    assert g["iou"] == 0.5 and g["A"]["frames"] == g["B"]["frames"] == 12 and g["A"]["reference_faces"] == 12
    assert g["B"]["recall"] == 1.0  # full mode is deterministic
    assert g["A"]["recall"] == 1.0 and g["recall_ratio"] == 1.0  # the ROI boxes overlap the full ones
    assert data["ratio_a_over_b"]["fps_sequential"] > 0
    stored = json.loads(Path(data["result_file"]).read_text())
    assert stored["detection_agreement"] == g
    report = write_report(tmp_path).read_text()  # the A/B table carries A's recall
    row = next(line for line in report.splitlines() if line.startswith("| `detector.mode=fast,full_every=4`"))
    assert row.split("|")[10].strip() == "1.0"


def test_config_flag_sets_the_mode_of_a_single_run(tmp_path: Path, shipped_model: Callable[[str], Path],
                                                   asset: Callable[[str], Path],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    det, cls = shipped_model(FAST_DETECTOR), shipped_model(CLASSIFIER)
    rc = main(["--source", str(asset("single_face.mp4")), "--detector", str(det), "--classifier", str(cls),
               "--warmup", "0", "--repeat", "6", "--max-frames", "6", "--json", "--quiet",
               "--pipeline-seconds", "0", "--out-dir", str(tmp_path), "--config", "mode=fast,full_every=3"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["mode"] == "fast" and data["config_name"].startswith("retinaface-mnet025-int8+")
    assert data["result"]["detector_plans"]["full"] == 2 and data["result"]["detector_plans"]["roi"] == 4
    assert "fast detection mode" in data["result"]["efficiency"]["skipped"]  # no per-frame GFLOP figure
