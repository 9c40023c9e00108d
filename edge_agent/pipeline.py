"""The running daemon's stages: capture -> inference -> publish, each on its own thread, overlapping.

::

    capture thread (FrameSource)  --bounded drop-oldest queue-->  inference thread (detect + classify)
        --bounded queue-->  publish thread (emotion message per frame, status every status_interval_s)

Every frame that reaches the inference thread produces exactly one emotion message (also with zero faces).
Per-stage durations and capture -> publish latency go into fixed-size rings (edge_agent.stats) whose
percentiles are published on the status topic. A stage thread never dies silently: its exception is logged and
reported by :meth:`Pipeline.health` (``error``), and the service decides what to do.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from edge_agent.engine import Engine, build_engine
from edge_agent.frames import Detections, Expressions, Frame
from edge_agent.messages import (
    EmotionMessage,
    FaceMessage,
    LatencyPercentiles,
    ModelIds,
    SourceStatus,
    StatusMessage,
    emotion_topic,
    encode,
    status_topic,
)
from edge_agent.publisher import Publisher, open_publisher
from edge_agent.settings import Settings
from edge_agent.sources import FrameSource, open_source
from edge_agent.stats import RateCounter, StageLatencies

log = logging.getLogger(__name__)

_POLL_S: Final = 0.1  # every blocking wait in a stage thread is bounded by this, so stop() is prompt
_RESULT_QUEUE_SIZE: Final = 4
_END: Final = object()  # end-of-source marker on the result queue
FLUSH_ON_END_S: Final = 1.0  # on a natural end, give queued messages this long to leave the socket
_FACE_STAGES: Final = frozenset({"crop", "classifier"})  # sampled only for frames with at least one face


@dataclass(frozen=True)
class Health:
    state: str  # starting | running | ended | stopping | stopped | failed
    frames_published: int
    last_publish_monotonic: float  # time.monotonic() of the last emotion message, 0.0 before the first
    ended: bool  # a file source finished and every frame was published
    error: BaseException | None  # the exception that killed a stage thread


@dataclass(frozen=True)
class _Result:
    frame: Frame
    detections: Detections
    expressions: Expressions
    times: dict[str, float]


def face_messages(dets: Detections, expr: Expressions) -> list[FaceMessage]:
    """Detections + class probabilities -> wire faces (rounded for compact JSON)."""
    faces: list[FaceMessage] = []
    for i in range(len(dets)):
        probs = expr.probs[i]
        k = int(np.argmax(probs))
        faces.append(FaceMessage(
            box=tuple(round(float(v), 1) for v in dets.boxes[i]),
            score=round(min(max(float(dets.scores[i]), 0.0), 1.0), 4),
            landmarks=tuple((round(float(x), 1), round(float(y), 1)) for x, y in dets.landmarks[i]),
            label=expr.labels[k],
            confidence=round(min(float(probs[k]), 1.0), 4),
            probs={lab: round(min(max(float(p), 0.0), 1.0), 4) for lab, p in zip(expr.labels, probs, strict=True)},
        ))
    return faces


class Pipeline:
    """Owns the engine, the source and the publisher, and the two stage threads between them."""

    def __init__(self, settings: Settings, engine: Engine, source: FrameSource, publisher: Publisher) -> None:
        self.settings = settings
        self.engine = engine
        self.source = source
        self.publisher = publisher
        self.camera_id = settings.publisher.camera_id
        self.on_published: Callable[[int], None] | None = None
        self._emotion_topic = emotion_topic(self.camera_id)
        self._status_topic = status_topic(self.camera_id)
        self._results: queue.Queue[_Result | object] = queue.Queue(maxsize=_RESULT_QUEUE_SIZE)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._state = "starting"
        self._error: BaseException | None = None
        self._ended = False
        self._published = 0
        self._last_publish = 0.0
        self._last_faces = 0
        self._t_start = time.monotonic()
        self._latency = StageLatencies(capacity=1024)
        self._rate_out = RateCounter()

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings) -> Pipeline:
        """Load the models, open the source and bind the publisher (closing what was opened if a step fails).

        Raises ConfigError, ManifestError, SourceError, BackendError or PublisherError.
        """
        engine = build_engine(settings)
        source: FrameSource | None = None
        try:
            source = open_source(settings.source, queue_size=settings.pipeline.queue_size)
            publisher = open_publisher(settings.publisher, settings.security)
        except BaseException:
            if source is not None:
                source.close()
            engine.close()
            raise
        return cls(settings, engine, source, publisher)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        self.engine.warm_up()

    def start(self) -> None:
        with self._lock:
            if self._threads:
                raise RuntimeError("pipeline already started")
            self._t_start = time.monotonic()
            self._state = "running"
            self._threads = [
                threading.Thread(target=self._guard, args=(self._infer_loop,), name="inference", daemon=True),
                threading.Thread(target=self._guard, args=(self._publish_loop,), name="publish", daemon=True),
            ]
        self.source.start()
        for t in self._threads:
            t.start()
        log.info("pipeline running: %s -> %s (%s) -> %s", self.source.uri, self.engine.model_ids["detector"],
                 self.engine.backend_kind, self.publisher.endpoint)

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop every stage and release everything within about ``timeout`` s; True if all threads joined."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._state not in ("failed", "stopped"):
                self._state = "stopping"
        self._stop.set()
        self.source.close(timeout=max(0.1, timeout * 0.4))
        joined = True
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                joined = False
                log.warning("%s thread did not stop within %.1f s", t.name, timeout)
        flush = min(FLUSH_ON_END_S, max(0.0, deadline - time.monotonic())) if self._ended else 0.0
        if joined:
            self.publisher.close(flush_s=flush)
        self.engine.close()
        with self._lock:
            if self._state != "failed":
                self._state = "stopped"
        return joined

    def health(self) -> Health:
        with self._lock:
            return Health(self._state, self._published, self._last_publish, self._ended, self._error)

    def stats(self) -> dict[str, Any]:
        """The status snapshot (the StatusMessage fields, JSON names) plus ``faces`` in the last frame."""
        snap: dict[str, Any] = self.status_message().model_dump(by_alias=True)
        snap["faces"] = self._last_faces
        return snap

    # -- stage threads -------------------------------------------------------------------------------------
    def _guard(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:
            log.exception("%s thread failed", threading.current_thread().name)
            with self._lock:
                if self._error is None:
                    self._error = exc
                self._state = "failed"
            self._stop.set()

    def _infer_loop(self) -> None:
        detector, classifier = self.engine.detector, self.engine.classifier
        while not self._stop.is_set():
            frame = self.source.read(timeout=_POLL_S)
            if frame is None:
                if self.source.ended:
                    self._put(_END)
                    return
                continue
            t_deq = time.monotonic()
            dets, t_det = detector.detect_timed(frame.image)
            expr, t_cls = classifier.classify_timed(frame.image, dets)
            times = {"capture_queue": t_deq - frame.t_capture, **t_det, **t_cls}
            self._put(_Result(frame, dets, expr, times))

    def _put(self, item: _Result | object) -> None:
        while not self._stop.is_set():
            try:
                self._results.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _publish_loop(self) -> None:
        interval = self.settings.publisher.status_interval_s
        next_status = time.monotonic()
        while not self._stop.is_set():
            wait = min(_POLL_S, max(0.0, next_status - time.monotonic()))
            try:
                item = self._results.get(timeout=wait) if wait > 0 else self._results.get_nowait()
            except queue.Empty:
                item = None
            if item is _END:
                with self._lock:
                    self._ended = True
                    self._state = "ended"
                self._send_status()
                log.info("source ended; %d emotion messages published", self._published)
                return
            if isinstance(item, _Result):
                self._publish(item)
            if time.monotonic() >= next_status:
                self._send_status()
                next_status = time.monotonic() + interval

    def _publish(self, r: _Result) -> None:
        t0 = time.monotonic()
        frame = r.frame
        msg = EmotionMessage(
            camera_id=self.camera_id,
            seq=frame.seq,
            frame_id=frame.frame_id if frame.frame_id >= 0 else frame.seq,
            t_capture=frame.t_wall,
            t_publish=time.time(),
            latency_ms=round((t0 - frame.t_capture) * 1000.0, 3),
            size=(frame.width, frame.height),
            backend=self.engine.backend_kind,
            faces=face_messages(r.detections, r.expressions),
        )
        self.publisher.send(self._emotion_topic, encode(msg))
        t1 = time.monotonic()
        has_faces = len(r.detections) > 0
        for stage, seconds in r.times.items():
            if has_faces or stage not in _FACE_STAGES:  # no crop/classifier work without a face
                self._latency.add(stage, seconds)
        self._latency.add("publish", t1 - t0)
        self._latency.add("end_to_end", t1 - frame.t_capture)
        self._rate_out.tick(t1)
        with self._lock:
            self._published += 1
            self._last_publish = t1
            self._last_faces = len(r.detections)
        if self.on_published is not None:
            self.on_published(frame.seq)

    def status_message(self) -> StatusMessage:
        with self._lock:
            state, published = self._state, self._published
        return StatusMessage(
            camera_id=self.camera_id,
            t=time.time(),
            uptime_s=round(time.monotonic() - self._t_start, 3),
            state=state,
            backend=self.engine.backend_kind,
            backend_reason=self.engine.backend_reason,
            models=ModelIds(**self.engine.model_ids),
            source=SourceStatus(uri=self.source.uri, state=self.source.state, reconnects=self.source.reconnects),
            fps_in=round(self.source.rate_in.rate(), 2),
            fps_out=round(self._rate_out.rate(), 2),
            frames_captured=self.source.frames_captured,
            frames_published=published,
            drops=self.source.drops,
            publish_drops=self.publisher.dropped,
            latency_ms={k: LatencyPercentiles(**v) for k, v in self._latency.snapshot().items()},
        )

    def _send_status(self) -> None:
        self.publisher.send(self._status_topic, encode(self.status_message()))
