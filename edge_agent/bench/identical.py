"""Do two configurations find the same faces? Per-frame box matching for ``--compare`` ("identical detections",
issue 8's default-mode condition; edge_agent.bench.agreement gives recall/precision of A against B instead).

Boxes of A and B on the same frame are matched greedily by IoU (the highest pair first, each box used once,
a pair counts only at IoU >= ``match_iou``). The report gives the worst and mean IoU over matched pairs and every
unmatched face (frame index, which side, box): "identical" means no unmatched face and a worst IoU of at least
``identical_iou``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.bench.detection import iou_matrix
from edge_agent.frames import Detections, UInt8Image

log = logging.getLogger(__name__)

MATCH_IOU = 0.5
IDENTICAL_IOU = 0.9
_MAX_LISTED = 20  # unmatched faces listed in the report (all are counted)


@dataclass(frozen=True)
class FrameMatch:
    ious: tuple[float, ...]  # IoU of every matched pair
    unmatched_a: tuple[int, ...]  # indices into A's boxes
    unmatched_b: tuple[int, ...]


def match_boxes(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], match_iou: float = MATCH_IOU) -> FrameMatch:
    """Greedy one-to-one matching of two box sets by IoU (highest first), pairs below ``match_iou`` refused."""
    if not 0.0 < match_iou <= 1.0:
        raise ValueError(f"match_iou must be in (0, 1], got {match_iou}")
    m = iou_matrix(a, b)
    free_a, free_b = set(range(m.shape[0])), set(range(m.shape[1]))
    ious: list[float] = []
    if m.size:
        for flat in np.argsort(-m, axis=None, kind="stable"):
            i, j = divmod(int(flat), m.shape[1])
            if m[i, j] < match_iou:
                break
            if i in free_a and j in free_b:
                free_a.discard(i)
                free_b.discard(j)
                ious.append(float(m[i, j]))
    return FrameMatch(tuple(ious), tuple(sorted(free_a)), tuple(sorted(free_b)))


@dataclass
class BoxMatching:
    """Matching summed over frames."""

    match_iou: float = MATCH_IOU
    identical_iou: float = IDENTICAL_IOU
    frames: int = 0
    faces_a: int = 0
    faces_b: int = 0
    ious: list[float] = field(default_factory=list)
    unmatched: list[dict[str, Any]] = field(default_factory=list)

    def add(self, frame_index: int, a: Detections, b: Detections) -> None:
        fm = match_boxes(a.boxes, b.boxes, self.match_iou)
        self.frames += 1
        self.faces_a += len(a)
        self.faces_b += len(b)
        self.ious.extend(fm.ious)
        for side, dets, idx in (("A", a, fm.unmatched_a), ("B", b, fm.unmatched_b)):
            for i in idx:
                self.unmatched.append({"frame": frame_index, "only_in": side,
                                       "box": [round(float(v), 1) for v in dets.boxes[i]],
                                       "score": round(float(dets.scores[i]), 4)})

    def summary(self) -> dict[str, Any]:
        worst = min(self.ious) if self.ious else None
        identical = not self.unmatched and (worst is None or worst >= self.identical_iou)
        return {
            "frames": self.frames,
            "faces_a": self.faces_a,
            "faces_b": self.faces_b,
            "matched": len(self.ious),
            "unmatched": len(self.unmatched),
            "worst_iou": None if worst is None else round(worst, 4),
            "mean_iou": round(float(np.mean(self.ious)), 4) if self.ious else None,
            "match_iou": self.match_iou,
            "identical_iou": self.identical_iou,
            "identical": identical,
            "unmatched_faces": self.unmatched[:_MAX_LISTED],
        }


def identical_detections(
    frames: Sequence[UInt8Image],
    detect_a: Callable[[UInt8Image], Detections],
    detect_b: Callable[[UInt8Image], Detections],
    *,
    match_iou: float = MATCH_IOU,
    identical_iou: float = IDENTICAL_IOU,
) -> dict[str, Any]:
    """Run both detectors on every frame and summarise how their faces match (see the module docstring)."""
    agg = BoxMatching(match_iou=match_iou, identical_iou=identical_iou)
    for k, img in enumerate(frames):
        agg.add(k, detect_a(img), detect_b(img))
    return agg.summary()


def identical_text(s: dict[str, Any]) -> str:
    """One line for the terminal."""
    verdict = "identical" if s["identical"] else "NOT identical"
    worst = "-" if s["worst_iou"] is None else f"{s['worst_iou']:.3f}"
    return (f"detections A vs B over {s['frames']} frames: {verdict} (faces A {s['faces_a']}, B {s['faces_b']}, "
            f"matched {s['matched']}, unmatched {s['unmatched']}, worst IoU {worst}, "
            f"identical = no unmatched face and worst IoU >= {s['identical_iou']})")
