from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.manifest import AnchorSpec
from edge_agent.vision.anchors import feature_map_sizes, num_priors, prior_boxes

MNET = AnchorSpec(min_sizes=((16, 32), (64, 128), (256, 512)), steps=(8, 16, 32), variances=(0.1, 0.2))


def _loop_priors(spec: AnchorSpec, h: int, w: int) -> np.ndarray:
    """The PriorBox definition written as plain loops (level, row, col, min_size)."""
    rows = []
    for step, mins in zip(spec.steps, spec.min_sizes, strict=True):
        for i in range(math.ceil(h / step)):
            for j in range(math.ceil(w / step)):
                for m in mins:
                    rows.append([(j + 0.5) * step / w, (i + 0.5) * step / h, m / w, m / h])
    return np.asarray(rows, np.float32)


@pytest.mark.parametrize("hw", [(384, 640), (100, 130), (640, 640)])
def test_matches_loop_definition(hw: tuple[int, int]) -> None:
    p = prior_boxes(MNET, hw)
    assert p.dtype == np.float32 and p.shape == (num_priors(MNET, hw), 4)
    np.testing.assert_array_equal(p, _loop_priors(MNET, *hw))


def test_count_and_first_rows_640x384() -> None:
    p = prior_boxes(MNET, (384, 640))
    assert p.shape == ((48 * 80 + 24 * 40 + 12 * 20) * 2, 4)
    np.testing.assert_allclose(p[0], [4 / 640, 4 / 384, 16 / 640, 16 / 384])
    np.testing.assert_allclose(p[1], [4 / 640, 4 / 384, 32 / 640, 32 / 384])  # second min_size, same cell
    np.testing.assert_allclose(p[2], [12 / 640, 4 / 384, 16 / 640, 16 / 384])  # next column
    np.testing.assert_allclose(p[2 * 80], [4 / 640, 12 / 384, 16 / 640, 16 / 384])  # next row
    np.testing.assert_allclose(p[2 * 80 * 48], [8 / 640, 8 / 384, 64 / 640, 64 / 384])  # first of level 2


def test_feature_maps_use_ceil() -> None:
    assert feature_map_sizes(MNET, (100, 130)) == [(13, 17), (7, 9), (4, 5)]


def test_cached_and_read_only() -> None:
    a = prior_boxes(MNET, (384, 640))
    assert prior_boxes(MNET, (384, 640)) is a
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


def test_clip() -> None:
    spec = MNET.model_copy(update={"clip": True})
    p = prior_boxes(spec, (64, 64))
    assert p.max() <= 1.0 and p.min() >= 0.0
    assert prior_boxes(MNET, (64, 64)).max() > 1.0  # 512 px anchors on a 64 px image


def test_empty_spec_gives_zero_rows() -> None:
    spec = AnchorSpec(min_sizes=(), steps=(), variances=(0.1, 0.2))
    assert prior_boxes(spec, (64, 64)).shape == (0, 4)


def test_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        prior_boxes(MNET, (0, 64))
