"""Stage timing of one configuration on a set of frames: per-stage p50/p95/p99 and the sequential frame rate.

Stages per frame: ``capture`` (decode/grab, measured while loading the frames), ``preprocess``, ``detector``,
``decode`` (decode + NMS), ``crop``, ``classifier`` (per frame) and ``classifier_per_face`` (frames with faces:
classifier time / faces), ``publish`` (build the EmotionMessage, serialise, and a real ZeroMQ PUB send to an
inproc socket with a connected subscriber), and ``total`` (preprocess .. publish of one frame, sequential).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import zmq

from edge_agent.bench.inputs import FrameSet
from edge_agent.bench.runner import FrameProcessor
from edge_agent.frames import Detections, Expressions
from edge_agent.messages import EmotionMessage, emotion_topic, encode
from edge_agent.pipeline import face_messages
from edge_agent.stats import percentiles_ms

log = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "detector", "decode", "crop", "classifier", "classifier_per_face",
          "publish", "total")


def build_message(seq: int, *, size: tuple[int, int], dets: Detections, exprs: Expressions, backend: str,
                  t_capture_wall: float, latency_s: float) -> EmotionMessage:
    """The message the daemon would publish for this frame (same face encoding as the pipeline)."""
    return EmotionMessage(camera_id="bench", seq=seq, frame_id=seq, t_capture=t_capture_wall,
                          t_publish=time.time(), latency_ms=round(max(0.0, latency_s * 1000.0), 3), size=size,
                          backend=backend, faces=face_messages(dets, exprs))


class InprocPublisher:
    """A PUB socket bound to an inproc endpoint with a subscriber connected, so every send is a real send."""

    def __init__(self, name: str = "edge-bench") -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.endpoint = f"inproc://{name}-{id(self)}"
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 1000)
        self.pub.bind(self.endpoint)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(self.endpoint)
        self.topic = emotion_topic("bench").encode()
        self.received = 0

    def send(self, payload: bytes) -> None:
        self.pub.send_multipart([self.topic, payload])

    def drain(self) -> None:
        while self.sub.poll(0):
            self.sub.recv_multipart()
            self.received += 1

    def close(self) -> None:
        self.pub.close(linger=0)
        self.sub.close(linger=0)


@dataclass
class StageSamples:
    samples: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    faces: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    boxes: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (frame index, (N,4) boxes) per frame

    def add(self, times: dict[str, float]) -> None:
        for k, v in times.items():
            self.samples.setdefault(k, []).append(v)

    def summary(self) -> dict[str, Any]:
        stages = {k: {**percentiles_ms(v), "mean": round(float(np.mean(v)) * 1000, 3), "n": len(v)}
                  for k, v in self.samples.items() if v}
        n = len(self.samples["total"])
        mean_total = float(np.mean(self.samples["total"])) if n else 0.0
        return {
            "frames": n,
            "faces_per_frame": round(float(np.mean(self.faces)), 3) if self.faces else 0.0,
            "fps_sequential": round(1.0 / mean_total, 3) if mean_total > 0 else 0.0,
            "stages_ms": stages,
        }


class Progress:
    """A throttled one-line progress display on stderr (a line per 10 % when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.label, self.total, self.stream, self.enabled = label, total, stream or sys.stderr, enabled
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._last_decile = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        decile = done * 10 // max(1, self.total)
        if self.tty and (now - self._last > 0.25 or done == self.total):
            self.stream.write(f"\r{self.label}: {done}/{self.total} frames")
            if done == self.total:
                self.stream.write("\n")
            self.stream.flush()
            self._last = now
        elif not self.tty and decile != self._last_decile:
            self.stream.write(f"{self.label}: {done}/{self.total} frames\n")
            self._last_decile = decile


class StageRunner:
    """Runs frames through one processor and publishes each result; keeps the samples."""

    def __init__(self, processor: FrameProcessor, frames: FrameSet, backend: str, label: str = "") -> None:
        self.processor = processor
        self.frames = frames
        self.backend = backend
        self.label = label
        self.publisher = InprocPublisher(label or "bench")
        self.samples = StageSamples()
        self._cycle: Iterator[int] = self._indices()
        self._seq = 0

    def _indices(self) -> Iterator[int]:
        while True:
            yield from range(len(self.frames.frames))

    def step(self, record: bool = True) -> None:
        i = next(self._cycle)
        img = self.frames.frames[i]
        t_wall = time.time()
        t0 = time.perf_counter()
        dets, exprs, times = self.processor.process(img)
        t1 = time.perf_counter()
        msg = build_message(self._seq, size=self.frames.size, dets=dets, exprs=exprs, backend=self.backend,
                            t_capture_wall=t_wall, latency_s=t1 - t0)
        self.publisher.send(encode(msg))
        t2 = time.perf_counter()
        self.publisher.drain()
        self._seq += 1
        if not record:
            return
        times["publish"] = t2 - t1
        times["total"] = t2 - t0
        times["capture"] = self.frames.capture_s[i]
        n = len(dets)
        if n:
            times["classifier_per_face"] = times["classifier"] / n
        self.samples.faces.append(n)
        self.samples.boxes.append((i, dets.boxes.copy()))
        self.samples.add(times)

    def run(self, warmup: int, repeat: int, progress: Callable[[int], None] | None = None) -> StageSamples:
        for _ in range(warmup):
            self.step(record=False)
        t0 = time.perf_counter()
        for k in range(repeat):
            self.step()
            if progress:
                progress(k + 1)
        self.samples.wall_s += time.perf_counter() - t0
        return self.samples

    def close(self) -> None:
        self.publisher.close()
