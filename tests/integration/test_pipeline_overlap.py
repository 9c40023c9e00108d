"""The stage threads overlap: the detector of frame t+1 runs while frame t is being classified.

Real shipped models, the real sample video, a real ZeroMQ publisher; the detector and classifier calls are
wrapped by spies that only record and wait (they still run the real models). The classifier call of the first
frame waits for the detector to *start* the second frame: with detect and classify on one thread that can never
happen (the wait runs out and the test fails), with the stage threads it happens at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.engine import Engine, build_engine
from edge_agent.pipeline import Pipeline
from edge_agent.publisher import Publisher
from edge_agent.settings import load_settings
from edge_agent.sources import open_source
from tests.support.stream import StreamCollector

WAIT_S = 10.0  # a bound for a wait that, with overlapping stages, ends within milliseconds


def _pipeline(asset: Callable[[str], Path], shipped_model: Callable[[str], Path], endpoint: str,
              **overrides: Any) -> tuple[Engine, Pipeline]:
    """The real RetinaFace-0.25 + classifier on ``single_face.mp4`` at pace=fast, publishing on ``endpoint``."""
    settings = load_settings(None, {
        "detector.model": str(shipped_model("detector/retinaface-mnet025")),
        "classifier.model": str(shipped_model("classifier/mnv3s-facex7")),
        "backend.kind": "onnx",
        "source.uri": str(asset("single_face.mp4")),
        "source.pace": "fast",
        "publisher.endpoint": endpoint,
        "publisher.sndhwm": 1000,
        **overrides,
    })
    engine = build_engine(settings)
    source = open_source(settings.source, queue_size=settings.pipeline.queue_size)
    publisher = Publisher(settings.publisher.endpoint, sndhwm=settings.publisher.sndhwm)
    return engine, Pipeline(settings, engine, source, publisher)


def test_detector_of_the_next_frame_runs_while_a_frame_is_classified(
        asset: Callable[[str], Path], shipped_model: Callable[[str], Path], tmp_path: Path) -> None:
    engine, pipe = _pipeline(asset, shipped_model, f"ipc://{tmp_path}/overlap.sock")
    detect, classify = engine.detector.detect_timed, engine.classifier.classify_timed
    detect_started = [threading.Event() for _ in range(3)]
    calls = {"detect": 0, "classify": 0}
    detect_threads: set[str] = set()
    classify_threads: set[str] = set()
    overlapped: list[bool] = []

    def detect_spy(image: Any) -> Any:
        k = calls["detect"]
        calls["detect"] += 1
        detect_threads.add(threading.current_thread().name)
        if k < len(detect_started):
            detect_started[k].set()
        return detect(image)

    def classify_spy(image: Any, dets: Any) -> Any:
        k = calls["classify"]
        calls["classify"] += 1
        classify_threads.add(threading.current_thread().name)
        if k == 0:  # frame 0 is being classified: frame 1's detection must be able to start now
            overlapped.append(detect_started[1].wait(WAIT_S))
        return classify(image, dets)

    engine.detector.detect_timed = detect_spy  # type: ignore[method-assign,assignment]
    engine.classifier.classify_timed = classify_spy  # type: ignore[method-assign,assignment]
    pipe.start()
    try:
        deadline = time.monotonic() + WAIT_S + 30.0
        while pipe.health().frames_published < 5 and time.monotonic() < deadline:
            assert pipe.health().error is None
            time.sleep(0.02)
        assert pipe.health().frames_published >= 5
    finally:
        assert pipe.stop(timeout=2.0)
    assert overlapped == [True]
    assert detect_threads == {"inference"} and classify_threads == {"classify"}


def test_two_detector_threads_overtake_and_frames_stay_in_order(
        asset: Callable[[str], Path], shipped_model: Callable[[str], Path], tmp_path: Path) -> None:
    """``pipeline.detect_workers = 2``: frame 0's detection waits until frame 1's has started (possible only with
    two detections in flight) and frame 1 finishes first; every frame is still published once, in source order."""
    endpoint = f"ipc://{tmp_path}/workers.sock"
    engine, pipe = _pipeline(asset, shipped_model, endpoint, **{"pipeline.detect_workers": 2})
    detect = engine.detector.detect_timed
    lock = threading.Lock()
    second_started = threading.Event()
    calls: list[int] = []
    threads: set[str] = set()
    waited: list[bool] = []

    def detect_spy(image: Any) -> Any:
        with lock:
            k = len(calls)
            calls.append(k)
            threads.add(threading.current_thread().name)
        if k == 1:
            second_started.set()
        if k == 0:
            waited.append(second_started.wait(WAIT_S))
        return detect(image)

    engine.detector.detect_timed = detect_spy  # type: ignore[method-assign,assignment]
    sub = StreamCollector(endpoint)
    time.sleep(0.3)  # the SUB joins the bound PUB before the first frame
    pipe.start()
    try:
        deadline = time.monotonic() + 120
        while not pipe.health().ended and time.monotonic() < deadline:
            assert pipe.health().error is None
            time.sleep(0.05)
        assert pipe.health().ended
    finally:
        assert pipe.stop(timeout=2.0)
        sub.close(drain_s=0.5)
    assert waited == [True]
    assert threads == {"inference", "inference-2"}
    assert [m.frame_id for m in sub.emotions] == list(range(72))  # each frame once, in source order
    assert all(len(m.faces) == 1 for m in sub.emotions)
