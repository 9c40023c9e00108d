"""RetinaFace prior boxes (anchors), in the exact order of biubug6 Pytorch_Retinaface's ``PriorBox``.

Order: for each level k (stride ``steps[k]``), for each feature-map row i, for each column j, for each
``min_sizes[k]`` entry. Each prior is (cx, cy, w, h) normalised by the network input width/height, with
feature-map sizes ``ceil(H / step)`` x ``ceil(W / step)``. This is also the order the detector heads emit
(NCHW head -> NHWC -> (H*W*A, C)).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from edge_agent.manifest import AnchorSpec

FloatArray = npt.NDArray[np.float32]


def feature_map_sizes(spec: AnchorSpec, image_hw: tuple[int, int]) -> list[tuple[int, int]]:
    """(rows, cols) of each level's feature map for a network input of ``image_hw`` = (height, width)."""
    h, w = image_hw
    return [(math.ceil(h / step), math.ceil(w / step)) for step in spec.steps]


def _compute(spec: AnchorSpec, image_hw: tuple[int, int]) -> FloatArray:
    h, w = image_hw
    levels: list[npt.NDArray[np.float64]] = []
    for (rows, cols), step, mins in zip(feature_map_sizes(spec, image_hw), spec.steps, spec.min_sizes, strict=True):
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / h
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / w
        sizes = np.asarray(mins, np.float64)
        grid = np.empty((rows, cols, len(mins), 4), np.float64)
        grid[..., 0] = cx[None, :, None]
        grid[..., 1] = cy[:, None, None]
        grid[..., 2] = sizes[None, None, :] / w
        grid[..., 3] = sizes[None, None, :] / h
        levels.append(grid.reshape(-1, 4))
    if not levels:
        return np.zeros((0, 4), np.float32)
    priors = np.concatenate(levels).astype(np.float32)
    if spec.clip:
        np.clip(priors, 0.0, 1.0, out=priors)
    return priors


@lru_cache(maxsize=16)
def prior_boxes(spec: AnchorSpec, image_hw: tuple[int, int]) -> FloatArray:
    """(A, 4) float32 priors (cx, cy, w, h), normalised; cached per (spec, size) and read-only."""
    if image_hw[0] <= 0 or image_hw[1] <= 0:
        raise ValueError(f"prior_boxes needs a positive image size, got {image_hw}")
    priors = _compute(spec, (int(image_hw[0]), int(image_hw[1])))
    priors.setflags(write=False)
    return priors


def num_priors(spec: AnchorSpec, image_hw: tuple[int, int]) -> int:
    return sum(r * c * len(m) for (r, c), m in zip(feature_map_sizes(spec, image_hw), spec.min_sizes, strict=True))
