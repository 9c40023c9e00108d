"""edge-bench: the identical-detections check (box matching) and issue 8's target checks, on hand-made inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.bench.identical import BoxMatching, identical_detections, identical_text, match_boxes
from edge_agent.bench.pipelined import photo_folder, photo_path
from edge_agent.bench.targets import (
    default_mode_targets,
    memory_target,
    multi_face_targets,
    overhead_ratio,
    targets_text,
)
from edge_agent.frames import Detections


def _dets(*boxes: tuple[float, float, float, float]) -> Detections:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return Detections(boxes=b, scores=np.full(len(b), 0.9, np.float32), landmarks=np.zeros((len(b), 5, 2), np.float32))


def test_match_boxes_is_one_to_one_highest_first() -> None:
    a = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], np.float32)
    b = np.array([[1, 0, 11, 10], [0, 0, 10, 10], [300, 300, 310, 310]], np.float32)
    m = match_boxes(a, b)
    assert m.ious == (1.0,)  # a0-b0 (IoU 0.82) loses to the exact pair a0-b1; a1 overlaps nothing
    assert m.unmatched_a == (1,) and m.unmatched_b == (0, 2)
    with pytest.raises(ValueError):
        match_boxes(a, b, match_iou=0.0)


def test_box_matching_identical_and_not() -> None:
    ag = BoxMatching()
    ag.add(0, _dets((0, 0, 10, 10)), _dets((0, 0, 10, 10)))
    ag.add(1, _dets(), _dets())
    s = ag.summary()
    assert s["identical"] is True and s["worst_iou"] == 1.0 and s["frames"] == 2 and s["unmatched"] == 0

    ag.add(2, _dets((0, 0, 10, 10)), _dets((0, 0, 10, 11)))  # IoU 10/11 = 0.909: still "identical" at 0.9
    assert ag.summary()["identical"] is True
    ag.add(3, _dets((0, 0, 10, 10)), _dets((0, 0, 10, 13)))  # IoU 0.77: matched, but not identical
    s = ag.summary()
    assert s["identical"] is False and s["unmatched"] == 0 and s["worst_iou"] == pytest.approx(10 / 13, abs=1e-4)

    ag.add(4, _dets((50, 50, 60, 60)), _dets())
    s = ag.summary()
    assert s["unmatched"] == 1 and s["unmatched_faces"][0] == {"frame": 4, "only_in": "A",
                                                                "box": [50.0, 50.0, 60.0, 60.0], "score": 0.9}
    assert "NOT identical" in identical_text(s)


def test_identical_detections_runs_both_detectors() -> None:
    frames = [np.zeros((4, 4, 3), np.uint8)] * 3
    s = identical_detections(frames, lambda _: _dets((0, 0, 10, 10)), lambda _: _dets((0, 0, 10, 10), (20, 0, 30, 10)))
    assert s["frames"] == 3 and s["faces_a"] == 3 and s["faces_b"] == 6 and s["unmatched"] == 3
    assert {u["only_in"] for u in s["unmatched_faces"]} == {"B"}


def _summary(det: float, cls: float, fps_seq: float, *, pipe_fps: float | None = None,
             lat: tuple[float, float] | None = None, faces: float = 1.0, per_face: float = 1.0) -> dict[str, object]:
    s: dict[str, object] = {
        "fps_sequential": fps_seq, "faces_per_frame": faces,
        "stages_ms": {"detector": {"mean": det, "p50": det}, "classifier": {"mean": cls, "p50": cls},
                      "classifier_per_face": {"p50": per_face, "mean": per_face}},
    }
    if pipe_fps is not None:
        s["pipelined"] = {"fps": pipe_fps, "latency_ms": {"p50": lat[0], "p95": lat[1], "p99": lat[1]} if lat else {},
                          "latency_run": {"daemon_stats": {"latency_ms": {"detector": {"p50": det + 1.0},
                                                                          "classifier": {"p50": cls}}}}}
    return s


def test_default_mode_targets() -> None:
    a = _summary(10.0, 2.0, 80.0, pipe_fps=100.0, lat=(12.0, 20.0))
    b = _summary(15.0, 2.0, 40.0)
    t = default_mode_targets(a, b, {"identical": True})
    assert t["fps_a_kind"] == "pipelined" and t["fps_b_kind"] == "sequential"
    assert t["fps_ratio"] == {"value": 2.5, "target": 2.0, "op": ">=", "met": True}
    assert t["latency_tail"]["value"] == pytest.approx(20 / 12, abs=1e-4) and t["latency_tail"]["met"] is True
    assert t["overhead"]["value"] == pytest.approx(10.0 / 12.0, abs=1e-4)  # 10 ms per frame for 12 ms of models
    assert t["latency_overhead"]["value"] == pytest.approx(12.0 / 13.0, abs=1e-4)  # daemon's det 11 + cls 2
    assert t["latency_overhead"]["met"] is True
    assert t["identical_detections"] is True
    slow = default_mode_targets(_summary(10.0, 2.0, 50.0, pipe_fps=60.0, lat=(10.0, 30.0)), b, None)
    assert slow["fps_ratio"]["met"] is False and slow["latency_tail"]["met"] is False
    assert slow["overhead"]["met"] is False  # 16.7 ms per frame / 12 ms = 1.39
    assert slow["identical_detections"] is None
    assert slow["latency_overhead"]["value"] == pytest.approx(10.0 / 13.0, abs=1e-4)
    assert default_mode_targets(b, b, None)["latency_overhead"]["met"] is None  # no pipelined run
    assert "NOT MET" in targets_text(slow) and "fps_ratio: 1.5" in targets_text(slow)


def test_overhead_without_detector_is_none() -> None:
    assert overhead_ratio({"fps_sequential": 10.0, "stages_ms": {}}) is None


def test_multi_face_targets_only_for_five_faces() -> None:
    assert multi_face_targets(_summary(10.0, 3.0, 50.0, faces=4.0)) is None
    t = multi_face_targets(_summary(10.0, 3.0, 50.0, pipe_fps=45.0, faces=5.0, per_face=0.6))
    assert t is not None
    assert t["classifier_ms_per_face"]["met"] is True and t["fps"]["value"] == 45.0 and t["fps"]["met"] is True
    t = multi_face_targets(_summary(10.0, 9.0, 30.0, faces=5.0, per_face=1.8))
    assert t is not None and t["classifier_ms_per_face"]["met"] is False and t["fps"]["met"] is False


def test_memory_target() -> None:
    assert memory_target(184.0)["met"] is True
    assert memory_target(201.0)["met"] is False
    assert memory_target(None)["met"] is None


def test_photo_folder_links_the_photo(tmp_path: Path) -> None:
    photo = tmp_path / "p.JPG"
    photo.write_bytes(b"not really a jpeg")
    folder = photo_folder(photo, tmp_path / "frames", copies=3)
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert all(f.is_symlink() and f.read_bytes() == b"not really a jpeg" for f in files)
    assert photo_path(str(photo)) == photo
    assert photo_path("sample:single_face.mp4") is None
    assert photo_path(str(tmp_path / "missing.jpg")) is None
    with pytest.raises(ValueError):
        photo_folder(photo, tmp_path / "x", copies=0)


def test_report_targets_section(tmp_path: Path) -> None:
    import json

    from edge_agent.bench.report import targets_section

    a = _summary(10.0, 2.0, 80.0, pipe_fps=100.0, lat=(12.0, 20.0))
    b = _summary(15.0, 2.0, 40.0)
    compare = {"kind": "compare", "config_name": "cmp", "specs": {"A": "detector=x", "B": "pipeline=reference"},
               "source": {"name": "sample:v.mp4"}, "identical_detections": {"worst_iou": 0.95, "unmatched": 0},
               "targets": {"default_mode": default_mode_targets(a, b, {"identical": True})}}
    speed = {"kind": "speed", "config_name": "multi", "result": {
        "targets": {"multi_face": multi_face_targets(_summary(10.0, 3.0, 50.0, faces=5.0, per_face=0.6))}}}
    (tmp_path / "soak_memory_20260101-000000.json").write_text(json.dumps({
        "rss_max_after_warmup_mb": 190.5, "memory_target_mb": 200.0, "memory_target_met": True,
        "end": {"rss_anon_mb": 90.0, "rss_file_mb": 100.5},
        "final_status": {"models": {"detector": "d", "classifier": "c"}}}))
    text = "\n".join(targets_section([(tmp_path / "c.json", compare), (tmp_path / "s.json", speed)], tmp_path))
    assert "| `detector=x` | sample:v.mp4 | 100.0 (pipelined) / 40.0 (sequential) | 2.5 (>= 2.0: **met**) |" in text
    assert "True (0.95, unmatched 0)" in text
    assert "| multi | 5.0 | 0.6 (<= 1.5: **met**) | 50.0 (>= 40.0: **met**) (sequential) | `s.json` |" in text
    assert "**190.5 MB** (target <= 200.0 MB: met; RssAnon 90.0 MB, RssFile 100.5 MB" in text
    assert targets_section([], tmp_path / "empty") == []


def test_stage_table_always_says_something_about_efficiency() -> None:
    from edge_agent.bench.report import stage_table

    base = {"stages_ms": {}, "frames": 1, "faces_per_frame": 1.0, "fps_sequential": 10.0}
    shown = stage_table({**base, "efficiency": {"fps": 10.0, "gflop_per_frame": 1.5, "achieved_gflops": 15.0,
                                                 "fraction_of_peak": 0.075, "gemm_peak_gflops": 200.0}})
    assert "efficiency: 10.00 fps x 1.500 GFLOP/frame = 15.00 GFLOP/s = 7.50 % of the 200.0 GFLOP/s" in shown
    skipped = stage_table({**base, "efficiency": {"skipped": "GFLOP counts need the ONNX form of the models"}})
    assert "efficiency: not computed (GFLOP counts need the ONNX form of the models)" in skipped
