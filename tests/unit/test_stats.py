"""Latency percentiles over a ring of samples and sliding-window rates (pure, hand-checked numbers)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_agent.stats import LatencyRing, RateCounter, StageLatencies, percentiles_ms


def test_percentiles_of_1_to_100_ms() -> None:
    samples = [i / 1000.0 for i in range(1, 101)]  # 1..100 ms
    p = percentiles_ms(samples)
    # numpy linear interpolation: p50 = 50.5, p95 = 95.05, p99 = 99.01
    assert p == pytest.approx({"p50": 50.5, "p95": 95.05, "p99": 99.01}, abs=1e-3)


def test_percentiles_empty() -> None:
    assert percentiles_ms([]) == {}
    assert LatencyRing(4).percentiles() == {}


def test_ring_keeps_only_the_last_samples_in_order() -> None:
    ring = LatencyRing(4)
    for v in range(1, 7):  # 1..6
        ring.add(float(v))
    assert ring.count == 6
    assert ring.samples().tolist() == [3.0, 4.0, 5.0, 6.0]
    assert ring.percentiles()["p50"] == pytest.approx(4500.0)  # median of 3..6 s, in ms


def test_ring_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        LatencyRing(0)


def test_ring_is_thread_safe() -> None:
    ring = LatencyRing(10_000)

    def worker() -> None:
        for _ in range(2000):
            ring.add(0.001)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ring.count == 8000
    assert np.allclose(ring.samples(), 0.001)


def test_stage_latencies_snapshot_only_has_stages_with_samples() -> None:
    st = StageLatencies(capacity=8, stages=("detector", "classifier"))
    st.add("detector", 0.010)
    st.add("detector", 0.030)
    st.add("publish", 0.001)
    snap = st.snapshot()
    assert set(snap) == {"detector", "publish"}
    assert snap["detector"]["p50"] == pytest.approx(20.0)
    assert snap["publish"] == pytest.approx({"p50": 1.0, "p95": 1.0, "p99": 1.0})


def test_rate_counter_window() -> None:
    rc = RateCounter(window_s=1.0)
    for i in range(11):  # 11 events 0.1 s apart: 10 intervals over 1.0 s
        rc.tick(100.0 + i * 0.1)
    assert rc.rate(now=101.0) == pytest.approx(10.0)
    assert rc.total == 11
    # 2 s later every event is outside the window
    assert rc.rate(now=103.0) == 0.0


def test_rate_counter_needs_two_events() -> None:
    rc = RateCounter(window_s=5.0)
    assert rc.rate(now=0.0) == 0.0
    rc.tick(1.0)
    assert rc.rate(now=1.0) == 0.0
