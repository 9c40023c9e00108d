"""``detector.mode = "fast"`` end to end: the real daemon (``python -m edge_agent run --once``) with the RetinaFace
INT8 detector on the bundled sample videos, published over ZeroMQ and read by a real SUB socket.

Frame facts as in test_stream.py: ``single_face.mp4`` (640x360, 72 frames) has one face in every frame;
``face_noface.mov`` (960x540, 169 frames) one face in frames 0-71 and none from 72 on. Fast mode must publish
every frame with the same faces (one face per frame, none after the cut); no timing is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from edge_agent.manifest import ManifestError
from edge_agent.messages import EmotionMessage, StatusMessage, decode
from edge_agent.pipeline import Pipeline
from edge_agent.settings import ConfigError, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST_DETECTOR = "detector/retinaface-mnet025-int8"
FIXED_DETECTOR = "detector/acwface-deploy"
CLASSIFIER = "classifier/mnv3s-facex7"
LAST_FACE_FRAME = 68
FIRST_EMPTY_FRAME = 75


class _Collector:
    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 10000)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 10)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.raw: list[tuple[bytes, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50):
                topic, payload = self.sock.recv_multipart()
                self.raw.append((topic, payload))

    def close(self, drain_s: float = 1.0) -> None:
        time.sleep(drain_s)
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        self.ctx.term()


def _run_fast(shipped_model: Callable[[str], Path], video: Path,
              tmp_path: Path) -> tuple[list[EmotionMessage], StatusMessage]:
    endpoint = f"ipc://{tmp_path}/fast.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_") or k == "EDGE_AGENT_CACHE"}
    env.update({
        "EDGE_AGENT_DETECTOR__MODEL": str(shipped_model(FAST_DETECTOR)),
        "EDGE_AGENT_CLASSIFIER__MODEL": str(shipped_model(CLASSIFIER)),
        "EDGE_AGENT_DETECTOR__MODE": "fast",
        "EDGE_AGENT_DETECTOR__FULL_EVERY": "10",
        "EDGE_AGENT_PUBLISHER__ENDPOINT": endpoint,
        "EDGE_AGENT_PUBLISHER__CAMERA_ID": "fast",
        "EDGE_AGENT_PUBLISHER__SNDHWM": "1000",
        "EDGE_AGENT_SOURCE__PACE": "fast",
    })
    sub = _Collector(endpoint)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--source", str(video), "--once", "--backend", "onnx"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
        )
    finally:
        sub.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "detector mode fast: full detection every 10 frames" in proc.stderr
    emotions: list[EmotionMessage] = []
    statuses: list[StatusMessage] = []
    for topic, payload in sub.raw:
        msg = decode(topic, payload)
        if isinstance(msg, EmotionMessage):
            emotions.append(msg)
        elif isinstance(msg, StatusMessage):
            statuses.append(msg)
    assert statuses and statuses[-1].state == "ended"
    assert statuses[-1].models.detector == "retinaface-mnet025-int8"
    return emotions, statuses[-1]


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
    assert any(f.track_id is not None for m in emotions for f in m.faces)  # the tracker confirms the face


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
