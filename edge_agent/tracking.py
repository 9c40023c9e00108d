"""Face tracking, per-track expression smoothing and track events; pure numpy, no I/O.

One :class:`Tracker` per camera. Every processed frame calls :meth:`Tracker.update` with the capture time, the
face boxes and the per-face class probabilities (None for a face that was not classified, see
:mod:`edge_agent.quality`); it returns one :class:`FaceTrack` per face, in detection order, and the
:class:`TrackEvent` s the frame caused. :meth:`Tracker.flush` ends every live track (end of the source).

Association: each track's box is predicted to the frame time with a constant-velocity model (velocity in px/s,
averaged over observations, each measured over at least 1/60 s), then matched greedily to detections by IoU
(highest first, IoU >= ``iou_threshold``); tracks and detections left over are matched greedily by centre
distance (smallest first, distance / mean box side <= ``centre_distance``, box sides within 2x of each other),
which keeps fast motion that leaves no overlap. Greedy is optimal in practice for the few faces a frame holds.

Lifetime (hysteresis): a new track is *tentative* and gets its ``track_id`` (1, 2, 3, ... per tracker) when it
has been matched in ``min_hits`` frames; a tentative track dies at its first miss, silently. A confirmed track
ends when it has not been matched for more than ``max_age_s`` seconds of capture time (time-based, so it
behaves the same at any frame rate; at a rate below 1/max_age_s every miss ends it).

Smoothing: exponential over capture time, ``s <- s + alpha (p - s)`` with ``alpha = 1 - 2^(-dt/half_life_s)``,
so after a step change the smoothed value is the same at the same elapsed time whatever the frame rate. The
smoothed label switches only when another class beats the current one by more than ``label_switch_margin``.

Events: ``new`` (a track is confirmed), ``update`` (the smoothed label of a confirmed track changed), ``end``
(with ``duration_s`` = last seen - first seen and the dominant expression = argmax of the time-weighted mean
probabilities over the track's life: each classified observation weighs the time until the next one, the last
one the mean of those intervals).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
EventKind = Literal["new", "update", "end"]
_SIZE_RATIO: Final = 2.0  # centre-distance fallback: box sides within this factor of each other
_VELOCITY_BLEND: Final = 0.5  # weight of the newest velocity measurement
# Shortest time a velocity is measured over: frames that arrive in a burst (a file at pace=fast, a camera's
# buffered frames) are ~1 ms apart, and a few pixels of detector jitter over 1 ms would read as thousands of px/s.
_MIN_VELOCITY_DT_S: Final = 1.0 / 60.0


@dataclass(frozen=True)
class TrackerConfig:
    iou_threshold: float = 0.3
    centre_distance: float = 1.0  # in mean box sides; 0 disables the fallback
    min_hits: int = 3
    max_age_s: float = 1.0
    half_life_s: float = 0.5
    label_switch_margin: float = 0.1

    def __post_init__(self) -> None:
        bounds = (
            ("iou_threshold", 0.0 < self.iou_threshold <= 1.0, "in (0, 1]"),
            ("centre_distance", self.centre_distance >= 0.0, ">= 0"),
            ("min_hits", self.min_hits >= 1, ">= 1"),
            ("max_age_s", self.max_age_s > 0.0, "> 0"),
            ("half_life_s", self.half_life_s > 0.0, "> 0"),
            ("label_switch_margin", 0.0 <= self.label_switch_margin <= 1.0, "in [0, 1]"),
        )
        for name, ok, rule in bounds:
            if not ok:
                raise ValueError(f"tracking.{name} must be {rule}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class FaceTrack:
    """The track state published with one face. ``track_id`` is None while the track is tentative;
    ``smoothed`` is None until the track has a classified observation."""

    track_id: int | None
    smoothed: tuple[float, ...] | None
    smoothed_label: str | None


@dataclass(frozen=True)
class TrackEvent:
    kind: EventKind
    track_id: int
    t: float  # the capture time (the tracker's clock) of the frame that caused it; for end: flush/update time
    box: tuple[float, float, float, float]  # last matched box
    label: str | None  # smoothed label now (for end: at the end)
    previous_label: str | None = None  # update only
    duration_s: float | None = None  # end only: last seen - first seen
    dominant: str | None = None  # end only
    mean_probs: tuple[float, ...] | None = None  # end only: time-weighted mean probabilities


# -- pure helpers -------------------------------------------------------------------------------------------


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), boxes as x1, y1, x2, y2."""
    aa = np.asarray(a, np.float64).reshape(-1, 4)
    bb = np.asarray(b, np.float64).reshape(-1, 4)
    ix1 = np.maximum(aa[:, None, 0], bb[None, :, 0])
    iy1 = np.maximum(aa[:, None, 1], bb[None, :, 1])
    ix2 = np.minimum(aa[:, None, 2], bb[None, :, 2])
    iy2 = np.minimum(aa[:, None, 3], bb[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(aa[:, 2] - aa[:, 0], 0, None) * np.clip(aa[:, 3] - aa[:, 1], 0, None)
    area_b = np.clip(bb[:, 2] - bb[:, 0], 0, None) * np.clip(bb[:, 3] - bb[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    out: FloatArray = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def centre_distance_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """Centre distance of every pair divided by the pair's mean box side (sqrt of area); inf when the box
    sides differ by more than 2x (a different face, not the same one moving fast)."""
    aa = np.asarray(a, np.float64).reshape(-1, 4)
    bb = np.asarray(b, np.float64).reshape(-1, 4)
    ca = (aa[:, :2] + aa[:, 2:]) / 2.0
    cb = (bb[:, :2] + bb[:, 2:]) / 2.0
    side_a = np.sqrt(np.clip(aa[:, 2] - aa[:, 0], 1e-6, None) * np.clip(aa[:, 3] - aa[:, 1], 1e-6, None))
    side_b = np.sqrt(np.clip(bb[:, 2] - bb[:, 0], 1e-6, None) * np.clip(bb[:, 3] - bb[:, 1], 1e-6, None))
    dist = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2)
    mean_side = (side_a[:, None] + side_b[None, :]) / 2.0
    ratio = np.maximum(side_a[:, None] / side_b[None, :], side_b[None, :] / side_a[:, None])
    out: FloatArray = np.where(ratio <= _SIZE_RATIO, dist / mean_side, np.inf)
    return out


def _greedy(cost: FloatArray, ok: npt.NDArray[np.bool_], rows: Sequence[int], cols: Sequence[int],
            descending: bool) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of ``rows`` x ``cols`` on ``cost`` where ``ok``, best pair first."""
    pairs = [(float(cost[r, c]), r, c) for r in rows for c in cols if ok[r, c]]
    pairs.sort(key=lambda p: (-p[0] if descending else p[0], p[1], p[2]))
    used_r: set[int] = set()
    used_c: set[int] = set()
    out: list[tuple[int, int]] = []
    for _, r, c in pairs:
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            out.append((r, c))
    return out


def associate(track_boxes: npt.ArrayLike, det_boxes: npt.ArrayLike, iou_threshold: float,
              centre_distance: float) -> list[tuple[int, int]]:
    """(track index, detection index) pairs: greedy by IoU >= ``iou_threshold``, then the leftovers greedy by
    normalised centre distance <= ``centre_distance`` (0 disables that fallback)."""
    tb = np.asarray(track_boxes, np.float64).reshape(-1, 4)
    db = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    if len(tb) == 0 or len(db) == 0:
        return []
    iou = iou_matrix(tb, db)
    matches = _greedy(iou, iou >= iou_threshold, range(len(tb)), range(len(db)), descending=True)
    if centre_distance > 0:
        rows = sorted(set(range(len(tb))) - {r for r, _ in matches})
        cols = sorted(set(range(len(db))) - {c for _, c in matches})
        if rows and cols:
            dist = centre_distance_matrix(tb, db)
            matches += _greedy(dist, dist <= centre_distance, rows, cols, descending=False)
    return matches


def smoothing_alpha(dt: float, half_life_s: float) -> float:
    """Weight of a new observation ``dt`` seconds after the previous one: 1 - 2^(-dt/half_life)."""
    return float(1.0 - 2.0 ** (-max(dt, 0.0) / half_life_s))


def hysteresis_label(smoothed: npt.ArrayLike, current: int | None, margin: float) -> int:
    """The class to report: the argmax, but the current class is kept unless the argmax beats it by > margin."""
    s = np.asarray(smoothed, np.float64)
    best = int(np.argmax(s))
    if current is None or best == current or s[best] - s[current] > margin:
        return best
    return current


# -- the tracker -------------------------------------------------------------------------------------------


@dataclass
class _Track:
    box: FloatArray
    t_first: float
    t_last: float  # last matched
    hits: int = 1
    track_id: int | None = None
    velocity: FloatArray = field(default_factory=lambda: np.zeros(4))
    smoothed: FloatArray | None = None
    t_smoothed: float = 0.0
    label_idx: int | None = None
    # time-weighted mean: sum of probs x interval to the next classified observation
    weighted_sum: FloatArray | None = None
    weight_total: float = 0.0
    n_classified: int = 0
    last_probs: FloatArray | None = None
    t_last_probs: float = 0.0

    def predicted(self, t: float, max_age_s: float) -> FloatArray:
        return self.box + self.velocity * min(max(t - self.t_last, 0.0), max_age_s)

    def observe_box(self, box: FloatArray, t: float) -> None:
        dt = t - self.t_last
        if dt > 0:
            measured = (box - self.box) / max(dt, _MIN_VELOCITY_DT_S)
            self.velocity = measured if self.hits == 1 else (
                _VELOCITY_BLEND * measured + (1 - _VELOCITY_BLEND) * self.velocity)
        self.box = box
        self.t_last = t
        self.hits += 1

    def observe_probs(self, probs: FloatArray, t: float, half_life_s: float, margin: float) -> None:
        if self.smoothed is None:
            self.smoothed = probs.copy()
        else:
            a = smoothing_alpha(t - self.t_smoothed, half_life_s)
            self.smoothed = self.smoothed + a * (probs - self.smoothed)
        self.t_smoothed = t
        self.label_idx = hysteresis_label(self.smoothed, self.label_idx, margin)
        if self.last_probs is not None:
            w = max(t - self.t_last_probs, 0.0)
            self.weighted_sum = (self.weighted_sum if self.weighted_sum is not None else 0.0) + self.last_probs * w
            self.weight_total += w
        self.last_probs = probs.copy()
        self.t_last_probs = t
        self.n_classified += 1

    def mean_probs(self) -> FloatArray | None:
        if self.last_probs is None:
            return None
        intervals = self.n_classified - 1
        w_last = self.weight_total / intervals if intervals > 0 and self.weight_total > 0 else 1.0
        total = (self.weighted_sum if self.weighted_sum is not None else 0.0) + self.last_probs * w_last
        out: FloatArray = np.asarray(total, np.float64) / (self.weight_total + w_last)
        return out


class Tracker:
    """Stable face ids, smoothed expressions and track events for one camera (see the module docstring)."""

    def __init__(self, labels: Sequence[str], config: TrackerConfig | None = None) -> None:
        if not labels:
            raise ValueError("Tracker needs the classifier's labels (classes.json), got none")
        self.labels = tuple(labels)
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._t_prev: float | None = None

    @property
    def live_ids(self) -> list[int]:
        return [tr.track_id for tr in self._tracks if tr.track_id is not None]

    def _label(self, tr: _Track) -> str | None:
        return None if tr.label_idx is None else self.labels[tr.label_idx]

    def _end_event(self, tr: _Track, t: float) -> TrackEvent:
        assert tr.track_id is not None
        mean = tr.mean_probs()
        return TrackEvent(
            kind="end", track_id=tr.track_id, t=t, box=_box_tuple(tr.box), label=self._label(tr),
            duration_s=max(tr.t_last - tr.t_first, 0.0),
            dominant=None if mean is None else self.labels[int(np.argmax(mean))],
            mean_probs=None if mean is None else tuple(float(v) for v in mean),
        )

    def update(
        self, t: float, boxes: npt.ArrayLike, probs: Sequence[npt.ArrayLike | None] | None = None,
    ) -> tuple[list[FaceTrack], list[TrackEvent]]:
        """Advance to capture time ``t`` (seconds, monotonic) with this frame's boxes (N, 4) and per-face
        probabilities (a (K,) array, or None for a face that was not classified; ``probs`` None: none was).

        Returns one FaceTrack per box, in order, and the events of this frame (ends first, then new, then
        update). Raises ValueError if time goes backwards or a probability vector has the wrong length.
        """
        cfg = self.config
        if self._t_prev is not None and t < self._t_prev:
            raise ValueError(f"tracker time went backwards: {t} < {self._t_prev}")
        self._t_prev = t
        det = np.asarray(boxes, np.float64).reshape(-1, 4)
        n = len(det)
        face_probs: list[FloatArray | None] = [None] * n if probs is None else [
            None if p is None else np.asarray(p, np.float64).reshape(-1) for p in probs]
        if len(face_probs) != n:
            raise ValueError(f"{n} boxes but {len(face_probs)} probability entries")
        for p in face_probs:
            if p is not None and p.shape[0] != len(self.labels):
                raise ValueError(f"a probability vector has {p.shape[0]} classes, the tracker has {len(self.labels)}")

        predicted = np.array([tr.predicted(t, cfg.max_age_s) for tr in self._tracks]).reshape(-1, 4)
        matches = associate(predicted, det, cfg.iou_threshold, cfg.centre_distance)
        track_of_det: dict[int, _Track] = {}
        matched_tracks: set[int] = set()
        for ti, di in matches:
            tr = self._tracks[ti]
            tr.observe_box(det[di], t)
            track_of_det[di] = tr
            matched_tracks.add(ti)

        events: list[TrackEvent] = []
        survivors: list[_Track] = []
        for ti, tr in enumerate(self._tracks):
            if ti in matched_tracks:
                survivors.append(tr)
            elif tr.track_id is None:
                continue  # a tentative track dies at its first miss, silently
            elif t - tr.t_last > cfg.max_age_s:
                events.append(self._end_event(tr, t))
            else:
                survivors.append(tr)
        for di in range(n):
            if di not in track_of_det:
                tr = _Track(box=det[di].copy(), t_first=t, t_last=t)
                track_of_det[di] = tr
                survivors.append(tr)
        self._tracks = survivors

        new_events: list[TrackEvent] = []
        update_events: list[TrackEvent] = []
        faces: list[FaceTrack] = []
        for di in range(n):
            tr = track_of_det[di]
            before = tr.label_idx
            p = face_probs[di]
            if p is not None:
                tr.observe_probs(p, t, cfg.half_life_s, cfg.label_switch_margin)
            if tr.track_id is None and tr.hits >= cfg.min_hits:
                tr.track_id = self._next_id
                self._next_id += 1
                new_events.append(TrackEvent("new", tr.track_id, t, _box_tuple(tr.box), self._label(tr)))
            elif tr.track_id is not None and before is not None and tr.label_idx != before:
                update_events.append(TrackEvent("update", tr.track_id, t, _box_tuple(tr.box), self._label(tr),
                                                previous_label=self.labels[before]))
            faces.append(FaceTrack(
                track_id=tr.track_id,
                smoothed=None if tr.smoothed is None else tuple(float(v) for v in tr.smoothed),
                smoothed_label=self._label(tr),
            ))
        return faces, events + new_events + update_events

    def flush(self, t: float) -> list[TrackEvent]:
        """End every confirmed track (the source ended); tentative tracks are dropped silently."""
        events = [self._end_event(tr, t) for tr in self._tracks if tr.track_id is not None]
        self._tracks = []
        return events


def _box_tuple(box: FloatArray) -> tuple[float, float, float, float]:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))
