"""Faults the daemon survives, on real models, real media and a real ZeroMQ SUB socket.

* a network stream (a real MJPEG-over-HTTP server on 127.0.0.1, read by OpenCV's FFmpeg backend exactly as a
  camera's HTTP/RTSP stream is) that stalls for longer than ``source.read_timeout_s``, then drops its connection;
* a USB camera unplugged and replugged: a fake at the ``cv2.VideoCapture`` boundary (read() fails, isOpened()
  False, the first reopens fail), delivering real decoded video frames;
* a camera that changes resolution mid-stream (the fake camera; and the MJPEG stream, where OpenCV's FFmpeg
  capture rescales every frame to the size the stream was opened with);
* a video file with garbled bytes in the middle, and a truncated one (``edge-agent run --once``, the real CLI);
* subscribers: one that never reads, and ten more, beside the collector.

No RTSP server exists on this machine (Debian has no mediamtx; ffmpeg cannot serve RTSP alone): RTSP itself goes
through the same FFmpeg capture path but is not exercised here.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq

from edge_agent.engine import build_engine
from edge_agent.messages import EmotionMessage
from edge_agent.pipeline import Pipeline
from edge_agent.publisher import Publisher
from edge_agent.service import WatchdogFeeder
from edge_agent.settings import Settings, SourceSettings, load_settings
from edge_agent.sources import OpenCvCapture, open_source
from tests.support.daemon import daemon_env
from tests.support.notify import NotifyListener
from tests.support.stream import StreamCollector

REPO_ROOT = Path(__file__).resolve().parents[2]
DETECTOR = "detector/acwface-dcn"
CLASSIFIER = "classifier/mnv3s-facex7"


# -- media ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def video_frames(asset: Callable[[str], Path]) -> list[np.ndarray]:
    """The 72 decoded frames of single_face.mp4 (640x360, one face in every frame)."""
    cap = cv2.VideoCapture(str(asset("single_face.mp4")))
    frames: list[np.ndarray] = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    assert len(frames) == 72
    return frames


@pytest.fixture(scope="module")
def models(shipped_model: Callable[[str], Path]) -> dict[str, Path]:
    return {"detector": shipped_model(DETECTOR), "classifier": shipped_model(CLASSIFIER)}


def _settings(models: dict[str, Path], endpoint: str, **source: Any) -> Settings:
    overrides: dict[str, Any] = {
        "detector.model": str(models["detector"]),
        "classifier.model": str(models["classifier"]),
        "backend.kind": "onnx",
        "publisher.endpoint": endpoint,
        "publisher.camera_id": "faults",
        "publisher.sndhwm": 100000,  # the collector must see every message
        "publisher.status_interval_s": 0.1,
    }
    overrides.update({f"source.{k}": v for k, v in source.items()})
    return load_settings(None, overrides)


class Running:
    """A started in-process Pipeline over ``source`` with a Collector subscribed before the first frame."""

    def __init__(self, settings: Settings, factory: Any = None) -> None:
        self.collector = StreamCollector(settings.publisher.endpoint)
        source = open_source(settings.source, queue_size=settings.pipeline.queue_size, factory=factory)
        engine = build_engine(settings)
        publisher = Publisher(settings.publisher.endpoint, sndhwm=settings.publisher.sndhwm)
        self.pipeline = Pipeline(settings, engine, source, publisher)
        self.pipeline.warm_up()
        time.sleep(0.3)  # the SUB joins the freshly bound PUB
        self.pipeline.start()

    def assert_alive(self) -> None:
        health = self.pipeline.health()
        assert health.error is None and health.state == "running", health
        names = {t.name for t in threading.enumerate() if t.is_alive()}
        assert {"capture", "inference", "publish"} <= names, names

    def close(self) -> None:
        try:
            assert self.pipeline.stop(timeout=5.0)
        finally:
            time.sleep(0.2)
            self.collector.close()


def _assert_ordered(emotions: Sequence[EmotionMessage]) -> None:
    seqs = [m.seq for m in emotions]
    assert all(b > a for a, b in itertools.pairwise(seqs)), "seq must be strictly increasing"


# -- a real network stream: MJPEG over HTTP --------------------------------------------------------------------

class MjpegServer:
    """An HTTP ``multipart/x-mixed-replace`` JPEG stream (what IP cameras serve), one client at a time.

    ``stalled``: keep the connection open but send nothing (and send nothing to new clients either);
    ``drop()``: close the current connection; ``scale``: frames from now on are resized by this factor.
    """

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0) -> None:
        self._frames = frames
        self._period = 1.0 / fps
        self.stalled = threading.Event()
        self.scale = 1.0
        self.connections = 0
        self._client: socket.socket | None = None
        self._closing = threading.Event()
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(4)
        self._srv.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._srv.getsockname()[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _jpeg(self, i: int) -> bytes:
        image = self._frames[i % len(self._frames)]
        if self.scale != 1.0:
            image = cv2.resize(image, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        return buf.tobytes()

    def _accept_loop(self) -> None:
        i = 0
        while not self._closing.is_set():
            try:
                client, _ = self._srv.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._client = client
            try:
                client.recv(4096)
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\n"
                               b"Connection: close\r\n\r\n")
                while not self._closing.is_set():
                    if self.stalled.is_set():
                        time.sleep(0.02)
                        continue
                    jpg = self._jpeg(i)
                    i += 1
                    client.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                   + jpg + b"\r\n")
                    time.sleep(self._period)
            except OSError:
                pass
            finally:
                client.close()
                self._client = None

    def drop(self) -> None:
        client = self._client
        if client is not None:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing.set()
        self.drop()
        self._thread.join(5)
        self._srv.close()


@pytest.fixture
def mjpeg(video_frames: list[np.ndarray]) -> Iterator[MjpegServer]:
    server = MjpegServer(video_frames)
    yield server
    server.close()


def test_stream_stall_then_drop_reconnects_and_resumes(models: dict[str, Path], mjpeg: MjpegServer,
                                                       tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.sources")
    settings = _settings(models, f"ipc://{tmp_path}/stall.sock", uri=mjpeg.url, read_timeout_s=1.0,
                         open_timeout_s=1.0, reconnect_initial_s=0.2, reconnect_max_s=0.8)
    run = Running(settings)
    try:
        run.collector.wait_emotions(10)
        run.assert_alive()
        # stall: no frame for 3 s > read_timeout_s; reopening while stalled times out too (no data to probe)
        mjpeg.stalled.set()
        st = run.collector.wait_status(lambda s: s.source.state == "reconnecting")
        assert st.state == "running"  # the daemon itself stays up and keeps publishing status
        time.sleep(2.0)
        run.assert_alive()
        mjpeg.stalled.clear()
        run.collector.wait_status(lambda s: s.source.state == "running" and s.source.reconnects >= 1)
        after_stall = run.collector.n_emotions()
        run.collector.wait_emotions(after_stall + 10)
        # drop: the server closes the connection
        reconnects = run.pipeline.source.reconnects
        mjpeg.drop()
        run.collector.wait_status(lambda s: s.source.reconnects > reconnects and s.source.state == "running")
        after_drop = run.collector.n_emotions()
        run.collector.wait_emotions(after_drop + 10)
        run.assert_alive()
    finally:
        run.close()
    assert mjpeg.connections >= 3
    _assert_ordered(run.collector.emotions)
    assert all(m.size == (640, 360) for m in run.collector.emotions)
    assert sum(1 for m in run.collector.emotions if len(m.faces) == 1) > 0.9 * len(run.collector.emotions)
    text = caplog.text
    assert "read failed; reconnecting" in text and "reconnected (reconnect #2)" in text


def test_stream_resolution_change_keeps_the_opened_size(models: dict[str, Path], mjpeg: MjpegServer,
                                                       tmp_path: Path) -> None:
    """OpenCV's FFmpeg capture converts every frame to the size the stream had when it was opened."""
    settings = _settings(models, f"ipc://{tmp_path}/size.sock", uri=mjpeg.url)
    run = Running(settings)
    try:
        run.collector.wait_emotions(10)
        connections = mjpeg.connections
        mjpeg.scale = 0.5  # the camera switches to 320x180 mid-stream, on the same connection
        n = run.collector.n_emotions()
        run.collector.wait_emotions(n + 150)  # well past what the socket buffers held before the switch
        run.assert_alive()
    finally:
        run.close()
    emotions = run.collector.emotions
    _assert_ordered(emotions)
    assert all(m.size == (640, 360) for m in emotions)
    assert mjpeg.connections == connections and run.pipeline.source.reconnects == 0
    assert sum(len(m.faces) == 1 for m in emotions[-50:]) > 40  # the rescaled frames still show the face


def test_camera_resolution_change_is_published_with_its_own_size(
        models: dict[str, Path], video_frames: list[np.ndarray], tmp_path: Path) -> None:
    cam = FakeUsbCamera(video_frames)
    settings = _settings(models, f"ipc://{tmp_path}/camsize.sock", uri="/dev/video0")
    run = Running(settings, factory=cam.factory)
    try:
        run.collector.wait_emotions(10)
        cam.scale = 0.5  # the driver now delivers 320x180 frames
        run.collector.wait_status(lambda s: s.frames_published > 0 and run.collector.emotions[-1].size == (320, 180))
        n = run.collector.n_emotions()
        run.collector.wait_emotions(n + 20)
        run.assert_alive()
    finally:
        run.close()
    emotions = run.collector.emotions
    _assert_ordered(emotions)
    sizes = [m.size for m in emotions]
    assert set(sizes) == {(640, 360), (320, 180)}
    switch = sizes.index((320, 180))
    assert all(s == (640, 360) for s in sizes[:switch]) and all(s == (320, 180) for s in sizes[switch:])
    assert run.pipeline.source.reconnects == 0
    for m in emotions:
        w, h = m.size
        for f in m.faces:
            x1, y1, x2, y2 = f.box
            assert -1 <= x1 < x2 <= w + 1 and -1 <= y1 < y2 <= h + 1, (m.size, f.box)
    small = [m for m in emotions if m.size == (320, 180)]
    big = [m for m in emotions if m.size == (640, 360)]
    assert all(len(m.faces) == 1 for m in big) and sum(len(m.faces) == 1 for m in small) > 0.8 * len(small)
    # the same face in a half-size frame: the box (in that frame's pixels) is half as wide
    w_small = np.median([m.faces[0].box[2] - m.faces[0].box[0] for m in small if m.faces])
    w_big = np.median([m.faces[0].box[2] - m.faces[0].box[0] for m in big])
    assert 0.4 < w_small / w_big < 0.6


# -- a USB camera at the cv2.VideoCapture boundary -------------------------------------------------------------

class FakeUsbCamera:
    """The physical camera: plugged or not, and how many opens still fail after it is plugged back in."""

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0) -> None:
        self.frames = frames
        self.period = 1.0 / fps
        self.plugged = True
        self.scale = 1.0  # frames from now on are resized by this factor (a mode change)
        self.fail_opens = 0
        self.opens = 0
        self.failed_opens = 0
        self.counter = 0
        self.lock = threading.Lock()

    def factory(self, target: str | int, api: int, params: Sequence[int]) -> FakeVideoCapture:
        """``cv2.VideoCapture(target, apiPreference, params)``: never raises; check isOpened()."""
        self.opens += 1
        ok = self.plugged and self.fail_opens <= 0
        if not ok:
            self.failed_opens += 1
        if self.plugged and self.fail_opens > 0:
            self.fail_opens -= 1
        return FakeVideoCapture(self, ok)


class FakeVideoCapture:
    """Mirrors ``cv2.VideoCapture`` for a V4L2 camera: isOpened, grab, retrieve, read, set, get, release.

    When the camera is unplugged, read()/grab() return False (and read() a None image) as OpenCV does once the
    V4L2 device errors, and isOpened() stays True until release(), also as OpenCV does.
    """

    def __init__(self, cam: FakeUsbCamera, opened: bool) -> None:
        self.cam = cam
        self._opened = opened
        self._grabbed: np.ndarray | None = None
        h, w = cam.frames[0].shape[:2]
        self._props: dict[int, float] = {cv2.CAP_PROP_FRAME_WIDTH: float(w), cv2.CAP_PROP_FRAME_HEIGHT: float(h),
                                         cv2.CAP_PROP_FPS: 1.0 / cam.period, cv2.CAP_PROP_BUFFERSIZE: 4.0}

    def isOpened(self) -> bool:  # OpenCV's name
        return self._opened

    def grab(self) -> bool:
        time.sleep(self.cam.period)
        if not (self._opened and self.cam.plugged):
            self._grabbed = None
            return False
        with self.cam.lock:
            image = self.cam.frames[self.cam.counter % len(self.cam.frames)]
            self.cam.counter += 1
            scale = self.cam.scale
        if scale != 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        self._grabbed = image.copy()
        return True

    def retrieve(self, image: Any = None, flag: int = 0) -> tuple[bool, Any]:
        if self._grabbed is None:
            return False, None
        return True, self._grabbed

    def read(self, image: Any = None) -> tuple[bool, Any]:
        if not self.grab():
            return False, None
        return self.retrieve()

    def set(self, prop: int, value: float) -> bool:
        if not self._opened:
            return False
        self._props[prop] = float(value)
        return True

    def get(self, prop: int) -> float:
        return self._props.get(prop, 0.0) if self._opened else 0.0

    def release(self) -> None:
        self._opened = False
        self._grabbed = None


def test_camera_unplugged_and_replugged(models: dict[str, Path], video_frames: list[np.ndarray], tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge_agent.sources")
    cam = FakeUsbCamera(video_frames)
    settings = _settings(models, f"ipc://{tmp_path}/cam.sock", uri="/dev/video0", reconnect_initial_s=0.1,
                         reconnect_max_s=0.4)
    run = Running(settings, factory=cam.factory)
    try:
        run.collector.wait_emotions(10)
        cam.plugged = False  # unplug: reads fail, reopens fail
        run.collector.wait_status(lambda s: s.source.state == "reconnecting" and s.source.reconnects == 0)
        time.sleep(1.5)  # several reopen attempts with growing delays
        during = run.collector.n_emotions()
        run.assert_alive()
        assert run.pipeline.health().source_state == "reconnecting"  # what the service's watchdog reads
        opens_unplugged = cam.failed_opens
        assert opens_unplugged >= 3
        cam.fail_opens = 2  # replugged, but the first two opens still fail (the device node is not ready yet)
        cam.plugged = True
        run.collector.wait_status(lambda s: s.source.state == "running" and s.source.reconnects == 1)
        run.collector.wait_emotions(during + 20)
        run.assert_alive()
    finally:
        run.close()
    assert cam.failed_opens >= opens_unplugged + 2
    emotions = run.collector.emotions
    _assert_ordered(emotions)
    assert all(len(m.faces) == 1 for m in emotions)  # real frames, one face each, before and after
    text = caplog.text
    assert "read failed; reconnecting" in text and "reconnect failed" in text and "reconnected (reconnect #1)" in text


def test_watchdog_keeps_pinging_while_the_source_reconnects() -> None:
    """An unplugged camera being reopened with backoff is handled, not hung: systemd must not restart the service
    (a restart would fail to open the absent camera and end in a restart loop that systemd gives up on)."""
    feeder = WatchdogFeeder(interval_s=10.0, last_ping=0.0)
    assert feeder.poll(frames_published=5, now=5.0)  # frames flowing
    assert not feeder.poll(frames_published=5, now=10.0)  # no new frame, source "running": a hang, no ping
    assert feeder.poll(frames_published=5, now=10.0, reconnecting=True)  # reconnecting: alive
    assert not feeder.poll(frames_published=5, now=12.0, reconnecting=True)  # still at most one ping per period
    assert feeder.poll(frames_published=9, now=15.1)  # frames again after the reconnect


@pytest.mark.slow
def test_daemon_under_a_watchdog_survives_a_long_stall(models: dict[str, Path], mjpeg: MjpegServer,
                                                       tmp_path: Path) -> None:
    """The real daemon with WatchdogSec=2: a stream silent for 6 s is reconnected without a watchdog restart."""
    notify = NotifyListener()
    endpoint = f"ipc://{tmp_path}/wd.sock"
    env = daemon_env(models, endpoint, source__read_timeout_s="1", source__open_timeout_s="1",
                     source__reconnect_initial_s="0.2", source__reconnect_max_s="0.8")
    env.update(NOTIFY_SOCKET=notify.name, WATCHDOG_USEC="2000000")
    env.pop("WATCHDOG_PID", None)
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--source", mjpeg.url,
                                 "--backend", "onnx"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        notify.wait_for("READY=1", 0.0, 120, proc)
        time.sleep(2.0)
        t_stall = time.monotonic()
        mjpeg.stalled.set()
        time.sleep(6.0)
        t_resume = time.monotonic()
        mjpeg.stalled.clear()
        time.sleep(3.0)
        assert proc.poll() is None, log_path.read_text(errors="replace")
        # one ping per second (half of WatchdogSec) kept coming while the source was being reopened
        assert notify.count("WATCHDOG=1", t_stall + 2.0, t_resume) >= 3, notify.snapshot()
        assert notify.count("WATCHDOG=1", t_resume + 1.0, time.monotonic()) >= 1  # and with frames again afterwards
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    text = log_path.read_text(errors="replace")
    assert "read failed; reconnecting" in text and "reconnected (reconnect #1)" in text
    assert "Traceback" not in text


# -- corrupt video files through the real CLI ------------------------------------------------------------------

def _garble(src: Path, dst: Path, fractions: Sequence[float], length: int) -> None:
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(0)
    for frac in fractions:
        start = int(len(data) * frac)
        data[start:start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))


def _decodable_frames(path: Path) -> int:
    """Independent count: read with plain OpenCV, retrying failed reads until 1000 fail in a row."""
    cap = cv2.VideoCapture(str(path))
    frames = fails = 0
    while fails < 1000:
        ok, _ = cap.read()
        if ok:
            frames, fails = frames + 1, 0
        else:
            fails += 1
    cap.release()
    return frames


def _run_cli_once(models: dict[str, Path], video: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str],
                                                                                   StreamCollector]:
    endpoint = f"ipc://{tmp_path}/cli.sock"
    env = daemon_env(models, endpoint, publisher__camera_id="faults", publisher__sndhwm="100000",
                     publisher__status_interval_s="0.5", source__pace="fast")
    collector = StreamCollector(endpoint)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--source", str(video), "--once", "--backend", "onnx"],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
        time.sleep(0.5)
    finally:
        collector.close()
    return proc, collector


def test_file_source_reads_past_corrupt_packets(asset: Callable[[str], Path], tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """The source alone (no models): a garbled copy yields every decodable frame; the skips are logged."""
    caplog.set_level(logging.INFO, logger="edge_agent.sources")
    broken = tmp_path / "garbled.mp4"
    _garble(asset("WolfgangLanger_Pexels.mp4"), broken, (0.3, 0.5, 0.7), 20000)
    src = open_source(SourceSettings(uri=str(broken), pace="fast"), queue_size=8)
    try:
        frames = list(src.frames(timeout=5.0))
    finally:
        src.close()
    assert len(frames) == _decodable_frames(broken) and src.state == "ended"
    assert [f.frame_id for f in frames] == list(range(len(frames)))
    assert isinstance(src.capture, OpenCvCapture) and src.capture.corrupt_reads > 0
    assert caplog.text.count("undecodable packet(s)") >= 2  # more than one damaged region was passed


def test_file_short_of_its_reported_count_ends_normally(asset: Callable[[str], Path],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """no_face.mp4's container reports 98 frames; 95 decode (plain OpenCV agrees). A loop warns once."""
    caplog.set_level(logging.INFO, logger="edge_agent.sources")
    video = asset("no_face.mp4")
    expected = _decodable_frames(video)
    src = open_source(SourceSettings(uri=str(video), pace="fast", loop=True), queue_size=8)
    try:
        frames = [src.read(timeout=5.0) for _ in range(3 * expected + 5)]
    finally:
        src.close()
    assert all(f is not None for f in frames)
    ids = [f.frame_id for f in frames if f is not None]
    assert ids[:expected] == list(range(expected)) and ids[expected] == 0  # looped after the last decodable frame
    short = [r for r in caplog.records if "ending it here" in r.getMessage()]
    assert len(short) >= 3 and [r.levelno for r in short].count(logging.WARNING) == 1


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["garbled", "truncated"])
def test_corrupt_video_file_publishes_what_decodes_to_the_end(damage: str, models: dict[str, Path],
                                                              asset: Callable[[str], Path], tmp_path: Path) -> None:
    original = asset("WolfgangLanger_Pexels.mp4")  # 472 frames, 640x360, moov atom before the media data
    broken = tmp_path / f"{damage}.mp4"
    if damage == "garbled":
        _garble(original, broken, (0.3, 0.5, 0.7), 20000)
    else:
        broken.write_bytes(original.read_bytes()[: int(original.stat().st_size * 0.6)])
    expected = _decodable_frames(broken)
    assert 100 < expected < 472  # the damage is real, and most of the file still decodes
    proc, col = _run_cli_once(models, broken, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    emotions = col.emotions
    _assert_ordered(emotions)
    # Every frame that decodes is published, including those after the damage: the daemon's own count says so.
    # The SUB may join a few frames late on a loaded machine (ZeroMQ's slow joiner: the PUB binds only after the
    # models load, ~10 ms before the first frame); from the first frame it saw, it must see every frame to the end.
    late = expected - len(emotions)
    assert 0 <= late <= 5, (late, expected)
    assert [m.frame_id for m in emotions] == list(range(late, expected))
    final = col.statuses[-1]
    assert final.state == "ended" and final.frames_published == expected == final.frames_captured
    if damage == "garbled":
        assert "undecodable packet(s)" in proc.stderr  # the skip is logged, and the run went on past it
    assert "ending it here" in proc.stderr


# -- subscribers --------------------------------------------------------------------------------------------------

def test_slow_and_many_subscribers_do_not_hold_back_the_pipeline(models: dict[str, Path], tmp_path: Path,
                                                                 asset: Callable[[str], Path]) -> None:
    endpoint = f"ipc://{tmp_path}/subs.sock"
    settings = _settings(models, endpoint, uri=str(asset("single_face.mp4")), pace="fast", loop=False)
    settings = settings.model_copy(update={"publisher": settings.publisher.model_copy(update={"sndhwm": 16})})
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    idle: list[zmq.Socket[bytes]] = []
    for i in range(11):  # one never reads with the smallest receive buffer; ten more never read either
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, 1 if i == 0 else 16)
        s.setsockopt(zmq.RCVBUF, 4096)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.connect(endpoint)
        idle.append(s)
    run = Running(settings)
    try:
        deadline = time.monotonic() + 120
        while not run.pipeline.health().ended:
            assert time.monotonic() < deadline, run.pipeline.health()
            assert run.pipeline.health().error is None
            time.sleep(0.05)
        health = run.pipeline.health()
    finally:
        run.close()
        for s in idle:
            s.close()
        ctx.term()
    # every frame was processed and handed to the socket: nobody's backlog stopped or slowed the stages into drops
    assert health.frames_published == 72
    assert run.pipeline.source.drops == 0
    # and the reading subscriber got every one of them, in order, while eleven others never read
    assert [m.frame_id for m in run.collector.emotions] == list(range(72))
