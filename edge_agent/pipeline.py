"""The running daemon's stages: capture -> detect -> classify -> publish, each on its own thread, overlapping.

::

    capture thread (FrameSource)  --bounded drop-oldest queue-->  inference thread(s) (detector)
        --bounded queue-->  classify thread (quality gates, crops, batched classifier)
        --bounded queue-->  publish thread (emotion message per frame, status every status_interval_s)

The detector of frame t+1 runs while frame t is cropped, classified and published, so on a multi-core CPU the
frame rate is set by the slowest stage rather than by the sum of the stages (ONNX Runtime and most numpy/OpenCV
work release the GIL). The queues between the stages block (with a bounded wait, so stop() stays prompt) rather
than drop: frames are dropped only at the capture queue, where the source counts them. Every frame that reaches
the inference thread produces exactly one emotion message (also with zero faces). With
``pipeline.detect_workers = N`` (> 1) N inference threads detect consecutive frames at once (frames are numbered as
they are read) and the classify stage restores source order before anything is published.
Faces failing the quality gates (edge_agent.quality) are not classified; with ``tracking.enabled`` the publish
thread runs the face tracker (edge_agent.tracking) over the capture timestamps, adds track ids and smoothed
expressions to the faces and publishes track events (``events.v1.<camera_id>``; on a natural end of the source
every live track ends before the final status message, and on stop() -- SIGTERM, a reload -- before the socket
closes).
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
from edge_agent.fastpath import fast_config, frame_detector, warm_up_frame_detector
from edge_agent.frames import Detections, Expressions, Frame
from edge_agent.messages import (
    EmotionMessage,
    EventMessage,
    FaceMessage,
    LatencyPercentiles,
    ModelIds,
    SourceStatus,
    StatusMessage,
    emotion_topic,
    encode,
    events_topic,
    status_topic,
)
from edge_agent.publisher import Publisher, open_publisher
from edge_agent.quality import SkipReason, classify_gated
from edge_agent.settings import Settings
from edge_agent.sources import FrameSource, open_source
from edge_agent.stats import RateCounter, StageLatencies
from edge_agent.tracking import FaceTrack, Tracker, TrackerConfig, TrackEvent

log = logging.getLogger(__name__)

_POLL_S: Final = 0.1  # every blocking wait in a stage thread is bounded by this, so stop() is prompt
_RESULT_QUEUE_SIZE: Final = 4
_DETECTED_QUEUE_SIZE: Final = 2  # detected frames waiting for the classifier: small, so latency stays low
_END: Final = object()  # end-of-source marker, passed down the stage queues
FLUSH_ON_END_S: Final = 1.0  # on a natural end, give queued messages this long to leave the socket
FLUSH_ON_STOP_S: Final = 0.2  # on a stop with live tracks, this long for their end events
_FACE_STAGES: Final = frozenset({"crop", "classifier"})  # sampled only for frames with at least one face


@dataclass(frozen=True)
class Health:
    state: str  # starting | running | ended | stopping | stopped | failed
    frames_published: int
    last_publish_monotonic: float  # time.monotonic() of the last emotion message, 0.0 before the first
    ended: bool  # a file source finished and every frame was published
    error: BaseException | None  # the exception that killed a stage thread
    source_state: str = "running"  # the FrameSource's state; "reconnecting" while a live source is reopened


@dataclass(frozen=True)
class _Detected:
    frame: Frame
    detections: Detections
    times: dict[str, float]
    seq: int  # the frame's position in source order (the classify stage restores it across detector threads)


@dataclass(frozen=True)
class _Result:
    frame: Frame
    detections: Detections
    expressions: Expressions
    times: dict[str, float]
    skipped: tuple[SkipReason | None, ...] = ()  # per face (empty: every face was classified)


def _probs_dict(labels: tuple[str, ...], probs: Any) -> dict[str, float]:
    return {lab: round(min(max(float(p), 0.0), 1.0), 4) for lab, p in zip(labels, probs, strict=True)}


def face_messages(dets: Detections, expr: Expressions, skipped: tuple[SkipReason | None, ...] = (),
                  tracks: list[FaceTrack] | None = None) -> list[FaceMessage]:
    """Detections + class probabilities (+ skip reasons, + track states) -> wire faces (rounded for compact
    JSON). A face with a skip reason gets no label/confidence/probs."""
    faces: list[FaceMessage] = []
    for i in range(len(dets)):
        reason = skipped[i] if skipped else None
        track = tracks[i] if tracks is not None else None
        probs = expr.probs[i]
        k = int(np.argmax(probs))
        faces.append(FaceMessage(
            box=tuple(round(float(v), 1) for v in dets.boxes[i]),
            score=round(min(max(float(dets.scores[i]), 0.0), 1.0), 4),
            landmarks=tuple((round(float(x), 1), round(float(y), 1)) for x, y in dets.landmarks[i]),
            label=None if reason else expr.labels[k],
            confidence=None if reason else round(min(float(probs[k]), 1.0), 4),
            probs=None if reason else _probs_dict(expr.labels, probs),
            skipped=reason,
            track_id=track.track_id if track else None,
            smoothed=_probs_dict(expr.labels, track.smoothed) if track and track.smoothed is not None else None,
            smoothed_label=track.smoothed_label if track else None,
        ))
    return faces


def tracker_from_settings(settings: Settings, labels: tuple[str, ...]) -> Tracker | None:
    """The face tracker ``tracking`` asks for, or None when tracking is off."""
    t = settings.tracking
    if not t.enabled:
        return None
    return Tracker(labels, TrackerConfig(
        iou_threshold=t.iou_threshold, centre_distance=t.centre_distance, min_hits=t.min_hits,
        max_age_s=t.max_age_s, half_life_s=t.half_life_s, label_switch_margin=t.label_switch_margin,
    ))


class Pipeline:
    """Owns the engine, the source and the publisher, and the stage threads between them."""

    def __init__(self, settings: Settings, engine: Engine, source: FrameSource, publisher: Publisher) -> None:
        self.settings = settings
        self.engine = engine
        self.source = source
        self.publisher = publisher
        self.camera_id = settings.publisher.camera_id
        self.on_published: Callable[[int], None] | None = None
        self._emotion_topic = emotion_topic(self.camera_id)
        self._status_topic = status_topic(self.camera_id)
        self._events_topic = events_topic(self.camera_id)
        self._tracker = tracker_from_settings(settings, engine.classifier.labels)
        self._detector = frame_detector(engine.detector, fast_config(settings.detector))  # detector.mode
        self._detect_workers = settings.pipeline.detect_workers
        self._read_lock = threading.Lock()  # one detector thread reads (and numbers) a frame at a time
        self._n_read = 0
        self._last_frame: Frame | None = None  # the last published frame (end events at the end)
        self._detected: queue.Queue[_Detected | object] = queue.Queue(maxsize=_DETECTED_QUEUE_SIZE)
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
        """Bind the publisher, load the models and open the source (closing what was opened if a step fails).

        The publisher binds first: an endpoint problem fails before the models load, and subscribers that are
        already waiting get the model-loading time to join, so they don't miss the first frames (ZeroMQ's slow
        joiner). Raises ConfigError, ManifestError, SourceError, BackendError or PublisherError.
        """
        publisher = open_publisher(settings.publisher, settings.security)
        engine: Engine | None = None
        source: FrameSource | None = None
        try:
            engine = build_engine(settings)
            source = open_source(settings.source, queue_size=settings.pipeline.queue_size)
        except BaseException:
            if source is not None:
                source.close()
            if engine is not None:
                engine.close()
            publisher.close()
            raise
        return cls(settings, engine, source, publisher)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        self.engine.warm_up()
        warm_up_frame_detector(self._detector)

    def start(self) -> None:
        with self._lock:
            if self._threads:
                raise RuntimeError("pipeline already started")
            self._t_start = time.monotonic()
            self._state = "running"
            self._threads = [
                threading.Thread(target=self._guard, args=(self._infer_loop,),
                                 name="inference" if i == 0 else f"inference-{i + 1}", daemon=True)
                for i in range(self._detect_workers)
            ] + [
                threading.Thread(target=self._guard, args=(self._classify_loop,), name="classify", daemon=True),
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
        ended_tracks = False
        if joined and not self._ended:  # stopped (SIGTERM, reload, failure): live tracks end here, with events
            ended_tracks = self._end_tracks()
        flush_wanted = FLUSH_ON_END_S if self._ended else (FLUSH_ON_STOP_S if ended_tracks else 0.0)
        flush = min(flush_wanted, max(0.0, deadline - time.monotonic()))
        if joined:
            self.publisher.close(flush_s=flush)
        self.engine.close()
        with self._lock:
            if self._state != "failed":
                self._state = "stopped"
        return joined

    def health(self) -> Health:
        with self._lock:
            return Health(self._state, self._published, self._last_publish, self._ended, self._error,
                          self.source.state)

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
        detector = self._detector  # detector.mode: the full detector, or the fast-mode frame detector
        while not self._stop.is_set():
            with self._read_lock:
                frame = self.source.read(timeout=_POLL_S)
                seq = self._n_read
                if frame is not None:
                    self._n_read += 1
            if frame is None:
                if self.source.ended:
                    self._put(self._detected, _END)  # one per detector thread
                    return
                continue
            t_deq = time.monotonic()
            dets, t_det = detector.detect_timed(frame.image)
            times = {"capture_queue": t_deq - frame.t_capture, **t_det}
            self._put(self._detected, _Detected(frame, dets, times, seq))

    def _classify_loop(self) -> None:
        classifier = self.engine.classifier
        gates = self.settings.tracking
        pending: dict[int, _Detected] = {}  # detected frames that overtook an earlier one (detect_workers > 1)
        next_seq, ends = 0, 0
        while not self._stop.is_set():
            try:
                item = self._detected.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _Detected):
                pending[item.seq] = item
            else:  # _END from one detector thread
                ends += 1
            while next_seq in pending:
                ready = pending.pop(next_seq)
                next_seq += 1
                expr, t_cls, skipped = classify_gated(  # the classifier never sees a skipped face
                    classifier.classify_timed, ready.frame.image, ready.detections, gates.min_face_px,
                    gates.blur_threshold)
                self._put(self._results, _Result(ready.frame, ready.detections, expr, {**ready.times, **t_cls},
                                                 skipped))
            if ends == self._detect_workers:  # every detector thread has passed on its last frame
                self._put(self._results, _END)
                return

    def _put(self, q: queue.Queue[Any], item: object) -> None:
        """Hand ``item`` to the next stage, waiting while it is full (bounded waits: stop() stays prompt)."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
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
                self._end_tracks()
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
        tracks: list[FaceTrack] | None = None
        events: list[TrackEvent] = []
        if self._tracker is not None:
            probs = [None if r.skipped and r.skipped[i] else r.expressions.probs[i] for i in range(len(r.detections))]
            tracks, events = self._tracker.update(frame.t_capture, r.detections.boxes, probs)
        msg = EmotionMessage(
            camera_id=self.camera_id,
            seq=frame.seq,
            frame_id=frame.frame_id if frame.frame_id >= 0 else frame.seq,
            t_capture=frame.t_wall,
            t_publish=time.time(),
            latency_ms=round((t0 - frame.t_capture) * 1000.0, 3),
            size=(frame.width, frame.height),
            backend=self.engine.backend_kind,
            faces=face_messages(r.detections, r.expressions, r.skipped, tracks),
        )
        self.publisher.send(self._emotion_topic, encode(msg))
        self._last_frame = frame
        self._send_events(events, frame)
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

    def _send_events(self, events: list[TrackEvent], frame: Frame) -> None:
        labels = self.engine.classifier.labels
        for ev in events:
            msg = EventMessage(
                camera_id=self.camera_id,
                event=ev.kind,
                track_id=ev.track_id,
                t=frame.t_wall + (ev.t - frame.t_capture),  # the tracker's monotonic clock -> wall clock
                seq=frame.seq,
                box=tuple(round(v, 1) for v in ev.box),
                label=ev.label,
                previous_label=ev.previous_label,
                duration_s=None if ev.duration_s is None else round(ev.duration_s, 3),
                dominant=ev.dominant,
                mean_probs=None if ev.mean_probs is None else _probs_dict(labels, ev.mean_probs),
            )
            self.publisher.send(self._events_topic, encode(msg))
            log.debug("track %d %s (%s)", ev.track_id, ev.kind, ev.label)

    def _end_tracks(self) -> bool:
        """End every live track at the last published frame's time (the source ended, or the pipeline stops);
        True if any end event was sent. Called from the publish thread, or by stop() once it has joined."""
        if self._tracker is None or self._last_frame is None:
            return False
        frame = self._last_frame
        events = self._tracker.flush(frame.t_capture)
        self._send_events(events, frame)
        return bool(events)

    def _send_status(self) -> None:
        self.publisher.send(self._status_topic, encode(self.status_message()))
