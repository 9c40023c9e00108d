"""FrameSource: a capture thread that reads a :class:`Capture`, stamps frames and feeds a bounded queue.

* live sources (cameras, streams): the queue drops its oldest frame when full (the newest frame wins), and a
  failed source is reopened with exponential backoff between ``reconnect_initial_s`` and ``reconnect_max_s``;
* files and folders: ``pace="native"`` sleeps to the file's frame rate against the monotonic clock (and drops
  oldest like a camera would), ``pace="fast"`` waits for room in the queue so every frame is processed;
  at the end they stop (``ended``) or restart (``loop``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Literal

from edge_agent.errors import SourceError
from edge_agent.frames import Frame
from edge_agent.sources.capture import Capture
from edge_agent.sources.frame_queue import DropOldestQueue
from edge_agent.stats import RateCounter

log = logging.getLogger(__name__)

SourceState = Literal["opening", "running", "reconnecting", "ended", "closed", "failed"]
_POLL_S = 0.1  # how often blocked waits re-check for stop()


def backoff_delays(initial_s: float, max_s: float) -> Iterator[float]:
    """initial, 2*initial, 4*initial, ... capped at max (an endless iterator)."""
    delay = initial_s
    while True:
        yield min(delay, max_s)
        delay = min(delay * 2.0, max_s)


class FrameSource:
    """Threaded frame source. ``start()`` opens the capture (raising SourceError) and starts the thread."""

    def __init__(
        self,
        capture: Capture,
        *,
        loop: bool = False,
        pace: Literal["native", "fast"] = "native",
        queue_size: int = 2,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 10.0,
    ) -> None:
        self.capture = capture
        self.spec = capture.spec
        self.live = capture.spec.live
        self.loop = loop and not self.live
        self.pace = pace
        self._block = (not self.live) and pace == "fast"
        self._queue: DropOldestQueue[Frame] = DropOldestQueue(queue_size)
        self._reconnect = (reconnect_initial_s, reconnect_max_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.state: SourceState = "opening"
        self.error: BaseException | None = None
        self.frames_captured = 0
        self.reconnects = 0
        self.rate_in = RateCounter()
        self._seq = 0
        self._opened = False

    # -- public API --------------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """The source for logs and status messages (credentials redacted)."""
        return self.spec.display

    @property
    def drops(self) -> int:
        return self._queue.dropped

    @property
    def ended(self) -> bool:
        """True once a non-looping file/folder is exhausted and every frame has been read from the queue."""
        return self.state == "ended" and len(self._queue) == 0

    def open(self) -> None:
        """Open the capture now (so a bad source fails before anything starts). Idempotent."""
        with self._lock:
            if not self._opened:
                self.capture.open()
                self._opened = True

    def start(self) -> None:
        """Open (if not yet) and start the capture thread. Idempotent."""
        self.open()
        with self._lock:
            if self._thread is not None:
                return
            self.state = "running"
            self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
            self._thread.start()

    def read(self, timeout: float) -> Frame | None:
        """The next frame, or None if none arrived within ``timeout`` s (check ``ended``).

        Starts the capture thread on first use. Raises SourceError if the capture thread failed.
        """
        if self._thread is None:
            self.start()
        frame = self._queue.get(timeout)
        if frame is None and self.error is not None and len(self._queue) == 0:
            raise SourceError(f"source {self.uri}: capture failed: {self.error}") from self.error
        return frame

    def frames(self, timeout: float = 1.0) -> Iterator[Frame]:
        """Every frame until the source ends or is closed (each wait bounded by ``timeout``)."""
        while True:
            frame = self.read(timeout)
            if frame is not None:
                yield frame
            elif self.ended or self.state in ("closed", "failed"):
                return

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (joined within ``timeout``) and release the capture."""
        self._stop.set()
        self._queue.close()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s: capture thread did not stop within %.1f s (blocked in a read); "
                            "leaving the device to the process exit", self.uri, timeout)
                return
        self.capture.close()
        if self.state not in ("ended", "failed"):
            self.state = "closed"

    # -- capture thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._capture_loop()
        except BaseException as exc:
            self.error = exc
            self.state = "failed"
            log.exception("%s: capture thread failed", self.uri)
        finally:
            if self.state in ("ended", "failed"):
                self._queue.close()  # readers drain what is left, then get None at once

    def _capture_loop(self) -> None:
        period = 1.0 / self.capture.fps if self.capture.fps > 0 else 0.0
        paced = (not self.live) and self.pace == "native" and period > 0
        t0 = 0.0
        n = 0  # frames emitted since t0 (pacing)
        while not self._stop.is_set():
            got = self.capture.read()
            if got is None:
                if self.live:
                    if not self._reopen_with_backoff():
                        return
                    continue
                if self.loop:
                    log.info("%s: end of file, looping", self.uri)
                    self.capture.open()
                    continue  # keep the pacing clock running: the first frame of a loop is due one period on
                log.info("%s: end of source after %d frames", self.uri, self.frames_captured)
                self.state = "ended"
                return
            image, index = got
            if paced:
                if n == 0:
                    t0 = time.monotonic()
                due = t0 + n * period
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                if delay < -1.0:  # fell more than a second behind (slow machine, suspend): restart the clock
                    t0, n = time.monotonic(), 0
                n += 1
            frame = Frame(
                seq=self._seq, t_capture=time.monotonic(), t_wall=time.time(), image=image,
                frame_id=index if index >= 0 and not self.live else self._seq,
            )
            self._seq += 1
            self.frames_captured += 1
            self.rate_in.tick(frame.t_capture)
            if self._block:
                while not self._queue.put_wait(frame, _POLL_S):
                    if self._stop.is_set():
                        return
            elif self._queue.put(frame):
                log.debug("%s: capture queue full, dropped the oldest frame", self.uri)

    def _reopen_with_backoff(self) -> bool:
        """Reopen a failed live source until it works (True) or stop() is called (False)."""
        self.state = "reconnecting"
        self.capture.close()
        log.warning("%s: read failed; reconnecting", self.uri)
        for delay in backoff_delays(*self._reconnect):
            if self._stop.wait(delay):
                return False
            try:
                self.capture.open()
            except SourceError as exc:
                log.warning("%s: reconnect failed (%s); next attempt in up to %.1f s", self.uri, exc,
                            min(delay * 2, self._reconnect[1]))
                continue
            self.reconnects += 1
            self.state = "running"
            log.info("%s: reconnected (reconnect #%d)", self.uri, self.reconnects)
            return True
        return False  # unreachable: backoff_delays is endless
