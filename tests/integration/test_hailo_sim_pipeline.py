"""The real Pipeline on the latency-simulating Hailo device (edge_agent.bench.hailo_sim): the Hailo backend
runs through the simulated HailoRT API, every frame is published, faces are found and classified, the chip's
jobs are accounted, and the simulator never leaks out as ``hailo_platform``. No timing assertions."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.bench.hailo_sim.compile import sim_compile
from edge_agent.bench.hailo_sim.run import run_pipeline, simulated_hailo_platform
from edge_agent.manifest import load_artifact

pytestmark = pytest.mark.slow

VIDEO = "single_face.mp4"


@pytest.fixture(scope="module")
def sim_hefs(tmp_path_factory: pytest.TempPathFactory, shipped_model: Callable[[str], Path]) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sim_hef")
    det = sim_compile(shipped_model("detector/acwface-deploy"), root / "det")
    cls = sim_compile(shipped_model("classifier/mnv3s-facex7"), root / "cls")
    return det, cls


def test_sim_compile_writes_hef_artifacts(sim_hefs: tuple[Path, Path]) -> None:
    det, cls = (load_artifact(p).manifest for p in sim_hefs)
    assert det.format == "hef" and det.hailo is not None and det.hailo.dfc_version == "simulated"
    assert det.preprocess.dtype == "uint8" and det.preprocess.layout == "NHWC"
    assert det.detector_outputs is not None and det.detector_outputs.heads_layout == "NHWC"
    assert cls.format == "hef" and cls.labels is not None and len(cls.labels) == 7


@pytest.mark.parametrize("capture", ["file", "memory"])
def test_pipeline_on_the_simulated_device_publishes_faces(sim_hefs: tuple[Path, Path], asset: Callable[[str], Path],
                                                          capture: str) -> None:
    asset(VIDEO)  # fetched (or skipped) before the run
    det, cls = sim_hefs
    run = run_pipeline(det, cls, f"sample:{VIDEO}", {"detector": 0.002, "classifier": 0.0005}, capture=capture)
    assert run.frames_published > 0
    assert run.frames_with_faces >= 0.9 * run.frames_published  # one person in every frame of this clip
    assert run.faces >= run.frames_with_faces
    # One detector job per published frame (the warm-up ran before the window), one classifier job per face.
    assert run.chip_jobs["acwface_deploy"] == run.frames_published
    assert run.chip_jobs["mnv3s_facex7"] == run.faces
    assert 0.0 < run.chip_busy <= 1.0
    assert "hailo_platform" not in sys.modules


def test_the_simulator_does_not_shadow_a_real_hailo_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    sentinel = type(sys)("hailo_platform")
    monkeypatch.setitem(sys.modules, "hailo_platform", sentinel)
    with pytest.raises(RuntimeError, match="already imported"), simulated_hailo_platform():
        pass
    assert sys.modules["hailo_platform"] is sentinel


def test_edge_bench_hailo_sim_model_only_writes_a_result(tmp_path: Path, asset: Callable[[str], Path],
                                                         shipped_model: Callable[[str], Path]) -> None:
    import json

    from edge_agent.bench.cli import main

    asset(VIDEO)
    shipped_model("detector/acwface-deploy")
    rc = main(["hailo-sim", "--source", f"sample:{VIDEO}", "--no-sim", "--host-frames", "8",
               "--out-dir", str(tmp_path), "--arch", "hailo8l", "--pcie", "gen3x1"])
    assert rc == 0
    (result,) = tmp_path.glob("*hailo-sim-hailo8l-gen3x1*.json")
    data = json.loads(result.read_text())
    assert data["assumptions"]["pcie"] == "PCIe 3.0 x1"
    assert data["assumptions"]["detector_reference"]["fps_batch1"] == 588.0
    rows = data["projection"]
    assert {(r["source"], r["layout"], r["faces"]) for r in rows} == {
        (s, lay, f) for s in ("file", "camera") for lay in ("sequential", "two_stage", "overlapped") for f in (0, 1, 4)}
    assert all(0 < r["device_busy_pct"] <= 100 and r["fps"] > 0 for r in rows)
    assert data["host_ms_pi5"]["decode"] == pytest.approx(2.5 * data["host_ms_here"]["decode"], rel=0.01, abs=0.002)
    assert "simulation" not in data


def test_importing_the_simulator_does_not_provide_hailo_platform() -> None:
    import subprocess

    code = ("import edge_agent.bench.hailo_sim.run, edge_agent.bench.hailo_simcmd, sys\n"
            "assert 'hailo_platform' not in sys.modules\n"
            "try:\n    import hailo_platform\nexcept ImportError:\n    print('absent')\n"
            "else:\n    where = hailo_platform.__name__ + str(hailo_platform.__file__)\n"
            "    print('sim' if 'bench' in where else 'real')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() in ("absent", "real")  # never the simulator
