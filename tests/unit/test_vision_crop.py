from __future__ import annotations

import math

import numpy as np
import pytest

from edge_agent.frames import Detections
from edge_agent.vision.align import alignment_matrix, similarity_transform, template, to_pixel_index_matrix
from edge_agent.vision.crop import crop_faces, crop_matrix, square_box


def _dets(boxes: list[list[float]], landmarks: np.ndarray | None = None) -> Detections:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    lm = np.zeros((len(b), 5, 2), np.float32) if landmarks is None else landmarks.astype(np.float32)
    return Detections(boxes=b, scores=np.ones(len(b), np.float32), landmarks=lm)


def test_square_box() -> None:
    assert square_box([10, 20, 50, 40], 0.0) == (10.0, 10.0, 40.0)
    x0, y0, side = square_box([10, 20, 50, 40], 0.25)
    assert side == pytest.approx(60.0) and (x0, y0) == pytest.approx((0.0, 0.0))
    with pytest.raises(ValueError):
        square_box([0, 0, 1, 1], -0.1)


def test_crop_of_a_square_patch_is_that_patch() -> None:
    img = np.zeros((200, 300, 3), np.uint8)
    img[50:130, 100:180] = (10, 200, 30)  # an 80x80 patch, continuous box [100, 50, 180, 130]
    crops = crop_faces(img, _dets([[100, 50, 180, 130]]), (160, 160), margin=0.0)
    assert crops.shape == (1, 160, 160, 3) and crops.dtype == np.uint8
    np.testing.assert_array_equal(crops[0, 1:-1, 1:-1], np.broadcast_to([10, 200, 30], (158, 158, 3)))
    # with margin 0.5 the patch fills the central half
    crops = crop_faces(img, _dets([[100, 50, 180, 130]]), (160, 160), margin=0.5)
    np.testing.assert_array_equal(crops[0, 42:118, 42:118], np.broadcast_to([10, 200, 30], (76, 76, 3)))
    assert not crops[0, :38].any() and not crops[0, :, :38].any()


def test_out_of_frame_is_black() -> None:
    img = np.full((100, 100, 3), 255, np.uint8)
    crops = crop_faces(img, _dets([[-50, 0, 50, 100]]), (160, 160), margin=0.0)
    assert not crops[0, :, :78].any()  # left half lies outside the frame
    assert (crops[0, 2:-2, 82:-2] == 255).all()  # (edge rows blend with the black border, bilinear)


def test_empty_detections() -> None:
    crops = crop_faces(np.zeros((10, 10, 3), np.uint8), Detections.empty(), (160, 160))
    assert crops.shape == (0, 160, 160, 3)


def test_crop_matrix_maps_box_corners() -> None:
    m = crop_matrix([10, 20, 50, 40], (160, 160), 0.0)
    np.testing.assert_allclose(m @ [10, 10, 1], [0, 0])
    np.testing.assert_allclose(m @ [50, 50, 1], [160, 160])


def _similarity(angle_deg: float, scale: float, t: tuple[float, float]) -> np.ndarray:
    a = math.radians(angle_deg)
    r = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return np.hstack([r, np.array(t)[:, None]])


def test_similarity_transform_recovers_exact_similarity() -> None:
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    m = _similarity(30, 1.7, (12.0, -4.0))
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(similarity_transform(src, dst), m, atol=1e-9)


def test_similarity_transform_excludes_reflection() -> None:
    src = np.array([[0, 0], [10, 0], [0, 20], [3, 7], [8, 1]], np.float64)
    dst = src * np.array([-1, 1])  # a mirror image: the best proper similarity still has det > 0
    assert np.linalg.det(similarity_transform(src, dst)[:, :2]) > 0


def test_similarity_transform_degenerate() -> None:
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))


def test_template_margin_shrinks_about_centre() -> None:
    t0, t1 = template((160, 160)), template((160, 160), 0.5)
    np.testing.assert_allclose(t1 - 80, (t0 - 80) / 2)
    np.testing.assert_allclose(template((112, 112))[0], [38.2946, 51.6963])


def test_to_pixel_index_matrix() -> None:
    np.testing.assert_allclose(to_pixel_index_matrix(np.eye(2, 3)), np.eye(2, 3))
    m = to_pixel_index_matrix(np.array([[2.0, 0, 0], [0, 2.0, 0]]))
    np.testing.assert_allclose(m[:, 2], [0.5, 0.5])  # pixel 0's centre (0.5) lands on continuous 1.0 -> index 0.5


def test_aligned_crop_puts_landmarks_on_the_template() -> None:
    out = (160, 160)
    tmpl = template(out, 0.2)
    # a face rotated by 20 degrees and scaled: landmarks are the template mapped by a similarity
    m = _similarity(20, 1.3, (150.0, 90.0))
    lm = tmpl @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(alignment_matrix(lm, out, 0.2) @ np.append(lm[0], 1), tmpl[0], atol=1e-9)
    for k in range(5):  # one bright disc per image, centred on landmark k
        img = np.zeros((400, 400, 3), np.float32)
        yy, xx = np.mgrid[0:400, 0:400] + 0.5  # pixel centres in continuous coordinates
        img[..., 2] = 255.0 * (((xx - lm[k, 0]) ** 2 + (yy - lm[k, 1]) ** 2) < 16.0)
        crop = crop_faces(img.astype(np.uint8), _dets([[0, 0, 10, 10]], lm[None]), out, margin=0.2, align=True)[0]
        w = crop[..., 2].astype(np.float64)
        assert w.sum() > 0
        cy, cx = (np.mgrid[0:160, 0:160] + 0.5).reshape(2, -1) @ w.reshape(-1) / w.sum()
        assert abs(cx - tmpl[k, 0]) < 0.5 and abs(cy - tmpl[k, 1]) < 0.5


def test_align_with_degenerate_landmarks_uses_box_crop(caplog: pytest.LogCaptureFixture) -> None:
    img = np.zeros((200, 300, 3), np.uint8)
    img[50:130, 100:180] = 77
    dets = _dets([[100, 50, 180, 130]], np.zeros((1, 5, 2)))
    crops = crop_faces(img, dets, (160, 160), margin=0.0, align=True)
    assert (crops[0, 1:-1, 1:-1] == 77).all()
    assert "degenerate" in caplog.text
