"""Benchmark frame sources (folder, video, synthetic:N with real face crops, errors) and the Markdown report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.bench.inputs import BenchSourceError, load_frames
from edge_agent.bench.report import RESULT_SCHEMA, write_report

DETECTOR = "detector/retinaface-mnet025"


def test_folder_and_video_sources(tmp_path: Path, asset: Callable[[str], Path]) -> None:
    for i, name in enumerate(("single_face.jpg", "multi_face.jpg")):
        (tmp_path / f"{i}.jpg").write_bytes(asset(name).read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    fs = load_frames(str(tmp_path), max_frames=8)
    assert len(fs.frames) == 2 and len(fs.capture_s) == 2
    video = load_frames(str(asset("single_face.mp4")), max_frames=5)
    assert len(video.frames) == 5
    assert video.frames[0].dtype == np.uint8 and video.frames[0].ndim == 3


@pytest.mark.parametrize("src", ["synthetic:x", "synthetic:100", "/no/such/path", "ftp://x"])
def test_bad_sources(src: str) -> None:
    with pytest.raises(BenchSourceError):
        load_frames(src)


def test_synthetic_faces_are_found_again(shipped_model: Callable[[str], Path]) -> None:
    from edge_agent.backends.onnx import OnnxBackend
    from edge_agent.detector import FaceDetector
    from edge_agent.manifest import load_artifact

    art = load_artifact(shipped_model(DETECTOR))
    det = FaceDetector(art, OnnxBackend(art.path, intra_op_threads=1))
    fs = load_frames("synthetic:4", detect=det.detect)
    assert fs.size == (1280, 720)
    # the four pasted real faces are detected in the composed frame
    assert len(det.detect(fs.frames[0])) == 4
    assert len(det.detect(load_frames("synthetic:0").frames[0])) == 0


def _speed(name: str, p50: float) -> dict[str, object]:
    stages = {s: {"p50": p50, "p95": p50 * 1.2, "p99": p50 * 1.5, "mean": p50, "n": 10}
              for s in ("capture", "preprocess", "detector", "decode", "crop", "classifier", "publish", "total")}
    return {"schema": RESULT_SCHEMA, "kind": "speed", "config_name": name, "created": "2026-01-01T00:00:00Z",
            "machine": {"cpu_model": "Test CPU", "cores": 2}, "source": {"name": "sample:x"},
            "result": {"frames": 10, "faces_per_frame": 1.0, "fps_sequential": 1000 / p50, "stages_ms": stages,
                       "pipelined": {"fps": 30.0, "latency_ms": {"p50": 40.0}},
                       "efficiency": {"fraction_of_peak": 0.1}}}


def test_report_renders_speed_compare_and_eval(tmp_path: Path) -> None:
    (tmp_path / "a_1.json").write_text(json.dumps(_speed("cfgA@x", 20.0)))
    (tmp_path / "a_2.json").write_text(json.dumps(_speed("cfgA@x", 25.0)))  # newer result of the same config
    cmp = {"schema": RESULT_SCHEMA, "kind": "compare", "config_name": "cmp", "source": {"name": "sample:x"},
           "specs": {"A": "pipeline=edge", "B": "pipeline=reference"},
           "results": {"A": {"fps_sequential": 40.0}, "B": {"fps_sequential": 20.0}},
           "ratio_a_over_b": {"stages_ms": {"total": {"p50": 0.5, "p95": 0.6}, "detector": {"p50": 1.0}},
                              "fps_sequential": 2.0}}
    (tmp_path / "c.json").write_text(json.dumps(cmp))
    ev = {"schema": RESULT_SCHEMA, "kind": "eval-wider", "config_name": "toy", "created": "x",
          "summary": {"easy_ap": 0.9, "medium_ap": 0.8, "hard_ap": 0.5}, "baselines": {"seed": "90.7"}}
    (tmp_path / "e.json").write_text(json.dumps(ev))
    (tmp_path / "junk.json").write_text("{not json")
    text = write_report(tmp_path).read_text()
    assert "| cfgA@x |" in text and "25.00" in text and "20.00 |" not in text.split("cfgA@x")[1].split("\n")[0]
    assert "| `pipeline=edge` | `pipeline=reference` |" in text and "| 2.0 |" in text
    assert "eval-wider:toy" in text and "| easy_ap | 0.9000 |" in text
    assert (tmp_path / "report_stages.png").stat().st_size > 1000
    assert cv2.imread(str(tmp_path / "report_stages.png")) is not None
