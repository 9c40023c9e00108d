"""Run the real daemon pipeline on the simulated Hailo device and measure how busy the device is.

:func:`simulated_hailo_platform` hands :mod:`.hailo_api` to the Hailo backend as ``hailo_platform`` for the
duration of a ``with`` block in this process only (the daemon's normal path never sees it: without a real
HailoRT, ``import hailo_platform`` fails there as before). :func:`run_pipeline` builds the real
:class:`edge_agent.pipeline.Pipeline` (Hailo backend, source paced "fast"), plays the file to its end, reads
the stream back over a real ZeroMQ SUB socket and reports the chip's busy share, fps and capture->publish
latency of the window between the first capture and the last publish.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from edge_agent.bench.hailo_sim import hailo_api
from edge_agent.bench.hailo_sim.chip import SimChip
from edge_agent.bench.hailo_sim.hailo_api import pyhailort as api_package
from edge_agent.bench.hailo_sim.hailo_api.pyhailort import pyhailort as api_module
from edge_agent.bench.hailo_sim.network import cache_counts
from edge_agent.engine import build_engine
from edge_agent.pipeline import Pipeline
from edge_agent.publisher import open_publisher
from edge_agent.settings import Settings
from edge_agent.sources import FrameSource, open_source
from edge_agent.sources.capture import as_bgr
from edge_agent.sources.uri import SourceSpec, resolve

log = logging.getLogger(__name__)


@contextlib.contextmanager
def simulated_hailo_platform() -> Iterator[None]:
    """``import hailo_platform`` yields the simulator inside this block (this process only)."""
    names = ("hailo_platform", "hailo_platform.pyhailort", "hailo_platform.pyhailort.pyhailort")
    saved = {n: sys.modules.get(n) for n in names}
    if saved["hailo_platform"] is not None:
        raise RuntimeError("a hailo_platform is already imported in this process; the simulator will not shadow it")
    sys.modules["hailo_platform"] = hailo_api
    sys.modules["hailo_platform.pyhailort"] = api_package
    sys.modules["hailo_platform.pyhailort.pyhailort"] = api_module
    try:
        yield
    finally:
        for n, mod in saved.items():
            if mod is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = mod


class MemoryCapture:
    """A file's frames decoded up front and replayed (a :class:`edge_agent.sources.capture.Capture`): a source
    that costs the capture thread nothing per frame, like a camera delivering raw frames by DMA."""

    def __init__(self, uri: str) -> None:
        import cv2

        self.spec: SourceSpec = resolve(uri)
        if self.spec.live:
            raise ValueError(f"{uri}: memory replay needs a file source")
        cap = cv2.VideoCapture(str(self.spec.target))
        self._frames = []
        while True:
            ok, img = cap.read()
            if not ok or img is None:
                break
            self._frames.append(as_bgr(img))
        cap.release()
        if not self._frames:
            raise ValueError(f"{uri}: no frame decoded")
        self._i = 0

    @property
    def fps(self) -> float:
        return 30.0

    def open(self) -> None:
        self._i = 0

    def read(self) -> tuple[np.ndarray, int] | None:
        if self._i >= len(self._frames):
            return None
        i, self._i = self._i, self._i + 1
        return self._frames[i], i

    def close(self) -> None:
        return None


def _open_source(settings: Settings, capture: str) -> FrameSource:
    if capture == "file":
        return open_source(settings.source, queue_size=settings.pipeline.queue_size)
    if capture == "memory":
        src = FrameSource(MemoryCapture(settings.source.uri), pace="fast",
                          queue_size=settings.pipeline.queue_size)
        src.open()
        return src
    raise ValueError(f"capture must be 'file' or 'memory', got {capture!r}")


@dataclass(frozen=True)
class SimRun:
    frames_published: int
    frames_with_faces: int
    faces: int
    seconds: float
    fps: float
    chip_busy: float  # 0..1 over the run window
    chip_jobs: dict[str, int]
    overruns: int  # jobs where the simulator's own work exceeded the configured chip time
    overrun_s: float  # total time those jobs were held beyond their chip time (counted idle)
    cache: dict[str, int]
    latency_ms: dict[str, dict[str, float]]  # per stage p50/p95/p99 from the daemon's status snapshot

    def to_json(self) -> dict[str, Any]:
        return {
            "frames_published": self.frames_published, "frames_with_faces": self.frames_with_faces,
            "faces": self.faces, "seconds": round(self.seconds, 3), "fps": round(self.fps, 2),
            "chip_busy_pct": round(100.0 * self.chip_busy, 1), "chip_jobs": self.chip_jobs,
            "overruns": self.overruns, "overrun_pct_of_window": round(100.0 * self.overrun_s / self.seconds, 1),
            "cache": self.cache, "latency_ms": self.latency_ms,
        }


class _Collector:
    """Counts emotion messages (and faces in them) on a real SUB socket."""

    def __init__(self, endpoint: str) -> None:
        self._sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"emotion.v1.")
        self._sock.setsockopt(zmq.RCVHWM, 1_000_000)
        self._sock.connect(endpoint)
        self.messages = 0
        self.with_faces = 0
        self.faces = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._sock.poll(50):
                _topic, payload = self._sock.recv_multipart()
                n = len(json.loads(payload)["faces"])
                self.messages += 1
                self.with_faces += n > 0
                self.faces += n

    def close(self, drain_s: float = 0.5) -> None:
        time.sleep(drain_s)
        self._stop.set()
        self._thread.join()
        self._sock.close(linger=0)


def run_pipeline(det_hef: Path, cls_hef: Path, source: str, seconds_by_task: dict[str, float], *,
                 arch: str = "HAILO8", capture: str = "file", timeout_s: float = 600.0,
                 settings_extra: dict[str, Any] | None = None) -> SimRun:
    """Play ``source`` once through the real Pipeline on a fresh simulated chip; see the module docstring.

    ``capture``: "file" decodes the video in the capture thread as the daemon does; "memory" replays frames
    decoded beforehand (:class:`MemoryCapture`), so the source is never the bottleneck."""
    chip = SimChip()
    api_module.configure(chip, seconds_by_task, arch=arch)
    tmp = Path(tempfile.mkdtemp(prefix="hailo-sim-"))
    endpoint = f"ipc://{tmp}/stream.sock"
    extra = settings_extra or {}
    settings = Settings(
        source={"uri": source, "pace": "fast", "loop": False, **extra.get("source", {})},
        backend={"kind": "hailo"},
        detector={"hailo_model": det_hef, **extra.get("detector", {})},
        classifier={"hailo_model": cls_hef, **extra.get("classifier", {})},
        publisher={"endpoint": endpoint, "camera_id": "sim"},
        pipeline=extra.get("pipeline", {}),
    )
    try:
        with simulated_hailo_platform():
            publisher = open_publisher(settings.publisher, settings.security)
            try:
                engine = build_engine(settings)
            except BaseException:
                publisher.close()
                raise
            try:
                frame_source = _open_source(settings, capture)
            except BaseException:
                engine.close()
                publisher.close()
                raise
            pipeline = Pipeline(settings, engine, frame_source, publisher)
            try:
                pipeline.warm_up()
                collector = _Collector(endpoint)
                time.sleep(0.3)  # the SUB socket joins before the first frame
                cache_counts(reset=True)
                t0 = chip.now()
                pipeline.start()
                deadline = time.monotonic() + timeout_s
                while True:
                    h = pipeline.health()
                    if h.ended or h.state == "failed" or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                t1 = chip.now()
                if h.error is not None:
                    raise RuntimeError(f"the pipeline failed on the simulated device: {h.error}") from h.error
                if not h.ended:
                    raise RuntimeError(f"{source} did not finish within {timeout_s} s on the simulated device")
                t_last = h.last_publish_monotonic or t1
                snap = pipeline.stats()
            finally:
                pipeline.stop()
        collector.close()
        window = max(1e-9, t_last - t0)
        jobs = chip.jobs_between(t0, t_last)
        by_net: dict[str, int] = {}
        for j in jobs:
            by_net[j.network] = by_net.get(j.network, 0) + 1
        return SimRun(
            frames_published=int(snap["frames_published"]), frames_with_faces=collector.with_faces,
            faces=collector.faces, seconds=window, fps=int(snap["frames_published"]) / window,
            chip_busy=chip.busy_share(t0, t_last), chip_jobs=by_net, overruns=sum(j.overrun for j in jobs),
            overrun_s=sum(j.delay for j in jobs),
            cache=cache_counts(), latency_ms={k: dict(v) for k, v in snap["latency_ms"].items()},
        )
    finally:
        chip.close()
