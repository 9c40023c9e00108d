"""edge-bench speed/compare: configuration syntax, A/B ratios, and the JSON result on the real shipped models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.bench.cli import main
from edge_agent.bench.compare import ratios
from edge_agent.bench.pipelined import overrides_for
from edge_agent.bench.report import write_report
from edge_agent.bench.runner import BenchConfig, ConfigSpecError, apply_spec

DETECTOR = "detector/retinaface-mnet025"
CLASSIFIER = "classifier/mnv3s-facex7"
STAGE_KEYS = {"capture", "preprocess", "detector", "decode", "crop", "classifier", "publish", "total"}


def test_apply_spec_parses_every_kind() -> None:
    base = BenchConfig(detector=Path("d"), classifier=Path("c"))
    cfg = apply_spec(base, "detector=models/x, threads=2,input_size=640x384,align=true,pipeline=reference")
    assert cfg.detector == Path("models/x")
    assert cfg.threads == 2
    assert cfg.input_size == (640, 384)
    assert cfg.align is True
    assert cfg.pipeline == "reference"
    assert cfg.classifier == Path("c")  # untouched
    assert cfg.name() == "x+c_onnx_t2_640x384_reference"


def test_detect_workers_spec_reaches_the_daemon_overrides() -> None:
    cfg = apply_spec(BenchConfig(detector=Path("d"), classifier=Path("c")), "pipeline.detect_workers=2")
    assert cfg.detect_workers == 2 and cfg.name() == "d+c_onnx_t1_w2"
    assert overrides_for(cfg, "video.mp4", "ipc:///tmp/x")["pipeline.detect_workers"] == 2


@pytest.mark.parametrize("spec", ["detector", "colour=red", "threads=two", "input_size=640", "backend=tpu",
                                  "pipeline=reference,backend=hailo", "detect_workers=0", "detect_workers=5",
                                  "detect_workers=2,mode=fast", "detect_workers=2,pipeline=reference"])
def test_apply_spec_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigSpecError):
        apply_spec(BenchConfig(detector=Path("d"), classifier=Path("c")), spec)


def test_ratios_are_a_over_b() -> None:
    a = {"fps_sequential": 30.0, "stages_ms": {"detector": {"p50": 10.0, "p95": 12.0, "p99": 20.0, "mean": 11.0}}}
    b = {"fps_sequential": 20.0, "stages_ms": {"detector": {"p50": 20.0, "p95": 24.0, "p99": 0.0, "mean": 22.0}},
         "pipelined": {"fps": 10.0}}
    r = ratios(a, b)
    assert r["stages_ms"]["detector"] == {"p50": 0.5, "p95": 0.5, "p99": None, "mean": 0.5}
    assert r["fps_sequential"] == 1.5
    assert "fps_pipelined" not in r  # A has no pipelined figure
    assert r["fps_e2e"] == 3.0 and r["fps_e2e_kinds"] == ["sequential", "pipelined"]


def _models(shipped_model: Callable[[str], Path]) -> tuple[Path, Path]:
    return shipped_model(DETECTOR), shipped_model(CLASSIFIER)


def test_speed_json_on_real_models(tmp_path: Path, shipped_model: Callable[[str], Path],
                                   asset: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    det, cls = _models(shipped_model)
    video = asset("single_face.mp4")
    rc = main(["--source", str(video), "--detector", str(det), "--classifier", str(cls), "--warmup", "1",
               "--repeat", "4", "--max-frames", "4", "--json", "--quiet", "--pipeline-seconds", "0",
               "--out-dir", str(tmp_path)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "speed" and data["schema"] == 1
    assert data["machine"]["cores"] >= 1 and data["machine"]["versions"]["onnxruntime"]
    res = data["result"]
    assert res["frames"] == 4
    assert set(res["stages_ms"]) >= STAGE_KEYS
    for s in res["stages_ms"].values():
        assert s["p50"] <= s["p95"] <= s["p99"]
        assert s["n"] >= 1
    assert res["fps_sequential"] > 0
    assert res["faces_per_frame"] > 0.5  # the sample video shows one face
    assert res["models"]["detector"]["model_id"] == "retinaface-mnet025"
    eff = res["efficiency"]
    assert eff["gflop_per_frame"] > 0.5  # RetinaFace-0.25 is ~1 GFLOP at 640
    assert eff["fraction_of_peak"] > 0
    written = Path(data["result_file"])
    assert written.parent == tmp_path and json.loads(written.read_text())["config_name"] == data["config_name"]
    # the report picks the result up
    report = write_report(tmp_path)
    assert data["config_name"] in report.read_text()


def test_compare_produces_ratios(tmp_path: Path, shipped_model: Callable[[str], Path],
                                 asset: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    det, cls = _models(shipped_model)
    video = asset("single_face.mp4")
    rc = main(["--source", str(video), "--detector", str(det), "--classifier", str(cls), "--warmup", "1",
               "--repeat", "4", "--block", "2", "--max-frames", "2", "--json", "--quiet", "--no-efficiency",
               "--pipeline-seconds", "0", "--out-dir", str(tmp_path), "--compare", "pipeline=edge",
               "pipeline=reference"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "compare"
    assert data["results"]["A"]["frames"] == data["results"]["B"]["frames"] == 4
    r = data["ratio_a_over_b"]
    a, b = data["results"]["A"]["stages_ms"], data["results"]["B"]["stages_ms"]
    assert r["stages_ms"]["total"]["p50"] == pytest.approx(a["total"]["p50"] / b["total"]["p50"], rel=1e-3)
    assert r["fps_sequential"] > 0
    assert data["configs"]["B"]["pipeline"] == "reference"
    # same model, same frames: the daemon's detector and the reference find the same faces
    ag = data["identical_detections"]
    assert ag["frames"] == 2 and ag["unmatched"] == 0 and ag["identical"] is True
    assert ag["faces_a"] == ag["faces_b"] == 2 and ag["worst_iou"] >= 0.9
    t = data["targets"]["default_mode"]
    assert t["fps_a_kind"] == t["fps_b_kind"] == "sequential"  # no pipelined run asked for
    assert t["fps_ratio"]["value"] == pytest.approx(r["fps_e2e"], rel=1e-3)
    assert t["identical_detections"] is True
    assert t["latency_tail"]["met"] is None  # needs the pipelined daemon


def test_bad_spec_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--compare", "threads=1", "nonsense", "--quiet"]) == 2
    assert "key=value" in capsys.readouterr().err
