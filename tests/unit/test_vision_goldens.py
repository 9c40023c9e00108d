"""The numpy vision code against goldens made by the torch reference (build/reference, biubug6 semantics).

Fixtures come from ``python -m build.reference.make_goldens``: the real exported RetinaFace-0.25 run on
multi_face.jpg, its raw outputs for the top anchors, and the reference detections. No torch needed here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.manifest import AnchorSpec, Preprocess
from edge_agent.vision.anchors import prior_boxes
from edge_agent.vision.decode import face_probability
from edge_agent.vision.nms import postprocess
from edge_agent.vision.preprocess import Geometry, prepare

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vision"
MNET = AnchorSpec(min_sizes=((16, 32), (64, 128), (256, 512)), steps=(8, 16, 32), variances=(0.1, 0.2))
RETINA_PRE = Preprocess(
    input_size=(640, 640), dynamic_size=True, size_multiple=32, resize="letterbox", color_order="BGR",
    layout="NCHW", mean=(104.0, 117.0, 123.0),
)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "retinaface_multi_face.npz") as z:
        return {k: z[k] for k in z.files}


def test_priors_match_reference() -> None:
    with np.load(FIXTURES / "priors.npz") as z:
        assert len(z.files) == 2
        for key in z.files:
            h, w = (int(v) for v in key.removeprefix("priors_").split("x"))
            np.testing.assert_allclose(prior_boxes(MNET, (h, w)), z[key], atol=1e-7, rtol=0)


def _geometry(g: dict[str, np.ndarray]) -> Geometry:
    fw, fh = (int(v) for v in g["frame_wh"])
    iw, ih = (int(v) for v in g["input_wh"])
    return Geometry(scale=(float(g["scale"][0]), float(g["scale"][1])), pad=(0, 0), input_wh=(iw, ih),
                    frame_wh=(fw, fh))


@pytest.mark.parametrize("point", ["default", "eval"])
def test_postprocess_matches_reference(golden: dict[str, np.ndarray], point: str) -> None:
    n = int(golden["num_anchors"])
    idx = golden["anchor_index"]
    loc = np.zeros((n, 4), np.float32)
    conf = np.zeros((n, 2), np.float32)
    conf[:, 0] = 1.0
    ldm = np.zeros((n, 10), np.float32)
    loc[idx], conf[idx], ldm[idx] = golden["loc"], golden["conf"], golden["landmarks"]
    geom = _geometry(golden)
    priors = prior_boxes(MNET, (geom.input_wh[1], geom.input_wh[0]))
    assert priors.shape[0] == n
    thr, nms_t, top_k, keep = golden[f"{point}_params"]
    dets = postprocess(loc, face_probability(conf, True), ldm, priors, variances=MNET.variances, geom=geom,
                       score_threshold=float(thr), nms_iou=float(nms_t), top_k=int(top_k), keep_top_k=int(keep))
    want_boxes = golden[f"{point}_boxes"]
    assert len(dets) == len(want_boxes) > 0
    np.testing.assert_allclose(dets.boxes, want_boxes, atol=1e-3, rtol=1e-5)  # frame pixels
    np.testing.assert_allclose(dets.scores, golden[f"{point}_scores"], atol=1e-6)
    np.testing.assert_allclose(dets.landmarks, golden[f"{point}_landmarks"], atol=1e-3, rtol=1e-5)


def test_default_point_finds_the_five_faces(golden: dict[str, np.ndarray]) -> None:
    assert golden["default_boxes"].shape == (5, 4)


def test_preprocess_matches_reference_input(golden: dict[str, np.ndarray], asset: Callable[[str], Path]) -> None:
    image = cv2.imread(str(asset("multi_face.jpg")), cv2.IMREAD_COLOR)
    tensor, geom = prepare(image, RETINA_PRE)
    assert geom.input_wh == tuple(int(v) for v in golden["input_wh"])
    assert geom.frame_wh == tuple(int(v) for v in golden["frame_wh"])
    assert geom.scale == pytest.approx(tuple(golden["scale"]), abs=1e-12)
    s = int(golden["tensor_stride"])
    np.testing.assert_allclose(tensor[0, :, ::s, ::s], golden["tensor_sample"], atol=1e-4)
