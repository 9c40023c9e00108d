"""``detector.mode = "fast"`` end to end: the real daemon (``python -m edge_agent run --once``) with the RetinaFace
INT8 detector on the bundled sample videos, published over ZeroMQ and read by a real SUB socket.

Frame facts as in test_stream.py: ``single_face.mp4`` (640x360, 72 frames) has one face in every frame;
``face_noface.mov`` (960x540, 169 frames) one face in frames 0-71 and none from 72 on. Fast mode must publish
every frame with the same faces (one face per frame, none after the cut); no timing is asserted.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.manifest import ManifestError
from edge_agent.messages import EmotionMessage, StatusMessage
from edge_agent.pipeline import Pipeline
from edge_agent.settings import ConfigError, load_settings
from tests.support.daemon import daemon_env
from tests.support.stream import StreamCollector

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST_DETECTOR = "detector/retinaface-mnet025-int8"
FIXED_DETECTOR = "detector/acwface-deploy"
CLASSIFIER = "classifier/mnv3s-facex7"
LAST_FACE_FRAME = 68
FIRST_EMPTY_FRAME = 75


def _run_fast(shipped_model: Callable[[str], Path], video: Path,
              tmp_path: Path) -> tuple[list[EmotionMessage], StatusMessage]:
    endpoint = f"ipc://{tmp_path}/fast.sock"
    models = {"detector": shipped_model(FAST_DETECTOR), "classifier": shipped_model(CLASSIFIER)}
    env = daemon_env(models, endpoint, detector__mode="fast", detector__full_every="10",
                     publisher__camera_id="fast", publisher__sndhwm="1000", source__pace="fast")
    sub = StreamCollector(endpoint)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--source", str(video), "--once", "--backend", "onnx"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
        )
    finally:
        sub.close(drain_s=1.0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "detector mode fast: full detection every 10 frames" in proc.stderr
    statuses = sub.statuses
    assert statuses and statuses[-1].state == "ended"
    assert statuses[-1].models.detector == "retinaface-mnet025-int8"
    return sub.emotions, statuses[-1]


@pytest.mark.slow
def test_fast_mode_single_face(shipped_model: Callable[[str], Path], asset: Callable[[str], Path],
                               tmp_path: Path) -> None:
    emotions, final = _run_fast(shipped_model, asset("single_face.mp4"), tmp_path)
    assert [m.frame_id for m in emotions] == list(range(72))  # every frame published
    assert final.frames_published == 72 and final.drops == 0
    for m in emotions:
        assert len(m.faces) == 1, f"frame {m.frame_id}: {len(m.faces)} faces"
        f = m.faces[0]
        x1, y1, x2, y2 = f.box
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 360 and (x2 - x1) > 80 and f.score >= 0.6
        assert f.label is not None and f.probs is not None
    # the tracker confirms the face and keeps one id through the ROI/full jitter of a burst of frames
    assert {f.track_id for m in emotions for f in m.faces if f.track_id is not None} == {1}


@pytest.mark.slow
def test_fast_mode_face_then_no_face(shipped_model: Callable[[str], Path], asset: Callable[[str], Path],
                                     tmp_path: Path) -> None:
    emotions, _ = _run_fast(shipped_model, asset("face_noface.mov"), tmp_path)
    by_frame = {m.frame_id: m for m in emotions}
    assert sorted(by_frame) == list(range(169))
    for i in range(LAST_FACE_FRAME + 1):
        assert len(by_frame[i].faces) == 1, f"frame {i}: expected one face"
    for i in range(FIRST_EMPTY_FRAME, 169):
        assert by_frame[i].faces == [], f"frame {i}: expected no face"


def test_fast_mode_refuses_a_fixed_size_detector(shipped_model: Callable[[str], Path], asset: Callable[[str], Path],
                                                 tmp_path: Path) -> None:
    settings = load_settings(None, {
        "backend.kind": "onnx", "detector.model": shipped_model(FIXED_DETECTOR),
        "classifier.model": shipped_model(CLASSIFIER), "detector.mode": "fast",
        "source.uri": str(asset("single_face.mp4")), "publisher.endpoint": f"ipc://{tmp_path}/x.sock",
    })
    with pytest.raises(ManifestError, match="dynamic"):
        Pipeline.from_settings(settings)
    with pytest.raises(ConfigError, match="full_every"):
        load_settings(None, {"detector.full_every": 0})
