from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.manifest import HeadOutputs
from edge_agent.vision.decode import (
    decode_boxes,
    decode_landmarks,
    face_probability,
    merge_raw_heads,
    softmax,
)

VAR = (0.1, 0.2)
PRIORS = np.array([[0.5, 0.5, 0.2, 0.4], [0.1, 0.2, 0.05, 0.05]], np.float32)


def test_zero_regression_gives_the_prior() -> None:
    boxes = decode_boxes(np.zeros((2, 4), np.float32), PRIORS, VAR)
    np.testing.assert_allclose(boxes[0], [0.4, 0.3, 0.6, 0.7], atol=1e-7)
    np.testing.assert_allclose(boxes[1], [0.075, 0.175, 0.125, 0.225], atol=1e-7)
    ldm = decode_landmarks(np.zeros((2, 10), np.float32), PRIORS, VAR)
    np.testing.assert_allclose(ldm[0], [0.5, 0.5] * 5)


def test_regression_values() -> None:
    loc = np.array([[1.0, -1.0, math.log(2) / 0.2, 0.0]], np.float32)
    box = decode_boxes(loc, PRIORS[:1], VAR)[0]
    # centre (0.5 + 0.1*0.2, 0.5 - 0.1*0.4) = (0.52, 0.46); size (0.4, 0.4)
    np.testing.assert_allclose(box, [0.32, 0.26, 0.72, 0.66], atol=1e-6)
    ldm = decode_landmarks(np.array([[1, 0, 0, 1, -1, 0, 0, -1, 2, 2]], np.float32), PRIORS[:1], VAR)[0]
    np.testing.assert_allclose(
        ldm, [0.52, 0.5, 0.5, 0.54, 0.48, 0.5, 0.5, 0.46, 0.54, 0.58], atol=1e-6)


def test_empty_inputs() -> None:
    empty = np.zeros((0, 4), np.float32)
    assert decode_boxes(empty, empty, VAR).shape == (0, 4)
    assert decode_landmarks(np.zeros((0, 10), np.float32), empty, VAR).shape == (0, 10)
    assert softmax(np.zeros((0, 7), np.float32)).shape == (0, 7)
    assert face_probability(np.zeros((0, 2), np.float32), False).shape == (0,)


def test_softmax() -> None:
    x = np.array([[1000.0, 1000.0, -1000.0], [0.0, math.log(3), 0.0]], np.float32)
    p = softmax(x, axis=1)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(p[1], [0.2, 0.6, 0.2], atol=1e-6)


def test_face_probability_from_logits_equals_softmax() -> None:
    logits = np.random.default_rng(0).normal(0, 5, (100, 2)).astype(np.float32)
    np.testing.assert_allclose(face_probability(logits, False), softmax(logits)[:, 1], atol=1e-6)
    probs = softmax(logits)
    np.testing.assert_array_equal(face_probability(probs, True), probs[:, 1])


HEADS = (HeadOutputs(stride=8, cls="c8", box="b8", landmarks="l8"),
         HeadOutputs(stride=16, cls="c16", box="b16", landmarks="l16"))


def _heads(layout: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raw heads built from per-anchor values that encode (level, row, col, anchor, channel)."""
    outputs: dict[str, np.ndarray] = {}
    expected: dict[str, list[np.ndarray]] = {"cls": [], "box": [], "ldm": []}
    for lvl, (h, w) in enumerate([(4, 6), (2, 3)]):
        for key, name, c in (("cls", HEADS[lvl].cls, 2), ("box", HEADS[lvl].box, 4), ("ldm", HEADS[lvl].landmarks, 10)):
            i, j, a, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(2), np.arange(c), indexing="ij")
            per_anchor = (lvl * 10000 + i * 1000 + j * 100 + a * 10 + ch).astype(np.float32)  # (h, w, A, C)
            expected[key].append(per_anchor.reshape(-1, c))
            nhwc = per_anchor.reshape(1, h, w, 2 * c)  # channel index = a * C + c (anchor-major)
            outputs[name] = nhwc if layout == "NHWC" else np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    return outputs, {k: np.concatenate(v) for k, v in expected.items()}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_merge_raw_heads_prior_order(layout: str) -> None:
    outputs, want = _heads(layout)
    loc, conf, ldm = merge_raw_heads(outputs, HEADS, layout)
    assert loc.shape == (2 * (24 + 6), 4) and conf.shape == (60, 2) and ldm.shape == (60, 10)
    np.testing.assert_array_equal(loc, want["box"])
    np.testing.assert_array_equal(conf, want["cls"])
    np.testing.assert_array_equal(ldm, want["ldm"])
    # row 3 = level 0, row 0, col 1, anchor 1
    np.testing.assert_array_equal(loc[3], [110, 111, 112, 113])


def test_merge_raw_heads_errors_and_empty() -> None:
    outputs, _ = _heads("NCHW")
    with pytest.raises(KeyError, match="c16"):
        merge_raw_heads({k: v for k, v in outputs.items() if k != "c16"}, HEADS, "NCHW")
    with pytest.raises(ValueError, match="heads_layout"):
        merge_raw_heads(outputs, HEADS, "NHWC")  # NCHW tensors read as NHWC: channel counts do not divide
    loc, conf, ldm = merge_raw_heads({}, (), "NCHW")
    assert loc.shape == (0, 4) and conf.shape == (0, 2) and ldm.shape == (0, 10)
