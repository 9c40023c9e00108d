"""The face tracker, smoother and track events on constructed sequences (pure numpy, no models)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge_agent.tracking import (
    FaceTrack,
    Tracker,
    TrackerConfig,
    TrackEvent,
    associate,
    centre_distance_matrix,
    hysteresis_label,
    iou_matrix,
    smoothing_alpha,
)

LABELS = ("happy", "neutral", "sad")
HAPPY = np.array([0.8, 0.15, 0.05])
NEUTRAL = np.array([0.1, 0.85, 0.05])


def box(cx: float, cy: float = 100.0, side: float = 60.0) -> list[float]:
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def step(tr: Tracker, t: float, boxes: list[list[float]], probs: list[np.ndarray | None] | None = None
         ) -> tuple[list[FaceTrack], list[TrackEvent]]:
    return tr.update(t, np.array(boxes, np.float64).reshape(-1, 4),
                     probs if probs is not None else [HAPPY] * len(boxes))


# -- geometry and association ------------------------------------------------------------------------------


def test_iou_matrix_known_values() -> None:
    a = [[0, 0, 10, 10]]
    b = [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]]
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0, 0.0]])
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 4)


def test_centre_distance_is_in_box_sides_and_rejects_other_sizes() -> None:
    d = centre_distance_matrix([box(100)], [box(160), box(100, side=200)])
    assert d[0, 0] == pytest.approx(1.0)  # 60 px apart, 60 px boxes
    assert d[0, 1] == np.inf  # > 2x bigger: another face


def test_associate_prefers_iou_then_falls_back_to_centre_distance() -> None:
    tracks = [box(100), box(400)]
    dets = [box(410), box(150)]  # track 0 moved 50 px (IoU 0.09), track 1 moved 10 px
    assert sorted(associate(tracks, dets, 0.3, 0.0)) == [(1, 0)]
    assert sorted(associate(tracks, dets, 0.3, 1.0)) == [(0, 1), (1, 0)]
    assert associate(tracks, [], 0.3, 1.0) == []


# -- lifetime ----------------------------------------------------------------------------------------------


def test_birth_after_min_hits_with_a_new_event() -> None:
    tr = Tracker(LABELS, TrackerConfig(min_hits=3))
    ids = []
    for i in range(5):
        faces, events = step(tr, i * 0.1, [box(100 + i)])
        ids.append(faces[0].track_id)
        if i == 2:
            assert [(e.kind, e.track_id, e.label) for e in events] == [("new", 1, "happy")]
        else:
            assert events == []
    assert ids == [None, None, 1, 1, 1]


def test_a_tentative_track_dies_at_its_first_miss_silently() -> None:
    tr = Tracker(LABELS, TrackerConfig(min_hits=3))
    step(tr, 0.0, [box(100)])
    step(tr, 0.1, [box(100)])
    _, events = step(tr, 0.2, [])
    assert events == []
    faces, _ = step(tr, 0.3, [box(100)])
    assert faces[0].track_id is None  # starts over as a new tentative track
    step(tr, 0.4, [box(100)])
    faces, events = step(tr, 0.5, [box(100)])
    assert faces[0].track_id == 1 and [e.kind for e in events] == ["new"]


def test_death_after_max_age_with_duration_and_dominant() -> None:
    tr = Tracker(LABELS, TrackerConfig(min_hits=2, max_age_s=0.35))
    for i in range(10):
        step(tr, i * 0.1, [box(100)], [NEUTRAL if i < 3 else HAPPY])
    # last seen at 0.9; still alive while unseen <= 0.35 s
    for t in (1.0, 1.1, 1.2):
        _, events = step(tr, t, [])
        assert events == [] and tr.live_ids == [1]
    _, events = step(tr, 1.3, [])
    assert len(events) == 1 and tr.live_ids == []
    end = events[0]
    assert end.kind == "end" and end.track_id == 1
    assert end.duration_s == pytest.approx(0.9)
    assert end.dominant == "happy" and end.mean_probs is not None
    # time-weighted: 3 neutral and 7 happy observations, 0.1 s each
    np.testing.assert_allclose(end.mean_probs, (3 * NEUTRAL + 7 * HAPPY) / 10, atol=1e-9)


def test_death_is_time_based_so_frame_rate_does_not_matter() -> None:
    for fps in (5.0, 30.0):
        tr = Tracker(LABELS, TrackerConfig(min_hits=1, max_age_s=0.5))
        step(tr, 0.0, [box(100)])
        ended_at = None
        for i in range(1, 100):
            t = i / fps
            _, events = step(tr, t, [])
            if events:
                ended_at = t
                break
        assert ended_at is not None and 0.5 < ended_at <= 0.5 + 1 / fps + 1e-9


def test_id_is_stable_through_a_one_frame_miss() -> None:
    tr = Tracker(LABELS, TrackerConfig(min_hits=2, max_age_s=0.5))
    seen = []
    for i in range(12):
        boxes = [] if i == 6 else [box(100 + 3 * i)]
        faces, events = step(tr, i / 10, boxes)
        assert all(e.kind != "end" for e in events)
        seen += [f.track_id for f in faces]
    assert seen[0] is None and set(seen[1:]) == {1}


def test_jitter_in_a_burst_of_frames_does_not_break_the_track() -> None:
    """Frames 1 ms apart (a burst) whose boxes jitter by 4 px, then a frame 0.2 s later: one track throughout
    (without a floor on the velocity interval the jitter reads as 4000 px/s and the prediction flies off)."""
    tr = Tracker(LABELS, TrackerConfig(min_hits=2, max_age_s=0.5))
    seen = []
    for i in range(6):
        faces, _ = step(tr, i * 0.001, [box(100 + (4 if i % 2 else 0))])
        seen += [f.track_id for f in faces]
    faces, events = step(tr, 0.205, [box(100)])
    seen += [f.track_id for f in faces]
    assert seen[0] is None and set(seen[1:]) == {1}
    assert all(e.kind != "new" for e in events)


def test_two_crossing_faces_keep_their_ids() -> None:
    """Two faces walk through each other (same row, opposite directions, 20 px per frame)."""
    tr = Tracker(LABELS, TrackerConfig(min_hits=2))
    ids_left: list[int | None] = []
    ids_right: list[int | None] = []
    for i in range(25):
        a, b = 50 + 20 * i, 550 - 20 * i  # a moves right, b left; they cross at i = 12.5
        faces, _ = step(tr, i / 25, [box(a, 100), box(b, 104)], [HAPPY, NEUTRAL])
        ids_left.append(faces[0].track_id)
        ids_right.append(faces[1].track_id)
    assert set(ids_left[1:]) == {1} and set(ids_right[1:]) == {2}
    assert tr.live_ids == [1, 2]
    # the smoothed expression followed the right face, too (no swap of the per-track state)
    assert faces[0].smoothed_label == "happy" and faces[1].smoothed_label == "neutral"


def test_fast_motion_without_overlap_is_kept_by_centre_distance() -> None:
    tr = Tracker(LABELS, TrackerConfig(min_hits=1, iou_threshold=0.3, centre_distance=1.0))
    step(tr, 0.0, [box(100)])
    faces, events = step(tr, 0.1, [box(150)])  # 50 px jump with 60 px boxes: IoU 0.09
    assert faces[0].track_id == 1 and events == []


def test_flush_ends_confirmed_tracks_only() -> None:
    tr = Tracker(LABELS, TrackerConfig(min_hits=2))
    step(tr, 0.0, [box(100)])
    step(tr, 0.1, [box(100), box(400)])  # the second is tentative
    events = tr.flush(0.1)
    assert [(e.kind, e.track_id) for e in events] == [("end", 1)]
    assert tr.live_ids == [] and tr.flush(0.2) == []


def test_skipped_faces_are_tracked_without_probabilities() -> None:
    tr = Tracker(LABELS, TrackerConfig(min_hits=1))
    faces, events = step(tr, 0.0, [box(100)], [None])
    assert faces[0] == FaceTrack(track_id=1, smoothed=None, smoothed_label=None)
    assert events[0].label is None
    faces, _ = step(tr, 0.1, [box(100)], [HAPPY])
    assert faces[0].smoothed_label == "happy"
    end = tr.flush(0.1)[0]
    assert end.dominant == "happy"


def test_bad_input_is_rejected() -> None:
    tr = Tracker(LABELS)
    step(tr, 1.0, [box(100)])
    with pytest.raises(ValueError, match="backwards"):
        step(tr, 0.5, [box(100)])
    with pytest.raises(ValueError, match="classes"):
        tr.update(2.0, np.array([box(100)]), [np.ones(4) / 4])
    with pytest.raises(ValueError, match="probability entries"):
        tr.update(2.0, np.array([box(100)]), [])
    with pytest.raises(ValueError, match="half_life_s"):
        TrackerConfig(half_life_s=0)
    with pytest.raises(ValueError, match="labels"):
        Tracker(())


# -- smoothing ---------------------------------------------------------------------------------------------


def test_alpha_is_a_half_life() -> None:
    assert smoothing_alpha(0.5, 0.5) == pytest.approx(0.5)
    assert smoothing_alpha(1.0, 0.5) == pytest.approx(0.75)
    assert smoothing_alpha(0.0, 0.5) == 0.0


def _smoothed_after_step(fps: float, elapsed: float, half_life: float) -> tuple[float, ...]:
    """Neutral for 1 s, then happy; the smoothed vector ``elapsed`` s after the switch."""
    tr = Tracker(LABELS, TrackerConfig(min_hits=1, half_life_s=half_life))
    n_before, n_after = round(fps * 1.0), round(fps * elapsed)
    for i in range(n_before):
        step(tr, i / fps, [box(100)], [NEUTRAL])
    faces: list[FaceTrack] = []
    for j in range(1, n_after + 1):
        faces, _ = step(tr, 1.0 - 1 / fps + j / fps, [box(100)], [HAPPY])
    assert faces[0].smoothed is not None
    return faces[0].smoothed


def test_same_smoothed_value_at_10_and_30_fps() -> None:
    s10 = _smoothed_after_step(10.0, 0.6, 0.5)
    s30 = _smoothed_after_step(30.0, 0.6, 0.5)
    np.testing.assert_allclose(s10, s30, atol=1e-9)
    # and it is the analytic step response: happy + (neutral - happy) * 2^(-0.6/0.5)
    np.testing.assert_allclose(s10, HAPPY + (NEUTRAL - HAPPY) * 2 ** (-0.6 / 0.5), atol=1e-9)


def test_hysteresis_label() -> None:
    assert hysteresis_label([0.5, 0.45, 0.05], None, 0.1) == 0
    assert hysteresis_label([0.45, 0.5, 0.05], 0, 0.1) == 0  # 0.05 lead < margin: keep
    assert hysteresis_label([0.3, 0.6, 0.1], 0, 0.1) == 1  # 0.3 lead: switch
    assert hysteresis_label([0.45, 0.5, 0.05], 0, 0.0) == 1


def test_no_label_flicker_on_alternating_near_equal_probabilities() -> None:
    a, b = np.array([0.52, 0.46, 0.02]), np.array([0.46, 0.52, 0.02])
    tr = Tracker(LABELS, TrackerConfig(min_hits=1, half_life_s=0.1, label_switch_margin=0.1))
    per_frame, smoothed, updates = [], [], 0
    for i in range(60):
        p = a if i % 2 == 0 else b
        faces, events = step(tr, i / 30, [box(100)], [p])
        per_frame.append(LABELS[int(np.argmax(p))])
        assert faces[0].smoothed_label is not None
        smoothed.append(faces[0].smoothed_label)
        updates += sum(e.kind == "update" for e in events)
    assert sum(x != y for x, y in itertools.pairwise(per_frame)) == 59
    assert set(smoothed) == {"happy"} and updates == 0
    # without the margin, the short half-life would make the smoothed label flicker too
    tr0 = Tracker(LABELS, TrackerConfig(min_hits=1, half_life_s=0.1, label_switch_margin=0.0))
    labels0 = [step(tr0, i / 30, [box(100)], [a if i % 2 == 0 else b])[0][0].smoothed_label for i in range(60)]
    assert len(set(labels0)) == 2


def test_update_event_when_the_smoothed_label_changes() -> None:
    tr = Tracker(LABELS, TrackerConfig(min_hits=1, half_life_s=0.2, label_switch_margin=0.1))
    kinds = []
    for i in range(30):
        _, events = step(tr, i / 10, [box(100)], [NEUTRAL if i < 10 else HAPPY])
        kinds += [(e.kind, e.previous_label, e.label) for e in events]
    assert kinds == [("new", None, "neutral"), ("update", "neutral", "happy")]


def test_tracker_from_settings() -> None:
    from edge_agent.pipeline import tracker_from_settings
    from edge_agent.settings import ConfigError, load_settings

    s = load_settings(None, {"tracking.min_hits": 5, "tracking.half_life_s": 2.0, "tracking.max_age_s": 0.25})
    tr = tracker_from_settings(s, LABELS)
    assert tr is not None and tr.labels == LABELS
    assert (tr.config.min_hits, tr.config.half_life_s, tr.config.max_age_s) == (5, 2.0, 0.25)
    assert tracker_from_settings(load_settings(None, {"tracking.enabled": False}), LABELS) is None
    for key, bad in (("tracking.half_life_s", 0), ("tracking.iou_threshold", 1.5), ("tracking.min_face_px", -1)):
        with pytest.raises(ConfigError, match=key):
            load_settings(None, {key: bad})
