"""A real ZeroMQ subscriber for tests: the reference client (edge_agent.subscriber.Subscriber) on a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from edge_agent.messages import EmotionMessage, EventMessage, StatusMessage, WireMessage, decode
from edge_agent.security import CurveClientKeys
from edge_agent.subscriber import Subscriber


class StreamCollector:
    """Connects before the daemon binds and keeps every message in arrival order: ``raw`` as received and
    ``decoded`` (schema-validated on arrival; a body that fails validation is kept in ``invalid`` and fails
    :meth:`close`). ``emotions``/``statuses``/``events`` are views of ``decoded`` by type."""

    def __init__(self, endpoint: str, curve: CurveClientKeys | None = None, rcvhwm: int = 100000) -> None:
        self.sub = Subscriber(endpoint, curve=curve, rcvhwm=rcvhwm)
        self.raw: list[tuple[str, bytes]] = []
        self.decoded: list[tuple[str, WireMessage]] = []
        self.invalid: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-sub", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            got = self.sub.receive_raw(0.05)
            if got is None:
                continue
            topic, payload = got
            try:
                msg = decode(topic, payload)
            except ValueError as exc:
                with self._lock:
                    self.raw.append(got)
                    self.invalid.append((topic, str(exc)))
                continue
            with self._lock:
                self.raw.append(got)
                self.decoded.append((topic, msg))

    def _of(self, kind: type[WireMessage]) -> list[WireMessage]:
        with self._lock:
            return [m for _, m in self.decoded if isinstance(m, kind)]

    @property
    def emotions(self) -> list[EmotionMessage]:
        return [m for m in self._of(EmotionMessage) if isinstance(m, EmotionMessage)]

    @property
    def statuses(self) -> list[StatusMessage]:
        return [m for m in self._of(StatusMessage) if isinstance(m, StatusMessage)]

    @property
    def events(self) -> list[EventMessage]:
        return [m for m in self._of(EventMessage) if isinstance(m, EventMessage)]

    def n_emotions(self) -> int:
        return len(self.emotions)

    def wait_emotions(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.n_emotions() < n:
            assert time.monotonic() < deadline, f"only {self.n_emotions()} emotion messages, expected {n}"
            time.sleep(0.02)

    def wait_status(self, pred: Callable[[StatusMessage], bool], timeout: float = 30.0) -> StatusMessage:
        deadline = time.monotonic() + timeout
        while True:
            for s in self.statuses:
                if pred(s):
                    return s
            assert time.monotonic() < deadline, "no status message matched"
            time.sleep(0.02)

    def close(self, drain_s: float = 0.0) -> None:
        """Keep reading for ``drain_s`` s (messages still in flight), then stop; fails on any invalid body."""
        time.sleep(drain_s)
        self._stop.set()
        self._thread.join(5)
        self.sub.close()
        assert not self.invalid, f"messages that failed schema validation: {self.invalid[:3]}"
