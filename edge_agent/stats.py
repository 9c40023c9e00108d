"""Latency percentiles over a fixed-size ring of samples, and event rates over a sliding time window.

Both are small, lock-protected and allocation-free on the hot path (``add``/``tick``); the summaries
(:meth:`LatencyRing.percentiles`, :meth:`RateCounter.rate`) are computed when a status message is built.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

PERCENTILES: tuple[int, ...] = (50, 95, 99)


def percentiles_ms(samples_s: Sequence[float] | np.ndarray, qs: Iterable[int] = PERCENTILES) -> dict[str, float]:
    """``{"p50": ms, "p95": ms, "p99": ms}`` of samples given in seconds (linear interpolation); {} if empty."""
    arr = np.asarray(samples_s, dtype=np.float64)
    if arr.size == 0:
        return {}
    qs = tuple(qs)
    values = np.percentile(arr, qs) * 1000.0
    return {f"p{q}": round(float(v), 3) for q, v in zip(qs, values, strict=True)}


class LatencyRing:
    """The last ``capacity`` duration samples (seconds) of one stage."""

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError(f"LatencyRing capacity must be >= 1, got {capacity}")
        self._buf = np.zeros(capacity, dtype=np.float64)
        self._n = 0  # total samples ever added
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return int(self._buf.shape[0])

    @property
    def count(self) -> int:
        """Samples added since creation (may exceed capacity; only the last ``capacity`` are kept)."""
        return self._n

    def add(self, seconds: float) -> None:
        with self._lock:
            self._buf[self._n % self._buf.shape[0]] = seconds
            self._n += 1

    def samples(self) -> np.ndarray:
        """A copy of the retained samples (oldest first)."""
        with self._lock:
            cap = self._buf.shape[0]
            if self._n <= cap:
                return self._buf[: self._n].copy()
            start = self._n % cap
            return np.concatenate([self._buf[start:], self._buf[:start]])

    def percentiles(self) -> dict[str, float]:
        return percentiles_ms(self.samples())


class StageLatencies:
    """One :class:`LatencyRing` per named stage, created on first use."""

    def __init__(self, capacity: int = 1024, stages: Iterable[str] = ()) -> None:
        self._capacity = capacity
        self._rings: dict[str, LatencyRing] = {s: LatencyRing(capacity) for s in stages}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        ring = self._rings.get(stage)
        if ring is None:
            with self._lock:
                ring = self._rings.setdefault(stage, LatencyRing(self._capacity))
        ring.add(seconds)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{stage: {"p50", "p95", "p99"}}`` in milliseconds, for stages that have samples."""
        with self._lock:
            rings = dict(self._rings)
        return {name: p for name, ring in rings.items() if (p := ring.percentiles())}


class RateCounter:
    """Events per second over the last ``window_s`` seconds (monotonic clock)."""

    def __init__(self, window_s: float = 5.0, max_events: int = 100_000) -> None:
        if window_s <= 0:
            raise ValueError(f"RateCounter window must be > 0 s, got {window_s}")
        self._window = window_s
        self._times: deque[float] = deque(maxlen=max_events)
        self._total = 0
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return self._total

    def tick(self, t: float | None = None) -> None:
        with self._lock:
            self._times.append(time.monotonic() if t is None else t)
            self._total += 1

    def rate(self, now: float | None = None) -> float:
        """Events in the window divided by the time they span (0.0 with fewer than two events)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and self._times[0] < now - self._window:
                self._times.popleft()
            n = len(self._times)
            if n < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
        # n events delimit n-1 intervals.
        return (n - 1) / span if span > 0 else 0.0
