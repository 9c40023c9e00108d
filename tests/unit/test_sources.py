"""Frame sources on real sample videos and image folders, and the reconnect path with a fake camera that stands in
for ``cv2.VideoCapture`` (the hardware boundary)."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_agent.errors import SourceError
from edge_agent.frames import Frame
from edge_agent.settings import SourceSettings
from edge_agent.sources import FrameSource, OpenCvCapture, classify, open_source, resolve
from edge_agent.sources.capture import FFMPEG_OPTIONS_ENV, V4L_SELECT_TIMEOUT_ENV, ffmpeg_capture_options
from edge_agent.sources.frame_queue import DropOldestQueue
from edge_agent.sources.threaded import backoff_delays
from edge_agent.sources.uri import SourceSpec

SINGLE_FACE_FRAMES = 72  # single_face.mp4: 640x360, 30 fps, 72 frames (decoded count)


def _drain(source: FrameSource, limit_s: float = 30.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + limit_s
    for f in source.frames(timeout=0.5):
        frames.append(f)
        assert time.monotonic() < deadline, "source did not end"
    return frames


# -- URI classification ---------------------------------------------------------------------------------------

def test_classify_kinds(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    assert classify("0") == SourceSpec("device", 0, "camera 0")
    assert classify("/dev/video2").kind == "v4l2"
    assert classify(str(tmp_path)).kind == "folder"
    assert classify(str(video)).kind == "file"
    rtsp = classify("rtsp://admin:hunter2@10.0.0.5:554/stream1")
    assert rtsp.kind == "stream" and rtsp.live
    assert "hunter2" not in rtsp.display and "admin:***@" in rtsp.display
    assert not classify(str(video)).live


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=r"nope\.mp4"):
        open_source(SourceSettings(uri=str(missing)))


def test_undecodable_file_names_the_path(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match=r"junk\.mp4"):
        open_source(SourceSettings(uri=str(junk)))


def test_unknown_sample_is_a_source_error() -> None:
    with pytest.raises(SourceError, match="unknown sample"):
        resolve("sample:does_not_exist.mp4")


def test_sample_uri_resolves_to_the_asset(asset: Callable[[str], Path]) -> None:
    path = asset("single_face.mp4")
    spec = resolve("sample:single_face.mp4")
    assert spec.kind == "file" and Path(str(spec.target)) == path


# -- files -----------------------------------------------------------------------------------------------------

def test_file_fast_plays_every_frame_in_order(asset: Callable[[str], Path]) -> None:
    src = open_source(SourceSettings(uri=str(asset("single_face.mp4")), pace="fast"), queue_size=2)
    try:
        frames = _drain(src)
    finally:
        src.close()
    assert len(frames) == SINGLE_FACE_FRAMES
    assert [f.seq for f in frames] == list(range(SINGLE_FACE_FRAMES))
    assert [f.frame_id for f in frames] == list(range(SINGLE_FACE_FRAMES))
    assert all(f.image.shape == (360, 640, 3) and f.image.dtype == np.uint8 for f in frames)
    caps = [f.t_capture for f in frames]
    assert all(b > a for a, b in itertools.pairwise(caps))
    assert all(abs(f.t_wall - time.time()) < 60 for f in frames)
    assert src.ended and src.drops == 0 and src.frames_captured == SINGLE_FACE_FRAMES


def test_file_native_pace_follows_the_file_rate(asset: Callable[[str], Path]) -> None:
    src = open_source(SourceSettings(uri=str(asset("single_face.mp4")), pace="native"), queue_size=256)
    t0 = time.monotonic()
    try:
        frames = _drain(src)
    finally:
        src.close()
    elapsed = time.monotonic() - t0
    # 72 frames at 30 fps: the last frame is due 71/30 s after the first; never earlier.
    span = frames[-1].t_capture - frames[0].t_capture
    assert span >= (SINGLE_FACE_FRAMES - 1) / 30.0 - 0.02
    assert elapsed >= span
    assert len(frames) == SINGLE_FACE_FRAMES  # the queue was big enough: nothing dropped


def test_file_loop_restarts(asset: Callable[[str], Path]) -> None:
    src = open_source(SourceSettings(uri=str(asset("single_face.mp4")), pace="fast", loop=True))
    got: list[Frame] = []
    try:
        for f in src.frames(timeout=2.0):
            got.append(f)
            if len(got) == SINGLE_FACE_FRAMES + 10:
                break
    finally:
        src.close()
    assert [f.seq for f in got] == list(range(SINGLE_FACE_FRAMES + 10))
    assert got[SINGLE_FACE_FRAMES].frame_id == 0 and got[-1].frame_id == 9
    assert not src.ended and src.state == "closed"


def test_looping_folder_keeps_its_pace(tmp_path: Path, asset: Callable[[str], Path]) -> None:
    """A looping one-image folder at 20 fps: the restart of each loop is paced like any other frame."""
    shutil.copy(asset("single_face.jpg"), tmp_path / "a.jpg")
    src = open_source(SourceSettings(uri=str(tmp_path), loop=True, pace="native", folder_fps=20.0), queue_size=64)
    got: list[Frame] = []
    try:
        for f in src.frames(timeout=2.0):
            got.append(f)
            if len(got) == 6:
                break
    finally:
        src.close()
    span = got[-1].t_capture - got[0].t_capture
    assert span >= 5 / 20.0 - 0.02  # six frames at 20 fps span 0.25 s; unpaced restarts would take ~0


def test_close_stops_a_running_source_promptly(asset: Callable[[str], Path]) -> None:
    src = open_source(SourceSettings(uri=str(asset("face_noface.mov")), pace="native"))
    assert src.read(timeout=5.0) is not None
    t0 = time.monotonic()
    src.close(timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    assert src.state == "closed"


def test_native_pace_drops_oldest_when_nobody_reads(asset: Callable[[str], Path]) -> None:
    src = open_source(SourceSettings(uri=str(asset("single_face.mp4")), pace="native"), queue_size=2)
    src.start()
    deadline = time.monotonic() + 10
    while src.state != "ended" and time.monotonic() < deadline:
        time.sleep(0.05)
    kept = _drain(src)
    src.close()
    assert len(kept) == 2 and src.drops == SINGLE_FACE_FRAMES - 2
    assert [f.frame_id for f in kept] == [SINGLE_FACE_FRAMES - 2, SINGLE_FACE_FRAMES - 1]


# -- folders ---------------------------------------------------------------------------------------------------

def test_image_folder_sorted_and_skips_undecodable(tmp_path: Path, asset: Callable[[str], Path]) -> None:
    shutil.copy(asset("single_face.jpg"), tmp_path / "b.jpg")
    shutil.copy(asset("multi_face.jpg"), tmp_path / "a.jpg")
    (tmp_path / "c.png").write_bytes(b"not a png")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(SourceSettings(uri=str(tmp_path), pace="fast"))
    try:
        frames = _drain(src)
    finally:
        src.close()
    expected = [cv2.imread(str(tmp_path / n)) for n in ("a.jpg", "b.jpg")]
    assert len(frames) == 2
    for f, img in zip(frames, expected, strict=True):
        assert np.array_equal(f.image, img)


def test_empty_folder_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no images"):
        open_source(SourceSettings(uri=str(tmp_path)))


# -- queue and backoff (pure) ---------------------------------------------------------------------------------

def test_drop_oldest_queue() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(2)
    assert not q.put(1) and not q.put(2)
    assert q.put(3)  # drops 1
    assert q.dropped == 1
    assert q.get(0.01) == 2 and q.get(0.01) == 3 and q.get(0.01) is None
    assert q.put_wait(4, 0.01) and q.put_wait(5, 0.01) and not q.put_wait(6, 0.01)
    q.close()
    assert q.get(5.0) == 4 and q.get(5.0) == 5
    t0 = time.monotonic()
    assert q.get(5.0) is None and time.monotonic() - t0 < 1.0


def test_backoff_doubles_to_the_cap() -> None:
    it = backoff_delays(0.5, 3.0)
    assert [next(it) for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_ffmpeg_options_request_tcp_and_low_latency() -> None:
    opts = ffmpeg_capture_options(SourceSettings(rtsp_transport="tcp"))
    assert "rtsp_transport;tcp" in opts.split("|") and "fflags;nobuffer" in opts


# -- the camera boundary: a fake cv2.VideoCapture ---------------------------------------------------------------

class FakeCamera:
    """A camera that can be unplugged and replugged; ``open`` builds FakeVideoCapture handles like cv2 does."""

    def __init__(self, fail_opens: int = 0) -> None:
        self.plugged = True
        self.fail_opens = fail_opens
        self.opens: list[tuple[Any, int, list[int]]] = []
        self.sets: list[tuple[int, float]] = []
        self.env_at_open: list[str | None] = []
        self.counter = 0
        self.lock = threading.Lock()

    def factory(self, target: str | int, api: int, params: Sequence[int]) -> FakeVideoCapture:
        import os

        self.opens.append((target, api, list(params)))
        self.env_at_open.append(os.environ.get(FFMPEG_OPTIONS_ENV))
        ok = self.plugged and self.fail_opens <= 0
        if self.plugged and self.fail_opens > 0:
            self.fail_opens -= 1
        return FakeVideoCapture(self, ok)


class FakeVideoCapture:
    """Mirrors the cv2.VideoCapture methods the source uses: isOpened, read, set, get, release."""

    def __init__(self, cam: FakeCamera, opened: bool) -> None:
        self.cam, self.opened = cam, opened
        self.props: dict[int, float] = {cv2.CAP_PROP_FRAME_WIDTH: 64, cv2.CAP_PROP_FRAME_HEIGHT: 48,
                                         cv2.CAP_PROP_FPS: 30}

    def isOpened(self) -> bool:  # OpenCV's name
        return self.opened

    def read(self) -> tuple[bool, Any]:
        time.sleep(0.002)
        if not (self.opened and self.cam.plugged):
            return False, None
        with self.cam.lock:
            self.cam.counter += 1
            value = self.cam.counter % 256
        return True, np.full((48, 64, 3), value, np.uint8)

    def set(self, prop: int, value: float) -> bool:
        self.cam.sets.append((prop, value))
        self.props[prop] = value
        return True

    def get(self, prop: int) -> float:
        return self.props.get(prop, 0.0)

    def release(self) -> None:
        self.opened = False


def test_camera_requests_size_fps_and_mjpg_with_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(V4L_SELECT_TIMEOUT_ENV, raising=False)
    cam = FakeCamera()
    settings = SourceSettings(uri="0", width=1280, height=720, fps=30, fourcc="MJPG",
                              open_timeout_s=3, read_timeout_s=2)
    src = open_source(settings, factory=cam.factory)
    src.close()
    target, api, params = cam.opens[0]
    assert target == 0 and api == cv2.CAP_V4L2
    # V4L2 accepts no timeout parameters at open; its frame wait is bounded through the environment instead
    assert params == []
    import os

    assert os.environ[V4L_SELECT_TIMEOUT_ENV] == "2"
    props = [p for p, _ in cam.sets]
    assert props.index(cv2.CAP_PROP_FOURCC) < props.index(cv2.CAP_PROP_FRAME_WIDTH)
    assert (cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG")) in cam.sets
    assert (cv2.CAP_PROP_FRAME_WIDTH, 1280) in cam.sets and (cv2.CAP_PROP_FRAME_HEIGHT, 720) in cam.sets
    assert (cv2.CAP_PROP_FPS, 30) in cam.sets


def test_rtsp_sets_ffmpeg_options_before_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FFMPEG_OPTIONS_ENV, raising=False)
    cam = FakeCamera()
    src = open_source(SourceSettings(uri="rtsp://cam.local/stream", rtsp_transport="tcp"), factory=cam.factory)
    src.close()
    assert cam.opens[0][1] == cv2.CAP_FFMPEG
    assert cam.opens[0][2] == [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 10000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
    assert cam.env_at_open[0] is not None and "rtsp_transport;tcp" in cam.env_at_open[0]
    # process-wide and harmful to file decoding: restored once the stream is open
    import os

    assert FFMPEG_OPTIONS_ENV not in os.environ


def test_camera_absent_at_start_is_a_source_error() -> None:
    cam = FakeCamera()
    cam.plugged = False
    with pytest.raises(SourceError, match="camera 0"):
        open_source(SourceSettings(uri="0"), factory=cam.factory)


def test_live_source_reconnects_with_backoff() -> None:
    cam = FakeCamera()
    settings = SourceSettings(uri="/dev/video0", reconnect_initial_s=0.05, reconnect_max_s=0.2)
    src = open_source(settings, queue_size=4, factory=cam.factory)
    try:
        first = [src.read(timeout=2.0) for _ in range(5)]
        assert all(f is not None for f in first)
        cam.plugged = False  # unplug: reads fail, reopen fails
        cam.fail_opens = 2  # and after replugging, two more opens fail
        deadline = time.monotonic() + 5
        while src.state != "reconnecting" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert src.state == "reconnecting"
        time.sleep(0.3)
        opens_while_unplugged = len(cam.opens)
        cam.plugged = True
        deadline = time.monotonic() + 5
        while src.reconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert src.reconnects == 1 and src.state == "running"
        assert len(cam.opens) >= opens_while_unplugged + 3  # 2 failed opens, then the good one
        later = [src.read(timeout=2.0) for _ in range(5)]
        assert all(f is not None for f in later)
    finally:
        src.close()
    seqs = [f.seq for f in first + later if f is not None]
    assert all(b > a for a, b in itertools.pairwise(seqs))
    assert src.state == "closed"


def test_live_source_reads_raise_after_capture_thread_crash() -> None:
    cam = FakeCamera()
    src = open_source(SourceSettings(uri="0"), factory=cam.factory)

    def boom() -> tuple[np.ndarray, int] | None:
        raise RuntimeError("driver exploded")

    assert isinstance(src.capture, OpenCvCapture)
    src.capture.read = boom  # type: ignore[method-assign]
    try:
        with pytest.raises(SourceError, match="driver exploded"):
            for _ in range(50):
                src.read(timeout=0.1)
    finally:
        src.close()
    assert src.state == "failed"


@pytest.mark.hardware
def test_real_camera_delivers_frames() -> None:
    device = Path("/dev/video0")
    if not device.exists():
        pytest.skip("no camera: /dev/video0 does not exist")
    src = open_source(SourceSettings(uri=str(device), width=640, height=480), queue_size=2)
    try:
        frames = [src.read(timeout=5.0) for _ in range(10)]
    finally:
        src.close()
    got = [f for f in frames if f is not None]
    assert len(got) >= 5 and all(f.image.ndim == 3 and f.image.shape[2] == 3 for f in got)
    assert all(b.seq > a.seq for a, b in itertools.pairwise(got))
