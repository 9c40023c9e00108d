"""RetinaFace output decoding (biubug6 ``decode`` / ``decode_landm`` semantics) and raw-head merging.

All functions take and return float32 arrays and work on any number of rows, including zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge_agent.manifest import HeadOutputs

FloatArray = npt.NDArray[np.float32]


def decode_boxes(loc: FloatArray, priors: FloatArray, variances: tuple[float, float]) -> FloatArray:
    """(A,4) regressions + (A,4) priors (cx,cy,w,h) -> (A,4) boxes x1,y1,x2,y2 (normalised, float32)."""
    v0, v1 = np.float32(variances[0]), np.float32(variances[1])
    centre = priors[:, :2] + loc[:, :2] * v0 * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[:, 2:] * v1)
    out = np.empty((loc.shape[0], 4), np.float32)
    out[:, :2] = centre - size / 2
    out[:, 2:] = out[:, :2] + size
    return out


def decode_landmarks(landm: FloatArray, priors: FloatArray, variances: tuple[float, float]) -> FloatArray:
    """(A,10) landmark regressions + (A,4) priors -> (A,10) points x0,y0,...,x4,y4 (normalised, float32)."""
    v0 = np.float32(variances[0])
    pts = landm.reshape(-1, 5, 2)
    out = priors[:, None, :2] + pts * v0 * priors[:, None, 2:]
    return out.reshape(-1, 10).astype(np.float32, copy=False)


def softmax(x: FloatArray, axis: int = -1) -> FloatArray:
    """Numerically stable softmax along ``axis`` (float32 in, float32 out)."""
    z = x - np.max(x, axis=axis, keepdims=True) if x.size else x
    e = np.exp(z)
    out: FloatArray = (e / np.sum(e, axis=axis, keepdims=True)).astype(np.float32, copy=False)
    return out


def face_probability(conf: FloatArray, is_probability: bool) -> FloatArray:
    """(A,2) background/face scores -> (A,) face probability (softmax applied to logits)."""
    if is_probability:
        return conf[:, 1]
    # Two-class softmax, p(face) = sigmoid(l1 - l0), without materialising the full softmax.
    p: FloatArray = (1.0 / (1.0 + np.exp(conf[:, 0] - conf[:, 1]))).astype(np.float32, copy=False)
    return p


def _flatten_head(t: npt.NDArray[np.generic], per_anchor: int, layout: str, name: str) -> FloatArray:
    if t.ndim != 4 or t.shape[0] != 1:
        raise ValueError(f"raw head {name}: expected a (1, ...) 4-D tensor, got shape {t.shape}")
    nhwc = t if layout == "NHWC" else t.transpose(0, 2, 3, 1)
    if nhwc.shape[-1] % per_anchor:
        raise ValueError(
            f"raw head {name}: {nhwc.shape[-1]} channels is not a multiple of {per_anchor} "
            f"(is heads_layout {layout!r} right?)"
        )
    return np.asarray(nhwc, np.float32).reshape(-1, per_anchor)


def merge_raw_heads(
    outputs: Mapping[str, npt.NDArray[np.generic]], heads: Sequence[HeadOutputs], layout: str
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-stride raw head outputs -> (A,4) loc, (A,2) class logits, (A,10) landmarks in prior order.

    Within one head the channels are anchor-major (anchor a owns channels [a*C, (a+1)*C)), so NHWC
    -> (H*W*A, C) yields rows i, j, anchor: the PriorBox order. Levels are concatenated in ``heads`` order.
    """
    locs: list[FloatArray] = []
    confs: list[FloatArray] = []
    ldms: list[FloatArray] = []
    for h in heads:
        for name in (h.cls, h.box, h.landmarks):
            if name not in outputs:
                raise KeyError(f"raw head output {name!r} (stride {h.stride}) missing from the model outputs "
                               f"{sorted(outputs)}")
        confs.append(_flatten_head(outputs[h.cls], 2, layout, h.cls))
        locs.append(_flatten_head(outputs[h.box], 4, layout, h.box))
        ldms.append(_flatten_head(outputs[h.landmarks], 10, layout, h.landmarks))
        if not (confs[-1].shape[0] == locs[-1].shape[0] == ldms[-1].shape[0]):
            raise ValueError(f"stride {h.stride}: heads disagree on anchor count "
                             f"(cls {confs[-1].shape[0]}, box {locs[-1].shape[0]}, ldm {ldms[-1].shape[0]})")
    if not heads:
        return np.zeros((0, 4), np.float32), np.zeros((0, 2), np.float32), np.zeros((0, 10), np.float32)
    return np.concatenate(locs), np.concatenate(confs), np.concatenate(ldms)
